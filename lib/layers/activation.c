/* activation.c: elementwise, shape-preserving nonlinearities.  Written so a
 * NaN input gives a NaN output, as in PyTorch, so the model can name the
 * layer where a divergence first shows. */
#include "layers.h"

#include <math.h>

static int elementwise_setup(sn_layer *l, int64_t flops_fwd, int64_t flops_bwd)
{
	const int64_t n = sn_shape_size(&l->in);
	l->out = l->in;
	l->nparams = 0;
	l->flops_forward = flops_fwd * n;
	l->flops_backward = flops_bwd * n;
	l->saved_per_example = l->saved_fixed = 0;
	l->scratch_per_example = l->scratch_fixed = 0;
	return 0;
}

static int64_t batch_size(const sn_layer *l, int B)
{
	return sn_shape_size(&l->in) * B;
}

static int relu_setup(sn_layer *l) { return elementwise_setup(l, 1, 1); }

/* relu's loops come in blocks of 16 over restrict pointers, the form GCC's
 * -O2 vectoriser takes; plain loops stayed scalar and cost as much as a
 * small conv layer's GEMM.  Cloned per vector width (SN_VECTOR_CLONES). */
SN_VECTOR_CLONES static void relu_kernel(const float *restrict in, float *restrict out, int64_t n)
{
	int64_t i = 0;
	for (; i + 16 <= n; i += 16)
		for (int j = 0; j < 16; j++)
			out[i + j] = in[i + j] < 0.0f ? 0.0f : in[i + j];
	for (; i < n; i++)
		out[i] = in[i] < 0.0f ? 0.0f : in[i];
}

SN_VECTOR_CLONES static void relu_grad_kernel(const float *restrict in, const float *restrict dout,
					      float *restrict din, int64_t n)
{
	int64_t i = 0;
	for (; i + 16 <= n; i += 16)
		for (int j = 0; j < 16; j++) {
			const float d = dout[i + j];   /* loaded either way, so it vectorises */
			din[i + j] = in[i + j] > 0.0f ? d : 0.0f;
		}
	for (; i < n; i++)
		din[i] = in[i] > 0.0f ? dout[i] : 0.0f;
}

/* The passes run in units of SPAN floats, whatever the thread count.
 * A span's function gets the pass's arrays at the span's start (NULL where
 * the pass has none) and writes dst. */
#define SPAN 16384

typedef void span_fn(const sn_layer *l, const float *in, const float *out, const float *dout,
		     float *dst, int64_t n);

typedef struct {
	const sn_layer *l;
	span_fn *fn;
	const float *in, *out, *dout;
	float *dst;
	int64_t n;
} span_job;

static const float *at(const float *x, int64_t i)
{
	return x ? x + i : NULL;
}

static void span_unit(void *ctx, int64_t unit, int thread)
{
	(void)thread;
	const span_job *j = ctx;
	const int64_t i = unit * SPAN, n = j->n - i < SPAN ? j->n - i : SPAN;
	j->fn(j->l, at(j->in, i), at(j->out, i), at(j->dout, i), j->dst + i, n);
}

static void for_spans(const sn_pass *p, const sn_layer *l, span_fn *fn, const float *in,
		      const float *out, const float *dout, float *dst, int B)
{
	span_job j = {l, fn, in, out, dout, dst, batch_size(l, B)};
	sn_parallel_for(p->pool, (j.n + SPAN - 1) / SPAN, span_unit, &j);
}

static void relu_span(const sn_layer *l, const float *in, const float *out, const float *dout,
		      float *dst, int64_t n)
{
	(void)l, (void)out, (void)dout;
	relu_kernel(in, dst, n);
}

static void relu_grad_span(const sn_layer *l, const float *in, const float *out,
			   const float *dout, float *dst, int64_t n)
{
	(void)l, (void)out;
	relu_grad_kernel(in, dout, dst, n);
}

static void relu_forward(sn_layer *l, const float *in, float *out, int B, sn_pass *p)
{
	for_spans(p, l, relu_span, in, NULL, NULL, out, B);
}

static void relu_backward(sn_layer *l, const float *in, const float *out,
			  const float *dout, float *din, int B, sn_pass *p)
{
	(void)out;
	if (din)
		for_spans(p, l, relu_grad_span, in, NULL, dout, din, B);
}

static int leaky_relu_setup(sn_layer *l)
{
	if (l->opt_set & (1u << SN_OPT_SLOPE)) {
		double s = l->opt[SN_OPT_SLOPE];
		if (!isfinite(s))
			return sn_fail(SN_ENET, "slope %g must be finite", s);
	}
	return elementwise_setup(l, 2, 2);
}

