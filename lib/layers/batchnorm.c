/* batchnorm.c: batch normalisation per channel of [C,H,W] (over B,H,W) or
 * per feature of [D] (over B), PyTorch's semantics: training normalises
 * with the biased batch variance and moves the running statistics by
 * `momentum` towards the batch mean and the unbiased variance; evaluation
 * uses the running statistics.  Sums are taken in double in a fixed order,
 * so results do not depend on timing. */
#include "layers.h"

#include <math.h>

typedef struct {
	int64_t C, HW;
	double eps, momentum;
} bn_geom;

static bn_geom geom_of(const sn_layer *l)
{
	bn_geom g;
	g.C = l->in.d[0];
	g.HW = l->in.ndim == 3 ? l->in.d[1] * l->in.d[2] : 1;
	g.eps = (l->opt_set & (1u << SN_OPT_EPS)) ? l->opt[SN_OPT_EPS] : 1e-5;
	g.momentum = (l->opt_set & (1u << SN_OPT_MOMENTUM)) ? l->opt[SN_OPT_MOMENTUM] : 0.1;
	return g;
}

static int batchnorm_setup(sn_layer *l)
{
	const bn_geom g = geom_of(l);
	if (!(g.eps > 0 && isfinite(g.eps)))
		return sn_fail(SN_ENET, "eps %g must be positive", g.eps);
	if (!(g.momentum >= 0 && g.momentum <= 1))
		return sn_fail(SN_ENET, "momentum %g must be in [0, 1]", g.momentum);
	const int64_t n = sn_shape_size(&l->in);
	l->out = l->in;
	l->nparams = 0;
	sn_layer_add_param(l, "weight", 1, &g.C, 1, SN_INIT_ONE, 0, 0);
	sn_layer_add_param(l, "bias", 1, &g.C, 1, SN_INIT_ZERO, 0, 0);
	sn_layer_add_param(l, "running_mean", 1, &g.C, 0, SN_INIT_ZERO, 0, 0);
	sn_layer_add_param(l, "running_var", 1, &g.C, 0, SN_INIT_ONE, 0, 0);
	l->flops_forward = 6 * n;
	l->flops_backward = 8 * n;
	l->saved_per_example = n;    /* normalised input */
	l->saved_fixed = g.C;        /* 1/sqrt(var + eps) per channel */
	l->scratch_per_example = l->scratch_fixed = 0;
	return 0;
}

/* Sums in double over a plane, in eight interleaved partial sums added in
 * a fixed order: the same bits every time, and eight additions in flight
 * instead of one long chain (a chain of double additions made batchnorm
 * the slowest layer of the ResNet).  The channel_* functions take one
 * channel's B planes, `stride` floats apart, and are cloned per vector
 * width (SN_VECTOR_CLONES): compiled for SSE2 alone, their loops stayed
 * mostly scalar, and batchnorm took a fifth of the ResNet's step. */
#define LANES 8

