/* batchnorm.c: batch normalisation per channel of [C,H,W] (over B,H,W) or
 * per feature of [D] (over B), PyTorch's semantics: training normalises
 * with the biased batch variance and moves the running statistics by
 * `momentum` towards the batch mean and the unbiased variance; evaluation
 * uses the running statistics.  Sums are taken in double in a fixed order,
 * so results do not depend on timing. */
#include "layers.h"

#include <math.h>
#include <stdint.h>

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

static int64_t saved_per_example(const bn_geom *g);
static int64_t saved_fixed(const bn_geom *g);

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
	l->saved_per_example = saved_per_example(&g);
	l->saved_fixed = saved_fixed(&g);
	l->scratch_per_example = l->scratch_fixed = 0;
	return 0;
}

/* Sums in double over a plane, in eight interleaved partial sums added in
 * a fixed order: the same bits every time, and eight additions in flight
 * instead of one long chain (a chain of double additions made batchnorm
 * the slowest layer of the ResNet). */
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

/* The example_* functions take one example's C planes of n floats and are
 * cloned per vector width (SN_VECTOR_CLONES): compiled for SSE2 alone,
 * their loops stayed mostly scalar, and batchnorm took a fifth of the
 * ResNet's step. */

/* part[c] = the sum of plane c; with mean, of its squared deviations */
SN_VECTOR_CLONES static void example_sums(const float *x, int64_t C, int64_t n,
					  const double *mean, double *part)
{
	for (int64_t c = 0; c < C; c++)
		part[c] = mean ? plane_sq_dev(x + c * n, n, mean[c]) : plane_sum(x + c * n, n);
}

/* y = gamma * xhat + beta, xhat = (x - m) * is, kept for backward where
 * xhat is not NULL (training). */
SN_VECTOR_CLONES static void example_normalize(const float *restrict x, float *restrict xhat,
					       float *restrict y, int64_t C, int64_t n,
					       const float *m, const float *is,
					       const float *gamma, const float *beta)
{
	for (int64_t c = 0; c < C; c++) {
		const float *xc = x + c * n;
		float *yc = y + c * n;
		const float mc = m[c], isc = is[c], gc = gamma[c], bc = beta[c];
		int64_t i = 0;
		if (xhat) {
			float *hc = xhat + c * n;
			for (; i + 16 <= n; i += 16)    /* blocks: the form -O2 vectorises */
				for (int k = 0; k < 16; k++) {
					const float h = (xc[i + k] - mc) * isc;
					hc[i + k] = h;
					yc[i + k] = gc * h + bc;
				}
			for (; i < n; i++) {
				const float h = (xc[i] - mc) * isc;
				hc[i] = h;
				yc[i] = gc * h + bc;
			}
			continue;
		}
		for (; i + 16 <= n; i += 16)
			for (int k = 0; k < 16; k++)
				yc[i + k] = gc * ((xc[i + k] - mc) * isc) + bc;
		for (; i < n; i++)
			yc[i] = gc * ((xc[i] - mc) * isc) + bc;
	}
}

/* sdy[c] = the sum of dy over plane c, sdx[c] that of dy * xhat */
SN_VECTOR_CLONES static void example_dots(const float *dy, const float *xh, int64_t C,
					  int64_t n, double *sdy, double *sdx)
{
	for (int64_t c = 0; c < C; c++) {
		const float *d = dy + c * n, *h = xh + c * n;
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
		sdy[c] = lanes_total(a);
		sdx[c] = lanes_total(p);
	}
}

