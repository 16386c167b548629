/* data.c: sn.data.v1 files: open, validate, gather normalised batches.
 * The readers sn-shard takes input from are in readers/, the writer that
 * makes these files in shard.c. */
#include "data.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

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
		/* a std so small that dividing by it overflows would turn every
		 * input into Inf */
		if (d->std[i] < FLT_MIN || !isfinite(b[2 * nm + i]) || !isfinite(b[3 * nm + i]))
			return sn_fail(SN_EFORMAT, "metadata \"std\"[%d] is %g, too small to divide by",
				       i, (double)d->std[i]);
	}
	return 0;
}

/* The first NaN or Inf among n floats at p (any alignment), or -1.  One
 * pass in blocks of branch-free integer arithmetic, so that -O2 makes SIMD
 * of it: an exponent of all ones, plus one, carries into the sign bit. */
static int64_t first_nonfinite(const unsigned char *p, int64_t n)
{
	int64_t j = 0;
	for (; j + 64 <= n; j += 64) {
		uint32_t any = 0;
		for (int k = 0; k < 64; k++) {
			uint32_t v;
			memcpy(&v, p + 4 * (j + k), 4);
			any |= (v & 0x7f800000u) + 0x00800000u;
		}
		if (any & 0x80000000u)
			break;
	}
	for (; j < n; j++) {
		uint32_t v;
		memcpy(&v, p + 4 * j, 4);
		if (((v & 0x7f800000u) + 0x00800000u) & 0x80000000u)
			return j;
	}
	return -1;
}

/* NaN or Inf in x is bad input, to be named here rather than surface as a
 * diverged loss in training. */
static int check_finite(const sn_data *d)
{
	if (d->x->dtype != SN_F32)
		return 0;
	int64_t e = shape_elems(&d->shape);
	int64_t j = first_nonfinite(d->x->data, d->n * e);
	if (j < 0)
		return 0;
	float v;
	memcpy(&v, (const char *)d->x->data + 4 * j, 4);
	return sn_fail(SN_EFORMAT, "x holds %s at record %lld, value %lld",
		       isnan(v) ? "NaN" : v > 0 ? "Inf" : "-Inf", (long long)(j / e),
		       (long long)(j % e));
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
	if ((rc = check_labels(d->y, d->classes)) || (rc = check_finite(d)))
		return rc;
	return load_stats(d);
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

int sn_data_open_buffer(const void *buf, size_t len, unsigned flags, sn_data *d)
{
	memset(d, 0, sizeof *d);
	int rc = sn_st_read_buffer(buf, len, &d->st, flags);
	if (rc)
		return rc;
	rc = data_validate(d);
	if (rc)
		sn_data_close(d);
	return rc;
}

int32_t sn_data_label(const sn_data *d, int64_t i)
{
	return label_at(d->y, i);
}

int sn_data_check_labels(const sn_data *d, int classes)
{
	return check_labels(d->y, classes);
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
