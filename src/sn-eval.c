/* sn-eval: evaluate weights on one or more data files: loss, accuracy,
 * top-k, per-class accuracy, confusion matrix, per-example predictions. */
#include <cblas.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "data.h"
#include "model.h"
#include "net.h"
#include "train.h"

static const char usage_text[] =
	"Usage: sn-eval -w WEIGHTS -d DATA [-d DATA ...] [options]\n"
	"Evaluate weights on data files (eval mode: running batchnorm statistics,\n"
	"no dropout) and report loss, accuracy and top-k accuracy.\n"
	"\n"
	"  -w, --weights FILE      weights to evaluate (sn.weights.v1)\n"
	"  -d, --data FILE         data file (sn.data.v1); repeat for several\n"
	"  -b, --batch B           at most B examples per forward pass (default 256)\n"
	"  -k, --top-k K           also report top-K accuracy (default 5)\n"
	"      --per-class         per-class accuracy (with class names if known)\n"
	"      --confusion         confusion matrix (rows: label, columns: predicted)\n"
	"      --tsv               tab-separated report\n"
	"      --json              JSON report\n"
	"  -p, --predictions FILE  one line per example: index, label, predicted,\n"
	"                          probability ('-' for stdout; the report then goes\n"
	"                          to stderr)\n"
	"  -j, --threads T         threads (default: the cores); results do not\n"
	"                          depend on it\n"
	"  -h, --help              show this help\n"
	"  -V, --version           show the version\n"
	"\n"
	"Exit status: 0 ok, 1 runtime error, 2 usage error, 3 non-finite output.\n";

enum { OPT_PER_CLASS = 256, OPT_CONFUSION, OPT_TSV, OPT_JSON };

static const struct option long_options[] = {
	{"weights", required_argument, NULL, 'w'},
	{"data", required_argument, NULL, 'd'},
	{"batch", required_argument, NULL, 'b'},
	{"top-k", required_argument, NULL, 'k'},
	{"per-class", no_argument, NULL, OPT_PER_CLASS},
	{"confusion", no_argument, NULL, OPT_CONFUSION},
	{"tsv", no_argument, NULL, OPT_TSV},
	{"json", no_argument, NULL, OPT_JSON},
	{"predictions", required_argument, NULL, 'p'},
	{"threads", required_argument, NULL, 'j'},
	{"help", no_argument, NULL, 'h'},
	{"version", no_argument, NULL, 'V'},
	{NULL, 0, NULL, 0}
};

typedef struct {
	const char *weights, *predictions;
	const char **data;
	int ndata;
	int batch, k, threads;
	int per_class, confusion, tsv, json;
	int k_given;    /* an explicit --top-k must fit the net; the default 5 is clamped */
} options;

static void parse_options(int argc, char **argv, options *o)
{
	int c;
	*o = (options){.batch = 256, .k = 5, .threads = 0};
	o->data = calloc((size_t)argc, sizeof *o->data);
	if (!o->data)
		sn_cli_usage_error("out of memory");
	while ((c = getopt_long(argc, argv, "w:d:b:k:p:j:hV", long_options, NULL)) != -1) {
		switch (c) {
		case 'w': o->weights = optarg; break;
		case 'd': o->data[o->ndata++] = optarg; break;
		case 'b': o->batch = (int)sn_cli_int("--batch", optarg, 1, 1 << 16); break;
		case 'k':
			o->k = (int)sn_cli_int("--top-k", optarg, 1, 1 << 20);
			o->k_given = 1;
			break;
		case 'p': o->predictions = optarg; break;
		case 'j': o->threads = (int)sn_cli_int("--threads", optarg, 1, 1024); break;
		case OPT_PER_CLASS: o->per_class = 1; break;
		case OPT_CONFUSION: o->confusion = 1; break;
		case OPT_TSV: o->tsv = 1; break;
		case OPT_JSON: o->json = 1; break;
		case 'h': fputs(usage_text, stdout); free(o->data); exit(0);
		case 'V': free(o->data); sn_cli_version();
		default: free(o->data); sn_cli_usage_error("invalid option");
		}
	}
	const char *bad = optind < argc ? argv[optind] : NULL;
	const char *why = bad ? "unexpected argument" :
			  !o->weights || !o->ndata ? "-w WEIGHTS and at least one -d DATA are required" :
			  o->tsv && o->json ? "--tsv and --json exclude each other" :
			  o->json && o->predictions && !strcmp(o->predictions, "-") ?
			  "--json and --predictions - both want stdout" : NULL;
	if (why) {
		free(o->data);
		if (bad)
			sn_cli_usage_error("%s '%s'", why, bad);
		sn_cli_usage_error("%s", why);
	}
	sn_cli_file out = {"--predictions", o->predictions};
	sn_cli_file *in = malloc(sizeof *in * (size_t)(o->ndata + 1));
	if (!in)
		sn_cli_usage_error("out of memory");
	in[0] = (sn_cli_file){"-w", o->weights};
	for (int i = 0; i < o->ndata; i++)
		in[i + 1] = (sn_cli_file){"-d", o->data[i]};
	sn_cli_check_outputs(&out, 1, in, o->ndata + 1);
	free(in);
}

