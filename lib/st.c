#include "st.h"

#include "crc32.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "gz.h"

/* ---------------------------------------------------------------- building */

void sn_st_init(sn_st *st)
{
	memset(st, 0, sizeof *st);
}

void sn_st_free(sn_st *st)
{
	for (int i = 0; i < st->ntensors; i++) {
		free(st->tensors[i].name);
		if (st->tensors[i].owned)
			free(st->tensors[i].data);
	}
	for (int i = 0; i < st->nmeta; i++) {
		free(st->meta[i].key);
		free(st->meta[i].value);
	}
	free(st->tensors);
	free(st->meta);
	if (st->base_mapped)
		munmap(st->base, st->base_len);
	else
		free(st->base);
	sn_st_init(st);
}

sn_tensor *sn_st_find(const sn_st *st, const char *name)
{
	for (int i = 0; i < st->ntensors; i++)
		if (strcmp(st->tensors[i].name, name) == 0)
			return &st->tensors[i];
	return NULL;
}

const char *sn_st_meta(const sn_st *st, const char *key)
{
	for (int i = 0; i < st->nmeta; i++)
		if (strcmp(st->meta[i].key, key) == 0)
			return st->meta[i].value;
	return NULL;
}

/* Grow an array of `size`-byte items so that one more fits. */
static int grow(void **items, int n, int *cap, size_t size)
{
	if (n < *cap)
		return 0;
	if (*cap > (1 << 28))
		return sn_fail(SN_ENOMEM, "too many entries");
	int ncap = *cap ? *cap * 2 : 8;
	void *p = realloc(*items, (size_t)ncap * size);
	if (!p)
		return sn_fail(SN_ENOMEM, "out of memory");
	*items = p;
	*cap = ncap;
	return 0;
}

int sn_st_set_meta(sn_st *st, const char *key, const char *value)
{
	char *v = strdup(value);
	if (!v)
		return sn_fail(SN_ENOMEM, "out of memory");
	for (int i = 0; i < st->nmeta; i++)
		if (strcmp(st->meta[i].key, key) == 0) {
			free(st->meta[i].value);
			st->meta[i].value = v;
			return 0;
		}
	char *k = strdup(key);
	void *items = st->meta;
	int err = k ? grow(&items, st->nmeta, &st->cap_meta, sizeof *st->meta)
		    : sn_fail(SN_ENOMEM, "out of memory");
	st->meta = items;
	if (err) {
		free(k);
		free(v);
		return err;
	}
	st->meta[st->nmeta++] = (sn_meta){k, v};
	return 0;
}

int sn_st_add(sn_st *st, const char *name, sn_dtype dtype, int ndim,
	      const int64_t *shape, const void *data, int copy)
{
	if ((unsigned)dtype >= SN_DTYPE_COUNT)
		return sn_fail(SN_EINVAL, "tensor \"%s\": bad dtype %d", name, (int)dtype);
	if (ndim < 0 || ndim > SN_MAX_DIMS)
		return sn_fail(SN_EINVAL, "tensor \"%s\": %d dimensions (at most %d)", name, ndim,
			       SN_MAX_DIMS);
	if (strcmp(name, "__metadata__") == 0 || sn_st_find(st, name))
		return sn_fail(SN_EINVAL, "tensor name \"%s\" is reserved or already used", name);
	int64_t n = sn_shape_numel(ndim, shape);
	size_t esize = sn_dtype_size(dtype);
	if (n < 0 || (uint64_t)n > SIZE_MAX / 2 / esize)
		return sn_fail(SN_EINVAL, "tensor \"%s\": shape too large", name);
	size_t nbytes = (size_t)n * esize;
	if (nbytes && !data)
		return sn_fail(SN_EINVAL, "tensor \"%s\": no data", name);

	sn_tensor t = {.dtype = dtype, .ndim = ndim, .nbytes = nbytes, .owned = copy};
	if (ndim)
		memcpy(t.shape, shape, (size_t)ndim * sizeof *shape);
	t.name = strdup(name);
	if (copy && nbytes) {
		t.data = malloc(nbytes);
		if (t.data)
			memcpy(t.data, data, nbytes);
	} else {
		t.data = (void *)data;
		t.owned = 0;
	}
	void *items = st->tensors;
	int err = (!t.name || (copy && nbytes && !t.data))
			  ? sn_fail(SN_ENOMEM, "out of memory")
			  : grow(&items, st->ntensors, &st->cap_tensors, sizeof *st->tensors);
	st->tensors = items;
	if (err) {
		free(t.name);
		if (t.owned)
			free(t.data);
		return err;
	}
	st->tensors[st->ntensors++] = t;
	return 0;
}

