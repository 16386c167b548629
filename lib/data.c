/* data.c: sn.data.v1 files (open, validate, gather normalised batches) and
 * the shard writer behind sn-shard: readers for IDX, CIFAR, CSV/TSV and sn
 * data files, a spool, the split, and all-or-nothing output. */
#include "data.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "rng.h"

/* ---- sn.data.v1 files ------------------------------------------------- */

static int64_t shape_elems(const sn_shape *s)
{
	int64_t n = 1;
	for (int i = 0; i < s->ndim; i++)
		n *= s->d[i];
	return n;
}

static int parse_count(const char *s, long max, long *out)
{
	if (!s || !isdigit((unsigned char)s[0]))
		return -1;
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || *end || v > max)
		return -1;
	*out = v;
	return 0;
}

/* A metadata JSON array of n finite numbers, n one of the allowed lengths. */
static int parse_stat_array(const char *key, const char *s, int len_a, int len_b,
			    float *out, int *n)
{
	if (!s)
		return sn_fail(SN_EFORMAT, "metadata has no \"%s\"", key);
	json_error_t jerr;
	json_t *a = json_loads(s, 0, &jerr);
	int rc = 0;
	if (!a || !json_is_array(a)) {
		rc = sn_fail(SN_EFORMAT, "metadata \"%s\" is not a JSON array", key);
		goto out;
	}
	size_t len = json_array_size(a);
	if ((int)len != len_a && (int)len != len_b) {
		rc = len_a == len_b
			? sn_fail(SN_EFORMAT, "metadata \"%s\" has %zu entries, expected %d",
				  key, len, len_a)
			: sn_fail(SN_EFORMAT, "metadata \"%s\" has %zu entries, expected %d or %d",
				  key, len, len_a, len_b);
		goto out;
	}
	for (size_t i = 0; i < len; i++) {
		json_t *v = json_array_get(a, i);
		double x = json_is_number(v) ? json_number_value(v) : NAN;
		if (!isfinite(x) || !isfinite((float)x)) {
			rc = sn_fail(SN_EFORMAT, "metadata \"%s\"[%zu] is not a finite number", key, i);
			goto out;
		}
		if (out)
			out[i] = (float)x;
	}
	*n = (int)len;
out:
	json_decref(a);
	return rc;
}

/* Label i of y (U8 or I32).  Files from other writers need not align
 * their tensors, hence memcpy rather than a cast. */
static int32_t label_at(const sn_tensor *y, int64_t i)
{
	if (y->dtype == SN_U8)
		return ((const uint8_t *)y->data)[i];
	int32_t v;
	memcpy(&v, (const char *)y->data + 4 * i, 4);
	return v;
}

static int check_labels(const sn_tensor *y, int classes)
{
	int64_t n = y->shape[0];
	for (int64_t i = 0; i < n; i++) {
		int64_t v = label_at(y, i);
		if (v < 0 || v >= classes)
			return sn_fail(SN_EFORMAT, "label %lld of record %lld outside [0,%d)",
				       (long long)v, (long long)i, classes);
	}
	return 0;
}

static int check_tensors(sn_data *d)
{
	const sn_tensor *x = d->x = sn_st_find(&d->st, "x");
	const sn_tensor *y = d->y = sn_st_find(&d->st, "y");
	if (!x || !y)
		return sn_fail(SN_EFORMAT, "no tensor \"%s\"", x ? "y" : "x");
	if (x->dtype != SN_U8 && x->dtype != SN_F32)
		return sn_fail(SN_EUNSUPPORTED, "x has dtype %s, expected U8 or F32",
			       sn_dtype_name(x->dtype));
	if (x->ndim != 2 && x->ndim != 4)
		return sn_fail(SN_EFORMAT, "x has %d dimensions, expected [N,C,H,W] or [N,D]", x->ndim);
	if (y->dtype != SN_I32 && y->dtype != SN_U8)
		return sn_fail(SN_EUNSUPPORTED, "y has dtype %s, expected I32 or U8",
			       sn_dtype_name(y->dtype));
	if (y->ndim != 1 || y->shape[0] != x->shape[0])
		return sn_fail(SN_EFORMAT, "y must have shape [%lld] to match x",
			       (long long)x->shape[0]);
	if (x->shape[0] < 1)
		return sn_fail(SN_EFORMAT, "no records");
	d->n = x->shape[0];
	d->shape.ndim = x->ndim - 1;
	for (int i = 1; i < x->ndim; i++) {
		if (x->shape[i] < 1)
			return sn_fail(SN_EFORMAT, "x has an empty dimension");
		d->shape.d[i - 1] = x->shape[i];
	}
	return 0;
}

/* The block behind d->mean holds mean, std, then the per-stat scale and
 * offset that turn a raw value into its normalised one in one multiply-add. */
static int load_stats(sn_data *d)
{
	int c = d->shape.ndim == 3 ? (int)d->shape.d[0] : 1;
	int dd = d->shape.ndim == 3 ? c : (int)d->shape.d[0];
	if (d->shape.ndim == 3 && c > SN_DATA_MAX_CHANNELS)
		return sn_fail(SN_EUNSUPPORTED, "%d channels (at most %d)", c, SN_DATA_MAX_CHANNELS);
	if (dd > SN_DATA_MAX_CHANNELS)
		dd = c;
	int nm = 0, ns = 0;
	const char *ms = sn_st_meta(&d->st, "mean"), *ss = sn_st_meta(&d->st, "std");
	int rc = parse_stat_array("mean", ms, c, dd, NULL, &nm);
	if (!rc)
		rc = parse_stat_array("std", ss, nm, nm, NULL, &ns);
	if (rc)
		return rc;
	float *b = malloc(4 * (size_t)nm * sizeof *b);
	if (!b)
		return sn_fail(SN_ENOMEM, "out of memory");
	d->mean = b;
	d->std = b + nm;
	d->nstats = nm;
	if (parse_stat_array("mean", ms, nm, nm, d->mean, &nm) ||
	    parse_stat_array("std", ss, nm, nm, d->std, &ns))
		return sn_fail(SN_EFORMAT, "bad mean/std");
	float unit = d->x->dtype == SN_U8 ? 1.0f / 255.0f : 1.0f;
	for (int i = 0; i < nm; i++) {
		if (!(d->std[i] > 0))
			return sn_fail(SN_EFORMAT, "metadata \"std\"[%d] is not positive", i);
		b[2 * nm + i] = unit / d->std[i];
		b[3 * nm + i] = -d->mean[i] / d->std[i];
	}
	return 0;
}

static int data_validate(sn_data *d)
{
	const char *fmt = sn_st_meta(&d->st, "format");
	if (!fmt || strcmp(fmt, "sn.data.v1"))
		return sn_fail(SN_EFORMAT, "format is \"%s\", expected \"sn.data.v1\"",
			       fmt ? fmt : "(none)");
	int rc = check_tensors(d);
	if (rc)
		return rc;
	long classes;
	if (parse_count(sn_st_meta(&d->st, "classes"), SN_DATA_MAX_CLASSES, &classes) || classes < 1)
		return sn_fail(SN_EFORMAT, "metadata \"classes\" is not a count in 1..%d",
			       SN_DATA_MAX_CLASSES);
	d->classes = (int)classes;
	rc = check_labels(d->y, d->classes);
	return rc ? rc : load_stats(d);
}

int sn_data_open(const char *path, sn_data *d)
{
	memset(d, 0, sizeof *d);
	int rc = sn_st_read(path, &d->st, 0);
	if (rc)
		return rc;
	rc = data_validate(d);
	if (rc)
		sn_data_close(d);
	return rc;
}

void sn_data_close(sn_data *d)
{
	sn_st_free(&d->st);
	free(d->mean);
	memset(d, 0, sizeof *d);
}

/* Blocks of 16 so that -O2 (no loop vectoriser) still makes SIMD of it;
 * restrict because u8 may alias anything. */
static void normalise_u8(float *restrict out, const uint8_t *restrict in, int64_t n, float s, float o)
{
	int64_t j = 0;
	for (; j + 16 <= n; j += 16)
		for (int k = 0; k < 16; k++)
			out[j + k] = (float)in[j + k] * s + o;
	for (; j < n; j++)
		out[j] = (float)in[j] * s + o;
}

