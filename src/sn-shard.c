/* sn-shard: split a data set (IDX, CIFAR, CSV/TSV, sn data files) into K
 * sn.data.v1 shards, one per worker, plus an optional validation split. */
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "shard.h"
#include "error.h"

static void usage(void)
{
	printf("Usage: sn-shard [OPTION]... INPUT... -k K -o DIR\n"
	       "Split INPUT (IDX images with --labels, CIFAR-10/100 binary batches, CSV/TSV,\n"
	       "or sn data files; '-' is stdin) into DIR/PREFIX-000.safetensors ...\n\n"
	       "  -k, --shards K            number of shards (1..999)\n"
	       "  -o, --output DIR          output directory (its set is replaced as a whole)\n"
	       "  -l, --labels FILE         IDX labels for the IDX images (once per image file)\n"
	       "      --prefix NAME         shard file prefix (default: shard)\n"
	       "  -z, --compress            write .safetensors.gz\n"
	       "      --shuffle             shuffle with --seed, then split (the default)\n"
	       "      --contiguous          keep input order, contiguous chunks\n"
	       "      --round-robin         record i to shard i mod K\n"
	       "      --stratify            per-class counts of all shards within one\n"
	       "  -s, --seed S              random seed (default 1)\n"
	       "      --val FRACTION        also write DIR/val.safetensors with this share\n"
	       "      --limit N             use only the first N records\n"
	       "      --no-normalize        store mean 0 and std 1\n"
	       "      --stats-from FILE     copy mean/std from this data file\n"
	       "      --classes N           number of classes (default: from the input)\n"
	       "      --format FMT          idx, cifar, csv or data (default: from name/content)\n"
	       "      --cifar100            3074-byte CIFAR-100 records\n"
	       "      --label coarse|fine   CIFAR-100 label to use (default: fine)\n"
	       "      --delimiter C         CSV field separator (',', 'tab', ...)\n"
	       "      --header, --no-header CSV first row is (not) a header (default: guess)\n"
	       "      --label-col COL       CSV label column, name or 0-based index (default: last)\n"
	       "      --json                print the summary as JSON on stdout\n"
	       "  -h, --help                this help\n"
	       "  -V, --version             version\n\n"
	       "Exit status: 0 ok, 1 runtime error (bad input, I/O), 2 usage error.\n");
}

enum {
	OPT_PREFIX = 256, OPT_SHUFFLE, OPT_CONTIGUOUS, OPT_ROUND_ROBIN, OPT_STRATIFY, OPT_VAL,
	OPT_LIMIT, OPT_NO_NORMALIZE, OPT_STATS_FROM, OPT_CLASSES, OPT_FORMAT, OPT_CIFAR100,
	OPT_LABEL, OPT_DELIMITER, OPT_HEADER, OPT_NO_HEADER, OPT_LABEL_COL, OPT_JSON
};

static const struct option long_opts[] = {
	{"shards", required_argument, 0, 'k'}, {"output", required_argument, 0, 'o'},
	{"labels", required_argument, 0, 'l'}, {"prefix", required_argument, 0, OPT_PREFIX},
	{"compress", no_argument, 0, 'z'}, {"shuffle", no_argument, 0, OPT_SHUFFLE},
	{"contiguous", no_argument, 0, OPT_CONTIGUOUS},
	{"round-robin", no_argument, 0, OPT_ROUND_ROBIN},
	{"stratify", no_argument, 0, OPT_STRATIFY}, {"seed", required_argument, 0, 's'},
	{"val", required_argument, 0, OPT_VAL}, {"limit", required_argument, 0, OPT_LIMIT},
	{"no-normalize", no_argument, 0, OPT_NO_NORMALIZE},
	{"stats-from", required_argument, 0, OPT_STATS_FROM},
	{"classes", required_argument, 0, OPT_CLASSES},
	{"format", required_argument, 0, OPT_FORMAT}, {"cifar100", no_argument, 0, OPT_CIFAR100},
	{"label", required_argument, 0, OPT_LABEL},
	{"delimiter", required_argument, 0, OPT_DELIMITER},
	{"header", no_argument, 0, OPT_HEADER}, {"no-header", no_argument, 0, OPT_NO_HEADER},
	{"label-col", required_argument, 0, OPT_LABEL_COL}, {"json", no_argument, 0, OPT_JSON},
	{"help", no_argument, 0, 'h'}, {"version", no_argument, 0, 'V'}, {0, 0, 0, 0}};

static sn_input_format parse_format(const char *s)
{
	static const char *const names[] = { "idx", "cifar", "csv", "data" };
	for (int i = 0; i < 4; i++)
		if (!strcmp(s, names[i]))
			return (sn_input_format)(SN_INPUT_IDX + i);
	sn_cli_usage_error("--format: unknown format '%s' (idx, cifar, csv, data)", s);
}

static char parse_delimiter(const char *s)
{
	if (!strcmp(s, "tab") || !strcmp(s, "\\t"))
		return '\t';
	if (strlen(s) != 1 || s[0] == '"' || s[0] == '\n' || s[0] == '\r')
		sn_cli_usage_error("--delimiter: expected one character or 'tab', got '%s'", s);
	return s[0];
}

static void progress(void *ctx, const char *phase, int64_t done, int64_t total)
{
	(void)ctx;
	if (total > 0)
		fprintf(stderr, "\r%s: %s %lld/%lld ", sn_prog, phase, (long long)done,
			(long long)total);
	else
		fprintf(stderr, "\r%s: %s %lld ", sn_prog, phase, (long long)done);
	if (!strcmp(phase, "writing") && done == total)
		fputc('\n', stderr);
}

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

/* A signal stops the run through the library's own failure path, which
 * removes the shards staged so far; no SA_RESTART, so a blocked read ends. */
