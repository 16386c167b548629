/* average.h: combine K workers' weight files into one, as SparkNet's master
 * does after each round: the plain mean, the mean weighted by each worker's
 * `examples`, or DiLoCo's outer Nesterov step on the averaged delta.
 *
 * Memory is O(model) however many inputs there are: one double accumulator
 * per parameter, plus one input mapped at a time (and the base and outer
 * state when an outer step is asked for).
 *
 * The result does not depend on the order of the inputs: usable inputs are
 * sorted by a key over their content before they are summed, so the same
 * set of files always adds up in the same order, bit for bit. */
#ifndef SN_AVERAGE_H
#define SN_AVERAGE_H

#include <stdint.h>

#include "error.h"

typedef struct {
	int weighted;             /* weight each input by its `examples` */
	const char *base;         /* PREV, the weights the round started from */
	int outer;                /* apply the outer Nesterov step (needs base) */
	double outer_lr;          /* LR (1 with momentum 0 = the plain mean) */
	double outer_momentum;    /* M */
	const char *outer_state;  /* sn.outer.v1 file: read if present, written;
	                             NULL: momentum starts at zero, not kept */
	int min_inputs;           /* quorum of usable inputs (>= 1) */
} sn_average_opts;

/* What the average used, for --json and sn-train's log. */
typedef struct {
	int used, excluded;
	int64_t examples;         /* sum over used inputs */
	double loss;              /* example-weighted mean, NAN when absent */
	double seconds_max, seconds_mean;   /* workers' `seconds` metadata */
	int64_t steps, round;     /* as written to the output */
	const char *bad_path;     /* on failure: the file the error is about */
} sn_average_summary;

/* Called once per excluded input (corrupt, unreadable, non-finite), with
 * the reason; the library itself never prints. */
typedef void (*sn_average_warn_fn)(void *ctx, const char *path, const char *why);

void sn_average_opts_default(sn_average_opts *o);

/* Average paths[0..n) into out.  Out and the outer state are committed
 * together (sn_st_write_all): both or neither, the state renamed first, so
 * out existing implies the state is current.
 * Errors: SN_EQUORUM when fewer than min_inputs inputs are usable,
 * SN_EMISMATCH when nets differ (the detail names the other file and the
 * first tensor that differs), and the st errors for the base, outer state
 * and output.  On failure summary->bad_path is the file to blame. */
int sn_average_files(const char *const *paths, int n, const char *out,
		     const sn_average_opts *o, sn_average_warn_fn warn, void *ctx,
		     sn_average_summary *summary) SN_MUST_CHECK;

#endif
