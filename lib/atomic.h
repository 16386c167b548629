/* atomic.h: outputs that appear whole, or not at all, even when they come
 * in sets and even when the command is interrupted.
 *
 * One output:
 *     sn_atomic a;
 *     if ((err = sn_atomic_open(&a, path)))        FILE.tmpXXXXXX beside FILE
 *             return err;
 *     if ((err = write_stuff(a.fd)))
 *             sn_atomic_abort(&a);                  removes the temporary
 *     else
 *             err = sn_atomic_commit(&a);           fsync, rename, sync the dir
 *
 * Outputs that belong together (sn-sgd's weights and state, sn-average's
 * weights and outer state): open every one first, so a missing directory
 * fails before anything is written; write each; then
 *     err = sn_atomic_publish(a, n, &failed);
 * syncs all of them and renames them into place in order, or, if any step
 * fails, puts back the ones already renamed: every FILE then has its old
 * contents (or is absent, as before).  Put the output whose presence means
 * "done" last.  For sn_st files, sn_st_write_all (st.h) does all of this.
 *
 * The temporary files in flight sit in a table that a signal handler reads:
 * mains (src/cli.c) catch SIGINT, SIGTERM and SIGHUP and call
 * sn_atomic_on_signal, which removes them.  While a publish is renaming, the
 * signal is held instead and re-raised when the set is complete, so a signal
 * never splits a set.  "-" (stdout) has no temporary: it is written as it
 * goes and cannot be taken back. */
#ifndef SN_ATOMIC_H
#define SN_ATOMIC_H

#include <stddef.h>

#include "error.h"

typedef struct {
	char *path;       /* final name */
	char *tmp;        /* temporary name, NULL for stdout */
	int fd;
	int slot;         /* in the table of temporaries; -1 when none */
	int placed;       /* private to atomic.c: how publish renamed it */
} sn_atomic;

/* Create PATH.tmpXXXXXX (mode 0666 less the umask) in PATH's directory, or
 * take stdout for "-".  On failure a is empty and nothing was created. */
int sn_atomic_open(sn_atomic *a, const char *path) SN_MUST_CHECK;

/* fsync, rename over PATH, sync the directory; the temporary is removed on
 * failure.  Always releases a. */
int sn_atomic_commit(sn_atomic *a) SN_MUST_CHECK;

/* Commit a[0..n) together (see above).  On failure *failed (may be NULL) is
 * the index of the output the error is about.  Always releases every a[i]. */
int sn_atomic_publish(sn_atomic *a, int n, int *failed) SN_MUST_CHECK;

/* Close and remove the temporary (nothing for stdout); a may be empty. */
void sn_atomic_abort(sn_atomic *a);

/* Async-signal-safe, for a handler of a fatal signal: returns 0 having
 * removed every temporary file in flight (the handler then dies of sig),
 * or 1 when a publish is renaming: the signal is held, and re-raised by the
 * publish once its set is in place (the handler then just returns). */
int sn_atomic_on_signal(int sig);

/* Write all of buf to fd, retrying short writes. */
int sn_write_all(int fd, const void *buf, size_t len) SN_MUST_CHECK;

#endif