static void normalise_f32(float *v, int64_t n, float s, float o)
{
	int64_t j = 0;
	for (; j + 16 <= n; j += 16)
		for (int k = 0; k < 16; k++)
			v[j + k] = v[j + k] * s + o;
	for (; j < n; j++)
		v[j] = v[j] * s + o;
}

void sn_data_batch(const sn_data *d, const int64_t *idx, int B, float *x, int32_t *y)
{
	int64_t e = shape_elems(&d->shape);
	int g = d->nstats;
	int64_t len = e / g;     /* values per stat: H*W, or 1 or D for tables */
	const float *scale = d->mean + 2 * g, *offset = d->mean + 3 * g;
	for (int b = 0; b < B; b++) {
		float *out = x + (int64_t)b * e;
		if (d->x->dtype == SN_U8) {
			const uint8_t *in = (const uint8_t *)d->x->data + idx[b] * e;
			for (int c = 0; c < g; c++)
				normalise_u8(out + c * len, in + c * len, len, scale[c], offset[c]);
		} else {
			/* copied first: x of another writer may be misaligned */
			memcpy(out, (const char *)d->x->data + idx[b] * e * 4, (size_t)e * 4);
			for (int c = 0; c < g; c++)
				normalise_f32(out + c * len, len, scale[c], offset[c]);
		}
		y[b] = label_at(d->y, idx[b]);
	}
}

/* ---- Input streams: plain, gzip or stdin, with a look-ahead buffer ---- */

typedef struct {
	gzFile gz;
	unsigned char *buf;
	size_t cap, pos, len;
	int eof;
} instream;

#define IN_CHUNK (1u << 18)

static int in_open(instream *s, const char *path)
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
	s->gz = gzdopen(fd, "rb");
	s->buf = malloc(IN_CHUNK);
	if (!s->gz || !s->buf) {
		if (s->gz)
			gzclose(s->gz);
		else
			close(fd);
		free(s->buf);
		s->gz = NULL;
		s->buf = NULL;
		return sn_fail(SN_ENOMEM, "out of memory");
	}
	s->cap = IN_CHUNK;
	gzbuffer(s->gz, 1u << 17);
	return 0;
}

static void in_close(instream *s)
{
	if (s->gz)
		gzclose(s->gz);
	free(s->buf);
	memset(s, 0, sizeof *s);
}

/* Keep at least `want` bytes buffered (fewer only at the end of input). */
static int in_fill(instream *s, size_t want)
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
		size_t room = s->cap - s->len;
		int got = gzread(s->gz, s->buf + s->len, room > INT_MAX ? INT_MAX : (unsigned)room);
		if (got < 0) {
			int zerr;
			const char *msg = gzerror(s->gz, &zerr);
			return sn_fail(zerr == Z_BUF_ERROR ? SN_ETRUNC : SN_EIO, "%s",
				       zerr == Z_ERRNO ? strerror(errno) : msg);
		}
		if (got == 0) {
			int zerr;
			const char *msg = gzerror(s->gz, &zerr);
			if (zerr == Z_BUF_ERROR)
				return sn_fail(SN_ETRUNC, "truncated gzip stream (%s)", msg);
			s->eof = 1;
		}
		s->len += (size_t)got;
	}
	return 0;
}

/* Up to n bytes into dst; *got says how many (short only at the end). */
static int in_read(instream *s, void *dst, size_t n, size_t *got)
{
	*got = 0;
	while (*got < n) {
		size_t want = n - *got < s->cap ? n - *got : s->cap;
		int rc = in_fill(s, want);
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

/* The next line without its newline (and CR), NUL-terminated in the
 * buffer; 1 for a line, 0 at the end. */
static int in_line(instream *s, char **line, size_t *len)
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
		int rc = in_fill(s, have + (have < IN_CHUNK / 2 ? IN_CHUNK / 2 : have));
		if (rc)
			return rc;
	}
}

/* ---- The sources sn-shard reads --------------------------------------- */

typedef struct {
	const char *path, *labpath;
	const char *errpath;     /* the file the last failure is about */
	int kind;                /* SN_INPUT_* */
	instream in, lab;
	sn_dtype dt;
	sn_shape shape;
	size_t recbytes;
	int64_t n, done;         /* n: records declared by the file, -1 unknown */
	int classes;             /* the classes the file implies (max label + 1) */
	uint8_t *labels;         /* IDX: the whole label file */
	unsigned char *rec;      /* CIFAR: one raw record */
	int reclen, labskip;
	char delim;              /* CSV */
	int nfields, labcol;
	int64_t line;
	char **fields;
	int fieldcap;
	char *pending;           /* CSV: a first line that was data, not a header */
	sn_data d;               /* sn data file */
	int data_open;
} source;

/* Distinct CSV label strings, in order of first appearance; an open
 * addressing table maps a string to its provisional id. */
typedef struct {
	char **names;
	int64_t *value;          /* the label as a class id, or -1 if not one */
	int64_t *line;           /* where it first appeared, for messages */
	const char **file;
	int n, cap;
	int *slot;               /* id + 1, 0 = empty */
	int nslot;
} labtab;

typedef struct {
	const sn_data_shard_opts *o;
	sn_data_shard_result *r;
	source *src;
	int nsrc;
	sn_dtype dt;
	sn_shape shape;
	size_t recbytes;
	int spool;               /* unlinked temporary file of raw records */
	unsigned char *sbuf;
	size_t slen;
	int64_t n, cap;
	int32_t *labels;
	labtab lt;
	int nstats, stat_len;    /* groups of values that share a mean/std */
	int64_t *hist;           /* u8: [nstats][256] counts */
	double *shift, *s1, *s2; /* f32: sums of (v - shift) and its square */
	char *mean, *std, *class_names, *sources;
	int classes;
	char **staged, **final;
	int nout, ncommitted;
} run;

#define SPOOL_BUF (1u << 20)
#define MAX_LABEL_NAMES 65536

static uint32_t be32(const unsigned char *b)
{
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static int ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a >= b && strcasecmp(s + a - b, suffix) == 0;
}

static int kind_from_name(const char *path, char *delim)
{
	char name[4096];
	snprintf(name, sizeof name, "%s", path);
	if (ends_with(name, ".gz"))
		name[strlen(name) - 3] = 0;
	if (ends_with(name, ".safetensors"))
		return SN_INPUT_DATA;
	if (ends_with(name, ".tsv") || ends_with(name, ".tab"))
		*delim = '\t';
	else if (ends_with(name, ".csv"))
		*delim = ',';
	if (*delim)
		return SN_INPUT_CSV;
	if (ends_with(name, ".bin"))
		return SN_INPUT_CIFAR;
	return SN_INPUT_AUTO;
}

static int kind_sniff(instream *in)
{
	int rc = in_fill(in, 4096);
	if (rc)
		return rc;
	const unsigned char *b = in->buf + in->pos;
	size_t n = in->len - in->pos;
	if (n == 0)
		return sn_fail(SN_EFORMAT, "empty input");
	/* any IDX magic (type 0x08..0x0e, 1..4 dims), so a wrong one is named */
	if (n >= 4 && b[0] == 0 && b[1] == 0 && b[2] >= 8 && b[2] <= 0x0e && b[3] >= 1 && b[3] <= 4)
		return SN_INPUT_IDX;
	if (n >= 9 && b[8] == '{' && b[5] == 0 && b[6] == 0 && b[7] == 0)
		return SN_INPUT_DATA;
	for (size_t i = 0; i < n && i < 4096; i++)
		if (b[i] < 32 && b[i] != '\t' && b[i] != '\n' && b[i] != '\r')
			return SN_INPUT_CIFAR;
	return SN_INPUT_CSV;
}

/* Size of a plain regular file, or -1 for gzip, pipes and stdin. */
static int64_t plain_size(const char *path, instream *in)
{
	struct stat sb;
	if (!strcmp(path, "-") || !gzdirect(in->gz) || stat(path, &sb) || !S_ISREG(sb.st_mode))
		return -1;
	return sb.st_size;
}

static int check_class(const sn_data_shard_opts *o, int64_t rec, int label, int natural)
{
	int lim = o->classes ? o->classes : natural;
	if (lim && label >= lim)
		return sn_fail(SN_EFORMAT, "record %lld: label %d outside [0,%d)",
			       (long long)rec, label, lim);
	return 0;
}

