/* stream.c: the input every reader reads through: a plain file, a gzip
 * stream or stdin (gzip or not), with a look-ahead buffer that lets a
 * reader sniff the first bytes and take lines in place. */
#include "reader.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int sn_in_open(sn_instream *s, const char *path)
{
	memset(s, 0, sizeof *s);
	int fd = strcmp(path, "-") ? open(path, O_RDONLY | O_CLOEXEC) : dup(STDIN_FILENO);
	if (fd < 0)
		return sn_fail(SN_EIO, "%s", strerror(errno));
	struct stat sb;
	if (fstat(fd, &sb) == 0 && S_ISDIR(sb.st_mode)) {
		close(fd);
		return sn_fail(SN_EIO, "is a directory");
	}
	int rc = sn_gz_open(fd, &s->gz);
	if (rc)
		return rc;
	s->buf = malloc(SN_IN_CHUNK);
	if (!s->buf) {
		sn_in_close(s);
		return sn_fail(SN_ENOMEM, "out of memory");
	}
	s->cap = SN_IN_CHUNK;
	return 0;
}

void sn_in_close(sn_instream *s)
{
	sn_gz_close(s->gz);
	free(s->buf);
	memset(s, 0, sizeof *s);
}

int sn_in_fill(sn_instream *s, size_t want)
{
	if (s->len - s->pos >= want || s->eof)
		return 0;
	if (s->pos) {
		memmove(s->buf, s->buf + s->pos, s->len - s->pos);
		s->len -= s->pos;
		s->pos = 0;
	}
	if (want > s->cap) {
		size_t cap = s->cap;
		while (cap < want)
			cap *= 2;
		unsigned char *b = realloc(s->buf, cap);
		if (!b)
			return sn_fail(SN_ENOMEM, "out of memory");
		s->buf = b;
		s->cap = cap;
	}
	while (s->len < want && !s->eof) {
		ssize_t got = sn_gz_read(s->gz, s->buf + s->len, s->cap - s->len);
		if (got < 0)
			return (int)got;
		s->eof = got == 0;
		s->len += (size_t)got;
	}
	return 0;
}

int sn_in_read(sn_instream *s, void *dst, size_t n, size_t *got)
{
	*got = 0;
	while (*got < n) {
		size_t want = n - *got < s->cap ? n - *got : s->cap;
		int rc = sn_in_fill(s, want);
		if (rc)
			return rc;
		size_t have = s->len - s->pos;
		if (have == 0)
			break;
		size_t take = have < n - *got ? have : n - *got;
		memcpy((char *)dst + *got, s->buf + s->pos, take);
		s->pos += take;
		*got += take;
	}
	return 0;
}

int sn_in_line(sn_instream *s, char **line, size_t *len)
{
	size_t scanned = 0;
	for (;;) {
		unsigned char *start = s->buf + s->pos;
		size_t have = s->len - s->pos;
		unsigned char *nl = memchr(start + scanned, '\n', have - scanned);
		if (nl || (s->eof && have)) {
			size_t n = nl ? (size_t)(nl - start) : have;
			if (!nl && s->len == s->cap) {  /* room for the NUL */
				unsigned char *b = realloc(s->buf, s->cap + 1);
				if (!b)
					return sn_fail(SN_ENOMEM, "out of memory");
				s->buf = b;
				s->cap++;
				start = s->buf + s->pos;
			}
			s->pos += nl ? n + 1 : n;
			if (n && start[n - 1] == '\r')
				n--;
			start[n] = 0;
			*line = (char *)start;
			*len = n;
			return 1;
		}
		if (s->eof)
			return 0;
		scanned = have;
		int rc = sn_in_fill(s, have + (have < SN_IN_CHUNK / 2 ? SN_IN_CHUNK / 2 : have));
		if (rc)
			return rc;
	}
}

int64_t sn_in_plain_size(const sn_instream *s, const char *path)
{
	struct stat sb;
	if (!strcmp(path, "-") || !sn_gz_direct(s->gz) || stat(path, &sb) || !S_ISREG(sb.st_mode))
		return -1;
	return sb.st_size;
}
