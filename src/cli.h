/* cli.h: what every sn command's main shares: the program name, error
 * messages of the form "prog: FILE: what is wrong", strict number parsing,
 * --version, and tty-only progress.  Only mains (src/) use this. */
#ifndef SN_CLI_H
#define SN_CLI_H

#include <stdint.h>
#include <stdnoreturn.h>

extern const char *sn_prog;   /* "sn-info", set by sn_cli_init */

/* First thing in every main.  Also: at exit, a failed write to standard
 * output turns the exit status into 1 with "prog: standard output: why"; and
 * SIGINT, SIGTERM and SIGHUP remove the temporary files of outputs in flight
 * (atomic.h) before the process dies of them. */
void sn_cli_init(const char *prog);

/* Flush stdout: 1 when every report so far reached it, else 0 having said
 * "prog: standard output: why" (for a main that must know before it goes on;
 * the exit check catches everything else). */
int sn_cli_stdout_ok(void);

/* Refuse (usage error, exit 2) any output that is the same file as another
 * output or an input: the same device and inode when it exists (links
 * included), else the same directory and name.  "-" and NULL paths are
 * skipped.  opt names the option in the message:
 *     sn_cli_file out[] = {{"-o", o.output}, {"--state", o.state}};
 *     sn_cli_file in[] = {{"-w", o.weights}, {"-d", o.data}};
 *     sn_cli_check_outputs(out, 2, in, 2);
 * A file a command reads and then replaces (sn-sgd --state) is listed once,
 * as an output.  Call it after parsing, before reading anything. */
typedef struct {
	const char *opt, *path;
} sn_cli_file;
void sn_cli_check_outputs(const sn_cli_file *out, int nout, const sn_cli_file *in, int nin);

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
