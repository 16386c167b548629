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

/* The passes run in spans of SPAN floats, one unit each, whatever the
 * thread count; the loops come in blocks of 16, the form -O2 vectorises,
 * cloned per vector width. */
#define SPAN 16384

SN_VECTOR_CLONES static void sum2(float *restrict out, const float *restrict a,
				  const float *restrict b, int64_t n)
{
	int64_t i = 0;
	for (; i + 16 <= n; i += 16)
		for (int k = 0; k < 16; k++)
			out[i + k] = a[i + k] + b[i + k];
	for (; i < n; i++)
		out[i] = a[i] + b[i];
}

SN_VECTOR_CLONES static void accumulate(float *restrict acc, const float *restrict x, int64_t n)
{
	int64_t i = 0;
	for (; i + 16 <= n; i += 16)
		for (int k = 0; k < 16; k++)
			acc[i + k] += x[i + k];
	for (; i < n; i++)
		acc[i] += x[i];
}

/* relu in place, as relu's own loop: x < 0 ? 0 : x */
SN_VECTOR_CLONES static void relu_in_place(float *restrict x, int64_t n)
{
	int64_t i = 0;
	for (; i + 16 <= n; i += 16)
		for (int k = 0; k < 16; k++)
			x[i + k] = x[i + k] < 0.0f ? 0.0f : x[i + k];
	for (; i < n; i++)
		x[i] = x[i] < 0.0f ? 0.0f : x[i];
}

typedef struct {
	int ninputs;
	const float *const *in;     /* forward: out = in[0] + in[1] + ..., */
	float *out;
	int relu;                   /* then relu where set (evaluation) */
	const float *dout;          /* backward: din[k] += dout */
	float *const *din;
	int64_t n;
} add_job;

static void forward_span(void *ctx, int64_t unit, int thread)
{
	(void)thread;
	const add_job *j = ctx;
	const int64_t i = unit * SPAN, n = j->n - i < SPAN ? j->n - i : SPAN;
	sum2(j->out + i, j->in[0] + i, j->in[1] + i, n);
	for (int k = 2; k < j->ninputs; k++)
		accumulate(j->out + i, j->in[k] + i, n);
	if (j->relu)
		relu_in_place(j->out + i, n);
}

static void backward_span(void *ctx, int64_t unit, int thread)
{
	(void)thread;
	const add_job *j = ctx;
	const int64_t i = unit * SPAN, n = j->n - i < SPAN ? j->n - i : SPAN;
	for (int k = 0; k < j->ninputs; k++)
		if (j->din[k])
			accumulate(j->din[k] + i, j->dout + i, n);
}

/* add's backward with one input */
void sn_add_into(sn_parallel *pool, float *acc, const float *x, int64_t n)
{
	add_job j = {.ninputs = 1, .dout = x, .din = &acc, .n = n};
	sn_parallel_for(pool, (n + SPAN - 1) / SPAN, backward_span, &j);
}

static void add_forward(sn_layer *l, const float *const *in, float *out, int B, sn_pass *p)
{
	add_job j = {.ninputs = l->ninputs, .in = in, .out = out,
		     .relu = p->epilogue && p->epilogue->relu, .n = sn_shape_size(&l->out) * B};
	sn_parallel_for(p->pool, (j.n + SPAN - 1) / SPAN, forward_span, &j);
}

static void add_backward(sn_layer *l, const float *const *in, const float *out,
			 const float *dout, float *const *din, int B, sn_pass *p)
{
	(void)in, (void)out;
	add_job j = {.ninputs = l->ninputs, .dout = dout, .din = din,
		     .n = sn_shape_size(&l->out) * B};
	sn_parallel_for(p->pool, (j.n + SPAN - 1) / SPAN, backward_span, &j);
}

const sn_layer_kind sn_kind_add = {
	.name = "add",
	.takes_epilogue = 1u << SN_EPILOGUE_RELU,
	.setup = add_setup,
	.forward_join = add_forward,
	.backward_join = add_backward,
};
