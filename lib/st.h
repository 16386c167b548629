/* st.h: safetensors files: read (validated, mmap/gzip/stdin), build, write
 * (atomic), with the sn crc32 convention.  The format is in sn-formats(5).
 *
 * Layout: 8-byte little-endian header length N, N bytes of JSON header, then
 * the data section.  Our writer pads the header with spaces so the data
 * section starts at a multiple of 8, stores tensors contiguously in insertion
 * order, and puts the crc32 (zlib, of the whole data section, as 8 lowercase
 * hex digits) into __metadata__["crc32"]. */
#ifndef SN_ST_H
#define SN_ST_H

#include <stddef.h>
#include <stdint.h>

#include "atomic.h"
#include "error.h"
#include "tensor.h"

/* Largest header we accept: a corrupt length must not make us allocate. */
#define SN_ST_MAX_HEADER (100u << 20)

typedef struct {
	char *key, *value;
} sn_meta;

typedef struct {
	sn_tensor *tensors;   /* in data-offset order when read from a file */
	int ntensors;
	sn_meta *meta;        /* __metadata__, in file order */
	int nmeta;

	/* private to st.c: the backing store of a file that was read */
	void *base;           /* mmap'd file or malloc'd buffer */
	size_t base_len;
	int base_mapped;
	uint64_t header_len;  /* N */
	int cap_tensors, cap_meta;
} sn_st;

enum {
	SN_ST_SKIP_CRC = 1 << 0,   /* do not check __metadata__["crc32"] */
	SN_ST_NO_MMAP = 1 << 1,    /* read into memory even for plain files */
};

/* An empty file to build and write. */
void sn_st_init(sn_st *st);

/* Read and fully validate PATH ("-" for stdin, "*.gz" through zlib) before
 * trusting anything: header length vs file size and SN_ST_MAX_HEADER, JSON
 * syntax (duplicate keys refused), dtype names, shape products, offsets in
 * bounds, contiguous, non-overlapping and covering the data section, and the
 * crc32 when the metadata carries one (unless SN_ST_SKIP_CRC).  Tensor data
 * are borrowed views into the mapping.  On failure *st is left empty and the
 * detail names what is wrong (not the path: callers prefix it). */
int sn_st_read(const char *path, sn_st *st, unsigned flags) SN_MUST_CHECK;

/* The same from a memory buffer (copied); used by tests and fuzzers. */
int sn_st_read_buffer(const void *buf, size_t len, sn_st *st, unsigned flags) SN_MUST_CHECK;

void sn_st_free(sn_st *st);

/* crc32 of the data section as stored in the file (valid after read). */
uint32_t sn_st_data_crc(const sn_st *st);

sn_tensor *sn_st_find(const sn_st *st, const char *name);
const char *sn_st_meta(const sn_st *st, const char *key);   /* NULL if absent */

/* Add or replace a metadata entry (both strings copied). */
int sn_st_set_meta(sn_st *st, const char *key, const char *value) SN_MUST_CHECK;

/* Append a tensor.  With copy=1 the data are copied and owned; with copy=0
 * they are borrowed and must outlive the write. */
int sn_st_add(sn_st *st, const char *name, sn_dtype dtype, int ndim,
	      const int64_t *shape, const void *data, int copy) SN_MUST_CHECK;

/* Write atomically: PATH.tmpXXXXXX in the same directory, fsync, rename
 * ("-" writes to stdout; "*.gz" is gzip'd).  crc32 is computed over the data
 * section and stored in the metadata (any "crc32" entry in st is replaced in
 * the output, st itself is not changed).  On failure nothing exists at PATH
 * that was not there before and the temporary file is removed. */
int sn_st_write(const sn_st *st, const char *path) SN_MUST_CHECK;

/* Files that belong together (weights and their solver state): st[i] to
 * paths[i], all or none, as sn_atomic_publish (atomic.h).  Every temporary is
 * created before anything is written; the last path is renamed last, so its
 * presence means the set is complete.  On failure every path holds what it
 * held before and *failed is the index of the path the error is about. */
#define SN_ST_MAX_SET 8
int sn_st_write_all(const sn_st *const *st, const char *const *paths, int n,
		    int *failed) SN_MUST_CHECK;

#endif
