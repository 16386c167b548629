/* Unit tests for lib/train.c: the SGD loop, solver state files, resume bit
 * for bit, data checks, divergence, and evaluation totals.  A tiny dense net
 * on a table written by sn_st_write keeps every test well under a second. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "data.h"
#include "model.h"
#include "net.h"
#include "st.h"
#include "train.h"

static const char tiny_yaml[] =
	"name: tiny\n"
	"input: [4]\n"
	"layers:\n"
	"  - {type: dense, name: fc1, units: 8}\n"
	"  - relu\n"
	"  - {type: dense, name: fc2, units: 3}\n"
	"  - softmax_cross_entropy\n"
	"solver: {type: momentum, lr: 0.05, batch: 4}\n";

#define N_EXAMPLES 10

typedef struct {
	char dir[64];
	char data[96], state[96], other[96];
} fixture;

/* A learnable table: the label is the largest of three linear features. */
static int write_table(const char *path, int n, int dim, int label_limit)
{
	float *x = malloc((size_t)n * (size_t)dim * sizeof *x);
	int32_t *y = malloc((size_t)n * sizeof *y);
	sn_rng r;
	sn_st st;
	int err;
	sn_rng_seed(&r, 5);
	for (int i = 0; i < n; i++) {
		for (int j = 0; j < dim; j++)
			x[i * dim + j] = sn_rng_uniform(&r) * 2 - 1;
		float f0 = x[i * dim], f1 = x[i * dim + 1], f2 = -x[i * dim] - x[i * dim + 1];
		y[i] = f0 > f1 ? (f0 > f2 ? 0 : 2) : (f1 > f2 ? 1 : 2);
		if (label_limit > 3)
			y[i] = i % label_limit;   /* some labels beyond the net's 3 */
	}
	int64_t xs[2] = {n, dim}, ys[1] = {n};
	sn_st_init(&st);
	err = sn_st_add(&st, "x", SN_F32, 2, xs, x, 1);
	if (!err)
		err = sn_st_add(&st, "y", SN_I32, 1, ys, y, 1);
	if (!err)
		err = sn_st_set_meta(&st, "format", "sn.data.v1");
	if (!err)
		err = sn_st_set_meta(&st, "classes", label_limit > 3 ? "5" : "3");
	if (!err)
		err = sn_st_set_meta(&st, "mean", "[0]");
	if (!err)
		err = sn_st_set_meta(&st, "std", "[1]");
	if (!err)
		err = sn_st_write(&st, path);
	sn_st_free(&st);
	free(x);
	free(y);
	return err;
}

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof *f);
	if (!f)
		return -1;
	snprintf(f->dir, sizeof f->dir, "/tmp/sn-train-test.XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->data, sizeof f->data, "%s/data.safetensors", f->dir);
	snprintf(f->state, sizeof f->state, "%s/state.safetensors", f->dir);
	snprintf(f->other, sizeof f->other, "%s/other.safetensors", f->dir);
	if (write_table(f->data, N_EXAMPLES, 4, 3))
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	unlink(f->data);
	unlink(f->state);
	unlink(f->other);
	rmdir(f->dir);
	free(f);
	return 0;
}

static void tiny_net(sn_net *net)
{
	assert_int_equal(sn_net_parse(tiny_yaml, strlen(tiny_yaml), "tiny.yaml", net), 0);
	assert_int_equal(sn_net_init_weights(net, "he", 0, 3), 0);
}

/* Run `iters` steps, through the state file when `path` is given. */
static void train(sn_net *net, const char *data, const char *path, int64_t first,
		  int64_t iters, sn_train_result *res)
{
	sn_data d;
	sn_model m;
	sn_train_state s;
	int found;
	sn_train_options o = {.iters = iters, .first_step = first};
	assert_int_equal(sn_data_open(data, &d), 0);
	assert_int_equal(sn_model_init(&m, net, net->solver.batch), 0);
	if (path)
		assert_int_equal(sn_train_state_load(&s, path, net, &net->solver, 9, &found), 0);
	else
		assert_int_equal(sn_train_state_init(&s, net, &net->solver, 9), 0);
	assert_int_equal(sn_train_run(&m, &d, &net->solver, &o, &s, res), 0);
	if (path)
		assert_int_equal(sn_train_state_save(&s, path, net), 0);
	sn_train_state_free(&s);
	sn_model_free(&m);
	sn_data_close(&d);
}

