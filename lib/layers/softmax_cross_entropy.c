/* softmax_cross_entropy.c: the loss layer.  Its output is the class
 * probabilities; with labels, forward also puts the mean cross-entropy in
 * p->loss, computed as logsumexp(x) - x[y] so large logits do not
 * overflow.  Backward starts the chain: din = (probs - onehot(y)) / B,
 * with the labels that forward kept in the saved area, since the model's
 * backward pass is given no labels. */
#include "layers.h"

#include <math.h>

static int sce_setup(sn_layer *l)
{
	if (l->in.ndim != 1)
		return sn_fail(SN_ENET, "softmax_cross_entropy needs [classes] input, got %d "
			       "dimensions (add a dense layer)", l->in.ndim);
	if (l->in.d[0] < 2)
		return sn_fail(SN_ENET, "softmax_cross_entropy needs at least 2 classes, got %lld",
			       (long long)l->in.d[0]);
	l->out = l->in;
	l->nparams = 0;
	l->flops_forward = 4 * l->in.d[0];
	l->flops_backward = 2 * l->in.d[0];
	l->saved_per_example = 1;    /* the label, as int32; -1 when none */
	l->saved_fixed = 0;
	l->scratch_per_example = l->scratch_fixed = 0;
	return 0;
}

static void sce_forward(sn_layer *l, const float *in, float *out, int B, sn_pass *p)
{
	const int64_t K = l->in.d[0];
	/* l->saved comes from malloc, so it may hold int32 labels */
	int32_t *kept = (int32_t *)l->saved;
	double loss = 0;
	for (int64_t b = 0; b < B; b++) {
		const float *x = in + b * K;
		float *prob = out + b * K;
		float max = x[0];
		for (int64_t k = 1; k < K; k++)
			if (x[k] > max || isnan(x[k]))
				max = x[k];
		double sum = 0;
		for (int64_t k = 0; k < K; k++)
			sum += exp((double)x[k] - max);
		for (int64_t k = 0; k < K; k++)
			prob[k] = (float)(exp((double)x[k] - max) / sum);
		kept[b] = p->labels ? p->labels[b] : -1;
		if (p->labels) {
			int32_t y = p->labels[b];
			/* a label out of range makes the loss undefined, not a crash */
			loss += y >= 0 && y < K ? log(sum) + max - x[y] : NAN;
		}
	}
	p->loss = B > 0 ? loss / B : 0;
}

static void sce_backward(sn_layer *l, const float *in, const float *out,
			 const float *dout, float *din, int B, sn_pass *p)
{
	(void)in, (void)dout, (void)p;
	if (!din)
		return;
	const int64_t K = l->in.d[0];
	const float scale = 1.0f / (float)B;
	const int32_t *kept = (const int32_t *)l->saved;
	for (int64_t b = 0; b < B; b++) {
		for (int64_t k = 0; k < K; k++)
			din[b * K + k] = out[b * K + k] * scale;
		int32_t y = kept[b];
		if (y >= 0 && y < K)
			din[b * K + y] -= scale;
	}
}

const sn_layer_kind sn_kind_softmax_cross_entropy = {
	.name = "softmax_cross_entropy",
	.is_loss = 1,
	.setup = sce_setup,
	.forward = sce_forward,
	.backward = sce_backward,
};
