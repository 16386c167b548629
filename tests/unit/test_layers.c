/* Unit tests for lib/layers: every kind's backward against central finite
 * differences of its forward, the fast conv and dense kernels against the
 * naive ones, output-shape rules, PyTorch semantics, setup errors. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <cmocka.h>

/* The layers whose loops the library clones per vector width, compiled
 * here once more without clones (SSE2 alone), under other names: the
 * library's kinds run the widest clone this CPU has, and must give the
 * same bits as these. */
#define SN_NO_VECTOR_CLONES
#define sn_kind_batchnorm sse2_kind_batchnorm
#define sn_kind_add sse2_kind_add
#define sn_kind_relu sse2_kind_relu
#define sn_kind_leaky_relu sse2_kind_leaky_relu
#define sn_kind_tanh sse2_kind_tanh
#define sn_kind_sigmoid sse2_kind_sigmoid
#define sn_add_into sse2_add_into
#define sn_batchnorm_eval_coefficients sse2_batchnorm_eval_coefficients
#include "layers/activation.c"
#include "layers/add.c"
#include "layers/batchnorm.c"
#undef sn_kind_batchnorm
#undef sn_kind_add
#undef sn_kind_relu
#undef sn_kind_leaky_relu
#undef sn_kind_tanh
#undef sn_kind_sigmoid
#undef sn_add_into
#undef sn_batchnorm_eval_coefficients

#include "layers.h"
#include "rng.h"

/* ---- fixtures -------------------------------------------------------- */

static sn_shape chw(int64_t c, int64_t h, int64_t w) { return (sn_shape){3, {c, h, w}}; }
static sn_shape vec(int64_t d) { return (sn_shape){1, {d, 0, 0}}; }

static sn_layer layer(const char *kind, sn_shape in)
{
	sn_layer l;
	memset(&l, 0, sizeof l);
	l.kind = sn_layer_kind_find(kind);
	assert_non_null(l.kind);
	snprintf(l.name, sizeof l.name, "%s1", kind);
	l.in = in;
	return l;
}

static void opt(sn_layer *l, enum sn_opt o, double v)
{
	l->opt[o] = v;
	l->opt_set |= 1u << o;
}

/* A layer ready to run on B examples: setup done, parameters filled with
 * random values (batchnorm variances positive), workspaces allocated. */
typedef struct {
	sn_layer l;
	int B;
	float *scratch;
	int64_t nin, nout;     /* floats per batch */
} fixture;

static float *floats(int64_t n)
{
	float *p = calloc(n > 0 ? (size_t)n : 1, sizeof *p);
	assert_non_null(p);
	return p;
}

static void fill(float *x, int64_t n, sn_rng *r, float lo, float hi)
{
	for (int64_t i = 0; i < n; i++)
		x[i] = lo + (hi - lo) * sn_rng_uniform(r);
}

static void prepare(fixture *f, sn_layer l, int B, uint64_t seed)
{
	sn_rng r;
	sn_rng_seed(&r, seed);
	f->l = l;
	f->B = B;
	assert_int_equal(f->l.kind->setup(&f->l), 0);
	for (int i = 0; i < f->l.nparams; i++) {
		const sn_param_desc *d = &f->l.params[i];
		f->l.w[i] = floats(d->numel);
		if (d->init == SN_INIT_ONE)
			fill(f->l.w[i], d->numel, &r, 0.5f, 1.5f);
		else
			fill(f->l.w[i], d->numel, &r, -0.5f, 0.5f);
		f->l.dw[i] = d->trainable ? floats(d->numel) : NULL;
	}
	f->l.saved = floats(f->l.saved_per_example * B + f->l.saved_fixed);
	f->scratch = floats(f->l.scratch_per_example * B + f->l.scratch_fixed);
	f->nin = sn_shape_size(&f->l.in) * B;
	f->nout = sn_shape_size(&f->l.out) * B;
}

static void release(fixture *f)
{
	for (int i = 0; i < f->l.nparams; i++) {
		free(f->l.w[i]);
		free(f->l.dw[i]);
	}
	free(f->l.saved);
	free(f->scratch);
}

/* ---- gradient check -------------------------------------------------- */

typedef struct {
	fixture *f;
	const float *R;           /* L = sum(out * R), or the mean loss */
	const int32_t *labels;
	float *out;
} objective;

/* Dropout draws its mask from a generator re-seeded identically for every
 * evaluation, so the function being differentiated stays fixed. */
static double evaluate(objective *o, const float *in)
{
	sn_rng r;
	sn_rng_seed(&r, 99);
	sn_pass p = {.training = 1, .rng = &r, .scratch = o->f->scratch, .labels = o->labels};
	o->f->l.kind->forward(&o->f->l, in, o->out, o->f->B, &p);
	if (o->f->l.kind->is_loss)
		return p.loss;
	double sum = 0;
	for (int64_t i = 0; i < o->f->nout; i++)
		sum += (double)o->out[i] * o->R[i];
	return sum;
}

static int agree(double numeric, double analytic)
{
	return fabs(numeric - analytic) <= 2e-2 * fmax(fabs(numeric), fabs(analytic)) + 2e-3;
}

/* d evaluate / d x[j] by central differences, x perturbed in place. */
static double numeric(objective *o, float *in, float *x, int64_t j, float h)
{
	const float keep = x[j];
	x[j] = keep + h;
	double up = evaluate(o, in);
	x[j] = keep - h;
	double down = evaluate(o, in);
	x[j] = keep;
	return (up - down) / (2.0 * (double)h);
}

static int check_all(objective *o, float *in, float *x, const float *analytic, int64_t n,
		     const char *what, float h)
{
	int bad = 0;
	for (int64_t j = 0; j < n; j++) {
		double num = numeric(o, in, x, j, h);
		if (!agree(num, analytic[j]) && bad++ < 5)
			print_error("%s %s[%lld]: numeric %.6g, backward %.6g\n",
				    o->f->l.kind->name, what, (long long)j, num, analytic[j]);
	}
	return bad;
}

static void gradcheck(fixture *f, float *in, float h)
{
	sn_rng r;
	sn_rng_seed(&r, 7);
	float *R = floats(f->nout), *din = floats(f->nin);
	int32_t *labels = calloc((size_t)f->B, sizeof *labels);
	assert_non_null(labels);
	fill(R, f->nout, &r, -1.0f, 1.0f);
	for (int b = 0; b < f->B; b++)
		labels[b] = (int32_t)sn_rng_below(&r, (uint64_t)f->l.out.d[0]);
	objective o = {f, R, labels, floats(f->nout)};

	(void)evaluate(&o, in);
	sn_pass p = {.training = 1, .scratch = f->scratch, .labels = labels};
	for (int i = 0; i < f->l.nparams; i++)
		if (f->l.dw[i])
			memset(f->l.dw[i], 0, (size_t)f->l.params[i].numel * sizeof(float));
	f->l.kind->backward(&f->l, in, o.out, R, din, f->B, &p);

	int bad = check_all(&o, in, in, din, f->nin, "input", h);
	for (int i = 0; i < f->l.nparams; i++)
		if (f->l.dw[i])
			bad += check_all(&o, in, f->l.w[i], f->l.dw[i], f->l.params[i].numel,
					 f->l.params[i].suffix, h);
	assert_int_equal(bad, 0);
	free(R);
	free(din);
	free(labels);
	free(o.out);
}

/* Inputs away from the kinks of relu-like functions. */
static float *inputs_off_zero(const fixture *f, uint64_t seed)
{
	sn_rng r;
	sn_rng_seed(&r, seed);
	float *x = floats(f->nin);
	for (int64_t i = 0; i < f->nin; i++)
		x[i] = (sn_rng_uniform(&r) < 0.5f ? -1.0f : 1.0f) * (0.1f + sn_rng_uniform(&r));
	return x;
}

/* Distinct inputs spaced 0.05 apart, so no max-pooling window has a tie
 * that a step of 1e-2 could flip. */
static float *inputs_without_ties(const fixture *f, uint64_t seed)
{
	sn_rng r;
	sn_rng_seed(&r, seed);
	int64_t *idx = calloc((size_t)f->nin, sizeof *idx);
	assert_non_null(idx);
	for (int64_t i = 0; i < f->nin; i++)
		idx[i] = i;
	sn_rng_shuffle(&r, idx, f->nin);
	float *x = floats(f->nin);
	for (int64_t i = 0; i < f->nin; i++)
		x[i] = 0.05f * (float)(idx[i] - f->nin / 2);
	free(idx);
	return x;
}

static float *inputs_uniform(const fixture *f, uint64_t seed)
{
	sn_rng r;
	sn_rng_seed(&r, seed);
	float *x = floats(f->nin);
	fill(x, f->nin, &r, -1.0f, 1.0f);
	return x;
}

static void check_kind(sn_layer l, int B, float *(*make)(const fixture *, uint64_t))
{
	fixture f;
	prepare(&f, l, B, 3);
	float *in = make(&f, 5);
	gradcheck(&f, in, 1e-2f);
	free(in);
	release(&f);
}

