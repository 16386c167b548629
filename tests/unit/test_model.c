/* Unit tests for lib/model.c: a small net parsed from YAML, its parameter
 * gradients against finite differences of the total loss, non-finite
 * outputs named by layer, batches of any size up to the maximum. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <cmocka.h>

#include "model.h"
#include "net.h"
#include "rng.h"

/* Smooth everywhere (tanh, avgpool), so finite differences are exact up to
 * rounding; dropout's mask is fixed by re-seeding its generator. */
static const char smooth_net[] =
	"name: tiny\n"
	"input: [2, 6, 5]\n"
	"layers:\n"
	"  - {type: conv, filters: 3, kernel: 3, pad: 1, stride: 1}\n"
	"  - batchnorm\n"
	"  - tanh\n"
	"  - {type: avgpool, kernel: 2}\n"
	"  - {type: dropout, rate: 0.3}\n"
	"  - {type: dense, units: 5}\n"
	"  - sigmoid\n"
	"  - {type: dense, units: 4}\n"
	"  - softmax_cross_entropy\n";

static const char lenet[] =
	"name: lenet\n"
	"input: [1, 28, 28]\n"
	"layers:\n"
	"  - {type: conv, filters: 20, kernel: 5}\n"
	"  - {type: maxpool, kernel: 2, stride: 2}\n"
	"  - {type: conv, filters: 50, kernel: 5}\n"
	"  - {type: maxpool, kernel: 2, stride: 2}\n"
	"  - {type: dense, units: 500}\n"
	"  - relu\n"
	"  - {type: dense, units: 10}\n"
	"  - softmax_cross_entropy\n";

typedef struct {
	sn_net net;
	sn_model m;
	float *x;
	int32_t *y;
	int B;
} setup_t;

static void open_net(setup_t *s, const char *yaml, int B, int max_batch)
{
	memset(s, 0, sizeof *s);
	assert_int_equal(sn_net_parse(yaml, strlen(yaml), "test.yaml", &s->net), 0);
	assert_int_equal(sn_net_init_weights(&s->net, "xavier", 0, 42), 0);
	assert_int_equal(sn_model_init(&s->m, &s->net, max_batch), 0);
	s->B = B;
	const int64_t n = sn_shape_size(&s->net.input) * B;
	s->x = calloc((size_t)n, sizeof *s->x);
	s->y = calloc((size_t)B, sizeof *s->y);
	assert_non_null(s->x);
	assert_non_null(s->y);
	sn_rng r;
	sn_rng_seed(&r, 3);
	for (int64_t i = 0; i < n; i++)
		s->x[i] = 2.0f * sn_rng_uniform(&r) - 1.0f;
	for (int b = 0; b < B; b++)
		s->y[b] = (int32_t)sn_rng_below(&r, (uint64_t)s->net.classes);
}

static void close_net(setup_t *s)
{
	sn_model_free(&s->m);
	sn_net_free(&s->net);
	free(s->x);
	free(s->y);
}

static double loss_at(setup_t *s)
{
	sn_rng r;
	sn_rng_seed(&r, 17);
	double loss = NAN;
	assert_int_equal(sn_model_forward(&s->m, s->x, s->y, s->B, 1, &r, &loss), 0);
	return loss;
}

/* A graph, smooth too: `sum` feeds two one-input layers (their shares go
 * through the model's sum), t and p1 are each read twice by one join. */
static const char smooth_graph[] =
	"name: graph\n"
	"input: [2, 6, 5]\n"
	"layers:\n"
	"  - {type: conv, name: a, filters: 3, kernel: 3, pad: 1}\n"
	"  - batchnorm\n"
	"  - {type: tanh, name: t}\n"
	"  - {type: conv, name: b, filters: 3, kernel: 1, inputs: input}\n"
	"  - {type: add, name: sum, inputs: [t, b, t]}\n"
	"  - {type: sigmoid, name: s}\n"
	"  - {type: avgpool, kernel: 2, name: p1, inputs: sum}\n"
	"  - {type: avgpool, kernel: 2, name: p2, inputs: s}\n"
	"  - {type: concat, inputs: [p1, p2, p1]}\n"
	"  - {type: dense, units: 4}\n"
	"  - softmax_cross_entropy\n";