static inline double lanes_total(const double s[LANES])
{
	return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

static inline double plane_sum(const float *x, int64_t n)
{
	double s[LANES] = {0};
	int64_t i = 0;
	for (; i + LANES <= n; i += LANES)
		for (int k = 0; k < LANES; k++)
			s[k] += x[i + k];
	for (; i < n; i++)
		s[i % LANES] += x[i];
	return lanes_total(s);
}

static inline double plane_sq_dev(const float *x, int64_t n, double mean)
{
	double s[LANES] = {0};
	int64_t i = 0;
	for (; i + LANES <= n; i += LANES)
		for (int k = 0; k < LANES; k++) {
			const double d = x[i + k] - mean;
			s[k] += d * d;
		}
	for (; i < n; i++) {
		const double d = x[i] - mean;
		s[i % LANES] += d * d;
	}
	return lanes_total(s);
}

/* Mean and biased variance of one channel over the batch. */
SN_VECTOR_CLONES static void channel_stats(const float *x, int B, int64_t stride, int64_t n,
					   double *mean, double *var)
{
	double sum = 0, sq = 0;
	for (int b = 0; b < B; b++)
		sum += plane_sum(x + b * stride, n);
	const double count = (double)B * (double)n;
	*mean = sum / count;
	for (int b = 0; b < B; b++)
		sq += plane_sq_dev(x + b * stride, n, *mean);
	*var = sq / count;
}

/* y = gamma * xhat + beta, xhat = (x - m) * is, kept for backward where
 * xhat is not NULL (training). */
SN_VECTOR_CLONES static void channel_normalize(const float *restrict x, float *restrict xhat,
					       float *restrict y, int B, int64_t stride,
					       int64_t n, float m, float is, float gamma,
					       float beta)
{
	for (int b = 0; b < B; b++) {
		const float *xb = x + b * stride;
		float *yb = y + b * stride;
		int64_t i = 0;
		if (xhat) {
			float *hb = xhat + b * stride;
			for (; i + 16 <= n; i += 16)    /* blocks: the form -O2 vectorises */
				for (int k = 0; k < 16; k++) {
					const float h = (xb[i + k] - m) * is;
					hb[i + k] = h;
					yb[i + k] = gamma * h + beta;
				}
			for (; i < n; i++) {
				const float h = (xb[i] - m) * is;
				hb[i] = h;
				yb[i] = gamma * h + beta;
			}
			continue;
		}
		for (; i + 16 <= n; i += 16)
			for (int k = 0; k < 16; k++)
				yb[i + k] = gamma * ((xb[i + k] - m) * is) + beta;
		for (; i < n; i++)
			yb[i] = gamma * ((xb[i] - m) * is) + beta;
	}
}

/* sum of dy and of dy * xhat */
SN_VECTOR_CLONES static void channel_dots(const float *dy, const float *xh, int B,
					  int64_t stride, int64_t n, double *sdy, double *sdx)
{
	for (int b = 0; b < B; b++) {
		const float *d = dy + b * stride, *h = xh + b * stride;
		double a[LANES] = {0}, p[LANES] = {0};
		int64_t i = 0;
		for (; i + LANES <= n; i += LANES)
			for (int k = 0; k < LANES; k++) {
				a[k] += d[i + k];
				p[k] += (double)d[i + k] * h[i + k];
			}
		for (; i < n; i++) {
			a[i % LANES] += d[i];
			p[i % LANES] += (double)d[i] * h[i];
		}
		*sdy += lanes_total(a);
		*sdx += lanes_total(p);
	}
}

SN_VECTOR_CLONES static void channel_din(const float *restrict dy, const float *restrict xhat,
					 float *restrict dx, int B, int64_t stride, int64_t n,
					 float k, float fn, float s_dy, float s_dy_xhat)
{
	for (int b = 0; b < B; b++) {
		const float *d = dy + b * stride, *h = xhat + b * stride;
		float *o = dx + b * stride;
		int64_t i = 0;
		for (; i + 16 <= n; i += 16)
			for (int j = 0; j < 16; j++)
				o[i + j] = k * (fn * d[i + j] - s_dy - h[i + j] * s_dy_xhat);
		for (; i < n; i++)
			o[i] = k * (fn * d[i] - s_dy - h[i] * s_dy_xhat);
	}
}

/* Every channel's statistics and outputs are its own, so the passes run
 * one unit per channel, whatever the thread count. */
typedef struct {
	const sn_layer *l;
	bn_geom g;
	const float *in, *dout;
	float *out, *din;
	int B, training;
} bn_job;

static void forward_channel(void *ctx, int64_t c, int thread)
{
	(void)thread;
	const bn_job *j = ctx;
	const sn_layer *l = j->l;
	const bn_geom g = j->g;
	const int B = j->B;
	const float *gamma = l->w[0], *beta = l->w[1], *in = j->in;
	float *rmean = l->w[2], *rvar = l->w[3], *out = j->out;
	float *xhat = l->saved, *invstd = l->saved + sn_shape_size(&l->in) * B;
	const double n = (double)B * (double)g.HW;
	double mean, var;
	if (j->training) {
		channel_stats(in + c * g.HW, B, g.C * g.HW, g.HW, &mean, &var);
		double unbiased = n > 1 ? var * n / (n - 1) : var;
		rmean[c] = (float)((1 - g.momentum) * rmean[c] + g.momentum * mean);
		rvar[c] = (float)((1 - g.momentum) * rvar[c] + g.momentum * unbiased);
	} else {
		mean = rmean[c];
		var = rvar[c];
	}
	const float m = (float)mean, is = (float)(1.0 / sqrt(var + g.eps));
	invstd[c] = is;
	const int64_t off = c * g.HW;
	channel_normalize(in + off, j->training ? xhat + off : NULL, out + off, B, g.C * g.HW, g.HW,
			  m, is, gamma[c], beta[c]);
}

/* Evaluation: every example on its own, so that the thread that runs it
 * mostly finds its input where the layer before left it. */
static void eval_example(void *ctx, int64_t b, int thread)
{
	(void)thread;
	const bn_job *j = ctx;
	const sn_layer *l = j->l;
	const bn_geom g = j->g;
	const float *gamma = l->w[0], *beta = l->w[1], *rmean = l->w[2], *rvar = l->w[3];
	for (int64_t c = 0; c < g.C; c++) {
		const float m = rmean[c], is = (float)(1.0 / sqrt((double)rvar[c] + g.eps));
		const int64_t off = (b * g.C + c) * g.HW;
		channel_normalize(j->in + off, NULL, j->out + off, 1, 0, g.HW, m, is, gamma[c],
				  beta[c]);
	}
}

static void batchnorm_forward(sn_layer *l, const float *in, float *out, int B, sn_pass *p)
{
	bn_job j = {.l = l, .g = geom_of(l), .in = in, .out = out, .B = B,
		    .training = p->training};
	if (p->training)
		sn_parallel_for(p->pool, j.g.C, forward_channel, &j);
	else
		sn_parallel_for(p->pool, B, eval_example, &j);
}

static void backward_channel(void *ctx, int64_t c, int thread)
{
	(void)thread;
	const bn_job *j = ctx;
	const sn_layer *l = j->l;
	const bn_geom g = j->g;
	const int B = j->B;
	const float *gamma = l->w[0], *dout = j->dout;
	const float *xhat = l->saved, *invstd = l->saved + sn_shape_size(&l->in) * B;
	float *din = j->din;
	const double n = (double)B * (double)g.HW;
	double sum_dy = 0, sum_dy_xhat = 0;
	const int64_t off = c * g.HW, stride = g.C * g.HW;
	channel_dots(dout + off, xhat + off, B, stride, g.HW, &sum_dy, &sum_dy_xhat);
	if (l->dw[0])
		l->dw[0][c] += (float)sum_dy_xhat;
	if (l->dw[1])
		l->dw[1][c] += (float)sum_dy;
	if (!din)
		return;
	const float k = (float)(gamma[c] * invstd[c] / n);
	const float s_dy = (float)sum_dy, s_dy_xhat = (float)sum_dy_xhat;
	const float fn = (float)n;
	channel_din(dout + off, xhat + off, din + off, B, stride, g.HW, k, fn, s_dy, s_dy_xhat);
}

static void batchnorm_backward(sn_layer *l, const float *in, const float *out,
			       const float *dout, float *din, int B, sn_pass *p)
{
	(void)in, (void)out;
	bn_job j = {.l = l, .g = geom_of(l), .dout = dout, .din = din, .B = B};
	sn_parallel_for(p->pool, j.g.C, backward_channel, &j);
}

const sn_layer_kind sn_kind_batchnorm = {
	.name = "batchnorm",
	.name_prefix = "bn",
	.options = 1u << SN_OPT_EPS | 1u << SN_OPT_MOMENTUM,
	.setup = batchnorm_setup,
	.forward = batchnorm_forward,
	.backward = batchnorm_backward,
};
