/* parallel.c: the thread pool.  Workers wait for a new job generation,
 * take units from a shared counter until none are left, and count
 * themselves out.  A worker spins briefly before it sleeps, and so does the
 * caller waiting for the last unit: a training step runs dozens of short
 * jobs back to back, and a futex wake-up on each would cost more than the
 * smaller layers' work. */
#include "parallel.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

/* How long to spin before sleeping: longer than the gaps between a
 * training step's jobs, short enough not to burn a core between steps. */
#define SPIN_NS 200000

struct sn_parallel {
	int threads;
	pthread_t *workers;
	int started;
	pthread_mutex_t mutex;
	pthread_cond_t wake, done;
	/* the current job, written before `generation` moves on */
	sn_parallel_fn *fn;
	void *ctx;
	int64_t units;
	atomic_llong next;            /* the next unit to take */
	atomic_int busy;              /* workers not yet through the job */
	atomic_uint generation;
	int quit;
};

typedef struct {
	sn_parallel *pool;
	int thread;
} worker_arg;

static int64_t elapsed_ns(const struct timespec *t0)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)(t.tv_sec - t0->tv_sec) * 1000000000 + (t.tv_nsec - t0->tv_nsec);
}

static void run_units(sn_parallel *p, int thread)
{
	for (;;) {
		const int64_t u = atomic_fetch_add(&p->next, 1);
		if (u >= p->units)
			return;
		p->fn(p->ctx, u, thread);
	}
}

/* Wait until the generation differs from seen; returns the new one. */
static unsigned wait_for_job(sn_parallel *p, unsigned seen)
{
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0;; i++) {
		unsigned g = atomic_load(&p->generation);
		if (g != seen)
			return g;
		if ((i & 63) == 63 && elapsed_ns(&t0) > SPIN_NS)
			break;
	}
	pthread_mutex_lock(&p->mutex);
	unsigned g;
	while ((g = atomic_load(&p->generation)) == seen)
		pthread_cond_wait(&p->wake, &p->mutex);
	pthread_mutex_unlock(&p->mutex);
	return g;
}

static void *worker_main(void *arg)
{
	worker_arg *a = arg;
	sn_parallel *p = a->pool;
	const int thread = a->thread;
	free(a);
	unsigned seen = 0;
	for (;;) {
		seen = wait_for_job(p, seen);
		if (p->quit)
			return NULL;
		run_units(p, thread);
		if (atomic_fetch_sub(&p->busy, 1) == 1) {
			pthread_mutex_lock(&p->mutex);
			pthread_cond_signal(&p->done);
			pthread_mutex_unlock(&p->mutex);
		}
	}
}

/* Start a new generation: the job fields are written before it moves. */
static void publish(sn_parallel *p)
{
	pthread_mutex_lock(&p->mutex);
	atomic_fetch_add(&p->generation, 1);
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->mutex);
}

int sn_parallel_create(sn_parallel **pool, int threads)
{
	*pool = NULL;
	if (threads < 1 || threads > SN_PARALLEL_MAX_THREADS)
		return sn_fail(SN_EINVAL, "%d threads outside 1..%d", threads,
			       SN_PARALLEL_MAX_THREADS);
	sn_parallel *p = calloc(1, sizeof *p);
	if (!p || !(p->workers = calloc((size_t)threads, sizeof *p->workers))) {
		free(p);
		return sn_fail(SN_ENOMEM, "cannot allocate a pool of %d threads", threads);
	}
	p->threads = threads;
	pthread_mutex_init(&p->mutex, NULL);
	pthread_cond_init(&p->wake, NULL);
	pthread_cond_init(&p->done, NULL);
	atomic_init(&p->next, 0);
	atomic_init(&p->busy, 0);
	atomic_init(&p->generation, 0);
	for (int t = 1; t < threads; t++) {
		worker_arg *a = malloc(sizeof *a);
		if (a)
			*a = (worker_arg){p, t};
		if (!a || pthread_create(&p->workers[t], NULL, worker_main, a)) {
			free(a);
			sn_parallel_free(p);
			return sn_fail(SN_ENOMEM, "cannot start thread %d of %d", t + 1, threads);
		}
		p->started = t;
	}
	*pool = p;
	return 0;
}

void sn_parallel_free(sn_parallel *p)
{
	if (!p)
		return;
	p->quit = 1;
	publish(p);
	for (int t = 1; t <= p->started; t++)
		pthread_join(p->workers[t], NULL);
	pthread_cond_destroy(&p->done);
	pthread_cond_destroy(&p->wake);
	pthread_mutex_destroy(&p->mutex);
	free(p->workers);
	free(p);
}

int sn_parallel_cores(void)
{
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
		return CPU_COUNT(&set) < SN_PARALLEL_MAX_THREADS ? CPU_COUNT(&set)
								 : SN_PARALLEL_MAX_THREADS;
	return 1;
}

int sn_parallel_threads(const sn_parallel *p)
{
	return p ? p->threads : 1;
}

void sn_parallel_for(sn_parallel *p, int64_t units, sn_parallel_fn *fn, void *ctx)
{
	if (!p || p->threads == 1 || units <= 1) {
		for (int64_t u = 0; u < units; u++)
			fn(ctx, u, 0);
		return;
	}
	p->fn = fn;
	p->ctx = ctx;
	p->units = units;
	atomic_store(&p->next, 0);
	atomic_store(&p->busy, p->threads - 1);
	publish(p);
	run_units(p, 0);
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; atomic_load(&p->busy) > 0; i++)
		if ((i & 63) == 63 && elapsed_ns(&t0) > SPIN_NS) {
			pthread_mutex_lock(&p->mutex);
			while (atomic_load(&p->busy) > 0)
				pthread_cond_wait(&p->done, &p->mutex);
			pthread_mutex_unlock(&p->mutex);
			break;
		}
}