typedef struct {
	sn_net net;
	sn_model model;
	sn_parallel *pool;
	sn_eval eval;
	char **names;
	int have_net, have_model, have_eval;
} run;

static void run_free(run *r)
{
	sn_eval_class_names_free(r->names, r->net.classes);
	if (r->have_eval)
		sn_eval_free(&r->eval);
	if (r->have_model)
		sn_model_free(&r->model);
	sn_parallel_free(r->pool);
	if (r->have_net)
		sn_net_free(&r->net);
}

/* Evaluate every data file in order; returns 0 or the exit code. */
static int evaluate(const options *o, run *r)
{
	sn_st meta;
	int err;
	if ((err = sn_net_from_weights(o->weights, &r->net, &meta)))
		return sn_cli_error(o->weights, err), SN_EXIT_RUNTIME;
	sn_st_free(&meta);
	r->have_net = 1;
	if (o->k_given && o->k > r->net.classes) {
		int classes = r->net.classes;
		run_free(r);
		sn_cli_usage_error("--top-k %d: the net has only %d classes", o->k, classes);
	}
	if ((err = sn_eval_init(&r->eval, r->net.classes, o->k, o->predictions != NULL)))
		return sn_cli_error(o->weights, err), SN_EXIT_RUNTIME;
	r->have_eval = 1;
	if ((err = sn_model_init(&r->model, &r->net, sn_model_cache_batch(&r->net, o->batch))))
		return sn_cli_error(o->weights, err), SN_EXIT_RUNTIME;
	r->have_model = 1;
	if ((err = sn_parallel_create(&r->pool, o->threads ? o->threads : sn_parallel_cores())) ||
	    (err = sn_model_use_pool(&r->model, r->pool)))
		return sn_cli_error(o->weights, err), SN_EXIT_RUNTIME;
	for (int i = 0; i < o->ndata; i++) {
		sn_data d;
		if ((err = sn_data_open(o->data[i], &d)))
			return sn_cli_error(o->data[i], err), SN_EXIT_RUNTIME;
		err = sn_eval_add(&r->model, &d, &r->eval);
		if (!err && !r->names)
			err = sn_eval_class_names(&d, r->net.classes, &r->names);
		sn_data_close(&d);
		if (err)
			return sn_cli_error(o->data[i], err), sn_exit_code(err) == SN_EXIT_DIVERGED ?
				SN_EXIT_DIVERGED : SN_EXIT_RUNTIME;
	}
	return 0;
}

static int64_t class_total(const sn_eval *e, int c)
{
	int64_t t = 0;
	for (int j = 0; j < e->classes; j++)
		t += e->confusion[(size_t)c * (size_t)e->classes + (size_t)j];
	return t;
}

static double ratio(int64_t a, int64_t b)
{
	return b ? (double)a / (double)b : 0;
}

static json_t *report_json(const options *o, const run *r)
{
	const sn_eval *e = &r->eval;
	json_t *per = json_array(), *conf = json_array(), *files = json_array();
	for (int i = 0; i < o->ndata; i++)
		json_array_append_new(files, json_string(o->data[i]));
	for (int c = 0; c < e->classes; c++) {
		int64_t n = class_total(e, c), ok = e->confusion[(size_t)c * (size_t)e->classes + (size_t)c];
		json_t *row = json_array();
		json_array_append_new(per, json_pack("{s:i, s:s?, s:I, s:I, s:f}", "class", c,
			"name", r->names ? r->names[c] : NULL, "examples", (json_int_t)n,
			"correct", (json_int_t)ok, "accuracy", ratio(ok, n)));
		for (int j = 0; j < e->classes; j++)
			json_array_append_new(row, json_integer(e->confusion[(size_t)c * (size_t)e->classes + (size_t)j]));
		json_array_append_new(conf, row);
	}
	return json_pack("{s:o, s:I, s:f, s:I, s:f, s:i, s:I, s:f, s:o, s:o}",
		"data", files, "examples", (json_int_t)e->n,
		"loss", e->n ? e->loss_sum / (double)e->n : 0,
		"correct", (json_int_t)e->correct, "accuracy", ratio(e->correct, e->n),
		"top_k", e->k, "correct_top_k", (json_int_t)e->correct_k,
		"top_k_accuracy", ratio(e->correct_k, e->n), "per_class", per, "confusion", conf);
}

