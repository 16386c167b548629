/* sn-sgd: run minibatch SGD on one data shard, starting from a weights file,
 * optionally resuming a solver state; write the new weights (and state). */
#include <cblas.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "data.h"
#include "model.h"
#include "net.h"
#include "train.h"

static const char usage_text[] =
	"Usage: sn-sgd -w WEIGHTS -d SHARD -o OUT [options]\n"
	"Run minibatch SGD on one data shard and write the new weights.\n"
	"\n"
	"  -w, --weights FILE      input weights (sn.weights.v1)\n"
	"  -d, --data FILE         training data shard (sn.data.v1)\n"
	"  -o, --output FILE       output weights ('-' for stdout)\n"
	"  -s, --state FILE        solver state: read if it exists, written at the end\n"
	"  -n, --iters N           at most N steps (default 100)\n"
	"  -t, --time-limit SECS   stop after SECS seconds (at least one step runs)\n"
	"  -b, --batch B           minibatch size (default: the net's solver: batch)\n"
	"  -j, --threads T         threads (default: the cores); results do not\n"
	"                          depend on it\n"
	"      --seed S            data order and dropout seed (default 1)\n"
	"      --solver NAME       sgd momentum nesterov adagrad rmsprop adam adamw\n"
	"      --lr X              base learning rate\n"
	"      --momentum M        momentum\n"
	"      --weight-decay W    L2 weight decay\n"
	"      --crop-pad P        augment: random crop after padding by P pixels\n"
	"      --mirror            augment: random horizontal mirror\n"
	"      --set KEY=VALUE     any solver: key (lr_policy=cosine, max_steps=4000,\n"
	"                          warmup=100, clip_norm=5 ...); repeatable\n"
	"      --profile           per-layer timings (stderr, or in --json)\n"
	"      --json              print the run summary as JSON on stdout\n"
	"      --check-args NET    check the options against NET (weights or YAML)\n"
	"                          and exit: 0 if a run would accept them, else 2\n"
	"  -q, --quiet             no progress or summary on stderr\n"
	"  -h, --help              show this help\n"
	"  -V, --version           show the version\n"
	"\n"
	"Exit status: 0 ok, 1 runtime error, 2 usage error, 3 diverged.\n";

enum { OPT_SEED = 256, OPT_SOLVER, OPT_LR, OPT_MOMENTUM, OPT_WD, OPT_SET, OPT_PROFILE, OPT_JSON,
       OPT_CHECK_ARGS, OPT_CROP_PAD, OPT_MIRROR };

static const struct option long_options[] = {
	{"weights", required_argument, NULL, 'w'},
	{"data", required_argument, NULL, 'd'},
	{"output", required_argument, NULL, 'o'},
	{"state", required_argument, NULL, 's'},
	{"iters", required_argument, NULL, 'n'},
	{"time-limit", required_argument, NULL, 't'},
	{"batch", required_argument, NULL, 'b'},
	{"threads", required_argument, NULL, 'j'},
	{"seed", required_argument, NULL, OPT_SEED},
	{"solver", required_argument, NULL, OPT_SOLVER},
	{"lr", required_argument, NULL, OPT_LR},
	{"momentum", required_argument, NULL, OPT_MOMENTUM},
	{"weight-decay", required_argument, NULL, OPT_WD},
	{"set", required_argument, NULL, OPT_SET},
	{"crop-pad", required_argument, NULL, OPT_CROP_PAD},
	{"mirror", no_argument, NULL, OPT_MIRROR},
	{"profile", no_argument, NULL, OPT_PROFILE},
	{"json", no_argument, NULL, OPT_JSON},
	{"check-args", required_argument, NULL, OPT_CHECK_ARGS},
	{"quiet", no_argument, NULL, 'q'},
	{"help", no_argument, NULL, 'h'},
	{"version", no_argument, NULL, 'V'},
	{NULL, 0, NULL, 0}
};

#define MAX_OVERRIDES 32

typedef struct {
	const char *weights, *data, *output, *state, *check_args;
	int64_t iters;
	double time_limit;
	int threads;
	uint64_t seed;
	int profile, json, quiet;
	const char *key[MAX_OVERRIDES], *value[MAX_OVERRIDES];
	int noverrides;
} options;

