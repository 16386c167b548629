/* sn-info: describe, verify and compare safetensors files. */
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "data.h"
#include "delta.h"
#include "error.h"
#include "net.h"
#include "st.h"
#include "tensor.h"
#include "train.h"

typedef struct {
	int verify, diff, json, quiet, verbose;
	double tol;
} options;

static void usage(void)
{
	printf("Usage: sn-info [OPTIONS] FILE...\n"
	       "       sn-info --verify [OPTIONS] FILE...\n"
	       "       sn-info --diff [--tol T] [OPTIONS] A B\n"
	       "Describe safetensors files: tensors with statistics, metadata, the net of a\n"
	       "weight file (shapes, parameters, FLOPs), the records and classes of a data\n"
	       "file.  FILE may end in .gz, or be - for standard input.\n"
	       "\n"
	       "  --verify       check structure and crc32; print \"FILE: OK\" or the error\n"
	       "  --diff         compare the tensors of A and B\n"
	       "  --tol T        largest absolute difference --diff accepts (default 0)\n"
	       "  --json         one JSON document on standard output\n"
	       "  -v, --verbose  show long metadata values in full\n"
	       "  -q, --quiet    print nothing; the exit status tells\n"
	       "  -h, --help     show this help and exit\n"
	       "      --version  show the version and exit\n"
	       "\n"
	       "Exit status: 0 ok (or identical), 1 a file failed (or the files differ),\n"
	       "2 usage error.  See sn-info(1) and sn-formats(5).\n");
}

/* ---------------------------------------------------------------- helpers */

/* 431080 -> "431,080": counts read at a glance in text reports. */
static const char *grouped(int64_t v, char *buf, size_t len)
{
	char digits[32];
	int n = snprintf(digits, sizeof digits, "%" PRId64, v), neg = v < 0, at = 0;
	for (int i = 0; i < n && at < (int)len - 1; i++) {
		buf[at++] = digits[i];
		int left = n - 1 - i;
		if (i >= neg && left > 0 && left % 3 == 0 && at < (int)len - 1)
			buf[at++] = ',';
	}
	buf[at] = 0;
	return buf;
}

/* JSON has no NaN or Inf: those become null. */
static json_t *jnum(double v)
{
	return isfinite(v) ? json_real(v) : json_null();
}

static json_t *jshape(int ndim, const int64_t *shape)
{
	json_t *a = json_array();
	for (int i = 0; i < ndim; i++)
		json_array_append_new(a, json_integer(shape[i]));
	return a;
}

static const char *format_of(const sn_st *st)
{
	const char *f = sn_st_meta(st, "format");
	return f ? f : "safetensors (foreign)";
}

static int64_t data_bytes(const sn_st *st)
{
	int64_t n = 0;
	for (int i = 0; i < st->ntensors; i++)
		n += (int64_t)st->tensors[i].nbytes;
	return n;
}

/* ---------------------------------------------------------------- tensors, metadata */

static void text_tensors(const sn_st *st)
{
	char shape[160], el[32], by[32];
	printf("%-24s %-5s %-16s %12s %14s %12s %12s %12s %12s %12s\n", "tensor", "dtype", "shape",
	       "elements", "bytes", "min", "max", "mean", "std", "L2");
	for (int i = 0; i < st->ntensors; i++) {
		const sn_tensor *t = &st->tensors[i];
		sn_tensor_stats s;
		sn_tensor_stats_compute(t, &s);
		printf("%-24s %-5s %-16s %12s %14s %12.6g %12.6g %12.6g %12.6g %12.6g", t->name,
		       sn_dtype_name(t->dtype), sn_shape_format(t->ndim, t->shape, shape, sizeof shape),
		       grouped(sn_tensor_numel(t), el, sizeof el),
		       grouped((int64_t)t->nbytes, by, sizeof by), s.min, s.max, s.mean, s.std, s.l2);
		if (s.nonfinite)
			printf("  (%" PRId64 " non-finite)", s.nonfinite);
		putchar('\n');
	}
}

