/* conv.c: 2-D convolution, lowered to GEMMs over chunks of the minibatch.
 *
 * im2col lays a chunk of n examples out as cols[C*k*k, n*OH*OW], so the
 * forward pass is the product W[F, C*k*k] x cols, and backward two more
 * (dW^T += cols x dY^T, dcols = W^T x dY, then col2im).  A chunk holds as
 * many examples as fit about 1 MB of columns: wide enough GEMMs to keep
 * OpenBLAS efficient (LeNet's conv1 takes 18 examples at a time), small
 * enough to stay in cache, where whole-batch columns (52 MB for
 * cifar10_quick's conv2 at batch 64) made every pass wait on memory.
 * Backward rebuilds a chunk's columns rather than keeping them, so a conv
 * layer needs no per-example memory beyond its activations.  The GEMM
 * result is [F, n*OH*OW]; copying it to NCHW is a row copy per (b, f),
 * into which the bias add is folded; a chunk of one example lands in NCHW
 * directly.
 *
 * Stride-1 layers with padding go through a zero-bordered copy of the
 * chunk, so that im2col is plain row copies.  Where such a layer's output
 * is no smaller than its input, din is itself a convolution (of dout with
 * the flipped filters), which runs as the forward pass does instead of a
 * K = F GEMM and a col2im of adds.  GEMM outputs are zeroed by memset and
 * summed into: OpenBLAS's beta = 0 pass was slower.
 *
 * Stride-1 3x3 and 5x5 layers with filters in eights and rows that fill
 * most of a vector skip the lowering where the CPU has AVX-512: the direct
 * kernel of conv_direct.c reads the (padded) planes as they lie. */
#include "layers.h"

#include <cblas.h>
#include <string.h>

typedef struct {
	int64_t C, H, W, F, k, stride, pad, OH, OW;
} conv_geom;

static int64_t opt_or(const sn_layer *l, enum sn_opt o, int64_t dflt)
{
	return (l->opt_set & (1u << o)) ? (int64_t)l->opt[o] : dflt;
}

static conv_geom geom_of(const sn_layer *l)
{
	conv_geom g = {
		.C = l->in.d[0], .H = l->in.d[1], .W = l->in.d[2],
		.F = opt_or(l, SN_OPT_FILTERS, 1), .k = opt_or(l, SN_OPT_KERNEL, 1),
		.stride = opt_or(l, SN_OPT_STRIDE, 1), .pad = opt_or(l, SN_OPT_PAD, 0),
	};
	g.OH = (g.H + 2 * g.pad - g.k) / g.stride + 1;
	g.OW = (g.W + 2 * g.pad - g.k) / g.stride + 1;
	return g;
}

/* Examples per chunk: about 1 MB of columns. */
static int64_t chunk_of(const conv_geom *g)
{
	const int64_t per_example = g->C * g->k * g->k * g->OH * g->OW;
	const int64_t n = (INT64_C(1) << 18) / per_example;
	return n < 1 ? 1 : n;
}

static int64_t scratch_floats(const conv_geom *g);
static int64_t saved_floats(const conv_geom *g);

static int conv_setup(sn_layer *l)
{
	int64_t F, k, s, p, bias;
	int err;
	if (l->in.ndim != 3)
		return sn_fail(SN_ENET, "conv needs [C,H,W] input, got %d dimension(s)",
			       l->in.ndim);
	if ((err = sn_layer_opt_int(l, SN_OPT_FILTERS, -1, 1, &F)) ||
	    (err = sn_layer_opt_int(l, SN_OPT_KERNEL, -1, 1, &k)) ||
	    (err = sn_layer_opt_int(l, SN_OPT_STRIDE, 1, 1, &s)) ||
	    (err = sn_layer_opt_int(l, SN_OPT_PAD, 0, 0, &p)) ||
	    (err = sn_layer_opt_int(l, SN_OPT_BIAS, 1, 0, &bias)))
		return err;
	if (bias > 1)
		return sn_fail(SN_ENET, "bias %lld must be 0 or 1", (long long)bias);
	conv_geom g = geom_of(l);
	if (k > g.H + 2 * p || k > g.W + 2 * p)
		return sn_fail(SN_ENET, "kernel %lld larger than padded input %lldx%lld",
			       (long long)k, (long long)(g.H + 2 * p), (long long)(g.W + 2 * p));
	/* in double, so absurd sizes are refused before int64 products overflow;
	 * the limit keeps every GEMM dimension an int, as BLAS takes them */
	const double limit = (double)INT32_MAX, spatial_d = (double)g.OH * (double)g.OW;
	const double ckk_d = (double)g.C * (double)k * (double)k;
	if (ckk_d * (double)F > limit || spatial_d * (double)F > limit || ckk_d * spatial_d > limit)
		return sn_fail(SN_ENET, "conv of %lld filters %lldx%lld over %lldx%lldx%lld is too large",
			       (long long)F, (long long)k, (long long)k, (long long)g.C,
			       (long long)g.H, (long long)g.W);
	l->out = (sn_shape){3, {F, g.OH, g.OW}};
	int64_t ckk = g.C * k * k, spatial = g.OH * g.OW;
	l->nparams = 0;
	sn_layer_add_param(l, "weight", 4, (int64_t[]){F, g.C, k, k}, 1, SN_INIT_FAN,
			   ckk, F * k * k);
	if (bias)
		sn_layer_add_param(l, "bias", 1, (int64_t[]){F}, 1, SN_INIT_ZERO, ckk, F * k * k);
	int64_t macs = F * ckk * spatial;
	l->flops_forward = 2 * macs + (bias ? F * spatial : 0);
	l->flops_backward = 4 * macs + (bias ? F * spatial : 0);
	l->saved_per_example = 0;
	l->saved_fixed = saved_floats(&g);
	l->scratch_per_example = 0;
	l->scratch_fixed = scratch_floats(&g);
	return 0;
}

