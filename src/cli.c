#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"

const char *sn_prog = "sn";

void sn_cli_init(const char *prog)
{
	sn_prog = prog;
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