static float slope_of(const sn_layer *l)
{
	return (l->opt_set & (1u << SN_OPT_SLOPE)) ? (float)l->opt[SN_OPT_SLOPE] : 0.01f;
}

static void leaky_relu_span(const sn_layer *l, const float *in, const float *out,
			    const float *dout, float *dst, int64_t n)
{
	(void)out, (void)dout;
	const float a = slope_of(l);
	for (int64_t i = 0; i < n; i++)
		dst[i] = in[i] < 0.0f ? a * in[i] : in[i];
}

static void leaky_relu_grad_span(const sn_layer *l, const float *in, const float *out,
				 const float *dout, float *dst, int64_t n)
{
	(void)out;
	const float a = slope_of(l);
	for (int64_t i = 0; i < n; i++)
		dst[i] = in[i] > 0.0f ? dout[i] : a * dout[i];
}

static void leaky_relu_forward(sn_layer *l, const float *in, float *out, int B, sn_pass *p)
{
	for_spans(p, l, leaky_relu_span, in, NULL, NULL, out, B);
}

static void leaky_relu_backward(sn_layer *l, const float *in, const float *out,
				const float *dout, float *din, int B, sn_pass *p)
{
	(void)out;
	if (din)
		for_spans(p, l, leaky_relu_grad_span, in, NULL, dout, din, B);
}

static int tanh_setup(sn_layer *l) { return elementwise_setup(l, 4, 3); }

static void tanh_span(const sn_layer *l, const float *in, const float *out, const float *dout,
		      float *dst, int64_t n)
{
	(void)l, (void)out, (void)dout;
	for (int64_t i = 0; i < n; i++)
		dst[i] = tanhf(in[i]);
}

static void tanh_grad_span(const sn_layer *l, const float *in, const float *out,
			   const float *dout, float *dst, int64_t n)
{
	(void)l, (void)in;
	for (int64_t i = 0; i < n; i++)
		dst[i] = dout[i] * (1.0f - out[i] * out[i]);
}

static void tanh_forward(sn_layer *l, const float *in, float *out, int B, sn_pass *p)
{
	for_spans(p, l, tanh_span, in, NULL, NULL, out, B);
}

static void tanh_backward(sn_layer *l, const float *in, const float *out,
			  const float *dout, float *din, int B, sn_pass *p)
{
	(void)in;
	if (din)
		for_spans(p, l, tanh_grad_span, NULL, out, dout, din, B);
}

static int sigmoid_setup(sn_layer *l) { return elementwise_setup(l, 4, 3); }

static void sigmoid_span(const sn_layer *l, const float *in, const float *out,
			 const float *dout, float *dst, int64_t n)
{
	(void)l, (void)out, (void)dout;
	for (int64_t i = 0; i < n; i++)
		dst[i] = 1.0f / (1.0f + expf(-in[i]));
}

static void sigmoid_grad_span(const sn_layer *l, const float *in, const float *out,
			      const float *dout, float *dst, int64_t n)
{
	(void)l, (void)in;
	for (int64_t i = 0; i < n; i++)
		dst[i] = dout[i] * out[i] * (1.0f - out[i]);
}

static void sigmoid_forward(sn_layer *l, const float *in, float *out, int B, sn_pass *p)
{
	for_spans(p, l, sigmoid_span, in, NULL, NULL, out, B);
}

static void sigmoid_backward(sn_layer *l, const float *in, const float *out,
			     const float *dout, float *din, int B, sn_pass *p)
{
	(void)in;
	if (din)
		for_spans(p, l, sigmoid_grad_span, NULL, out, dout, din, B);
}

const sn_layer_kind sn_kind_relu = {
	.name = "relu", .epilogue_part = SN_EPILOGUE_RELU, .setup = relu_setup,
	.forward = relu_forward, .backward = relu_backward,
};

const sn_layer_kind sn_kind_leaky_relu = {
	.name = "leaky_relu", .options = 1u << SN_OPT_SLOPE, .setup = leaky_relu_setup,
	.forward = leaky_relu_forward, .backward = leaky_relu_backward,
};

const sn_layer_kind sn_kind_tanh = {
	.name = "tanh", .setup = tanh_setup,
	.forward = tanh_forward, .backward = tanh_backward,
};

const sn_layer_kind sn_kind_sigmoid = {
	.name = "sigmoid", .setup = sigmoid_setup,
	.forward = sigmoid_forward, .backward = sigmoid_backward,
};
