/* Unit tests for lib/solver.c: each update against a double-precision
 * reference written from the PyTorch formulas, each lr policy against
 * values computed by hand, and strict configuration parsing. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <cmocka.h>

#include "error.h"
#include "rng.h"
#include "solver.h"

#define N 37           /* odd, so a vectorised loop also runs its tail */
#define STEPS 5

static void set(sn_solver_config *c, const char *key, const char *value)
{
	assert_int_equal(sn_solver_config_set(c, key, value), 0);
}

/* The reference: one step in double, with the formulas as torch.optim
 * documents them (weight decay added to g, adamw decoupled). */
static void reference_step(const sn_solver_config *c, int64_t step, double *w,
			   double *g, double *m, double *v, int n)
{
	double lr = sn_solver_lr(c, step);
	const char *t = c->type;
	if (c->clip_norm > 0) {
		double s = 0;
		for (int i = 0; i < n; i++)
			s += g[i] * g[i];
		s = sqrt(s);
		if (s > c->clip_norm)
			for (int i = 0; i < n; i++)
				g[i] *= c->clip_norm / (s + 1e-6);
	}
	for (int i = 0; i < n; i++) {
		if (strcmp(t, "adamw") == 0)
			w[i] -= lr * c->weight_decay * w[i];
		else
			g[i] += c->weight_decay * w[i];
		if (strcmp(t, "sgd") == 0) {
			w[i] -= lr * g[i];
		} else if (strcmp(t, "momentum") == 0) {
			m[i] = c->momentum * m[i] + g[i];
			w[i] -= lr * m[i];
		} else if (strcmp(t, "nesterov") == 0) {
			m[i] = c->momentum * m[i] + g[i];
			w[i] -= lr * (g[i] + c->momentum * m[i]);
		} else if (strcmp(t, "adagrad") == 0) {
			m[i] += g[i] * g[i];
			w[i] -= lr * g[i] / (sqrt(m[i]) + c->eps);
		} else if (strcmp(t, "rmsprop") == 0) {
			m[i] = c->rms_decay * m[i] + (1 - c->rms_decay) * g[i] * g[i];
			w[i] -= lr * g[i] / (sqrt(m[i]) + c->eps);
		} else {
			double k = (double)step + 1;
			m[i] = c->beta1 * m[i] + (1 - c->beta1) * g[i];
			v[i] = c->beta2 * v[i] + (1 - c->beta2) * g[i] * g[i];
			double mhat = m[i] / (1 - pow(c->beta1, k));
			double vhat = v[i] / (1 - pow(c->beta2, k));
			w[i] -= lr * mhat / (sqrt(vhat) + c->eps);
		}
	}
}

/* Run STEPS updates of the solver and of the reference on the same
 * gradients (a fixed function of w, so trajectories must agree). */
static void compare_with_reference(sn_solver_config *c)
{
	float w[N], g[N], m1[N] = {0}, m2[N] = {0};
	double wd[N], gd[N], md[N] = {0}, vd[N] = {0};
	sn_rng r;
	sn_rng_seed(&r, 3);
	for (int i = 0; i < N; i++)
		wd[i] = w[i] = (float)sn_rng_normal(&r);
	assert_int_equal(sn_solver_config_check(c), 0);
	int nb = sn_solver_nbuffers(c);
	for (int64_t s = 0; s < STEPS; s++) {
		for (int i = 0; i < N; i++) {
			/* gradient of a quadratic with varied curvature, plus noise */
			double noise = sn_rng_normal(&r) * 0.1;
			gd[i] = (1 + i % 5) * wd[i] + noise;
			g[i] = (float)((1 + i % 5) * w[i] + noise);
		}
		sn_solver_step(c, s, w, g, nb > 0 ? m1 : NULL, nb > 1 ? m2 : NULL, N);
		reference_step(c, s, wd, gd, md, vd, N);
	}
	for (int i = 0; i < N; i++) {
		double tol = 2e-5 * (1 + fabs(wd[i]));
		if (fabs(w[i] - wd[i]) > tol)
			fail_msg("%s: w[%d] = %.9g, reference %.9g", c->type, i, w[i], wd[i]);
	}
	/* the weights moved: a test that cannot fail would not show this */
	assert_true(fabs(wd[0]) > 0);
}