/* ---- gradients of every kind ----------------------------------------- */

static void conv_gradients_match_finite_differences(void **state)
{
	(void)state;
	sn_layer l = layer("conv", chw(2, 7, 6));
	opt(&l, SN_OPT_FILTERS, 3);
	opt(&l, SN_OPT_KERNEL, 3);
	opt(&l, SN_OPT_STRIDE, 2);
	opt(&l, SN_OPT_PAD, 1);
	check_kind(l, 2, inputs_uniform);

	l = layer("conv", chw(3, 5, 4));   /* stride 1, no pad, no bias */
	opt(&l, SN_OPT_FILTERS, 2);
	opt(&l, SN_OPT_KERNEL, 2);
	opt(&l, SN_OPT_BIAS, 0);
	check_kind(l, 3, inputs_uniform);

	l = layer("conv", chw(1, 6, 5));   /* pad 2 wider than the stride */
	opt(&l, SN_OPT_FILTERS, 2);
	opt(&l, SN_OPT_KERNEL, 3);
	opt(&l, SN_OPT_STRIDE, 3);
	opt(&l, SN_OPT_PAD, 2);
	check_kind(l, 2, inputs_uniform);

	/* stride 1 with padding: a padded copy feeds im2col, and where the
	 * output is no smaller than the input, din is a convolution of dout */
	static const int same[][5] = {
		/* C, H, W, k, pad */
		{2, 6, 5, 3, 1}, {3, 7, 6, 5, 2}, {2, 4, 5, 3, 2}, {1, 5, 5, 5, 4}, {2, 6, 6, 5, 1},
		{1, 16, 16, 3, 1},   /* S = 256: dW by one GEMM per example */
	};
	for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
		l = layer("conv", chw(same[i][0], same[i][1], same[i][2]));
		opt(&l, SN_OPT_FILTERS, 3);
		opt(&l, SN_OPT_KERNEL, same[i][3]);
		opt(&l, SN_OPT_PAD, same[i][4]);
		check_kind(l, 2, inputs_uniform);
	}
	/* the direct kernel forward, and for din (8 channels) too */
	l = layer("conv", chw(8, 12, 12));
	opt(&l, SN_OPT_FILTERS, 8);
	opt(&l, SN_OPT_KERNEL, 3);
	opt(&l, SN_OPT_PAD, 1);
	check_kind(l, 2, inputs_uniform);
	l = layer("conv", chw(2, 14, 13));
	opt(&l, SN_OPT_FILTERS, 16);
	opt(&l, SN_OPT_KERNEL, 5);
	opt(&l, SN_OPT_PAD, 2);
	check_kind(l, 2, inputs_uniform);
	l = layer("conv", chw(1, 6, 6));   /* many filters per channel: din by col2im */
	opt(&l, SN_OPT_FILTERS, 8);
	opt(&l, SN_OPT_KERNEL, 3);
	opt(&l, SN_OPT_PAD, 1);
	check_kind(l, 2, inputs_uniform);
}

/* Large enough that the passes go two examples at a time: spot checks of
 * the input and weight gradients over a batch of 17 (eight chunks of 2,
 * then 1). */
static void conv_gradients_are_right_across_chunks(void **state)
{
	(void)state;
	sn_layer l = layer("conv", chw(16, 32, 32));
	opt(&l, SN_OPT_FILTERS, 2);
	opt(&l, SN_OPT_KERNEL, 3);
	fixture f;
	prepare(&f, l, 17, 3);
	const int64_t ckk = 16 * 9, S = 30 * 30;
	assert_int_equal(f.l.scratch_fixed / ((ckk + 2) * S), 2);
	float *in = inputs_uniform(&f, 5), *R = floats(f.nout), *din = floats(f.nin);
	sn_rng r;
	sn_rng_seed(&r, 8);
	fill(R, f.nout, &r, -1.0f, 1.0f);
	objective o = {&f, R, NULL, floats(f.nout)};
	(void)evaluate(&o, in);
	sn_pass p = {.training = 1, .scratch = f.scratch};
	f.l.kind->backward(&f.l, in, o.out, R, din, f.B, &p);
	int bad = 0;
	for (int i = 0; i < 80; i++) {
		int which = i % 4;   /* input, input, weight, bias */
		float *x = which < 2 ? in : f.l.w[which - 2];
		const float *grad = which < 2 ? din : f.l.dw[which - 2];
		int64_t n = which < 2 ? f.nin : f.l.params[which - 2].numel;
		int64_t j = (int64_t)sn_rng_below(&r, (uint64_t)n);
		double num = numeric(&o, in, x, j, 1e-2f);
		if (!agree(num, grad[j]) && bad++ < 5)
			print_error("%s[%lld]: numeric %.6g, backward %.6g\n",
				    which < 2 ? "input" : f.l.params[which - 2].suffix, (long long)j,
				    num, grad[j]);
	}
	assert_int_equal(bad, 0);
	free(in), free(R), free(din), free(o.out);
	release(&f);
}

static void pool_gradients_match_finite_differences(void **state)
{
	(void)state;
	sn_layer l = layer("maxpool", chw(2, 7, 6));
	opt(&l, SN_OPT_KERNEL, 3);
	opt(&l, SN_OPT_STRIDE, 2);
	opt(&l, SN_OPT_PAD, 1);
	check_kind(l, 2, inputs_without_ties);

	l = layer("maxpool", chw(3, 5, 5));   /* stride defaults to the kernel */
	opt(&l, SN_OPT_KERNEL, 2);
	check_kind(l, 2, inputs_without_ties);

	l = layer("maxpool", chw(2, 9, 10));   /* overlapping, four outputs at a time */
	opt(&l, SN_OPT_KERNEL, 3);
	opt(&l, SN_OPT_STRIDE, 1);
	check_kind(l, 2, inputs_without_ties);

	l = layer("maxpool", chw(2, 8, 8));    /* 2x2, stride 2: its own pass */
	opt(&l, SN_OPT_KERNEL, 2);
	check_kind(l, 2, inputs_without_ties);

	l = layer("avgpool", chw(2, 7, 6));
	opt(&l, SN_OPT_KERNEL, 3);
	opt(&l, SN_OPT_STRIDE, 2);
	opt(&l, SN_OPT_PAD, 1);
	check_kind(l, 2, inputs_uniform);

	l = layer("avgpool", chw(2, 9, 13));  /* four outputs at a time inside */
	opt(&l, SN_OPT_KERNEL, 3);
	opt(&l, SN_OPT_STRIDE, 2);
	opt(&l, SN_OPT_PAD, 1);
	check_kind(l, 2, inputs_uniform);

	l = layer("avgpool", chw(2, 5, 4));   /* overlapping windows */
	opt(&l, SN_OPT_KERNEL, 2);
	opt(&l, SN_OPT_STRIDE, 1);
	check_kind(l, 3, inputs_uniform);

	check_kind(layer("global_avgpool", chw(3, 4, 5)), 2, inputs_uniform);
}

static void dense_gradients_match_finite_differences(void **state)
{
	(void)state;
	sn_layer l = layer("dense", vec(7));
	opt(&l, SN_OPT_UNITS, 5);
	check_kind(l, 3, inputs_uniform);

	l = layer("dense", chw(2, 3, 2));     /* flattens [C,H,W] */
	opt(&l, SN_OPT_UNITS, 4);
	opt(&l, SN_OPT_BIAS, 0);
	check_kind(l, 2, inputs_uniform);
}

static void activation_gradients_match_finite_differences(void **state)
{
	(void)state;
	check_kind(layer("relu", chw(2, 3, 3)), 2, inputs_off_zero);
	sn_layer l = layer("leaky_relu", vec(11));
	check_kind(l, 3, inputs_off_zero);
	opt(&l, SN_OPT_SLOPE, 0.2);
	check_kind(l, 3, inputs_off_zero);
	check_kind(layer("tanh", vec(9)), 2, inputs_uniform);
	check_kind(layer("sigmoid", chw(2, 2, 3)), 2, inputs_uniform);
	check_kind(layer("flatten", chw(2, 3, 2)), 2, inputs_uniform);
}

static void dropout_gradient_matches_finite_differences(void **state)
{
	(void)state;
	sn_layer l = layer("dropout", vec(20));
	check_kind(l, 3, inputs_uniform);
	opt(&l, SN_OPT_RATE, 0.25);
	check_kind(l, 2, inputs_uniform);
}

static void batchnorm_gradients_match_finite_differences(void **state)
{
	(void)state;
	check_kind(layer("batchnorm", chw(3, 3, 2)), 2, inputs_uniform);
	check_kind(layer("batchnorm", vec(5)), 4, inputs_uniform);
}

static void loss_gradient_matches_finite_differences(void **state)
{
	(void)state;
	check_kind(layer("softmax_cross_entropy", vec(6)), 4, inputs_uniform);
}

/* ---- fast kernels against the naive ones ----------------------------- */

