/* gz.c: the strict gzip reader (see gz.h), on zlib's inflate. */
#include "gz.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#define GZ_IN (1u << 17)

struct sn_gz {
	int fd;
	int direct;              /* not gzip: bytes pass through */
	int at_end;              /* the fd has no more bytes */
	int between;             /* a member ended; another may follow */
	z_stream z;
	unsigned char in[GZ_IN];
};

/* Read more input after what is left in z.next_in[0..avail_in).  EINTR is
 * an error, not retried: a signal (sn-shard's SIGTERM) must end a read
 * blocked on a pipe, and the caller knows whether it asked for that. */
static int more_input(sn_gz *g)
{
	if (g->z.avail_in && g->z.next_in != g->in)
		memmove(g->in, g->z.next_in, g->z.avail_in);
	g->z.next_in = g->in;
	ssize_t r = read(g->fd, g->in + g->z.avail_in, GZ_IN - g->z.avail_in);
	if (r < 0)
		return sn_fail(SN_EIO, "read failed: %s", strerror(errno));
	if (r == 0)
		g->at_end = 1;
	g->z.avail_in += (uInt)r;
	return 0;
}

/* At least two bytes buffered, unless the input ends first. */
static int want_two(sn_gz *g)
{
	while (g->z.avail_in < 2 && !g->at_end) {
		int rc = more_input(g);
		if (rc)
			return rc;
	}
	return 0;
}

static int is_magic(const sn_gz *g)
{
	return g->z.avail_in >= 2 && g->z.next_in[0] == 0x1f && g->z.next_in[1] == 0x8b;
}

int sn_gz_open(int fd, sn_gz **out)
{
	*out = NULL;
	sn_gz *g = calloc(1, sizeof *g);
	if (!g) {
		close(fd);
		return sn_fail(SN_ENOMEM, "out of memory");
	}
	g->fd = fd;
	g->z.next_in = g->in;
	int rc = want_two(g);
	if (!rc) {
		g->direct = !is_magic(g);
		/* 16 + 15: a gzip wrapper, the largest window */
		if (!g->direct && inflateInit2(&g->z, 16 + MAX_WBITS) != Z_OK) {
			g->direct = 1;    /* nothing for sn_gz_close to end */
			rc = sn_fail(SN_ENOMEM, "cannot start gzip decompression");
		}
	}
	if (rc) {
		sn_gz_close(g);
		return rc;
	}
	*out = g;
	return 0;
}

static ssize_t read_direct(sn_gz *g, void *buf, size_t n)
{
	if (g->z.avail_in) {
		size_t take = n < g->z.avail_in ? n : g->z.avail_in;
		memcpy(buf, g->z.next_in, take);
		g->z.next_in += take;
		g->z.avail_in -= (uInt)take;
		return (ssize_t)take;
	}
	ssize_t r = read(g->fd, buf, n);
	return r < 0 ? sn_fail(SN_EIO, "read failed: %s", strerror(errno)) : r;
}

/* After a member: the end, another member, or bytes that are neither. */
static int next_member(sn_gz *g, int *end)
{
	int rc = want_two(g);
	if (rc)
		return rc;
	*end = g->z.avail_in == 0;
	if (*end)
		return 0;
	if (!is_magic(g))
		return sn_fail(SN_EFORMAT, "trailing garbage after the gzip stream");
	g->between = 0;
	return inflateReset(&g->z) == Z_OK ? 0 : sn_fail(SN_EFORMAT, "corrupt gzip data");
}

ssize_t sn_gz_read(sn_gz *g, void *buf, size_t n)
{
	if (n > (1u << 30))
		n = 1u << 30;
	if (g->direct)
		return read_direct(g, buf, n);
	g->z.next_out = buf;
	g->z.avail_out = (uInt)n;
	int rc = 0;
	while (g->z.avail_out && !rc) {
		int end = 0;
		if (g->between && ((rc = next_member(g, &end)) || end))
			break;
		if (!g->z.avail_in && !g->at_end && (rc = more_input(g)))
			break;
		/* called even without input: it may still have output to give */
		int zr = inflate(&g->z, Z_NO_FLUSH);
		if (zr == Z_STREAM_END)
			g->between = 1;
		else if (zr == Z_BUF_ERROR && !g->z.avail_in && g->at_end)
			rc = sn_fail(SN_ETRUNC, "truncated gzip stream");
		else if (zr == Z_MEM_ERROR)
			rc = sn_fail(SN_ENOMEM, "out of memory");
		else if (zr != Z_OK && zr != Z_BUF_ERROR)
			rc = sn_fail(SN_EFORMAT, "corrupt gzip data: %s", g->z.msg ? g->z.msg : "?");
	}
	return rc ? rc : (ssize_t)(n - g->z.avail_out);
}

int sn_gz_direct(const sn_gz *g)
{
	return g->direct;
}

void sn_gz_close(sn_gz *g)
{
	if (!g)
		return;
	if (!g->direct)
		inflateEnd(&g->z);
	close(g->fd);
	free(g);
}
