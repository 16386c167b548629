/* parallel.h: a small pool of threads that runs numbered units of work.
 *
 * Results never depend on the thread count: a caller splits its work into
 * units whose boundaries depend only on the problem (a chunk of examples, a
 * block of channels), each unit writes only its own outputs, and sums over
 * units are added by the caller in unit order.  Which thread runs a unit,
 * and when, then changes nothing but the time taken. */
#ifndef SN_PARALLEL_H
#define SN_PARALLEL_H

#include <stdint.h>

#include "error.h"

typedef struct sn_parallel sn_parallel;

/* fn(ctx, unit, thread): thread (0 .. threads-1) names the caller's
 * per-thread workspace; unit's arithmetic must not depend on it. */
typedef void sn_parallel_fn(void *ctx, int64_t unit, int thread);

/* A pool of `threads` threads, the caller's included (threads-1 are
 * started).  SN_EINVAL for threads outside 1..SN_PARALLEL_MAX_THREADS. */
#define SN_PARALLEL_MAX_THREADS 1024
int sn_parallel_create(sn_parallel **pool, int threads) SN_MUST_CHECK;
void sn_parallel_free(sn_parallel *pool);

/* The cores this process may run on (at least 1). */
int sn_parallel_cores(void);

/* The pool's threads; 1 for a NULL pool. */
int sn_parallel_threads(const sn_parallel *pool);

/* Run fn for units 0..units-1 and return when all are done.  The caller
 * takes units too; a NULL pool runs them in order on the caller.  Not
 * reentrant: fn must not call sn_parallel_for on the same pool. */
void sn_parallel_for(sn_parallel *pool, int64_t units, sn_parallel_fn *fn, void *ctx);

/* [*lo, *hi): part `unit` of `units` near-equal parts of 0..n-1. */
static inline void sn_parallel_part(int64_t n, int64_t units, int64_t unit, int64_t *lo,
				    int64_t *hi)
{
	*lo = n * unit / units;
	*hi = n * (unit + 1) / units;
}

#endif
