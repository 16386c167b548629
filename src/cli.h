/* cli.h: what every sn command's main shares: the program name, error
 * messages of the form "prog: FILE: what is wrong", strict number parsing,
 * --version, and tty-only progress.  Only mains (src/) use this. */
#ifndef SN_CLI_H
#define SN_CLI_H

#include <stdint.h>
#include <stdnoreturn.h>

extern const char *sn_prog;   /* "sn-info", set by sn_cli_init */

void sn_cli_init(const char *prog);

/* "prog: FILE: detail" from the library's last error (sn_errdetail()). */
void sn_cli_error(const char *file, int err);
/* "prog: message" (printf-style). */
void sn_cli_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "prog: message\nTry 'prog --help' for more information." and exit 2. */
noreturn void sn_cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "prog (sn) VERSION" and exit 0. */
noreturn void sn_cli_version(void);

/* Strict parsing: the whole string, in range, or a usage error naming opt. */
int64_t sn_cli_int(const char *opt, const char *s, int64_t min, int64_t max);
double sn_cli_double(const char *opt, const char *s, double min, double max);

/* Progress lines go to stderr only when it is a terminal (and not -q). */
int sn_cli_progress_enabled(void);

#endif