static void each_solver_matches_a_double_precision_reference(void **state)
{
	(void)state;
	const char *types[] = {"sgd", "momentum", "nesterov", "adagrad", "rmsprop",
			       "adam", "adamw"};
	for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
		for (int decay = 0; decay < 2; decay++) {
			sn_solver_config c;
			sn_solver_config_default(&c);
			set(&c, "type", types[k]);
			set(&c, "lr", "0.05");
			if (decay)
				set(&c, "weight_decay", "0.01");
			compare_with_reference(&c);
		}
	}
}

static void momentum_first_step_is_plain_sgd(void **state)
{
	(void)state;
	sn_solver_config c;
	sn_solver_config_default(&c);
	set(&c, "type", "momentum");
	set(&c, "lr", "0.5");
	float w[3] = {1, 2, 3}, g[3] = {1, -1, 2}, m[3] = {0};
	sn_solver_step(&c, 0, w, g, m, NULL, 3);
	assert_true(fabsf(w[0] - 0.5f) < 1e-7f && fabsf(w[1] - 2.5f) < 1e-7f &&
		    fabsf(w[2] - 2.0f) < 1e-7f);
	assert_true(m[0] == 1 && m[1] == -1 && m[2] == 2);
	/* second step: m = 0.9*m + g */
	float g2[3] = {1, 1, 1};
	sn_solver_step(&c, 1, w, g2, m, NULL, 3);
	assert_true(fabsf(m[0] - 1.9f) < 1e-6f && fabsf(w[0] - (0.5f - 0.95f)) < 1e-6f);
}

static void clipping_scales_the_global_norm(void **state)
{
	(void)state;
	sn_solver_config c;
	sn_solver_config_default(&c);
	set(&c, "lr", "1");
	set(&c, "clip_norm", "1");
	float w[2] = {0, 0}, g[2] = {3, 4};
	assert_true(fabs(sn_grad_norm(g, 2) - 5.0) < 1e-12);
	sn_solver_step(&c, 0, w, g, NULL, NULL, 2);
	assert_true(fabsf(w[0] + 0.6f) < 1e-5f && fabsf(w[1] + 0.8f) < 1e-5f);
	/* under the threshold nothing changes */
	float w2[2] = {0, 0}, g2[2] = {0.3f, 0.4f};
	sn_solver_step(&c, 0, w2, g2, NULL, NULL, 2);
	assert_true(w2[0] == -0.3f && w2[1] == -0.4f);
	set(&c, "type", "adam");
	compare_with_reference(&c);
}

static void lr_close(const sn_solver_config *c, int64_t step, double expect)
{
	double lr = sn_solver_lr(c, step);
	if (fabs(lr - expect) > 1e-12 * (1 + fabs(expect)))
		fail_msg("%s step %lld: lr %.15g, expected %.15g", c->lr_policy,
			 (long long)step, lr, expect);
}

static void lr_policies_follow_caffe(void **state)
{
	(void)state;
	sn_solver_config c;
	sn_solver_config_default(&c);
	set(&c, "lr", "0.1");
	assert_int_equal(sn_solver_config_check(&c), 0);
	lr_close(&c, 0, 0.1);
	lr_close(&c, 123456, 0.1);

	set(&c, "lr_policy", "step");
	assert_int_equal(sn_solver_config_check(&c), SN_EINVAL);   /* no step_size */
	set(&c, "step_size", "100");
	set(&c, "gamma", "0.5");
	assert_int_equal(sn_solver_config_check(&c), 0);
	lr_close(&c, 99, 0.1);
	lr_close(&c, 100, 0.05);
	lr_close(&c, 250, 0.025);

	set(&c, "lr_policy", "multistep");
	set(&c, "multistep", "10,30,70");
	lr_close(&c, 9, 0.1);
	lr_close(&c, 10, 0.05);
	lr_close(&c, 69, 0.025);
	lr_close(&c, 70, 0.0125);

	set(&c, "lr_policy", "exp");
	set(&c, "gamma", "0.99");
	lr_close(&c, 3, 0.1 * 0.970299);

	set(&c, "lr_policy", "inv");
	set(&c, "gamma", "0.0001");
	set(&c, "power", "0.75");
	lr_close(&c, 10000, 0.1 * pow(2.0, -0.75));

	set(&c, "lr_policy", "poly");
	set(&c, "max_steps", "1000");
	set(&c, "power", "2");
	lr_close(&c, 500, 0.025);
	lr_close(&c, 1000, 0);
	lr_close(&c, 5000, 0);

	set(&c, "lr_policy", "cosine");
	set(&c, "lr_min", "0.01");
	lr_close(&c, 0, 0.1);
	lr_close(&c, 500, 0.055);
	lr_close(&c, 1000, 0.01);
	lr_close(&c, 3000, 0.01);
	assert_int_equal(sn_solver_config_check(&c), 0);
}

