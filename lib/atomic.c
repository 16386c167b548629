#include "atomic.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- the table
 * Fixed storage, so a signal handler can walk it without touching malloc:
 * a slot is FREE, CLAIMED while its name is copied in, or LIVE. */
#define SLOTS 64
enum { FREE, CLAIMED, LIVE };
static char slot_name[SLOTS][PATH_MAX];
static int slot_state[SLOTS];
static int publishing;          /* renames in progress (any thread) */
static int held_signal;         /* a signal that came during them */

static int claim_slot(size_t name_len)
{
	if (name_len >= PATH_MAX)
		return -1;
	for (int i = 0; i < SLOTS; i++) {
		int expected = FREE;
		if (__atomic_compare_exchange_n(&slot_state[i], &expected, CLAIMED, 0,
						__ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
			return i;
	}
	return -1;
}

static void release_slot(int i)
{
	if (i >= 0)
		__atomic_store_n(&slot_state[i], FREE, __ATOMIC_SEQ_CST);
}

int sn_atomic_on_signal(int sig)
{
	if (__atomic_load_n(&publishing, __ATOMIC_SEQ_CST)) {
		__atomic_store_n(&held_signal, sig, __ATOMIC_SEQ_CST);
		return 1;
	}
	int saved = errno;
	for (int i = 0; i < SLOTS; i++)
		if (__atomic_load_n(&slot_state[i], __ATOMIC_SEQ_CST) == LIVE)
			unlink(slot_name[i]);
	errno = saved;
	return 0;
}

/* ---------------------------------------------------------------- one file */

int sn_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len) {
		ssize_t w = write(fd, p, len > (1u << 30) ? (1u << 30) : len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return sn_fail(SN_EIO, "write failed: %s", strerror(errno));
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

/* open(O_EXCL) with mode 0666 rather than mkstemp: the umask then gives the
 * file the permissions any new file would get, not mkstemp's 0600.  The
 * slot holds each name tried, LIVE from just before the open (a signal then
 * removes the file, or finds nothing) to a failure (another's file must
 * never be removed). */
static int open_temp(char *tmp, size_t suffix_at, int slot)
{
	static const char chars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
	for (int attempt = 0; attempt < 100; attempt++) {
		unsigned char r[6];
		if (getrandom(r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
			uint64_t x = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 16) ^
				     ((uint64_t)attempt * 0x9e3779b97f4a7c15ull);
			for (int i = 0; i < 6; i++, x >>= 8)
				r[i] = (unsigned char)x;
		}
		for (int i = 0; i < 6; i++)
			tmp[suffix_at + i] = chars[r[i] % (sizeof chars - 1)];
		strcpy(slot_name[slot], tmp);
		__atomic_store_n(&slot_state[slot], LIVE, __ATOMIC_SEQ_CST);
		int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
		if (fd >= 0)
			return fd;
		__atomic_store_n(&slot_state[slot], CLAIMED, __ATOMIC_SEQ_CST);
		if (errno != EEXIST)
			return -1;
	}
	errno = EEXIST;
	return -1;
}

int sn_atomic_open(sn_atomic *a, const char *path)
{
	memset(a, 0, sizeof *a);
	a->fd = -1;
	a->slot = -1;
	if (!(a->path = strdup(path)))
		return sn_fail(SN_ENOMEM, "out of memory");
	if (strcmp(path, "-") == 0) {
		a->fd = STDOUT_FILENO;
		return 0;
	}
	size_t n = strlen(path);
	if (!(a->tmp = malloc(n + sizeof ".tmpXXXXXX"))) {
		sn_atomic_abort(a);
		return sn_fail(SN_ENOMEM, "out of memory");
	}
	memcpy(a->tmp, path, n);
	memcpy(a->tmp + n, ".tmpXXXXXX", sizeof ".tmpXXXXXX");
	/* the slot first: a signal between open and claim would leave the file */
	if ((a->slot = claim_slot(strlen(a->tmp))) < 0) {
		free(a->tmp);
		a->tmp = NULL;
		sn_atomic_abort(a);
		return sn_fail(SN_EIO, "cannot create: too many temporary files at once");
	}
	if ((a->fd = open_temp(a->tmp, n + 4, a->slot)) < 0) {
		int e = errno;
		free(a->tmp);	/* not ours to remove: the name may be another's */
		a->tmp = NULL;
		sn_atomic_abort(a);
		return sn_fail(SN_EIO, "cannot create: %s", strerror(e));
	}
	return 0;
}

void sn_atomic_abort(sn_atomic *a)
{
	if (a->tmp) {
		if (a->fd >= 0)
			close(a->fd);
		unlink(a->tmp);
	}
	release_slot(a->slot);
	free(a->tmp);
	free(a->path);
	a->tmp = a->path = NULL;
	a->fd = -1;
	a->slot = -1;
}

/* The data on disk before any name points at it. */
static int finish(sn_atomic *a)
{
	int err = 0;
	if (!a->tmp) {	/* stdout: nothing to rename; pipes cannot fsync */
		if (a->fd >= 0 && fsync(a->fd) < 0 && errno != EINVAL && errno != EROFS &&
		    errno != ENOTSUP)
			err = sn_fail(SN_EIO, "write failed: %s", strerror(errno));
		a->fd = -1;
		return err;
	}
	if (fsync(a->fd) < 0)
		err = sn_fail(SN_EIO, "write failed: %s", strerror(errno));
	if (close(a->fd) < 0 && !err)
		err = sn_fail(SN_EIO, "write failed: %s", strerror(errno));
	a->fd = -1;
	return err;
}

/* The rename is durable only once the directory entry is on disk too. */
static void sync_parent(const char *path)
{
	char *copy = strdup(path);
	if (!copy)
		return;
	int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		(void)fsync(fd);
		close(fd);
	}
	free(copy);
}

/* How an output was put in place, which says how to take it back. */
enum { NOT_PLACED, SWAPPED, CREATED, REPLACED };

/* Exchanging the names keeps the old file (now under the temporary name)
 * until the whole set is in place.  Where the target does not exist yet, or
 * the file system cannot exchange, a plain rename does. */
static int place(sn_atomic *a)
{
	if (renameat2(AT_FDCWD, a->tmp, AT_FDCWD, a->path, RENAME_EXCHANGE) == 0) {
		a->placed = SWAPPED;
		return 0;
	}
	if (errno != ENOENT && errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
		return sn_fail(SN_EIO, "cannot rename the temporary file: %s", strerror(errno));
	int existed = errno != ENOENT;
	if (rename(a->tmp, a->path) < 0)
		return sn_fail(SN_EIO, "cannot rename the temporary file: %s", strerror(errno));
	a->placed = existed ? REPLACED : CREATED;
	return 0;
}

/* Best effort: a file replaced on a file system that cannot exchange names
 * is gone (sn-formats(5) says so). */
static void take_back(sn_atomic *a)
{
	if (a->placed == SWAPPED)
		(void)renameat2(AT_FDCWD, a->tmp, AT_FDCWD, a->path, RENAME_EXCHANGE);
	else if (a->placed == CREATED)
		(void)unlink(a->path);
}

int sn_atomic_publish(sn_atomic *a, int n, int *failed)
{
	int err = 0, bad = -1;
	for (int i = 0; i < n && !err; i++)
		if ((err = finish(&a[i])))
			bad = i;
	if (!err) {
		__atomic_add_fetch(&publishing, 1, __ATOMIC_SEQ_CST);
		for (int i = 0; i < n && !err; i++)
			if (a[i].tmp && (err = place(&a[i])))
				bad = i;
		for (int j = bad - 1; err && j >= 0; j--)
			if (a[j].tmp)
				take_back(&a[j]);
		for (int i = 0; i < n; i++) {
			if (!a[i].tmp)
				continue;
			(void)unlink(a[i].tmp);   /* the old file after a swap, else the unused new one */
			free(a[i].tmp);
			a[i].tmp = NULL;
			if (!err)
				sync_parent(a[i].path);
		}
		if (__atomic_sub_fetch(&publishing, 1, __ATOMIC_SEQ_CST) == 0) {
			int sig = __atomic_exchange_n(&held_signal, 0, __ATOMIC_SEQ_CST);
			if (sig)
				raise(sig);
		}
	}
	for (int i = 0; i < n; i++)
		sn_atomic_abort(&a[i]);
	if (failed)
		*failed = bad;
	return err;
}

int sn_atomic_commit(sn_atomic *a)
{
	return sn_atomic_publish(a, 1, NULL);
}
