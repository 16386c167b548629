/* gz.h: a strict gzip reader over a file descriptor.
 *
 * zlib's gzread() takes a stream cut short (even inside its 8-byte trailer)
 * for a clean end and skips any bytes after the last member; readers of sn
 * input must refuse both.  This one reads one or more gzip members and
 * fails with SN_ETRUNC ("truncated gzip stream") when the input ends inside
 * a member, SN_EFORMAT when bytes that are not another member follow the
 * last one or the data is corrupt (crc32 and length are checked).  Input
 * that does not start with the gzip magic is passed through as it is. */
#ifndef SN_GZ_H
#define SN_GZ_H

#include <sys/types.h>

#include "error.h"

typedef struct sn_gz sn_gz;

/* Takes fd (closed by sn_gz_close, also on failure). */
int sn_gz_open(int fd, sn_gz **g) SN_MUST_CHECK;
/* Up to n bytes into buf: the count, 0 at the end, or a negative SN_E*. */
ssize_t sn_gz_read(sn_gz *g, void *buf, size_t n) SN_MUST_CHECK;
/* 1 if the input is passed through (not gzip). */
int sn_gz_direct(const sn_gz *g);
void sn_gz_close(sn_gz *g);

#endif