static void run_forward(fixture *f, const float *in, float *out, int training)
{
	sn_rng r;
	sn_rng_seed(&r, 1);
	sn_pass p = {.training = training, .rng = &r, .scratch = f->scratch};
	f->l.kind->forward(&f->l, in, out, f->B, &p);
}

static void expect_close(const float *a, const float *b, int64_t n, double tol)
{
	for (int64_t i = 0; i < n; i++)
		if (fabs((double)a[i] - b[i]) > tol * (1.0 + fabs((double)b[i]))) {
			print_error("element %lld: %.7g vs %.7g\n", (long long)i, a[i], b[i]);
			fail();
		}
}

static void compare_with_naive(sn_layer l, int B,
			       void (*naive)(const sn_layer *, const float *, float *, int))
{
	fixture f;
	prepare(&f, l, B, 11);
	float *in = inputs_uniform(&f, 12), *fast = floats(f.nout), *ref = floats(f.nout);
	run_forward(&f, in, fast, 1);
	naive(&f.l, in, ref, B);
	expect_close(fast, ref, f.nout, 1e-5);
	/* the same inputs give the same bits */
	float *again = floats(f.nout);
	run_forward(&f, in, again, 1);
	assert_memory_equal(fast, again, (size_t)f.nout * sizeof *fast);
	free(in), free(fast), free(ref), free(again);
	release(&f);
}

/* A first layer gets no din; its dW then comes from one GEMM per example
 * over dout as it lies (S >= 256), where with din it comes from a gathered
 * copy: the same gradients either way. */
static void conv_weight_gradients_do_not_depend_on_din(void **state)
{
	(void)state;
	sn_layer l = layer("conv", chw(1, 20, 20));
	opt(&l, SN_OPT_FILTERS, 4);
	opt(&l, SN_OPT_KERNEL, 3);
	fixture f;
	prepare(&f, l, 5, 3);
	float *in = inputs_uniform(&f, 5), *dout = inputs_uniform(&(fixture){.nin = f.nout}, 6);
	float *din = floats(f.nin), *out = floats(f.nout);
	float *dw[2] = {floats(f.l.params[0].numel), floats(f.l.params[1].numel)};
	sn_pass p = {.training = 1, .scratch = f.scratch};
	f.l.kind->forward(&f.l, in, out, f.B, &p);
	for (int pass = 0; pass < 2; pass++) {
		for (int i = 0; i < 2; i++)
			memset(f.l.dw[i], 0, (size_t)f.l.params[i].numel * sizeof(float));
		f.l.kind->backward(&f.l, in, out, dout, pass ? NULL : din, f.B, &p);
		if (pass == 0)
			for (int i = 0; i < 2; i++)
				memcpy(dw[i], f.l.dw[i], (size_t)f.l.params[i].numel * sizeof(float));
	}
	for (int i = 0; i < 2; i++)
		expect_close(f.l.dw[i], dw[i], f.l.params[i].numel, 1e-5);
	free(in), free(dout), free(din), free(out), free(dw[0]), free(dw[1]);
	release(&f);
}

static void conv_agrees_with_the_naive_convolution(void **state)
{
	(void)state;
	static const int shapes[][7] = {
		/* C, H, W, F, k, stride, pad */
		{1, 28, 28, 20, 5, 1, 0}, {20, 12, 12, 50, 5, 1, 0}, {3, 13, 11, 5, 5, 1, 2},
		{2, 9, 10, 4, 3, 2, 1}, {4, 8, 7, 3, 1, 1, 0}, {2, 10, 9, 3, 4, 3, 2},
		{1, 3, 3, 2, 3, 1, 0}, {16, 32, 32, 4, 3, 1, 1},   /* the last in chunks of 1 */
	};
	for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
		const int *s = shapes[i];
		sn_layer l = layer("conv", chw(s[0], s[1], s[2]));
		opt(&l, SN_OPT_FILTERS, s[3]);
		opt(&l, SN_OPT_KERNEL, s[4]);
		opt(&l, SN_OPT_STRIDE, s[5]);
		opt(&l, SN_OPT_PAD, s[6]);
		compare_with_naive(l, i % 2 ? 3 : 2, sn_conv_forward_naive);
	}
}

/* The direct convolution (AVX-512, stride 1 or 2, 3x3 and 5x5, filters in
 * eights) against the naive one and against the GEMM path, forward and
 * backward (din of "same" layers is a direct convolution, and so is dW
 * where din is one or not wanted): tiles of two
 * column blocks (rows of 24-32 and of 60), of two rows (rows of 12-16, an
 * odd row count leaving half a tile), padded or not, with and without a
 * bias.  Where the CPU has no AVX-512 these run the GEMM path twice. */
static void conv_direct_agrees_with_the_naive_and_the_gemm_paths(void **state)
{
	(void)state;
	static const int shapes[][9] = {
		/* C, H, W, F, k, pad, bias, direct on AVX-512, stride */
		{3, 28, 28, 8, 3, 1, 0, 1, 1}, {5, 14, 14, 16, 3, 1, 1, 1, 1},
		{2, 13, 13, 8, 3, 1, 1, 1, 1}, {4, 16, 16, 8, 5, 2, 1, 1, 1},
		{3, 32, 32, 8, 5, 2, 0, 1, 1}, {2, 40, 27, 8, 3, 1, 1, 1, 1},
		{1, 30, 30, 8, 3, 0, 1, 1, 1}, {2, 20, 60, 16, 5, 2, 1, 1, 1},
		{8, 12, 12, 24, 3, 1, 0, 1, 1},
		{4, 8, 8, 8, 3, 1, 1, 1, 1},   /* 8 columns: two rows a vector */
		{3, 7, 8, 8, 3, 1, 1, 1, 1},    /* 7 rows of 8: a tile of 3 */
		{5, 7, 7, 16, 3, 1, 0, 0, 1},   /* 7x7: 77% of the lanes, the GEMM */
		{2, 8, 8, 8, 5, 2, 1, 1, 1}, {3, 6, 9, 8, 5, 1, 1, 1, 1},
		{4, 5, 5, 8, 3, 1, 1, 0, 1},   /* 5 columns: the GEMM */
		{4, 16, 16, 12, 3, 1, 1, 0, 1},   /* 12 filters */
		/* stride 2: planes split into even and odd columns */
		{6, 28, 28, 16, 3, 1, 0, 1, 2}, {3, 29, 27, 8, 3, 1, 1, 1, 2},
		{4, 32, 31, 8, 5, 2, 1, 1, 2}, {2, 60, 61, 8, 3, 0, 1, 1, 2},
		{2, 23, 50, 8, 5, 1, 0, 1, 2},
		{4, 14, 14, 8, 3, 1, 1, 0, 2}, {3, 15, 15, 8, 5, 2, 0, 1, 2},   /* 7x7, 8x8 */
		{4, 10, 10, 8, 3, 1, 1, 0, 2},   /* 5 columns: the GEMM */
	};
	for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
		const int *s = shapes[i];
		sn_layer l = layer("conv", chw(s[0], s[1], s[2]));
		opt(&l, SN_OPT_FILTERS, s[3]);
		opt(&l, SN_OPT_KERNEL, s[4]);
		opt(&l, SN_OPT_PAD, s[5]);
		opt(&l, SN_OPT_BIAS, s[6]);
		opt(&l, SN_OPT_STRIDE, s[8]);
		const int64_t OH = (s[1] + 2 * s[5] - s[4]) / s[8] + 1;
		const int64_t OW = (s[2] + 2 * s[5] - s[4]) / s[8] + 1;
		if (__builtin_cpu_supports("avx512f"))
			assert_int_equal(sn_conv_direct_takes(s[3], s[4], OH, OW), s[7]);
		compare_with_naive(l, 3, sn_conv_forward_naive);
		fixture f;
		prepare(&f, l, 3, 11);
		float *in = inputs_uniform(&f, 12), *direct = floats(f.nout), *gemm = floats(f.nout);
		run_forward(&f, in, direct, 1);
		sn_avx512_kernels = 0;
		run_forward(&f, in, gemm, 1);
		sn_avx512_kernels = 1;
		expect_close(direct, gemm, f.nout, 1e-5);
		/* backward, as a first layer (dW only) and an inner one (din too) */
		float *dout = inputs_uniform(&(fixture){.nin = f.nout}, 6), *din[2] = {
			floats(f.nin), floats(f.nin)};
		const int64_t nw = f.l.params[0].numel;
		float *dw = floats(nw);
		sn_pass p = {.training = 1, .scratch = f.scratch};
		for (int with_din = 0; with_din < 2; with_din++) {
			for (int way = 0; way < 2; way++) {
				sn_avx512_kernels = way == 0;
				memset(f.l.dw[0], 0, (size_t)nw * sizeof(float));
				f.l.kind->backward(&f.l, in, direct, dout, with_din ? din[way] : NULL, f.B,
						   &p);
				if (way == 0)
					memcpy(dw, f.l.dw[0], (size_t)nw * sizeof(float));
			}
			sn_avx512_kernels = 1;
			expect_close(dw, f.l.dw[0], nw, 1e-4);
			if (with_din)
				expect_close(din[0], din[1], f.nin, 1e-5);
		}
		free(in), free(direct), free(gemm), free(dout), free(din[0]), free(din[1]), free(dw);
		release(&f);
	}
}