/* The outputs [o0, o1) along one axis whose input o*stride - pad + kk lies
 * inside [0, n); the others read the zero padding. */
static void valid_range(const conv_geom *g, int64_t kk, int64_t n, int64_t outs,
			int64_t *o0, int64_t *o1)
{
	int64_t lo = g->pad - kk, hi = n + g->pad - kk;   /* o*stride in [lo, hi) */
	*o0 = lo <= 0 ? 0 : (lo + g->stride - 1) / g->stride;
	*o1 = hi <= 0 ? 0 : (hi + g->stride - 1) / g->stride;
	if (*o1 > outs)
		*o1 = outs;
	if (*o0 > *o1)
		*o0 = *o1;
}

/* Rows of im2col are short (OW floats), too short for a call to memcpy to
 * pay off.  Fixed 32-byte memcpys become inline vector moves; a plain loop
 * would be turned back into a call to memmove by the compiler. */
static inline void copy_floats(float *restrict dst, const float *restrict src, int64_t n)
{
	int64_t i = 0;
	for (; i + 8 <= n; i += 8)
		memcpy(dst + i, src + i, 8 * sizeof *dst);
	if (n - i >= 4) {   /* tails by fixed sizes too, or they become calls */
		memcpy(dst + i, src + i, 4 * sizeof *dst);
		i += 4;
	}
	if (n - i >= 2) {
		memcpy(dst + i, src + i, 2 * sizeof *dst);
		i += 2;
	}
	if (n - i >= 1)
		dst[i] = src[i];
}

/* rows runs of n floats, src rows W apart, to dst back to back.  Common
 * widths get loops of their own, in which the copies are fixed-size moves
 * with no tail to work out: these calls are most of im2col's time. */
static inline void copy_rows_of(float *restrict dst, const float *restrict src, int64_t rows,
				int64_t n, int64_t W)
{
	for (int64_t r = 0; r < rows; r++, src += W, dst += n)
		copy_floats(dst, src, n);
}

static void copy_rows(float *restrict dst, const float *restrict src, int64_t rows, int64_t n,
		      int64_t W)
{
	switch (n) {
	case 8: copy_rows_of(dst, src, rows, 8, W); break;
	case 16: copy_rows_of(dst, src, rows, 16, W); break;
	case 24: copy_rows_of(dst, src, rows, 24, W); break;
	case 32: copy_rows_of(dst, src, rows, 32, W); break;
	default: copy_rows_of(dst, src, rows, n, W); break;
	}
}

/* Padding runs are a few floats (at most pad): a loop would become a call
 * to memset, so they are stored one by one. */
static inline void zero_floats(float *dst, int64_t n)
{
	while (n >= 2) {
		dst[0] = dst[1] = 0.0f;
		dst += 2, n -= 2;
	}
	if (n)
		dst[0] = 0.0f;
}

/* Blocks of 8 with restrict pointers are what GCC's -O2 vectoriser takes;
 * the plain loop stayed scalar. */
static inline void copy_plus(float *restrict dst, const float *restrict src, float add,
			     int64_t n)
{
	int64_t i = 0;
	for (; i + 8 <= n; i += 8)
		for (int j = 0; j < 8; j++)
			dst[i + j] = src[i + j] + add;
	for (; i < n; i++)
		dst[i] = src[i] + add;
}

static inline void add_floats(float *restrict dst, const float *restrict src, int64_t n)
{
	int64_t i = 0;
	for (; i + 8 <= n; i += 8)
		for (int j = 0; j < 8; j++)
			dst[i + j] += src[i + j];
	if (n - i >= 4) {
		for (int j = 0; j < 4; j++)
			dst[i + j] += src[i + j];
		i += 4;
	}
	for (; i < n; i++)
		dst[i] += src[i];
}