/* ---------------------------------------------------------------- header parsing */

static uint64_t load_le64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static void store_le64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++, v >>= 8)
		p[i] = (unsigned char)v;
}

/* Where each tensor lies, kept apart from sn_tensor until everything is
 * validated. */
typedef struct {
	uint64_t begin, end;
	int index;
} span;

static int parse_shape(const char *name, json_t *js, sn_tensor *t)
{
	if (!json_is_array(js))
		return sn_fail(SN_EFORMAT, "tensor \"%s\": shape is not an array", name);
	size_t nd = json_array_size(js);
	if (nd > SN_MAX_DIMS)
		return sn_fail(SN_EFORMAT, "tensor \"%s\": %zu dimensions (at most %d)", name, nd,
			       SN_MAX_DIMS);
	t->ndim = (int)nd;
	for (size_t i = 0; i < nd; i++) {
		json_t *d = json_array_get(js, i);
		if (!json_is_integer(d) || json_integer_value(d) < 0)
			return sn_fail(SN_EFORMAT,
				       "tensor \"%s\": shape entry %zu is not a non-negative integer",
				       name, i);
		t->shape[i] = json_integer_value(d);
	}
	return 0;
}

static int parse_offsets(const char *name, json_t *js, span *s)
{
	if (!json_is_array(js) || json_array_size(js) != 2)
		return sn_fail(SN_EFORMAT, "tensor \"%s\": data_offsets is not [begin, end]", name);
	json_t *b = json_array_get(js, 0), *e = json_array_get(js, 1);
	if (!json_is_integer(b) || !json_is_integer(e) || json_integer_value(b) < 0 ||
	    json_integer_value(e) < 0)
		return sn_fail(SN_EFORMAT,
			       "tensor \"%s\": data_offsets are not non-negative integers", name);
	s->begin = (uint64_t)json_integer_value(b);
	s->end = (uint64_t)json_integer_value(e);
	if (s->end < s->begin)
		return sn_fail(SN_EFORMAT, "tensor \"%s\": data_offsets [%llu, %llu] end before they begin",
			       name, (unsigned long long)s->begin, (unsigned long long)s->end);
	return 0;
}

static int parse_entry(const char *name, json_t *js, sn_tensor *t, span *s)
{
	if (!json_is_object(js))
		return sn_fail(SN_EFORMAT, "tensor \"%s\": entry is not an object", name);
	json_t *dt = json_object_get(js, "dtype"), *shape = json_object_get(js, "shape");
	json_t *off = json_object_get(js, "data_offsets");
	if (!dt || !shape || !off || json_object_size(js) != 3)
		return sn_fail(SN_EFORMAT,
			       "tensor \"%s\": entry must have exactly dtype, shape and data_offsets",
			       name);
	if (!json_is_string(dt))
		return sn_fail(SN_EFORMAT, "tensor \"%s\": dtype is not a string", name);
	if (sn_dtype_parse(json_string_value(dt), &t->dtype))
		return sn_fail(SN_EFORMAT, "tensor \"%s\": unknown dtype \"%.40s\"", name,
			       json_string_value(dt));
	int err = parse_shape(name, shape, t);
	if (err || (err = parse_offsets(name, off, s)))
		return err;
	int64_t n = sn_shape_numel(t->ndim, t->shape);
	size_t esize = sn_dtype_size(t->dtype);
	if (n < 0 || (uint64_t)n > (uint64_t)INT64_MAX / esize)
		return sn_fail(SN_EFORMAT, "tensor \"%s\": shape element count overflows", name);
	if (s->end - s->begin != (uint64_t)n * esize)
		return sn_fail(SN_EFORMAT,
			       "tensor \"%s\": data_offsets span %llu bytes, its dtype and shape need %llu",
			       name, (unsigned long long)(s->end - s->begin),
			       (unsigned long long)n * esize);
	t->nbytes = (size_t)(s->end - s->begin);
	return 0;
}

