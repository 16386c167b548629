/* Unit tests for lib/average: the arithmetic, order independence, quorum,
 * refusal of differing nets, and exclusion of corrupt inputs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "average.h"
#include "st.h"

static char dir[] = "/tmp/sn-test-average.XXXXXX";

static void path_of(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "%s/%s", dir, name);
}

/* A weight file with tensors a[n] = v[0..n) and b[2] = {v0, -v0}. */
static void write_weights(const char *name, const float *v, int n, int examples, int len_b)
{
	char path[256], ex[32];
	float b[3] = {v[0], -v[0], 0.5f};
	int64_t sa[1] = {n}, sb[1] = {len_b};
	sn_st st;
	sn_st_init(&st);
	snprintf(ex, sizeof ex, "%d", examples);
	assert_int_equal(sn_st_set_meta(&st, "format", "sn.weights.v1"), 0);
	assert_int_equal(sn_st_set_meta(&st, "net", "name: t\n"), 0);
	assert_int_equal(sn_st_set_meta(&st, "examples", ex), 0);
	assert_int_equal(sn_st_set_meta(&st, "loss", "1.5"), 0);
	assert_int_equal(sn_st_add(&st, "a", SN_F32, 1, sa, v, 1), 0);
	assert_int_equal(sn_st_add(&st, "b", SN_F32, 1, sb, b, 1), 0);
	path_of(path, sizeof path, name);
	assert_int_equal(sn_st_write(&st, path), 0);
	sn_st_free(&st);
}

static void read_a(const char *name, float *out, int n)
{
	char path[256];
	sn_st st;
	path_of(path, sizeof path, name);
	assert_int_equal(sn_st_read(path, &st, 0), 0);
	sn_tensor *t = sn_st_find(&st, "a");
	assert_non_null(t);
	assert_int_equal(sn_tensor_numel(t), n);
	memcpy(out, t->data, 4 * (size_t)n);
	sn_st_free(&st);
}

static int run_average(const char **names, int n, const char *out, const sn_average_opts *o,
		       sn_average_summary *s)
{
	/* static: s->bad_path points into them after the return */
	static char paths[8][256], outp[256];
	const char *p[8];
	for (int i = 0; i < n; i++) {
		path_of(paths[i], sizeof paths[i], names[i]);
		p[i] = paths[i];
	}
	path_of(outp, sizeof outp, out);
	return sn_average_files(p, n, outp, o, NULL, NULL, s);
}

/* values of very different magnitudes, so that summation order matters */
static const float V[5][4] = {
	{1e8f, 1.0f, -3.25f, 7e-8f},
	{-1e8f, 3.0f, 0.1f, 1e-3f},
	{0.3f, 1e7f, 2.5f, -1e-7f},
	{1.7f, -1e7f, 1e-9f, 0.2f},
	{3.3f, 0.7f, 1e6f, 1.1f},
};

static int setup(void **state)
{
	(void)state;
	if (!mkdtemp(dir))
		return -1;
	return 0;
}

static int teardown(void **state)
{
	char cmd[300];
	(void)state;
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void test_mean_matches_reference(void **state)
{
	(void)state;
	const char *in[3] = {"m0", "m1", "m2"};
	for (int i = 0; i < 3; i++)
		write_weights(in[i], V[i], 4, 10, 2);
	sn_average_opts o;
	sn_average_summary s;
	sn_average_opts_default(&o);
	assert_int_equal(run_average(in, 3, "mean", &o, &s), 0);
	assert_int_equal(s.used, 3);
	assert_int_equal(s.examples, 30);
	float a[4];
	read_a("mean", a, 4);
	for (int j = 0; j < 4; j++) {
		double ref = ((double)V[0][j] + V[1][j] + V[2][j]) / 3;
		assert_true(fabs(a[j] - ref) <= 1e-6 * fabs(ref) + 1e-12);
	}
}

static void test_order_does_not_matter(void **state)
{
	(void)state;
	const char *in[5] = {"o0", "o1", "o2", "o3", "o4"};
	const char *rev[5] = {"o4", "o2", "o0", "o3", "o1"};
	for (int i = 0; i < 5; i++)
		write_weights(in[i], V[i], 4, 10 * (i + 1), 2);
	sn_average_opts o;
	sn_average_summary s;
	sn_average_opts_default(&o);
	o.weighted = 1;
	assert_int_equal(run_average(in, 5, "fwd", &o, &s), 0);
	assert_int_equal(run_average(rev, 5, "rev", &o, &s), 0);
	float a[4], b[4];
	read_a("fwd", a, 4);
	read_a("rev", b, 4);
	assert_memory_equal(a, b, sizeof a);
}

static void test_outer_lr1_m0_is_the_mean(void **state)
{
	(void)state;
	const char *in[3] = {"p0", "p1", "p2"};
	for (int i = 0; i < 3; i++)
		write_weights(in[i], V[i + 1], 4, 10, 2);
	write_weights("prev", V[0], 4, 0, 2);
	char base[256], ost[256];
	path_of(base, sizeof base, "prev");
	path_of(ost, sizeof ost, "outer");
	sn_average_opts o;
	sn_average_summary s;
	sn_average_opts_default(&o);
	assert_int_equal(run_average(in, 3, "plain", &o, &s), 0);
	o.base = base;
	o.outer = 1;
	o.outer_lr = 1;
	o.outer_momentum = 0;
	o.outer_state = ost;
	assert_int_equal(run_average(in, 3, "outer1", &o, &s), 0);
	float a[4], b[4];
	read_a("plain", a, 4);
	read_a("outer1", b, 4);
	assert_memory_equal(a, b, sizeof a);
	assert_int_equal(access(ost, F_OK), 0);
}

static void test_quorum_and_corrupt_inputs(void **state)
{
	(void)state;
	const char *in[3] = {"q0", "q1", "junk"};
	write_weights("q0", V[0], 4, 1, 2);
	write_weights("q1", V[1], 4, 1, 2);
	char junk[256], out[256];
	path_of(junk, sizeof junk, "junk");
	FILE *f = fopen(junk, "w");
	assert_non_null(f);
	fputs("not a safetensors file", f);
	fclose(f);
	sn_average_opts o;
	sn_average_summary s;
	sn_average_opts_default(&o);
	o.min_inputs = 3;
	assert_int_equal(run_average(in, 3, "q", &o, &s), SN_EQUORUM);
	path_of(out, sizeof out, "q");
	assert_int_not_equal(access(out, F_OK), 0);
	o.min_inputs = 2;
	assert_int_equal(run_average(in, 3, "q", &o, &s), 0);
	assert_int_equal(s.used, 2);
	assert_int_equal(s.excluded, 1);
}

static void test_differing_nets_are_refused(void **state)
{
	(void)state;
	const char *in[2] = {"n0", "n1"};
	write_weights("n0", V[0], 4, 1, 2);
	write_weights("n1", V[1], 4, 1, 3);
	sn_average_opts o;
	sn_average_summary s;
	sn_average_opts_default(&o);
	assert_int_equal(run_average(in, 2, "n", &o, &s), SN_EMISMATCH);
	assert_non_null(strstr(s.bad_path, "n1"));
	assert_non_null(strstr(sn_errdetail(), "\"b\""));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mean_matches_reference),
		cmocka_unit_test(test_order_does_not_matter),
		cmocka_unit_test(test_outer_lr1_m0_is_the_mean),
		cmocka_unit_test(test_quorum_and_corrupt_inputs),
		cmocka_unit_test(test_differing_nets_are_refused),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
