/* add.c: the elementwise sum of two or more same-shaped inputs, the join
 * of a residual block.  Inputs are summed in the order listed, so the
 * result does not depend on anything but the net. */
#include "layers.h"
#include "tensor.h"

static int add_setup(sn_layer *l)
{
	char a[64], b[64];
	if (l->ninputs < 2)
		return sn_fail(SN_ENET, "add needs at least two inputs (list them in inputs:)");
	for (int k = 1; k < l->ninputs; k++) {
		const sn_shape *s = &l->ins[k], *first = &l->ins[0];
		int same = s->ndim == first->ndim;
		for (int d = 0; same && d < s->ndim; d++)
			same = s->d[d] == first->d[d];
		if (!same)
			return sn_fail(SN_ENET, "add: input %d is %s but input 1 is %s; "
				       "add needs inputs of one shape", k + 1,
				       sn_shape_format(s->ndim, s->d, a, sizeof a),
				       sn_shape_format(first->ndim, first->d, b, sizeof b));
	}
	const int64_t n = sn_shape_size(&l->in);
	l->out = l->in;
	l->nparams = 0;
	l->flops_forward = (l->ninputs - 1) * n;
	l->flops_backward = l->ninputs * n;
	l->saved_per_example = l->saved_fixed = 0;
	l->scratch_per_example = l->scratch_fixed = 0;
	return 0;
}

static void add_forward(sn_layer *l, const float *const *in, float *out, int B, sn_pass *p)
{
	(void)p;
	const int64_t n = sn_shape_size(&l->out) * B;
	for (int64_t i = 0; i < n; i++)
		out[i] = in[0][i] + in[1][i];
	for (int k = 2; k < l->ninputs; k++)
		for (int64_t i = 0; i < n; i++)
			out[i] += in[k][i];
}

static void add_backward(sn_layer *l, const float *const *in, const float *out,
			 const float *dout, float *const *din, int B, sn_pass *p)
{
	(void)in, (void)out, (void)p;
	const int64_t n = sn_shape_size(&l->out) * B;
	for (int k = 0; k < l->ninputs; k++)
		if (din[k])
			for (int64_t i = 0; i < n; i++)
				din[k][i] += dout[i];
}

const sn_layer_kind sn_kind_add = {
	.name = "add",
	.setup = add_setup,
	.forward_join = add_forward,
	.backward_join = add_backward,
};
