/* table.c: the table of layer kinds, option names, and the helpers their
 * setup functions share. */
#include "layers.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

extern const sn_layer_kind sn_kind_conv, sn_kind_maxpool, sn_kind_avgpool,
	sn_kind_global_avgpool, sn_kind_dense, sn_kind_relu, sn_kind_leaky_relu,
	sn_kind_tanh, sn_kind_sigmoid, sn_kind_dropout, sn_kind_batchnorm,
	sn_kind_flatten, sn_kind_add, sn_kind_concat, sn_kind_softmax_cross_entropy;

const sn_layer_kind *const sn_layer_kinds[] = {
	&sn_kind_conv, &sn_kind_maxpool, &sn_kind_avgpool, &sn_kind_global_avgpool,
	&sn_kind_dense, &sn_kind_relu, &sn_kind_leaky_relu, &sn_kind_tanh,
	&sn_kind_sigmoid, &sn_kind_dropout, &sn_kind_batchnorm, &sn_kind_flatten,
	&sn_kind_add, &sn_kind_concat, &sn_kind_softmax_cross_entropy, NULL,
};

const char *const sn_opt_names[SN_OPT_COUNT] = {
	[SN_OPT_FILTERS] = "filters",   [SN_OPT_KERNEL] = "kernel",
	[SN_OPT_STRIDE] = "stride",     [SN_OPT_PAD] = "pad",
	[SN_OPT_UNITS] = "units",       [SN_OPT_SLOPE] = "slope",
	[SN_OPT_RATE] = "rate",         [SN_OPT_EPS] = "eps",
	[SN_OPT_MOMENTUM] = "momentum", [SN_OPT_BIAS] = "bias",
};

const sn_layer_kind *sn_layer_kind_find(const char *name)
{
	for (int i = 0; sn_layer_kinds[i]; i++)
		if (strcmp(sn_layer_kinds[i]->name, name) == 0)
			return sn_layer_kinds[i];
	return NULL;
}

int64_t sn_shape_size(const sn_shape *s)
{
	int64_t n = 1;
	for (int i = 0; i < s->ndim; i++)
		n *= s->d[i];
	return n;
}

/* Counts beyond this make no sense for a layer and would let products of
 * shapes overflow int64. */
#define SN_MAX_COUNT (1 << 24)

int sn_layer_opt_int(const sn_layer *l, enum sn_opt o, int64_t dflt, int64_t min,
		     int64_t *v)
{
	const char *name = sn_opt_names[o];
	if (!(l->opt_set & (1u << o))) {
		if (dflt < 0)
			return sn_fail(SN_ENET, "%s is required", name);
		*v = dflt;
		return 0;
	}
	double x = l->opt[o];
	if (!isfinite(x) || x != floor(x))
		return sn_fail(SN_ENET, "%s %g must be an integer", name, x);
	if (x < (double)min)
		return min == 1 ? sn_fail(SN_ENET, "%s %g must be positive", name, x)
				: sn_fail(SN_ENET, "%s %g must be at least %lld", name, x,
					  (long long)min);
	if (x > SN_MAX_COUNT)
		return sn_fail(SN_ENET, "%s %g is too large (at most %d)", name, x,
			       SN_MAX_COUNT);
	*v = (int64_t)x;
	return 0;
}

void sn_layer_add_param(sn_layer *l, const char *suffix, int ndim, const int64_t *shape,
			int trainable, enum sn_init init, int64_t fan_in, int64_t fan_out)
{
	if (l->nparams >= SN_MAX_LAYER_PARAMS)
		return;
	sn_param_desc *d = &l->params[l->nparams++];
	memset(d, 0, sizeof *d);
	snprintf(d->suffix, sizeof d->suffix, "%s", suffix);
	d->ndim = ndim;
	d->numel = 1;
	for (int i = 0; i < ndim; i++) {
		d->shape[i] = shape[i];
		d->numel *= shape[i];
	}
	d->trainable = trainable;
	d->init = init;
	d->fan_in = fan_in;
	d->fan_out = fan_out;
}
