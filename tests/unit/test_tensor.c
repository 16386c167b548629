/* Unit tests for lib/tensor.c: dtypes, shapes, half floats, statistics. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <string.h>

#include "tensor.h"

static void dtype_names_are_safetensors_spellings(void **state)
{
	(void)state;
	static const char *names[] = {"F64", "F32", "F16", "BF16", "I64", "I32", "I16",
				      "I8",  "U64", "U32", "U16", "U8",  "BOOL"};
	static const size_t sizes[] = {8, 4, 2, 2, 8, 4, 2, 1, 8, 4, 2, 1, 1};
	for (int i = 0; i < SN_DTYPE_COUNT; i++) {
		sn_dtype dt;
		assert_string_equal(sn_dtype_name((sn_dtype)i), names[i]);
		assert_int_equal(sn_dtype_parse(names[i], &dt), 0);
		assert_int_equal(dt, i);
		assert_int_equal(sn_dtype_size(dt), sizes[i]);
	}
	sn_dtype dt;
	assert_int_equal(sn_dtype_parse("f32", &dt), SN_EFORMAT);
	assert_int_equal(sn_dtype_parse("F8_E4M3", &dt), SN_EFORMAT);
	assert_int_equal(sn_dtype_parse("", &dt), SN_EFORMAT);
}

static void shape_products_detect_overflow(void **state)
{
	(void)state;
	int64_t scalar[1] = {0}, zero[3] = {4, 0, 5}, big[2] = {INT64_C(1) << 32, INT64_C(1) << 31};
	int64_t over[2] = {INT64_C(1) << 32, INT64_C(1) << 32}, neg[2] = {3, -1};
	int64_t zero_then_huge[3] = {0, INT64_MAX, INT64_MAX};
	assert_int_equal(sn_shape_numel(0, scalar), 1);
	assert_int_equal(sn_shape_numel(3, zero), 0);
	assert_int_equal(sn_shape_numel(2, big), -1);	/* 2^63 */
	big[0] = INT64_C(1) << 31;
	assert_int_equal(sn_shape_numel(2, big), INT64_C(1) << 62);
	assert_int_equal(sn_shape_numel(2, over), -1);
	assert_int_equal(sn_shape_numel(2, neg), -1);
	assert_int_equal(sn_shape_numel(3, zero_then_huge), 0);
	char buf[64];
	int64_t s[4] = {20, 1, 5, 5};
	assert_string_equal(sn_shape_format(4, s, buf, sizeof buf), "[20,1,5,5]");
	assert_string_equal(sn_shape_format(0, s, buf, sizeof buf), "[]");
	assert_string_equal(sn_shape_format(4, s, buf, 6), "[20,1");
}

static void get_reads_every_dtype_unaligned(void **state)
{
	(void)state;
	unsigned char raw[1 + 8];
	struct {
		sn_dtype dt;
		double want;
	} cases[] = {
		{SN_F64, -2.5}, {SN_F32, 0.25}, {SN_F16, 1.5},  {SN_BF16, -3}, {SN_I64, -7},
		{SN_I32, -9},   {SN_I16, -300}, {SN_I8, -128},  {SN_U64, 1e15}, {SN_U32, 4e9},
		{SN_U16, 65535}, {SN_U8, 200}, {SN_BOOL, 1},
	};
	for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
		double w = cases[k].want;
		union {
			double f64; float f32; uint16_t u16; int64_t i64; int32_t i32;
			int16_t i16; int8_t i8; uint64_t u64; uint32_t u32; uint8_t u8;
		} v;
		memset(&v, 0, sizeof v);
		switch (cases[k].dt) {
		case SN_F64: v.f64 = w; break;
		case SN_F32: v.f32 = (float)w; break;
		case SN_F16: v.u16 = sn_f32_to_f16((float)w); break;
		case SN_BF16: v.u16 = sn_f32_to_bf16((float)w); break;
		case SN_I64: v.i64 = (int64_t)w; break;
		case SN_I32: v.i32 = (int32_t)w; break;
		case SN_I16: v.i16 = (int16_t)w; break;
		case SN_I8: v.i8 = (int8_t)w; break;
		case SN_U64: v.u64 = (uint64_t)w; break;
		case SN_U32: v.u32 = (uint32_t)w; break;
		case SN_U16: v.u16 = (uint16_t)w; break;
		case SN_U8: v.u8 = (uint8_t)w; break;
		case SN_BOOL: v.u8 = 7; break;	/* any non-zero byte is true */
		default: fail();
		}
		memcpy(raw + 1, &v, 8);
		sn_tensor t = {.dtype = cases[k].dt, .ndim = 0, .data = raw + 1};
		assert_true(sn_tensor_get(&t, 0) == w);
	}
}

/* The value of half-float bits, by the definition of the format. */
static double f16_value(uint16_t h)
{
	int e = (h >> 10) & 0x1f, m = h & 0x3ff;
	double v = e ? ldexp(1.0 + m / 1024.0, e - 15) : ldexp(m / 1024.0, -14);
	if (e == 0x1f)
		v = m ? NAN : INFINITY;
	return (h & 0x8000) ? -v : v;
}