/* The fast max-pooling passes (2x2 stride 2, stride 2 on AVX-512, and the
 * two-pass one for any window) against the naive one: the same maxima and
 * the same argmax,
 * over inputs of few distinct values (ties everywhere), of distinct values,
 * and with a NaN or an Inf in some planes. */
static void maxpool_agrees_with_the_naive_pooling(void **state)
{
	(void)state;
	static const int shapes[][6] = {
		/* C, H, W, k, stride, pad */
		{3, 8, 8, 2, 2, 0}, {2, 7, 9, 2, 2, 0}, {2, 10, 13, 2, 2, 0}, {3, 24, 24, 2, 2, 0},
		{3, 32, 32, 3, 2, 1}, {2, 15, 13, 3, 2, 1},
		{2, 9, 11, 3, 2, 0}, {2, 10, 10, 3, 1, 1}, {2, 12, 17, 4, 3, 2}, {1, 3, 3, 3, 1, 0},
		{2, 9, 22, 2, 1, 1}, {1, 5, 6, 5, 2, 2}, {2, 11, 11, 3, 3, 0},
		{2, 20, 21, 2, 2, 1}, {2, 19, 40, 5, 2, 2},   /* stride 2 over even and odd columns */
		{2, 9, 70, 3, 2, 1},                           /* three blocks of 16 outputs */
	};
	for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
		const int *s = shapes[i];
		sn_layer l = layer("maxpool", chw(s[0], s[1], s[2]));
		opt(&l, SN_OPT_KERNEL, s[3]);
		opt(&l, SN_OPT_STRIDE, s[4]);
		opt(&l, SN_OPT_PAD, s[5]);
		fixture f;
		prepare(&f, l, 3, 1);
		float *in = inputs_uniform(&f, 20 + i), *fast = floats(f.nout), *ref = floats(f.nout);
		int32_t *arg = calloc((size_t)f.nout, sizeof *arg);
		assert_non_null(arg);
		for (int pass = 0; pass < 3; pass++) {
			if (pass == 0)   /* ties: four levels */
				for (int64_t j = 0; j < f.nin; j++)
					in[j] = floorf(in[j] * 2.0f);
			if (pass == 2) {   /* a NaN in one plane, an Inf in another */
				in[f.nin / 2] = NAN;
				in[f.nin - 1] = INFINITY;
				in[0] = -INFINITY;
			}
			sn_maxpool_forward_naive(&f.l, in, ref, arg, f.B);
			for (int avx512 = 0; avx512 < 2; avx512++) {   /* stride 2: both paths */
				sn_avx512_kernels = avx512;
				run_forward(&f, in, fast, 1);
				assert_memory_equal(fast, ref, (size_t)f.nout * sizeof *fast);
				assert_memory_equal(f.l.saved, arg, (size_t)f.nout * sizeof *arg);
			}
			if (pass == 0) {
				free(in);
				in = inputs_without_ties(&f, 30 + i);
			}
		}
		free(in), free(fast), free(ref), free(arg);
		release(&f);
	}
}

static void avgpool_agrees_with_the_naive_pooling(void **state)
{
	(void)state;
	static const int shapes[][6] = {
		/* C, H, W, k, stride, pad: cifar10_quick's, edges, overlaps */
		{3, 16, 16, 3, 2, 1}, {2, 8, 8, 3, 2, 1}, {2, 15, 13, 3, 2, 1}, {2, 10, 10, 3, 1, 1},
		{2, 12, 17, 4, 3, 2}, {1, 3, 3, 3, 1, 0}, {2, 9, 22, 2, 2, 0}, {1, 5, 6, 5, 2, 2},
	};
	for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
		const int *s = shapes[i];
		sn_layer l = layer("avgpool", chw(s[0], s[1], s[2]));
		opt(&l, SN_OPT_KERNEL, s[3]);
		opt(&l, SN_OPT_STRIDE, s[4]);
		opt(&l, SN_OPT_PAD, s[5]);
		compare_with_naive(l, 3, sn_avgpool_forward_naive);
	}
}

static void dense_agrees_with_the_naive_product(void **state)
{
	(void)state;
	sn_layer l = layer("dense", vec(7));
	opt(&l, SN_OPT_UNITS, 5);
	compare_with_naive(l, 1, sn_dense_forward_naive);
	l = layer("dense", chw(3, 4, 5));
	opt(&l, SN_OPT_UNITS, 11);
	compare_with_naive(l, 9, sn_dense_forward_naive);
	opt(&l, SN_OPT_BIAS, 0);
	compare_with_naive(l, 4, sn_dense_forward_naive);
	l = layer("dense", vec(800));
	opt(&l, SN_OPT_UNITS, 500);
	compare_with_naive(l, 64, sn_dense_forward_naive);
}

/* ---- shapes and parameter tables ------------------------------------- */

static sn_shape out_shape(sn_layer l)
{
	assert_int_equal(l.kind->setup(&l), 0);
	return l.out;
}

static void assert_shape(sn_shape s, int ndim, int64_t a, int64_t b, int64_t c)
{
	assert_int_equal(s.ndim, ndim);
	assert_int_equal(s.d[0], a);
	if (ndim == 3) {
		assert_int_equal(s.d[1], b);
		assert_int_equal(s.d[2], c);
	}
}

static void output_shapes_follow_the_floor_rule(void **state)
{
	(void)state;
	sn_layer l = layer("conv", chw(1, 28, 28));
	opt(&l, SN_OPT_FILTERS, 20);
	opt(&l, SN_OPT_KERNEL, 5);
	assert_shape(out_shape(l), 3, 20, 24, 24);
	l = layer("conv", chw(2, 7, 6));
	opt(&l, SN_OPT_FILTERS, 3);
	opt(&l, SN_OPT_KERNEL, 3);
	opt(&l, SN_OPT_STRIDE, 2);
	opt(&l, SN_OPT_PAD, 1);
	assert_shape(out_shape(l), 3, 3, 4, 3);

	l = layer("maxpool", chw(20, 24, 24));
	opt(&l, SN_OPT_KERNEL, 2);
	assert_shape(out_shape(l), 3, 20, 12, 12);
	l = layer("avgpool", chw(4, 7, 9));
	opt(&l, SN_OPT_KERNEL, 2);
	assert_shape(out_shape(l), 3, 4, 3, 4);
	opt(&l, SN_OPT_KERNEL, 3);
	opt(&l, SN_OPT_STRIDE, 2);
	opt(&l, SN_OPT_PAD, 1);
	assert_shape(out_shape(l), 3, 4, 4, 5);

	assert_shape(out_shape(layer("global_avgpool", chw(8, 5, 3))), 1, 8, 0, 0);
	assert_shape(out_shape(layer("flatten", chw(50, 4, 4))), 1, 800, 0, 0);
	assert_shape(out_shape(layer("relu", chw(2, 3, 4))), 3, 2, 3, 4);
	assert_shape(out_shape(layer("batchnorm", vec(6))), 1, 6, 0, 0);
	assert_shape(out_shape(layer("softmax_cross_entropy", vec(10))), 1, 10, 0, 0);
}

static void params_use_pytorch_shapes(void **state)
{
	(void)state;
	sn_layer l = layer("conv", chw(3, 8, 8));
	opt(&l, SN_OPT_FILTERS, 6);
	opt(&l, SN_OPT_KERNEL, 5);
	assert_int_equal(l.kind->setup(&l), 0);
	assert_int_equal(l.nparams, 2);
	assert_string_equal(l.params[0].suffix, "weight");
	assert_int_equal(l.params[0].ndim, 4);
	int64_t ws[4] = {6, 3, 5, 5};
	assert_memory_equal(l.params[0].shape, ws, sizeof ws);
	assert_int_equal(l.params[0].numel, 450);
	assert_int_equal(l.params[0].fan_in, 75);
	assert_int_equal(l.params[0].fan_out, 150);
	assert_string_equal(l.params[1].suffix, "bias");
	assert_int_equal(l.params[1].init, SN_INIT_ZERO);
	/* one multiply-add per weight per output position, 2 FLOPs each */
	assert_int_equal(l.flops_forward, 2 * 450 * 16 + 6 * 16);
	assert_string_equal(l.kind->name_prefix, "conv");

	l = layer("dense", chw(50, 4, 4));
	opt(&l, SN_OPT_UNITS, 500);
	opt(&l, SN_OPT_BIAS, 0);
	assert_int_equal(l.kind->setup(&l), 0);
	assert_int_equal(l.nparams, 1);
	assert_int_equal(l.params[0].shape[0], 500);
	assert_int_equal(l.params[0].shape[1], 800);
	assert_string_equal(l.kind->name_prefix, "fc");

	l = layer("batchnorm", chw(4, 2, 2));
	assert_int_equal(l.kind->setup(&l), 0);
	assert_int_equal(l.nparams, 4);
	const char *names[] = {"weight", "bias", "running_mean", "running_var"};
	const int trainable[] = {1, 1, 0, 0};
	const enum sn_init inits[] = {SN_INIT_ONE, SN_INIT_ZERO, SN_INIT_ZERO, SN_INIT_ONE};
	for (int i = 0; i < 4; i++) {
		assert_string_equal(l.params[i].suffix, names[i]);
		assert_int_equal(l.params[i].trainable, trainable[i]);
		assert_int_equal(l.params[i].init, inits[i]);
		assert_int_equal(l.params[i].numel, 4);
	}
	assert_string_equal(l.kind->name_prefix, "bn");
	assert_null(sn_layer_kind_find("relu")->name_prefix);
	assert_null(sn_layer_kind_find("convv"));
}