static int parse_metadata(sn_st *st, json_t *js)
{
	const char *key;
	json_t *v;
	if (!json_is_object(js))
		return sn_fail(SN_EFORMAT, "__metadata__ is not an object");
	json_object_foreach(js, key, v) {
		if (!json_is_string(v))
			return sn_fail(SN_EFORMAT, "__metadata__ value of \"%.60s\" is not a string",
				       key);
		int err = sn_st_set_meta(st, key, json_string_value(v));
		if (err)
			return err;
	}
	return 0;
}

static int span_cmp(const void *a, const void *b)
{
	const span *x = a, *y = b;
	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	if (x->end != y->end)
		return x->end < y->end ? -1 : 1;
	return x->index - y->index;
}

/* The spans sorted by offset must tile [0, total) with no gap or overlap. */
static int check_tiling(const sn_st *st, span *spans, int n, uint64_t *total)
{
	qsort(spans, (size_t)n, sizeof *spans, span_cmp);
	uint64_t at = 0;
	for (int i = 0; i < n; i++) {
		const char *name = st->tensors[spans[i].index].name;
		if (spans[i].begin < at)
			return sn_fail(SN_EFORMAT, "tensor \"%s\": data_offsets overlap the previous tensor",
				       name);
		if (spans[i].begin > at)
			return sn_fail(SN_EFORMAT,
				       "tensor \"%s\": gap of %llu bytes before its data_offsets", name,
				       (unsigned long long)(spans[i].begin - at));
		at = spans[i].end;
	}
	*total = at;
	return 0;
}

/* Put the tensors in data-offset order, as sn_st promises. */
static int reorder(sn_st *st, const span *spans, int n)
{
	sn_tensor *sorted = malloc((size_t)(n ? n : 1) * sizeof *sorted);
	if (!sorted)
		return sn_fail(SN_ENOMEM, "out of memory");
	for (int i = 0; i < n; i++)
		sorted[i] = st->tensors[spans[i].index];
	memcpy(st->tensors, sorted, (size_t)n * sizeof *sorted);
	free(sorted);
	return 0;
}

static int parse_tensors(sn_st *st, json_t *root, span **spans_out)
{
	size_t n = json_object_size(root) - (json_object_get(root, "__metadata__") ? 1 : 0);
	span *spans = calloc(n ? n : 1, sizeof *spans);
	st->tensors = calloc(n ? n : 1, sizeof *st->tensors);
	if (!spans || !st->tensors) {
		free(spans);
		return sn_fail(SN_ENOMEM, "out of memory");
	}
	st->cap_tensors = (int)(n ? n : 1);
	const char *key;
	json_t *v;
	json_object_foreach(root, key, v) {
		if (strcmp(key, "__metadata__") == 0)
			continue;
		sn_tensor *t = &st->tensors[st->ntensors];
		if (!(t->name = strdup(key))) {
			free(spans);
			return sn_fail(SN_ENOMEM, "out of memory");
		}
		st->ntensors++;
		spans[st->ntensors - 1].index = st->ntensors - 1;
		int err = parse_entry(key, v, t, &spans[st->ntensors - 1]);
		if (err) {
			free(spans);
			return err;
		}
	}
	*spans_out = spans;
	return 0;
}

/* Parse and validate the JSON header into st (tensors without data yet):
 * *spans gets their offsets in data order, *data_len the size of the data
 * section they declare. */
static int parse_header(sn_st *st, const char *hdr, size_t len, span **spans, uint64_t *data_len)
{
	json_error_t jerr;
	json_t *root = json_loadb(hdr, len, JSON_REJECT_DUPLICATES, &jerr);
	int err;
	*spans = NULL;
	if (!root)
		return sn_fail(SN_EFORMAT, "header JSON, byte %d: %s", jerr.position, jerr.text);
	if (!json_is_object(root)) {
		err = sn_fail(SN_EFORMAT, "header JSON is not an object");
		goto out;
	}
	json_t *meta = json_object_get(root, "__metadata__");
	if (meta && (err = parse_metadata(st, meta)))
		goto out;
	if ((err = parse_tensors(st, root, spans)))
		goto out;
	if ((err = check_tiling(st, *spans, st->ntensors, data_len)) ||
	    (err = reorder(st, *spans, st->ntensors))) {
		free(*spans);
		*spans = NULL;
	}
out:
	json_decref(root);
	return err;
}