static int idx_open_labels(const sn_data_shard_opts *o, source *s)
{
	s->errpath = s->labpath;
	unsigned char h[8];
	size_t got;
	int rc = in_open(&s->lab, s->labpath);
	if (!rc)
		rc = in_read(&s->lab, h, 8, &got);
	if (rc)
		return rc;
	if (got < 8)
		return sn_fail(SN_ETRUNC, "truncated IDX header");
	if (be32(h) != 0x801)
		return sn_fail(SN_EFORMAT, "IDX magic 0x%08x, expected 0x00000801 (labels)", be32(h));
	if (be32(h + 4) != (uint64_t)s->n)
		return sn_fail(SN_EMISMATCH, "%u labels for %lld images", be32(h + 4), (long long)s->n);
	s->labels = malloc((size_t)s->n);
	if (!s->labels)
		return sn_fail(SN_ENOMEM, "out of memory");
	if ((rc = in_read(&s->lab, s->labels, (size_t)s->n, &got)))
		return rc;
	if (got < (size_t)s->n)
		return sn_fail(SN_ETRUNC, "truncated: %zu of %lld labels", got, (long long)s->n);
	if ((rc = in_read(&s->lab, h, 1, &got)))
		return rc;
	if (got)
		return sn_fail(SN_EFORMAT, "trailing data after %lld labels", (long long)s->n);
	for (int64_t i = 0; i < s->n; i++) {
		if ((rc = check_class(o, i, s->labels[i], 0)))
			return rc;
		if (s->labels[i] >= s->classes)
			s->classes = s->labels[i] + 1;
	}
	s->errpath = s->path;
	return 0;
}

static int idx_open(const sn_data_shard_opts *o, source *s)
{
	unsigned char h[16];
	size_t got;
	int rc = in_read(&s->in, h, 16, &got);
	if (rc)
		return rc;
	if (got < 16)
		return sn_fail(SN_ETRUNC, "truncated IDX header");
	if (be32(h) == 0x801)
		return sn_fail(SN_EINVAL, "an IDX label file: give it with --labels");
	if (be32(h) != 0x803)
		return sn_fail(SN_EFORMAT, "IDX magic 0x%08x, expected 0x00000803 (images)", be32(h));
	s->n = be32(h + 4);
	int64_t rows = be32(h + 8), cols = be32(h + 12);
	if (s->n == 0 || rows == 0 || cols == 0)
		return sn_fail(SN_EFORMAT, "IDX dimensions %lld x %lld x %lld: nothing to read",
			       (long long)s->n, (long long)rows, (long long)cols);
	if (rows * cols > (1 << 24))
		return sn_fail(SN_EUNSUPPORTED, "IDX images of %lld x %lld pixels", (long long)rows,
			       (long long)cols);
	s->dt = SN_U8;
	s->shape = (sn_shape){ 3, { 1, rows, cols } };
	s->recbytes = (size_t)(rows * cols);
	int64_t size = plain_size(s->path, &s->in), want = 16 + s->n * rows * cols;
	if (size >= 0 && size < want)
		return sn_fail(SN_ETRUNC, "truncated: %lld bytes, expected %lld for %lld images",
			       (long long)size, (long long)want, (long long)s->n);
	if (size > want)
		return sn_fail(SN_EFORMAT, "%lld bytes of trailing data", (long long)(size - want));
	if (!s->labpath)
		return sn_fail(SN_EINVAL, "IDX images need their labels (--labels FILE)");
	return idx_open_labels(o, s);
}

static int idx_next(source *s, void *x, int32_t *y)
{
	size_t got;
	int rc;
	if (s->done == s->n) {
		unsigned char c;
		if ((rc = in_read(&s->in, &c, 1, &got)))
			return rc;
		if (got)
			return sn_fail(SN_EFORMAT, "trailing data after %lld images", (long long)s->n);
		return 0;
	}
	if ((rc = in_read(&s->in, x, s->recbytes, &got)))
		return rc;
	if (got < s->recbytes)
		return sn_fail(SN_ETRUNC, "truncated: %lld of %lld images", (long long)s->done,
			       (long long)s->n);
	*y = s->labels[s->done++];
	return 1;
}

static int cifar_open(const sn_data_shard_opts *o, source *s)
{
	int64_t size = plain_size(s->path, &s->in);
	s->reclen = o->cifar100 == 1 ? 3074 : 3073;
	if (size == 0)
		return sn_fail(SN_EFORMAT, "empty input");
	if (size > 0 && o->cifar100 < 0 && size % 3073 && size % 3074 == 0)
		s->reclen = 3074;
	if (size > 0 && size % s->reclen)
		return sn_fail(SN_ETRUNC, "truncated: %lld bytes is not a whole number of %d-byte "
			       "CIFAR-%d records", (long long)size, s->reclen,
			       s->reclen == 3073 ? 10 : 100);
	s->n = size > 0 ? size / s->reclen : -1;
	s->labskip = s->reclen == 3074 && !o->cifar_coarse;
	s->classes = s->reclen == 3073 ? 10 : o->cifar_coarse ? 20 : 100;
	s->dt = SN_U8;
	s->shape = (sn_shape){ 3, { 3, 32, 32 } };
	s->recbytes = 3072;
	s->rec = malloc((size_t)s->reclen);
	return s->rec ? 0 : sn_fail(SN_ENOMEM, "out of memory");
}

static int cifar_next(const sn_data_shard_opts *o, source *s, void *x, int32_t *y)
{
	size_t got;
	int rc = in_read(&s->in, s->rec, (size_t)s->reclen, &got);
	if (rc)
		return rc;
	if (got == 0)
		return s->done ? 0 : sn_fail(SN_EFORMAT, "empty input");
	if (got < (size_t)s->reclen)
		return sn_fail(SN_ETRUNC, "truncated: record %lld has %zu of %d bytes",
			       (long long)s->done, got, s->reclen);
	if (s->reclen == 3074 && (s->rec[0] >= 20 || s->rec[1] >= 100))
		return sn_fail(SN_EFORMAT, "record %lld: labels %d/%d outside [0,20)/[0,100)",
			       (long long)s->done, s->rec[0], s->rec[1]);
	if ((rc = check_class(o, s->done, s->rec[s->labskip], s->classes)))
		return rc;
	*y = s->rec[s->labskip];
	memcpy(x, s->rec + s->reclen - 3072, 3072);
	s->done++;
	return 1;
}

/* Split a line in place into fields.  A field may be double-quoted
 * ("a,b" and "say ""hi"""), on one line only. */
static int csv_split(source *s, char *line)
{
	int n = 0;
	char *p = line;
	for (;;) {
		if (n == s->fieldcap) {
			int cap = s->fieldcap ? 2 * s->fieldcap : 64;
			char **f = realloc(s->fields, (size_t)cap * sizeof *f);
			if (!f)
				return sn_fail(SN_ENOMEM, "out of memory");
			s->fields = f;
			s->fieldcap = cap;
		}
		while (*p == ' ')
			p++;
		if (*p == '"') {
			char *w = ++p;
			s->fields[n++] = w;
			for (;;) {
				if (!*p)
					return sn_fail(SN_EFORMAT, "line %lld: unterminated quote",
						       (long long)s->line);
				if (*p == '"' && p[1] == '"')
					*w++ = '"', p += 2;
				else if (*p == '"')
					break;
				else
					*w++ = *p++;
			}
			*w = 0;
			p++;
			while (*p == ' ')
				p++;
			if (*p && *p != s->delim)
				return sn_fail(SN_EFORMAT, "line %lld: text after a closing quote",
					       (long long)s->line);
		} else {
			s->fields[n++] = p;
			p = strchr(p, s->delim);
			if (!p)
				p = s->fields[n - 1] + strlen(s->fields[n - 1]);
		}
		if (!*p)
			return n;
		*p++ = 0;
	}
}

static char *trim(char *f)
{
	while (isspace((unsigned char)*f))
		f++;
	size_t n = strlen(f);
	while (n && isspace((unsigned char)f[n - 1]))
		f[--n] = 0;
	return f;
}

static int parse_float(const char *f, float *v)
{
	char *end;
	errno = 0;
	*v = strtof(f, &end);
	while (end != f && isspace((unsigned char)*end))
		end++;
	return end == f || *end || !isfinite(*v) ? -1 : 0;
}