static void warmup_ramps_linearly_on_top_of_the_policy(void **state)
{
	(void)state;
	sn_solver_config c;
	sn_solver_config_default(&c);
	set(&c, "lr", "0.1");
	set(&c, "warmup", "4");
	lr_close(&c, 0, 0.025);
	lr_close(&c, 1, 0.05);
	lr_close(&c, 3, 0.1);
	lr_close(&c, 4, 0.1);
	set(&c, "lr_policy", "step");
	set(&c, "step_size", "2");
	lr_close(&c, 2, 0.1 * 0.1 * 0.75);
}

static void config_rejects_unknown_keys_and_bad_values(void **state)
{
	(void)state;
	sn_solver_config c;
	sn_solver_config_default(&c);
	assert_int_equal(sn_solver_config_set(&c, "learning_rate", "0.1"), SN_EINVAL);
	assert_string_equal(sn_errdetail(), "unknown solver key \"learning_rate\"");
	assert_int_equal(sn_solver_config_set(&c, "lr", "0.1x"), SN_EINVAL);
	assert_string_equal(sn_errdetail(), "lr: invalid number \"0.1x\"");
	assert_int_equal(sn_solver_config_set(&c, "lr", ""), SN_EINVAL);
	assert_int_equal(sn_solver_config_set(&c, "lr", "nan"), SN_EINVAL);
	assert_int_equal(sn_solver_config_set(&c, "lr", "1e999"), SN_EINVAL);
	assert_int_equal(sn_solver_config_set(&c, "batch", "0"), SN_EINVAL);
	assert_int_equal(sn_solver_config_set(&c, "batch", "64.5"), SN_EINVAL);
	assert_int_equal(sn_solver_config_set(&c, "type", "lbfgs"), SN_EINVAL);
	assert_int_equal(sn_solver_config_set(&c, "type", "adamwwwwwwwwwwwwwwwwwwww"), SN_EINVAL);
	assert_int_equal(sn_solver_config_set(&c, "lr_policy", "sigmoid"), SN_EINVAL);
	assert_int_equal(sn_solver_config_set(&c, "multistep", "30,10"), SN_EINVAL);
	assert_int_equal(sn_solver_config_set(&c, "multistep", "10,,30"), SN_EINVAL);
	assert_int_equal(sn_solver_config_set(&c, "multistep", "10,"), SN_EINVAL);
	assert_int_equal(sn_solver_config_set(&c, "multistep",
		"1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17"), SN_EINVAL);
	/* nothing above changed the defaults */
	sn_solver_config d;
	sn_solver_config_default(&d);
	assert_memory_equal(&c, &d, sizeof c);

	set(&c, "batch", "128");
	assert_int_equal(c.batch, 128);
	set(&c, "momentum", "1");
	assert_int_equal(sn_solver_config_check(&c), SN_EINVAL);
	set(&c, "momentum", "0.9");
	set(&c, "lr", "-0.1");
	assert_int_equal(sn_solver_config_check(&c), SN_EINVAL);
	set(&c, "lr", "0.1");
	set(&c, "lr_min", "0.5");
	assert_int_equal(sn_solver_config_check(&c), SN_EINVAL);
	set(&c, "lr_min", "0");
	set(&c, "eps", "0");
	assert_int_equal(sn_solver_config_check(&c), SN_EINVAL);
	set(&c, "eps", "1e-8");
	assert_int_equal(sn_solver_config_check(&c), 0);
}

static void buffers_match_the_solver_type(void **state)
{
	(void)state;
	const char *types[] = {"sgd", "momentum", "nesterov", "adagrad", "rmsprop",
			       "adam", "adamw"};
	const int want[] = {0, 1, 1, 1, 1, 2, 2};
	sn_solver_config c;
	sn_solver_config_default(&c);
	for (int i = 0; i < 7; i++) {
		set(&c, "type", types[i]);
		assert_int_equal(sn_solver_nbuffers(&c), want[i]);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(each_solver_matches_a_double_precision_reference),
		cmocka_unit_test(momentum_first_step_is_plain_sgd),
		cmocka_unit_test(clipping_scales_the_global_norm),
		cmocka_unit_test(lr_policies_follow_caffe),
		cmocka_unit_test(warmup_ramps_linearly_on_top_of_the_policy),
		cmocka_unit_test(config_rejects_unknown_keys_and_bad_values),
		cmocka_unit_test(buffers_match_the_solver_type),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