static void every_kind_is_listed_once(void **state)
{
	(void)state;
	const char *want[] = {"conv", "maxpool", "avgpool", "global_avgpool", "dense", "relu",
			      "leaky_relu", "tanh", "sigmoid", "dropout", "batchnorm",
			      "flatten", "add", "concat", "softmax_cross_entropy"};
	int n = 0;
	while (sn_layer_kinds[n])
		n++;
	assert_int_equal(n, sizeof want / sizeof want[0]);
	for (int i = 0; i < n; i++) {
		assert_non_null(sn_layer_kind_find(want[i]));
		assert_int_equal(sn_layer_kinds[i]->is_loss, strcmp(want[i], "softmax_cross_entropy") == 0);
	}
	for (int o = 0; o < SN_OPT_COUNT; o++)
		assert_non_null(sn_opt_names[o]);
	assert_string_equal(sn_opt_names[SN_OPT_KERNEL], "kernel");
}

/* ---- PyTorch semantics ----------------------------------------------- */

static void avgpool_counts_the_padding(void **state)
{
	(void)state;
	fixture f;
	sn_layer l = layer("avgpool", chw(1, 4, 4));
	opt(&l, SN_OPT_KERNEL, 3);
	opt(&l, SN_OPT_STRIDE, 1);
	opt(&l, SN_OPT_PAD, 1);
	prepare(&f, l, 1, 1);
	float in[16], out[16];
	for (int i = 0; i < 16; i++)
		in[i] = 1.0f;
	run_forward(&f, in, out, 0);
	assert_float_equal(out[0], 4.0f / 9.0f, 1e-6);   /* corner: 4 of 9 real */
	assert_float_equal(out[1], 6.0f / 9.0f, 1e-6);   /* edge */
	assert_float_equal(out[5], 1.0f, 1e-6);          /* inside */
	release(&f);
}

static void maxpool_pads_with_minus_infinity_and_keeps_nan(void **state)
{
	(void)state;
	fixture f;
	sn_layer l = layer("maxpool", chw(1, 4, 4));
	opt(&l, SN_OPT_KERNEL, 2);
	opt(&l, SN_OPT_STRIDE, 2);
	opt(&l, SN_OPT_PAD, 1);
	prepare(&f, l, 1, 1);
	float in[16], out[9];
	for (int i = 0; i < 16; i++)
		in[i] = -1.0f - (float)i;
	run_forward(&f, in, out, 0);
	assert_float_equal(out[0], -1.0f, 0);   /* not the padding's 0 */
	assert_float_equal(out[8], -16.0f, 0);
	in[5] = NAN;
	run_forward(&f, in, out, 0);
	assert_true(isnan(out[4]));
	/* ties go to the first in reading order: top row first, then left */
	for (int i = 0; i < 16; i++)
		in[i] = 1.0f;
	run_forward(&f, in, out, 0);
	const int32_t first[9] = {0, 1, 3, 4, 5, 7, 12, 13, 15};
	assert_memory_equal(f.l.saved, first, sizeof first);
	release(&f);

	/* 2x2, stride 2, no padding has its own pass: same answers */
	l = layer("maxpool", chw(1, 4, 4));
	opt(&l, SN_OPT_KERNEL, 2);
	prepare(&f, l, 1, 1);
	for (int i = 0; i < 16; i++)
		in[i] = (float)(i % 5);
	in[10] = NAN;
	run_forward(&f, in, out, 0);
	const int32_t *arg = (const int32_t *)f.l.saved;
	assert_float_equal(out[0], 4.0f, 0);            /* window 0,1,4,5 holds 0,1,4,0 */
	assert_int_equal(arg[0], 4);
	assert_float_equal(out[1], 3.0f, 0);            /* 2,3,1,2: the first 3 */
	assert_int_equal(arg[1], 3);
	assert_true(isnan(out[3]));                     /* window 10,11,14,15 */
	assert_int_equal(arg[3], 10);
	in[10] = 4.0f, in[11] = 4.0f, in[14] = 4.0f;    /* ties: the first wins */
	run_forward(&f, in, out, 0);
	assert_int_equal(arg[3], 10);
	release(&f);
}

static void dropout_scales_kept_values_and_is_identity_in_eval(void **state)
{
	(void)state;
	fixture f;
	sn_layer l = layer("dropout", vec(1000));
	opt(&l, SN_OPT_RATE, 0.2);
	prepare(&f, l, 4, 1);
	float *in = floats(f.nin), *out = floats(f.nout);
	for (int64_t i = 0; i < f.nin; i++)
		in[i] = 1.0f + (float)(i % 7);
	run_forward(&f, in, out, 0);
	assert_memory_equal(in, out, (size_t)f.nin * sizeof *in);
	run_forward(&f, in, out, 1);
	int64_t kept = 0;
	for (int64_t i = 0; i < f.nin; i++)
		if (out[i] != 0.0f) {
			kept++;
			assert_float_equal(out[i], in[i] / 0.8f, 1e-5);
		}
	assert_in_range(kept, 3000, 3400);     /* 3200 expected */
	free(in), free(out);
	release(&f);
}

static void batchnorm_updates_running_statistics_like_pytorch(void **state)
{
	(void)state;
	fixture f;
	prepare(&f, layer("batchnorm", chw(1, 1, 2)), 2, 1);
	f.l.w[0][0] = 1, f.l.w[1][0] = 0, f.l.w[2][0] = 0, f.l.w[3][0] = 1;
	const float in[4] = {1, 2, 3, 6};     /* mean 3, biased var 3.5, unbiased 14/3 */
	float out[4];
	run_forward(&f, in, out, 1);
	assert_float_equal(f.l.w[2][0], 0.3f, 1e-6);
	assert_float_equal(f.l.w[3][0], 0.9f + 0.1f * 14.0f / 3.0f, 1e-6);
	assert_float_equal(out[3], 3.0 / sqrt(3.5 + 1e-5), 1e-5);
	run_forward(&f, in, out, 0);          /* eval: running statistics */
	assert_float_equal(out[3], (6.0 - 0.3) / sqrt(0.9 + 0.1 * 14.0 / 3.0 + 1e-5), 1e-5);
	release(&f);
}

static void loss_is_stable_for_large_logits(void **state)
{
	(void)state;
	fixture f;
	prepare(&f, layer("softmax_cross_entropy", vec(3)), 2, 1);
	const float in[6] = {1000, -1000, 0, 1000, -1000, 0};
	const int32_t y[2] = {0, 1};
	float out[6];
	sn_pass p = {.training = 1, .scratch = f.scratch, .labels = y};
	f.l.kind->forward(&f.l, in, out, 2, &p);
	assert_float_equal(p.loss, 1000.0, 1e-3);   /* (0 + 2000) / 2 */
	assert_float_equal(out[0], 1.0f, 1e-6);
	p.labels = NULL;
	p.loss = -1;
	f.l.kind->forward(&f.l, in, out, 2, &p);
	assert_float_equal(p.loss, 0.0, 0);
	const int32_t wrong[2] = {0, 3};
	p.labels = wrong;
	f.l.kind->forward(&f.l, in, out, 2, &p);
	assert_true(isnan(p.loss));
	release(&f);
}

static void relu_passes_nan_on(void **state)
{
	(void)state;
	fixture f;
	prepare(&f, layer("relu", vec(11)), 1, 1);   /* a block of 8 and a tail */
	const float in[11] = {-1, NAN, 2, -3, 4, -5, 6, -7, -8, NAN, 9};
	float out[11];
	run_forward(&f, in, out, 0);
	for (int i = 0; i < 11; i++)
		if (isnan(in[i]))
			assert_true(isnan(out[i]));
		else
			assert_float_equal(out[i], in[i] < 0 ? 0.0f : in[i], 0);
	release(&f);
}

/* ---- thread independence --------------------------------------------- */

/* What one training pass (forward, then backward) leaves: output, input
 * gradient, weight gradients and parameters (batchnorm's running stats). */
typedef struct {
	float *out, *din, *dw[SN_MAX_LAYER_PARAMS], *w[SN_MAX_LAYER_PARAMS];
} pass_result;