static void loss_decreases_on_a_learnable_table(void **state)
{
	fixture *f = *state;
	sn_net net;
	sn_train_result first, later;
	tiny_net(&net);
	train(&net, f->data, NULL, 0, 1, &first);
	train(&net, f->data, NULL, 1, 300, &later);
	assert_int_equal(later.steps, 300);
	assert_int_equal(later.examples, 300 * 4);
	assert_true(later.loss < first.loss * 0.8);
	sn_net_free(&net);
}

/* The design's rule: R runs of N steps with a state file equal R*N steps. */
static void three_resumed_runs_equal_one_long_run(void **state)
{
	fixture *f = *state;
	sn_net a, b;
	sn_train_result res;
	tiny_net(&a);
	tiny_net(&b);
	unlink(f->state);
	for (int r = 0; r < 3; r++)
		train(&a, f->data, f->state, r * 7, 7, &res);
	unlink(f->other);
	train(&b, f->data, f->other, 0, 21, &res);
	assert_int_equal(a.nparam, b.nparam);
	assert_memory_equal(a.param, b.param, a.nparam * sizeof(float));

	sn_st st;
	int64_t step, epoch, cursor;
	assert_int_equal(sn_st_read(f->state, &st, 0), 0);
	assert_string_equal(sn_st_meta(&st, "format"), "sn.state.v1");
	assert_string_equal(sn_st_meta(&st, "solver"), "momentum");
	assert_non_null(sn_st_find(&st, "fc1.weight.m1"));
	assert_null(sn_st_find(&st, "fc1.weight.m2"));
	assert_int_equal(sn_train_meta_int(&st, "step", &step), 0);
	assert_int_equal(sn_train_meta_int(&st, "epoch", &epoch), 0);
	assert_int_equal(sn_train_meta_int(&st, "cursor", &cursor), 0);
	/* 21 batches of 4 over 10 examples: 84 draws = 8 epochs + 4 */
	assert_int_equal(step, 21);
	assert_int_equal(epoch, 8);
	assert_int_equal(cursor, 4);
	sn_st_free(&st);
	sn_net_free(&a);
	sn_net_free(&b);
}

static void a_state_for_another_solver_is_refused(void **state)
{
	fixture *f = *state;
	sn_net net;
	sn_train_result res;
	sn_train_state s;
	int found = -1;
	tiny_net(&net);
	unlink(f->state);
	assert_int_equal(sn_train_state_load(&s, f->state, &net, &net.solver, 1, &found), 0);
	assert_int_equal(found, 0);
	sn_train_state_free(&s);
	train(&net, f->data, f->state, 0, 2, &res);

	sn_solver_config adam = net.solver;
	assert_int_equal(sn_solver_config_set(&adam, "type", "adam"), 0);
	assert_int_equal(sn_train_state_load(&s, f->state, &net, &adam, 1, &found), SN_EMISMATCH);
	assert_non_null(strstr(sn_errdetail(), "momentum"));

	/* a file that is not a state at all */
	assert_int_equal(sn_train_state_load(&s, f->data, &net, &net.solver, 1, &found), SN_EFORMAT);
	sn_net_free(&net);
}

static void a_state_for_other_shapes_is_refused(void **state)
{
	fixture *f = *state;
	static const char wider[] =
		"name: wider\ninput: [4]\nlayers:\n  - {type: dense, name: fc1, units: 9}\n"
		"  - relu\n  - {type: dense, name: fc2, units: 3}\n  - softmax_cross_entropy\n"
		"solver: {type: momentum, lr: 0.05, batch: 4}\n";
	sn_net net, other;
	sn_train_result res;
	sn_train_state s;
	int found;
	tiny_net(&net);
	unlink(f->state);
	train(&net, f->data, f->state, 0, 1, &res);
	assert_int_equal(sn_net_parse(wider, strlen(wider), "wider.yaml", &other), 0);
	assert_int_equal(sn_train_state_load(&s, f->state, &other, &other.solver, 1, &found),
			 SN_EMISMATCH);
	assert_non_null(strstr(sn_errdetail(), "fc1.weight.m1"));
	sn_net_free(&net);
	sn_net_free(&other);
}