static void f16_to_f32_is_exact_for_every_half(void **state)
{
	(void)state;
	for (uint32_t h = 0; h < 0x10000; h++) {
		float f = sn_f16_to_f32((uint16_t)h);
		double want = f16_value((uint16_t)h);
		if (isnan(want)) {
			assert_true(isnan(f));
			assert_true(isnan(sn_f16_to_f32(sn_f32_to_f16(f))));
		} else {
			assert_true((double)f == want);
			assert_true(!signbit(f) == !signbit(want));
			/* every half survives the trip to float and back */
			assert_int_equal(sn_f32_to_f16(f), h);
		}
	}
}

static void f32_to_f16_rounds_to_nearest_even(void **state)
{
	(void)state;
	assert_int_equal(sn_f32_to_f16(1.0f), 0x3c00);
	assert_int_equal(sn_f32_to_f16(65504.0f), 0x7bff);
	assert_int_equal(sn_f32_to_f16(65519.99f), 0x7bff);
	assert_int_equal(sn_f32_to_f16(65520.0f), 0x7c00);	/* tie, to even: inf */
	assert_int_equal(sn_f32_to_f16(INFINITY), 0x7c00);
	assert_int_equal(sn_f32_to_f16(-INFINITY), 0xfc00);
	assert_int_equal(sn_f32_to_f16(-0.0f), 0x8000);
	assert_int_equal(sn_f32_to_f16(ldexpf(1, -24)), 0x0001);	/* smallest subnormal */
	assert_int_equal(sn_f32_to_f16(ldexpf(1, -25)), 0x0000);	/* tie, to even: 0 */
	assert_int_equal(sn_f32_to_f16(ldexpf(3, -26)), 0x0001);
	assert_int_equal(sn_f32_to_f16(ldexpf(3, -25)), 0x0002);	/* 1.5 ulp: tie to 2 */
	assert_int_equal(sn_f32_to_f16(ldexpf(1, -14) - ldexpf(1, -25)), 0x0400); /* rounds up to normal */
	assert_int_equal(sn_f32_to_f16(1.0f + ldexpf(1, -11)), 0x3c00);	/* tie, to even */
	assert_int_equal(sn_f32_to_f16(1.0f + 3 * ldexpf(1, -11)), 0x3c02);
	assert_true(isnan(sn_f16_to_f32(sn_f32_to_f16(NAN))));
	uint32_t low_payload = 0x7f800001u;	/* a NaN whose payload would be shifted away */
	float f;
	memcpy(&f, &low_payload, sizeof f);
	assert_true(isnan(sn_f16_to_f32(sn_f32_to_f16(f))));
}

#ifdef __FLT16_MAX__
/* The compiler's own conversion is IEEE round-to-nearest-even: compare on
 * a spread of bit patterns that covers every exponent. */
static void f32_to_f16_matches_the_compiler(void **state)
{
	(void)state;
	uint32_t x = 12345;
	for (int i = 0; i < 2000000; i++) {
		x = x * 1664525u + 1013904223u;
		float f;
		memcpy(&f, &x, sizeof f);
		if (isnan(f))
			continue;
		volatile _Float16 h = (_Float16)f;
		uint16_t want;
		memcpy(&want, (const void *)&h, sizeof want);
		if (sn_f32_to_f16(f) != want)
			fail_msg("f32 %08x: got %04x, want %04x", x, sn_f32_to_f16(f), want);
	}
}
#endif

static double bf16_value(uint16_t b)
{
	int e = (b >> 7) & 0xff, m = b & 0x7f;
	double v = e ? ldexp(1.0 + m / 128.0, e - 127) : ldexp(m / 128.0, -126);
	return (b & 0x8000) ? -v : v;
}

static void f32_to_bf16_rounds_to_nearest_even(void **state)
{
	(void)state;
	assert_int_equal(sn_f32_to_bf16(1.0f), 0x3f80);
	assert_int_equal(sn_f32_to_bf16(1.0f + ldexpf(1, -8)), 0x3f80);	/* tie, to even */
	assert_int_equal(sn_f32_to_bf16(1.0f + 3 * ldexpf(1, -8)), 0x3f82);
	assert_int_equal(sn_f32_to_bf16(INFINITY), 0x7f80);
	assert_int_equal(sn_f32_to_bf16(FLT_MAX), 0x7f80);	/* past the largest: inf */
	uint32_t low_payload = 0x7f800001u;
	float f;
	memcpy(&f, &low_payload, sizeof f);
	assert_true(isnan(sn_bf16_to_f32(sn_f32_to_bf16(f))));
	/* against the nearest of the two neighbours, computed in double */
	uint32_t x = 777;
	for (int i = 0; i < 1000000; i++) {
		x = x * 1664525u + 1013904223u;
		memcpy(&f, &x, sizeof f);
		if (!isfinite(f))
			continue;
		uint16_t lo = (uint16_t)(x >> 16), hi = (uint16_t)(lo + 1), got = sn_f32_to_bf16(f);
		double dlo = fabs(bf16_value(lo) - f), dhi = fabs(bf16_value(hi) - f);
		uint16_t want = dlo < dhi ? lo : dhi < dlo ? hi : (lo & 1) ? hi : lo;
		if (got != want)
			fail_msg("f32 %08x: got %04x, want %04x", x, got, want);
	}
	for (uint32_t b = 0; b < 0x10000; b++) {
		float v = sn_bf16_to_f32((uint16_t)b);
		if (!isnan(v))
			assert_int_equal(sn_f32_to_bf16(v), b);
	}
}