static void check_parameter_gradients(const char *yaml)
{
	setup_t s;
	open_net(&s, yaml, 3, 4);
	(void)loss_at(&s);
	sn_model_backward(&s.m, s.B);
	float *grad = malloc(s.net.nparam * sizeof *grad);
	assert_non_null(grad);
	memcpy(grad, s.net.grad, s.net.nparam * sizeof *grad);
	int bad = 0;
	const float h = 1e-2f;
	for (size_t j = 0; j < s.net.nparam; j++) {
		const float keep = s.net.param[j];
		s.net.param[j] = keep + h;
		double up = loss_at(&s);
		s.net.param[j] = keep - h;
		double down = loss_at(&s);
		s.net.param[j] = keep;
		double num = (up - down) / (2.0 * h);
		if (fabs(num - grad[j]) > 2e-2 * fmax(fabs(num), fabs(grad[j])) + 1e-4 && bad++ < 5)
			print_error("param %zu: numeric %.6g, backward %.6g\n", j, num, grad[j]);
	}
	assert_int_equal(bad, 0);
	/* the gradient of a mean loss is not all zeros */
	double norm = 0;
	for (size_t j = 0; j < s.net.nparam; j++)
		norm += fabs(grad[j]);
	assert_true(norm > 1e-3);
	free(grad);
	close_net(&s);
}

static void gradients_match_finite_differences_of_the_loss(void **state)
{
	(void)state;
	check_parameter_gradients(smooth_net);
}

static void graph_gradients_match_finite_differences_of_the_loss(void **state)
{
	(void)state;
	check_parameter_gradients(smooth_graph);
}

/* A branch nobody reads runs forward but gets no gradient, and the rest
 * of the net trains as if it were not there. */
static void a_branch_nobody_reads_gets_no_gradient(void **state)
{
	(void)state;
	static const char with_branch[] =
		"input: [2, 6, 5]\n"
		"layers:\n"
		"  - {type: conv, name: a, filters: 3, kernel: 3}\n"
		"  - {type: dense, name: unused, units: 3}\n"
		"  - {type: dense, name: out, units: 4, inputs: a}\n"
		"  - softmax_cross_entropy\n";
	static const char without[] =
		"input: [2, 6, 5]\n"
		"layers:\n"
		"  - {type: conv, name: a, filters: 3, kernel: 3}\n"
		"  - {type: dense, name: out, units: 4}\n"
		"  - softmax_cross_entropy\n";
	setup_t g, c;
	open_net(&g, with_branch, 3, 3);
	open_net(&c, without, 3, 3);
	assert_non_null(g.net.warnings);
	const char *names[] = {"a.weight", "a.bias", "out.weight", "out.bias"};
	for (int i = 0; i < 4; i++) {
		sn_param_view *v = sn_net_find(&c.net, names[i]);
		memcpy(sn_net_find(&g.net, names[i])->data, v->data, (size_t)v->numel * sizeof(float));
	}
	double lg = loss_at(&g), lc = loss_at(&c);
	assert_float_equal(lg, lc, 0);
	sn_model_backward(&g.m, 3);
	sn_model_backward(&c.m, 3);
	for (int i = 0; i < 4; i++) {
		sn_param_view *v = sn_net_find(&c.net, names[i]);
		assert_memory_equal(sn_net_find(&g.net, names[i])->grad, v->grad,
				    (size_t)v->numel * sizeof(float));
	}
	sn_param_view *u = sn_net_find(&g.net, "unused.weight");
	for (int64_t j = 0; j < u->numel; j++)
		assert_float_equal(u->grad[j], 0, 0);
	close_net(&g);
	close_net(&c);
}