static json_t *json_tensors(const sn_st *st)
{
	json_t *a = json_array();
	for (int i = 0; i < st->ntensors; i++) {
		const sn_tensor *t = &st->tensors[i];
		sn_tensor_stats s;
		sn_tensor_stats_compute(t, &s);
		json_array_append_new(
			a, json_pack("{s:s, s:s, s:o, s:I, s:I, s:o, s:o, s:o, s:o, s:o, s:I}", "name",
				     t->name, "dtype", sn_dtype_name(t->dtype), "shape",
				     jshape(t->ndim, t->shape), "elements", (json_int_t)sn_tensor_numel(t),
				     "bytes", (json_int_t)t->nbytes, "min", jnum(s.min), "max",
				     jnum(s.max), "mean", jnum(s.mean), "std", jnum(s.std), "l2",
				     jnum(s.l2), "nonfinite", (json_int_t)s.nonfinite));
	}
	return a;
}

/* Long values (a net's YAML) show as their first line and a line count. */
static void text_meta_value(const char *v, int verbose)
{
	int lines = 1;
	for (const char *p = v; *p; p++)
		lines += *p == '\n' && p[1];
	size_t first = strcspn(v, "\n");
	if (verbose && lines > 1) {
		printf("|\n");
		for (const char *p = v; *p;) {
			size_t n = strcspn(p, "\n");
			printf("      %.*s\n", (int)n, p);
			p += n + (p[n] == '\n');
		}
	} else if (lines > 1 || first > 72) {
		printf("%.*s%s (%d line%s)\n", (int)(first > 60 ? 60 : first), v,
		       first > 60 ? "..." : " ...", lines, lines == 1 ? "" : "s");
	} else {
		printf("%s\n", v);
	}
}

static void text_meta(const sn_st *st, int verbose)
{
	if (!st->nmeta)
		return;
	printf("metadata:\n");
	for (int i = 0; i < st->nmeta; i++) {
		printf("  %-10s ", st->meta[i].key);
		text_meta_value(st->meta[i].value, verbose);
	}
}

static json_t *json_meta(const sn_st *st)
{
	json_t *o = json_object();
	for (int i = 0; i < st->nmeta; i++)
		json_object_set_new(o, st->meta[i].key, json_string(st->meta[i].value));
	return o;
}

/* ---------------------------------------------------------------- weights: the net */

static int64_t layer_params(const sn_layer *l, int trainable)
{
	int64_t n = 0;
	for (int i = 0; i < l->nparams; i++)
		if (l->params[i].trainable == trainable)
			n += l->params[i].numel;
	return n;
}

static int parse_net(const sn_st *st, sn_net *net)
{
	const char *yaml = sn_st_meta(st, "net");
	if (!yaml)
		return sn_fail(SN_EFORMAT, "weight file has no \"net\" metadata");
	/* the caller prefixes the path: positions read "net:3:10: ..." */
	return sn_net_parse(yaml, strlen(yaml), "net", net);
}

/* A chain's layer reads the one before it; a graph's may read others. */
static int takes_previous(const sn_layer *l, int i)
{
	return l->ninputs == 1 && l->input[0] == i;
}

static const char *input_name(const sn_net *net, int act)
{
	return act ? net->layers[act - 1].name : "input";
}

static void text_net(const sn_net *net)
{
	char shape[64], a[32], b[32], c[32];
	printf("net: %s, input %s\n", net->name,
	       sn_shape_format(net->input.ndim, net->input.d, shape, sizeof shape));
	printf("  %-22s %-22s %-14s %12s %16s\n", "layer", "kind", "output", "parameters",
	       "FLOPs forward");
	for (int i = 0; i < net->nlayers; i++) {
		const sn_layer *l = &net->layers[i];
		printf("  %-22s %-22s %-14s %12s %16s", l->name, l->kind->name,
		       sn_shape_format(l->out.ndim, l->out.d, shape, sizeof shape),
		       grouped(layer_params(l, 1), a, sizeof a),
		       grouped(l->flops_forward, b, sizeof b));
		if (!takes_previous(l, i))
			for (int k = 0; k < l->ninputs; k++)
				printf("%s%s", k ? ", " : "  <- ", input_name(net, l->input[k]));
		printf("\n");
	}
	printf("  parameters: %s", grouped((int64_t)net->nparam, a, sizeof a));
	if (net->nbuffer)
		printf(" (+ %s in buffers)", grouped((int64_t)net->nbuffer, a, sizeof a));
	printf("\n  FLOPs per example: forward %s, backward %s\n",
	       grouped(net->flops_forward, b, sizeof b), grouped(net->flops_backward, c, sizeof c));
}

