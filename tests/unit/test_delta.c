/* Unit tests for lib/delta: none is lossless, each scheme keeps its error
 * bound, error feedback keeps the sum of what was sent within one step of
 * the true sum over many rounds (and without it the sum drifts), and decode
 * refuses what it must. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "delta.h"
#include "rng.h"
#include "st.h"

/* A weight file in memory: tensor "a" [n] and "b" [3] (a copy of v). */
static void make_weights(sn_st *st, const float *a, int64_t n, const float *b)
{
	int64_t sb = 3;
	sn_st_init(st);
	assert_int_equal(sn_st_set_meta(st, "format", "sn.weights.v1"), 0);
	assert_int_equal(sn_st_set_meta(st, "net", "name: t\n"), 0);
	assert_int_equal(sn_st_set_meta(st, "round", "7"), 0);
	assert_int_equal(sn_st_add(st, "a", SN_F32, 1, &n, a, 1), 0);
	assert_int_equal(sn_st_add(st, "b", SN_F32, 1, &sb, b, 1), 0);
}

static const float B0[3] = {0.5f, -0.25f, 3.0f};

static void test_scheme_names(void **unused)
{
	(void)unused;
	sn_delta_scheme s;
	const char *names[] = {"none", "bf16", "int8", "int4"};
	for (int i = 0; i < 4; i++) {
		assert_int_equal(sn_delta_scheme_parse(names[i], &s), 0);
		assert_int_equal(s, i);
		assert_string_equal(sn_delta_scheme_name(s), names[i]);
	}
	assert_int_equal(sn_delta_scheme_parse("int3", &s), SN_EINVAL);
	assert_int_equal(sn_delta_scheme_parse("", &s), SN_EINVAL);
}

/* Encode new - base, decode it again; w is the reconstruction. */
static void round_trip(const sn_st *base, const sn_st *nw, const sn_delta_opts *o, sn_st *w,
		       sn_delta_summary *s)
{
	sn_st delta;
	assert_int_equal(sn_delta_encode(base, nw, NULL, o, &delta, NULL, s), 0);
	assert_int_equal(sn_delta_decode(base, &delta, w), 0);
	sn_st_free(&delta);
}

static void test_none_is_lossless(void **unused)
{
	(void)unused;
	float big = FLT_MAX, den = 1.4e-45f;
	float a0[10] = {0.0f, -0.0f, 1.0f, den, -1e-40f, big, -big, 5.5f, 1e-3f, 1e30f};
	float a1[10] = {-0.0f, 0.0f, nextafterf(1.0f, 2.0f), -den, 1e-40f, -big, big, 5.5f,
			2e-38f, -1e-30f};
	float b1[3] = {0.5f, 0.25f, -3.0f};
	sn_st base, nw, w;
	sn_delta_opts o;
	sn_delta_summary s;
	sn_delta_opts_default(&o);
	make_weights(&base, a0, 10, B0);
	make_weights(&nw, a1, 10, b1);
	round_trip(&base, &nw, &o, &w, &s);
	assert_int_equal(s.tensors, 2);
	assert_int_equal(s.values, 13);
	assert_true(s.max_abs_error == 0);
	for (int t = 0; t < 2; t++) {
		const sn_tensor *x = &nw.tensors[t], *y = sn_st_find(&w, x->name);
		assert_non_null(y);
		assert_int_equal(x->nbytes, y->nbytes);
		assert_memory_equal(x->data, y->data, x->nbytes);
	}
	assert_string_equal(sn_st_meta(&w, "format"), "sn.weights.v1");
	assert_string_equal(sn_st_meta(&w, "net"), "name: t\n");
	assert_string_equal(sn_st_meta(&w, "round"), "7");
	sn_st_free(&w);
	sn_st_free(&base);
	sn_st_free(&nw);
}

/* Values spread over many magnitudes, so blocks differ widely in scale. */
static void random_values(float *v, int64_t n, uint64_t seed, double spread)
{
	sn_rng r;
	sn_rng_seed(&r, seed);
	for (int64_t i = 0; i < n; i++)
		v[i] = (float)(sn_rng_normal(&r) * pow(10.0, spread * (sn_rng_uniform(&r) - 0.5)));
}

