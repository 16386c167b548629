/* error.h: the error codes every libsn function returns.
 *
 * A libsn function returns 0 (SN_OK) or a negative SN_E* code.  When it fails
 * it also leaves a one-line detail ("header length 99 exceeds file size 12")
 * in a per-thread buffer, read with sn_errdetail().  The library never prints
 * and never exits; the command's main does both. */
#ifndef SN_ERROR_H
#define SN_ERROR_H

#define SN_MUST_CHECK __attribute__((warn_unused_result))
#define SN_PRINTF(f, a) __attribute__((format(printf, f, a)))

enum sn_error {
	SN_OK = 0,
	SN_EIO = -1,        /* read/write/open failed (errno-level)      */
	SN_ETRUNC = -2,     /* file ends before its declared content     */
	SN_EFORMAT = -3,    /* malformed: bad header, JSON, shape, ...   */
	SN_ECRC = -4,       /* crc32 mismatch                            */
	SN_ENOMEM = -5,     /* out of memory                             */
	SN_EINVAL = -6,     /* bad argument or option value              */
	SN_ENET = -7,       /* bad net definition (YAML)                 */
	SN_EMISMATCH = -8,  /* inputs that must agree do not (nets, shapes) */
	SN_ENONFINITE = -9, /* NaN or Inf where finite values are needed */
	SN_EQUORUM = -10,   /* too few usable inputs                     */
	SN_EUNSUPPORTED = -11, /* valid but not supported (e.g. dtype)   */
	SN_ERROR_COUNT = 12
};

/* The fixed name of an error code: "truncated file", "crc32 mismatch". */
const char *sn_strerror(int code);

/* The detail of the last error set in this thread, or sn_strerror(code) of
 * the last code when no detail was given. */
const char *sn_errdetail(void);

/* Record a detail for `code` and return `code`, so a failing function ends
 * with `return sn_fail(SN_EFORMAT, "bad dtype \"%s\"", s);`. */
int sn_fail(int code, const char *fmt, ...) SN_PRINTF(2, 3);

/* Clear the detail (used by callers that retry or skip an input). */
void sn_errclear(void);

/* The process exit codes shared by every command (see man pages). */
enum sn_exit {
	SN_EXIT_OK = 0,
	SN_EXIT_RUNTIME = 1,
	SN_EXIT_USAGE = 2,
	SN_EXIT_DIVERGED = 3,
	SN_EXIT_QUORUM = 4
};

/* Map a library error to the command exit code. */
int sn_exit_code(int err);

#endif