/* The adjoint of copy_rows: rows runs of n floats from src, back to back,
 * added to dst rows W apart; common widths specialised likewise. */
static inline void add_rows_of(float *restrict dst, const float *restrict src, int64_t rows,
			       int64_t n, int64_t W)
{
	for (int64_t r = 0; r < rows; r++, dst += W, src += n)
		add_floats(dst, src, n);
}

static void add_rows(float *restrict dst, const float *restrict src, int64_t rows, int64_t n,
		     int64_t W)
{
	switch (n) {
	case 8: add_rows_of(dst, src, rows, 8, W); break;
	case 16: add_rows_of(dst, src, rows, 16, W); break;
	case 24: add_rows_of(dst, src, rows, 24, W); break;
	case 32: add_rows_of(dst, src, rows, 32, W); break;
	default: add_rows_of(dst, src, rows, n, W); break;
	}
}

/* One example's part of one im2col row, kernel offset (ki, kj): dst[oh*OW + ow]
 * = src[(oh*stride - pad + ki)*W + ow*stride - pad + kj], or 0 in the padding.
 * The valid ranges are worked out once, so the inner loop has no branches. */
static void gather_row(const conv_geom *g, const float *src, float *dst, int64_t ki,
		       int64_t kj, const int64_t valid[4])
{
	const int64_t oh0 = valid[0], oh1 = valid[1], ow0 = valid[2], ow1 = valid[3];
	if (g->stride == 1 && g->pad == 0) {   /* the common case: plain copies */
		copy_rows(dst, src + ki * g->W + kj, g->OH, g->OW, g->W);
		return;
	}
	memset(dst, 0, (size_t)(oh0 * g->OW) * sizeof *dst);
	for (int64_t oh = oh0; oh < oh1; oh++) {
		float *d = dst + oh * g->OW;
		const float *s = src + (oh * g->stride - g->pad + ki) * g->W;
		const int64_t shift = kj - g->pad;
		zero_floats(d, ow0);
		if (g->stride == 1)
			copy_floats(d + ow0, s + ow0 + shift, ow1 - ow0);
		else
			for (int64_t ow = ow0; ow < ow1; ow++)
				d[ow] = s[ow * g->stride + shift];
		zero_floats(d + ow1, g->OW - ow1);
	}
	memset(dst + oh1 * g->OW, 0, (size_t)((g->OH - oh1) * g->OW) * sizeof *dst);
}

/* The adjoint of gather_row: add dst's values back where they were read. */
static void scatter_row(const conv_geom *g, const float *src, float *dst, int64_t ki,
			int64_t kj, const int64_t valid[4])
{
	const int64_t oh0 = valid[0], oh1 = valid[1], ow0 = valid[2], ow1 = valid[3];
	if (g->stride == 1 && g->pad == 0) {
		add_rows(dst + ki * g->W + kj, src, g->OH, g->OW, g->W);
		return;
	}
	for (int64_t oh = oh0; oh < oh1; oh++) {
		const float *s = src + oh * g->OW;
		float *d = dst + (oh * g->stride - g->pad + ki) * g->W;
		const int64_t shift = kj - g->pad;
		if (g->stride == 1)
			add_floats(d + ow0 + shift, s + ow0, ow1 - ow0);
		else
			for (int64_t ow = ow0; ow < ow1; ow++)
				d[ow * g->stride + shift] += s[ow];
	}
}

/* cols[(c*k + ki)*k + kj][b*OH*OW + oh*OW + ow] = in[b][c][ih][iw] or 0:
 * each row is written front to back, one example after another. */
static void im2col(const conv_geom *g, const float *in, float *cols, int B)
{
	const int64_t S = g->OH * g->OW, N = B * S, plane = g->H * g->W;
	for (int64_t c = 0; c < g->C; c++)
		for (int64_t ki = 0; ki < g->k; ki++)
			for (int64_t kj = 0; kj < g->k; kj++) {
				float *row = cols + ((c * g->k + ki) * g->k + kj) * N;
				int64_t v[4];
				valid_range(g, ki, g->H, g->OH, &v[0], &v[1]);
				valid_range(g, kj, g->W, g->OW, &v[2], &v[3]);
				for (int64_t b = 0; b < B; b++)
					gather_row(g, in + (b * g->C + c) * plane, row + b * S, ki, kj, v);
			}
}