static int64_t parse_class_id(const char *f)
{
	long v;
	return parse_count(f, SN_DATA_MAX_CLASSES - 1, &v) ? -1 : v;
}

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

static int labtab_grow(labtab *t)
{
	int cap = t->cap ? 2 * t->cap : 64;
	char **names = realloc(t->names, (size_t)cap * sizeof *names);
	if (names)
		t->names = names;
	int64_t *value = realloc(t->value, (size_t)cap * sizeof *value);
	if (value)
		t->value = value;
	int64_t *line = realloc(t->line, (size_t)cap * sizeof *line);
	if (line)
		t->line = line;
	const char **file = realloc(t->file, (size_t)cap * sizeof *file);
	if (file)
		t->file = file;
	int *slot = calloc((size_t)cap * 2, sizeof *slot);
	if (!names || !value || !line || !file || !slot) {
		free(slot);
		return sn_fail(SN_ENOMEM, "out of memory");
	}
	free(t->slot);
	t->slot = slot;
	t->nslot = cap * 2;
	t->cap = cap;
	for (int i = 0; i < t->n; i++) {
		size_t j = hash_str(t->names[i]) & (size_t)(t->nslot - 1);
		while (t->slot[j])
			j = (j + 1) & (size_t)(t->nslot - 1);
		t->slot[j] = i + 1;
	}
	return 0;
}

/* The provisional id of a label string: its rank of first appearance. */
static int labtab_id(labtab *t, const char *name, const source *s, int32_t *id)
{
	if (t->n == t->cap) {
		if (t->n == MAX_LABEL_NAMES)
			return sn_fail(SN_EFORMAT, "line %lld: more than %d distinct labels",
				       (long long)s->line, MAX_LABEL_NAMES);
		int rc = labtab_grow(t);
		if (rc)
			return rc;
	}
	size_t j = hash_str(name) & (size_t)(t->nslot - 1);
	for (; t->slot[j]; j = (j + 1) & (size_t)(t->nslot - 1)) {
		if (!strcmp(t->names[t->slot[j] - 1], name)) {
			*id = t->slot[j] - 1;
			return 0;
		}
	}
	char *copy = strdup(name);
	if (!copy)
		return sn_fail(SN_ENOMEM, "out of memory");
	t->names[t->n] = copy;
	t->value[t->n] = parse_class_id(name);
	t->line[t->n] = s->line;
	t->file[t->n] = s->path;
	t->slot[j] = t->n + 1;
	*id = t->n++;
	return 0;
}

static void labtab_free(labtab *t)
{
	for (int i = 0; i < t->n; i++)
		free(t->names[i]);
	free(t->names);
	free(t->value);
	free(t->line);
	free(t->file);
	free(t->slot);
	memset(t, 0, sizeof *t);
}

/* The next line that is not blank, or 0 at the end. */
static int csv_line(source *s, char **line)
{
	size_t len = 0;
	for (;;) {
		int rc = in_line(&s->in, line, &len);
		if (rc <= 0)
			return rc;
		s->line++;
		if (memchr(*line, 0, len))
			return sn_fail(SN_EFORMAT, "line %lld: a NUL byte in text", (long long)s->line);
		if (strspn(*line, " \t") < len)
			return 1;
	}
}

static int csv_label_col(const sn_data_shard_opts *o, source *s, int header)
{
	const char *lc = o->label_col;
	if (!lc) {
		s->labcol = s->nfields - 1;
		return 0;
	}
	int64_t v = parse_class_id(lc);
	if (v >= 0) {
		if (v >= s->nfields)
			return sn_fail(SN_EINVAL, "--label-col %s: only %d columns", lc, s->nfields);
		s->labcol = (int)v;
		return 0;
	}
	if (!header)
		return sn_fail(SN_EINVAL, "--label-col %s: no header row to find it in", lc);
	for (int i = 0; i < s->nfields; i++) {
		if (!strcmp(trim(s->fields[i]), lc)) {
			s->labcol = i;
			return 0;
		}
	}
	return sn_fail(SN_EINVAL, "--label-col %s: no such column in the header", lc);
}

/* The first row is a header when asked, when --label-col names a column,
 * or when a feature cell of it is not a number. */
static int csv_is_header(const sn_data_shard_opts *o, source *s)
{
	if (o->header >= 0)
		return o->header;
	if (o->label_col && parse_class_id(o->label_col) < 0)
		return 1;
	int lab = o->label_col ? (int)parse_class_id(o->label_col) : s->nfields - 1;
	for (int i = 0; i < s->nfields; i++) {
		float v;
		if (i != lab && parse_float(s->fields[i], &v))
			return 1;
	}
	return 0;
}

static int csv_open(const sn_data_shard_opts *o, source *s)
{
	char *line;
	int rc = csv_line(s, &line);
	if (rc <= 0)
		return rc ? rc : sn_fail(SN_EFORMAT, "empty input");
	if (o->delimiter)
		s->delim = o->delimiter;
	else if (!s->delim)
		s->delim = strchr(line, '\t') ? '\t' : strchr(line, ',') ? ',' : strchr(line, ';') ? ';' : ',';
	s->pending = strdup(line);
	if (!s->pending)
		return sn_fail(SN_ENOMEM, "out of memory");
	if ((rc = csv_split(s, line)) < 0)
		return rc;
	s->nfields = rc;
	if (s->nfields < 2)
		return sn_fail(SN_EFORMAT, "line %lld: %d field; need features and a label",
			       (long long)s->line, s->nfields);
	int header = csv_is_header(o, s);
	if ((rc = csv_label_col(o, s, header)))
		return rc;
	if (header) {
		free(s->pending);
		s->pending = NULL;
	}
	s->dt = SN_F32;
	s->shape = (sn_shape){ 1, { s->nfields - 1, 0, 0 } };
	s->recbytes = (size_t)(s->nfields - 1) * sizeof(float);
	s->n = -1;
	return 0;
}

static int csv_next(labtab *lt, source *s, void *x, int32_t *y)
{
	char *line = s->pending;
	int rc = 1;
	if (!line && (rc = csv_line(s, &line)) <= 0) {
		if (rc == 0 && s->done == 0)
			return sn_fail(SN_EFORMAT, "no records");
		return rc;
	}
	int n = csv_split(s, line);
	if (n < 0)
		goto out;
	if (n != s->nfields) {
		rc = sn_fail(SN_EFORMAT, "line %lld: expected %d fields, got %d", (long long)s->line,
			     s->nfields, n);
		goto out;
	}
	float *v = x;
	for (int i = 0, j = 0; i < n; i++) {
		if (i == s->labcol)
			continue;
		if (parse_float(s->fields[i], &v[j++])) {
			rc = sn_fail(SN_EFORMAT, "line %lld: field %d: \"%s\" is not a finite number",
				     (long long)s->line, i + 1, trim(s->fields[i]));
			goto out;
		}
	}
	rc = labtab_id(lt, trim(s->fields[s->labcol]), s, y);
	if (!rc) {
		rc = 1;
		s->done++;
	}
out:
	if (line == s->pending) {
		free(s->pending);
		s->pending = NULL;
	}
	return n < 0 ? n : rc;
}

/* An sn data file on stdin is read whole; files are mapped. */
static int data_open_source(const sn_data_shard_opts *o, source *s)
{
	int rc;
	if (strcmp(s->path, "-")) {
		rc = sn_data_open(s->path, &s->d);
	} else {
		memset(&s->d, 0, sizeof s->d);
		while (!(rc = in_fill(&s->in, s->in.len - s->in.pos + IN_CHUNK)) && !s->in.eof)
			;
		if (!rc)
			rc = sn_st_read_buffer(s->in.buf + s->in.pos, s->in.len - s->in.pos, &s->d.st, 0);
		in_close(&s->in);
		if (!rc && (rc = data_validate(&s->d)))
			sn_data_close(&s->d);
	}
	if (rc)
		return rc;
	s->data_open = 1;
	s->dt = s->d.x->dtype;
	s->shape = s->d.shape;
	s->recbytes = (size_t)shape_elems(&s->shape) * sn_dtype_size(s->dt);
	s->n = s->d.n;
	s->classes = s->d.classes;
	if (o->classes && o->classes < s->classes)
		return check_labels(s->d.y, o->classes);
	return 0;
}