static void a_state_past_the_end_of_a_smaller_shard_is_refused(void **state)
{
	fixture *f = *state;
	sn_net net;
	sn_data d;
	sn_model m;
	sn_train_state s;
	sn_train_result res;
	int found;
	tiny_net(&net);
	unlink(f->state);
	train(&net, f->data, f->state, 0, 2, &res);           /* cursor 8 of 10 */
	assert_int_equal(write_table(f->other, 6, 4, 3), 0);
	assert_int_equal(sn_data_open(f->other, &d), 0);
	assert_int_equal(sn_model_init(&m, &net, 4), 0);
	assert_int_equal(sn_train_state_load(&s, f->state, &net, &net.solver, 1, &found), 0);
	assert_int_equal(s.cursor, 8);
	sn_train_options o = {.iters = 1};
	assert_int_equal(sn_train_run(&m, &d, &net.solver, &o, &s, &res), SN_EMISMATCH);
	assert_non_null(strstr(sn_errdetail(), "cursor 8"));
	sn_train_state_free(&s);
	sn_model_free(&m);
	sn_data_close(&d);
	sn_net_free(&net);
}

static void a_batch_larger_than_the_shard_wraps_over_epochs(void **state)
{
	fixture *f = *state;
	sn_net net;
	sn_data d;
	sn_model m;
	sn_train_state s;
	sn_train_result res;
	tiny_net(&net);
	sn_solver_config c = net.solver;
	assert_int_equal(sn_solver_config_set(&c, "batch", "25"), 0);
	sn_train_options o = {.iters = 2};
	assert_int_equal(sn_data_open(f->data, &d), 0);
	assert_int_equal(sn_model_init(&m, &net, 25), 0);
	assert_int_equal(sn_train_state_init(&s, &net, &c, 4), 0);
	assert_int_equal(sn_train_run(&m, &d, &c, &o, &s, &res), 0);
	/* 50 draws from 10 examples: exactly 5 epochs */
	assert_int_equal(res.examples, 50);
	assert_int_equal(s.epoch, 5);
	assert_int_equal(s.cursor, 0);
	assert_int_equal(s.step, 2);
	sn_train_state_free(&s);
	sn_model_free(&m);
	sn_data_close(&d);
	sn_net_free(&net);
}

static void data_that_does_not_fit_the_net_is_refused(void **state)
{
	fixture *f = *state;
	sn_net net;
	sn_data d;
	tiny_net(&net);
	assert_int_equal(write_table(f->other, 6, 5, 3), 0);
	assert_int_equal(sn_data_open(f->other, &d), 0);
	assert_int_equal(sn_train_check_data(&net, &d), SN_EMISMATCH);
	assert_non_null(strstr(sn_errdetail(), "[5]"));
	assert_non_null(strstr(sn_errdetail(), "[4]"));
	sn_data_close(&d);

	assert_int_equal(write_table(f->other, 30, 4, 5), 0);
	assert_int_equal(sn_data_open(f->other, &d), 0);
	assert_int_equal(sn_train_check_data(&net, &d), SN_EMISMATCH);
	assert_non_null(strstr(sn_errdetail(), "label"));
	sn_data_close(&d);
	sn_net_free(&net);
}