static void test_error_bounds(void **unused)
{
	(void)unused;
	enum { N = 1000 };   /* 1000 = 15 blocks of 64 and one of 40; 1000/7 leaves 6 */
	float *a0 = malloc(4 * N), *a1 = malloc(4 * N);
	assert_non_null(a0);
	assert_non_null(a1);
	random_values(a0, N, 1, 4);
	random_values(a1, N, 2, 4);
	for (int i = 0; i < N; i++)
		a1[i] = a0[i] + a1[i] * 0.01f;
	sn_st base, nw;
	make_weights(&base, a0, N, B0);
	make_weights(&nw, a1, N, B0);
	const sn_delta_scheme schemes[] = {SN_DELTA_BF16, SN_DELTA_INT8, SN_DELTA_INT4, SN_DELTA_INT4};
	const int blocks[] = {0, 64, 64, 7};
	for (int c = 0; c < 4; c++) {
		sn_delta_opts o;
		sn_delta_summary s;
		sn_st delta, w;
		sn_delta_opts_default(&o);
		o.scheme = schemes[c];
		o.block = blocks[c] ? blocks[c] : 64;
		assert_int_equal(sn_delta_encode(&base, &nw, NULL, &o, &delta, NULL, &s), 0);
		assert_int_equal(sn_delta_decode(&base, &delta, &w), 0);
		const float *got = sn_st_find(&w, "a")->data;
		const sn_tensor *sc = sn_st_find(&delta, "a.scale");
		double worst = 0;
		for (int i = 0; i < N; i++) {
			double t = (double)a1[i] - (double)a0[i];
			double err = fabs((double)got[i] - (double)a1[i]);
			/* the float32 addition base + value adds at most half an ulp */
			double ulp = (double)nextafterf(fabsf(a1[i]), INFINITY) - fabs((double)a1[i]);
			double bound;
			if (o.scheme == SN_DELTA_BF16) {
				bound = fabs(t) * 0x1p-8 + ulp;
			} else {
				float scale;
				memcpy(&scale, (const char *)sc->data + 4 * (i / o.block), 4);
				bound = scale / 2.0 * (1 + 0x1p-16) + ulp;
			}
			assert_true(err <= bound);
			worst = fmax(worst, err);
		}
		assert_true(worst > 0);   /* lossy: the test could fail */
		assert_true(fabs(worst - s.max_abs_error) <= 1e-12 * fmax(1, worst));
		if (sc)
			assert_int_equal(sc->shape[0], (N + o.block - 1) / o.block);
		sn_st_free(&delta);
		sn_st_free(&w);
	}
	sn_st_free(&base);
	sn_st_free(&nw);
	free(a0);
	free(a1);
}

/* R rounds of one worker: it adds g (a small steady drift plus noise, and a
 * large value per block that sets the scale) to the weights it received,
 * sends the delta, and the receiver applies it.  Returns the largest
 * |(W_R - W_0) - sum of true updates| and in *step the largest quantisation
 * step of the last round. */
static double run_rounds(sn_delta_scheme scheme, int feedback, int rounds, double *step)
{
	enum { N = 256, BLOCK = 64 };
	float w[N], nw[N], r[N + 3] = {0}, r_out[N + 3];   /* residuals: a, then b */
	double sum_true[N] = {0};
	float w0[N];
	sn_rng rng;
	sn_rng_seed(&rng, 42);
	for (int i = 0; i < N; i++)
		w0[i] = w[i] = (float)(sn_rng_normal(&rng) * 0.1);
	*step = 0;
	for (int k = 0; k < rounds; k++) {
		for (int i = 0; i < N; i++) {
			/* bf16: 1 + 2^-9 lies between two bf16 values: a steady loss;
			 * int: 0.3 of a step below the block's largest value, rounded to 0 */
			double g = scheme == SN_DELTA_BF16 ? 1.0 + 0x1p-9 + 0x1p-12 * sn_rng_uniform(&rng)
					 : i % BLOCK == 0 ? 1.0 : 0.3 / (scheme == SN_DELTA_INT8 ? 127 : 7) *
								(0.9 + 0.1 * sn_rng_uniform(&rng));
			nw[i] = (float)((double)w[i] + g);
			sum_true[i] += (double)nw[i] - (double)w[i];
		}
		sn_st base, next, delta, got;
		make_weights(&base, w, N, B0);
		make_weights(&next, nw, N, B0);
		sn_delta_opts o;
		sn_delta_summary s;
		sn_delta_opts_default(&o);
		o.scheme = scheme;
		o.block = BLOCK;
		assert_int_equal(sn_delta_encode(&base, &next, feedback ? r : NULL, &o, &delta,
						 feedback ? r_out : NULL, &s), 0);
		assert_int_equal(sn_delta_decode(&base, &delta, &got), 0);
		memcpy(w, sn_st_find(&got, "a")->data, sizeof w);
		if (feedback)
			memcpy(r, r_out, sizeof r);
		if (k == rounds - 1) {   /* int: the scale; bf16: an ulp, 2^-7 of the difference */
			const sn_tensor *sc = sn_st_find(&delta, "a.scale");
			const float *b = base.tensors[0].data;
			for (int i = 0; i < N; i++) {
				float v = 0;
				if (sc)
					memcpy(&v, (const char *)sc->data + 4 * (i / BLOCK), 4);
				*step = fmax(*step, sc ? (double)v
						       : fabs((double)nw[i] - (double)b[i]) * 0x1p-7);
			}
		}
		sn_st_free(&base);
		sn_st_free(&next);
		sn_st_free(&delta);
		sn_st_free(&got);
	}
	double worst = 0;
	for (int i = 0; i < N; i++)
		worst = fmax(worst, fabs(((double)w[i] - (double)w0[i]) - sum_true[i]));
	return worst;
}

