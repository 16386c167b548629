/* dense.c: fully connected layer, out[B,U] = in[B,D] W^T + b, one GEMM per
 * pass over the whole batch.  A [C,H,W] input is read as [C*H*W] in C,H,W
 * order, which is how NCHW batches already lie in memory. */
#include "layers.h"

#include <cblas.h>

static int dense_setup(sn_layer *l)
{
	int64_t U, bias;
	int err;
	if ((err = sn_layer_opt_int(l, SN_OPT_UNITS, -1, 1, &U)) ||
	    (err = sn_layer_opt_int(l, SN_OPT_BIAS, 1, 0, &bias)))
		return err;
	if (bias > 1)
		return sn_fail(SN_ENET, "bias %lld must be 0 or 1", (long long)bias);
	const int64_t D = sn_shape_size(&l->in);
	if (D > INT32_MAX / U)
		return sn_fail(SN_ENET, "dense layer of %lld x %lld is too large",
			       (long long)U, (long long)D);
	l->out = (sn_shape){1, {U, 0, 0}};
	l->nparams = 0;
	sn_layer_add_param(l, "weight", 2, (int64_t[]){U, D}, 1, SN_INIT_FAN, D, U);
	if (bias)
		sn_layer_add_param(l, "bias", 1, (int64_t[]){U}, 1, SN_INIT_ZERO, D, U);
	l->flops_forward = 2 * U * D + (bias ? U : 0);
	l->flops_backward = 4 * U * D + (bias ? U : 0);
	l->saved_per_example = l->saved_fixed = 0;
	l->scratch_per_example = l->scratch_fixed = 0;
	return 0;
}

static void dense_forward(sn_layer *l, const float *in, float *out, int B, sn_pass *p)
{
	(void)p;
	const int D = (int)sn_shape_size(&l->in), U = (int)l->out.d[0];
	const float *bias = l->nparams > 1 ? l->w[1] : NULL;
	for (int b = 0; b < B; b++)
		for (int u = 0; u < U; u++)
			out[(int64_t)b * U + u] = bias ? bias[u] : 0.0f;
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, U, D, 1.0f, in, D,
		    l->w[0], D, 1.0f, out, U);
}

/* The bias gradient row by row (contiguous, so it vectorises) rather than
 * column by column; blocks of 8 over restrict pointers are what -O2 takes. */
static void add_row(float *restrict acc, const float *restrict row, int n)
{
	int i = 0;
	for (; i + 8 <= n; i += 8)
		for (int j = 0; j < 8; j++)
			acc[i + j] += row[i + j];
	for (; i < n; i++)
		acc[i] += row[i];
}

static void dense_backward(sn_layer *l, const float *in, const float *out,
			   const float *dout, float *din, int B, sn_pass *p)
{
	(void)out, (void)p;
	const int D = (int)sn_shape_size(&l->in), U = (int)l->out.d[0];
	if (l->nparams > 1 && l->dw[1])
		for (int b = 0; b < B; b++)
			add_row(l->dw[1], dout + (int64_t)b * U, U);
	if (l->dw[0])
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, U, D, B, 1.0f, dout, U,
			    in, D, 1.0f, l->dw[0], D);
	if (din)
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, D, U, 1.0f, dout, U,
			    l->w[0], D, 0.0f, din, D);
}

void sn_dense_forward_naive(const sn_layer *l, const float *in, float *out, int B)
{
	const int64_t D = sn_shape_size(&l->in), U = l->out.d[0];
	const float *bias = l->nparams > 1 ? l->w[1] : NULL;
	for (int64_t b = 0; b < B; b++)
		for (int64_t u = 0; u < U; u++) {
			double sum = bias ? bias[u] : 0.0;
			for (int64_t d = 0; d < D; d++)
				sum += (double)l->w[0][u * D + d] * in[b * D + d];
			out[b * U + u] = (float)sum;
		}
}

const sn_layer_kind sn_kind_dense = {
	.name = "dense",
	.name_prefix = "fc",
	.options = 1u << SN_OPT_UNITS | 1u << SN_OPT_BIAS,
	.setup = dense_setup,
	.forward = dense_forward,
	.backward = dense_backward,
};
