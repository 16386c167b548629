/* sn-delta: make a delta file (NEW - BASE, exact or quantised, with error
 * feedback) and apply one (BASE + delta = the weights). */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "delta.h"
#include "error.h"

static void usage(void)
{
	printf("Usage: sn-delta diff BASE NEW -o DELTA [--compress SCHEME] [--block N]\n"
	       "                    [--feedback FILE] [--json]\n"
	       "       sn-delta apply BASE DELTA -o NEW [--json]\n"
	       "Make the delta from the weights BASE to the weights NEW, or apply one.\n"
	       "Any FILE may end in .gz (gzip) or be - (stdin, or stdout for -o).\n\n"
	       "  -o, --output FILE       the delta (diff) or the weights (apply)\n"
	       "  -c, --compress SCHEME   none (exact, default), bf16, int8 or int4\n"
	       "  -b, --block N           values per scale for int8 and int4 (default %d)\n"
	       "  -f, --feedback FILE     error feedback: add the residual FILE (if it exists)\n"
	       "                          before quantising, then rewrite it with what\n"
	       "                          quantising dropped, together with DELTA\n"
	       "      --json              print a summary as JSON on stdout\n"
	       "  -h, --help              this help\n"
	       "  -V, --version           version\n\n"
	       "Exit status: 0 ok, 1 runtime error (unreadable, corrupt or mismatched input),\n"
	       "2 usage error, 3 NEW holds non-finite values.  See sn-delta(1), sn-formats(5).\n",
	       SN_DELTA_BLOCK_DEFAULT);
}

static int64_t file_size(const char *path)
{
	struct stat sb;
	return strcmp(path, "-") != 0 && stat(path, &sb) == 0 ? (int64_t)sb.st_size : -1;
}

static int print_json(const char *cmd, const char *out, const sn_delta_summary *s, int diff)
{
	char crc[16];
	int64_t bytes = file_size(out);
	snprintf(crc, sizeof crc, "%08x", (unsigned)s->base_crc);
	json_t *j = json_pack("{s:s, s:s, s:s, s:i, s:i, s:I, s:s}", "command", cmd, "output", out,
			      "scheme", sn_delta_scheme_name(s->scheme), "block", s->block,
			      "tensors", s->tensors, "values", (json_int_t)s->values,
			      "base_crc32", crc);
	if (!j)
		return -1;
	int err = json_object_set_new(j, "bytes", bytes >= 0 ? json_integer(bytes) : json_null());
	if (!err && diff)
		err = json_object_set_new(j, "max_abs_error", json_real(s->max_abs_error)) ||
		      json_object_set_new(j, "residual_max_abs", json_real(s->residual_max_abs));
	if (!err)
		err = json_dumpf(j, stdout, JSON_COMPACT);
	json_decref(j);
	if (!err && fputc('\n', stdout) == EOF)
		err = -1;
	return err;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"output", required_argument, 0, 'o'}, {"compress", required_argument, 0, 'c'},
		{"block", required_argument, 0, 'b'}, {"feedback", required_argument, 0, 'f'},
		{"json", no_argument, 0, 'j'}, {"help", no_argument, 0, 'h'},
		{"version", no_argument, 0, 'V'}, {0, 0, 0, 0}};
	sn_delta_opts o;
	const char *out = NULL;
	int json = 0, c, have_block = 0;
	sn_cli_init("sn-delta");
	sn_delta_opts_default(&o);
	/* options may come before or after the subcommand and its operands */
	while ((c = getopt_long(argc, argv, "o:c:b:f:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'o': out = optarg; break;
		case 'c':
			if (sn_delta_scheme_parse(optarg, &o.scheme) != 0)
				sn_cli_usage_error("--compress: %s", sn_errdetail());
			break;
		case 'b':
			o.block = (int)sn_cli_int("--block", optarg, 1, SN_DELTA_BLOCK_MAX);
			have_block = 1;
			break;
		case 'f': o.feedback = optarg; break;
		case 'j': json = 1; break;
		case 'h': usage(); return 0;
		case 'V': sn_cli_version();
		default: sn_cli_usage_error("unknown option");
		}
	}
	if (optind == argc)
		sn_cli_usage_error("no command (diff or apply)");
	const char *cmd = argv[optind];
	int diff = strcmp(cmd, "diff") == 0;
	if (!diff && strcmp(cmd, "apply") != 0)
		sn_cli_usage_error("unknown command '%s' (diff or apply)", cmd);
	if (argc - optind != 3)
		sn_cli_usage_error("%s takes two files, BASE and %s", cmd, diff ? "NEW" : "DELTA");
	const char *a = argv[optind + 1], *b = argv[optind + 2];
	if (!out)
		sn_cli_usage_error("no output file (-o FILE)");
	if (strcmp(a, "-") == 0 && strcmp(b, "-") == 0)
		sn_cli_usage_error("only one input can be stdin");
	if (json && strcmp(out, "-") == 0)
		sn_cli_usage_error("--json and -o - both want stdout");
	if (!diff && (o.feedback || have_block || o.scheme != SN_DELTA_NONE))
		sn_cli_usage_error("apply takes its scheme from the delta (no --compress, --block, "
				   "--feedback)");
	if (o.feedback && o.scheme == SN_DELTA_NONE)
		sn_cli_usage_error("--feedback is for lossy schemes (none is exact)");
	if (o.feedback && strcmp(out, "-") == 0)
		sn_cli_usage_error("--feedback needs -o FILE: the delta and the residual are "
				   "committed together");
	if (o.feedback && strcmp(o.feedback, "-") == 0)
		sn_cli_usage_error("--feedback needs a file, not -");
	if (have_block && o.scheme != SN_DELTA_INT8 && o.scheme != SN_DELTA_INT4)
		sn_cli_usage_error("--block is for int8 and int4");

	/* the residual is the one file read and then replaced */
	sn_cli_file outs[] = {{"-o", out}, {"--feedback", o.feedback}};
	sn_cli_file ins[] = {{"BASE", a}, {diff ? "NEW" : "DELTA", b}};
	sn_cli_check_outputs(outs, 2, ins, 2);

	sn_delta_summary s;
	int err = diff ? sn_delta_diff_files(a, b, out, &o, &s) : sn_delta_apply_files(a, b, out, &s);
	if (err)
		sn_cli_error(s.bad_path ? s.bad_path : out, err);
	else if (json && print_json(cmd, out, &s, diff) != 0)
		err = sn_fail(SN_EIO, "cannot write the summary");
	return err == SN_EINVAL ? SN_EXIT_RUNTIME : sn_exit_code(err);
}