static void test_error_feedback_tracks_the_true_sum(void **unused)
{
	(void)unused;
	const sn_delta_scheme schemes[] = {SN_DELTA_INT8, SN_DELTA_INT4, SN_DELTA_BF16};
	for (int c = 0; c < 3; c++) {
		double step_fb, step_plain;
		double with = run_rounds(schemes[c], 1, 200, &step_fb);
		double without = run_rounds(schemes[c], 0, 200, &step_plain);
		print_message("# %s over 200 rounds: |sent - true| %.3g with feedback, %.3g "
			      "without; one step %.3g\n", sn_delta_scheme_name(schemes[c]), with,
			      without, step_fb);
		assert_true(step_fb > 0);
		assert_true(with <= step_fb);            /* bounded: within one step */
		assert_true(without > 20 * step_plain);  /* drifts: many steps off */
		assert_true(without > 20 * with);
	}
}

static void test_decode_refuses_other_base(void **unused)
{
	(void)unused;
	float a0[4] = {1, 2, 3, 4}, a1[4] = {1.5f, 2, 3, 4.5f}, other[4] = {1, 2, 3, 5};
	sn_st base, nw, ob, delta, w;
	sn_delta_opts o;
	sn_delta_summary s;
	sn_delta_opts_default(&o);
	o.scheme = SN_DELTA_INT8;
	make_weights(&base, a0, 4, B0);
	make_weights(&nw, a1, 4, B0);
	make_weights(&ob, other, 4, B0);
	assert_int_equal(sn_delta_encode(&base, &nw, NULL, &o, &delta, NULL, &s), 0);
	assert_int_equal(sn_delta_decode(&ob, &delta, &w), SN_EMISMATCH);
	assert_non_null(strstr(sn_errdetail(), "made against other weights"));
	assert_int_equal(w.ntensors, 0);
	/* a scale made negative is refused, not decoded */
	float neg = -1.0f;
	memcpy(sn_st_find(&delta, "a.scale")->data, &neg, 4);
	assert_int_equal(sn_delta_decode(&base, &delta, &w), SN_EFORMAT);
	assert_non_null(strstr(sn_errdetail(), "negative"));
	sn_st_free(&delta);
	/* NEW with other tensors than BASE cannot be encoded */
	float a5[5] = {0};
	sn_st n5;
	make_weights(&n5, a5, 5, B0);
	assert_int_equal(sn_delta_encode(&base, &n5, NULL, &o, &delta, NULL, &s), SN_EMISMATCH);
	sn_st_free(&n5);
	sn_st_free(&base);
	sn_st_free(&nw);
	sn_st_free(&ob);
}

