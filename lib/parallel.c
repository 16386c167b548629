/* parallel.c: the thread pool.  A job is published by moving a ticket to a
 * new generation; threads claim the job's units one at a time by advancing
 * the ticket (compare-and-swap, so a thread that wakes late for an old job
 * claims nothing), and the caller waits only for the units to be done, not
 * for every worker to notice the job: on a busy machine a worker that is
 * not scheduled leaves its share to the others instead of stalling them.
 * Threads spin briefly before they sleep: a training step runs dozens of
 * short jobs back to back, and a futex wake-up on each would cost more
 * than the smaller layers' work. */
#include "parallel.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

/* How long to spin before sleeping: longer than the gaps between a
 * training step's jobs, short enough not to burn a core between steps. */
#define SPIN_NS 200000

/* A spinning thread tells the core it waits (x86's pause), so that a
 * hyperthread sibling, often the other vCPU of a small VM, runs at speed. */
static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

typedef struct {
	_Atomic(sn_parallel_fn *) fn;
	_Atomic(void *) ctx;
	atomic_llong units;
} job;

struct sn_parallel {
	int threads, started;
	pthread_t *workers;
	/* jobs alternate between two slots, so a late reader of the last
	 * job's slot never sees the next one's fields half written */
	job jobs[2];
	atomic_ullong ticket;         /* generation << 32 | next unit */
	atomic_llong done;            /* units of the current job finished */
	atomic_int sleepers, quit;
	pthread_mutex_t mutex;
	pthread_cond_t wake, finished;
};

typedef struct {
	sn_parallel *pool;
	int thread;
} worker_arg;

static uint32_t generation_of(unsigned long long ticket)
{
	return (uint32_t)(ticket >> 32);
}

static int64_t elapsed_ns(const struct timespec *t0)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)(t.tv_sec - t0->tv_sec) * 1000000000 + (t.tv_nsec - t0->tv_nsec);
}

/* Claim and run units of generation g until none is left. */
static void run_units(sn_parallel *p, uint32_t g, int thread)
{
	job *j = &p->jobs[g & 1];
	for (;;) {
		unsigned long long t = atomic_load(&p->ticket);
		if (generation_of(t) != g)
			return;
		sn_parallel_fn *fn = atomic_load_explicit(&j->fn, memory_order_relaxed);
		void *ctx = atomic_load_explicit(&j->ctx, memory_order_relaxed);
		const long long units = atomic_load_explicit(&j->units, memory_order_relaxed);
		const long long unit = (long long)(t & 0xffffffffu);
		if (unit >= units)
			return;
		if (!atomic_compare_exchange_weak(&p->ticket, &t, t + 1))
			continue;   /* another thread took it, or a new job began */
		fn(ctx, unit, thread);
		if (atomic_fetch_add(&p->done, 1) + 1 == units) {
			pthread_mutex_lock(&p->mutex);
			pthread_cond_signal(&p->finished);
			pthread_mutex_unlock(&p->mutex);
		}
	}
}

/* Wait for a generation other than seen; returns it. */
static uint32_t wait_for_job(sn_parallel *p, uint32_t seen)
{
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0;; i++) {
		uint32_t g = generation_of(atomic_load(&p->ticket));
		if (g != seen)
			return g;
		if ((i & 63) == 63 && elapsed_ns(&t0) > SPIN_NS)
			break;
		cpu_relax();
	}
	pthread_mutex_lock(&p->mutex);
	atomic_fetch_add(&p->sleepers, 1);
	uint32_t g;
	while ((g = generation_of(atomic_load(&p->ticket))) == seen)
		pthread_cond_wait(&p->wake, &p->mutex);
	atomic_fetch_sub(&p->sleepers, 1);
	pthread_mutex_unlock(&p->mutex);
	return g;
}

static void *worker_main(void *arg)
{
	worker_arg *a = arg;
	sn_parallel *p = a->pool;
	const int thread = a->thread;
	free(a);
	uint32_t seen = 0;
	for (;;) {
		seen = wait_for_job(p, seen);
		if (atomic_load(&p->quit))
			return NULL;
		run_units(p, seen, thread);
	}
}

/* Move the ticket to generation g at unit 0 and wake the sleepers. */
static void publish(sn_parallel *p, uint32_t g)
{
	atomic_store(&p->ticket, (unsigned long long)g << 32);
	if (atomic_load(&p->sleepers) > 0) {
		pthread_mutex_lock(&p->mutex);
		pthread_cond_broadcast(&p->wake);
		pthread_mutex_unlock(&p->mutex);
	}
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
	pthread_cond_init(&p->finished, NULL);
	for (int i = 0; i < 2; i++) {
		atomic_init(&p->jobs[i].fn, NULL);
		atomic_init(&p->jobs[i].ctx, NULL);
		atomic_init(&p->jobs[i].units, 0);
	}
	atomic_init(&p->ticket, 0);
	atomic_init(&p->done, 0);
	atomic_init(&p->sleepers, 0);
	atomic_init(&p->quit, 0);
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
	atomic_store(&p->quit, 1);
	pthread_mutex_lock(&p->mutex);
	atomic_store(&p->ticket, (unsigned long long)(generation_of(p->ticket) + 1) << 32);
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->mutex);
	for (int t = 1; t <= p->started; t++)
		pthread_join(p->workers[t], NULL);
	pthread_cond_destroy(&p->finished);
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
	if (!p || p->threads == 1 || units <= 1 || units > INT32_MAX) {
		for (int64_t u = 0; u < units; u++)
			fn(ctx, u, 0);
		return;
	}
	const uint32_t g = generation_of(atomic_load(&p->ticket)) + 1;
	job *j = &p->jobs[g & 1];
	atomic_store_explicit(&j->fn, fn, memory_order_relaxed);
	atomic_store_explicit(&j->ctx, ctx, memory_order_relaxed);
	atomic_store_explicit(&j->units, units, memory_order_relaxed);
	atomic_store(&p->done, 0);
	publish(p, g);
	run_units(p, g, 0);
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; atomic_load(&p->done) < units; i++) {
		if ((i & 63) == 63 && elapsed_ns(&t0) > SPIN_NS) {
			pthread_mutex_lock(&p->mutex);
			while (atomic_load(&p->done) < units)
				pthread_cond_wait(&p->finished, &p->mutex);
			pthread_mutex_unlock(&p->mutex);
			break;
		}
		cpu_relax();
	}
}