static json_t *json_net(const sn_net *net)
{
	json_t *layers = json_array();
	for (int i = 0; i < net->nlayers; i++) {
		const sn_layer *l = &net->layers[i];
		json_t *j = json_pack("{s:s, s:s, s:o, s:I, s:I, s:I, s:I}", "name", l->name,
				      "kind", l->kind->name, "output", jshape(l->out.ndim, l->out.d),
				      "parameters", (json_int_t)layer_params(l, 1), "buffers",
				      (json_int_t)layer_params(l, 0), "flops_forward",
				      (json_int_t)l->flops_forward, "flops_backward",
				      (json_int_t)l->flops_backward);
		if (j && !takes_previous(l, i)) {
			json_t *inputs = json_array();
			for (int k = 0; k < l->ninputs; k++)
				json_array_append_new(inputs, json_string(input_name(net, l->input[k])));
			json_object_set_new(j, "inputs", inputs);
		}
		json_array_append_new(layers, j);
	}
	return json_pack("{s:s, s:o, s:o, s:I, s:I, s:I, s:I}", "name", net->name, "input",
			 jshape(net->input.ndim, net->input.d), "layers", layers, "parameters",
			 (json_int_t)net->nparam, "buffers", (json_int_t)net->nbuffer,
			 "flops_forward", (json_int_t)net->flops_forward, "flops_backward",
			 (json_int_t)net->flops_backward);
}

/* ---------------------------------------------------------------- data files */

typedef struct {
	int64_t records;
	int classes;             /* from the metadata, or 1 + the largest label */
	int64_t *count;          /* [classes] */
	int64_t out_of_range;
} data_summary;

static void summarize_data(const sn_st *st, data_summary *d)
{
	memset(d, 0, sizeof *d);
	const sn_tensor *y = sn_st_find(st, "y"), *x = sn_st_find(st, "x");
	const char *k = sn_st_meta(st, "classes");
	char *end = NULL;
	long classes = k ? strtol(k, &end, 10) : 0;
	if (x && x->ndim > 0)
		d->records = x->shape[0];
	if (!y || y->ndim != 1)
		return;
	d->records = y->shape[0];
	if (!k || *end || classes < 1 || classes > 1 << 20) {
		classes = 0;
		for (int64_t i = 0; i < d->records; i++) {
			double v = sn_tensor_get(y, (size_t)i);
			if (v >= classes && v < 1 << 20)
				classes = (long)v + 1;
		}
	}
	d->classes = (int)classes;
	d->count = calloc(classes ? (size_t)classes : 1, sizeof *d->count);
	for (int64_t i = 0; d->count && i < d->records; i++) {
		double v = sn_tensor_get(y, (size_t)i);
		if (v >= 0 && v < classes && v == floor(v))
			d->count[(long)v]++;
		else
			d->out_of_range++;
	}
}

static void text_data(const sn_st *st, const data_summary *d)
{
	char a[32];
	const char *mean = sn_st_meta(st, "mean"), *std = sn_st_meta(st, "std");
	printf("data: %s records, %d classes\n", grouped(d->records, a, sizeof a), d->classes);
	printf("  class histogram:");
	for (int c = 0; d->count && c < d->classes; c++)
		printf(" %d:%" PRId64, c, d->count[c]);
	if (d->out_of_range)
		printf(" out-of-range:%" PRId64, d->out_of_range);
	printf("\n  normalisation: %s, then (v - mean[c]) / std[c], mean %s, std %s\n",
	       sn_st_find(st, "x") && sn_st_find(st, "x")->dtype == SN_U8 ? "v/255" : "v",
	       mean ? mean : "(none)", std ? std : "(none)");
}