static void catch_signals(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
}

static int print_json(const sn_shard_result *r)
{
	json_t *files = json_array();
	for (int i = 0; files && i < r->nfiles; i++)
		json_array_append_new(files, json_string(r->files[i]));
	json_t *j = json_pack("{s:I, s:I, s:i, s:i, s:I, s:o, s:o, s:o}", "records",
			      (json_int_t)r->records, "val_records", (json_int_t)r->val_records,
			      "classes", r->classes, "shards", r->shards, "bytes",
			      (json_int_t)r->bytes, "mean", json_loads(r->mean, 0, NULL), "std",
			      json_loads(r->std, 0, NULL), "files", files);
	if (!j)
		return -1;
	int err = json_dumpf(j, stdout, JSON_COMPACT | JSON_REAL_PRECISION(9));
	json_decref(j);
	if (!err && (fputc('\n', stdout) == EOF || fflush(stdout)))
		err = -1;
	return err;
}

/* Options into o; usage errors exit 2 here.  labels has room for argc. */
static void parse_args(int argc, char **argv, sn_shard_opts *o, const char **labels, int *json)
{
	int c, modes = 0, have_k = 0, stratify = 0;
	o->labels = labels;
	while ((c = getopt_long(argc, argv, "k:o:l:zs:hV", long_opts, NULL)) != -1) {
		switch (c) {
		case 'k': o->k = (int)sn_cli_int("-k", optarg, 1, SN_SHARD_MAX); have_k = 1; break;
		case 'o': o->outdir = optarg; break;
		case 'l': labels[o->nlabels++] = optarg; break;
		case OPT_PREFIX: o->prefix = optarg; break;
		case 'z': o->compress = 1; break;
		case OPT_SHUFFLE: o->split = SN_SPLIT_SHUFFLE; modes |= 1; break;
		case OPT_CONTIGUOUS: o->split = SN_SPLIT_CONTIGUOUS; modes |= 2; break;
		case OPT_ROUND_ROBIN: o->split = SN_SPLIT_ROUND_ROBIN; modes |= 4; break;
		case OPT_STRATIFY: stratify = 1; break;
		case 's': o->seed = (uint64_t)sn_cli_int("--seed", optarg, 0, INT64_MAX); break;
		case OPT_VAL: o->val = sn_cli_double("--val", optarg, 0, 0.999999); break;
		case OPT_LIMIT: o->limit = sn_cli_int("--limit", optarg, 1, INT64_MAX); break;
		case OPT_NO_NORMALIZE: o->normalize = 0; break;
		case OPT_STATS_FROM: o->stats_from = optarg; break;
		case OPT_CLASSES: o->classes = (int)sn_cli_int("--classes", optarg, 1, SN_DATA_MAX_CLASSES); break;
		case OPT_FORMAT: o->format = parse_format(optarg); break;
		case OPT_CIFAR100: o->cifar100 = 1; break;
		case OPT_LABEL:
			if (strcmp(optarg, "coarse") && strcmp(optarg, "fine"))
				sn_cli_usage_error("--label: expected coarse or fine, got '%s'", optarg);
			o->cifar_coarse = !strcmp(optarg, "coarse");
			break;
		case OPT_DELIMITER: o->delimiter = parse_delimiter(optarg); break;
		case OPT_HEADER: o->header = 1; break;
		case OPT_NO_HEADER: o->header = 0; break;
		case OPT_LABEL_COL: o->label_col = optarg; break;
		case OPT_JSON: *json = 1; break;
		case 'h': usage(); exit(0);
		case 'V': sn_cli_version();
		default: sn_cli_usage_error("unknown option");
		}
	}
	if (!have_k)
		sn_cli_usage_error("no shard count (-k K)");
	if (!o->outdir)
		sn_cli_usage_error("no output directory (-o DIR)");
	if (optind == argc)
		sn_cli_usage_error("no input files");
	if (modes & (modes - 1))
		sn_cli_usage_error("--shuffle, --contiguous and --round-robin exclude each other");
	if (stratify && (modes & 6))
		sn_cli_usage_error("--stratify shuffles; it excludes --contiguous and --round-robin");
	if (stratify)
		o->split = SN_SPLIT_STRATIFY;
	if (!o->normalize && o->stats_from)
		sn_cli_usage_error("--no-normalize and --stats-from exclude each other");
	o->inputs = (const char *const *)argv + optind;
	o->ninputs = argc - optind;
}

int main(int argc, char **argv)
{
	sn_shard_opts o;
	sn_shard_result r;
	int json = 0;
	/* static: exit() from option parsing must not leave it unreachable */
	static const char **labels;
	sn_cli_init("sn-shard");
	sn_shard_opts_init(&o);
	if (!(labels = calloc((size_t)argc, sizeof *labels))) {
		sn_cli_warn("out of memory");
		return SN_EXIT_RUNTIME;
	}
	parse_args(argc, argv, &o, labels, &json);
	if (sn_cli_progress_enabled())
		o.progress = progress;
	o.cancel = &interrupted;
	catch_signals();

	int err = sn_shard_write(&o, &r);
	if (err) {
		sn_cli_error(r.errfile, err);
	} else {
		fprintf(stderr, "%s: %lld records, %d classes, %d shard%s%s, %.1f MB\n", sn_prog,
			(long long)r.records, r.classes, r.shards, r.shards == 1 ? "" : "s",
			r.val_records ? " + val" : "", (double)r.bytes / 1e6);
		if (json && print_json(&r)) {
			sn_cli_warn("-: cannot write the summary");
			err = SN_EIO;
		}
	}
	sn_shard_result_free(&r);
	free(labels);
	return sn_exit_code(err);
}
