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
 * into which the bias add is folded. */
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
	l->saved_per_example = l->saved_fixed = 0;
	l->scratch_per_example = 0;
	/* a chunk's cols and GEMM result, and dW^T */
	l->scratch_fixed = (ckk + F) * spatial * chunk_of(&g) + F * ckk;
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

/* One example's part of one im2col row, kernel offset (ki, kj): dst[oh*OW + ow]
 * = src[(oh*stride - pad + ki)*W + ow*stride - pad + kj], or 0 in the padding.
 * The valid ranges are worked out once, so the inner loop has no branches. */
static void gather_row(const conv_geom *g, const float *src, float *dst, int64_t ki,
		       int64_t kj, const int64_t valid[4])
{
	const int64_t oh0 = valid[0], oh1 = valid[1], ow0 = valid[2], ow1 = valid[3];
	if (g->stride == 1 && g->pad == 0) {   /* the common case: plain copies */
		const float *s = src + ki * g->W + kj;
		for (int64_t oh = 0; oh < g->OH; oh++, s += g->W, dst += g->OW)
			copy_floats(dst, s, g->OW);
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
		float *d = dst + ki * g->W + kj;
		for (int64_t oh = 0; oh < g->OH; oh++, d += g->W, src += g->OW)
			add_floats(d, src, g->OW);
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

static void conv_forward(sn_layer *l, const float *in, float *out, int B, sn_pass *p)
{
	const conv_geom g = geom_of(l);
	const int64_t S = g.OH * g.OW, ckk = g.C * g.k * g.k, chunk = chunk_of(&g);
	float *cols = p->scratch, *y = cols + ckk * S * chunk;
	const float *bias = l->nparams > 1 ? l->w[1] : NULL;
	for (int64_t b0 = 0; b0 < B; b0 += chunk) {
		const int64_t n = B - b0 < chunk ? B - b0 : chunk, ns = n * S;
		im2col(&g, in + b0 * g.C * g.H * g.W, cols, (int)n);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)g.F, (int)ns, (int)ckk,
			    1.0f, l->w[0], (int)ckk, cols, (int)ns, 0.0f, y, (int)ns);
		for (int64_t b = 0; b < n; b++)
			for (int64_t f = 0; f < g.F; f++)
				copy_plus(out + ((b0 + b) * g.F + f) * S, y + f * ns + b * S,
					  bias ? bias[f] : 0.0f, S);
	}
}

/* dY of a chunk as [F, n*S], from NCHW dout; the bias gradient on the way. */
static void gather_dy(const conv_geom *g, const float *dout, float *dy, int64_t n,
		      float *dbias)
{
	const int64_t S = g->OH * g->OW;
	for (int64_t f = 0; f < g->F; f++) {
		double sum = 0;
		for (int64_t b = 0; b < n; b++) {
			const float *src = dout + (b * g->F + f) * S;
			memcpy(dy + (f * n + b) * S, src, (size_t)S * sizeof *dy);
			if (dbias)
				sum += row_sum(src, S);
		}
		if (dbias)
			dbias[f] += (float)sum;
	}
}

static void conv_backward(sn_layer *l, const float *in, const float *out,
			  const float *dout, float *din, int B, sn_pass *p)
{
	(void)out;
	const conv_geom g = geom_of(l);
	const int64_t S = g.OH * g.OW, ckk = g.C * g.k * g.k, chunk = chunk_of(&g);
	const int64_t plane = g.C * g.H * g.W;
	float *cols = p->scratch, *dy = cols + ckk * S * chunk, *dwt = dy + g.F * S * chunk;
	for (int64_t b0 = 0; b0 < B; b0 += chunk) {
		const int64_t n = B - b0 < chunk ? B - b0 : chunk, ns = n * S;
		gather_dy(&g, dout + b0 * g.F * S, dy, n, l->nparams > 1 ? l->dw[1] : NULL);
		im2col(&g, in + b0 * plane, cols, (int)n);
		/* OpenBLAS runs dW^T = cols dY^T some 20% faster than dW = dY cols^T
		 * (measured on LeNet's shapes); the transpose back is tiny */
		if (l->dw[0])
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)ckk, (int)g.F,
				    (int)ns, 1.0f, cols, (int)ns, dy, (int)ns, b0 ? 1.0f : 0.0f,
				    dwt, (int)g.F);
		if (!din)
			continue;
		/* the chunk's columns are spent: their space takes dcols */
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)ckk, (int)ns, (int)g.F,
			    1.0f, l->w[0], (int)ckk, dy, (int)ns, 0.0f, cols, (int)ns);
		col2im(&g, cols, din + b0 * plane, (int)n);
	}
	if (l->dw[0])
		for (int64_t f = 0; f < g.F; f++)
			for (int64_t r = 0; r < ckk; r++)
				l->dw[0][f * ckk + r] += dwt[r * g.F + f];
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
	.setup = conv_setup,
	.forward = conv_forward,
	.backward = conv_backward,
};