static void backward_is_deterministic_and_overwrites_gradients(void **state)
{
	(void)state;
	setup_t s;
	open_net(&s, lenet, 8, 8);
	(void)loss_at(&s);
	sn_model_backward(&s.m, s.B);
	float *first = malloc(s.net.nparam * sizeof *first);
	assert_non_null(first);
	memcpy(first, s.net.grad, s.net.nparam * sizeof *first);
	(void)loss_at(&s);
	sn_model_backward(&s.m, s.B);
	assert_memory_equal(first, s.net.grad, s.net.nparam * sizeof *first);
	free(first);
	close_net(&s);
}

static void smaller_batches_give_the_same_rows(void **state)
{
	(void)state;
	setup_t s;
	open_net(&s, lenet, 5, 5);
	const int K = s.net.classes;
	double loss;
	assert_int_equal(sn_model_forward(&s.m, s.x, s.y, 5, 0, NULL, &loss), 0);
	assert_true(loss > 0.5 && loss < 10);
	float *five = malloc((size_t)(5 * K) * sizeof *five);
	assert_non_null(five);
	memcpy(five, sn_model_probs(&s.m), (size_t)(5 * K) * sizeof *five);
	for (int b = 0; b < 5; b++) {
		double sum = 0;
		for (int k = 0; k < K; k++)
			sum += five[b * K + k];
		assert_float_equal(sum, 1.0, 1e-5);
	}
	assert_int_equal(sn_model_forward(&s.m, s.x, NULL, 2, 0, NULL, &loss), 0);
	assert_float_equal(loss, 0.0, 0);
	const float *two = sn_model_probs(&s.m);
	for (int i = 0; i < 2 * K; i++)
		assert_float_equal(two[i], five[i], 1e-6);
	free(five);
	close_net(&s);
}

/* sn-eval and sn-sgd size their models differently; two over one net must
 * not share the layers' saved areas. */
static void two_models_over_one_net_keep_apart(void **state)
{
	(void)state;
	setup_t s;
	open_net(&s, smooth_net, 3, 3);
	sn_model big;
	assert_int_equal(sn_model_init(&big, &s.net, 64), 0);
	(void)loss_at(&s);
	sn_model_backward(&s.m, s.B);
	float *grad = malloc(s.net.nparam * sizeof *grad);
	assert_non_null(grad);
	memcpy(grad, s.net.grad, s.net.nparam * sizeof *grad);
	/* a pass of the other model between forward and backward */
	(void)loss_at(&s);
	float *other = malloc(sn_shape_size(&s.net.input) * 3 * sizeof *other);
	assert_non_null(other);
	for (int64_t i = 0; i < sn_shape_size(&s.net.input) * 3; i++)
		other[i] = -2.0f * s.x[i];
	double loss;
	assert_int_equal(sn_model_forward(&big, other, s.y, 3, 1, NULL, &loss), 0);
	sn_model_backward(&s.m, s.B);
	assert_memory_equal(grad, s.net.grad, s.net.nparam * sizeof *grad);
	free(other);
	free(grad);
	sn_model_free(&big);
	close_net(&s);
}

static void a_nan_input_is_reported_at_the_first_layer(void **state)
{
	(void)state;
	setup_t s;
	open_net(&s, lenet, 4, 4);
	double loss;
	s.x[100] = NAN;
	sn_errclear();
	assert_int_equal(sn_model_forward(&s.m, s.x, s.y, 4, 1, NULL, &loss), SN_ENONFINITE);
	assert_string_equal(sn_errdetail(), "non-finite output in layer conv1");
	s.x[100] = 0;
	sn_param_view *v = sn_net_find(&s.net, "fc2.weight");
	assert_non_null(v);
	v->data[3] = INFINITY;
	assert_int_equal(sn_model_forward(&s.m, s.x, s.y, 4, 0, NULL, &loss), SN_ENONFINITE);
	assert_string_equal(sn_errdetail(), "non-finite output in layer fc2");
	assert_int_equal(sn_model_forward(&s.m, s.x, NULL, 4, 0, NULL, &loss), SN_ENONFINITE);
	close_net(&s);
}