static uint32_t crc_of(const unsigned char *p, size_t len)
{
	return sn_crc32(0, p, len);
}

static int check_crc(const sn_st *st, unsigned flags)
{
	const char *want = sn_st_meta(st, "crc32");
	if (!want)
		return 0;
	int ok = strlen(want) == 8;
	for (int i = 0; ok && i < 8; i++)
		ok = (want[i] >= '0' && want[i] <= '9') || (want[i] >= 'a' && want[i] <= 'f');
	if (!ok)
		return sn_fail(SN_EFORMAT, "metadata crc32 \"%.20s\" is not 8 lowercase hex digits",
			       want);
	if (flags & SN_ST_SKIP_CRC)
		return 0;
	char have[9];
	snprintf(have, sizeof have, "%08x", (unsigned)sn_st_data_crc(st));
	if (strcmp(have, want) != 0)
		return sn_fail(SN_ECRC, "crc32 mismatch: metadata says %s, data section has %s", want,
			       have);
	return 0;
}

/* Validate the whole file held at st->base (already set) and point the
 * tensors into it. */
static int parse_file(sn_st *st, unsigned flags)
{
	const unsigned char *p = st->base;
	size_t len = st->base_len;
	if (len == 0)
		return sn_fail(SN_ETRUNC, "empty file");
	if (len < 8)
		return sn_fail(SN_ETRUNC, "truncated: %zu bytes, less than the 8-byte header length",
			       len);
	uint64_t n = load_le64(p);
	if (n > SN_ST_MAX_HEADER)
		return sn_fail(SN_EFORMAT, "header length %llu is over the %u-byte limit",
			       (unsigned long long)n, SN_ST_MAX_HEADER);
	if (n > len - 8)
		return sn_fail(SN_ETRUNC, "truncated in the header: header length %llu, file size %zu",
			       (unsigned long long)n, len);
	st->header_len = n;
	span *spans;
	uint64_t need;
	int err = parse_header(st, (const char *)p + 8, (size_t)n, &spans, &need);
	if (err)
		return err;
	size_t have = len - 8 - (size_t)n;
	if (need > have)
		err = sn_fail(SN_ETRUNC, "truncated in the data: %zu bytes, the tensors need %llu",
			      have, (unsigned long long)need);
	else if (need < have)
		err = sn_fail(SN_EFORMAT, "%llu bytes after the last tensor",
			      (unsigned long long)(have - need));
	for (int i = 0; !err && i < st->ntensors; i++)
		st->tensors[i].data = (unsigned char *)p + 8 + n + spans[i].begin;
	free(spans);
	return err ? err : check_crc(st, flags);
}

/* The crc32 of the data section a writer lays out from st's tensors. */
static uint32_t tensors_crc(const sn_st *st)
{
	uLong crc = crc32(0L, Z_NULL, 0);
	for (int i = 0; i < st->ntensors; i++)
		crc = crc32_combine(crc, crc_of(st->tensors[i].data, st->tensors[i].nbytes),
				    (z_off_t)st->tensors[i].nbytes);
	return (uint32_t)crc;
}

uint32_t sn_st_data_crc(const sn_st *st)
{
	if (!st->base)
		return tensors_crc(st);
	size_t off = 8 + (size_t)st->header_len;
	return crc_of((const unsigned char *)st->base + off, st->base_len - off);
}

/* ---------------------------------------------------------------- reading */

typedef struct {
	int fd;          /* when gz is NULL */
	sn_gz *gz;       /* strict: a cut or padded gzip stream is an error */
} source;

/* Up to n bytes; 0 at the end; <0 with a detail on error. */
static ssize_t source_read(source *s, void *buf, size_t n)
{
	if (n > (1u << 30))
		n = 1u << 30;
	if (!s->gz) {
		ssize_t r;
		do
			r = read(s->fd, buf, n);
		while (r < 0 && errno == EINTR);
		return r < 0 ? sn_fail(SN_EIO, "read failed: %s", strerror(errno)) : r;
	}
	return sn_gz_read(s->gz, buf, n);
}

/* How many bytes the stream should hold in all, once its header is in:
 * reading stops there, so a corrupt or hostile stream cannot make us buffer
 * more than it declares (nor more than it really delivers).  Returns 1 with
 * *limit set, 0 while the header is incomplete, -1 for a bad header (which
 * parse_file then reports). */