static void add_override(options *o, const char *key, const char *value)
{
	o->key[o->noverrides] = key;
	o->value[o->noverrides++] = value;
}

static void parse_options(int argc, char **argv, options *o)
{
	int c;
	*o = (options){.iters = 100, .threads = 0, .seed = 1};
	while ((c = getopt_long(argc, argv, "w:d:o:s:n:t:b:j:qhV", long_options, NULL)) != -1) {
		switch (c) {
		case 'w': o->weights = optarg; break;
		case 'd': o->data = optarg; break;
		case 'o': o->output = optarg; break;
		case 's': o->state = optarg; break;
		case 'n': o->iters = sn_cli_int("--iters", optarg, 1, INT64_MAX / 2); break;
		case 't': o->time_limit = sn_cli_double("--time-limit", optarg, 0, 1e9); break;
		case 'b':
			(void)sn_cli_int("--batch", optarg, 1, 1 << 20);
			add_override(o, "batch", optarg);
			break;
		case 'j': o->threads = (int)sn_cli_int("--threads", optarg, 1, 1024); break;
		case OPT_SEED: o->seed = (uint64_t)sn_cli_int("--seed", optarg, 0, INT64_MAX); break;
		case OPT_SOLVER: add_override(o, "type", optarg); break;
		case OPT_LR:
			(void)sn_cli_double("--lr", optarg, 0, 1e30);
			add_override(o, "lr", optarg);
			break;
		case OPT_MOMENTUM:
			(void)sn_cli_double("--momentum", optarg, 0, 1);
			add_override(o, "momentum", optarg);
			break;
		case OPT_WD:
			(void)sn_cli_double("--weight-decay", optarg, 0, 1e30);
			add_override(o, "weight_decay", optarg);
			break;
		case OPT_CROP_PAD:
			(void)sn_cli_int("--crop-pad", optarg, 0, SN_MAX_CROP_PAD);
			add_override(o, "crop_pad", optarg);
			break;
		case OPT_MIRROR: add_override(o, "mirror", "1"); break;
		case OPT_SET: {
			char *eq = strchr(optarg, '=');
			if (!eq || eq == optarg)
				sn_cli_usage_error("--set: expected KEY=VALUE, got '%s'", optarg);
			*eq = 0;
			add_override(o, optarg, eq + 1);
			break;
		}
		case OPT_PROFILE: o->profile = 1; break;
		case OPT_JSON: o->json = 1; break;
		case OPT_CHECK_ARGS: o->check_args = optarg; break;
		case 'q': o->quiet = 1; break;
		case 'h': fputs(usage_text, stdout); exit(0);
		case 'V': sn_cli_version();
		default: sn_cli_usage_error("invalid option");
		}
		if (o->noverrides == MAX_OVERRIDES)
			sn_cli_usage_error("too many solver options");
	}
	if (optind < argc)
		sn_cli_usage_error("unexpected argument '%s'", argv[optind]);
	if (!o->check_args && (!o->weights || !o->data || !o->output))
		sn_cli_usage_error("-w WEIGHTS, -d SHARD and -o OUT are required");
	if (o->json && o->output && !strcmp(o->output, "-"))
		sn_cli_usage_error("--json and -o - both want stdout");
	sn_cli_file out[] = {{"-o", o->output}, {"--state", o->state}};
	sn_cli_file in[] = {{"-w", o->weights}, {"-d", o->data}};
	sn_cli_check_outputs(out, 2, in, 2);
}

/* Command-line values go through the same setter as the YAML solver: keys. */
static int apply_overrides(const options *o, sn_solver_config *c)
{
	int err;
	for (int i = 0; i < o->noverrides; i++)
		if ((err = sn_solver_config_set(c, o->key[i], o->value[i])))
			return err;
	return sn_solver_config_check(c);
}

/* --check-args: a dry run of the option checks, for sn-train to call before
 * it creates anything; usage errors exit 2 from sn_cli_usage_error. */
static int check_args(const options *o)
{
	sn_net net;
	sn_st meta;
	const char *p = o->check_args, *dot = strrchr(p, '.');
	int yaml = dot && (!strcmp(dot, ".yaml") || !strcmp(dot, ".yml"));
	int err = yaml ? sn_net_load(p, &net) : sn_net_from_weights(p, &net, &meta);
	if (err)
		return sn_cli_error(p, err), sn_exit_code(err);
	if (!yaml)
		sn_st_free(&meta);
	sn_solver_config c = net.solver;
	err = apply_overrides(o, &c);
	sn_net_free(&net);
	if (err)
		sn_cli_usage_error("solver: %s", sn_errdetail());
	return 0;
}

