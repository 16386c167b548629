/* dropout.c: inverted dropout.  Training keeps each value with probability
 * 1-rate and scales it by 1/(1-rate), so evaluation is the identity and
 * needs no rescaling; so is a training pass given no generator, rather than
 * a crash.  The mask (0 or the scale) is saved for backward, which the
 * model runs only after a training forward. */
#include "layers.h"

#include <math.h>
#include <string.h>

static double rate_of(const sn_layer *l)
{
	return (l->opt_set & (1u << SN_OPT_RATE)) ? l->opt[SN_OPT_RATE] : 0.5;
}

static int dropout_setup(sn_layer *l)
{
	const double rate = rate_of(l);
	if (!(rate >= 0.0 && rate < 1.0))
		return sn_fail(SN_ENET, "rate %g must be in [0, 1)", rate);
	const int64_t n = sn_shape_size(&l->in);
	l->out = l->in;
	l->nparams = 0;
	l->flops_forward = l->flops_backward = n;
	l->saved_per_example = n;
	l->saved_fixed = l->scratch_per_example = l->scratch_fixed = 0;
	return 0;
}

static void dropout_forward(sn_layer *l, const float *in, float *out, int B, sn_pass *p)
{
	const int64_t n = sn_shape_size(&l->in) * B;
	float *mask = l->saved;
	if (!p->training || !p->rng) {
		memcpy(out, in, (size_t)n * sizeof *out);
		for (int64_t i = 0; i < n; i++)
			mask[i] = 1.0f;
		return;
	}
	const float rate = (float)rate_of(l), scale = (float)(1.0 / (1.0 - rate_of(l)));
	for (int64_t i = 0; i < n; i++) {
		mask[i] = sn_rng_uniform(p->rng) < rate ? 0.0f : scale;
		out[i] = in[i] * mask[i];
	}
}

static void dropout_backward(sn_layer *l, const float *in, const float *out,
			     const float *dout, float *din, int B, sn_pass *p)
{
	(void)in, (void)out, (void)p;
	if (!din)
		return;
	const int64_t n = sn_shape_size(&l->in) * B;
	for (int64_t i = 0; i < n; i++)
		din[i] = dout[i] * l->saved[i];
}

const sn_layer_kind sn_kind_dropout = {
	.name = "dropout",
	.options = 1u << SN_OPT_RATE,
	.setup = dropout_setup,
	.forward = dropout_forward,
	.backward = dropout_backward,
};