static json_t *json_data(const sn_st *st, const data_summary *d)
{
	json_t *h = json_array();
	for (int c = 0; d->count && c < d->classes; c++)
		json_array_append_new(h, json_integer(d->count[c]));
	const char *mean = sn_st_meta(st, "mean"), *std = sn_st_meta(st, "std");
	json_t *jm = mean ? json_loads(mean, 0, NULL) : NULL, *js = std ? json_loads(std, 0, NULL) : NULL;
	return json_pack("{s:I, s:i, s:o, s:I, s:o, s:o}", "records", (json_int_t)d->records,
			 "classes", d->classes, "histogram", h, "out_of_range",
			 (json_int_t)d->out_of_range, "mean", jm ? jm : json_null(), "std",
			 js ? js : json_null());
}

/* ---------------------------------------------------------------- deltas */

/* A delta's entries by their decoded differences: its raw codes (XOR bits,
 * int8 codes) say little by themselves. */
static void text_delta(const sn_st *st, const sn_delta_entry *es, int n)
{
	char el[32], ch[32];
	printf("delta: scheme %s, block %s, made against weights with crc32 %s (round %s)\n",
	       sn_st_meta(st, "scheme"), sn_st_meta(st, "block"), sn_st_meta(st, "base_crc32"),
	       sn_st_meta(st, "base_round") ? sn_st_meta(st, "base_round") : "?");
	printf("%-24s %12s %12s %12s %12s %12s %12s %12s\n", "difference", "values", "changed",
	       "min", "max", "mean", "std", "L2");
	for (int i = 0; i < n; i++)
		printf("%-24s %12s %12s %12.6g %12.6g %12.6g %12.6g %12.6g\n", es[i].name,
		       grouped(es[i].values, el, sizeof el), grouped(es[i].changed, ch, sizeof ch),
		       es[i].stats.min, es[i].stats.max, es[i].stats.mean, es[i].stats.std,
		       es[i].stats.l2);
}

static json_t *json_delta(const sn_st *st, const sn_delta_entry *es, int n)
{
	json_t *a = json_array();
	for (int i = 0; i < n; i++)
		json_array_append_new(
			a, json_pack("{s:s, s:I, s:I, s:o, s:o, s:o, s:o, s:o}", "name", es[i].name,
				     "values", (json_int_t)es[i].values, "changed",
				     (json_int_t)es[i].changed, "min", jnum(es[i].stats.min), "max",
				     jnum(es[i].stats.max), "mean", jnum(es[i].stats.mean), "std",
				     jnum(es[i].stats.std), "l2", jnum(es[i].stats.l2)));
	const char *br = sn_st_meta(st, "base_round");
	return json_pack("{s:s, s:s, s:s, s:o, s:o}", "scheme", sn_st_meta(st, "scheme"), "block",
			 sn_st_meta(st, "block"), "base_crc32", sn_st_meta(st, "base_crc32"),
			 "base_round", br ? json_string(br) : json_null(), "differences", a);
}

/* ---------------------------------------------------------------- one file */

static void text_header(const char *path, const sn_st *st)
{
	char a[32], b[32];
	printf("%s: %s, %d tensor%s, %s data bytes, %s header bytes\n", path, format_of(st),
	       st->ntensors, st->ntensors == 1 ? "" : "s", grouped(data_bytes(st), a, sizeof a),
	       grouped((int64_t)st->header_len, b, sizeof b));
}

/* Report one readable file; returns 0, or an error about its contents
 * (a weight file's net that does not parse) after reporting the rest. */