/* The adjoint of im2col: din[b][c][ih][iw] = sum of the columns that read it. */
static void col2im(const conv_geom *g, const float *cols, float *din, int B)
{
	const int64_t S = g->OH * g->OW, N = B * S, plane = g->H * g->W;
	memset(din, 0, (size_t)(B * g->C * plane) * sizeof *din);
	for (int64_t c = 0; c < g->C; c++)
		for (int64_t ki = 0; ki < g->k; ki++)
			for (int64_t kj = 0; kj < g->k; kj++) {
				const float *row = cols + ((c * g->k + ki) * g->k + kj) * N;
				int64_t v[4];
				valid_range(g, ki, g->H, g->OH, &v[0], &v[1]);
				valid_range(g, kj, g->W, g->OW, &v[2], &v[3]);
				for (int64_t b = 0; b < B; b++)
					scatter_row(g, row + b * S, din + (b * g->C + c) * plane, ki, kj, v);
			}
}

/* A sum with eight independent float accumulators: fast enough to hide in
 * the copy it sits beside, and in a fixed order, so deterministic. */
static double row_sum(const float *x, int64_t n)
{
	float acc[8] = {0};
	int64_t i = 0;
	for (; i + 8 <= n; i += 8)
		for (int j = 0; j < 8; j++)
			acc[j] += x[i + j];
	double sum = 0;
	for (int j = 0; j < 8; j++)
		sum += acc[j];
	for (; i < n; i++)
		sum += x[i];
	return sum;
}

/* Stride-1 convolutions with padding copy a chunk into a zero-bordered
 * buffer first, so im2col takes its plain-copy path: the copy is k*k times
 * smaller than the columns, whose rows would otherwise be pieced together
 * from short runs between the padding (12% of cifar10_quick's step). */
static int pads_by_copy(const conv_geom *g)
{
	return g->stride == 1 && g->pad > 0;
}

/* Whether the forward pass is the direct kernel's (stride 1 or 2). */
static int direct_takes(const conv_geom *g)
{
	return (g->stride == 1 || g->stride == 2) && sn_conv_direct_takes(g->F, g->k, g->OH, g->OW);
}

/* Floats of one example's padded copy: its planes, or for a stride-2
 * layer the direct kernel takes, its planes split into even and odd
 * columns ((Wp + 1) / 2 each). */
static int64_t padded_floats(const conv_geom *g)
{
	const int64_t Hp = g->H + 2 * g->pad, Wp = g->W + 2 * g->pad;
	if (g->stride == 2 && direct_takes(g))
		return g->C * Hp * 2 * ((Wp + 1) / 2);
	return pads_by_copy(g) ? g->C * Hp * Wp : 0;
}

/* n examples' padded planes, each split into its even and odd columns:
 * out[b][c][q][h][j] = the padded in[b][c][h][2j + q], 0 beyond it. */
static void split_chunk(const conv_geom *g, const float *in, float *out, int64_t n)
{
	const int64_t Hp = g->H + 2 * g->pad, half = (g->W + 2 * g->pad + 1) / 2;
	for (int64_t bc = 0; bc < n * g->C; bc++)
		for (int64_t q = 0; q < 2; q++) {
			float *plane = out + (bc * 2 + q) * Hp * half;
			memset(plane, 0, (size_t)(g->pad * half) * sizeof *plane);
			for (int64_t h = 0; h < g->H; h++) {
				const float *src = in + (bc * g->H + h) * g->W;
				float *row = plane + (h + g->pad) * half;
				for (int64_t j = 0; j < half; j++) {
					const int64_t w = 2 * j + q - g->pad;
					row[j] = w >= 0 && w < g->W ? src[w] : 0.0f;
				}
			}
			memset(plane + (g->H + g->pad) * half, 0,
			       (size_t)((Hp - g->H - g->pad) * half) * sizeof *plane);
		}
}

static void pad_chunk(const conv_geom *g, const float *in, float *padded, int64_t n)
{
	const int64_t Hp = g->H + 2 * g->pad, Wp = g->W + 2 * g->pad;
	memset(padded, 0, (size_t)(n * padded_floats(g)) * sizeof *padded);
	for (int64_t bc = 0; bc < n * g->C; bc++)
		for (int64_t h = 0; h < g->H; h++)
			copy_floats(padded + (bc * Hp + h + g->pad) * Wp + g->pad,
				    in + (bc * g->H + h) * g->W, g->W);
}

/* The columns of n examples, through the padded copy where that pays. */
static void lower(const conv_geom *g, const float *in, float *cols, float *padded, int64_t n)
{
	if (!pads_by_copy(g)) {
		im2col(g, in, cols, (int)n);
		return;
	}
	conv_geom unpadded = *g;
	unpadded.H += 2 * g->pad, unpadded.W += 2 * g->pad, unpadded.pad = 0;
	pad_chunk(g, in, padded, n);
	im2col(&unpadded, padded, cols, (int)n);
}

/* Scratch floats of conv_apply: a chunk's columns, its GEMM result and
 * its padded copy, in that order, for each thread. */