typedef struct {
	double last;
	int64_t iters;
} progress_ctx;

static void show_progress(void *ctx, int64_t steps, double loss, double images_per_s)
{
	progress_ctx *p = ctx;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	double t = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
	if (steps != p->iters && t - p->last < 0.25)
		return;
	p->last = t;
	fprintf(stderr, "\rstep %" PRId64 "/%" PRId64 "  loss %.4f  %.0f images/s ",
		steps, p->iters, loss, images_per_s);
}

typedef struct {
	sn_net net;
	sn_data data;
	sn_model model;
	sn_parallel *pool;
	sn_train_state state;
	sn_solver_config solver;
	int64_t round, steps;
	int have_net, have_data, have_model, have_state;
} run;

static void run_free(run *r)
{
	if (r->have_state)
		sn_train_state_free(&r->state);
	if (r->have_model)
		sn_model_free(&r->model);
	sn_parallel_free(r->pool);
	if (r->have_data)
		sn_data_close(&r->data);
	if (r->have_net)
		sn_net_free(&r->net);
}

/* Everything before the loop; returns 0 or the exit code, having printed. */
static int open_inputs(const options *o, run *r)
{
	sn_st meta;
	int err, found;
	/* a bad weights file is bad input (1), even when it holds a NaN */
	if ((err = sn_net_from_weights(o->weights, &r->net, &meta)))
		return sn_cli_error(o->weights, err), SN_EXIT_RUNTIME;
	r->have_net = 1;
	err = sn_train_meta_int(&meta, "round", &r->round);
	if (!err)
		err = sn_train_meta_int(&meta, "steps", &r->steps);
	sn_st_free(&meta);
	if (!err)
		err = sn_train_check_steps(r->steps, o->iters, "metadata steps");
	if (err)
		return sn_cli_error(o->weights, err), SN_EXIT_RUNTIME;
	r->solver = r->net.solver;
	if (apply_overrides(o, &r->solver)) {
		char why[512];
		snprintf(why, sizeof why, "%s", sn_errdetail());
		run_free(r);
		sn_cli_usage_error("solver: %s", why);
	}
	if ((err = sn_data_open(o->data, &r->data)))
		return sn_cli_error(o->data, err), SN_EXIT_RUNTIME;
	r->have_data = 1;
	if ((err = sn_train_check_data(&r->net, &r->data)))
		return sn_cli_error(o->data, err), SN_EXIT_RUNTIME;
	if (o->state)
		err = sn_train_state_load(&r->state, o->state, &r->net, &r->solver, o->seed, &found);
	else
		err = sn_train_state_init(&r->state, &r->net, &r->solver, o->seed);
	r->have_state = !err;
	if (!err)
		err = sn_train_check_steps(r->state.step, o->iters, "state step");
	if (err)
		return sn_cli_error(o->state ? o->state : o->weights, err), SN_EXIT_RUNTIME;
	if ((err = sn_model_init(&r->model, &r->net, r->solver.batch)))
		return sn_cli_error(o->weights, err), SN_EXIT_RUNTIME;
	r->have_model = 1;
	if ((err = sn_parallel_create(&r->pool, o->threads ? o->threads : sn_parallel_cores())) ||
	    (err = sn_model_use_pool(&r->model, r->pool)))
		return sn_cli_error(o->weights, err), SN_EXIT_RUNTIME;
	r->model.profile = o->profile;
	return 0;
}

static json_t *profile_json(const run *r, const sn_train_result *res)
{
	int n = r->net.nlayers;
	sn_train_layer_profile *rows = calloc((size_t)n, sizeof *rows);
	json_t *a = json_array();
	if (!rows || !a) {
		free(rows);
		json_decref(a);
		return NULL;
	}
	sn_train_profile(&r->model, res->steps, r->solver.batch, rows);
	for (int i = 0; i < n; i++)
		json_array_append_new(a, json_pack("{s:s, s:s, s:f, s:f, s:f, s:f}",
			"layer", rows[i].name, "kind", rows[i].kind,
			"forward_ms", rows[i].forward_ms, "backward_ms", rows[i].backward_ms,
			"share", rows[i].share, "gflops", rows[i].gflops));
	free(rows);
	return a;
}