static void test_int4_nibble_order(void **unused)
{
	(void)unused;
	/* differences 7s, -7s, 0, 3s: codes 7, -7, 0, 3 -> bytes 0x97, 0x30 */
	float a0[4] = {0, 0, 0, 0}, a1[4] = {7, -7, 0, 3};
	sn_st base, nw, delta;
	sn_delta_opts o;
	sn_delta_summary s;
	sn_delta_opts_default(&o);
	o.scheme = SN_DELTA_INT4;
	make_weights(&base, a0, 4, B0);
	make_weights(&nw, a1, 4, B0);
	assert_int_equal(sn_delta_encode(&base, &nw, NULL, &o, &delta, NULL, &s), 0);
	const sn_tensor *c = sn_st_find(&delta, "a");
	assert_int_equal(c->dtype, SN_U8);
	assert_int_equal(c->nbytes, 2);
	assert_int_equal(((uint8_t *)c->data)[0], 0x97);
	assert_int_equal(((uint8_t *)c->data)[1], 0x30);
	float scale;
	memcpy(&scale, sn_st_find(&delta, "a.scale")->data, 4);
	assert_true(scale == 1.0f);
	assert_true(s.max_abs_error == 0);
	sn_st_free(&delta);
	sn_st_free(&base);
	sn_st_free(&nw);
}

/* The files: a delta and its residual appear together, and a residual for
 * other weights is refused before anything is written. */
static void test_files_with_feedback(void **unused)
{
	(void)unused;
	char dir[] = "/tmp/sn-test-delta.XXXXXX", pb[256], pn[256], pd[256], pr[256], pw[256];
	assert_non_null(mkdtemp(dir));
	snprintf(pb, sizeof pb, "%s/base", dir);
	snprintf(pn, sizeof pn, "%s/new", dir);
	snprintf(pd, sizeof pd, "%s/delta.gz", dir);
	snprintf(pr, sizeof pr, "%s/resid", dir);
	snprintf(pw, sizeof pw, "%s/w", dir);
	float a0[100], a1[100];
	random_values(a0, 100, 3, 2);
	random_values(a1, 100, 4, 2);
	sn_st base, nw;
	make_weights(&base, a0, 100, B0);
	make_weights(&nw, a1, 100, B0);
	assert_int_equal(sn_st_write(&base, pb), 0);
	assert_int_equal(sn_st_write(&nw, pn), 0);
	sn_delta_opts o;
	sn_delta_summary s;
	sn_delta_opts_default(&o);
	o.scheme = SN_DELTA_INT4;
	o.feedback = pr;
	assert_int_equal(sn_delta_diff_files(pb, pn, pd, &o, &s), 0);
	assert_true(s.residual_max_abs > 0);
	assert_int_equal(sn_delta_apply_files(pb, pd, pw, &s), 0);
	/* the residual is exactly NEW - what the receiver got */
	sn_st w, r;
	assert_int_equal(sn_st_read(pw, &w, 0), 0);
	assert_int_equal(sn_st_read(pr, &r, 0), 0);
	assert_string_equal(sn_st_meta(&r, "format"), "sn.residual.v1");
	for (int i = 0; i < 100; i++) {
		float got = ((const float *)sn_st_find(&w, "a")->data)[i];
		float res = ((const float *)sn_st_find(&r, "a")->data)[i];
		assert_true(res == (float)((double)a1[i] - (double)got));
	}
	sn_st_free(&w);
	sn_st_free(&r);
	/* same base, different tensors: the residual no longer fits */
	sn_st_free(&base);
	sn_st_free(&nw);
	make_weights(&base, a0, 50, B0);
	make_weights(&nw, a1, 50, B0);
	assert_int_equal(sn_st_write(&base, pb), 0);
	assert_int_equal(sn_st_write(&nw, pn), 0);
	struct stat before, after;
	assert_int_equal(stat(pd, &before), 0);
	assert_int_equal(sn_delta_diff_files(pb, pn, pd, &o, &s), SN_EMISMATCH);
	assert_string_equal(s.bad_path, pr);
	assert_int_equal(stat(pd, &after), 0);
	assert_int_equal(before.st_ino, after.st_ino);
	sn_st_free(&base);
	sn_st_free(&nw);
	const char *names[] = {"base", "new", "delta.gz", "resid", "w"};
	for (int i = 0; i < 5; i++) {
		char p[300];
		snprintf(p, sizeof p, "%s/%s", dir, names[i]);
		assert_int_equal(unlink(p), 0);
	}
	assert_int_equal(rmdir(dir), 0);   /* no part files were left behind */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_scheme_names),
		cmocka_unit_test(test_none_is_lossless),
		cmocka_unit_test(test_error_bounds),
		cmocka_unit_test(test_error_feedback_tracks_the_true_sum),
		cmocka_unit_test(test_decode_refuses_other_base),
		cmocka_unit_test(test_int4_nibble_order),
		cmocka_unit_test(test_files_with_feedback),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