static int data_next(source *s, void *x, int32_t *y)
{
	if (s->done == s->n)
		return 0;
	memcpy(x, (const char *)s->d.x->data + s->done * (int64_t)s->recbytes, s->recbytes);
	*y = label_at(s->d.y, s->done);
	s->done++;
	return 1;
}

static int source_open(const sn_data_shard_opts *o, source *s)
{
	s->errpath = s->path;
	s->kind = o->format != SN_INPUT_AUTO ? (int)o->format : kind_from_name(s->path, &s->delim);
	if (s->kind == SN_INPUT_DATA && strcmp(s->path, "-"))
		return data_open_source(o, s);
	int rc = in_open(&s->in, s->path);
	if (rc)
		return rc;
	if (s->kind == SN_INPUT_AUTO && (rc = s->kind = kind_sniff(&s->in)) < 0)
		return rc;
	if (s->kind != SN_INPUT_IDX && s->labpath)
		return sn_fail(SN_EINVAL, "--labels is only for IDX images");
	switch (s->kind) {
	case SN_INPUT_IDX: return idx_open(o, s);
	case SN_INPUT_CIFAR: return cifar_open(o, s);
	case SN_INPUT_CSV: return csv_open(o, s);
	default: return data_open_source(o, s);
	}
}

static int source_next(run *R, source *s, void *x, int32_t *y)
{
	switch (s->kind) {
	case SN_INPUT_IDX: return idx_next(s, x, y);
	case SN_INPUT_CIFAR: return cifar_next(R->o, s, x, y);
	case SN_INPUT_CSV: return csv_next(&R->lt, s, x, y);
	default: return data_next(s, x, y);
	}
}

static void source_close(source *s)
{
	in_close(&s->in);
	in_close(&s->lab);
	free(s->labels);
	free(s->rec);
	free(s->fields);
	free(s->pending);
	if (s->data_open)
		sn_data_close(&s->d);
	memset(s, 0, sizeof *s);
}

/* ---- The shard writer ------------------------------------------------- */

void sn_data_shard_opts_init(sn_data_shard_opts *o)
{
	memset(o, 0, sizeof *o);
	o->prefix = "shard";
	o->k = 1;
	o->split = SN_SPLIT_SHUFFLE;
	o->seed = 1;
	o->normalize = 1;
	o->cifar100 = -1;
	o->header = -1;
}

void sn_data_shard_result_free(sn_data_shard_result *r)
{
	free(r->mean);
	free(r->std);
	for (int i = 0; i < r->nfiles; i++)
		free(r->files[i]);
	free(r->files);
	memset(r, 0, sizeof *r);
}

static int check_opts(const sn_data_shard_opts *o)
{
	if (o->ninputs < 1)
		return sn_fail(SN_EINVAL, "no input");
	if (!o->outdir || !*o->outdir)
		return sn_fail(SN_EINVAL, "no output directory");
	if (o->k < 1 || o->k > SN_DATA_MAX_SHARDS)
		return sn_fail(SN_EINVAL, "%d shards (1..%d)", o->k, SN_DATA_MAX_SHARDS);
	if (!o->prefix || !*o->prefix || strchr(o->prefix, '/'))
		return sn_fail(SN_EINVAL, "bad prefix \"%s\"", o->prefix ? o->prefix : "");
	if (!(o->val >= 0 && o->val < 1))
		return sn_fail(SN_EINVAL, "--val %g outside [0,1)", o->val);
	if (o->classes < 0 || o->classes > SN_DATA_MAX_CLASSES || o->limit < 0)
		return sn_fail(SN_EINVAL, "bad --classes or --limit");
	int stdin_uses = 0;
	for (int i = 0; i < o->ninputs; i++)
		stdin_uses += !strcmp(o->inputs[i], "-");
	for (int i = 0; i < o->nlabels; i++)
		stdin_uses += !strcmp(o->labels[i], "-");
	return stdin_uses > 1 ? sn_fail(SN_EINVAL, "stdin (-) given more than once") : 0;
}

static int make_dir(const char *path)
{
	char *p = strdup(path);
	if (!p)
		return sn_fail(SN_ENOMEM, "out of memory");
	int rc = 0;
	for (char *c = p + 1;; c++) {
		if (*c && *c != '/')
			continue;
		char save = *c;
		*c = 0;
		if (mkdir(p, 0777) && errno != EEXIST) {
			rc = sn_fail(SN_EIO, "cannot create directory %s: %s", p, strerror(errno));
			break;
		}
		*c = save;
		if (!save)
			break;
	}
	struct stat sb;
	if (!rc && (stat(p, &sb) || !S_ISDIR(sb.st_mode)))
		rc = sn_fail(SN_EIO, "not a directory");
	free(p);
	return rc;
}

/* Pair IDX images with --labels in order, open everything, and check that
 * all inputs agree on format, dtype and record shape. */
static int open_sources(run *R)
{
	const sn_data_shard_opts *o = R->o;
	R->src = calloc((size_t)o->ninputs, sizeof *R->src);
	if (!R->src)
		return sn_fail(SN_ENOMEM, "out of memory");
	int nlab = 0;
	for (int i = 0; i < o->ninputs; i++) {
		source *s = &R->src[R->nsrc++];
		s->path = o->inputs[i];
		s->labpath = nlab < o->nlabels ? o->labels[nlab] : NULL;
		int rc = source_open(o, s);
		if (rc) {
			R->r->errfile = s->errpath;
			return rc;
		}
		nlab += s->kind == SN_INPUT_IDX;
		const source *f = &R->src[0];
		char a[64], b[64];
		sn_shape_format(s->shape.ndim, s->shape.d, a, sizeof a);
		sn_shape_format(f->shape.ndim, f->shape.d, b, sizeof b);
		if (s->kind != f->kind || s->dt != f->dt || strcmp(a, b)) {
			R->r->errfile = s->path;
			return sn_fail(SN_EMISMATCH, "%s records %s differ from %s %s of %s",
				       sn_dtype_name(s->dt), a, sn_dtype_name(f->dt), b, f->path);
		}
	}
	if (nlab != o->nlabels) {
		R->r->errfile = o->labels[nlab];
		return sn_fail(SN_EINVAL, "labels without IDX images to go with them");
	}
	R->dt = R->src[0].dt;
	R->shape = R->src[0].shape;
	R->recbytes = R->src[0].recbytes;
	if (R->src[0].kind == SN_INPUT_DATA) {
		const char *cn = sn_st_meta(&R->src[0].d.st, "class_names");
		if (cn && !(R->class_names = strdup(cn)))
			return sn_fail(SN_ENOMEM, "out of memory");
	}
	return 0;
}

static int spool_open(run *R)
{
	size_t len = strlen(R->o->outdir) + 32;
	char *tmp = malloc(len);
	if (!tmp)
		return sn_fail(SN_ENOMEM, "out of memory");
	snprintf(tmp, len, "%s/.sn-shard-spool-XXXXXX", R->o->outdir);
	R->spool = mkostemp(tmp, O_CLOEXEC);
	int err = errno;
	if (R->spool >= 0)
		unlink(tmp);
	free(tmp);
	if (R->spool < 0)
		return sn_fail(SN_EIO, "cannot create a temporary file: %s", strerror(err));
	R->sbuf = malloc(SPOOL_BUF);
	return R->sbuf ? 0 : sn_fail(SN_ENOMEM, "out of memory");
}

static int spool_flush(run *R)
{
	int rc = sn_write_all(R->spool, R->sbuf, R->slen);
	R->slen = 0;
	return rc;
}

static int spool_put(run *R, const void *rec)
{
	if (R->slen + R->recbytes > SPOOL_BUF) {
		int rc = spool_flush(R);
		if (rc)
			return rc;
		if (R->recbytes > SPOOL_BUF)
			return sn_write_all(R->spool, rec, R->recbytes);
	}
	memcpy(R->sbuf + R->slen, rec, R->recbytes);
	R->slen += R->recbytes;
	return 0;
}

static int labels_push(run *R, int32_t y)
{
	if (R->n == R->cap) {
		int64_t cap = R->cap ? 2 * R->cap : 4096;
		int32_t *l = realloc(R->labels, (size_t)cap * sizeof *l);
		if (!l)
			return sn_fail(SN_ENOMEM, "out of memory");
		R->labels = l;
		R->cap = cap;
	}
	R->labels[R->n++] = y;
	return 0;
}