static int64_t apply_scratch(const conv_geom *g)
{
	const int64_t S = g->OH * g->OW, ckk = g->C * g->k * g->k;
	return chunk_of(g) * (ckk * S + g->F * S + padded_floats(g));
}

/* The bias (or 0) into n examples' F planes of S: from y, the GEMM's
 * [F][n*S] result, or alone where y is NULL.  At most one IEEE addition
 * per output, cloned per vector width: the same bits on any CPU. */
SN_VECTOR_CLONES static void add_bias(float *restrict out, const float *restrict y,
				      const float *bias, int64_t n, int64_t F, int64_t S)
{
	for (int64_t b = 0; b < n; b++)
		for (int64_t f = 0; f < F; f++) {
			float *o = out + (b * F + f) * S;
			const float add = bias ? bias[f] : 0.0f;
			if (y)
				copy_plus(o, y + f * n * S + b * S, add, S);
			else
				for (int64_t i = 0; i < S; i++)
					o[i] = add;
		}
}

/* e (layers.h) over n examples' F planes of S outputs, in place. */
SN_VECTOR_CLONES static void apply_epilogue(float *out, int64_t n, int64_t F, int64_t S,
					    const sn_epilogue *e)
{
	for (int64_t b = 0; b < n; b++)
		for (int64_t f = 0; f < F; f++) {
			float *o = out + (b * F + f) * S;
			if (e->mean) {
				const float m = e->mean[f], is = e->invstd[f], g = e->gamma[f],
					    be = e->beta[f];
				for (int64_t i = 0; i < S; i++)
					o[i] = g * ((o[i] - m) * is) + be;
			}
			if (e->relu)
				for (int64_t i = 0; i < S; i++)
					o[i] = o[i] < 0.0f ? 0.0f : o[i];
		}
}

/* out[n,F,OH,OW] = w conv in (+ bias, unless NULL), in NCHW, for the n
 * examples of one chunk, then e unless NULL. */
static void apply_chunk(const conv_geom *g, const float *w, const float *bias, const float *in,
			float *out, int64_t n, const sn_epilogue *e, float *scratch)
{
	const int64_t S = g->OH * g->OW, ckk = g->C * g->k * g->k, ns = n * S;
	float *cols = scratch, *y = cols + ckk * S * chunk_of(g), *padded = y + g->F * S * chunk_of(g);
	if (direct_takes(g)) {
		const int64_t Hp = g->H + 2 * g->pad, Wp = g->W + 2 * g->pad;
		const float *src = in;
		int64_t example = g->C * g->H * g->W;
		if (g->stride == 2) {
			split_chunk(g, in, padded, n);
			src = padded, example = padded_floats(g);
		} else if (pads_by_copy(g)) {
			pad_chunk(g, in, padded, n);
			src = padded, example = padded_floats(g);
		}
		for (int64_t b = 0; b < n; b++)
			sn_conv_direct(src + b * example, g->C, Hp, Wp, g->stride, w, g->F, g->k,
				       bias, e, out + b * g->F * S);
		return;
	}
	lower(g, in, cols, padded, n);
	if (n == 1) {
		/* one example's product is NCHW already: the bias (or 0)
		 * goes in first, and beta 1 spares OpenBLAS its beta pass */
		add_bias(out, NULL, bias, 1, g->F, S);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)g->F, (int)S,
			    (int)ckk, 1.0f, w, (int)ckk, cols, (int)S, 1.0f, out, (int)S);
		if (e)
			apply_epilogue(out, 1, g->F, S, e);
		return;
	}
	/* zeroed here and summed into (beta 1): OpenBLAS's own beta-0
	 * pass over the output was 4% of cifar10_quick's conv1 */
	memset(y, 0, (size_t)(g->F * ns) * sizeof *y);
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)g->F, (int)ns, (int)ckk,
		    1.0f, w, (int)ckk, cols, (int)ns, 1.0f, y, (int)ns);
	add_bias(out, y, bias, n, g->F, S);
	if (e)
		apply_epilogue(out, n, g->F, S, e);
}

/* One pass over a batch, one unit per chunk of examples. */
typedef struct {
	const conv_geom *g;
	const float *w, *bias, *in;
	float *out;
	int64_t B;
	const sn_epilogue *e;
	const sn_pass *p;
} apply_job;

/* Examples per chunk for a batch of B: no more than chunk_of, and few
 * enough that the batch makes MIN_CHUNKS chunks to share among threads
 * (LeNet's conv1 took 18 of 64 examples at a time, four chunks that two
 * threads could not split evenly). */
#define MIN_CHUNKS 8

static int64_t chunk_for(const conv_geom *g, int64_t B)
{
	const int64_t n = (B + MIN_CHUNKS - 1) / MIN_CHUNKS;
	return n < chunk_of(g) ? n : chunk_of(g);
}

