/* Unit tests for lib/net.c: the example nets, default names, every kind of
 * YAML error with its exact line:column, seeded initialisation, and weight
 * files (to_st, load_weights, from_weights). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <unistd.h>
#include <cmocka.h>

#include "error.h"
#include "net.h"
#include "st.h"

static const char *example(const char *name, char *buf, size_t len)
{
	const char *root = getenv("SN_ROOT");
	snprintf(buf, len, "%s/examples/nets/%s", root ? root : ".", name);
	return buf;
}

static void load_example(const char *name, sn_net *net)
{
	char path[4096];
	int err = sn_net_load(example(name, path, sizeof path), net);
	if (err)
		fail_msg("%s: %s", path, sn_errdetail());
}

static int parse(const char *yaml, sn_net *net)
{
	return sn_net_parse(yaml, strlen(yaml), "t.yaml", net);
}

static void assert_shape(const sn_shape *s, int ndim, int64_t a, int64_t b, int64_t c)
{
	assert_int_equal(s->ndim, ndim);
	assert_int_equal(s->d[0], a);
	if (ndim == 3) {
		assert_int_equal(s->d[1], b);
		assert_int_equal(s->d[2], c);
	}
}

static void lenet_has_caffes_shapes_and_431080_parameters(void **state)
{
	(void)state;
	sn_net net;
	load_example("lenet.yaml", &net);
	assert_string_equal(net.name, "lenet");
	assert_int_equal(net.nlayers, 8);
	assert_int_equal(net.nparam, 431080);
	assert_int_equal(net.nbuffer, 0);
	assert_int_equal(net.classes, 10);
	assert_shape(&net.input, 3, 1, 28, 28);
	assert_shape(&net.layers[0].out, 3, 20, 24, 24);
	assert_shape(&net.layers[1].out, 3, 20, 12, 12);
	assert_shape(&net.layers[2].out, 3, 50, 8, 8);
	assert_shape(&net.layers[3].out, 3, 50, 4, 4);
	assert_shape(&net.layers[4].out, 1, 500, 0, 0);
	assert_shape(&net.layers[6].out, 1, 10, 0, 0);

	const char *names[] = {"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
			       "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"};
	assert_int_equal(net.nviews, 8);
	float *expect = net.param;
	for (int i = 0; i < 8; i++) {
		assert_string_equal(net.views[i].name, names[i]);
		assert_ptr_equal(net.views[i].data, expect);
		assert_ptr_equal(net.views[i].grad, net.grad + (expect - net.param));
		expect += net.views[i].numel;
	}
	sn_param_view *w = sn_net_find(&net, "conv2.weight");
	assert_non_null(w);
	assert_int_equal(w->ndim, 4);
	assert_true(w->shape[0] == 50 && w->shape[1] == 20 && w->shape[2] == 5 &&
		    w->shape[3] == 5);
	assert_ptr_equal(w->layer, &net.layers[2]);
	assert_ptr_equal(net.layers[2].w[0], w->data);
	assert_true(sn_net_find(&net, "fc1.weight")->shape[1] == 800);
	assert_null(sn_net_find(&net, "conv3.weight"));

	/* conv1 by hand: 20x24x24 outputs, each 5x5x1 multiply-adds + a bias */
	int64_t outs = 20 * 24 * 24;
	assert_int_equal(net.layers[0].flops_forward, 2 * outs * 25 + outs);
	int64_t total = 0;
	for (int i = 0; i < net.nlayers; i++)
		total += net.layers[i].flops_forward;
	assert_int_equal(net.flops_forward, total);
	assert_true(net.flops_backward > net.flops_forward);

	assert_string_equal(net.solver.type, "momentum");
	assert_true(net.solver.lr == 0.01 && net.solver.momentum == 0.9);
	assert_true(net.solver.weight_decay == 0.0005 && net.solver.batch == 64);
	assert_non_null(strstr(net.yaml, "softmax_cross_entropy"));
	sn_net_free(&net);
}