/* k[c], s_dy[c], s_dy_xhat[c]: each channel's coefficients */
SN_VECTOR_CLONES static void example_din(const float *restrict dy, const float *restrict xhat,
					 float *restrict dx, int64_t C, int64_t n, float fn,
					 const float *k, const float *s_dy,
					 const float *s_dy_xhat)
{
	for (int64_t c = 0; c < C; c++) {
		const float *d = dy + c * n, *h = xhat + c * n;
		float *o = dx + c * n;
		const float kc = k[c], sc = s_dy[c], sxc = s_dy_xhat[c];
		int64_t i = 0;
		for (; i + 16 <= n; i += 16)
			for (int j = 0; j < 16; j++)
				o[i + j] = kc * (fn * d[i + j] - sc - h[i + j] * sxc);
		for (; i < n; i++)
			o[i] = kc * (fn * d[i] - sc - h[i] * sxc);
	}
}

/* The passes run one unit per example, each over all its channels, which
 * reads and writes memory front to back (a unit per channel, B planes
 * apart, took twice as long).  A channel's sums are its planes' sums, one
 * per unit, added in example order afterwards: the same bits whatever the
 * thread count.  The saved area holds xhat [B][C][HW], then per channel
 * four floats (invstd and three more), a float of slack, and, at a double's
 * alignment, the planes' sums (2 x [B][C]) and the channels' (2 x [C]). */
typedef struct {
	const sn_layer *l;
	bn_geom g;
	const float *in, *dout;
	float *out, *din, *xhat, *invstd, *cf;   /* cf: 3 x [C] more per-channel floats */
	double *part, *chan;
	int B;
} bn_job;

static bn_job job_of(const sn_layer *l, int B)
{
	bn_job j = {.l = l, .g = geom_of(l), .B = B};
	j.xhat = l->saved;
	j.invstd = l->saved + sn_shape_size(&l->in) * B;
	j.cf = j.invstd + j.g.C;
	const uintptr_t at = (uintptr_t)(j.cf + 3 * j.g.C), align = sizeof(double);
	j.part = (double *)((at + align - 1) & ~(align - 1));
	j.chan = j.part + 2 * (int64_t)B * j.g.C;
	return j;
}

static int64_t saved_per_example(const bn_geom *g)
{
	return g->C * g->HW + 4 * g->C;   /* xhat, two doubles per plane */
}

static int64_t saved_fixed(const bn_geom *g)
{
	return 4 * g->C + 1 + 4 * g->C;   /* floats, slack, two doubles per channel */
}

static void sums_unit(void *ctx, int64_t b, int thread)
{
	(void)thread;
	const bn_job *j = ctx;
	example_sums(j->in + b * j->g.C * j->g.HW, j->g.C, j->g.HW, NULL, j->part + b * j->g.C);
}

static void sq_devs_unit(void *ctx, int64_t b, int thread)
{
	(void)thread;
	const bn_job *j = ctx;
	example_sums(j->in + b * j->g.C * j->g.HW, j->g.C, j->g.HW, j->chan, j->part + b * j->g.C);
}

/* out[c] = the examples' part[b][c], added in example order, over count */
static void channel_totals(const double *part, int B, int64_t C, double count, double *out)
{
	for (int64_t c = 0; c < C; c++) {
		double sum = 0;
		for (int b = 0; b < B; b++)
			sum += part[b * C + c];
		out[c] = sum / count;
	}
}

/* cf holds the means as floats, invstd the inverse deviations; xhat is
 * written where it is not NULL */
static void normalize_unit(void *ctx, int64_t b, int thread)
{
	(void)thread;
	const bn_job *j = ctx;
	const int64_t off = b * j->g.C * j->g.HW;
	example_normalize(j->in + off, j->xhat ? j->xhat + off : NULL, j->out + off, j->g.C,
			  j->g.HW, j->cf, j->invstd, j->l->w[0], j->l->w[1]);
}

void sn_batchnorm_eval_coefficients(const sn_layer *l, float *mean, float *invstd)
{
	const bn_geom g = geom_of(l);
	const float *rmean = l->w[2], *rvar = l->w[3];
	for (int64_t c = 0; c < g.C; c++) {
		mean[c] = rmean[c];
		invstd[c] = (float)(1.0 / sqrt((double)rvar[c] + g.eps));
	}
}