static void a_huge_learning_rate_diverges_naming_step_and_layer(void **state)
{
	fixture *f = *state;
	sn_net net;
	sn_data d;
	sn_model m;
	sn_train_state s;
	sn_train_result res;
	tiny_net(&net);
	sn_solver_config c = net.solver;
	assert_int_equal(sn_solver_config_set(&c, "lr", "1e30"), 0);
	sn_train_options o = {.iters = 50, .first_step = 10};
	assert_int_equal(sn_data_open(f->data, &d), 0);
	assert_int_equal(sn_model_init(&m, &net, c.batch), 0);
	assert_int_equal(sn_train_state_init(&s, &net, &c, 1), 0);
	assert_int_equal(sn_train_run(&m, &d, &c, &o, &s, &res), SN_ENONFINITE);
	long long step = 0;
	assert_int_equal(sscanf(sn_errdetail(), "step %lld:", &step), 1);
	assert_true(step > 10 && step <= 60);       /* global, 1-based */
	assert_true(strstr(sn_errdetail(), "layer") || strstr(sn_errdetail(), "weights"));
	sn_train_state_free(&s);
	sn_model_free(&m);
	sn_data_close(&d);
	sn_net_free(&net);
}

static void the_time_limit_stops_early_after_at_least_one_step(void **state)
{
	fixture *f = *state;
	sn_net net;
	sn_data d;
	sn_model m;
	sn_train_state s;
	sn_train_result res;
	tiny_net(&net);
	sn_train_options o = {.iters = INT64_MAX / 4, .time_limit = 0.2};
	assert_int_equal(sn_data_open(f->data, &d), 0);
	assert_int_equal(sn_model_init(&m, &net, 4), 0);
	assert_int_equal(sn_train_state_init(&s, &net, &net.solver, 1), 0);
	assert_int_equal(sn_train_run(&m, &d, &net.solver, &o, &s, &res), 0);
	assert_true(res.steps >= 1);
	assert_true(res.seconds >= 0.2 && res.seconds < 2.0);
	o.iters = 1;
	o.time_limit = 1e-9;
	assert_int_equal(sn_train_run(&m, &d, &net.solver, &o, &s, &res), 0);
	assert_int_equal(res.steps, 1);
	sn_train_state_free(&s);
	sn_model_free(&m);
	sn_data_close(&d);
	sn_net_free(&net);
}

static void evaluation_totals_add_up(void **state)
{
	fixture *f = *state;
	sn_net net;
	sn_data d;
	sn_model m;
	sn_eval e;
	tiny_net(&net);
	assert_int_equal(sn_data_open(f->data, &d), 0);
	assert_int_equal(sn_model_init(&m, &net, 3), 0);     /* 10 = 3+3+3+1 */
	assert_int_equal(sn_eval_init(&e, 3, 7, 1), 0);
	assert_int_equal(e.k, 3);
	assert_int_equal(sn_eval_add(&m, &d, &e), 0);
	assert_int_equal(sn_eval_add(&m, &d, &e), 0);
	assert_int_equal(e.n, 2 * N_EXAMPLES);
	assert_int_equal(e.correct_k, e.n);                  /* top-3 of 3 classes */
	int64_t sum = 0, diag = 0;
	for (int i = 0; i < 9; i++)
		sum += e.confusion[i];
	for (int i = 0; i < 3; i++)
		diag += e.confusion[i * 4];
	assert_int_equal(sum, e.n);
	assert_int_equal(diag, e.correct);
	assert_true(e.loss_sum > 0 && isfinite(e.loss_sum));
	for (int i = 0; i < N_EXAMPLES; i++) {
		assert_int_equal(e.label[i], e.label[i + N_EXAMPLES]);
		assert_int_equal(e.predicted[i], e.predicted[i + N_EXAMPLES]);
		assert_true(e.prob[i] >= 1.0f / 3 && e.prob[i] <= 1);
	}
	assert_int_equal(sn_eval_write_predictions(&e, f->other), 0);
	FILE *p = fopen(f->other, "r");
	int lines = 0, ch;
	assert_non_null(p);
	while ((ch = fgetc(p)) != EOF)
		lines += ch == '\n';
	fclose(p);
	assert_int_equal(lines, 1 + 2 * N_EXAMPLES);
	sn_eval_free(&e);
	sn_model_free(&m);
	sn_data_close(&d);
	sn_net_free(&net);
}

