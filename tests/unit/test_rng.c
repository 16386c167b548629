/* Unit tests for lib/rng.c and lib/error.c. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <cmocka.h>

#include "error.h"
#include "rng.h"

static void same_seed_gives_same_stream(void **state)
{
	(void)state;
	sn_rng a, b;
	sn_rng_seed(&a, 42);
	sn_rng_seed(&b, 42);
	for (int i = 0; i < 1000; i++)
		assert_int_equal(sn_rng_next(&a), sn_rng_next(&b));
	sn_rng_seed(&b, 43);
	assert_int_not_equal(sn_rng_next(&a), sn_rng_next(&b));
}

static void format_and_parse_round_trip(void **state)
{
	(void)state;
	sn_rng a, b;
	char text[72];
	sn_rng_seed(&a, 7);
	sn_rng_next(&a);
	sn_rng_format(&a, text);
	assert_int_equal(strlen(text), 67);
	assert_int_equal(sn_rng_parse(&b, text), 0);
	assert_memory_equal(&a, &b, sizeof a);
	assert_int_equal(sn_rng_parse(&b, "not a state"), SN_EFORMAT);
	assert_int_equal(sn_rng_parse(&b, "0000000000000000:0000000000000000:"
					  "0000000000000000:0000000000000000"), SN_EFORMAT);
	strcat(text, "0");
	assert_int_equal(sn_rng_parse(&b, text), SN_EFORMAT);
}

static void uniform_and_normal_have_the_right_moments(void **state)
{
	(void)state;
	sn_rng r;
	sn_rng_seed(&r, 1);
	double su = 0, sn = 0, sn2 = 0;
	const int n = 200000;
	for (int i = 0; i < n; i++) {
		float u = sn_rng_uniform(&r);
		assert_true(u >= 0.0f && u < 1.0f);
		su += u;
		double z = sn_rng_normal(&r);
		assert_true(isfinite(z));
		sn += z;
		sn2 += z * z;
	}
	assert_true(fabs(su / n - 0.5) < 0.005);
	assert_true(fabs(sn / n) < 0.01);
	assert_true(fabs(sn2 / n - 1.0) < 0.02);
}

static void below_stays_in_range_and_shuffle_is_a_permutation(void **state)
{
	(void)state;
	sn_rng r;
	sn_rng_seed(&r, 3);
	int counts[7] = {0};
	for (int i = 0; i < 70000; i++) {
		uint64_t v = sn_rng_below(&r, 7);
		assert_true(v < 7);
		counts[v]++;
	}
	for (int i = 0; i < 7; i++)
		assert_true(counts[i] > 9000 && counts[i] < 11000);
	assert_int_equal(sn_rng_below(&r, 0), 0);
	assert_int_equal(sn_rng_below(&r, 1), 0);

	int64_t idx[100];
	int seen[100] = {0};
	for (int i = 0; i < 100; i++)
		idx[i] = i;
	sn_rng_shuffle(&r, idx, 100);
	int moved = 0;
	for (int i = 0; i < 100; i++) {
		seen[idx[i]]++;
		moved += idx[i] != i;
	}
	for (int i = 0; i < 100; i++)
		assert_int_equal(seen[i], 1);
	assert_true(moved > 50);
}

static void errors_carry_a_detail_and_an_exit_code(void **state)
{
	(void)state;
	assert_int_equal(sn_fail(SN_ETRUNC, "header ends at byte %d", 12), SN_ETRUNC);
	assert_string_equal(sn_errdetail(), "header ends at byte 12");
	sn_errclear();
	assert_string_equal(sn_errdetail(), "success");
	for (int e = 0; e > -SN_ERROR_COUNT; e--)
		assert_string_not_equal(sn_strerror(e), "unknown error");
	assert_string_equal(sn_strerror(-99), "unknown error");
	assert_int_equal(sn_exit_code(0), SN_EXIT_OK);
	assert_int_equal(sn_exit_code(SN_EIO), SN_EXIT_RUNTIME);
	assert_int_equal(sn_exit_code(SN_ENONFINITE), SN_EXIT_DIVERGED);
	assert_int_equal(sn_exit_code(SN_EQUORUM), SN_EXIT_QUORUM);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(same_seed_gives_same_stream),
		cmocka_unit_test(format_and_parse_round_trip),
		cmocka_unit_test(uniform_and_normal_have_the_right_moments),
		cmocka_unit_test(below_stays_in_range_and_shuffle_is_a_permutation),
		cmocka_unit_test(errors_carry_a_detail_and_an_exit_code),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