static void run_pass_on(fixture *f, const float *in, const float *dout, const int32_t *y,
			const float *const *w0, int threads, pass_result *r)
{
	sn_parallel *pool;
	assert_int_equal(sn_parallel_create(&pool, threads), 0);
	const int64_t stride = (f->l.scratch_per_example * f->B + f->l.scratch_fixed + 15) / 16 * 16;
	float *scratch = floats(stride * threads);
	for (int i = 0; i < f->l.nparams; i++) {
		memcpy(f->l.w[i], w0[i], (size_t)f->l.params[i].numel * sizeof(float));
		if (f->l.dw[i])
			memset(f->l.dw[i], 0, (size_t)f->l.params[i].numel * sizeof(float));
	}
	sn_rng rng;
	sn_rng_seed(&rng, 5);
	sn_pass p = {.training = 1, .rng = &rng, .scratch = scratch, .scratch_stride = stride,
		     .pool = pool, .labels = y};
	r->out = floats(f->nout);
	r->din = floats(f->nin);
	f->l.kind->forward(&f->l, in, r->out, f->B, &p);
	f->l.kind->backward(&f->l, in, r->out, dout, r->din, f->B, &p);
	for (int i = 0; i < f->l.nparams; i++) {
		const int64_t n = f->l.params[i].numel;
		r->w[i] = floats(n);
		memcpy(r->w[i], f->l.w[i], (size_t)n * sizeof(float));
		r->dw[i] = floats(n);
		if (f->l.dw[i])
			memcpy(r->dw[i], f->l.dw[i], (size_t)n * sizeof(float));
	}
	free(scratch);
	sn_parallel_free(pool);
}

static void free_result(const fixture *f, pass_result *r)
{
	free(r->out), free(r->din);
	for (int i = 0; i < f->l.nparams; i++)
		free(r->w[i]), free(r->dw[i]);
}

/* threads 0: b is the SSE2 build's */
static void expect_same_bits(const char *kind, const char *what, int threads, const float *a,
			     const float *b, int64_t n)
{
	if (memcmp(a, b, (size_t)n * sizeof *a)) {
		if (threads)
			print_error("%s: %s differs between 1 and %d threads\n", kind, what, threads);
		else
			print_error("%s: %s differs from the SSE2 build's\n", kind, what);
		fail();
	}
}

/* Forward and backward give the same bits on 1 thread as on 2, 3 and 4;
 * or, given `sse2`, as that kind (the same source built without vector
 * clones) on 1 thread. */
static void expect_same_passes(sn_layer l, int B, const sn_layer_kind *sse2)
{
	fixture f;
	prepare(&f, l, B, 21);
	float *in = inputs_without_ties(&f, 4), *dout = floats(f.nout), *w0[SN_MAX_LAYER_PARAMS];
	int32_t *y = calloc((size_t)B, sizeof *y);
	assert_non_null(y);
	sn_rng r;
	sn_rng_seed(&r, 6);
	fill(dout, f.nout, &r, -1.0f, 1.0f);
	for (int b = 0; b < B; b++)
		y[b] = (int32_t)sn_rng_below(&r, (uint64_t)sn_shape_size(&f.l.out));
	for (int i = 0; i < f.l.nparams; i++) {
		w0[i] = floats(f.l.params[i].numel);
		memcpy(w0[i], f.l.w[i], (size_t)f.l.params[i].numel * sizeof(float));
	}
	pass_result one, other;
	run_pass_on(&f, in, dout, y, (const float *const *)w0, 1, &one);
	const int first = sse2 ? 0 : 2, last = sse2 ? 0 : 4;   /* t = 0: the SSE2 kind */
	if (sse2)
		f.l.kind = sse2;
	for (int t = first; t <= last; t++) {
		run_pass_on(&f, in, dout, y, (const float *const *)w0, t ? t : 1, &other);
		expect_same_bits(l.kind->name, "output", t, one.out, other.out, f.nout);
		expect_same_bits(l.kind->name, "input gradient", t, one.din, other.din, f.nin);
		for (int i = 0; i < f.l.nparams; i++) {
			const int64_t n = f.l.params[i].numel;
			expect_same_bits(l.kind->name, f.l.params[i].suffix, t, one.w[i], other.w[i], n);
			expect_same_bits(l.kind->name, "weight gradient", t, one.dw[i], other.dw[i], n);
		}
		free_result(&f, &other);
	}
	free_result(&f, &one);
	for (int i = 0; i < f.l.nparams; i++)
		free(w0[i]);
	free(in), free(dout), free(y);
	release(&f);
}

static void expect_thread_independent(sn_layer l, int B)
{
	expect_same_passes(l, B, NULL);
}

/* Batches of odd sizes, and layers large enough to split into many units
 * (conv chunks, dense blocks, activation spans). */
static void every_kind_gives_the_same_bits_on_any_thread_count(void **state)
{
	(void)state;
	sn_layer l = layer("conv", chw(16, 32, 32));   /* two examples per chunk */
	opt(&l, SN_OPT_FILTERS, 4);
	opt(&l, SN_OPT_KERNEL, 3);
	expect_thread_independent(l, 7);
	expect_thread_independent(l, 37);              /* more chunks than groups */
	l = layer("conv", chw(8, 16, 16));             /* din by convolution */
	opt(&l, SN_OPT_FILTERS, 8);
	opt(&l, SN_OPT_KERNEL, 3);
	opt(&l, SN_OPT_PAD, 1);
	expect_thread_independent(l, 37);
	l = layer("conv", chw(8, 28, 28));             /* the direct kernel both ways */
	opt(&l, SN_OPT_FILTERS, 8);
	opt(&l, SN_OPT_KERNEL, 3);
	opt(&l, SN_OPT_PAD, 1);
	expect_thread_independent(l, 21);
	l = layer("conv", chw(8, 28, 28));             /* the direct 5x5: 21 chunks, 8 groups */
	opt(&l, SN_OPT_FILTERS, 16);
	opt(&l, SN_OPT_KERNEL, 5);
	opt(&l, SN_OPT_PAD, 2);
	expect_thread_independent(l, 21);
	l = layer("conv", chw(8, 8, 8));               /* the direct kernel, rows packed */
	opt(&l, SN_OPT_FILTERS, 16);
	opt(&l, SN_OPT_KERNEL, 3);
	opt(&l, SN_OPT_PAD, 1);
	expect_thread_independent(l, 19);
	l = layer("conv", chw(4, 28, 28));             /* the direct kernel at stride 2 */
	opt(&l, SN_OPT_FILTERS, 8);
	opt(&l, SN_OPT_KERNEL, 3);
	opt(&l, SN_OPT_STRIDE, 2);
	opt(&l, SN_OPT_PAD, 1);
	expect_thread_independent(l, 21);
	l = layer("conv", chw(3, 17, 17));             /* strided, padded */
	opt(&l, SN_OPT_FILTERS, 5);
	opt(&l, SN_OPT_KERNEL, 5);
	opt(&l, SN_OPT_STRIDE, 2);
	opt(&l, SN_OPT_PAD, 2);
	expect_thread_independent(l, 33);
	l = layer("dense", chw(3, 10, 10));
	opt(&l, SN_OPT_UNITS, 130);
	expect_thread_independent(l, 29);
	l = layer("dense", vec(70));                   /* split by examples */
	opt(&l, SN_OPT_UNITS, 10);
	expect_thread_independent(l, 151);
	const char *planes[] = {"maxpool", "avgpool"};
	for (int i = 0; i < 2; i++) {
		l = layer(planes[i], chw(5, 12, 12));
		opt(&l, SN_OPT_KERNEL, 2);
		expect_thread_independent(l, 13);
		opt(&l, SN_OPT_KERNEL, 3);
		opt(&l, SN_OPT_STRIDE, 2);
		opt(&l, SN_OPT_PAD, 1);
		expect_thread_independent(l, 13);
	}
	expect_thread_independent(layer("global_avgpool", chw(7, 5, 5)), 11);
	expect_thread_independent(layer("batchnorm", chw(6, 9, 9)), 15);
	expect_thread_independent(layer("batchnorm", vec(40)), 15);
	const char *elementwise[] = {"relu", "leaky_relu", "tanh", "sigmoid", "dropout", "flatten"};
	for (int i = 0; i < 6; i++)
		expect_thread_independent(layer(elementwise[i], chw(4, 30, 30)), 31);
	expect_thread_independent(layer("softmax_cross_entropy", vec(10)), 27);
}

/* ---- setup errors ---------------------------------------------------- */

static void expect_setup_error(sn_layer l, const char *detail)
{
	sn_errclear();
	assert_int_equal(l.kind->setup(&l), SN_ENET);
	if (!strstr(sn_errdetail(), detail)) {
		print_error("detail \"%s\" lacks \"%s\"\n", sn_errdetail(), detail);
		fail();
	}
}