/* ---- Normalisation statistics ------------------------------------------ */

/* Stats are per channel for images and per feature for tables (one pair
 * for all when there are too many features). */
static int stats_init(run *R)
{
	int64_t e = shape_elems(&R->shape);
	if (R->shape.ndim == 3)
		R->nstats = (int)R->shape.d[0];
	else
		R->nstats = e <= SN_DATA_MAX_CHANNELS ? (int)e : 1;
	R->stat_len = (int)(e / R->nstats);
	if (R->src[0].kind == SN_INPUT_DATA || !R->o->normalize || R->o->stats_from)
		return 0;
	if (R->dt == SN_U8) {
		R->hist = calloc((size_t)R->nstats * 256, sizeof *R->hist);
		return R->hist ? 0 : sn_fail(SN_ENOMEM, "out of memory");
	}
	R->shift = calloc((size_t)R->nstats, sizeof *R->shift);
	R->s1 = calloc((size_t)R->nstats, sizeof *R->s1);
	R->s2 = calloc((size_t)R->nstats, sizeof *R->s2);
	return R->shift && R->s1 && R->s2 ? 0 : sn_fail(SN_ENOMEM, "out of memory");
}

static void stats_add(run *R, const void *rec)
{
	int L = R->stat_len;
	if (R->hist) {
		const uint8_t *p = rec;
		for (int c = 0; c < R->nstats; c++) {
			int64_t *h = R->hist + 256 * c;
			for (int j = 0; j < L; j++)
				h[p[c * L + j]]++;
		}
	} else if (R->s1) {
		const float *p = rec;
		if (R->n == 0)       /* shifting by a first value keeps the sums exact-ish */
			for (int c = 0; c < R->nstats; c++)
				R->shift[c] = p[c * L];
		for (int c = 0; c < R->nstats; c++) {
			double s1 = 0, s2 = 0, sh = R->shift[c];
			for (int j = 0; j < L; j++) {
				double d = p[c * L + j] - sh;
				s1 += d;
				s2 += d * d;
			}
			R->s1[c] += s1;
			R->s2[c] += s2;
		}
	}
}

static char *json_numbers(const double *v, int n)
{
	size_t cap = (size_t)n * 26 + 3, len = 0;
	char *s = malloc(cap);
	if (!s)
		return NULL;
	s[len++] = '[';
	for (int i = 0; i < n; i++)
		len += (size_t)snprintf(s + len, cap - len, "%s%.9g", i ? "," : "", v[i]);
	snprintf(s + len, cap - len, "]");
	return s;
}

static int stats_set(run *R, const double *mean, const double *std, int n)
{
	R->mean = json_numbers(mean, n);
	R->std = json_numbers(std, n);
	return R->mean && R->std ? 0 : sn_fail(SN_ENOMEM, "out of memory");
}

/* Population mean and std of the values as the trainer sees them before
 * normalising (u8 as v/255); a constant channel gets std 1. */
static int stats_finish(run *R)
{
	int n = R->nstats;
	double *m = calloc((size_t)n * 2, sizeof *m), *sd = m + n;
	if (!m)
		return sn_fail(SN_ENOMEM, "out of memory");
	double count = (double)R->n * R->stat_len;
	for (int c = 0; c < n; c++) {
		double s1 = 0, s2 = 0, var;
		if (R->hist) {
			for (int v = 0; v < 256; v++) {
				s1 += (double)R->hist[256 * c + v] * v;
				s2 += (double)R->hist[256 * c + v] * v * v;
			}
			m[c] = s1 / count / 255.0;
			var = (s2 / count - (s1 / count) * (s1 / count)) / (255.0 * 255.0);
		} else {
			m[c] = R->shift[c] + R->s1[c] / count;
			var = R->s2[c] / count - (R->s1[c] / count) * (R->s1[c] / count);
		}
		sd[c] = var > 0 ? sqrt(var) : 0;
		if (!(sd[c] > 1e-12) || !isfinite(sd[c]) || !isfinite((float)sd[c]))
			sd[c] = 1;
	}
	int rc = stats_set(R, m, sd, n);
	free(m);
	return rc;
}

/* The statistics the shards carry, when they are not computed here. */
static int stats_given(run *R)
{
	const sn_data_shard_opts *o = R->o;
	if (o->stats_from) {
		sn_data d;
		int rc = sn_data_open(o->stats_from, &d);
		if (!rc && d.nstats != R->nstats && !(R->shape.ndim == 1 && d.nstats == 1))
			rc = sn_fail(SN_EMISMATCH, "%d mean/std entries, the input needs %d",
				     d.nstats, R->nstats);
		if (!rc) {
			R->mean = strdup(sn_st_meta(&d.st, "mean"));
			R->std = strdup(sn_st_meta(&d.st, "std"));
			if (!R->mean || !R->std)
				rc = sn_fail(SN_ENOMEM, "out of memory");
		}
		if (d.st.base || d.mean)
			sn_data_close(&d);
		if (rc)
			R->r->errfile = o->stats_from;
		return rc;
	}
	if (!o->normalize) {
		int n = R->shape.ndim == 3 ? R->nstats : 1;
		double *v = calloc((size_t)n * 2, sizeof *v);
		if (!v)
			return sn_fail(SN_ENOMEM, "out of memory");
		for (int i = 0; i < n; i++)
			v[n + i] = 1;
		int rc = stats_set(R, v, v + n, n);
		free(v);
		return rc;
	}
	if (R->src[0].kind != SN_INPUT_DATA)
		return 0;
	const sn_st *f = &R->src[0].d.st;
	for (int i = 1; i < R->nsrc; i++) {
		const sn_st *s = &R->src[i].d.st;
		if (strcmp(sn_st_meta(s, "mean"), sn_st_meta(f, "mean")) ||
		    strcmp(sn_st_meta(s, "std"), sn_st_meta(f, "std"))) {
			R->r->errfile = R->src[i].path;
			return sn_fail(SN_EMISMATCH, "mean/std differ from those of %s",
				       R->src[0].path);
		}
	}
	R->mean = strdup(sn_st_meta(f, "mean"));
	R->std = strdup(sn_st_meta(f, "std"));
	return R->mean && R->std ? 0 : sn_fail(SN_ENOMEM, "out of memory");
}

/* ---- Labels and classes ------------------------------------------------ */

static const labtab *sort_tab;

static int cmp_names(const void *a, const void *b)
{
	return strcmp(sort_tab->names[*(const int *)a], sort_tab->names[*(const int *)b]);
}

/* CSV labels: class ids when every label is one, else names in sorted
 * order.  Rewrites the provisional ids in R->labels. */
static int csv_labels(run *R, int *natural)
{
	labtab *t = &R->lt;
	int strings = 0, rc = 0;
	for (int i = 0; i < t->n; i++)
		strings |= t->value[i] < 0;
	int32_t *map = malloc((size_t)t->n * sizeof *map);
	int *order = malloc((size_t)t->n * sizeof *order);
	json_t *names = json_array();
	if (!map || !order || !names) {
		rc = sn_fail(SN_ENOMEM, "out of memory");
		goto out;
	}
	*natural = 0;
	for (int i = 0; i < t->n; i++) {
		order[i] = i;
		if (!strings && t->value[i] >= *natural)
			*natural = (int)t->value[i] + 1;
	}
	if (strings) {
		sort_tab = t;
		qsort(order, (size_t)t->n, sizeof *order, cmp_names);
		*natural = t->n;
		for (int i = 0; i < t->n; i++)
			if (json_array_append_new(names, json_string(t->names[order[i]])))
				rc = sn_fail(SN_ENOMEM, "out of memory");
		R->class_names = rc ? NULL : json_dumps(names, JSON_COMPACT);
		if (!rc && !R->class_names)
			rc = sn_fail(SN_ENOMEM, "out of memory");
	}
	for (int i = 0; i < t->n && !rc; i++) {
		int id = strings ? 0 : (int)t->value[order[i]];
		map[order[i]] = strings ? i : id;
		if (R->o->classes && (strings ? t->n : id + 1) > R->o->classes) {
			R->r->errfile = t->file[order[i]];
			rc = sn_fail(SN_EFORMAT, "line %lld: label \"%s\" outside %d classes",
				     (long long)t->line[order[i]], t->names[order[i]], R->o->classes);
		}
	}
	for (int64_t i = 0; i < R->n && !rc; i++)
		R->labels[i] = map[R->labels[i]];
out:
	json_decref(names);
	free(map);
	free(order);
	return rc;
}