static void mlp_and_cifar10_quick_parse(void **state)
{
	(void)state;
	sn_net net;
	load_example("mlp.yaml", &net);
	assert_int_equal(net.nparam, 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10);
	assert_true(sn_net_find(&net, "fc1.weight")->shape[1] == 784);
	assert_int_equal(net.classes, 10);
	sn_net_free(&net);

	load_example("cifar10_quick.yaml", &net);
	assert_int_equal(net.nparam, 145578);   /* Caffe's cifar10_quick */
	assert_shape(&net.layers[1].out, 3, 32, 16, 16);
	assert_shape(&net.layers[5].out, 3, 32, 8, 8);
	assert_shape(&net.layers[8].out, 3, 64, 4, 4);
	assert_true(sn_net_find(&net, "fc1.weight")->shape[1] == 1024);
	assert_true(sn_net_find(&net, "conv3.weight")->shape[1] == 32);
	assert_true(net.solver.batch == 100 && net.solver.weight_decay == 0.004);
	sn_net_free(&net);
}

static void layers_without_a_name_get_numbered_defaults(void **state)
{
	(void)state;
	sn_net net;
	const char *yaml =
		"input: [3, 8, 8]\n"
		"layers:\n"
		"  - {type: conv, name: stem, filters: 4, kernel: 3}\n"
		"  - {type: conv, filters: 4, kernel: 3}\n"
		"  - relu\n"
		"  - {type: conv, filters: 4, kernel: 3}\n"
		"  - relu\n"
		"  - {type: dense, units: 5}\n"
		"  - {type: dense, name: head, units: 3}\n"
		"  - softmax_cross_entropy\n";
	assert_int_equal(parse(yaml, &net), 0);
	const char *want[] = {"stem", "conv1", "relu1", "conv2", "relu2", "fc1", "head",
			      "softmax_cross_entropy1"};
	for (int i = 0; i < 8; i++)
		assert_string_equal(net.layers[i].name, want[i]);
	assert_non_null(sn_net_find(&net, "stem.weight"));
	assert_non_null(sn_net_find(&net, "head.bias"));
	assert_string_equal(net.name, "t");      /* from the source, no name: */
	assert_int_equal(net.classes, 3);
	assert_int_equal(net.layers[0].line, 3);
	assert_int_equal(net.layers[0].column, 5);
	sn_net_free(&net);
}

static void options_reach_the_layer(void **state)
{
	(void)state;
	sn_net net;
	const char *yaml =
		"name: opts\n"
		"input: [2, 9, 9]\n"
		"classes: 4\n"
		"layers:\n"
		"  - type: conv\n"
		"    filters: 3\n"
		"    kernel: 3\n"
		"    stride: 2\n"
		"    pad: 1\n"
		"    bias: 0\n"
		"  - {type: dense, units: 4}\n"
		"  - softmax_cross_entropy\n"
		"solver: {type: adam, lr: 1e-3, lr_policy: multistep, multistep: [10, 20]}\n";
	assert_int_equal(parse(yaml, &net), 0);
	sn_layer *l = &net.layers[0];
	assert_true(l->opt[SN_OPT_FILTERS] == 3 && l->opt[SN_OPT_STRIDE] == 2 &&
		    l->opt[SN_OPT_PAD] == 1 && l->opt[SN_OPT_BIAS] == 0);
	unsigned want = 1u << SN_OPT_FILTERS | 1u << SN_OPT_KERNEL | 1u << SN_OPT_STRIDE |
			1u << SN_OPT_PAD | 1u << SN_OPT_BIAS;
	assert_int_equal(l->opt_set, want);
	assert_shape(&l->out, 3, 3, 5, 5);
	assert_int_equal(l->nparams, 1);       /* bias: 0 */
	assert_string_equal(net.solver.type, "adam");
	assert_int_equal(net.solver.nmultistep, 2);
	assert_int_equal(net.solver.multistep[1], 20);
	sn_net_free(&net);
}

