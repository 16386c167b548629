#include "tensor.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const struct {
	const char *name;
	size_t size;
} dtypes[SN_DTYPE_COUNT] = {
	[SN_F64] = {"F64", 8},   [SN_F32] = {"F32", 4},  [SN_F16] = {"F16", 2},
	[SN_BF16] = {"BF16", 2}, [SN_I64] = {"I64", 8},  [SN_I32] = {"I32", 4},
	[SN_I16] = {"I16", 2},   [SN_I8] = {"I8", 1},    [SN_U64] = {"U64", 8},
	[SN_U32] = {"U32", 4},   [SN_U16] = {"U16", 2},  [SN_U8] = {"U8", 1},
	[SN_BOOL] = {"BOOL", 1},
};

const char *sn_dtype_name(sn_dtype dt)
{
	return (unsigned)dt < SN_DTYPE_COUNT ? dtypes[dt].name : "?";
}

int sn_dtype_parse(const char *name, sn_dtype *dt)
{
	for (int i = 0; i < SN_DTYPE_COUNT; i++)
		if (strcmp(name, dtypes[i].name) == 0) {
			*dt = (sn_dtype)i;
			return 0;
		}
	return sn_fail(SN_EFORMAT, "unknown dtype \"%.40s\"", name);
}

size_t sn_dtype_size(sn_dtype dt)
{
	return (unsigned)dt < SN_DTYPE_COUNT ? dtypes[dt].size : 0;
}

int64_t sn_shape_numel(int ndim, const int64_t *shape)
{
	int64_t n = 1;
	for (int i = 0; i < ndim; i++) {
		if (shape[i] < 0 || (shape[i] != 0 && n > INT64_MAX / shape[i]))
			return -1;
		n *= shape[i];
	}
	return n;
}

int64_t sn_tensor_numel(const sn_tensor *t)
{
	return sn_shape_numel(t->ndim, t->shape);
}

/* Data may sit at any byte offset of a file (foreign writers do not align),
 * so every element is copied out with memcpy, never dereferenced in place. */
#define LOADER(fn, type) \
	static type fn(const void *p, size_t i) \
	{ \
		type v; \
		memcpy(&v, (const char *)p + i * sizeof v, sizeof v); \
		return v; \
	}
LOADER(load_f64, double)
LOADER(load_f32, float)
LOADER(load_u16, uint16_t)
LOADER(load_i64, int64_t)
LOADER(load_i32, int32_t)
LOADER(load_i16, int16_t)
LOADER(load_u64, uint64_t)
LOADER(load_u32, uint32_t)

double sn_tensor_get(const sn_tensor *t, size_t i)
{
	const void *p = t->data;
	switch (t->dtype) {
	case SN_F64: return load_f64(p, i);
	case SN_F32: return load_f32(p, i);
	case SN_F16: return sn_f16_to_f32(load_u16(p, i));
	case SN_BF16: return sn_bf16_to_f32(load_u16(p, i));
	case SN_I64: return (double)load_i64(p, i);
	case SN_I32: return load_i32(p, i);
	case SN_I16: return load_i16(p, i);
	case SN_I8: return ((const int8_t *)p)[i];
	case SN_U64: return (double)load_u64(p, i);
	case SN_U32: return load_u32(p, i);
	case SN_U16: return load_u16(p, i);
	case SN_U8: return ((const uint8_t *)p)[i];
	case SN_BOOL: return ((const uint8_t *)p)[i] != 0;
	default: return NAN;
	}
}

char *sn_shape_format(int ndim, const int64_t *shape, char *buf, size_t len)
{
	size_t at = 0;
	if (!len)
		return buf;
	buf[0] = 0;
	at += (size_t)snprintf(buf, len, "[");
	for (int i = 0; i < ndim && at < len; i++)
		at += (size_t)snprintf(buf + at, len - at, "%s%lld", i ? "," : "", (long long)shape[i]);
	if (at < len)
		snprintf(buf + at, len - at, "]");
	return buf;
}

static uint32_t float_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, sizeof u);
	return u;
}

static float bits_float(uint32_t u)
{
	float f;
	memcpy(&f, &u, sizeof f);
	return f;
}

