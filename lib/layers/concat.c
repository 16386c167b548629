/* concat.c: joins two or more inputs along channels ([C,H,W] inputs with
 * one H and W) or along their length ([D] inputs), in the order listed,
 * as torch.cat(dim=1) does. */
#include "layers.h"
#include "tensor.h"

#include <string.h>

static int concat_setup(sn_layer *l)
{
	char a[64], b[64];
	if (l->ninputs < 2)
		return sn_fail(SN_ENET, "concat needs at least two inputs (list them in inputs:)");
	int64_t total = 0;
	for (int k = 0; k < l->ninputs; k++) {
		const sn_shape *s = &l->ins[k], *first = &l->ins[0];
		if (s->ndim != first->ndim || (s->ndim == 3 && (s->d[1] != first->d[1] ||
								s->d[2] != first->d[2])))
			return sn_fail(SN_ENET, "concat: input %d is %s but input 1 is %s; "
				       "concat needs one height and width", k + 1,
				       sn_shape_format(s->ndim, s->d, a, sizeof a),
				       sn_shape_format(first->ndim, first->d, b, sizeof b));
		total += s->d[0];
	}
	l->out = l->in;
	l->out.d[0] = total;
	l->nparams = 0;
	l->flops_forward = l->flops_backward = 0;
	l->saved_per_example = l->saved_fixed = 0;
	l->scratch_per_example = l->scratch_fixed = 0;
	return 0;
}

static void concat_forward(sn_layer *l, const float *const *in, float *out, int B,
			   sn_pass *p)
{
	(void)p;
	const int64_t per_out = sn_shape_size(&l->out);
	for (int b = 0; b < B; b++) {
		float *to = out + b * per_out;
		for (int k = 0; k < l->ninputs; k++) {
			const int64_t n = sn_shape_size(&l->ins[k]);
			memcpy(to, in[k] + b * n, (size_t)n * sizeof *to);
			to += n;
		}
	}
}

static void concat_backward(sn_layer *l, const float *const *in, const float *out,
			    const float *dout, float *const *din, int B, sn_pass *p)
{
	(void)in, (void)out, (void)p;
	const int64_t per_out = sn_shape_size(&l->out);
	for (int b = 0; b < B; b++) {
		const float *from = dout + b * per_out;
		for (int k = 0; k < l->ninputs; k++) {
			const int64_t n = sn_shape_size(&l->ins[k]);
			if (din[k])
				for (int64_t i = 0; i < n; i++)
					din[k][b * n + i] += from[i];
			from += n;
		}
	}
}

const sn_layer_kind sn_kind_concat = {
	.name = "concat",
	.setup = concat_setup,
	.forward_join = concat_forward,
	.backward_join = concat_backward,
};