static void print_profile(const run *r, const sn_train_result *res)
{
	int n = r->net.nlayers;
	sn_train_layer_profile *rows = calloc((size_t)n, sizeof *rows);
	if (!rows)
		return;
	sn_train_profile(&r->model, res->steps, r->solver.batch, rows);
	fprintf(stderr, "%-22s %-22s %11s %12s %7s %8s\n", "layer", "kind",
		"forward ms", "backward ms", "share%", "GFLOP/s");
	for (int i = 0; i < n; i++)
		fprintf(stderr, "%-22s %-22s %11.3f %12.3f %7.1f %8.2f\n", rows[i].name,
			rows[i].kind, rows[i].forward_ms, rows[i].backward_ms,
			rows[i].share, rows[i].gflops);
	free(rows);
}

static void report(const options *o, const run *r, const sn_train_result *res)
{
	double ips = res->seconds > 0 ? (double)res->examples / res->seconds : 0;
	if (o->json) {
		json_t *j = json_pack("{s:I, s:I, s:I, s:f, s:f, s:f}",
			"steps", (json_int_t)res->steps, "examples", (json_int_t)res->examples,
			"global_steps", (json_int_t)(r->steps + res->steps),
			"loss", res->loss, "seconds", res->seconds, "images_per_s", ips);
		if (j && o->profile)
			json_object_set_new(j, "profile", profile_json(r, res));
		if (j)
			json_dumpf(j, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(9));
		puts("");
		json_decref(j);
	} else if (o->profile) {
		print_profile(r, res);
	}
	if (!o->quiet && sn_cli_progress_enabled())
		fprintf(stderr, "\r%" PRId64 " steps, %" PRId64 " examples, loss %.4f, "
			"%.2f s, %.0f images/s -> %s\n", res->steps, res->examples, res->loss,
			res->seconds, ips, o->output);
}

/* Weights and state are one commit: the state is renamed first and the
 * weights last, so new weights always have their state beside them. */
static int write_outputs(const options *o, run *r, const sn_train_result *res)
{
	sn_st w, st;
	int err, failed = 1;
	sn_st_init(&w);
	sn_st_init(&st);
	err = sn_train_weights_st(&r->net, &w, r->round, r->steps + res->steps, res);
	if (!err && o->state)
		err = sn_train_state_st(&r->state, &r->net, &st);
	if (!err) {
		const sn_st *files[] = {&st, &w};
		const char *paths[] = {o->state, o->output};
		int skip = o->state ? 0 : 1;
		err = sn_st_write_all(files + skip, paths + skip, 2 - skip, &failed);
		failed += skip;
	}
	sn_st_free(&st);
	sn_st_free(&w);
	if (err)
		return sn_cli_error(failed == 0 ? o->state : o->output, err), SN_EXIT_RUNTIME;
	return 0;
}

int main(int argc, char **argv)
{
	options o;
	run r = {0};
	sn_train_result res;
	int rc;
	sn_cli_init("sn-sgd");
	parse_options(argc, argv, &o);
	if (o.check_args)
		return check_args(&o);
	if ((rc = open_inputs(&o, &r)))
		goto out;
	progress_ctx pc = {.last = -1, .iters = o.iters};
	sn_train_options to = {.iters = o.iters, .time_limit = o.time_limit,
			       .first_step = r.steps};
	if (!o.quiet && sn_cli_progress_enabled()) {
		to.progress = show_progress;
		to.progress_ctx = &pc;
	}
	int err = sn_train_run(&r.model, &r.data, &r.solver, &to, &r.state, &res);
	if (err) {
		if (to.progress)
			fputc('\n', stderr);
		/* the run's own checks are on the state; those on the weights came earlier */
		sn_cli_error((err == SN_EMISMATCH || err == SN_EFORMAT) && o.state ? o.state :
			     o.weights, err);
		rc = err == SN_EINVAL ? SN_EXIT_RUNTIME : sn_exit_code(err);
		goto out;
	}
	if ((rc = write_outputs(&o, &r, &res)))
		goto out;
	report(&o, &r, &res);
out:
	run_free(&r);
	return rc;
}