static int report(const char *path, const sn_st *st, const options *o, json_t *out)
{
	const char *fmt = sn_st_meta(st, "format");
	json_t *obj = NULL;
	int err = 0;
	if (o->json) {
		obj = json_pack("{s:s, s:s, s:I, s:I, s:o, s:o}", "file", path, "format",
				format_of(st), "header_bytes", (json_int_t)st->header_len,
				"data_bytes", (json_int_t)data_bytes(st), "tensors", json_tensors(st),
				"metadata", json_meta(st));
		json_array_append_new(out, obj);
	} else if (!o->quiet) {
		text_header(path, st);
		text_tensors(st);
		text_meta(st, o->verbose);
	}
	if (fmt && strcmp(fmt, "sn.weights.v1") == 0) {
		sn_net net;
		if (!(err = parse_net(st, &net))) {
			if (obj)
				json_object_set_new(obj, "net", json_net(&net));
			else if (!o->quiet)
				text_net(&net);
			sn_net_free(&net);
		}
	} else if (sn_delta_is_delta(st)) {
		sn_delta_entry *es;
		int n;
		if (!(err = sn_delta_inspect(st, &es, &n))) {
			if (obj)
				json_object_set_new(obj, "delta", json_delta(st, es, n));
			else if (!o->quiet)
				text_delta(st, es, n);
			sn_delta_entries_free(es, n);
		}
	} else if (fmt && strcmp(fmt, "sn.data.v1") == 0) {
		data_summary d;
		summarize_data(st, &d);
		if (obj)
			json_object_set_new(obj, "data", json_data(st, &d));
		else if (!o->quiet)
			text_data(st, &d);
		free(d.count);
	}
	return err;
}

/* Beyond the container: a weight file's tensors must match its net, a data
 * file must pass the checks training makes (labels, normalisation), a delta
 * and a residual what their readers check without the base. */
static int verify_kind(const char *path, const sn_st *st)
{
	const char *fmt = sn_st_meta(st, "format");
	int err = sn_train_check_counters(st);
	if (err)
		return err;
	if (fmt && strcmp(fmt, "sn.weights.v1") == 0) {
		sn_net net;
		if (!(err = parse_net(st, &net))) {
			err = sn_net_load_weights(&net, st);
			sn_net_free(&net);
		}
	} else if (sn_delta_is_delta(st)) {
		sn_delta_entry *es;
		int n;
		if (!(err = sn_delta_inspect(st, &es, &n)))
			sn_delta_entries_free(es, n);
	} else if (fmt && strcmp(fmt, "sn.residual.v1") == 0) {
		err = sn_delta_residual_check(st);
	} else if (fmt && strcmp(fmt, "sn.data.v1") == 0 && strcmp(path, "-") != 0) {
		sn_data d;
		if (!(err = sn_data_open(path, &d)))
			sn_data_close(&d);
	}
	return err;
}

static int one_file(const char *path, const options *o, json_t *out)
{
	sn_st st;
	int err = sn_st_read(path, &st, 0), was_read = !err;
	if (was_read)
		err = o->verify ? verify_kind(path, &st) : report(path, &st, o, out);
	if (o->verify && o->json)
		json_array_append_new(out, err ? json_pack("{s:s, s:b, s:s}", "file", path, "ok", 0,
							   "error", sn_errdetail())
					       : json_pack("{s:s, s:b}", "file", path, "ok", 1));
	else if (o->json && err && was_read)	/* the report is there: mark it */
		json_object_set_new(json_array_get(out, json_array_size(out) - 1), "error",
				    json_string(sn_errdetail()));
	else if (o->json && err)
		json_array_append_new(out, json_pack("{s:s, s:s}", "file", path, "error",
						     sn_errdetail()));
	if (err && !o->quiet) {
		fflush(stdout);	/* keep the error beside its file's report */
		sn_cli_error(path, err);
	} else if (o->verify && !o->quiet && !o->json)
		printf("%s: OK\n", path);
	if (was_read)
		sn_st_free(&st);
	return err;
}

/* ---------------------------------------------------------------- --diff */

typedef struct {
	const char *name;
	const char *status;      /* "same", "differs", "only in A", "shape", ... */
	char detail[200];
	double max_abs, rel_l2;
	int counted;             /* a difference that sets the exit status */
} diff_row;

