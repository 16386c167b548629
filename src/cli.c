#include "cli.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cblas.h>

#include "atomic.h"
#include "error.h"

const char *sn_prog = "sn";

/* A report that did not reach its reader is a failed command, whichever
 * exit the main took; an exit handler sees every one of them. */
/* sn threads itself (lib/parallel.c) and calls BLAS one thread at a time,
 * so OpenBLAS's own threads are only in the way: the threaded OpenBLAS
 * starts one per core in its library constructor, and they spin on
 * sched_yield for about 0.1 s in every process (sn-sgd took 28% more CPU
 * and 12% more wall time with them, and a core from the worker beside it).
 * blas_thread_shutdown_ ends them; it is weak because only the pthreads
 * build of OpenBLAS has it.  (The serial OpenBLAS is no answer: Debian
 * builds it without the locking that concurrent callers need, and sn-sgd's
 * results then changed from run to run.)  Nothing may call
 * openblas_set_num_threads after this: it starts the threads again. */
extern int blas_thread_shutdown_(void) __attribute__((weak));

static void one_blas_thread(void)
{
	openblas_set_num_threads(1);
	if (blas_thread_shutdown_)
		blas_thread_shutdown_();
}

static int stdout_failure_told;

static void check_stdout_at_exit(void)
{
	if (stdout_failure_told) {
		(void)fclose(stdout);
		return;
	}
	int e = 0, failed = ferror(stdout);
	if (fflush(stdout) != 0) {
		e = errno;
		failed = 1;
	}
	/* a closed stdout that nobody wrote to is no failure */
	if (fclose(stdout) != 0 && !failed && errno != EBADF) {
		e = errno;
		failed = 1;
	}
	if (!failed)
		return;
	fprintf(stderr, "%s: standard output: %s\n", sn_prog, e ? strerror(e) : "write error");
	_exit(SN_EXIT_RUNTIME);
}

static void on_fatal_signal(int sig)
{
	if (sn_atomic_on_signal(sig))
		return;		/* held until the outputs being renamed are in place */
	signal(sig, SIG_DFL);
	raise(sig);
}

/* A signal the caller ignores (nohup, a background job) stays ignored. */
static void catch_fatal_signal(int sig)
{
	struct sigaction sa, old;
	if (sigaction(sig, NULL, &old) == 0 && old.sa_handler == SIG_IGN)
		return;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_fatal_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	sigaction(sig, &sa, NULL);
}

void sn_cli_init(const char *prog)
{
	sn_prog = prog;
	one_blas_thread();
	atexit(check_stdout_at_exit);
	catch_fatal_signal(SIGINT);
	catch_fatal_signal(SIGTERM);
	catch_fatal_signal(SIGHUP);
}

int sn_cli_stdout_ok(void)
{
	if (fflush(stdout) == 0 && !ferror(stdout))
		return 1;
	fprintf(stderr, "%s: standard output: %s\n", sn_prog, strerror(errno));
	stdout_failure_told = 1;
	return 0;
}

/* An existing file is itself (device and inode, through any link); a new
 * one is its directory's real path plus its name. */
typedef struct {
	int exists;
	dev_t dev;
	ino_t ino;
	char path[PATH_MAX + NAME_MAX + 2];
} file_id;

static void identify(const char *path, file_id *id)
{
	struct stat sb;
	memset(id, 0, sizeof *id);
	if (stat(path, &sb) == 0) {
		id->exists = 1;
		id->dev = sb.st_dev;
		id->ino = sb.st_ino;
		return;
	}
	char d[PATH_MAX], b[PATH_MAX], real[PATH_MAX];
	snprintf(d, sizeof d, "%s", path);
	snprintf(b, sizeof b, "%s", path);
	if (realpath(dirname(d), real))
		snprintf(id->path, sizeof id->path, "%s/%s", real, basename(b));
	else
		snprintf(id->path, sizeof id->path, "%s", path);
}

static int same_file(const file_id *a, const file_id *b)
{
	if (a->exists || b->exists)
		return a->exists && b->exists && a->dev == b->dev && a->ino == b->ino;
	return strcmp(a->path, b->path) == 0;
}

void sn_cli_check_outputs(const sn_cli_file *out, int nout, const sn_cli_file *in, int nin)
{
	for (int i = 0; i < nout; i++) {
		for (int j = i + 1; out[i].path && !strcmp(out[i].path, "-") && j < nout; j++)
			if (out[j].path && !strcmp(out[j].path, "-"))
				sn_cli_usage_error("%s - and %s - both want standard output",
						   out[i].opt, out[j].opt);
		if (!out[i].path || !strcmp(out[i].path, "-"))
			continue;
		file_id a, b;
		identify(out[i].path, &a);
		for (int j = 0; j < nout + nin; j++) {
			const sn_cli_file *f = j < nout ? &out[j] : &in[j - nout];
			if (j == i || !f->path || !strcmp(f->path, "-"))
				continue;
			identify(f->path, &b);
			if (same_file(&a, &b))
				sn_cli_usage_error("%s '%s' and %s '%s' are the same file", out[i].opt,
						   out[i].path, f->opt, f->path);
		}
	}
}

void sn_cli_error(const char *file, int err)
{
	(void)err;
	fprintf(stderr, "%s: %s: %s\n", sn_prog, file, sn_errdetail());
}

void sn_cli_warn(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "%s: ", sn_prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

noreturn void sn_cli_usage_error(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "%s: ", sn_prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '%s --help' for more information.\n", sn_prog);
	exit(SN_EXIT_USAGE);
}

noreturn void sn_cli_version(void)
{
	printf("%s (sn) %s\n", sn_prog, SN_VERSION);
	exit(0);
}

int64_t sn_cli_int(const char *opt, const char *s, int64_t min, int64_t max)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		sn_cli_usage_error("%s: invalid value '%s' (expected an integer in %lld..%lld)",
				   opt, s, (long long)min, (long long)max);
	return v;
}

double sn_cli_double(const char *opt, const char *s, double min, double max)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !isfinite(v) || v < min || v > max)
		sn_cli_usage_error("%s: invalid value '%s' (expected a number in %g..%g)",
				   opt, s, min, max);
	return v;
}

int sn_cli_progress_enabled(void)
{
	return isatty(STDERR_FILENO);
}