static int64_t chunks_of(const conv_geom *g, int64_t B)
{
	return (B + chunk_for(g, B) - 1) / chunk_for(g, B);
}

static void apply_unit(void *ctx, int64_t unit, int thread)
{
	const apply_job *j = ctx;
	const conv_geom *g = j->g;
	const int64_t chunk = chunk_for(g, j->B), b0 = unit * chunk;
	const int64_t n = j->B - b0 < chunk ? j->B - b0 : chunk;
	apply_chunk(g, j->w, j->bias, j->in + b0 * g->C * g->H * g->W,
		    j->out + b0 * g->F * g->OH * g->OW, n, j->e, sn_pass_scratch(j->p, thread));
}

/* out[B,F,OH,OW] = w conv in (+ bias, unless NULL), in NCHW, then e
 * unless NULL. */
static void conv_apply(const conv_geom *g, const float *w, const float *bias, const float *in,
		       float *out, int64_t B, const sn_epilogue *e, const sn_pass *p)
{
	apply_job j = {g, w, bias, in, out, B, e, p};
	sn_parallel_for(p->pool, chunks_of(g, B), apply_unit, &j);
}

static void conv_forward(sn_layer *l, const float *in, float *out, int B, sn_pass *p)
{
	const conv_geom g = geom_of(l);
	conv_apply(&g, l->w[0], l->nparams > 1 ? l->w[1] : NULL, in, out, B, p->epilogue, p);
}

/* dY of a chunk as [F, n*S] from NCHW dout when gather is set, and the
 * bias gradient on the way.  A chunk of one example is that layout
 * already; without gather, dout is returned as it lies. */
static const float *chunk_dy(const conv_geom *g, const float *dout, float *dy, int64_t n,
			     int gather, float *dbias)
{
	const int64_t S = g->OH * g->OW;
	gather = gather && n > 1;
	for (int64_t f = 0; f < g->F; f++) {
		double sum = 0;
		for (int64_t b = 0; b < n; b++) {
			const float *src = dout + (b * g->F + f) * S;
			if (gather)
				memcpy(dy + (f * n + b) * S, src, (size_t)S * sizeof *dy);
			if (dbias)
				sum += row_sum(src, S);
		}
		if (dbias)
			dbias[f] += (float)sum;
	}
	return gather ? dy : dout;
}

/* For a stride-1 convolution whose input is no larger than its output
 * ("same" padding), din is dout convolved with the flipped, transposed
 * filters, padded by k-1-pad: GEMMs with K = F*k*k over plain im2col
 * copies, where dcols = W^T dY has K = F and leaves a col2im of adds.
 * Where the output is smaller (LeNet's), the padding would cost more
 * multiplies than the scatter saves. */
static int din_by_convolution(const conv_geom *g)
{
	/* its columns are F*k*k x H*W per example: no more than 4 times the
	 * forward's, so a layer with many more filters than channels does
	 * not ask for a scratch area out of all proportion */
	return g->stride == 1 && g->pad <= g->k - 1 && g->H * g->W <= g->OH * g->OW &&
	       g->F * g->H * g->W <= 4 * g->C * g->OH * g->OW;
}

static conv_geom transposed_geom(const conv_geom *g)
{
	return (conv_geom){.C = g->F, .H = g->OH, .W = g->OW, .F = g->C, .k = g->k,
			   .stride = 1, .pad = g->k - 1 - g->pad, .OH = g->H, .OW = g->W};
}

/* wt[c][f][k-1-ki][k-1-kj] = w[f][c][ki][kj] */
static void flip_filters(const conv_geom *g, const float *w, float *wt)
{
	const int64_t kk = g->k * g->k;
	for (int64_t f = 0; f < g->F; f++)
		for (int64_t c = 0; c < g->C; c++)
			for (int64_t i = 0; i < kk; i++)
				wt[(c * g->F + f) * kk + kk - 1 - i] = w[(f * g->C + c) * kk + i];
}

/* Whether the weight gradient is the direct kernel's: for the stride-1
 * layers the direct forward takes with rows wider than 8 (its tiles run
 * along one row), where din, if wanted, is a convolution (the other din
 * needs the columns anyway). */
static int dw_direct(const conv_geom *g, int din)
{
	return g->stride == 1 && g->OW > 8 && sn_conv_direct_takes(g->F, g->k, g->OH, g->OW) &&
	       (!din || din_by_convolution(g));
}

/* Scratch floats of backward, per thread: conv_apply's layout for a
 * chunk, or a transposed conv_apply's. */
static int64_t scratch_floats(const conv_geom *g)
{
	int64_t n = apply_scratch(g);
	if (din_by_convolution(g)) {
		const conv_geom t = transposed_geom(g);
		if (apply_scratch(&t) > n)
			n = apply_scratch(&t);
	}
	return n;
}

