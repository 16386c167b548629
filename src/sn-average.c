/* sn-average: combine workers' weight files into the next round's weights. */
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "average.h"
#include "cli.h"
#include "error.h"

static void usage(void)
{
	printf("Usage: sn-average [OPTION]... IN... -o OUT\n"
	       "Average weight files (one per worker) into OUT.  IN '-' reads file names\n"
	       "from stdin, one per line.  An IN that is a delta (sn-delta diff) is applied\n"
	       "to --base first.\n\n"
	       "  -o, --output OUT          the averaged weights ('-' for stdout)\n"
	       "  -w, --weighted            weight each input by its 'examples' metadata\n"
	       "  -b, --base PREV           the weights the round started from\n"
	       "      --outer-lr LR         outer Nesterov step on the averaged delta\n"
	       "      --outer-momentum M    outer momentum (with --outer-lr; default 0)\n"
	       "      --outer-state FILE    outer momentum, read if present, then written\n"
	       "  -q, --min-inputs Q        fail (exit 4) with fewer than Q usable inputs\n"
	       "      --json                print a summary as JSON on stdout\n"
	       "  -h, --help                this help\n"
	       "  -V, --version             version\n\n"
	       "Exit status: 0 ok, 1 runtime error, 2 usage error, 4 quorum not met.\n");
}

typedef struct {
	char **names;
	int n, cap;
} name_list;

static int push(name_list *l, const char *s)
{
	if (l->n == l->cap) {
		int cap = l->cap ? 2 * l->cap : 16;
		char **p = realloc(l->names, sizeof *p * (size_t)cap);
		if (!p)
			return -1;
		l->names = p;
		l->cap = cap;
	}
	if (!(l->names[l->n] = strdup(s)))
		return -1;
	l->n++;
	return 0;
}

static int read_stdin_names(name_list *l)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	int err = 0;
	while (!err && (len = getline(&line, &cap, stdin)) >= 0) {
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = 0;
		if (len > 0)
			err = push(l, line);
	}
	free(line);
	return err;
}

static void warn_excluded(void *ctx, const char *path, const char *why)
{
	(void)ctx;
	sn_cli_warn("%s: excluded: %s", path, why);
}

static int print_json(const sn_average_summary *s, const char *out)
{
	json_t *j = json_pack("{s:s, s:i, s:i, s:I, s:I, s:I, s:f, s:f}", "output", out,
			      "used", s->used, "excluded", s->excluded, "examples",
			      (json_int_t)s->examples, "steps", (json_int_t)s->steps, "round",
			      (json_int_t)s->round, "seconds_max", s->seconds_max,
			      "seconds_mean", s->seconds_mean);
	if (!j)
		return -1;
	int err = json_object_set_new(j, "loss", isnan(s->loss) ? json_null() : json_real(s->loss));
	if (!err)
		err = json_dumpf(j, stdout, JSON_COMPACT);
	json_decref(j);
	if (!err && fputc('\n', stdout) == EOF)
		err = -1;
	return err;
}

/* No output may be an input or the other output (the outer state is the
 * one file read and then replaced). */
static void check_outputs(const char *out, const sn_average_opts *o, const name_list *in)
{
	sn_cli_file outs[] = {{"-o", out}, {"--outer-state", o->outer_state}};
	sn_cli_file *ins = malloc(sizeof *ins * (size_t)(in->n + 1));
	if (!ins)
		sn_cli_usage_error("out of memory");
	ins[0] = (sn_cli_file){"--base", o->base};
	for (int i = 0; i < in->n; i++)
		ins[i + 1] = (sn_cli_file){"input", in->names[i]};
	sn_cli_check_outputs(outs, 2, ins, in->n + 1);
	free(ins);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"output", required_argument, 0, 'o'}, {"weighted", no_argument, 0, 'w'},
		{"base", required_argument, 0, 'b'}, {"outer-lr", required_argument, 0, 'L'},
		{"outer-momentum", required_argument, 0, 'M'},
		{"outer-state", required_argument, 0, 'S'},
		{"min-inputs", required_argument, 0, 'q'}, {"json", no_argument, 0, 'j'},
		{"help", no_argument, 0, 'h'}, {"version", no_argument, 0, 'V'}, {0, 0, 0, 0}};
	sn_average_opts o;
	const char *out = NULL;
	int json = 0, c, have_lr = 0, have_m = 0;
	sn_cli_init("sn-average");
	sn_average_opts_default(&o);
	while ((c = getopt_long(argc, argv, "o:wb:q:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'o': out = optarg; break;
		case 'w': o.weighted = 1; break;
		case 'b': o.base = optarg; break;
		case 'L': o.outer_lr = sn_cli_double("--outer-lr", optarg, 0, 1e6); have_lr = 1; break;
		case 'M': o.outer_momentum = sn_cli_double("--outer-momentum", optarg, 0, 1); have_m = 1; break;
		case 'S': o.outer_state = optarg; break;
		case 'q': o.min_inputs = (int)sn_cli_int("--min-inputs", optarg, 1, 1 << 20); break;
		case 'j': json = 1; break;
		case 'h': usage(); return 0;
		case 'V': sn_cli_version();
		default: sn_cli_usage_error("unknown option");
		}
	}
	if (!out)
		sn_cli_usage_error("no output file (-o OUT)");
	if (optind == argc)
		sn_cli_usage_error("no input files");
	o.outer = have_lr || have_m;
	if (o.outer && !o.base)
		sn_cli_usage_error("--outer-lr and --outer-momentum need --base");
	if (o.outer_state && !o.outer)
		sn_cli_usage_error("--outer-state needs --outer-lr");
	if (json && strcmp(out, "-") == 0)
		sn_cli_usage_error("--json and -o - both want stdout");

	name_list in = {0};
	int err = 0;
	for (int i = optind; i < argc && !err; i++)
		err = strcmp(argv[i], "-") == 0 ? read_stdin_names(&in) : push(&in, argv[i]);
	if (err) {
		sn_cli_warn("out of memory");
		return SN_EXIT_RUNTIME;
	}
	if (in.n == 0)
		sn_cli_usage_error("no input files (stdin listed none)");
	check_outputs(out, &o, &in);

	sn_average_summary s;
	err = sn_average_files((const char *const *)in.names, in.n, out, &o, warn_excluded,
			       NULL, &s);
	if (err)
		sn_cli_error(s.bad_path ? s.bad_path : out, err);
	else if (json && print_json(&s, out) != 0)
		err = sn_fail(SN_EIO, "cannot write the summary");
	for (int i = 0; i < in.n; i++)
		free(in.names[i]);
	free(in.names);
	return err == SN_EINVAL ? SN_EXIT_RUNTIME : sn_exit_code(err);
}