/* Convs whose batchnorm and relu evaluation folds in: by the direct
 * kernel (16 filters, 3x3 over 16x16, where the CPU has AVX-512; its
 * stride-2 form over 32x32) and by the GEMM (12 filters; 7x7 outputs),
 * a conv read twice (nothing folded), a relu alone, an add's relu, and a
 * batchnorm after a pool (not foldable). */
static const char foldable[] =
	"name: foldable\n"
	"input: [3, 32, 32]\n"
	"layers:\n"
	"  - {type: conv, filters: 16, kernel: 3, stride: 2, pad: 1}\n"   /* + bn + relu */
	"  - batchnorm\n"
	"  - relu\n"
	"  - {type: conv, filters: 16, kernel: 3, pad: 1}\n"              /* + bn */
	"  - {type: batchnorm, name: bn_b}\n"
	"  - {type: conv, name: twice, filters: 12, kernel: 3, pad: 1}\n" /* read twice */
	"  - {type: relu, name: r3}\n"
	"  - {type: add, inputs: [r3, twice]}\n"                           /* + relu */
	"  - relu\n"
	"  - {type: conv, filters: 12, kernel: 3, stride: 2}\n"           /* + relu, GEMM */
	"  - relu\n"
	"  - {type: maxpool, kernel: 2}\n"
	"  - batchnorm\n"
	"  - {type: conv, filters: 8, kernel: 1}\n"                       /* + bn + relu, GEMM */
	"  - batchnorm\n"
	"  - relu\n"
	"  - {type: dense, units: 10}\n"
	"  - softmax_cross_entropy\n";

static void evaluation_folds_batchnorm_and_relu_into_the_layer_before_with_the_same_bits(void **state)
{
	(void)state;
	setup_t s;
	open_net(&s, foldable, 6, 6);
	static const unsigned char plan[] = {2, 0, 0, 1, 0, 0, 0, 1, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0};
	assert_int_equal(s.net.nlayers, (int)sizeof plan);
	assert_memory_equal(s.m.folded, plan, sizeof plan);
	for (int step = 0; step < 3; step++)   /* running statistics off their start */
		loss_at(&s);
	sn_rng r;   /* and scales and shifts off 1 and 0 */
	sn_rng_seed(&r, 5);
	for (int i = 0; i < s.net.nlayers; i++) {
		sn_layer *l = &s.net.layers[i];
		if (strcmp(l->kind->name, "batchnorm") == 0)
			for (int64_t c = 0; c < l->in.d[0]; c++) {
				l->w[0][c] = 0.5f + sn_rng_uniform(&r);
				l->w[1][c] = sn_rng_uniform(&r) - 0.5f;
			}
	}
	const int64_t size = s.B * s.net.classes;
	float *folded = malloc((size_t)size * sizeof *folded);
	assert_non_null(folded);
	double with, without;
	assert_int_equal(sn_model_forward(&s.m, s.x, s.y, s.B, 0, NULL, &with), 0);
	memcpy(folded, sn_model_probs(&s.m), (size_t)size * sizeof *folded);
	s.m.fuse = 0;
	assert_int_equal(sn_model_forward(&s.m, s.x, s.y, s.B, 0, NULL, &without), 0);
	assert_memory_equal(folded, sn_model_probs(&s.m), (size_t)size * sizeof *folded);
	assert_true(with == without);
	/* a NaN is still named where it first shows, folded or not */
	s.m.fuse = 1;
	s.x[7] = NAN;
	assert_int_equal(sn_model_forward(&s.m, s.x, s.y, s.B, 0, NULL, &with), SN_ENONFINITE);
	assert_string_equal(sn_errdetail(), "non-finite output in layer conv1");
	free(folded);
	close_net(&s);
}