/* The weight gradient is summed over groups of chunks, at most GROUPS of
 * them, each into its own dW^T and dbias in the layer's saved area; the
 * groups' sums are then added in group order.  How the batch is grouped
 * depends on the batch size alone, never on the thread count. */
#define GROUPS 8

static int64_t groups_of(const conv_geom *g, int64_t B)
{
	const int64_t n = chunks_of(g, B);
	return n < GROUPS ? n : GROUPS;
}

static int64_t group_floats(const conv_geom *g)
{
	return g->F * g->C * g->k * g->k + g->F;
}

/* Saved floats: the groups' sums, then the flipped filters. */
static int64_t saved_floats(const conv_geom *g)
{
	return GROUPS * group_floats(g) + (din_by_convolution(g) ? g->F * g->C * g->k * g->k : 0);
}

typedef struct {
	const sn_layer *l;
	const conv_geom *g;
	const float *in, *dout;
	float *din;
	int64_t B, groups;
	int by_convolution;
	const sn_pass *p;
} backward_job;

/* backward_unit's chunks [c0, c1) by the direct kernel, the bias
 * gradient as the GEMM path sums it. */
static void backward_direct(const backward_job *j, int64_t c0, int64_t c1, float *dwt,
			    float *dbias)
{
	const conv_geom *g = j->g;
	const int64_t S = g->OH * g->OW, chunk = chunk_for(g, j->B);
	const int64_t b0 = c0 * chunk, b1 = c1 * chunk < j->B ? c1 * chunk : j->B;
	if (j->l->nparams > 1)
		for (int64_t b = b0; b < b1; b += chunk)
			chunk_dy(g, j->dout + b * g->F * S, NULL, b1 - b < chunk ? b1 - b : chunk, 0,
				 dbias);
	const sn_conv_dw_args a = {
		.x = j->in + b0 * g->C * g->H * g->W, .dy = j->dout + b0 * g->F * S,
		.xstride = g->C * g->H * g->W, .dystride = g->F * S, .n = b1 - b0, .C = g->C,
		.H = g->H, .W = g->W, .pad = g->pad, .F = g->F, .k = g->k, .dwt = dwt};
	sn_conv_direct_dw(&a);
}

/* One group's chunks: its dW^T and dbias, and din unless by_convolution. */
static void backward_unit(void *ctx, int64_t unit, int thread)
{
	const backward_job *j = ctx;
	const conv_geom *g = j->g;
	const sn_layer *l = j->l;
	const int64_t S = g->OH * g->OW, ckk = g->C * g->k * g->k, chunk = chunk_for(g, j->B);
	const int64_t plane = g->C * g->H * g->W;
	float *cols = sn_pass_scratch(j->p, thread), *dy = cols + ckk * S * chunk;
	float *padded = dy + g->F * S * chunk;
	float *dwt = l->saved + unit * group_floats(g), *dbias = dwt + ckk * g->F;
	int64_t c0, c1;
	sn_parallel_part(chunks_of(g, j->B), j->groups, unit, &c0, &c1);
	memset(dwt, 0, (size_t)group_floats(g) * sizeof *dwt);
	if (l->dw[0] && dw_direct(g, j->din != NULL)) {
		backward_direct(j, c0, c1, dwt, dbias);
		return;
	}
	for (int64_t b0 = c0 * chunk; b0 < j->B && b0 < c1 * chunk; b0 += chunk) {
		const int64_t n = j->B - b0 < chunk ? j->B - b0 : chunk, ns = n * S;
		/* where only dW needs dY and an example's GEMM is wide enough,
		 * one GEMM per example reads dout where it lies: faster than a
		 * gathered copy and one GEMM (LeNet's conv1 9%, cifar10_quick's 5%) */
		const int gather = (j->din && !j->by_convolution) || S < 256;
		const float *dyc = chunk_dy(g, j->dout + b0 * g->F * S, dy, n, gather,
					    l->nparams > 1 ? dbias : NULL);
		/* OpenBLAS runs dW^T = cols dY^T some 20% faster than dW = dY cols^T
		 * (measured on LeNet's shapes); the transpose back is tiny */
		if (l->dw[0]) {
			lower(g, j->in + b0 * plane, cols, padded, n);
			if (dyc == dy)
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)ckk, (int)g->F,
					    (int)ns, 1.0f, cols, (int)ns, dyc, (int)ns, 1.0f, dwt,
					    (int)g->F);
			else
				for (int64_t b = 0; b < n; b++)
					cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)ckk,
						    (int)g->F, (int)S, 1.0f, cols + b * S, (int)ns,
						    dyc + b * g->F * S, (int)S, 1.0f, dwt, (int)g->F);
		}
		if (!j->din || j->by_convolution)
			continue;
		/* the chunk's columns are spent: their space takes dcols */
		memset(cols, 0, (size_t)(ckk * ns) * sizeof *cols);
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)ckk, (int)ns, (int)g->F,
			    1.0f, l->w[0], (int)ckk, dyc, (int)ns, 1.0f, cols, (int)ns);
		col2im(g, cols, j->din + b0 * plane, (int)n);
	}
}