static void conv_refuses_bad_options_with_a_reason(void **state)
{
	(void)state;
	sn_layer l = layer("conv", chw(1, 5, 5));
	expect_setup_error(l, "filters is required");
	opt(&l, SN_OPT_FILTERS, 4);
	expect_setup_error(l, "kernel is required");
	opt(&l, SN_OPT_KERNEL, -3);
	expect_setup_error(l, "kernel -3 must be positive");
	opt(&l, SN_OPT_KERNEL, 2.5);
	expect_setup_error(l, "kernel 2.5 must be an integer");
	opt(&l, SN_OPT_KERNEL, 7);
	expect_setup_error(l, "kernel 7 larger than padded input 5x5");
	opt(&l, SN_OPT_PAD, 1);
	assert_int_equal(l.kind->setup(&l), 0);
	opt(&l, SN_OPT_STRIDE, 0);
	expect_setup_error(l, "stride 0 must be positive");
	opt(&l, SN_OPT_STRIDE, 1);
	opt(&l, SN_OPT_BIAS, 2);
	expect_setup_error(l, "bias 2 must be 0 or 1");
	opt(&l, SN_OPT_FILTERS, 1e12);
	expect_setup_error(l, "filters 1e+12 is too large");
	expect_setup_error(layer("conv", vec(10)), "needs [C,H,W] input");
	l = layer("conv", chw(3, 5, 5));
	opt(&l, SN_OPT_FILTERS, 4);
	opt(&l, SN_OPT_KERNEL, 1 << 24);
	opt(&l, SN_OPT_PAD, 1 << 24);
	expect_setup_error(l, "is too large");
}

static void other_kinds_refuse_bad_options(void **state)
{
	(void)state;
	sn_layer l = layer("maxpool", chw(1, 4, 4));
	expect_setup_error(l, "kernel is required");
	opt(&l, SN_OPT_KERNEL, 2);
	opt(&l, SN_OPT_PAD, 2);
	expect_setup_error(l, "pad 2 larger than half the kernel 2");
	opt(&l, SN_OPT_PAD, -1);
	expect_setup_error(l, "pad -1 must be at least 0");
	l = layer("avgpool", chw(1, 4, 4));
	opt(&l, SN_OPT_KERNEL, 5);
	expect_setup_error(l, "kernel 5 larger than padded input 4x4");

	expect_setup_error(layer("dense", vec(4)), "units is required");
	l = layer("dropout", vec(4));
	opt(&l, SN_OPT_RATE, 1.0);
	expect_setup_error(l, "rate 1 must be in [0, 1)");
	opt(&l, SN_OPT_RATE, -0.1);
	expect_setup_error(l, "rate -0.1 must be in [0, 1)");
	l = layer("batchnorm", vec(4));
	opt(&l, SN_OPT_EPS, 0);
	expect_setup_error(l, "eps 0 must be positive");
	l = layer("batchnorm", vec(4));
	opt(&l, SN_OPT_MOMENTUM, 1.5);
	expect_setup_error(l, "momentum 1.5 must be in [0, 1]");
	l = layer("leaky_relu", vec(4));
	opt(&l, SN_OPT_SLOPE, INFINITY);
	expect_setup_error(l, "slope inf must be finite");
	expect_setup_error(layer("softmax_cross_entropy", chw(10, 1, 1)), "needs [classes] input");
	expect_setup_error(layer("softmax_cross_entropy", vec(1)), "at least 2 classes");
	expect_setup_error(layer("global_avgpool", vec(3)), "needs [C,H,W] input");
}

/* ---- joins (add, concat) --------------------------------------------- */

/* A join layer over inputs of the given shapes, set up, with its inputs
 * filled; src[k] says which buffer input k reads, so one buffer can be
 * listed twice, as `inputs: [a, a]` does. */
typedef struct {
	sn_layer l;
	int B, nbuf;
	float *buf[SN_MAX_INPUTS], *dbuf[SN_MAX_INPUTS];
	int64_t nbuf_floats[SN_MAX_INPUTS];
	int src[SN_MAX_INPUTS];
	float *out, *R;
	int64_t nout;
} join_fixture;

static void join_prepare(join_fixture *j, const char *kind, int n, const sn_shape *shapes,
			 const int *src, int B)
{
	sn_rng r;
	sn_rng_seed(&r, 11);
	memset(j, 0, sizeof *j);
	j->l = layer(kind, shapes[0]);
	j->l.ninputs = n;
	j->B = B;
	for (int k = 0; k < n; k++) {
		j->l.ins[k] = shapes[k];
		j->src[k] = src[k];
		if (src[k] >= j->nbuf) {
			j->nbuf = src[k] + 1;
			j->nbuf_floats[src[k]] = sn_shape_size(&shapes[k]) * B;
			j->buf[src[k]] = floats(j->nbuf_floats[src[k]]);
			j->dbuf[src[k]] = floats(j->nbuf_floats[src[k]]);
			fill(j->buf[src[k]], j->nbuf_floats[src[k]], &r, -1.0f, 1.0f);
		}
	}
	assert_int_equal(j->l.kind->setup(&j->l), 0);
	j->nout = sn_shape_size(&j->l.out) * B;
	j->out = floats(j->nout);
	j->R = floats(j->nout);
	fill(j->R, j->nout, &r, -1.0f, 1.0f);
}

static void join_release(join_fixture *j)
{
	for (int b = 0; b < j->nbuf; b++) {
		free(j->buf[b]);
		free(j->dbuf[b]);
	}
	free(j->out);
	free(j->R);
}

static double join_evaluate(join_fixture *j)
{
	const float *in[SN_MAX_INPUTS];
	for (int k = 0; k < j->l.ninputs; k++)
		in[k] = j->buf[j->src[k]];
	sn_pass p = {.training = 1};
	j->l.kind->forward_join(&j->l, in, j->out, j->B, &p);
	double sum = 0;
	for (int64_t i = 0; i < j->nout; i++)
		sum += (double)j->out[i] * j->R[i];
	return sum;
}

/* Backward adds into din (zeroed here, as the model does) and must match
 * central differences of sum(out * R) for every input value. */
static void join_gradcheck(join_fixture *j)
{
	const float *in[SN_MAX_INPUTS];
	float *din[SN_MAX_INPUTS];
	for (int k = 0; k < j->l.ninputs; k++) {
		in[k] = j->buf[j->src[k]];
		din[k] = j->dbuf[j->src[k]];
	}
	for (int b = 0; b < j->nbuf; b++)
		memset(j->dbuf[b], 0, (size_t)j->nbuf_floats[b] * sizeof(float));
	(void)join_evaluate(j);
	sn_pass p = {.training = 1};
	j->l.kind->backward_join(&j->l, in, j->out, j->R, din, j->B, &p);
	const float h = 1e-2f;
	int bad = 0;
	for (int b = 0; b < j->nbuf; b++)
		for (int64_t i = 0; i < j->nbuf_floats[b]; i++) {
			const float keep = j->buf[b][i];
			j->buf[b][i] = keep + h;
			double up = join_evaluate(j);
			j->buf[b][i] = keep - h;
			double down = join_evaluate(j);
			j->buf[b][i] = keep;
			double num = (up - down) / (2.0 * (double)h);
			if (!agree(num, j->dbuf[b][i]) && bad++ < 5)
				print_error("%s input buffer %d[%lld]: numeric %.6g, backward %.6g\n",
					    j->l.kind->name, b, (long long)i, num, j->dbuf[b][i]);
		}
	assert_int_equal(bad, 0);
}

static void add_gradients_match_finite_differences(void **state)
{
	(void)state;
	join_fixture j;
	const sn_shape three[] = {chw(2, 3, 4), chw(2, 3, 4), chw(2, 3, 4)};
	join_prepare(&j, "add", 3, three, (const int[]){0, 1, 2}, 2);
	join_gradcheck(&j);
	assert_true(sn_shape_size(&j.l.out) == 24 && j.l.out.ndim == 3);
	join_release(&j);

	join_prepare(&j, "add", 3, three, (const int[]){0, 1, 0}, 3);   /* a + b + a */
	join_gradcheck(&j);
	for (int64_t i = 0; i < j.nbuf_floats[0]; i++)
		assert_float_equal(j.dbuf[0][i], 2.0f * j.R[i], 1e-6);
	join_release(&j);

	const sn_shape flat[] = {vec(5), vec(5)};
	join_prepare(&j, "add", 2, flat, (const int[]){0, 1}, 2);
	join_gradcheck(&j);
	join_release(&j);
}

/* A join's forward and backward on a pool of `threads` (1: none). */
static void join_pass(join_fixture *j, int threads, float *out, float **din)
{
	sn_parallel *pool = NULL;
	if (threads > 1)
		assert_int_equal(sn_parallel_create(&pool, threads), 0);
	const float *in[SN_MAX_INPUTS];
	float *d[SN_MAX_INPUTS];
	for (int b = 0; b < j->nbuf; b++)
		memset(din[b], 0, (size_t)j->nbuf_floats[b] * sizeof(float));
	for (int k = 0; k < j->l.ninputs; k++) {
		in[k] = j->buf[j->src[k]];
		d[k] = din[j->src[k]];
	}
	sn_pass p = {.training = 1, .pool = pool};
	j->l.kind->forward_join(&j->l, in, out, j->B, &p);
	j->l.kind->backward_join(&j->l, in, out, j->R, d, j->B, &p);
	sn_parallel_free(pool);
}