/* Each bad definition and the exact detail it must give. */
static const struct {
	const char *yaml, *detail;
} bad_nets[] = {
	{"name: t\ninput: [1, 8, 8]\nlayer:\n  - relu\n",
	 "t.yaml:3:1: unknown key \"layer\" (expected name, input, classes, layers or solver)"},
	{"input: [1, 8, 8]\nlayers:\n  - {type: convv, filters: 2, kernel: 3}\n",
	 "t.yaml:3:12: unknown layer kind \"convv\""},
	{"input: [4]\nlayers:\n  - relux\n  - softmax_cross_entropy\n",
	 "t.yaml:3:5: unknown layer kind \"relux\""},
	{"input: [1, 8, 8]\nlayers:\n  - {type: maxpool, units: 3}\n",
	 "t.yaml:3:21: layer kind maxpool takes no option \"units\""},
	{"input: [1, 8, 8]\nlayers:\n  - {type: maxpool, size: 3}\n",
	 "t.yaml:3:21: unknown option \"size\" for layer kind maxpool"},
	{"input: [4]\nlayers:\n  - {type: dense, units: ten}\n  - softmax_cross_entropy\n",
	 "t.yaml:3:26: units: expected a number, got \"ten\""},
	{"input: [4]\nlayers:\n  - {type: dense, units: [1]}\n  - softmax_cross_entropy\n",
	 "t.yaml:3:26: units: expected a number, got a sequence"},
	{"input: [4]\nlayers:\n  - softmax_cross_entropy\n  - {type: dense, units: 2}\n",
	 "t.yaml:3:5: loss layer softmax_cross_entropy must be the last layer"},
	{"input: [4]\nlayers:\n  - {type: dense, units: 2}\n",
	 "t.yaml:3:5: the last layer must be a loss layer, not dense"},
	{"layers:\n  - softmax_cross_entropy\n", "t.yaml:1:1: missing input"},
	{"input: [4]\n", "t.yaml:1:1: missing layers"},
	{"input: [4, 4]\nlayers: [softmax_cross_entropy]\n",
	 "t.yaml:1:8: input: expected [C, H, W] or [D], got 2 dimensions"},
	{"input: [4, 0, 4]\nlayers: [softmax_cross_entropy]\n",
	 "t.yaml:1:12: input: expected a positive integer up to 16777216, got \"0\""},
	{"input: [4]\nlayers: []\n", "t.yaml:2:9: layers: the net has no layers"},
	{"input: [4]\ninput: [4]\nlayers: [softmax_cross_entropy]\n",
	 "t.yaml:2:1: duplicate key \"input\""},
	{"input: [4]\nlayers:\n  - {type: dense, name: a, units: 3}\n"
	 "  - {type: dense, name: a, units: 3}\n  - softmax_cross_entropy\n",
	 "t.yaml:4:5: duplicate layer name \"a\""},
	{"input: [4]\nlayers:\n  - {type: dense, name: fc2, units: 3}\n"
	 "  - {type: dense, units: 3}\n  - {type: dense, units: 3}\n  - softmax_cross_entropy\n",
	 "t.yaml:5:5: default name \"fc2\" is already taken; give this layer a name:"},
	{"input: [4]\nlayers:\n  - {type: dense, name: conv-1, units: 3}\n"
	 "  - softmax_cross_entropy\n",
	 "t.yaml:3:25: layer name \"conv-1\" must be 1 to 63 of A-Z a-z 0-9 _"},
	{"input: [4]\nlayers:\n  - {units: 3}\n  - softmax_cross_entropy\n",
	 "t.yaml:3:5: layer has no type"},
	{"input: [4]\nlayers:\n  - {type: dense, units: 3, units: 4}\n"
	 "  - softmax_cross_entropy\n",
	 "t.yaml:3:29: duplicate option \"units\""},
	{"input: [4]\nclasses: 3\nlayers:\n  - {type: dense, units: 2}\n"
	 "  - softmax_cross_entropy\n",
	 "t.yaml:2:10: classes 3 does not match the 2 outputs of the last layer"},
	{"input: [4]\nlayers: [softmax_cross_entropy]\nsolver:\n  lr: 0.1\n  lrate: 1\n",
	 "t.yaml:5:3: solver: unknown solver key \"lrate\""},
	{"input: [4]\nlayers: [softmax_cross_entropy]\nsolver: {lr: fast}\n",
	 "t.yaml:3:10: solver: lr: invalid number \"fast\""},
	{"input: [4]\nlayers: [softmax_cross_entropy]\nsolver: {lr: [0.5]}\n",
	 "t.yaml:3:14: solver: lr: expected one value, got a list"},
	{"input: [4]\nlayers: [softmax_cross_entropy]\nsolver: {type: [adam]}\n",
	 "t.yaml:3:16: solver: type: expected one value, got a list"},
	{"input: [4]\nlayers: [softmax_cross_entropy]\nsolver: {lr_policy: step}\n",
	 "t.yaml:3:9: solver: lr_policy step needs step_size"},
	{"input: [65536]\nlayers:\n  - {type: dense, units: 32767}\n"
	 "  - {type: dense, units: 65536}\n  - softmax_cross_entropy\n",
	 "t.yaml:4:5: the net has more than 2147483648 parameters"},
	{"- 1\n- 2\n", "t.yaml:1:1: expected a mapping with name, input and layers"},
	{"", "t.yaml:1:1: empty net definition"},
	{"input: [4]\nlayers: [softmax_cross_entropy]\n---\ninput: [4]\n",
	 "t.yaml:3:1: more than one YAML document"},
	/* graphs: inputs name earlier layers or input, so there are no cycles */
	{"input: [4]\nlayers:\n  - {type: dense, units: 3, inputs: [fc9]}\n"
	 "  - softmax_cross_entropy\n",
	 "t.yaml:3:38: inputs: no layer is named \"fc9\""},
	{"input: [4]\nlayers:\n  - {type: dense, name: a, units: 3, inputs: [b]}\n"
	 "  - {type: dense, name: b, units: 3}\n  - softmax_cross_entropy\n",
	 "t.yaml:3:47: inputs: \"b\" is a later layer (line 4); inputs name earlier layers "
	 "only, so a net has no cycles"},
	{"input: [4]\nlayers:\n  - {type: dense, name: a, units: 3, inputs: a}\n"
	 "  - softmax_cross_entropy\n",
	 "t.yaml:3:46: inputs: \"a\" is this layer itself; inputs name earlier layers only, "
	 "so a net has no cycles"},
	{"input: [4]\nlayers:\n  - {type: dense, units: 3, inputs: [input, input]}\n"
	 "  - softmax_cross_entropy\n",
	 "t.yaml:3:37: inputs: dense takes one input, not 2; join them with add or concat"},
	{"input: [4]\nlayers:\n  - {type: dense, name: input, units: 3}\n"
	 "  - softmax_cross_entropy\n",
	 "t.yaml:3:25: layer name \"input\" is taken by the net's input"},
	{"input: [4]\nlayers:\n  - {type: add, inputs: {a: 1}}\n  - softmax_cross_entropy\n",
	 "t.yaml:3:25: inputs: expected a list of layer names, got a mapping"},
	{"input: [4]\nlayers:\n  - {type: add, inputs: []}\n  - softmax_cross_entropy\n",
	 "t.yaml:3:25: inputs: expected 1 to 16 layer names, got 0"},
	{"input: [4]\nlayers:\n  - {type: dense, units: 3, inputs: x, inputs: y}\n"
	 "  - softmax_cross_entropy\n",
	 "t.yaml:3:40: duplicate key \"inputs\""},
};