static void batches_outside_the_maximum_are_refused(void **state)
{
	(void)state;
	setup_t s;
	open_net(&s, lenet, 2, 2);
	double loss;
	assert_int_equal(sn_model_forward(&s.m, s.x, s.y, 3, 1, NULL, &loss), SN_EINVAL);
	assert_int_equal(sn_model_forward(&s.m, s.x, s.y, 0, 1, NULL, &loss), SN_EINVAL);
	sn_model bad;
	assert_int_equal(sn_model_init(&bad, &s.net, 0), SN_EINVAL);
	sn_model_free(&bad);
	assert_int_equal(sn_model_init(&bad, &s.net, 1 << 22), SN_EINVAL);
	assert_string_equal(sn_errdetail(), "batch 4194304 too large for the input of the net");
	sn_model_free(&bad);
	close_net(&s);
}

/* Evaluation batches shrink to keep the widest activation within 4 MiB:
 * LeNet's widest is conv1's 20x24x24 floats (45 KiB an example, so 91 fit),
 * a net of 1x1024 inputs keeps any batch, one of 1x1024x1024 inputs takes
 * the floor of 16. */
static void evaluation_batches_fit_the_cache(void **state)
{
	(void)state;
	sn_net net;
	assert_int_equal(sn_net_parse(lenet, strlen(lenet), "lenet.yaml", &net), 0);
	assert_int_equal(sn_model_cache_batch(&net, 1000), (4 << 20) / (4 * 20 * 24 * 24));
	assert_int_equal(sn_model_cache_batch(&net, 64), 64);
	assert_int_equal(sn_model_cache_batch(&net, 1), 1);
	sn_net_free(&net);
	static const char flat[] = "input: [1024]\nlayers:\n  - {type: dense, units: 10}\n"
				   "  - softmax_cross_entropy\n";
	assert_int_equal(sn_net_parse(flat, strlen(flat), "flat.yaml", &net), 0);
	assert_int_equal(sn_model_cache_batch(&net, 1000), 1000);
	sn_net_free(&net);
	static const char wide[] = "input: [1, 1024, 1024]\nlayers:\n  - {type: dense, units: 10}\n"
				   "  - softmax_cross_entropy\n";
	assert_int_equal(sn_net_parse(wide, strlen(wide), "wide.yaml", &net), 0);
	assert_int_equal(sn_model_cache_batch(&net, 1000), 16);
	assert_int_equal(sn_model_cache_batch(&net, 9), 9);
	sn_net_free(&net);
}

static void profiling_adds_up_time_per_layer(void **state)
{
	(void)state;
	setup_t s;
	open_net(&s, lenet, 4, 4);
	for (int i = 0; i < s.net.nlayers; i++)
		assert_true(s.m.seconds_forward[i] == 0 && s.m.seconds_backward[i] == 0);
	(void)loss_at(&s);
	sn_model_backward(&s.m, s.B);
	for (int i = 0; i < s.net.nlayers; i++)
		assert_true(s.m.seconds_forward[i] == 0);
	s.m.profile = 1;
	(void)loss_at(&s);
	sn_model_backward(&s.m, s.B);
	double total = 0;
	for (int i = 0; i < s.net.nlayers; i++) {
		assert_true(s.m.seconds_forward[i] >= 0 && s.m.seconds_backward[i] >= 0);
		total += s.m.seconds_forward[i] + s.m.seconds_backward[i];
	}
	assert_true(total > 0 && total < 10);
	assert_true(s.m.seconds_forward[0] > 0);   /* conv1 is not free */
	close_net(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(gradients_match_finite_differences_of_the_loss),
		cmocka_unit_test(backward_is_deterministic_and_overwrites_gradients),
		cmocka_unit_test(smaller_batches_give_the_same_rows),
		cmocka_unit_test(two_models_over_one_net_keep_apart),
		cmocka_unit_test(a_nan_input_is_reported_at_the_first_layer),
		cmocka_unit_test(batches_outside_the_maximum_are_refused),
		cmocka_unit_test(profiling_adds_up_time_per_layer),
		cmocka_unit_test(evaluation_batches_fit_the_cache),
		cmocka_unit_test(evaluation_folds_batchnorm_and_relu_into_the_layer_before_with_the_same_bits),
		cmocka_unit_test(graph_gradients_match_finite_differences_of_the_loss),
		cmocka_unit_test(a_branch_nobody_reads_gets_no_gradient),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
