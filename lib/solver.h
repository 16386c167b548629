/* solver.h: the optimizers (SGD, momentum, Nesterov, AdaGrad, RMSProp, Adam,
 * AdamW), weight decay, gradient-norm clipping and learning-rate policies
 * (fixed, step, multistep, exp, inv, poly, cosine, plus linear warmup).
 *
 * Parameters, gradients and moments are flat parallel float arrays of the
 * same length n, so every update is one loop. */
#ifndef SN_SOLVER_H
#define SN_SOLVER_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define SN_MAX_MULTISTEP 16
#define SN_MAX_CROP_PAD 1024

typedef struct {
	char type[16];        /* sgd momentum nesterov adagrad rmsprop adam adamw */
	double lr;            /* base learning rate */
	double momentum;      /* momentum / nesterov (0.9) */
	double weight_decay;  /* L2 added to the gradient; decoupled for adamw */
	double beta1, beta2;  /* adam (0.9, 0.999) */
	double eps;           /* adagrad/rmsprop/adam (1e-8) */
	double rms_decay;     /* rmsprop (0.99) */
	double clip_norm;     /* 0 = no clipping of the global gradient L2 norm */
	int batch;            /* minibatch size (64) */

	char lr_policy[16];   /* fixed step multistep exp inv poly cosine */
	double gamma;         /* step/multistep/exp/inv factor */
	double power;         /* inv/poly */
	int64_t step_size;    /* step */
	int64_t multistep[SN_MAX_MULTISTEP];
	int nmultistep;
	int64_t max_steps;    /* poly/cosine horizon */
	double lr_min;        /* cosine floor */
	int64_t warmup;       /* linear warmup steps from 0 to lr */

	/* Training-time augmentation of [C,H,W] examples (lib/train.c) */
	int64_t crop_pad;     /* random crop after padding by this many (0 = off) */
	int64_t mirror;       /* 1: random horizontal mirror */
} sn_solver_config;

/* Defaults: plain sgd, lr 0.01, momentum 0.9 (used by momentum/nesterov),
 * batch 64, fixed policy, adam betas 0.9/0.999, eps 1e-8. */
void sn_solver_config_default(sn_solver_config *c);

/* Whether a solver key takes a list (multistep: [1000, 2000]); every other
 * key takes exactly one value. */
int sn_solver_key_takes_list(const char *key);

/* Set one key from text (YAML `solver:` entries and command-line options
 * share this): returns 0, or SN_EINVAL with a detail for an unknown key or a
 * bad value.  Keys: type lr momentum weight_decay beta1 beta2 eps rms_decay
 * clip_norm batch lr_policy gamma power step_size multistep (comma list)
 * max_steps lr_min warmup crop_pad mirror. */
int sn_solver_config_set(sn_solver_config *c, const char *key, const char *value) SN_MUST_CHECK;

/* Check the combination (known type and policy, positive lr ...). */
int sn_solver_config_check(const sn_solver_config *c) SN_MUST_CHECK;

/* The learning rate at global step `step` (0-based). */
double sn_solver_lr(const sn_solver_config *c, int64_t step);

/* Number of moment buffers (each n floats) the type needs: 0, 1 or 2. */
int sn_solver_nbuffers(const sn_solver_config *c);

/* One update of w[n] from g[n] at global step `step` (0-based); m1, m2 are
 * the moment buffers (NULL where not needed).  g is modified in place
 * (clipping, weight decay). */
void sn_solver_step(const sn_solver_config *c, int64_t step, float *w, float *g,
		    float *m1, float *m2, size_t n);

/* L2 norm of the gradient in double, for clipping and reporting. */
double sn_grad_norm(const float *g, size_t n);

#endif
