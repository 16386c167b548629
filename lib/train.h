/* train.h: the training engine behind sn-sgd and sn-eval: minibatch SGD over
 * one data shard with a resumable solver state, and batched evaluation.
 *
 * Minibatches come from shuffled epochs.  The permutation of epoch e is a
 * function of (seed, e) alone, so a state file only needs (epoch, cursor) to
 * regenerate where it was.  A batch that runs past the end of an epoch wraps
 * into the next epoch's permutation: every batch has exactly `batch`
 * examples, and no example is dropped.
 *
 * The learning-rate schedule follows the GLOBAL step: the input weights'
 * `steps` metadata plus the steps run so far, so schedules advance across
 * rounds even without a state file. */
#ifndef SN_TRAIN_H
#define SN_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "data.h"
#include "error.h"
#include "model.h"
#include "net.h"
#include "rng.h"
#include "solver.h"

/* A worker's solver state: what sn.state.v1 files hold (sn-formats(5)). */
typedef struct {
	char solver[16];      /* the solver type the moments belong to */
	int nbuffers;         /* 0, 1 or 2 moment buffers of net->nparam floats */
	float *m1, *m2;       /* parallel to net->param; NULL when unused */
	size_t n;
	int64_t step;         /* steps this state has seen */
	int64_t epoch;        /* current epoch of the shard ... */
	int64_t cursor;       /* ... and position in its permutation */
	uint64_t seed;        /* data order seed */
	sn_rng rng;           /* dropout */
} sn_train_state;

/* A fresh state: zero moments for config c, epoch 0, cursor 0, the dropout
 * rng seeded from `seed`. */
int sn_train_state_init(sn_train_state *s, const sn_net *net,
			const sn_solver_config *c, uint64_t seed) SN_MUST_CHECK;
/* Read PATH into a state for this net and solver.  A missing file gives a
 * fresh state (as sn_train_state_init) and *found = 0.  A corrupt file, or
 * one for another solver or other shapes, is an error (SN_EMISMATCH or the
 * reader's code).  The file's seed wins over `seed`: a resumed run continues
 * the data order it started. */
int sn_train_state_load(sn_train_state *s, const char *path, const sn_net *net,
			const sn_solver_config *c, uint64_t seed, int *found) SN_MUST_CHECK;
/* The state as an sn.state.v1 file to write (moments named <weight>.m1/.m2,
 * borrowed from s); sn_train_state_save writes it atomically.  To commit it
 * together with the weights, pass both to sn_st_write_all. */
int sn_train_state_st(const sn_train_state *s, const sn_net *net, sn_st *st) SN_MUST_CHECK;
/* Write atomically (format sn.state.v1, moments named <weight>.m1/.m2). */
int sn_train_state_save(const sn_train_state *s, const char *path,
			const sn_net *net) SN_MUST_CHECK;
void sn_train_state_free(sn_train_state *s);

/* Refuse data the net cannot train or evaluate on: the example shape must
 * equal the net input (a [D] net also takes [C,H,W] examples of D values),
 * and every label must be below the net's classes.  The detail names both
 * shapes, or the first offending label. */
int sn_train_check_data(const sn_net *net, const sn_data *d) SN_MUST_CHECK;

typedef struct {
	int64_t iters;            /* at most this many steps (>= 1) */
	double time_limit;        /* seconds, 0 = none; at least one step runs */
	int64_t first_step;       /* the input weights' `steps` */
	/* Called after every step (may be NULL): the caller throttles. */
	void (*progress)(void *ctx, int64_t steps, double loss, double images_per_s);
	void *progress_ctx;
} sn_train_options;

typedef struct {
	int64_t steps;            /* run this time */
	int64_t examples;         /* steps * batch */
	double loss;              /* mean training loss of those steps */
	double seconds;           /* wall time of the loop */
} sn_train_result;

/* Run minibatch SGD on m->net (batch = c->batch <= m->max_batch).  Returns
 * SN_ENONFINITE with "step S: non-finite output in layer L" (S is the
 * 1-based global step) when the loss or the updated weights stop being
 * finite; the net and state are then undefined and must not be saved. */