/* sum[i] = the groups' part[u * size + i], added in group order, for n
 * (<= 16) consecutive i: a block of 16, the form -O2 vectorises. */
SN_VECTOR_CLONES static void sum_groups(const float *part, int64_t size, int64_t groups,
					int64_t n, float *restrict sum)
{
	float acc[16] = {0};
	if (n == 16) {
		for (int i = 0; i < 16; i++)
			acc[i] = part[i];
		for (int64_t u = 1; u < groups; u++)
			for (int i = 0; i < 16; i++)
				acc[i] += part[u * size + i];
	} else
		for (int64_t i = 0; i < n; i++) {
			acc[i] = part[i];
			for (int64_t u = 1; u < groups; u++)
				acc[i] += part[u * size + i];
		}
	for (int64_t i = 0; i < n; i++)
		sum[i] = acc[i];
}

/* dw += the groups' dW^T (transposed) and dbias, added in group order:
 * along dW^T's rows, which lie in memory (down its columns, 8 groups
 * apart, this took 2% of the ResNet's step). */
static void add_groups(const sn_layer *l, const conv_geom *g, int64_t groups)
{
	const int64_t ckk = g->C * g->k * g->k, size = group_floats(g);
	if (l->dw[0])
		for (int64_t r = 0; r < ckk; r++)
			for (int64_t f0 = 0; f0 < g->F; f0 += 16) {
				const int64_t n = g->F - f0 < 16 ? g->F - f0 : 16;
				float sum[16];
				sum_groups(l->saved + r * g->F + f0, size, groups, n, sum);
				for (int64_t i = 0; i < n; i++)
					l->dw[0][(f0 + i) * ckk + r] += sum[i];
			}
	if (l->nparams > 1 && l->dw[1])
		for (int64_t f = 0; f < g->F; f++) {
			float sum = l->saved[ckk * g->F + f];
			for (int64_t u = 1; u < groups; u++)
				sum += l->saved[u * size + ckk * g->F + f];
			l->dw[1][f] += sum;
		}
}

static void conv_backward(sn_layer *l, const float *in, const float *out,
			  const float *dout, float *din, int B, sn_pass *p)
{
	(void)out;
	const conv_geom g = geom_of(l);
	backward_job j = {l, &g, in, dout, din, B, groups_of(&g, B),
			  din && din_by_convolution(&g), p};
	sn_parallel_for(p->pool, j.groups, backward_unit, &j);
	add_groups(l, &g, j.groups);
	if (j.by_convolution) {
		const conv_geom t = transposed_geom(&g);
		float *wt = l->saved + GROUPS * group_floats(&g);
		flip_filters(&g, l->w[0], wt);
		conv_apply(&t, wt, NULL, dout, din, B, NULL, p);
	}
}

void sn_conv_forward_naive(const sn_layer *l, const float *in, float *out, int B)
{
	const conv_geom g = geom_of(l);
	const float *w = l->w[0], *bias = l->nparams > 1 ? l->w[1] : NULL;
	for (int64_t b = 0; b < B; b++)
		for (int64_t f = 0; f < g.F; f++)
			for (int64_t oh = 0; oh < g.OH; oh++)
				for (int64_t ow = 0; ow < g.OW; ow++) {
					double sum = bias ? bias[f] : 0.0;
					for (int64_t c = 0; c < g.C; c++)
						for (int64_t ki = 0; ki < g.k; ki++)
							for (int64_t kj = 0; kj < g.k; kj++) {
								int64_t ih = oh * g.stride - g.pad + ki;
								int64_t iw = ow * g.stride - g.pad + kj;
								if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W)
									continue;
								sum += (double)w[((f * g.C + c) * g.k + ki) * g.k + kj] *
								       in[((b * g.C + c) * g.H + ih) * g.W + iw];
							}
					out[((b * g.F + f) * g.OH + oh) * g.OW + ow] = (float)sum;
				}
}

const sn_layer_kind sn_kind_conv = {
	.name = "conv",
	.name_prefix = "conv",
	.options = 1u << SN_OPT_FILTERS | 1u << SN_OPT_KERNEL | 1u << SN_OPT_STRIDE |
		   1u << SN_OPT_PAD | 1u << SN_OPT_BIAS,
	.is_loss = 0,
	.takes_epilogue = 1u << SN_EPILOGUE_BATCHNORM | 1u << SN_EPILOGUE_RELU,
	.setup = conv_setup,
	.forward = conv_forward,
	.backward = conv_backward,
};