static int declared_size(const unsigned char *buf, size_t len, size_t *limit)
{
	uint64_t n = load_le64(buf);
	if (n > SN_ST_MAX_HEADER)
		return -1;
	if (len < 8 + n)
		return 0;
	sn_st tmp;
	span *spans;
	uint64_t need;
	sn_st_init(&tmp);
	int err = parse_header(&tmp, (const char *)buf + 8, (size_t)n, &spans, &need);
	free(spans);
	sn_st_free(&tmp);
	if (err)
		return -1;
	*limit = (size_t)(8 + n + need);
	return 1;
}

/* A stream is held in memory whole: one that declares more than the
 * machine has is refused up front rather than left to the OOM killer. */
static size_t memory_size(void)
{
	long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
	if (pages <= 0 || page <= 0 || (unsigned long)pages > SIZE_MAX / (unsigned long)page)
		return SIZE_MAX;
	return (size_t)pages * (size_t)page;
}

static int grow_buffer(unsigned char **buf, size_t *cap, size_t limit)
{
	size_t ncap = *cap > limit / 2 ? limit + 1 : *cap * 2;
	unsigned char *nb = ncap > *cap ? realloc(*buf, ncap) : NULL;
	if (!nb)
		return sn_fail(SN_ENOMEM, "out of memory reading %zu bytes", ncap);
	*buf = nb;
	*cap = ncap;
	return 0;
}

static int read_stream(source *s, sn_st *st)
{
	size_t cap = 1 << 16, len = 0, limit = SIZE_MAX - 1;
	unsigned char *buf = malloc(cap);
	int known = 0, err = 0;
	if (!buf)
		return sn_fail(SN_ENOMEM, "out of memory");
	for (;;) {
		if (len == cap && (err = grow_buffer(&buf, &cap, limit)))
			break;
		ssize_t r = source_read(s, buf + len, cap - len);
		if (r <= 0) {
			err = (int)r;
			break;
		}
		len += (size_t)r;
		if (!known && len >= 8 && (known = declared_size(buf, len, &limit)) < 0)
			break;
		if (known == 1 && limit > memory_size()) {
			err = sn_fail(SN_ENOMEM, "the header declares %zu bytes, more than this "
				      "machine's memory", limit);
			break;
		}
		if (len > limit) {
			err = sn_fail(SN_EFORMAT, "data continues after the last tensor");
			break;
		}
	}
	st->base = buf;
	st->base_len = len;
	return err;
}

static int read_gz(const char *path, sn_st *st)
{
	source s = {.fd = -1};
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return sn_fail(SN_EIO, "cannot open: %s", strerror(errno));
	struct stat sb;
	if (fstat(fd, &sb) == 0 && S_ISDIR(sb.st_mode)) {
		close(fd);
		return sn_fail(SN_EIO, "is a directory");
	}
	int err = sn_gz_open(fd, &s.gz);
	if (err)
		return err;
	err = read_stream(&s, st);
	sn_gz_close(s.gz);
	return err;
}

static int read_into_memory(int fd, size_t size, sn_st *st)
{
	unsigned char *buf = malloc(size);
	if (!buf)
		return sn_fail(SN_ENOMEM, "out of memory for %zu bytes", size);
	st->base = buf;
	size_t at = 0;
	while (at < size) {
		ssize_t r = pread(fd, buf + at, size - at, (off_t)at);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return sn_fail(SN_EIO, "read failed: %s", strerror(errno));
		if (r == 0)
			break;	/* shrank under us: parse_file sees it as truncated */
		at += (size_t)r;
	}
	st->base_len = at;
	return 0;
}