int sn_train_run(sn_model *m, const sn_data *d, const sn_solver_config *c,
		 const sn_train_options *o, sn_train_state *s,
		 sn_train_result *r) SN_MUST_CHECK;

/* Random crop after padding and random horizontal mirror of the examples
 * x[B, shape] in place, as Caffe's transform_param and torchvision's
 * RandomCrop(padding) + RandomHorizontalFlip do.  Per example: the crop's
 * top-left corner (dy, dx) in [0, 2*crop_pad]^2 of the padded image, then,
 * with mirror, a coin for the flip; all drawn from r, the state's generator,
 * so a resumed run draws what one long run would.  pad[c] fills the border
 * of channel c; example is scratch for one example.  sn_train_run does this
 * to every training batch when c->crop_pad or c->mirror is set, padding
 * with a black pixel (a stored 0, normalised); evaluation never does. */
void sn_train_augment(float *x, int B, const sn_shape *shape, int64_t crop_pad, int mirror,
		      const float *pad, float *example, sn_rng *r);

/* The weights' integer metadata `key` (e.g. "steps"), or 0 when absent;
 * SN_EFORMAT when present but not a non-negative decimal integer. */
/* The integer counters of the formats sn knows, checked as sn_train_meta_int
 * does: round, steps, examples of sn.weights.v1 (when present); step,
 * epoch, cursor, seed of sn.state.v1 and round of sn.outer.v1 (required).
 * Files of other formats pass. */
int sn_train_check_counters(const sn_st *st) SN_MUST_CHECK;
/* SN_EFORMAT ("WHAT S leaves no room for N more steps") when a step counter
 * S cannot count `iters` more steps; sn_train_run checks the weights' steps
 * and the state's step this way, and the state's epoch as it advances. */
int sn_train_check_steps(int64_t steps, int64_t iters, const char *what) SN_MUST_CHECK;
int sn_train_meta_int(const sn_st *st, const char *key, int64_t *v) SN_MUST_CHECK;

/* Fill st (sn_net_to_st) plus round, steps, examples, loss, seconds. */
int sn_train_weights_st(const sn_net *net, sn_st *st, int64_t round, int64_t steps,
			const sn_train_result *r) SN_MUST_CHECK;

/* One row per layer of a profiled run (m->profile set). */
typedef struct {
	const char *name, *kind;
	double forward_ms, backward_ms;   /* per step */
	double share;                     /* percent of all layer time */
	double gflops;                    /* (forward+backward FLOPs) / time */
} sn_train_layer_profile;
void sn_train_profile(const sn_model *m, int64_t steps, int batch,
		      sn_train_layer_profile *rows);

/* Evaluation totals over one or more data files. */
typedef struct {
	int classes, k;           /* top-k, k clamped to classes */
	int64_t n;
	double loss_sum;          /* sum over examples; mean = loss_sum / n */
	int64_t correct, correct_k;
	int64_t *confusion;       /* [classes][classes]: row = label, col = predicted */
	int keep_predictions;     /* when set, the arrays below grow with n */
	int32_t *label, *predicted;
	float *prob;              /* probability of the predicted class */
	size_t cap;
} sn_eval;

int sn_eval_init(sn_eval *e, int classes, int k, int keep_predictions) SN_MUST_CHECK;
void sn_eval_free(sn_eval *e);
/* Evaluate every example of d in batches of m->max_batch, in eval mode
 * (running batchnorm statistics, no dropout), adding to e. */
int sn_eval_add(sn_model *m, const sn_data *d, sn_eval *e) SN_MUST_CHECK;
/* Write the kept predictions as TSV (index, label, predicted, probability;
 * index counts across all data files in order), atomically; "-" = stdout. */
int sn_eval_write_predictions(const sn_eval *e, const char *path) SN_MUST_CHECK;

/* The data's class names (metadata class_names, a JSON array of strings),
 * or *names = NULL when it has none or they do not fit `classes`.  Free with
 * sn_eval_class_names_free. */
int sn_eval_class_names(const sn_data *d, int classes, char ***names) SN_MUST_CHECK;
void sn_eval_class_names_free(char **names, int classes);

#endif