static void compare_tensor(const sn_tensor *a, const sn_tensor *b, double tol, diff_row *r)
{
	char sa[160], sb[160];
	r->name = a->name;
	r->max_abs = r->rel_l2 = NAN;
	if (a->dtype != b->dtype || a->ndim != b->ndim ||
	    memcmp(a->shape, b->shape, (size_t)a->ndim * sizeof *a->shape)) {
		r->status = "mismatch";
		snprintf(r->detail, sizeof r->detail, "%s%s vs %s%s", sn_dtype_name(a->dtype),
			 sn_shape_format(a->ndim, a->shape, sa, sizeof sa), sn_dtype_name(b->dtype),
			 sn_shape_format(b->ndim, b->shape, sb, sizeof sb));
		r->counted = 1;
		return;
	}
	sn_tensor_diff d;
	sn_tensor_diff_compute(a, b, &d);
	r->max_abs = d.max_abs;
	r->rel_l2 = d.rel_l2;
	r->counted = !(d.max_abs <= tol);
	r->status = d.max_abs == 0 ? "same" : r->counted ? "differs" : "within tol";
}

static diff_row *diff_rows(const sn_st *a, const sn_st *b, double tol, int *nrows)
{
	diff_row *rows = calloc((size_t)(a->ntensors + b->ntensors + 1), sizeof *rows);
	int n = 0;
	for (int i = 0; rows && i < a->ntensors; i++) {
		const sn_tensor *tb = sn_st_find(b, a->tensors[i].name);
		if (tb)
			compare_tensor(&a->tensors[i], tb, tol, &rows[n++]);
		else
			rows[n++] = (diff_row){a->tensors[i].name, "only in A", "", NAN, NAN, 1};
	}
	for (int i = 0; rows && i < b->ntensors; i++)
		if (!sn_st_find(a, b->tensors[i].name))
			rows[n++] = (diff_row){b->tensors[i].name, "only in B", "", NAN, NAN, 1};
	*nrows = n;
	return rows;
}

static void text_meta_diff(const sn_st *a, const sn_st *b)
{
	for (int i = 0; i < a->nmeta; i++) {
		const char *vb = sn_st_meta(b, a->meta[i].key);
		if (!vb)
			printf("metadata %s: only in A\n", a->meta[i].key);
		else if (strcmp(vb, a->meta[i].value))
			printf("metadata %s: differs (%.40s vs %.40s)\n", a->meta[i].key,
			       a->meta[i].value, vb);
	}
	for (int i = 0; i < b->nmeta; i++)
		if (!sn_st_meta(a, b->meta[i].key))
			printf("metadata %s: only in B\n", b->meta[i].key);
}

static json_t *json_meta_diff(const sn_st *a, const sn_st *b)
{
	json_t *o = json_object();
	for (int i = 0; i < a->nmeta; i++) {
		const char *vb = sn_st_meta(b, a->meta[i].key);
		if (!vb || strcmp(vb, a->meta[i].value))
			json_object_set_new(o, a->meta[i].key,
					    json_pack("[s,o]", a->meta[i].value,
						      vb ? json_string(vb) : json_null()));
	}
	for (int i = 0; i < b->nmeta; i++)
		if (!sn_st_meta(a, b->meta[i].key))
			json_object_set_new(o, b->meta[i].key,
					    json_pack("[n,s]", b->meta[i].value));
	return o;
}

static void print_diff(const char *pa, const char *pb, const sn_st *a, const sn_st *b,
		       const diff_row *rows, int n, int ndiff, const options *o)
{
	if (o->json) {
		json_t *t = json_array();
		for (int i = 0; i < n; i++)
			json_array_append_new(
				t, json_pack("{s:s, s:s, s:o, s:o, s:b}", "name", rows[i].name,
					     "status", rows[i].status, "max_abs", jnum(rows[i].max_abs),
					     "rel_l2", jnum(rows[i].rel_l2), "counted", rows[i].counted));
		json_t *doc = json_pack("{s:s, s:s, s:f, s:b, s:i, s:o, s:o}", "a", pa, "b", pb,
					"tol", o->tol, "identical", ndiff == 0, "differences",
					ndiff, "tensors", t, "metadata", json_meta_diff(a, b));
		json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		putchar('\n');
		json_decref(doc);
		return;
	}
	printf("A: %s\nB: %s\n", pa, pb);
	printf("%-24s %-11s %14s %14s\n", "tensor", "status", "max |a-b|", "|a-b|/|a|");
	for (int i = 0; i < n; i++) {
		if (isnan(rows[i].max_abs))
			printf("%-24s %-11s %s\n", rows[i].name, rows[i].status, rows[i].detail);
		else
			printf("%-24s %-11s %14.6g %14.6g\n", rows[i].name, rows[i].status,
			       rows[i].max_abs, rows[i].rel_l2);
	}
	text_meta_diff(a, b);
	if (ndiff)
		printf("%d of %d tensors differ (tolerance %g)\n", ndiff, n, o->tol);
	else
		printf("identical (tolerance %g)\n", o->tol);
}