static void batchnorm_forward(sn_layer *l, const float *in, float *out, int B, sn_pass *p)
{
	bn_job j = job_of(l, B);
	const bn_geom g = j.g;
	float *rmean = l->w[2], *rvar = l->w[3];
	j.in = in, j.out = out;
	if (!p->training) {
		sn_batchnorm_eval_coefficients(l, j.cf, j.invstd);
		j.xhat = NULL;
		sn_parallel_for(p->pool, B, normalize_unit, &j);
		return;
	}
	const double n = (double)B * (double)g.HW;
	double *mean = j.chan, *var = j.chan + g.C;
	sn_parallel_for(p->pool, B, sums_unit, &j);
	channel_totals(j.part, B, g.C, n, mean);
	sn_parallel_for(p->pool, B, sq_devs_unit, &j);
	channel_totals(j.part, B, g.C, n, var);             /* biased */
	for (int64_t c = 0; c < g.C; c++) {
		const double unbiased = n > 1 ? var[c] * n / (n - 1) : var[c];
		rmean[c] = (float)((1 - g.momentum) * rmean[c] + g.momentum * mean[c]);
		rvar[c] = (float)((1 - g.momentum) * rvar[c] + g.momentum * unbiased);
		j.cf[c] = (float)mean[c];
		j.invstd[c] = (float)(1.0 / sqrt(var[c] + g.eps));
	}
	sn_parallel_for(p->pool, B, normalize_unit, &j);
}

/* part[b][c] = the sum of dy over plane c, part[B + b][c] that of dy * xhat */
static void dots_unit(void *ctx, int64_t b, int thread)
{
	(void)thread;
	const bn_job *j = ctx;
	const int64_t C = j->g.C, off = b * C * j->g.HW;
	example_dots(j->dout + off, j->xhat + off, C, j->g.HW, j->part + b * C,
		     j->part + (j->B + b) * C);
}

/* cf holds k = gamma * invstd / n per channel, the sum of dy and that of
 * dy * xhat, as floats. */
static void din_unit(void *ctx, int64_t b, int thread)
{
	(void)thread;
	const bn_job *j = ctx;
	const int64_t C = j->g.C, off = b * C * j->g.HW;
	example_din(j->dout + off, j->xhat + off, j->din + off, C, j->g.HW,
		    (float)((double)j->B * (double)j->g.HW), j->cf, j->cf + C, j->cf + 2 * C);
}

static void batchnorm_backward(sn_layer *l, const float *in, const float *out,
			       const float *dout, float *din, int B, sn_pass *p)
{
	(void)in, (void)out;
	bn_job j = job_of(l, B);
	const int64_t C = j.g.C;
	const double n = (double)B * (double)j.g.HW;
	j.dout = dout, j.din = din;
	sn_parallel_for(p->pool, B, dots_unit, &j);
	double *s_dy = j.chan, *s_dy_xhat = j.chan + C;
	channel_totals(j.part, B, C, 1.0, s_dy);
	channel_totals(j.part + (int64_t)B * C, B, C, 1.0, s_dy_xhat);
	const float *gamma = l->w[0];
	for (int64_t c = 0; c < C; c++) {
		if (l->dw[0])
			l->dw[0][c] += (float)s_dy_xhat[c];
		if (l->dw[1])
			l->dw[1][c] += (float)s_dy[c];
		j.cf[c] = (float)(gamma[c] * j.invstd[c] / n);
		j.cf[C + c] = (float)s_dy[c];
		j.cf[2 * C + c] = (float)s_dy_xhat[c];
	}
	if (din)
		sn_parallel_for(p->pool, B, din_unit, &j);
}

const sn_layer_kind sn_kind_batchnorm = {
	.name = "batchnorm",
	.name_prefix = "bn",
	.options = 1u << SN_OPT_EPS | 1u << SN_OPT_MOMENTUM,
	.epilogue_part = SN_EPILOGUE_BATCHNORM,
	.setup = batchnorm_setup,
	.forward = batchnorm_forward,
	.backward = batchnorm_backward,
};
