/* model.h: running a net on a batch.  An sn_model holds the activations,
 * their gradients and the layers' workspaces for batches of up to max_batch
 * examples; the parameters stay in the sn_net. */
#ifndef SN_MODEL_H
#define SN_MODEL_H

#include "net.h"
#include "parallel.h"
#include "rng.h"

typedef struct {
	sn_net *net;
	int max_batch;
	float **act;         /* act[0]: input [B,in]; act[i+1]: output of layer i */
	float **dact;        /* dL/dact[i], same sizes (dact[0] unused) */
	/* An activation read by several layers (or by a join) gets the sum of
	 * their gradients: summed[i] marks it, and a one-input layer writes
	 * its share to dshare first.  live[i]: layer i's output reaches the
	 * loss; backward skips the others, whose gradients are all zero. */
	unsigned char *summed, *live;
	float *dshare;
	float *scratch;      /* shared by all layers (sn_pass.scratch), per thread */
	int64_t scratch_stride;
	sn_parallel *pool;   /* NULL: one thread; set by sn_model_use_pool */
	float *saved;        /* backs every layer's l->saved */
	/* Evaluation folds a batchnorm and a relu that read only a conv's
	 * output (or the batchnorm's) into the conv (sn_epilogue, the same
	 * bits): folded[i] layers after layer i, while fuse is set (it is by
	 * default; tests clear it).  coef: a batchnorm's mean and invstd. */
	unsigned char *folded;
	int fuse;
	float *coef;
	int profile;         /* when set, forward/backward add each layer's
	                      * wall seconds to seconds_forward/backward[i] */
	double *seconds_forward, *seconds_backward;  /* [nlayers] */
} sn_model;

int sn_model_init(sn_model *m, sn_net *net, int max_batch) SN_MUST_CHECK;

/* A batch for evaluation: batch, or fewer examples where the net's largest
 * activation for batch examples would not stay in the CPU's caches (4 MiB),
 * but never fewer than 16.  Passes over activations in memory ran the
 * ResNet's evaluation 15% slower at batch 1000 than at 64. */
int sn_model_cache_batch(const sn_net *net, int batch);
void sn_model_free(sn_model *m);

/* Run the layers on pool's threads (NULL: the caller's alone), which does
 * not change any result.  Resizes the scratch area for the pool. */
int sn_model_use_pool(sn_model *m, sn_parallel *pool) SN_MUST_CHECK;

/* Forward x[B, input] (normalised floats).  With labels y (may be NULL when
 * the caller only wants outputs) *loss gets the mean cross-entropy.
 * training=1 uses batch statistics and dropout (drawing from rng).
 * Returns SN_ENONFINITE when the loss is not finite, with a detail naming
 * the first layer whose output holds a NaN or Inf ("step-independent":
 * callers add the step). */
int sn_model_forward(sn_model *m, const float *x, const int32_t *y, int B,
		     int training, sn_rng *rng, double *loss) SN_MUST_CHECK;

/* Backward after a training forward: zeroes net->grad, then fills it with
 * dL/dparam for the mean loss of the batch. */
void sn_model_backward(sn_model *m, int B);

/* Class probabilities [B, classes] of the last forward. */
const float *sn_model_probs(const sn_model *m);

#endif