static int run_diff(const char *pa, const char *pb, const options *o)
{
	sn_st a, b;
	int err = sn_st_read(pa, &a, 0);
	if (err) {
		if (!o->quiet)
			sn_cli_error(pa, err);
		return SN_EXIT_RUNTIME;
	}
	if ((err = sn_st_read(pb, &b, 0))) {
		if (!o->quiet)
			sn_cli_error(pb, err);
		sn_st_free(&a);
		return SN_EXIT_RUNTIME;
	}
	int n = 0, ndiff = 0;
	diff_row *rows = diff_rows(&a, &b, o->tol, &n);
	if (!rows) {
		sn_cli_warn("out of memory");
		err = SN_ENOMEM;
	}
	for (int i = 0; i < n; i++)
		ndiff += rows[i].counted;
	if (rows && !o->quiet)
		print_diff(pa, pb, &a, &b, rows, n, ndiff, o);
	free(rows);
	sn_st_free(&a);
	sn_st_free(&b);
	return err || ndiff ? SN_EXIT_RUNTIME : SN_EXIT_OK;
}

/* ---------------------------------------------------------------- main */

static void parse_options(int argc, char **argv, options *o)
{
	enum { OPT_VERIFY = 256, OPT_DIFF, OPT_TOL, OPT_JSON, OPT_VERSION };
	static const struct option longopts[] = {
		{"verify", no_argument, NULL, OPT_VERIFY}, {"diff", no_argument, NULL, OPT_DIFF},
		{"tol", required_argument, NULL, OPT_TOL}, {"json", no_argument, NULL, OPT_JSON},
		{"verbose", no_argument, NULL, 'v'},      {"quiet", no_argument, NULL, 'q'},
		{"help", no_argument, NULL, 'h'},         {"version", no_argument, NULL, OPT_VERSION},
		{NULL, 0, NULL, 0},
	};
	int c, tol_set = 0;
	while ((c = getopt_long(argc, argv, "vqh", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_VERIFY: o->verify = 1; break;
		case OPT_DIFF: o->diff = 1; break;
		case OPT_TOL: o->tol = sn_cli_double("--tol", optarg, 0, INFINITY); tol_set = 1; break;
		case OPT_JSON: o->json = 1; break;
		case 'v': o->verbose = 1; break;
		case 'q': o->quiet = 1; break;
		case 'h': usage(); exit(SN_EXIT_OK);
		case OPT_VERSION: sn_cli_version();
		default: sn_cli_usage_error("unknown option");
		}
	}
	if (o->verify && o->diff)
		sn_cli_usage_error("--verify and --diff do not go together");
	if (tol_set && !o->diff)
		sn_cli_usage_error("--tol goes with --diff");
	if (o->diff && argc - optind != 2)
		sn_cli_usage_error("--diff takes exactly two files");
	if (optind >= argc)
		sn_cli_usage_error("no input files");
}

int main(int argc, char **argv)
{
	options o = {0};
	sn_cli_init("sn-info");
	parse_options(argc, argv, &o);
	if (o.diff)
		return run_diff(argv[optind], argv[optind + 1], &o);
	json_t *out = json_array();
	int failed = 0;
	for (int i = optind; i < argc; i++) {
		failed |= one_file(argv[i], &o, out) != 0;
		if (!o.json && !o.quiet && !o.verify && i + 1 < argc)
			putchar('\n');
	}
	if (o.json && !o.quiet) {
		json_dumpf(out, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		putchar('\n');
	}
	json_decref(out);
	if (!sn_cli_stdout_ok())
		return SN_EXIT_RUNTIME;
	return failed ? SN_EXIT_RUNTIME : SN_EXIT_OK;
}
