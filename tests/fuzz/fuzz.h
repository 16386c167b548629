/* fuzz.h: what the fuzz targets share.  Each target is one file defining
 * LLVMFuzzerTestOneInput; `make fuzz` links it with libFuzzer (clang), and
 * `make check` with replay.c (any compiler), which feeds it the committed
 * corpus and the regressions (inputs that once crashed) without fuzzing. */
#ifndef SN_FUZZ_H
#define SN_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "readers/reader.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The bytes as a file that the readers open by name: an in-memory file,
 * named /proc/self/fd/N in path (64 bytes); -1 if it cannot be made. */
static inline int fuzz_file(const uint8_t *data, size_t size, char *path)
{
	int fd = memfd_create("sn-fuzz", MFD_CLOEXEC);
	if (fd < 0)
		return -1;
	for (size_t at = 0; at < size;) {
		ssize_t w = write(fd, data + at, size - at);
		if (w <= 0) {
			close(fd);
			return -1;
		}
		at += (size_t)w;
	}
	snprintf(path, 64, "/proc/self/fd/%d", fd);
	return fd;
}

/* Open path (with labpath) as o->format and read every record; for CSV
 * also map the label strings to classes, as sn-shard does at the end. */
static inline void fuzz_read(const sn_shard_opts *o, const char *path, const char *labpath)
{
	sn_labtab lt = { 0 };
	sn_source s = { .o = o, .path = path, .labpath = labpath, .labtab = &lt };
	int32_t labels[4096];
	int64_t n = 0;
	if (!sn_source_open(&s) && s.recbytes) {
		unsigned char *rec = malloc(s.recbytes);
		int32_t y;
		while (rec && n < 1 << 20 && sn_source_next(&s, rec, &y) == 1)
			if (n < 4096)
				labels[n++] = y;
		free(rec);
		int natural;
		char *names = NULL;
		const char *errfile;
		if (o->format == SN_INPUT_CSV &&
		    !sn_labtab_finish(&lt, o->classes, labels, n < 4096 ? n : 4096, &natural, &names, &errfile))
			free(names);
	}
	sn_source_close(&s);
	sn_labtab_free(&lt);
}

#endif