static int read_plain(const char *path, sn_st *st, unsigned flags)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC), err = 0;
	struct stat sb;
	if (fd < 0)
		return sn_fail(SN_EIO, "cannot open: %s", strerror(errno));
	if (fstat(fd, &sb) < 0) {
		err = sn_fail(SN_EIO, "cannot stat: %s", strerror(errno));
		goto out;
	}
	if (S_ISDIR(sb.st_mode)) {
		err = sn_fail(SN_EIO, "is a directory");
		goto out;
	}
	if (!S_ISREG(sb.st_mode)) {	/* a pipe or device: read it as a stream */
		source s = {.fd = fd};
		err = read_stream(&s, st);
		goto out;
	}
	if (sb.st_size == 0)
		goto out;	/* parse_file names it an empty file */
	if ((uint64_t)sb.st_size > SIZE_MAX / 2) {
		err = sn_fail(SN_EIO, "file too large");
		goto out;
	}
	if (flags & SN_ST_NO_MMAP) {
		err = read_into_memory(fd, (size_t)sb.st_size, st);
		goto out;
	}
	void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (m == MAP_FAILED) {
		err = sn_fail(SN_EIO, "cannot map: %s", strerror(errno));
		goto out;
	}
	st->base = m;
	st->base_len = (size_t)sb.st_size;
	st->base_mapped = 1;
out:
	close(fd);
	return err;
}

static int has_suffix(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);
	return n >= m && strcmp(s + n - m, suffix) == 0;
}

int sn_st_read(const char *path, sn_st *st, unsigned flags)
{
	int err;
	sn_st_init(st);
	if (strcmp(path, "-") == 0) {
		source s = {.fd = STDIN_FILENO};
		err = read_stream(&s, st);
	} else if (has_suffix(path, ".gz")) {
		err = read_gz(path, st);
	} else {
		err = read_plain(path, st, flags);
	}
	if (!err)
		err = parse_file(st, flags);
	if (err)
		sn_st_free(st);
	return err;
}

int sn_st_read_buffer(const void *buf, size_t len, sn_st *st, unsigned flags)
{
	sn_st_init(st);
	st->base = malloc(len ? len : 1);
	if (!st->base)
		return sn_fail(SN_ENOMEM, "out of memory");
	if (len)
		memcpy(st->base, buf, len);
	st->base_len = len;
	int err = parse_file(st, flags);
	if (err)
		sn_st_free(st);
	return err;
}

/* ---------------------------------------------------------------- writing */

static json_t *tensor_entry(const sn_tensor *t, uint64_t begin)
{
	json_t *shape = json_array(), *e = json_object();
	int bad = !shape || !e;
	for (int d = 0; !bad && d < t->ndim; d++)
		bad = json_array_append_new(shape, json_integer(t->shape[d])) != 0;
	bad = bad || json_object_set_new(e, "dtype", json_string(sn_dtype_name(t->dtype))) ||
	      json_object_set(e, "shape", shape) ||
	      json_object_set_new(e, "data_offsets",
				  json_pack("[II]", (json_int_t)begin,
					    (json_int_t)(begin + t->nbytes)));
	json_decref(shape);
	if (bad) {
		json_decref(e);
		return NULL;
	}
	return e;
}

static int build_metadata(const sn_st *st, json_t *root)
{
	json_t *meta = json_object();
	char crc[9];
	/* from the tensors, not a read file's section: st may have changed */
	snprintf(crc, sizeof crc, "%08x", (unsigned)tensors_crc(st));
	if (!meta || json_object_set_new(root, "__metadata__", meta))
		return sn_fail(SN_ENOMEM, "out of memory");
	for (int i = 0; i < st->nmeta; i++) {
		const char *v = strcmp(st->meta[i].key, "crc32") ? st->meta[i].value : crc;
		json_t *s = json_string(v);
		if (!s)
			return sn_fail(SN_EINVAL, "metadata \"%.60s\" is not valid UTF-8",
				       st->meta[i].key);
		if (json_object_set_new(meta, st->meta[i].key, s))
			return sn_fail(SN_EINVAL, "metadata key \"%.60s\" is not valid UTF-8",
				       st->meta[i].key);
	}
	if (!sn_st_meta(st, "crc32") && json_object_set_new(meta, "crc32", json_string(crc)))
		return sn_fail(SN_ENOMEM, "out of memory");
	return 0;
}

