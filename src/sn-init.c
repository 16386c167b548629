/* sn-init: read a net definition (YAML) and write seeded initial weights. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "net.h"
#include "st.h"

static const char usage_text[] =
	"Usage: sn-init NET.yaml -o OUT [options]\n"
	"Write seeded initial weights (sn.weights.v1) for a net definition.\n"
	"NET may be '-' for stdin.\n"
	"\n"
	"  -o, --output FILE     output weights ('-' for stdout, *.gz compressed)\n"
	"  -s, --seed N          random seed (default 1); the same seed gives the same bytes\n"
	"  -i, --init METHOD     he (default), xavier, or gaussian:STD\n"
	"  -q, --quiet           no summary on stderr\n"
	"  -h, --help            show this help\n"
	"  -V, --version         show the version\n"
	"\n"
	"Exit status: 0 ok, 1 runtime error (unreadable or bad net, write failed),\n"
	"2 usage error.\n";

static const struct option long_options[] = {
	{"output", required_argument, NULL, 'o'},
	{"seed", required_argument, NULL, 's'},
	{"init", required_argument, NULL, 'i'},
	{"quiet", no_argument, NULL, 'q'},
	{"help", no_argument, NULL, 'h'},
	{"version", no_argument, NULL, 'V'},
	{NULL, 0, NULL, 0}
};

typedef struct {
	const char *net, *output;
	uint64_t seed;
	char method[16];
	double std;
	int quiet;
} options;

static void parse_init(const char *s, options *o)
{
	if (strcmp(s, "he") == 0 || strcmp(s, "xavier") == 0) {
		strcpy(o->method, s);
		return;
	}
	if (strncmp(s, "gaussian:", 9) == 0) {
		strcpy(o->method, "gaussian");
		o->std = sn_cli_double("--init gaussian:STD", s + 9, 0, 1e6);
		if (o->std > 0)
			return;
	}
	sn_cli_usage_error("--init: invalid value '%s' (expected he, xavier or gaussian:STD "
			   "with STD > 0)", s);
}

static void parse_options(int argc, char **argv, options *o)
{
	int c;
	memset(o, 0, sizeof *o);
	o->seed = 1;
	strcpy(o->method, "he");
	while ((c = getopt_long(argc, argv, "o:s:i:qhV", long_options, NULL)) != -1) {
		switch (c) {
		case 'o': o->output = optarg; break;
		case 's': o->seed = (uint64_t)sn_cli_int("--seed", optarg, 0, INT64_MAX); break;
		case 'i': parse_init(optarg, o); break;
		case 'q': o->quiet = 1; break;
		case 'h': fputs(usage_text, stdout); exit(0);
		case 'V': sn_cli_version();
		default: sn_cli_usage_error("invalid option");
		}
	}
	if (optind == argc)
		sn_cli_usage_error("missing NET.yaml");
	if (argc - optind > 1)
		sn_cli_usage_error("one net at a time (got '%s' and '%s')", argv[optind],
				   argv[optind + 1]);
	if (!o->output)
		sn_cli_usage_error("missing -o OUT");
	o->net = argv[optind];
	sn_cli_file out = {"-o", o->output}, in = {"NET", o->net};
	sn_cli_check_outputs(&out, 1, &in, 1);
}

/* 431080 -> "431,080" */
static const char *thousands(int64_t n, char *buf, size_t len)
{
	char digits[32];
	int k = snprintf(digits, sizeof digits, "%" PRId64, n), j = 0;
	for (int i = 0; i < k && (size_t)j + 2 < len; i++) {
		if (i && (k - i) % 3 == 0)
			buf[j++] = ',';
		buf[j++] = digits[i];
	}
	buf[j] = 0;
	return buf;
}

static int write_weights(const sn_net *net, const char *path)
{
	sn_st st;
	int err;
	sn_st_init(&st);
	if (!(err = sn_net_to_st(net, &st)) &&
	    !(err = sn_st_set_meta(&st, "steps", "0")) &&
	    !(err = sn_st_set_meta(&st, "round", "0")) &&
	    !(err = sn_st_set_meta(&st, "examples", "0")))
		err = sn_st_write(&st, path);
	sn_st_free(&st);
	return err;
}

int main(int argc, char **argv)
{
	options o;
	sn_net net;
	sn_cli_init("sn-init");
	parse_options(argc, argv, &o);

	int err = sn_net_load(o.net, &net);
	if (err) {
		/* a bad definition's detail already starts with FILE:LINE:COL */
		if (err == SN_ENET)
			fprintf(stderr, "%s: %s\n", sn_prog, sn_errdetail());
		else
			sn_cli_error(strcmp(o.net, "-") ? o.net : "<stdin>", err);
		return SN_EXIT_RUNTIME;
	}
	/* each line already starts with FILE:LINE:COL */
	for (const char *w = net.warnings, *end; w && (end = strchr(w, '\n')); w = end + 1)
		sn_cli_warn("warning: %.*s", (int)(end - w), w);
	if ((err = sn_net_init_weights(&net, o.method, o.std, o.seed))) {
		sn_cli_error(o.net, err);
		sn_net_free(&net);
		return SN_EXIT_RUNTIME;
	}
	if ((err = write_weights(&net, o.output))) {
		sn_cli_error(o.output, err);
		sn_net_free(&net);
		return SN_EXIT_RUNTIME;
	}
	if (!o.quiet && sn_cli_progress_enabled()) {
		char n[32];
		fprintf(stderr, "%s: %s parameters -> %s\n", net.name,
			thousands((int64_t)net.nparam, n, sizeof n), o.output);
	}
	sn_net_free(&net);
	return SN_EXIT_OK;
}