float sn_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16;
	uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
	if (exp == 0x1f)
		return bits_float(sign | 0x7f800000u | (man << 13));
	if (exp == 0) {
		/* Subnormal (or zero): man * 2^-24 is exact in float. */
		float v = ldexpf((float)man, -24);
		return sign ? -v : v;
	}
	return bits_float(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t sn_f32_to_f16(float f)
{
	uint32_t u = float_bits(f);
	uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
	uint32_t exp = (u >> 23) & 0xff, man = u & 0x7fffff;
	if (exp == 0xff)	/* keep NaN a NaN even when its payload is in the low bits */
		return sign | 0x7c00 | (man ? (uint16_t)(0x200 | (man >> 13)) : 0);
	int e = (int)exp - 127 + 15;
	if (e >= 0x1f)
		return sign | 0x7c00;
	if (e <= 0) {
		/* Subnormal half: shift the full significand (with its implicit
		 * bit) right and round to nearest even on what falls off. */
		if (e < -10)
			return sign;
		uint32_t m = man | 0x800000;
		int shift = 14 - e;
		uint32_t half = m >> shift, rem = m & ((1u << shift) - 1), mid = 1u << (shift - 1);
		if (rem > mid || (rem == mid && (half & 1)))
			half++;
		return sign | (uint16_t)half;
	}
	uint32_t h = ((uint32_t)e << 10) | (man >> 13), rem = man & 0x1fff;
	/* A carry out of the mantissa bumps the exponent, up to inf: correct. */
	if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
		h++;
	return sign | (uint16_t)h;
}

float sn_bf16_to_f32(uint16_t h)
{
	return bits_float((uint32_t)h << 16);
}

uint16_t sn_f32_to_bf16(float f)
{
	uint32_t u = float_bits(f);
	if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x7fffff))
		return (uint16_t)((u >> 16) | 0x40);	/* quiet NaN, never rounds to inf */
	uint32_t rem = u & 0xffff, h = u >> 16;
	if (rem > 0x8000 || (rem == 0x8000 && (h & 1)))
		h++;
	return (uint16_t)h;
}

#define CHUNK 4096

/* Elements [at, at+n) as doubles: the dtype switch runs once per chunk,
 * not once per element. */
static void load_chunk(const sn_tensor *t, size_t at, size_t n, double *out)
{
	const unsigned char *p = t->data;
	switch (t->dtype) {
	case SN_F32:
		for (size_t i = 0; i < n; i++)
			out[i] = load_f32(p, at + i);
		break;
	case SN_U8:
		for (size_t i = 0; i < n; i++)
			out[i] = p[at + i];
		break;
	default:
		for (size_t i = 0; i < n; i++)
			out[i] = sn_tensor_get(t, at + i);
	}
}

/* Running totals, merged chunk by chunk (Chan et al.), so the variance of
 * large-mean data keeps its precision without a division per element. */
typedef struct {
	double n, mean, m2, ss, min, max;
} moments;

static void merge_chunk(moments *m, const double *v, size_t n)
{
	double cn = 0, sum = 0, mn = m->min, mx = m->max;
	for (size_t i = 0; i < n; i++)
		if (isfinite(v[i])) {
			cn++;
			sum += v[i];
			mn = v[i] < mn ? v[i] : mn;
			mx = v[i] > mx ? v[i] : mx;
		}
	if (cn == 0)
		return;
	double cmean = sum / cn, cm2 = 0, ss = 0;
	for (size_t i = 0; i < n; i++)
		if (isfinite(v[i])) {
			double d = v[i] - cmean;
			cm2 += d * d;
			ss += v[i] * v[i];
		}
	double total = m->n + cn, delta = cmean - m->mean;
	m->m2 += cm2 + delta * delta * m->n * cn / total;
	m->mean += delta * cn / total;
	m->n = total;
	m->ss += ss;
	m->min = mn;
	m->max = mx;
}

void sn_tensor_stats_compute(const sn_tensor *t, sn_tensor_stats *s)
{
	double buf[CHUNK];
	moments m = {0, 0, 0, 0, INFINITY, -INFINITY};
	int64_t n = sn_tensor_numel(t);
	memset(s, 0, sizeof *s);
	for (int64_t at = 0; at < n; at += CHUNK) {
		size_t k = (size_t)(n - at < CHUNK ? n - at : CHUNK);
		load_chunk(t, (size_t)at, k, buf);
		merge_chunk(&m, buf, k);
	}
	s->nonfinite = n - (int64_t)m.n;
	if (m.n == 0) {
		s->min = s->max = s->mean = s->std = s->l2 = n ? NAN : 0;
		return;
	}
	s->min = m.min;
	s->max = m.max;
	s->mean = m.mean;
	s->std = sqrt(m.m2 / m.n);
	s->l2 = sqrt(m.ss);
}

static double element_diff(double x, double y)
{
	if (isfinite(x) && isfinite(y))
		return fabs(x - y);
	if ((isnan(x) && isnan(y)) || x == y)
		return 0;
	return INFINITY;
}

void sn_tensor_diff_compute(const sn_tensor *a, const sn_tensor *b, sn_tensor_diff *d)
{
	double va[CHUNK], vb[CHUNK], max_abs = 0, ss_diff = 0, ss_a = 0;
	int64_t n = sn_tensor_numel(a);
	if (sn_tensor_numel(b) < n)
		n = sn_tensor_numel(b);
	for (int64_t at = 0; at < n; at += CHUNK) {
		size_t k = (size_t)(n - at < CHUNK ? n - at : CHUNK);
		load_chunk(a, (size_t)at, k, va);
		load_chunk(b, (size_t)at, k, vb);
		for (size_t i = 0; i < k; i++) {
			double e = element_diff(va[i], vb[i]);
			max_abs = e > max_abs ? e : max_abs;
			ss_diff += e * e;
			if (isfinite(va[i]))
				ss_a += va[i] * va[i];
		}
	}
	d->max_abs = max_abs;
	d->rel_l2 = ss_diff == 0 ? 0 : ss_a == 0 ? INFINITY : sqrt(ss_diff / ss_a);
}