/* The 8-byte length and the JSON, padded with spaces to a multiple of 8. */
static int build_header(const sn_st *st, char **out, size_t *out_len)
{
	json_t *root = json_object();
	char *text = NULL;
	int err = root ? build_metadata(st, root) : sn_fail(SN_ENOMEM, "out of memory");
	uint64_t at = 0;
	for (int i = 0; !err && i < st->ntensors; i++) {
		json_t *e = tensor_entry(&st->tensors[i], at);
		if (!e || json_object_set_new(root, st->tensors[i].name, e))
			err = sn_fail(SN_EINVAL, "tensor \"%.60s\": cannot describe it in JSON",
				      st->tensors[i].name);
		at += st->tensors[i].nbytes;
	}
	if (!err && !(text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER)))
		err = sn_fail(SN_ENOMEM, "out of memory");
	json_decref(root);
	if (err)
		return err;
	size_t n = strlen(text), padded = (n + 7) & ~(size_t)7;
	if (padded > SN_ST_MAX_HEADER) {
		free(text);
		return sn_fail(SN_EINVAL, "header of %zu bytes is over the limit", padded);
	}
	char *buf = malloc(8 + padded);
	if (!buf) {
		free(text);
		return sn_fail(SN_ENOMEM, "out of memory");
	}
	store_le64((unsigned char *)buf, padded);
	memcpy(buf + 8, text, n);
	memset(buf + 8 + n, ' ', padded - n);
	free(text);
	*out = buf;
	*out_len = 8 + padded;
	return 0;
}

typedef struct {
	int fd;
	gzFile gz;
} sink;

static int sink_write(sink *s, const void *buf, size_t len)
{
	if (!s->gz)
		return sn_write_all(s->fd, buf, len);
	const char *p = buf;
	while (len) {
		unsigned n = len > (1u << 30) ? (1u << 30) : (unsigned)len;
		if (gzwrite(s->gz, p, n) != (int)n) {
			int zerr;
			const char *msg = gzerror(s->gz, &zerr);
			return sn_fail(SN_EIO, "write failed: %s",
				       zerr == Z_ERRNO ? strerror(errno) : msg);
		}
		p += n;
		len -= n;
	}
	return 0;
}

static int write_body(const sn_st *st, const char *hdr, size_t hlen, sink *s)
{
	int err = sink_write(s, hdr, hlen);
	for (int i = 0; !err && i < st->ntensors; i++)
		err = sink_write(s, st->tensors[i].data, st->tensors[i].nbytes);
	return err;
}

static int write_gz(const sn_st *st, const char *hdr, size_t hlen, int fd)
{
	int fd2 = dup(fd);
	if (fd2 < 0)
		return sn_fail(SN_EIO, "dup failed: %s", strerror(errno));
	sink s = {.fd = -1, .gz = gzdopen(fd2, "wb6")};
	if (!s.gz) {
		close(fd2);
		return sn_fail(SN_ENOMEM, "cannot start gzip compression");
	}
	int err = write_body(st, hdr, hlen, &s);
	int zerr = gzclose_w(s.gz);
	if (!err && zerr != Z_OK)
		err = sn_fail(SN_EIO, "write failed: %s",
			      zerr == Z_ERRNO ? strerror(errno) : "gzip error");
	return err;
}

/* Everything but the commit: a is open (see sn_st_write_all). */
static int write_staged(const sn_st *st, sn_atomic *a)
{
	char *hdr = NULL;
	size_t hlen = 0;
	int err = build_header(st, &hdr, &hlen);
	if (err)
		return err;
	if (a->tmp && has_suffix(a->path, ".gz")) {
		err = write_gz(st, hdr, hlen, a->fd);
	} else {
		sink s = {.fd = a->fd};
		err = write_body(st, hdr, hlen, &s);
	}
	free(hdr);
	return err;
}

int sn_st_write_all(const sn_st *const *st, const char *const *paths, int n, int *failed)
{
	sn_atomic a[SN_ST_MAX_SET];
	int err = 0, i, opened = 0;
	*failed = 0;
	if (n > SN_ST_MAX_SET)
		return sn_fail(SN_EINVAL, "more than %d outputs in one set", SN_ST_MAX_SET);
	/* every temporary first: a missing directory fails before any write */
	for (i = 0; i < n && !err; i++, opened++)
		if ((err = sn_atomic_open(&a[i], paths[i])))
			*failed = i;
	for (i = 0; i < opened && !err; i++)
		if ((err = write_staged(st[i], &a[i])))
			*failed = i;
	if (err) {
		for (i = 0; i < opened; i++)
			sn_atomic_abort(&a[i]);
		return err;
	}
	return sn_atomic_publish(a, n, failed);
}

int sn_st_write(const sn_st *st, const char *path)
{
	int failed;
	return sn_st_write_all(&st, &path, 1, &failed);
}