static int finish_labels(run *R)
{
	int natural = 0, rc = 0;
	if (R->src[0].kind == SN_INPUT_CSV)
		rc = csv_labels(R, &natural);
	for (int i = 0; i < R->nsrc; i++)
		if (R->src[i].classes > natural)
			natural = R->src[i].classes;
	R->classes = R->o->classes ? R->o->classes : natural;
	json_t *src = json_array();
	for (int i = 0; src && i < R->nsrc; i++) {
		const char *p[2] = { R->src[i].path, R->src[i].labpath };
		for (int j = 0; j < 2 && p[j]; j++) {
			const char *b = strcmp(p[j], "-") ? strrchr(p[j], '/') : NULL;
			json_array_append_new(src, json_string(!strcmp(p[j], "-") ? "stdin" : b ? b + 1 : p[j]));
		}
	}
	R->sources = src ? json_dumps(src, JSON_COMPACT) : NULL;
	json_decref(src);
	if (!rc && !R->sources)
		rc = sn_fail(SN_ENOMEM, "out of memory");
	return rc;
}

/* ---- Reading: every record once, into the spool ------------------------- */

static int cancelled(const sn_data_shard_opts *o)
{
	return o->cancel && *o->cancel;
}

static int read_all(run *R)
{
	const sn_data_shard_opts *o = R->o;
	int64_t limit = o->limit ? o->limit : INT64_MAX, total = 0;
	for (int i = 0; i < R->nsrc; i++)
		total = R->src[i].n < 0 || total < 0 ? -1 : total + R->src[i].n;
	unsigned char *rec = malloc(R->recbytes);
	if (!rec)
		return sn_fail(SN_ENOMEM, "out of memory");
	int rc = 0;
	for (int i = 0; i < R->nsrc && R->n < limit && !rc; i++) {
		source *s = &R->src[i];
		int32_t y = 0;
		while (R->n < limit && !cancelled(o) && (rc = source_next(R, s, rec, &y)) == 1) {
			stats_add(R, rec);
			if ((rc = labels_push(R, y)))
				break;
			if ((rc = spool_put(R, rec))) {
				s->errpath = o->outdir;
				break;
			}
			if (o->progress && (R->n & 0x3fff) == 0)
				o->progress(o->progress_ctx, "reading", R->n, total);
		}
		if (rc < 0)
			R->r->errfile = s->errpath;
		if (rc > 0)
			rc = 0;
		if (s->data_open) {     /* unmap what has been spooled */
			sn_data_close(&s->d);
			s->data_open = 0;
		}
	}
	free(rec);
	if (!rc && (rc = spool_flush(R)))
		R->r->errfile = o->outdir;
	return rc;
}

/* ---- Splitting --------------------------------------------------------- */

/* Position j of m records dealt into k contiguous chunks whose sizes
 * differ by at most one, the larger first. */
static int chunk_of(int64_t j, int64_t m, int k)
{
	int64_t q = m / k, r = m % k;
	return (int)(j < (q + 1) * r ? j / (q + 1) : r + (j - (q + 1) * r) / q);
}

static int64_t val_count(double f, int64_t n)
{
	int64_t v = (int64_t)floor(f * (double)n + 0.5);
	return f > 0 && v == 0 ? 1 : v;
}

/* assign[i]: the shard of record i (k = validation); seq: the dealing
 * order, which also orders the records inside a shard before its shuffle. */
static void split_stratified(run *R, sn_rng *rng, int32_t *assign, int64_t *seq, int64_t *nval)
{
	int k = R->o->k;
	int64_t *start = calloc((size_t)R->classes + 1, sizeof *start);
	if (!start)
		return;
	for (int64_t i = 0; i < R->n; i++)
		start[R->labels[i] + 1]++;
	for (int c = 0; c < R->classes; c++)
		start[c + 1] += start[c];
	for (int64_t i = 0; i < R->n; i++)
		seq[start[R->labels[i]]++] = i;    /* start[c] now ends class c */
	int64_t deal = 0, b = 0;
	*nval = 0;
	for (int c = 0; c < R->classes; c++) {
		int64_t e = start[c], nc = e - b;
		sn_rng_shuffle(rng, seq + b, nc);
		int64_t v = R->o->val > 0 ? (int64_t)floor(R->o->val * (double)nc + 0.5) : 0;
		for (int64_t j = 0; j < nc; j++)
			assign[seq[b + j]] = j < v ? k : (int)(deal++ % k);
		*nval += v;
		b = e;
	}
	free(start);
}

static int split(run *R, int64_t *order, int64_t *off)
{
	const sn_data_shard_opts *o = R->o;
	int64_t n = R->n, nval = val_count(o->val, n);
	int k = o->k;
	int32_t *assign = malloc((size_t)n * sizeof *assign);
	int64_t *seq = malloc((size_t)n * sizeof *seq);
	if (!assign || !seq) {
		free(assign);
		free(seq);
		return sn_fail(SN_ENOMEM, "out of memory");
	}
	sn_rng rng;
	sn_rng_seed(&rng, o->seed);
	for (int64_t i = 0; i < n; i++)
		seq[i] = i;
	int64_t m = n - nval;
	if (o->split == SN_SPLIT_STRATIFY) {
		nval = -1;
		split_stratified(R, &rng, assign, seq, &nval);
		m = n - nval;
	} else if (o->split == SN_SPLIT_SHUFFLE) {
		sn_rng_shuffle(&rng, seq, n);
		for (int64_t j = 0; j < n; j++)
			assign[seq[j]] = j < nval ? k : chunk_of(j - nval, m, k);
	} else {
		for (int64_t i = 0; i < n; i++)
			assign[i] = i >= m ? k : o->split == SN_SPLIT_ROUND_ROBIN ? (int)(i % k)
									  : chunk_of(i, m, k);
	}
	int rc = 0;
	if (nval < 0)
		rc = sn_fail(SN_ENOMEM, "out of memory");
	else if (m < k)
		rc = sn_fail(SN_EMISMATCH, "%d shards but only %lld records%s", k, (long long)m,
			     nval ? " besides the validation split" : "");
	else if (o->val > 0 && nval == 0)
		rc = sn_fail(SN_EMISMATCH, "--val %g leaves no validation records", o->val);
	for (int j = 0; j <= k + 1; j++)
		off[j] = 0;
	for (int64_t i = 0; i < n && !rc; i++)
		off[assign[i] + 1]++;
	for (int j = 0; j <= k; j++)
		off[j + 1] += off[j];
	for (int64_t j = 0; j < n && !rc; j++)
		order[off[assign[seq[j]]]++] = seq[j];
	for (int j = k + 1; j > 0; j--)
		off[j] = off[j - 1];
	off[0] = 0;
	free(assign);
	free(seq);
	return rc;
}

/* ---- Writing: one shard in memory at a time ----------------------------- */

static int pread_all(int fd, void *buf, size_t len, int64_t off)
{
	while (len) {
		ssize_t got = pread(fd, buf, len, off);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			return sn_fail(SN_EIO, "reading the spool: %s",
				       got < 0 ? strerror(errno) : "unexpected end");
		buf = (char *)buf + got;
		len -= (size_t)got;
		off += got;
	}
	return 0;
}

/* Gather the records of list[0..cnt) from the spool, reading runs of
 * consecutive records at once. */
static int gather(run *R, const int64_t *list, int64_t cnt, unsigned char *x, int32_t *y)
{
	size_t rb = R->recbytes;
	for (int64_t j = 0; j < cnt;) {
		int64_t j0 = j;
		while (++j < cnt && list[j] == list[j - 1] + 1)
			;
		int rc = pread_all(R->spool, x + j0 * rb, (size_t)(j - j0) * rb, list[j0] * (int64_t)rb);
		if (rc)
			return rc;
	}
	for (int64_t j = 0; j < cnt; j++)
		y[j] = R->labels[list[j]];
	return 0;
}

