/* dense.c: fully connected layer, out[B,U] = in[B,D] W^T + b, GEMMs over
 * the whole batch.  A [C,H,W] input is read as [C*H*W] in C,H,W order,
 * which is how NCHW batches already lie in memory. */
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

/* The passes split their output into blocks of BLOCK rows (examples) or
 * BLOCK columns (features), one GEMM each.  A GEMM packs both operands, so
 * the split is along the side whose other operand is the smaller one to
 * pack again for every block: features at training batch sizes, where W is
 * the big operand, examples at evaluation's.  Sums over the batch (dW, db)
 * stay inside one GEMM per block of outputs.  The split depends only on
 * the shapes, so no result depends on the thread count. */
#define BLOCK 64

static int64_t blocks_of(int64_t n)
{
	return (n + BLOCK - 1) / BLOCK;
}

/* Blocks of examples are larger at evaluation's batch sizes: an eighth of
 * the batch, so W is packed eight times per pass rather than B/64. */
static int rows_per_block(int B)
{
	const int rows = ((B + 7) / 8 + 15) / 16 * 16;
	return rows > BLOCK ? rows : BLOCK;
}

static int64_t row_blocks(int B)
{
	return (B + rows_per_block(B) - 1) / rows_per_block(B);
}

typedef struct {
	const sn_layer *l;
	const float *in, *dout;
	float *out, *din;
	int B, D, U;
} dense_job;

/* [*i0, *i0 + *n): block `unit` of size `size` in 0..total-1. */
static void block(int64_t unit, int size, int total, int *i0, int *n)
{
	*i0 = (int)unit * size;
	*n = total - *i0 < size ? total - *i0 : size;
}

/* out[b0:b0+nb, u0:u0+nu] = in W^T + bias */
static void forward_block(const dense_job *j, int b0, int nb, int u0, int nu)
{
	const float *bias = j->l->nparams > 1 ? j->l->w[1] : NULL;
	for (int b = b0; b < b0 + nb; b++)
		for (int u = u0; u < u0 + nu; u++)
			j->out[(int64_t)b * j->U + u] = bias ? bias[u] : 0.0f;
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, nu, j->D, 1.0f,
		    j->in + (int64_t)b0 * j->D, j->D, j->l->w[0] + (int64_t)u0 * j->D, j->D, 1.0f,
		    j->out + (int64_t)b0 * j->U + u0, j->U);
}

static void forward_rows(void *ctx, int64_t unit, int thread)
{
	(void)thread;
	const dense_job *j = ctx;
	int b0, nb;
	block(unit, rows_per_block(j->B), j->B, &b0, &nb);
	forward_block(j, b0, nb, 0, j->U);
}

static void forward_columns(void *ctx, int64_t unit, int thread)
{
	(void)thread;
	const dense_job *j = ctx;
	int u0, nu;
	block(unit, BLOCK, j->U, &u0, &nu);
	forward_block(j, 0, j->B, u0, nu);
}

static void dense_forward(sn_layer *l, const float *in, float *out, int B, sn_pass *p)
{
	dense_job j = {l, in, NULL, out, NULL, B, (int)sn_shape_size(&l->in), (int)l->out.d[0]};
	if (j.B > j.U)
		sn_parallel_for(p->pool, row_blocks(j.B), forward_rows, &j);
	else
		sn_parallel_for(p->pool, blocks_of(j.U), forward_columns, &j);
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

/* dW and db for one block of outputs. */
static void weight_grad_unit(void *ctx, int64_t unit, int thread)
{
	(void)thread;
	const dense_job *j = ctx;
	const sn_layer *l = j->l;
	const int u0 = (int)unit * BLOCK, n = j->U - u0 < BLOCK ? j->U - u0 : BLOCK;
	if (l->nparams > 1 && l->dw[1])
		for (int b = 0; b < j->B; b++)
			add_row(l->dw[1] + u0, j->dout + (int64_t)b * j->U + u0, n);
	if (l->dw[0])
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, j->D, j->B, 1.0f,
			    j->dout + u0, j->U, j->in, j->D, 1.0f, l->dw[0] + (int64_t)u0 * j->D,
			    j->D);
}

/* din[b0:b0+nb, d0:d0+nd] = dout W */
static void input_grad_block(const dense_job *j, int b0, int nb, int d0, int nd)
{
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nb, nd, j->U, 1.0f,
		    j->dout + (int64_t)b0 * j->U, j->U, j->l->w[0] + d0, j->D, 0.0f,
		    j->din + (int64_t)b0 * j->D + d0, j->D);
}

static void input_grad_rows(void *ctx, int64_t unit, int thread)
{
	(void)thread;
	const dense_job *j = ctx;
	int b0, nb;
	block(unit, rows_per_block(j->B), j->B, &b0, &nb);
	input_grad_block(j, b0, nb, 0, j->D);
}

static void input_grad_columns(void *ctx, int64_t unit, int thread)
{
	(void)thread;
	const dense_job *j = ctx;
	int d0, nd;
	block(unit, BLOCK, j->D, &d0, &nd);
	input_grad_block(j, 0, j->B, d0, nd);
}

static void dense_backward(sn_layer *l, const float *in, const float *out,
			   const float *dout, float *din, int B, sn_pass *p)
{
	(void)out;
	dense_job j = {l, in, dout, NULL, din, B, (int)sn_shape_size(&l->in), (int)l->out.d[0]};
	sn_parallel_for(p->pool, blocks_of(j.U), weight_grad_unit, &j);
	if (din && j.B > j.D)
		sn_parallel_for(p->pool, row_blocks(j.B), input_grad_rows, &j);
	else if (din)
		sn_parallel_for(p->pool, blocks_of(j.D), input_grad_columns, &j);
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