static void stats_are_computed_in_double(void **state)
{
	(void)state;
	float v[5] = {1, 2, 3, 4, NAN};
	sn_tensor t = {.dtype = SN_F32, .ndim = 1, .shape = {5}, .data = v, .nbytes = sizeof v};
	sn_tensor_stats s;
	sn_tensor_stats_compute(&t, &s);
	assert_true(s.min == 1 && s.max == 4 && s.mean == 2.5);
	assert_true(fabs(s.std - sqrt(1.25)) < 1e-12);
	assert_true(fabs(s.l2 - sqrt(30)) < 1e-12);
	assert_int_equal(s.nonfinite, 1);

	/* a large mean must not swallow a small spread */
	double d[3] = {1e9, 1e9 + 1, 1e9 + 2};
	sn_tensor td = {.dtype = SN_F64, .ndim = 1, .shape = {3}, .data = d, .nbytes = sizeof d};
	sn_tensor_stats_compute(&td, &s);
	assert_true(fabs(s.std - sqrt(2.0 / 3)) < 1e-9);

	/* across many chunks, with a NaN and an inf among them */
	enum { N = 10001 };
	static double big[N];
	double sum = 0, m2 = 0;
	for (int i = 0; i < N; i++)
		sum += big[i] = 1e9 + i % 3 + 0.25 * (i % 7);
	for (int i = 0; i < N; i++)
		m2 += (big[i] - sum / N) * (big[i] - sum / N);
	double want_mean = sum / N, want_std = sqrt(m2 / N);
	sn_tensor tb = {.dtype = SN_F64, .ndim = 1, .shape = {N + 2}};
	static double withbad[N + 2];
	memcpy(withbad, big, sizeof big);
	withbad[N] = NAN;
	withbad[N + 1] = -INFINITY;
	tb.data = withbad;
	sn_tensor_stats_compute(&tb, &s);
	assert_int_equal(s.nonfinite, 2);
	assert_true(fabs(s.mean - want_mean) < 1e-6);
	assert_true(fabs(s.std - want_std) < 1e-9);
	assert_true(s.min == 1e9 && s.max == 1e9 + 2 + 1.5);

	sn_tensor empty = {.dtype = SN_F32, .ndim = 1, .shape = {0}};
	sn_tensor_stats_compute(&empty, &s);
	assert_true(s.mean == 0 && s.l2 == 0 && s.nonfinite == 0);
}

static void diff_reports_max_abs_and_relative_l2(void **state)
{
	(void)state;
	float a[3] = {3, 4, 0}, b[3] = {3, 4, 0}, c[3] = {3, 4, 5}, n1[2] = {NAN, 1}, n2[2] = {NAN, 1};
	sn_tensor ta = {.dtype = SN_F32, .ndim = 1, .shape = {3}, .data = a};
	sn_tensor tb = ta, tc = ta;
	tb.data = b;
	tc.data = c;
	sn_tensor_diff d;
	sn_tensor_diff_compute(&ta, &tb, &d);
	assert_true(d.max_abs == 0 && d.rel_l2 == 0);
	sn_tensor_diff_compute(&ta, &tc, &d);
	assert_true(d.max_abs == 5 && d.rel_l2 == 1);
	sn_tensor tn1 = {.dtype = SN_F32, .ndim = 1, .shape = {2}, .data = n1}, tn2 = tn1;
	tn2.data = n2;
	sn_tensor_diff_compute(&tn1, &tn2, &d);
	assert_true(d.max_abs == 0);
	n2[0] = 0;
	sn_tensor_diff_compute(&tn1, &tn2, &d);
	assert_true(isinf(d.max_abs));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(dtype_names_are_safetensors_spellings),
		cmocka_unit_test(shape_products_detect_overflow),
		cmocka_unit_test(get_reads_every_dtype_unaligned),
		cmocka_unit_test(f16_to_f32_is_exact_for_every_half),
		cmocka_unit_test(f32_to_f16_rounds_to_nearest_even),
#ifdef __FLT16_MAX__
		cmocka_unit_test(f32_to_f16_matches_the_compiler),
#endif
		cmocka_unit_test(f32_to_bf16_rounds_to_nearest_even),
		cmocka_unit_test(stats_are_computed_in_double),
		cmocka_unit_test(diff_reports_max_abs_and_relative_l2),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