/* Inputs of many spans, one buffer listed twice (add's sums checked too). */
static void joins_give_the_same_bits_on_any_thread_count(void **state)
{
	(void)state;
	const char *kinds[] = {"add", "concat"};
	for (int i = 0; i < 2; i++) {
		join_fixture j;
		const sn_shape shapes[] = {chw(8, 30, 30), chw(8, 30, 30), chw(8, 30, 30)};
		join_prepare(&j, kinds[i], 3, shapes, (const int[]){0, 1, 0}, 7);
		float *out1 = floats(j.nout), *outn = floats(j.nout), *din1[2], *dinn[2];
		for (int b = 0; b < 2; b++) {
			din1[b] = floats(j.nbuf_floats[b]);
			dinn[b] = floats(j.nbuf_floats[b]);
		}
		join_pass(&j, 1, out1, din1);
		if (i == 0) {   /* add, every span: (a + b) + a, and a's gradient twice */
			int bad = 0;
			for (int64_t e = 0; e < j.nout; e++) {
				const float a = j.buf[0][e], b = j.buf[1][e];
				bad += out1[e] != (a + b) + a || din1[0][e] != j.R[e] + j.R[e] ||
				       din1[1][e] != j.R[e];
			}
			assert_int_equal(bad, 0);
		}
		for (int t = 2; t <= 4; t++) {
			join_pass(&j, t, outn, dinn);
			expect_same_bits(kinds[i], "output", t, out1, outn, j.nout);
			for (int b = 0; b < 2; b++)
				expect_same_bits(kinds[i], "input gradient", t, din1[b], dinn[b],
						 j.nbuf_floats[b]);
		}
		free(out1), free(outn);
		for (int b = 0; b < 2; b++)
			free(din1[b]), free(dinn[b]);
		join_release(&j);
	}
}

static void concat_gradients_match_finite_differences(void **state)
{
	(void)state;
	join_fixture j;
	const sn_shape parts[] = {chw(1, 3, 2), chw(3, 3, 2), chw(2, 3, 2)};
	join_prepare(&j, "concat", 3, parts, (const int[]){0, 1, 2}, 2);
	assert_int_equal(j.l.out.d[0], 6);
	assert_int_equal(j.l.out.d[1], 3);
	join_gradcheck(&j);
	join_release(&j);

	const sn_shape twice[] = {chw(2, 2, 2), chw(1, 2, 2), chw(2, 2, 2)};
	join_prepare(&j, "concat", 3, twice, (const int[]){0, 1, 0}, 2);   /* [a, b, a] */
	join_gradcheck(&j);
	join_release(&j);

	const sn_shape flat[] = {vec(3), vec(4)};
	join_prepare(&j, "concat", 2, flat, (const int[]){0, 1}, 3);
	assert_int_equal(j.l.out.d[0], 7);
	join_gradcheck(&j);
	join_release(&j);
}

/* concat lays the inputs out channel after channel within each example,
 * as torch.cat(dim=1) does. */
static void concat_joins_channels_per_example(void **state)
{
	(void)state;
	join_fixture j;
	const sn_shape parts[] = {chw(1, 1, 2), chw(2, 1, 2)};
	join_prepare(&j, "concat", 2, parts, (const int[]){0, 1}, 2);
	for (int i = 0; i < 4; i++)
		j.buf[0][i] = (float)(10 + i);
	for (int i = 0; i < 8; i++)
		j.buf[1][i] = (float)(20 + i);
	(void)join_evaluate(&j);
	const float want[] = {10, 11, 20, 21, 22, 23, 12, 13, 24, 25, 26, 27};
	for (int i = 0; i < 12; i++)
		assert_float_equal(j.out[i], want[i], 0);
	join_release(&j);
}

static void joins_refuse_inputs_that_do_not_fit(void **state)
{
	(void)state;
	sn_layer l = layer("add", chw(2, 3, 3));
	l.ninputs = 1;
	l.ins[0] = l.in;
	expect_setup_error(l, "add needs at least two inputs");
	l.ninputs = 2;
	l.ins[1] = chw(3, 3, 3);
	expect_setup_error(l, "add: input 2 is [3,3,3] but input 1 is [2,3,3]");
	l = layer("concat", chw(2, 3, 3));
	l.ninputs = 2;
	l.ins[0] = l.in;
	l.ins[1] = chw(2, 4, 3);
	expect_setup_error(l, "concat: input 2 is [2,4,3] but input 1 is [2,3,3]");
	l.ins[1] = vec(18);
	expect_setup_error(l, "concat needs one height and width");
}

/* The library's kinds (the widest clone this CPU has) against the same
 * sources built for SSE2 alone (the top of this file): the same bits, on
 * planes that end in a full block and in a partial one. */
static void cloned_loops_give_the_bits_of_sse2(void **state)
{
	(void)state;
	const sn_shape planes[] = {chw(6, 9, 9), chw(24, 28, 28), chw(16, 14, 14), chw(9, 7, 7),
				   chw(4, 4, 4), vec(40)};
	for (int i = 0; i < 6; i++)
		expect_same_passes(layer("batchnorm", planes[i]), 5, &sse2_kind_batchnorm);
	expect_same_passes(layer("relu", chw(4, 30, 30)), 3, &sse2_kind_relu);
	expect_same_passes(layer("relu", chw(3, 5, 7)), 3, &sse2_kind_relu);

	join_fixture a, b;
	const sn_shape three[] = {chw(8, 30, 29), chw(8, 30, 29), chw(8, 30, 29)};
	join_prepare(&a, "add", 3, three, (const int[]){0, 1, 2}, 7);
	join_prepare(&b, "add", 3, three, (const int[]){0, 1, 2}, 7);
	b.l.kind = &sse2_kind_add;
	float *da[3], *db[3];
	for (int k = 0; k < 3; k++) {
		da[k] = floats(a.nbuf_floats[k]);
		db[k] = floats(b.nbuf_floats[k]);
	}
	join_pass(&a, 1, a.out, da);
	join_pass(&b, 1, b.out, db);
	expect_same_bits("add", "output", 0, a.out, b.out, a.nout);
	for (int k = 0; k < 3; k++) {
		expect_same_bits("add", "input gradient", 0, da[k], db[k], a.nbuf_floats[k]);
		free(da[k]), free(db[k]);
	}
	join_release(&a);
	join_release(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(conv_gradients_match_finite_differences),
		cmocka_unit_test(conv_gradients_are_right_across_chunks),
		cmocka_unit_test(conv_weight_gradients_do_not_depend_on_din),
		cmocka_unit_test(pool_gradients_match_finite_differences),
		cmocka_unit_test(dense_gradients_match_finite_differences),
		cmocka_unit_test(activation_gradients_match_finite_differences),
		cmocka_unit_test(dropout_gradient_matches_finite_differences),
		cmocka_unit_test(batchnorm_gradients_match_finite_differences),
		cmocka_unit_test(loss_gradient_matches_finite_differences),
		cmocka_unit_test(conv_agrees_with_the_naive_convolution),
		cmocka_unit_test(conv_direct_agrees_with_the_naive_and_the_gemm_paths),
		cmocka_unit_test(dense_agrees_with_the_naive_product),
		cmocka_unit_test(maxpool_agrees_with_the_naive_pooling),
		cmocka_unit_test(avgpool_agrees_with_the_naive_pooling),
		cmocka_unit_test(output_shapes_follow_the_floor_rule),
		cmocka_unit_test(params_use_pytorch_shapes),
		cmocka_unit_test(every_kind_is_listed_once),
		cmocka_unit_test(avgpool_counts_the_padding),
		cmocka_unit_test(maxpool_pads_with_minus_infinity_and_keeps_nan),
		cmocka_unit_test(dropout_scales_kept_values_and_is_identity_in_eval),
		cmocka_unit_test(batchnorm_updates_running_statistics_like_pytorch),
		cmocka_unit_test(loss_is_stable_for_large_logits),
		cmocka_unit_test(relu_passes_nan_on),
		cmocka_unit_test(conv_refuses_bad_options_with_a_reason),
		cmocka_unit_test(other_kinds_refuse_bad_options),
		cmocka_unit_test(add_gradients_match_finite_differences),
		cmocka_unit_test(concat_gradients_match_finite_differences),
		cmocka_unit_test(concat_joins_channels_per_example),
		cmocka_unit_test(joins_refuse_inputs_that_do_not_fit),
		cmocka_unit_test(every_kind_gives_the_same_bits_on_any_thread_count),
		cmocka_unit_test(joins_give_the_same_bits_on_any_thread_count),
		cmocka_unit_test(cloned_loops_give_the_bits_of_sse2),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