static int shard_meta(run *R, sn_st *st, int k)
{
	const sn_data_shard_opts *o = R->o;
	static const char *const splits[] = { "shuffle", "contiguous", "round-robin", "stratify" };
	char classes[16], shard[32], seed[24];
	snprintf(classes, sizeof classes, "%d", R->classes);
	if (k < o->k)
		snprintf(shard, sizeof shard, "%d/%d", k + 1, o->k);
	else
		snprintf(shard, sizeof shard, "val");
	snprintf(seed, sizeof seed, "%llu", (unsigned long long)o->seed);
	const char *kv[][2] = {
		{ "format", "sn.data.v1" }, { "classes", classes }, { "source", R->sources },
		{ "shard", shard }, { "split", splits[o->split] }, { "seed", seed },
		{ "mean", R->mean }, { "std", R->std }, { "class_names", R->class_names },
	};
	for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++) {
		if (!kv[i][1])
			continue;
		int rc = sn_st_set_meta(st, kv[i][0], kv[i][1]);
		if (rc)
			return rc;
	}
	return 0;
}

static int write_shard(run *R, int k, const int64_t *off, int64_t *order)
{
	const sn_data_shard_opts *o = R->o;
	int64_t cnt = off[k + 1] - off[k];
	int64_t *list = order + off[k];
	if (o->split == SN_SPLIT_SHUFFLE || o->split == SN_SPLIT_STRATIFY) {
		sn_rng rng;
		sn_rng_seed(&rng, o->seed ^ (0x9e3779b97f4a7c15ULL * (uint64_t)(k + 1)));
		sn_rng_shuffle(&rng, list, cnt);
	}
	unsigned char *x = malloc((size_t)cnt * R->recbytes);
	int32_t *y = malloc((size_t)cnt * sizeof *y);
	sn_st st;
	sn_st_init(&st);
	int64_t xs[4] = { cnt, R->shape.d[0], R->shape.d[1], R->shape.d[2] };
	int rc = !x || !y ? sn_fail(SN_ENOMEM, "out of memory") : gather(R, list, cnt, x, y);
	/* y first: then x starts 4-aligned whatever the size of a u8 x */
	if (!rc)
		rc = sn_st_add(&st, "y", SN_I32, 1, &cnt, y, 0);
	if (!rc)
		rc = sn_st_add(&st, "x", R->dt, R->shape.ndim + 1, xs, x, 0);
	if (!rc)
		rc = shard_meta(R, &st, k);
	if (!rc)
		rc = sn_st_write(&st, R->staged[k]);
	sn_st_free(&st);
	free(x);
	free(y);
	if (!rc)
		R->nout = k + 1;
	return rc;
}

static int name_outputs(run *R, int nout)
{
	const sn_data_shard_opts *o = R->o;
	R->staged = calloc((size_t)nout, sizeof *R->staged);
	R->final = calloc((size_t)nout, sizeof *R->final);
	if (!R->staged || !R->final)
		return sn_fail(SN_ENOMEM, "out of memory");
	const char *gz = o->compress ? ".gz" : "";
	for (int k = 0; k < nout; k++) {
		int a, b;
		if (k < o->k) {
			a = asprintf(&R->final[k], "%s/%s-%03d.safetensors%s", o->outdir, o->prefix, k, gz);
			b = asprintf(&R->staged[k], "%s/.sn-shard-%d-%s-%03d.safetensors%s", o->outdir,
				     (int)getpid(), o->prefix, k, gz);
		} else {
			a = asprintf(&R->final[k], "%s/val.safetensors%s", o->outdir, gz);
			b = asprintf(&R->staged[k], "%s/.sn-shard-%d-val.safetensors%s", o->outdir,
				     (int)getpid(), gz);
		}
		if (a < 0 || b < 0) {
			R->final[k] = a < 0 ? NULL : R->final[k];
			R->staged[k] = b < 0 ? NULL : R->staged[k];
			return sn_fail(SN_ENOMEM, "out of memory");
		}
	}
	return 0;
}

/* Rename every staged file to its name; the directory is synced so the
 * renames survive a crash. */
static int commit(run *R, int nout)
{
	for (int k = 0; k < nout; k++) {
		struct stat sb;
		if (stat(R->staged[k], &sb) == 0)
			R->r->bytes += (uint64_t)sb.st_size;
		if (rename(R->staged[k], R->final[k]))
			return sn_fail(SN_EIO, "cannot rename to %s: %s", R->final[k], strerror(errno));
		R->ncommitted = k + 1;
	}
	int dfd = open(R->o->outdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		(void)fsync(dfd);
		close(dfd);
	}
	return 0;
}

static void run_free(run *R, int failed)
{
	int nout = R->o->k + 1;
	for (int k = 0; failed && R->staged && k < R->nout; k++)
		unlink(R->staged[k]);
	for (int k = 0; failed && R->final && k < R->ncommitted; k++)
		unlink(R->final[k]);
	for (int k = 0; k < nout; k++) {
		if (R->staged)
			free(R->staged[k]);
		if (R->final && (failed || !R->r->files || k >= R->r->nfiles))
			free(R->final[k]);
	}
	free(R->staged);
	if (failed || !R->r->files)
		free(R->final);
	for (int i = 0; i < R->nsrc; i++)
		source_close(&R->src[i]);
	free(R->src);
	if (R->spool >= 0)
		close(R->spool);
	free(R->sbuf);
	free(R->labels);
	labtab_free(&R->lt);
	free(R->hist);
	free(R->shift);
	free(R->s1);
	free(R->s2);
	free(R->mean);
	free(R->std);
	free(R->class_names);
	free(R->sources);
}

static int write_all(run *R)
{
	const sn_data_shard_opts *o = R->o;
	int64_t *order = malloc((size_t)R->n * sizeof *order);
	int64_t *off = malloc((size_t)(o->k + 2) * sizeof *off);
	int rc = !order || !off ? sn_fail(SN_ENOMEM, "out of memory") : split(R, order, off);
	if (rc)
		R->r->errfile = o->inputs[0];
	int nout = !rc && off[o->k + 1] > off[o->k] ? o->k + 1 : o->k;
	if (!rc && (rc = name_outputs(R, o->k + 1)))
		R->r->errfile = o->outdir;
	for (int k = 0; k < nout && !rc && !cancelled(o); k++) {
		if ((rc = write_shard(R, k, off, order)))
			R->r->errfile = o->outdir;
		else if (o->progress)
			o->progress(o->progress_ctx, "writing", k + 1, nout);
	}
	if (!rc && !cancelled(o) && (rc = commit(R, nout)))
		R->r->errfile = o->outdir;
	if (!rc) {
		R->r->val_records = off[o->k + 1] - off[o->k];
		R->r->nfiles = nout;
	}
	free(order);
	free(off);
	return rc;
}

int sn_data_shard(const sn_data_shard_opts *o, sn_data_shard_result *r)
{
	memset(r, 0, sizeof *r);
	run R = { .o = o, .r = r, .spool = -1 };
	int rc = check_opts(o);
	if (!rc && (rc = make_dir(o->outdir)))
		r->errfile = o->outdir;
	if (!rc)
		rc = open_sources(&R);
	if (!rc && (rc = stats_init(&R)))
		r->errfile = o->outdir;
	if (!rc)
		rc = stats_given(&R);
	if (!rc && (rc = spool_open(&R)))
		r->errfile = o->outdir;
	if (!rc)
		rc = read_all(&R);
	if (!rc && R.n == 0) {
		r->errfile = o->inputs[0];
		rc = sn_fail(SN_EFORMAT, "no records");
	}
	if (!rc)
		rc = finish_labels(&R);
	if (!rc && !R.mean && (rc = stats_finish(&R)))
		r->errfile = o->outdir;
	if (!rc && !cancelled(o))
		rc = write_all(&R);
	if (cancelled(o)) {      /* whatever failed on the way was the signal */
		r->errfile = o->outdir;
		rc = sn_fail(SN_EIO, "interrupted");
	}
	if (!rc) {
		r->records = R.n;
		r->classes = R.classes;
		r->shards = o->k;
		r->mean = R.mean;
		r->std = R.std;
		R.mean = R.std = NULL;
		r->files = R.final;
	}
	run_free(&R, rc != 0);
	if (rc && !r->errfile)
		r->errfile = o->inputs && o->ninputs ? o->inputs[0] : "-";
	if (rc) {
		free(r->mean);
		free(r->std);
		r->files = NULL;
		r->nfiles = 0;
	}
	return rc;
}
