/* conv.c: 2-D convolution, lowered to one GEMM over the whole minibatch.
 *
 * im2col lays the batch out as cols[C*k*k, B*OH*OW], so the forward pass is
 * the single product W[F, C*k*k] x cols and the backward pass two more
 * (dW = dY x cols^T, dcols = W^T x dY).  One wide GEMM keeps OpenBLAS's
 * threads busy even when F and C*k*k are small, as in LeNet.  The GEMM
 * result is [F, B*OH*OW]; copying it to NCHW is a row copy per (b, f),
 * into which the bias add is folded.  The columns are rebuilt in backward
 * rather than kept, so the memory they need is shared scratch, not a
 * per-layer saved area. */
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
	l->scratch_per_example = (ckk + F) * spatial;
	l->scratch_fixed = 0;
	return 0;
}

/* The output columns [ow0, ow1) whose input column ow*stride - pad + kj lies
 * inside [0, W); the others read the zero padding. */
static void valid_range(const conv_geom *g, int64_t kj, int64_t *ow0, int64_t *ow1)
{
	int64_t lo = g->pad - kj, hi = g->W + g->pad - kj; /* ow*stride in [lo, hi) */
	*ow0 = lo <= 0 ? 0 : (lo + g->stride - 1) / g->stride;
	*ow1 = hi <= 0 ? 0 : (hi + g->stride - 1) / g->stride;
	if (*ow1 > g->OW)
		*ow1 = g->OW;
	if (*ow0 > *ow1)
		*ow0 = *ow1;
}

/* cols[(c*k + ki)*k + kj][b*OH*OW + oh*OW + ow] = in[b][c][ih][iw] or 0. */
static void im2col(const conv_geom *g, const float *in, float *cols, int B)
{
	const int64_t S = g->OH * g->OW, N = B * S, plane = g->H * g->W;
	for (int64_t c = 0; c < g->C; c++)
		for (int64_t ki = 0; ki < g->k; ki++)
			for (int64_t kj = 0; kj < g->k; kj++) {
				float *row = cols + ((c * g->k + ki) * g->k + kj) * N;
				int64_t ow0, ow1;
				valid_range(g, kj, &ow0, &ow1);
				for (int64_t b = 0; b < B; b++) {
					const float *src = in + (b * g->C + c) * plane;
					for (int64_t oh = 0; oh < g->OH; oh++) {
						float *dst = row + b * S + oh * g->OW;
						int64_t ih = oh * g->stride - g->pad + ki;
						if (ih < 0 || ih >= g->H) {
							memset(dst, 0, (size_t)g->OW * sizeof *dst);
							continue;
						}
						const float *s = src + ih * g->W;
						const int64_t shift = kj - g->pad;
						for (int64_t ow = 0; ow < ow0; ow++)
							dst[ow] = 0;
						if (g->stride == 1)
							memcpy(dst + ow0, s + ow0 + shift,
							       (size_t)(ow1 - ow0) * sizeof *dst);
						else
							for (int64_t ow = ow0; ow < ow1; ow++)
								dst[ow] = s[ow * g->stride + shift];
						for (int64_t ow = ow1; ow < g->OW; ow++)
							dst[ow] = 0;
					}
				}
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
				int64_t ow0, ow1;
				valid_range(g, kj, &ow0, &ow1);
				for (int64_t b = 0; b < B; b++) {
					float *dst = din + (b * g->C + c) * plane;
					for (int64_t oh = 0; oh < g->OH; oh++) {
						int64_t ih = oh * g->stride - g->pad + ki;
						if (ih < 0 || ih >= g->H)
							continue;
						const float *src = row + b * S + oh * g->OW;
						float *d = dst + ih * g->W;
						const int64_t shift = kj - g->pad;
						for (int64_t ow = ow0; ow < ow1; ow++)
							d[ow * g->stride + shift] += src[ow];
					}
				}
			}
}

static void conv_forward(sn_layer *l, const float *in, float *out, int B, sn_pass *p)
{
	const conv_geom g = geom_of(l);
	const int64_t S = g.OH * g.OW, N = B * S, ckk = g.C * g.k * g.k;
	float *cols = p->scratch, *y = cols + ckk * N;
	const float *bias = l->nparams > 1 ? l->w[1] : NULL;
	im2col(&g, in, cols, B);
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)g.F, (int)N, (int)ckk,
		    1.0f, l->w[0], (int)ckk, cols, (int)N, 0.0f, y, (int)N);
	for (int64_t b = 0; b < B; b++)
		for (int64_t f = 0; f < g.F; f++) {
			const float *src = y + f * N + b * S;
			float *dst = out + (b * g.F + f) * S;
			float add = bias ? bias[f] : 0.0f;
			for (int64_t s = 0; s < S; s++)
				dst[s] = src[s] + add;
		}
}

static void conv_backward(sn_layer *l, const float *in, const float *out,
			  const float *dout, float *din, int B, sn_pass *p)
{
	(void)out;
	const conv_geom g = geom_of(l);
	const int64_t S = g.OH * g.OW, N = B * S, ckk = g.C * g.k * g.k;
	float *dy = p->scratch, *cols = dy + g.F * N;
	for (int64_t b = 0; b < B; b++)
		for (int64_t f = 0; f < g.F; f++)
			memcpy(dy + f * N + b * S, dout + (b * g.F + f) * S, (size_t)S * sizeof *dy);
	if (l->nparams > 1 && l->dw[1])
		for (int64_t f = 0; f < g.F; f++) {
			double sum = 0;
			for (int64_t n = 0; n < N; n++)
				sum += dy[f * N + n];
			l->dw[1][f] += (float)sum;
		}
	im2col(&g, in, cols, B);
	if (l->dw[0])
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)g.F, (int)ckk, (int)N,
			    1.0f, dy, (int)N, cols, (int)N, 1.0f, l->dw[0], (int)ckk);
	if (!din)
		return;
	/* the columns are spent: their space takes dcols */
	cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)ckk, (int)N, (int)g.F,
		    1.0f, l->w[0], (int)ckk, dy, (int)N, 0.0f, cols, (int)N);
	col2im(&g, cols, din, B);
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