static const char *class_name(const run *r, int c)
{
	return r->names ? r->names[c] : "-";
}

static void report_per_class(FILE *f, const run *r, int tsv)
{
	const sn_eval *e = &r->eval;
	int w = 4;
	for (int c = 0; c < e->classes && !tsv; c++)
		if ((int)strlen(class_name(r, c)) > w)
			w = (int)strlen(class_name(r, c));
	if (tsv)
		fprintf(f, "class\tname\texamples\tcorrect\taccuracy\n");
	else
		fprintf(f, "class  %-*s  examples  correct  accuracy\n", w, "name");
	for (int c = 0; c < e->classes; c++) {
		int64_t n = class_total(e, c), ok = e->confusion[(size_t)c * (size_t)e->classes + (size_t)c];
		if (tsv)
			fprintf(f, "%d\t%s\t%" PRId64 "\t%" PRId64 "\t%.6f\n", c, class_name(r, c),
				n, ok, ratio(ok, n));
		else
			fprintf(f, "%5d  %-*s  %8" PRId64 "  %7" PRId64 "  %7.2f%%\n", c, w,
				class_name(r, c), n, ok, 100 * ratio(ok, n));
	}
}

/* Rows are labels, columns predictions; text columns are as wide as the
 * largest count so the matrix lines up. */
static void report_confusion(FILE *f, const sn_eval *e, int tsv)
{
	int w = 1;
	for (int64_t v = e->n > e->classes ? e->n : e->classes; v >= 10; v /= 10)
		w++;
	fprintf(f, tsv ? "label\\predicted" : "label\\pred");
	for (int j = 0; j < e->classes; j++)
		if (tsv)
			fprintf(f, "\t%d", j);
		else
			fprintf(f, " %*d", w, j);
	fputc('\n', f);
	for (int c = 0; c < e->classes; c++) {
		fprintf(f, tsv ? "%d" : "%10d", c);
		for (int j = 0; j < e->classes; j++) {
			int64_t v = e->confusion[(size_t)c * (size_t)e->classes + (size_t)j];
			if (tsv)
				fprintf(f, "\t%" PRId64, v);
			else
				fprintf(f, " %*" PRId64, w, v);
		}
		fputc('\n', f);
	}
}

static void report(const options *o, const run *r)
{
	const sn_eval *e = &r->eval;
	FILE *f = o->predictions && !strcmp(o->predictions, "-") ? stderr : stdout;
	double loss = e->n ? e->loss_sum / (double)e->n : 0;
	if (o->json) {
		json_t *j = report_json(o, r);
		json_dumpf(j, f, JSON_INDENT(2) | JSON_REAL_PRECISION(9));
		fputc('\n', f);
		json_decref(j);
		return;
	}
	if (o->tsv)
		fprintf(f, "examples\tloss\taccuracy\ttop_k\ttop_k_accuracy\n%" PRId64
			"\t%.6f\t%.6f\t%d\t%.6f\n", e->n, loss, ratio(e->correct, e->n), e->k,
			ratio(e->correct_k, e->n));
	else
		fprintf(f, "examples     %" PRId64 "\nloss         %.6f\naccuracy     %.2f%% "
			"(%" PRId64 "/%" PRId64 ")\ntop-%d        %.2f%%\n", e->n, loss,
			100 * ratio(e->correct, e->n), e->correct, e->n, e->k,
			100 * ratio(e->correct_k, e->n));
	if (o->per_class) {
		fputc('\n', f);
		report_per_class(f, r, o->tsv);
	}
	if (o->confusion) {
		fputc('\n', f);
		report_confusion(f, e, o->tsv);
	}
}

int main(int argc, char **argv)
{
	options o;
	run r = {0};
	int rc, err;
	sn_cli_init("sn-eval");
	parse_options(argc, argv, &o);
	if ((rc = evaluate(&o, &r)))
		goto out;
	if (o.predictions && (err = sn_eval_write_predictions(&r.eval, o.predictions))) {
		sn_cli_error(o.predictions, err);
		rc = SN_EXIT_RUNTIME;
		goto out;
	}
	report(&o, &r);
out:
	run_free(&r);
	free(o.data);
	return rc;
}