static void integer_metadata_is_parsed_strictly(void **state)
{
	(void)state;
	sn_st st;
	int64_t v = -1;
	sn_st_init(&st);
	assert_int_equal(sn_train_meta_int(&st, "steps", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(sn_st_set_meta(&st, "steps", "1234"), 0);
	assert_int_equal(sn_train_meta_int(&st, "steps", &v), 0);
	assert_int_equal(v, 1234);
	const char *bad[] = {"-1", "12x", "", " 1", "99999999999999999999"};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		assert_int_equal(sn_st_set_meta(&st, "steps", bad[i]), 0);
		assert_int_equal(sn_train_meta_int(&st, "steps", &v), SN_EFORMAT);
	}
	sn_st_free(&st);
}

/* Every augmented example is the original shifted by (dy - P, dx - P) with
 * the border filled by the pad value, mirrored or not; over many draws all
 * (2P+1)^2 * 2 outcomes show up, and the same generator state draws the
 * same batch. */
static void augmentation_crops_padded_images_and_mirrors_them(void **state)
{
	(void)state;
	enum { B = 300, C = 2, H = 3, W = 4, P = 1 };
	const sn_shape shape = {3, {C, H, W}};
	const float pad[C] = {-1.0f, -2.0f};
	static float x[B][C][H][W], again[B][C][H][W];
	float example[C * H * W];
	for (int b = 0; b < B; b++)
		for (int i = 0; i < C * H * W; i++)
			(&x[b][0][0][0])[i] = (float)(i + 1);
	memcpy(again, x, sizeof x);
	sn_rng r, r2;
	sn_rng_seed(&r, 5);
	sn_rng_seed(&r2, 5);
	sn_train_augment(&x[0][0][0][0], B, &shape, P, 1, pad, example, &r);
	sn_train_augment(&again[0][0][0][0], B, &shape, P, 1, pad, example, &r2);
	assert_memory_equal(x, again, sizeof x);
	int seen[2 * P + 1][2 * P + 1][2] = {{{0}}};
	for (int b = 0; b < B; b++) {
		int found = 0;
		for (int dy = 0; dy <= 2 * P && !found; dy++)
			for (int dx = 0; dx <= 2 * P && !found; dx++)
				for (int flip = 0; flip < 2 && !found; flip++) {
					int same = 1;
					for (int c = 0; c < C; c++)
						for (int i = 0; i < H; i++)
							for (int j = 0; j < W; j++) {
								int si = i + dy - P;
								int sj = (flip ? W - 1 - j : j) + dx - P;
								float want = si < 0 || si >= H || sj < 0 || sj >= W
									? pad[c] : (float)((c * H + si) * W + sj + 1);
								same &= x[b][c][i][j] == want;
							}
					if (same)
						found = 1, seen[dy][dx][flip]++;
				}
		assert_true(found);
	}
	for (int dy = 0; dy <= 2 * P; dy++)
		for (int dx = 0; dx <= 2 * P; dx++)
			for (int flip = 0; flip < 2; flip++)
				assert_true(seen[dy][dx][flip] > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(integer_metadata_is_parsed_strictly),
		cmocka_unit_test(augmentation_crops_padded_images_and_mirrors_them),
		cmocka_unit_test_setup_teardown(loss_decreases_on_a_learnable_table, setup, teardown),
		cmocka_unit_test_setup_teardown(three_resumed_runs_equal_one_long_run, setup, teardown),
		cmocka_unit_test_setup_teardown(a_state_for_another_solver_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(a_state_for_other_shapes_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(a_state_past_the_end_of_a_smaller_shard_is_refused,
						setup, teardown),
		cmocka_unit_test_setup_teardown(a_batch_larger_than_the_shard_wraps_over_epochs,
						setup, teardown),
		cmocka_unit_test_setup_teardown(data_that_does_not_fit_the_net_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(a_huge_learning_rate_diverges_naming_step_and_layer,
						setup, teardown),
		cmocka_unit_test_setup_teardown(the_time_limit_stops_early_after_at_least_one_step,
						setup, teardown),
		cmocka_unit_test_setup_teardown(evaluation_totals_add_up, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
