/* flatten.c: [C,H,W] -> [C*H*W].  NCHW batches are already laid out that
 * way, so the passes are copies. */
#include "layers.h"

#include <string.h>

static int flatten_setup(sn_layer *l)
{
	l->out = (sn_shape){1, {sn_shape_size(&l->in), 0, 0}};
	l->nparams = 0;
	l->flops_forward = l->flops_backward = 0;
	l->saved_per_example = l->saved_fixed = 0;
	l->scratch_per_example = l->scratch_fixed = 0;
	return 0;
}

static void flatten_forward(sn_layer *l, const float *in, float *out, int B, sn_pass *p)
{
	(void)p;
	memcpy(out, in, (size_t)(sn_shape_size(&l->in) * B) * sizeof *out);
}

static void flatten_backward(sn_layer *l, const float *in, const float *out,
			     const float *dout, float *din, int B, sn_pass *p)
{
	(void)in, (void)out, (void)p;
	if (din)
		memcpy(din, dout, (size_t)(sn_shape_size(&l->in) * B) * sizeof *din);
}

const sn_layer_kind sn_kind_flatten = {
	.name = "flatten",
	.setup = flatten_setup,
	.forward = flatten_forward,
	.backward = flatten_backward,
};