static void each_bad_definition_names_its_line_and_column(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof bad_nets / sizeof bad_nets[0]; i++) {
		sn_net net;
		sn_errclear();
		int err = parse(bad_nets[i].yaml, &net);
		if (err != SN_ENET || strcmp(sn_errdetail(), bad_nets[i].detail) != 0)
			fail_msg("case %zu: got %d \"%s\", want \"%s\"", i, err, sn_errdetail(),
				 bad_nets[i].detail);
		/* a failed parse leaves nothing to free */
		assert_null(net.layers);
		assert_null(net.param);
		sn_net_free(&net);
	}
}

/* Errors found by a kind's setup carry the layer's position as a prefix. */
static void setup_errors_are_prefixed_with_the_layer_position(void **state)
{
	(void)state;
	const char *cases[][2] = {
		{"input: [1, 8, 8]\nlayers:\n  - {type: conv, filters: 2, kernel: -3}\n"
		 "  - softmax_cross_entropy\n", "kernel"},
		{"input: [1, 4, 4]\nlayers:\n  - {type: conv, filters: 2, kernel: 5}\n"
		 "  - softmax_cross_entropy\n", "larger than"},
		{"input: [1, 4, 4]\nlayers:\n  - {type: maxpool, kernel: 5}\n"
		 "  - softmax_cross_entropy\n", "larger than"},
		{"input: [1, 8, 8]\nlayers:\n  - {type: conv, filters: 2.5, kernel: 3}\n"
		 "  - softmax_cross_entropy\n", "filters"},
		{"input: [16]\nlayers:\n  - {type: conv, filters: 2, kernel: 3}\n"
		 "  - softmax_cross_entropy\n", "[C,H,W]"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		sn_net net;
		assert_int_equal(parse(cases[i][0], &net), SN_ENET);
		const char *d = sn_errdetail();
		if (strncmp(d, "t.yaml:3:5: ", 12) != 0 || !strstr(d + 12, cases[i][1]))
			fail_msg("case %zu: \"%s\"", i, d);
	}
	/* the loss needs a flat input */
	sn_net net;
	assert_int_equal(parse("input: [1, 4, 4]\nlayers:\n  - softmax_cross_entropy\n", &net),
			 SN_ENET);
	assert_int_equal(strncmp(sn_errdetail(), "t.yaml:3:5: ", 12), 0);
}

static void yaml_syntax_errors_give_a_position(void **state)
{
	(void)state;
	sn_net net;
	assert_int_equal(parse("input: [1, 8\nlayers: [relu]\n", &net), SN_ENET);
	assert_int_equal(strncmp(sn_errdetail(), "t.yaml:", 7), 0);
	assert_int_equal(parse("input: [4]\n\tlayers: []\n", &net), SN_ENET);
	assert_int_equal(strncmp(sn_errdetail(), "t.yaml:2:", 9), 0);
	assert_int_equal(parse("input: [4]\nlayers: [\x01]\n", &net), SN_ENET);
	assert_string_equal(sn_errdetail(), "t.yaml:2:10: control characters are not allowed");
	const char nul[] = "input: [4]\0layers: [softmax_cross_entropy]\n";
	assert_int_equal(sn_net_parse(nul, sizeof nul - 1, "t.yaml", &net), SN_ENET);
	assert_int_equal(sn_net_load("/nonexistent/net.yaml", &net), SN_EIO);
}

static void init_is_deterministic_and_has_the_right_scale(void **state)
{
	(void)state;
	sn_net a, b;
	load_example("lenet.yaml", &a);
	load_example("lenet.yaml", &b);
	assert_int_equal(sn_net_init_weights(&a, "he", 0, 7), 0);
	assert_int_equal(sn_net_init_weights(&b, "he", 0, 7), 0);
	assert_memory_equal(a.param, b.param, a.nparam * sizeof(float));
	assert_int_equal(sn_net_init_weights(&b, "he", 0, 8), 0);
	assert_memory_not_equal(a.param, b.param, a.nparam * sizeof(float));

	/* He: fc1.weight is 500x800, so std sqrt(2/800) = 0.05 */
	sn_param_view *w = sn_net_find(&a, "fc1.weight");
	double s = 0, s2 = 0;
	for (int64_t i = 0; i < w->numel; i++) {
		s += w->data[i];
		s2 += (double)w->data[i] * w->data[i];
	}
	double mean = s / w->numel, std = sqrt(s2 / w->numel - mean * mean);
	assert_true(fabs(mean) < 0.001);
	assert_true(fabs(std - 0.05) < 0.0005);
	sn_param_view *bias = sn_net_find(&a, "fc1.bias");
	for (int64_t i = 0; i < bias->numel; i++)
		assert_true(bias->data[i] == 0.0f);

	/* Xavier: U(-a, a), a = sqrt(6/(800+500)), std a/sqrt(3) */
	assert_int_equal(sn_net_init_weights(&a, "xavier", 0, 7), 0);
	double lim = sqrt(6.0 / 1300.0), mx = 0;
	s2 = 0;
	for (int64_t i = 0; i < w->numel; i++) {
		mx = fmax(mx, fabs(w->data[i]));
		s2 += (double)w->data[i] * w->data[i];
	}
	assert_true(mx <= lim && mx > 0.99 * lim);
	assert_true(fabs(sqrt(s2 / w->numel) - lim / sqrt(3.0)) < 0.002 * lim);

	assert_int_equal(sn_net_init_weights(&a, "gaussian", 0.01, 7), 0);
	s2 = 0;
	for (int64_t i = 0; i < w->numel; i++)
		s2 += (double)w->data[i] * w->data[i];
	assert_true(fabs(sqrt(s2 / w->numel) - 0.01) < 0.0001);

	assert_int_equal(sn_net_init_weights(&a, "gaussian", 0, 7), SN_EINVAL);
	assert_int_equal(sn_net_init_weights(&a, "orthogonal", 0, 7), SN_EINVAL);
	sn_net_free(&a);
	sn_net_free(&b);
}

static void batchnorm_statistics_go_after_the_trainable_tensors(void **state)
{
	(void)state;
	sn_net net;
	const char *yaml =
		"input: [2, 6, 6]\n"
		"layers:\n"
		"  - {type: conv, filters: 3, kernel: 3}\n"
		"  - batchnorm\n"
		"  - relu\n"
		"  - {type: dense, units: 2}\n"
		"  - softmax_cross_entropy\n";
	assert_int_equal(parse(yaml, &net), 0);
	assert_int_equal(net.nbuffer, 6);
	int seen_buffer = 0;
	for (int i = 0; i < net.nviews; i++) {
		if (!net.views[i].trainable)
			seen_buffer = 1;
		else
			assert_false(seen_buffer);
	}
	sn_param_view *rv = sn_net_find(&net, "bn1.running_var");
	assert_non_null(rv);
	assert_false(rv->trainable);
	assert_null(rv->grad);
	assert_true(rv->data >= net.buffer && rv->data < net.buffer + net.nbuffer);
	assert_int_equal(sn_net_init_weights(&net, "he", 0, 1), 0);
	assert_true(rv->data[0] == 1.0f && sn_net_find(&net, "bn1.weight")->data[2] == 1.0f);
	assert_true(sn_net_find(&net, "bn1.running_mean")->data[1] == 0.0f);
	sn_net_free(&net);
}

static void load_weights_names_the_tensor_that_differs(void **state)
{
	(void)state;
	sn_net a, b;
	sn_st st;
	load_example("lenet.yaml", &a);
	assert_int_equal(sn_net_init_weights(&a, "he", 0, 3), 0);
	sn_st_init(&st);
	assert_int_equal(sn_net_to_st(&a, &st), 0);
	assert_int_equal(st.ntensors, 8);
	assert_string_equal(sn_st_meta(&st, "format"), "sn.weights.v1");
	assert_string_equal(sn_st_meta(&st, "net"), a.yaml);

	/* same net: loads and copies */
	load_example("lenet.yaml", &b);
	assert_int_equal(sn_net_load_weights(&b, &st), 0);
	assert_memory_equal(a.param, b.param, a.nparam * sizeof(float));
	sn_net_free(&b);

	/* fewer filters in conv1 */
	const char *narrow =
		"input: [1, 28, 28]\nlayers:\n  - {type: conv, filters: 10, kernel: 5}\n"
		"  - {type: maxpool, kernel: 2, stride: 2}\n"
		"  - {type: conv, filters: 50, kernel: 5}\n"
		"  - {type: maxpool, kernel: 2, stride: 2}\n"
		"  - {type: dense, units: 500}\n  - relu\n  - {type: dense, units: 10}\n"
		"  - softmax_cross_entropy\n";
	assert_int_equal(parse(narrow, &b), 0);
	assert_int_equal(sn_net_load_weights(&b, &st), SN_EMISMATCH);
	assert_string_equal(sn_errdetail(),
		"tensor \"conv1.weight\" has shape [20,1,5,5], the net needs [10,1,5,5]");
	sn_net_free(&b);

	/* a net with a tensor the file lacks, and one without the file's */
	assert_int_equal(parse("input: [1, 28, 28]\nlayers:\n  - {type: dense, units: 10}\n"
			       "  - softmax_cross_entropy\n", &b), 0);
	assert_int_equal(sn_net_load_weights(&b, &st), SN_EMISMATCH);
	assert_string_equal(sn_errdetail(), "tensor \"fc1.weight\" has shape [500,800], "
			    "the net needs [10,784]");
	sn_net_free(&b);
	assert_int_equal(parse("input: [1, 28, 28]\nlayers:\n"
			       "  - {type: conv, filters: 20, kernel: 5}\n"
			       "  - {type: dense, units: 10}\n  - softmax_cross_entropy\n", &b), 0);
	assert_int_equal(sn_net_load_weights(&b, &st), SN_EMISMATCH);
	assert_string_equal(sn_errdetail(), "tensor \"fc1.weight\" has shape [500,800], "
			    "the net needs [10,11520]");
	sn_net_free(&b);
	sn_st_free(&st);

	/* the file holds an extra tensor */
	float extra = 1;
	int64_t one = 1;
	sn_st_init(&st);
	assert_int_equal(sn_net_to_st(&a, &st), 0);
	assert_int_equal(sn_st_add(&st, "conv9.weight", SN_F32, 1, &one, &extra, 1), 0);
	load_example("lenet.yaml", &b);
	assert_int_equal(sn_net_load_weights(&b, &st), SN_EMISMATCH);
	assert_string_equal(sn_errdetail(), "tensor \"conv9.weight\" is not in the net");
	sn_net_free(&b);
	sn_st_free(&st);
	sn_net_free(&a);
}

static void weights_round_trip_through_a_file(void **state)
{
	(void)state;
	char dir[] = "/tmp/sn-test-net.XXXXXX", path[64];
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/w.safetensors", dir);
	sn_net a, b;
	sn_st st, meta;
	load_example("mlp.yaml", &a);
	assert_int_equal(sn_net_init_weights(&a, "xavier", 0, 11), 0);
	sn_st_init(&st);
	assert_int_equal(sn_net_to_st(&a, &st), 0);
	assert_int_equal(sn_st_set_meta(&st, "steps", "12"), 0);
	assert_int_equal(sn_st_write(&st, path), 0);
	sn_st_free(&st);

	assert_int_equal(sn_net_from_weights(path, &b, &meta), 0);
	assert_int_equal(b.nparam, a.nparam);
	assert_memory_equal(a.param, b.param, a.nparam * sizeof(float));
	assert_string_equal(b.yaml, a.yaml);
	assert_string_equal(b.name, "mlp");
	assert_string_equal(sn_st_meta(&meta, "steps"), "12");
	assert_int_equal(meta.ntensors, 0);
	sn_st_free(&meta);
	sn_net_free(&b);

	/* a file that is not a weights file */
	float x = 1;
	int64_t one = 1;
	sn_st_init(&st);
	assert_int_equal(sn_st_add(&st, "x", SN_F32, 1, &one, &x, 0), 0);
	assert_int_equal(sn_st_set_meta(&st, "format", "sn.data.v1"), 0);
	assert_int_equal(sn_st_write(&st, path), 0);
	sn_st_free(&st);
	assert_int_equal(sn_net_from_weights(path, &b, NULL), SN_EFORMAT);
	assert_non_null(strstr(sn_errdetail(), "not a weights file"));
	assert_null(b.layers);

	/* a weights file whose net no longer parses: the detail points into it */
	assert_int_equal(sn_st_set_meta(&st, "format", "sn.weights.v1"), 0);
	assert_int_equal(sn_st_set_meta(&st, "net", "input: [1]\nlayers: [convv]\n"), 0);
	assert_int_equal(sn_st_write(&st, path), 0);
	sn_st_free(&st);
	assert_int_equal(sn_net_from_weights(path, &b, &meta), SN_ENET);
	assert_string_equal(sn_errdetail(), "net:2:10: unknown layer kind \"convv\"");
	assert_int_equal(meta.nmeta, 0);
	sn_st_free(&meta);

	/* a missing file leaves both outputs empty and safe to free */
	unlink(path);
	assert_int_equal(sn_net_from_weights(path, &b, &meta), SN_EIO);
	assert_int_equal(meta.nmeta + meta.ntensors, 0);
	assert_null(b.param);
	sn_st_free(&meta);
	sn_net_free(&b);
	unlink(path);
	rmdir(dir);
	sn_net_free(&a);
}

/* A residual block and a join: inputs resolve to activations (0 the net's
 * input, j+1 layer j), shapes follow, and joins that do not fit name their
 * inputs. */
static void inputs_make_a_graph_of_earlier_layers(void **state)
{
	(void)state;
	sn_net net;
	assert_int_equal(parse("input: [2, 8, 8]\nlayers:\n"
			       "  - {type: conv, name: a, filters: 4, kernel: 3, pad: 1}\n"
			       "  - relu\n"
			       "  - {type: conv, name: short, filters: 4, kernel: 1, inputs: input}\n"
			       "  - {type: add, inputs: [relu1, short]}\n"
			       "  - {type: concat, inputs: [add1, a, input]}\n"
			       "  - {type: maxpool, kernel: 2, name: p}\n"
			       "  - {type: dense, units: 3}\n"
			       "  - softmax_cross_entropy\n", &net), 0);
	assert_null(net.warnings);
	const int ninputs[] = {1, 1, 1, 2, 3, 1, 1, 1};
	const int first[] = {0, 1, 0, 2, 4, 5, 6, 7};
	for (int i = 0; i < net.nlayers; i++) {
		assert_int_equal(net.layers[i].ninputs, ninputs[i]);
		assert_int_equal(net.layers[i].input[0], first[i]);
	}
	assert_int_equal(net.layers[3].input[1], 3);
	assert_string_equal(net.layers[3].name, "add1");
	assert_shape(&net.layers[4].out, 3, 10, 8, 8);
	assert_int_equal(net.layers[4].input[1], 1);
	assert_int_equal(net.layers[4].input[2], 0);
	assert_shape(&net.layers[5].out, 3, 10, 4, 4);
	sn_net_free(&net);

	/* p is read by nobody: a warning, not an error */
	assert_int_equal(parse("input: [2, 8, 8]\nlayers:\n"
			       "  - {type: conv, name: a, filters: 4, kernel: 3, pad: 1}\n"
			       "  - {type: maxpool, kernel: 2, name: p}\n"
			       "  - {type: dense, units: 3, inputs: a}\n"
			       "  - softmax_cross_entropy\n", &net), 0);
	assert_non_null(net.warnings);
	assert_string_equal(net.warnings,
			    "t.yaml:4:5: the output of layer p is not used by any layer\n");
	sn_net_free(&net);

	assert_int_equal(parse("input: [2, 8, 8]\nlayers:\n"
			       "  - {type: conv, name: a, filters: 4, kernel: 3, pad: 1}\n"
			       "  - {type: conv, name: b, filters: 4, kernel: 3, stride: 2}\n"
			       "  - {type: add, inputs: [a, b]}\n"
			       "  - softmax_cross_entropy\n", &net), SN_ENET);
	assert_string_equal(sn_errdetail(), "t.yaml:5:5: add: input 2 is [4,3,3] but input 1 "
			    "is [4,8,8]; add needs inputs of one shape (inputs: a, b)");
	assert_int_equal(parse("input: [2, 8, 8]\nlayers:\n"
			       "  - {type: conv, name: a, filters: 4, kernel: 3, pad: 1}\n"
			       "  - {type: concat, inputs: [input, a]}\n"
			       "  - {type: concat, inputs: [a, add]}\n"
			       "  - softmax_cross_entropy\n", &net), SN_ENET);
	assert_string_equal(sn_errdetail(), "t.yaml:5:32: inputs: no layer is named \"add\"");
	assert_int_equal(parse("input: [2, 8, 8]\nlayers:\n"
			       "  - {type: maxpool, name: a, kernel: 2}\n"
			       "  - {type: concat, inputs: [input, a]}\n"
			       "  - softmax_cross_entropy\n", &net), SN_ENET);
	assert_string_equal(sn_errdetail(), "t.yaml:4:5: concat: input 2 is [2,4,4] but input 1 "
			    "is [2,8,8]; concat needs one height and width (inputs: input, a)");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(lenet_has_caffes_shapes_and_431080_parameters),
		cmocka_unit_test(mlp_and_cifar10_quick_parse),
		cmocka_unit_test(layers_without_a_name_get_numbered_defaults),
		cmocka_unit_test(options_reach_the_layer),
		cmocka_unit_test(each_bad_definition_names_its_line_and_column),
		cmocka_unit_test(setup_errors_are_prefixed_with_the_layer_position),
		cmocka_unit_test(yaml_syntax_errors_give_a_position),
		cmocka_unit_test(init_is_deterministic_and_has_the_right_scale),
		cmocka_unit_test(batchnorm_statistics_go_after_the_trainable_tensors),
		cmocka_unit_test(load_weights_names_the_tensor_that_differs),
		cmocka_unit_test(weights_round_trip_through_a_file),
		cmocka_unit_test(inputs_make_a_graph_of_earlier_layers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
