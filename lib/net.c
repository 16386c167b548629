/* net.c: YAML net definitions -> sn_net (layers, shapes, parameter table,
 * flat buffers), seeded initialisation, and weight files.
 *
 * The whole YAML document is loaded with libyaml's document API so every
 * node keeps its position; every complaint about the text is SN_ENET with a
 * detail "SOURCE:LINE:COL: what" (1-based), so a command can print it as is. */
#include "net.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

/* Per-dimension and total limits: they keep products of shapes far from
 * overflow and refuse nets that could never be allocated anyway. */
#define MAX_DIM (1 << 24)
#define MAX_INPUT_SIZE (INT64_C(1) << 31)
#define MAX_PARAMS (INT64_C(1) << 31)
#define MAX_YAML_BYTES (16u << 20)
#define MAX_LAYERS 100000

typedef struct {
	yaml_document_t doc;
	const char *source;
	sn_net *net;
	yaml_node_t *classes_node;
} parser;

static int fail_at_mark(const char *source, yaml_mark_t m, int code, const char *fmt, va_list ap)
{
	char what[400];
	vsnprintf(what, sizeof what, fmt, ap);
	return sn_fail(code, "%s:%zu:%zu: %s", source, m.line + 1, m.column + 1, what);
}

static int SN_PRINTF(3, 4) fail_at(const parser *p, const yaml_node_t *n, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int err = fail_at_mark(p->source, n->start_mark, SN_ENET, fmt, ap);
	va_end(ap);
	return err;
}

static int SN_PRINTF(4, 5) fail_at_layer(const parser *p, const sn_layer *l, int code,
					 const char *fmt, ...)
{
	yaml_mark_t m = {0, (size_t)l->line - 1, (size_t)l->column - 1};
	va_list ap;
	va_start(ap, fmt);
	int err = fail_at_mark(p->source, m, code, fmt, ap);
	va_end(ap);
	return err;
}

static yaml_node_t *node(parser *p, int id)
{
	return yaml_document_get_node(&p->doc, id);
}

static const char *text(const yaml_node_t *n)
{
	return (const char *)n->data.scalar.value;
}

static const char *node_kind(const yaml_node_t *n)
{
	return n->type == YAML_MAPPING_NODE ? "a mapping" :
	       n->type == YAML_SEQUENCE_NODE ? "a sequence" : "a scalar";
}

static int expect_scalar(const parser *p, const yaml_node_t *n, const char *what)
{
	if (n->type != YAML_SCALAR_NODE)
		return fail_at(p, n, "expected %s, got %s", what, node_kind(n));
	return 0;
}

static int parse_number(const parser *p, const yaml_node_t *n, const char *what, double *v)
{
	if (n->type != YAML_SCALAR_NODE)
		return fail_at(p, n, "%s: expected a number, got %s", what, node_kind(n));
	char *end;
	errno = 0;
	double x = strtod(text(n), &end);
	if (errno || end == text(n) || *end || !isfinite(x))
		return fail_at(p, n, "%s: expected a number, got \"%s\"", what, text(n));
	*v = x;
	return 0;
}

static int parse_count(const parser *p, const yaml_node_t *n, const char *what, int64_t *v)
{
	if (n->type != YAML_SCALAR_NODE)
		return fail_at(p, n, "%s: expected a positive integer, got %s", what,
			       node_kind(n));
	char *end;
	errno = 0;
	long long x = strtoll(text(n), &end, 10);
	if (errno || end == text(n) || *end || x < 1 || x > MAX_DIM)
		return fail_at(p, n, "%s: expected a positive integer up to %d, got \"%s\"",
			       what, MAX_DIM, text(n));
	*v = x;
	return 0;
}

static int valid_name(const char *s)
{
	if (!*s)
		return 0;
	for (; *s; s++)
		if (!(*s == '_' || (*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'z') ||
		      (*s >= 'A' && *s <= 'Z')))
			return 0;
	return 1;
}

/* ---- top-level keys ---------------------------------------------------- */

static int parse_input(parser *p, yaml_node_t *n)
{
	if (n->type != YAML_SEQUENCE_NODE)
		return fail_at(p, n, "input: expected [C, H, W] or [D], got %s", node_kind(n));
	int len = (int)(n->data.sequence.items.top - n->data.sequence.items.start);
	if (len != 1 && len != 3)
		return fail_at(p, n, "input: expected [C, H, W] or [D], got %d dimensions", len);
	sn_shape *s = &p->net->input;
	s->ndim = len;
	for (int i = 0; i < len; i++) {
		int err = parse_count(p, node(p, n->data.sequence.items.start[i]), "input",
				      &s->d[i]);
		if (err)
			return err;
	}
	if (sn_shape_size(s) > MAX_INPUT_SIZE)
		return fail_at(p, n, "input: %lld values per example is too many",
			       (long long)sn_shape_size(s));
	return 0;
}

static int parse_net_name(parser *p, yaml_node_t *n)
{
	int err = expect_scalar(p, n, "a net name");
	if (err)
		return err;
	if (!*text(n) || strlen(text(n)) > 255)
		return fail_at(p, n, "name: expected 1 to 255 characters");
	free(p->net->name);
	if (!(p->net->name = strdup(text(n))))
		return sn_fail(SN_ENOMEM, "out of memory");
	return 0;
}

/* `multistep: [1000, 2000]` arrives as a sequence; the solver takes "1000,2000".
 * A list anywhere else is refused, even of one element: `lr: [0.5]` is not
 * `lr: 0.5` written oddly but a mistake. */
static int solver_value(parser *p, const char *key, yaml_node_t *v, char *buf, size_t cap)
{
	if (v->type == YAML_SCALAR_NODE) {
		snprintf(buf, cap, "%s", text(v));
		return 0;
	}
	if (v->type != YAML_SEQUENCE_NODE)
		return fail_at(p, v, "solver: expected a value, got %s", node_kind(v));
	if (!sn_solver_key_takes_list(key))
		return fail_at(p, v, "solver: %s: expected one value, got a list", key);
	size_t used = 0;
	buf[0] = 0;
	for (yaml_node_item_t *it = v->data.sequence.items.start;
	     it < v->data.sequence.items.top; it++) {
		yaml_node_t *item = node(p, *it);
		int err = expect_scalar(p, item, "a number");
		if (err)
			return err;
		int k = snprintf(buf + used, cap - used, "%s%s", used ? "," : "", text(item));
		if (k < 0 || (size_t)k >= cap - used)
			return fail_at(p, v, "solver: list too long");
		used += (size_t)k;
	}
	return 0;
}

static int parse_solver(parser *p, yaml_node_t *n)
{
	if (n->type != YAML_MAPPING_NODE)
		return fail_at(p, n, "solver: expected a mapping, got %s", node_kind(n));
	for (yaml_node_pair_t *pr = n->data.mapping.pairs.start;
	     pr < n->data.mapping.pairs.top; pr++) {
		yaml_node_t *k = node(p, pr->key), *v = node(p, pr->value);
		char value[512];
		int err = expect_scalar(p, k, "a solver key");
		if (!err)
			err = solver_value(p, text(k), v, value, sizeof value);
		if (err)
			return err;
		/* set first: an unknown key fails before the duplicate scan, which
		 * therefore only ever runs over the few known keys */
		if (sn_solver_config_set(&p->net->solver, text(k), value))
			return fail_at(p, k, "solver: %s", sn_errdetail());
		for (yaml_node_pair_t *q = n->data.mapping.pairs.start; q < pr; q++)
			if (strcmp(text(node(p, q->key)), text(k)) == 0)
				return fail_at(p, k, "solver: duplicate key \"%s\"", text(k));
	}
	if (sn_solver_config_check(&p->net->solver))
		return fail_at(p, n, "solver: %s", sn_errdetail());
	return 0;
}

/* ---- layers ------------------------------------------------------------ */

static int find_kind(parser *p, yaml_node_t *n, const sn_layer_kind **kind)
{
	int err = expect_scalar(p, n, "a layer kind");
	if (err)
		return err;
	if (!(*kind = sn_layer_kind_find(text(n))))
		return fail_at(p, n, "unknown layer kind \"%s\"", text(n));
	return 0;
}

static int parse_option(parser *p, sn_layer *l, yaml_node_t *k, yaml_node_t *v)
{
	int idx = -1;
	for (int i = 0; i < SN_OPT_COUNT; i++)
		if (sn_opt_names[i] && strcmp(sn_opt_names[i], text(k)) == 0)
			idx = i;
	if (idx < 0)
		return fail_at(p, k, "unknown option \"%s\" for layer kind %s", text(k),
			       l->kind->name);
	if (!(l->kind->options & (1u << idx)))
		return fail_at(p, k, "layer kind %s takes no option \"%s\"", l->kind->name,
			       text(k));
	if (l->opt_set & (1u << idx))
		return fail_at(p, k, "duplicate option \"%s\"", text(k));
	int err = parse_number(p, v, text(k), &l->opt[idx]);
	if (err)
		return err;
	l->opt_set |= 1u << idx;
	return 0;
}

static int parse_layer_name(parser *p, sn_layer *l, yaml_node_t *v, int *given)
{
	int err = expect_scalar(p, v, "a layer name");
	if (err)
		return err;
	if (!valid_name(text(v)) || strlen(text(v)) >= sizeof l->name)
		return fail_at(p, v, "layer name \"%s\" must be 1 to %zu of A-Z a-z 0-9 _",
			       text(v), sizeof l->name - 1);
	if (strcmp(text(v), "input") == 0)
		return fail_at(p, v, "layer name \"input\" is taken by the net's input");
	strcpy(l->name, text(v));
	*given = 1;
	return 0;
}

/* What a layer says beyond its kind and options, kept until the names are
 * known. */
typedef struct {
	int given;              /* had a name: */
	yaml_node_t *inputs;    /* its inputs: list, or NULL */
} layer_keys;

static int parse_layer_mapping(parser *p, yaml_node_t *n, sn_layer *l, layer_keys *keys)
{
	yaml_node_pair_t *start = n->data.mapping.pairs.start, *top = n->data.mapping.pairs.top;
	for (yaml_node_pair_t *pr = start; pr < top; pr++) {
		yaml_node_t *k = node(p, pr->key);
		int err = expect_scalar(p, k, "a layer option");
		if (err)
			return err;
		if (strcmp(text(k), "type") == 0) {
			if (l->kind)
				return fail_at(p, k, "duplicate key \"type\"");
			if ((err = find_kind(p, node(p, pr->value), &l->kind)))
				return err;
		}
	}
	if (!l->kind)
		return fail_at(p, n, "layer has no type");
	for (yaml_node_pair_t *pr = start; pr < top; pr++) {
		yaml_node_t *k = node(p, pr->key), *v = node(p, pr->value);
		int err = 0;
		if (strcmp(text(k), "type") == 0)
			continue;
		if (strcmp(text(k), "name") == 0)
			err = keys->given ? fail_at(p, k, "duplicate key \"name\"")
					  : parse_layer_name(p, l, v, &keys->given);
		else if (strcmp(text(k), "inputs") == 0)
			err = keys->inputs ? fail_at(p, k, "duplicate key \"inputs\"")
					   : (keys->inputs = v, 0);
		else
			err = parse_option(p, l, k, v);
		if (err)
			return err;
	}
	return 0;
}

static int parse_layer(parser *p, yaml_node_t *n, sn_layer *l, layer_keys *keys)
{
	l->line = (int)n->start_mark.line + 1;
	l->column = (int)n->start_mark.column + 1;
	if (n->type == YAML_SCALAR_NODE)
		return find_kind(p, n, &l->kind);
	if (n->type == YAML_MAPPING_NODE)
		return parse_layer_mapping(p, n, l, keys);
	return fail_at(p, n, "expected a layer kind or a mapping with type:, got a sequence");
}

typedef struct {
	const char *name;
	int index;
} name_entry;

static int by_name_then_index(const void *a, const void *b)
{
	const name_entry *x = a, *y = b;
	int c = strcmp(x->name, y->name);
	return c ? c : (x->index > y->index) - (x->index < y->index);
}

/* Sorting keeps this O(n log n): nets of many layers must not stall here.
 * The error names the first layer, in file order, whose name was taken.
 * sorted[] (nlayers entries) stays sorted by name for resolve_inputs. */
static int check_unique_names(parser *p, const layer_keys *keys, name_entry *sorted)
{
	sn_net *net = p->net;
	for (int i = 0; i < net->nlayers; i++)
		sorted[i] = (name_entry){net->layers[i].name, i};
	qsort(sorted, (size_t)net->nlayers, sizeof *sorted, by_name_then_index);
	int dup = -1;
	for (int i = 1; i < net->nlayers; i++)
		if (strcmp(sorted[i].name, sorted[i - 1].name) == 0 &&
		    (dup < 0 || sorted[i].index < dup))
			dup = sorted[i].index;
	if (dup < 0)
		return 0;
	return fail_at_layer(p, &net->layers[dup], SN_ENET,
			     keys[dup].given ? "duplicate layer name \"%s\"" :
			     "default name \"%s\" is already taken; give this layer a name:",
			     net->layers[dup].name);
}

/* conv1, conv2, fc1 ...: a 1-based counter per prefix, in layer order.
 * There are only as many prefixes as kinds, so the lookup stays short. */
static int name_layers(parser *p, const layer_keys *keys, name_entry *sorted)
{
	sn_net *net = p->net;
	const char **prefixes = calloc((size_t)net->nlayers, sizeof *prefixes);
	int *counts = calloc((size_t)net->nlayers, sizeof *counts), nprefixes = 0;
	if (!prefixes || !counts) {
		free(prefixes);
		free(counts);
		return sn_fail(SN_ENOMEM, "out of memory for %d layers", net->nlayers);
	}
	for (int i = 0; i < net->nlayers; i++) {
		sn_layer *l = &net->layers[i];
		if (keys[i].given)
			continue;
		const char *prefix = l->kind->name_prefix ? l->kind->name_prefix : l->kind->name;
		int j = 0;
		while (j < nprefixes && strcmp(prefixes[j], prefix) != 0)
			j++;
		if (j == nprefixes)
			prefixes[nprefixes++] = prefix;
		snprintf(l->name, sizeof l->name, "%.40s%d", prefix, ++counts[j]);
	}
	free(prefixes);
	free(counts);
	return check_unique_names(p, keys, sorted);
}

static int by_name(const void *key, const void *entry)
{
	return strcmp(key, ((const name_entry *)entry)->name);
}

/* One name of an inputs: list as an activation index (0 the net's input,
 * j+1 layer j).  Only earlier layers may be named, so a net can never hold
 * a cycle: that needs no check of its own. */
static int resolve_input(parser *p, int i, yaml_node_t *n, const name_entry *sorted, int *act)
{
	int err = expect_scalar(p, n, "a layer name");
	if (err)
		return err;
	if (strcmp(text(n), "input") == 0) {
		*act = 0;
		return 0;
	}
	const name_entry *e = bsearch(text(n), sorted, (size_t)p->net->nlayers, sizeof *sorted,
				      by_name);
	if (!e)
		return fail_at(p, n, "inputs: no layer is named \"%s\"", text(n));
	if (e->index == i)
		return fail_at(p, n, "inputs: \"%s\" is this layer itself; inputs name earlier "
			       "layers only, so a net has no cycles", text(n));
	if (e->index > i)
		return fail_at(p, n, "inputs: \"%s\" is a later layer (line %d); inputs name "
			       "earlier layers only, so a net has no cycles", text(n),
			       p->net->layers[e->index].line);
	*act = e->index + 1;
	return 0;
}

/* `inputs: [a, b]` or `inputs: a`; without it, the previous layer. */
static int resolve_inputs(parser *p, int i, yaml_node_t *n, const name_entry *sorted)
{
	sn_layer *l = &p->net->layers[i];
	if (!n) {
		l->ninputs = 1;
		l->input[0] = i;
		return 0;
	}
	yaml_node_item_t one = 0, *items = &one;
	int len = 1;
	if (n->type == YAML_SEQUENCE_NODE) {
		items = n->data.sequence.items.start;
		len = (int)(n->data.sequence.items.top - items);
	} else if (n->type != YAML_SCALAR_NODE) {
		return fail_at(p, n, "inputs: expected a list of layer names, got %s",
			       node_kind(n));
	}
	if (len < 1 || len > SN_MAX_INPUTS)
		return fail_at(p, n, "inputs: expected 1 to %d layer names, got %d",
			       SN_MAX_INPUTS, len);
	if (!l->kind->forward_join && len != 1)
		return fail_at(p, n, "inputs: %s takes one input, not %d; join them with add "
			       "or concat", l->kind->name, len);
	for (int k = 0; k < len; k++) {
		yaml_node_t *item = n->type == YAML_SEQUENCE_NODE ? node(p, items[k]) : n;
		int err = resolve_input(p, i, item, sorted, &l->input[k]);
		if (err)
			return err;
	}
	l->ninputs = len;
	return 0;
}

/* A layer whose output no layer reads is legal (say, a branch being tried
 * out) but most likely a slip, so the net carries a warning for sn-init. */
static int warn_unused_outputs(parser *p)
{
	sn_net *net = p->net;
	char *used = calloc((size_t)net->nlayers + 1, 1);
	if (!used)
		return sn_fail(SN_ENOMEM, "out of memory for %d layers", net->nlayers);
	for (int i = 0; i < net->nlayers; i++)
		for (int k = 0; k < net->layers[i].ninputs; k++)
			used[net->layers[i].input[k]] = 1;
	int err = 0;
	for (int i = 0; i < net->nlayers - 1 && !err; i++) {
		if (used[i + 1])
			continue;
		const sn_layer *l = &net->layers[i];
		char *more = NULL;
		if (asprintf(&more, "%s%s:%d:%d: the output of layer %s is not used by any layer",
			     net->warnings ? net->warnings : "", p->source, l->line, l->column,
			     l->name) < 0 ||
		    !(more = realloc(more, strlen(more) + 2))) {
			free(more);
			err = sn_fail(SN_ENOMEM, "out of memory");
			break;
		}
		strcat(more, "\n");
		free(net->warnings);
		net->warnings = more;
	}
	free(used);
	return err;
}

static int check_loss_placement(parser *p)
{
	sn_net *net = p->net;
	for (int i = 0; i < net->nlayers - 1; i++)
		if (net->layers[i].kind->is_loss)
			return fail_at_layer(p, &net->layers[i], SN_ENET,
					     "loss layer %s must be the last layer",
					     net->layers[i].kind->name);
	sn_layer *last = &net->layers[net->nlayers - 1];
	if (!last->kind->is_loss)
		return fail_at_layer(p, last, SN_ENET,
				     "the last layer must be a loss layer, not %s", last->kind->name);
	return 0;
}

static int parse_layers(parser *p, yaml_node_t *n)
{
	if (n->type != YAML_SEQUENCE_NODE)
		return fail_at(p, n, "layers: expected a sequence, got %s", node_kind(n));
	int len = (int)(n->data.sequence.items.top - n->data.sequence.items.start);
	if (len == 0)
		return fail_at(p, n, "layers: the net has no layers");
	if (len > MAX_LAYERS)
		return fail_at(p, n, "layers: more than %d layers", MAX_LAYERS);
	sn_net *net = p->net;
	layer_keys *keys = calloc((size_t)len, sizeof *keys);
	name_entry *sorted = calloc((size_t)len, sizeof *sorted);
	net->layers = calloc((size_t)len, sizeof *net->layers);
	if (!keys || !sorted || !net->layers) {
		free(keys);
		free(sorted);
		return sn_fail(SN_ENOMEM, "out of memory for %d layers", len);
	}
	net->nlayers = len;
	int err = 0;
	for (int i = 0; i < len && !err; i++)
		err = parse_layer(p, node(p, n->data.sequence.items.start[i]), &net->layers[i],
				  &keys[i]);
	if (!err)
		err = check_loss_placement(p);
	if (!err)
		err = name_layers(p, keys, sorted);
	for (int i = 0; i < len && !err; i++)
		err = resolve_inputs(p, i, keys[i].inputs, sorted);
	if (!err)
		err = warn_unused_outputs(p);
	free(keys);
	free(sorted);
	return err;
}

/* ---- shapes and buffers ------------------------------------------------ */

static const char *act_name(const sn_net *net, int act)
{
	return act ? net->layers[act - 1].name : "input";
}

/* A join's complaint about "input 2" reads better with the names listed. */
static int setup_failed(parser *p, const sn_layer *l, int err)
{
	char detail[400], names[300] = "";
	size_t used = 0;
	snprintf(detail, sizeof detail, "%s", sn_errdetail());
	for (int k = 0; l->ninputs > 1 && k < l->ninputs && used < sizeof names; k++) {
		int w = snprintf(names + used, sizeof names - used, "%s%s", k ? ", " : " (inputs: ",
				 act_name(p->net, l->input[k]));
		used += w > 0 ? (size_t)w : 0;
	}
	return fail_at_layer(p, l, err, "%s%s%s", detail, names, *names ? ")" : "");
}

static int setup_layers(parser *p)
{
	sn_net *net = p->net;
	for (int i = 0; i < net->nlayers; i++) {
		sn_layer *l = &net->layers[i];
		for (int k = 0; k < l->ninputs; k++)
			l->ins[k] = l->input[k] ? net->layers[l->input[k] - 1].out : net->input;
		l->in = l->ins[0];
		int err = l->kind->setup(l);
		if (err)
			return setup_failed(p, l, err);
		int64_t size = sn_shape_size(&l->out);
		if ((l->out.ndim != 1 && l->out.ndim != 3) || size < 1 || size > MAX_INPUT_SIZE)
			return fail_at_layer(p, l, SN_ENET, "%s gives an output of %lld values",
					     l->kind->name, (long long)size);
		if (l->flops_forward < 0 || l->flops_backward < 0 ||
		    __builtin_add_overflow(net->flops_forward, l->flops_forward,
					   &net->flops_forward) ||
		    __builtin_add_overflow(net->flops_backward, l->flops_backward,
					   &net->flops_backward))
			return fail_at_layer(p, l, SN_ENET, "FLOPs per example overflow");
	}
	sn_layer *loss = &net->layers[net->nlayers - 1];
	if (loss->in.ndim != 1)
		return fail_at_layer(p, loss, SN_ENET, "loss layer needs a flat [D] input; "
				     "put a dense layer before it");
	if (p->classes_node && net->classes != loss->in.d[0])
		return fail_at(p, p->classes_node, "classes %d does not match the %lld outputs "
			       "of the last layer", net->classes, (long long)loss->in.d[0]);
	net->classes = (int)loss->in.d[0];
	return 0;
}

/* The element count of a descriptor, refusing shapes that do not add up. */
static int64_t desc_numel(const sn_param_desc *d)
{
	int64_t n = 1;
	if (d->ndim < 1 || d->ndim > 4)
		return -1;
	for (int i = 0; i < d->ndim; i++)
		if (d->shape[i] < 1 || __builtin_mul_overflow(n, d->shape[i], &n))
			return -1;
	return n == d->numel ? n : -1;
}

static int count_params(parser *p, int64_t *ntrain, int64_t *nbuf, int *nviews)
{
	sn_net *net = p->net;
	*ntrain = *nbuf = 0;
	*nviews = 0;
	for (int i = 0; i < net->nlayers; i++) {
		sn_layer *l = &net->layers[i];
		for (int j = 0; j < l->nparams; j++) {
			int64_t n = desc_numel(&l->params[j]);
			int64_t *total = l->params[j].trainable ? ntrain : nbuf;
			if (n < 0)
				return fail_at_layer(p, l, SN_ENET, "tensor %s has an invalid shape",
						     l->params[j].suffix);
			if (n > MAX_PARAMS || (*total += n) > MAX_PARAMS)
				return fail_at_layer(p, l, SN_ENET, "the net has more than %lld "
						     "parameters", (long long)MAX_PARAMS);
			(*nviews)++;
		}
	}
	return 0;
}

static void add_views(sn_net *net, int trainable, size_t *off)
{
	float *base = trainable ? net->param : net->buffer;
	for (int i = 0; i < net->nlayers; i++) {
		sn_layer *l = &net->layers[i];
		for (int j = 0; j < l->nparams; j++) {
			sn_param_desc *d = &l->params[j];
			if (!d->trainable != !trainable)
				continue;
			sn_param_view *v = &net->views[net->nviews++];
			snprintf(v->name, sizeof v->name, "%s.%s", l->name, d->suffix);
			v->ndim = d->ndim;
			memcpy(v->shape, d->shape, sizeof v->shape);
			v->numel = d->numel;
			v->trainable = trainable;
			v->data = base + *off;
			v->grad = trainable ? net->grad + *off : NULL;
			v->layer = l;
			v->index = j;
			l->w[j] = v->data;
			l->dw[j] = v->grad;
			*off += (size_t)d->numel;
		}
	}
}

static int lay_out_buffers(parser *p)
{
	sn_net *net = p->net;
	int64_t ntrain, nbuf;
	int nviews, err;
	if ((err = count_params(p, &ntrain, &nbuf, &nviews)))
		return err;
	net->nparam = (size_t)ntrain;
	net->nbuffer = (size_t)nbuf;
	/* +1: calloc(0) may return NULL, and an all-buffer net is legal */
	net->views = calloc((size_t)nviews + 1, sizeof *net->views);
	net->param = calloc(net->nparam + 1, sizeof(float));
	net->grad = calloc(net->nparam + 1, sizeof(float));
	net->buffer = calloc(net->nbuffer + 1, sizeof(float));
	if (!net->views || !net->param || !net->grad || !net->buffer)
		return sn_fail(SN_ENOMEM, "out of memory for %lld parameters",
			       (long long)(ntrain + nbuf));
	size_t off = 0;
	add_views(net, 1, &off);
	off = 0;
	add_views(net, 0, &off);
	return 0;
}

/* ---- the document ------------------------------------------------------ */

static int parse_root(parser *p, yaml_node_t *root)
{
	static const char *const keys[] = {"name", "input", "classes", "layers", "solver"};
	yaml_node_t *seen[5] = {0};
	if (root->type != YAML_MAPPING_NODE)
		return fail_at(p, root, "expected a mapping with name, input and layers");
	for (yaml_node_pair_t *pr = root->data.mapping.pairs.start;
	     pr < root->data.mapping.pairs.top; pr++) {
		yaml_node_t *k = node(p, pr->key), *v = node(p, pr->value);
		int i, err = expect_scalar(p, k, "a key");
		if (err)
			return err;
		for (i = 0; i < 5 && strcmp(keys[i], text(k)) != 0; i++)
			;
		if (i == 5)
			return fail_at(p, k, "unknown key \"%s\" (expected name, input, classes, "
				       "layers or solver)", text(k));
		if (seen[i])
			return fail_at(p, k, "duplicate key \"%s\"", text(k));
		seen[i] = v;
	}
	int err = 0;
	int64_t classes;
	if (!seen[1])
		return fail_at(p, root, "missing input");
	if (!seen[3])
		return fail_at(p, root, "missing layers");
	if (seen[0] && (err = parse_net_name(p, seen[0])))
		return err;
	if ((err = parse_input(p, seen[1])))
		return err;
	if (seen[2]) {
		if ((err = parse_count(p, seen[2], "classes", &classes)))
			return err;
		p->net->classes = (int)classes;
		p->classes_node = seen[2];
	}
	if (seen[4] && (err = parse_solver(p, seen[4])))
		return err;
	if ((err = parse_layers(p, seen[3])) || (err = setup_layers(p)))
		return err;
	return lay_out_buffers(p);
}

/* The reader (encoding) stage reports a byte offset, not a mark. */
static yaml_mark_t mark_of_offset(const char *text, size_t len, size_t offset)
{
	yaml_mark_t m = {offset, 0, 0};
	size_t line_start = 0;
	for (size_t i = 0; i < offset && i < len; i++)
		if (text[i] == '\n') {
			m.line++;
			line_start = i + 1;
		}
	m.column = offset - line_start;
	return m;
}

static int yaml_error(const yaml_parser_t *y, const char *source, const char *text,
		      size_t len)
{
	yaml_mark_t m = y->problem_mark;
	const char *problem = y->problem ? y->problem : "invalid YAML";
	if (y->error == YAML_MEMORY_ERROR)
		return sn_fail(SN_ENOMEM, "out of memory parsing YAML");
	if (y->error == YAML_READER_ERROR)
		m = mark_of_offset(text, len, y->problem_offset);
	if (y->context)
		return sn_fail(SN_ENET, "%s:%zu:%zu: %s (%s)", source, m.line + 1, m.column + 1,
			       problem, y->context);
	return sn_fail(SN_ENET, "%s:%zu:%zu: %s", source, m.line + 1, m.column + 1, problem);
}

/* "examples/nets/lenet.yaml" -> "lenet": the name of a net without name:. */
static char *default_name(const char *source)
{
	const char *base = strrchr(source, '/');
	base = base ? base + 1 : source;
	size_t len = strcspn(base, ".");
	if (len == 0 || *base == '<')
		return strdup("net");
	return strndup(base, len);
}

static int load_document(parser *p, const char *yaml, size_t len)
{
	yaml_parser_t y;
	yaml_document_t extra;
	int err = 0;
	if (!yaml_parser_initialize(&y))
		return sn_fail(SN_ENOMEM, "out of memory");
	yaml_parser_set_input_string(&y, (const unsigned char *)yaml, len);
	if (!yaml_parser_load(&y, &p->doc)) {
		err = yaml_error(&y, p->source, yaml, len);
		goto out;
	}
	yaml_node_t *root = yaml_document_get_root_node(&p->doc);
	if (!root) {
		err = sn_fail(SN_ENET, "%s:1:1: empty net definition", p->source);
		goto out_doc;
	}
	if (!yaml_parser_load(&y, &extra)) {
		err = yaml_error(&y, p->source, yaml, len);
		goto out_doc;
	}
	if (yaml_document_get_root_node(&extra))
		err = sn_fail(SN_ENET, "%s:%zu:%zu: more than one YAML document", p->source,
			      extra.start_mark.line + 1, extra.start_mark.column + 1);
	yaml_document_delete(&extra);
	if (!err)
		goto out;
out_doc:
	yaml_document_delete(&p->doc);
out:
	yaml_parser_delete(&y);
	return err;
}

int sn_net_parse(const char *yaml, size_t len, const char *source, sn_net *net)
{
	parser p = {.source = source ? source : "<net>", .net = net};
	memset(net, 0, sizeof *net);
	sn_solver_config_default(&net->solver);
	if (!(net->yaml = strndup(yaml, len)) || !(net->name = default_name(p.source))) {
		sn_net_free(net);
		return sn_fail(SN_ENOMEM, "out of memory");
	}
	if (strlen(net->yaml) != len) {
		sn_net_free(net);
		return sn_fail(SN_ENET, "%s: the net definition contains a NUL byte", p.source);
	}
	int err = load_document(&p, yaml, len);
	if (err) {
		sn_net_free(net);
		return err;
	}
	err = parse_root(&p, yaml_document_get_root_node(&p.doc));
	yaml_document_delete(&p.doc);
	if (err)
		sn_net_free(net);
	return err;
}

static int read_all(FILE *f, char **out, size_t *len)
{
	size_t cap = 4096, n = 0;
	char *buf = malloc(cap);
	if (!buf)
		return sn_fail(SN_ENOMEM, "out of memory");
	for (;;) {
		if (n == cap) {
			char *grown = cap >= MAX_YAML_BYTES ? NULL : realloc(buf, cap * 2);
			if (!grown) {
				free(buf);
				return cap >= MAX_YAML_BYTES
					? sn_fail(SN_EFORMAT, "net definition larger than %u bytes",
						  MAX_YAML_BYTES)
					: sn_fail(SN_ENOMEM, "out of memory");
			}
			buf = grown;
			cap *= 2;
		}
		size_t k = fread(buf + n, 1, cap - n, f);
		n += k;
		if (k == 0)
			break;
	}
	if (ferror(f)) {
		free(buf);
		return sn_fail(SN_EIO, "read failed: %s", strerror(errno));
	}
	*out = buf;
	*len = n;
	return 0;
}

int sn_net_load(const char *path, sn_net *net)
{
	int is_stdin = strcmp(path, "-") == 0;
	memset(net, 0, sizeof *net);
	FILE *f = is_stdin ? stdin : fopen(path, "rb");
	if (!f)
		return sn_fail(SN_EIO, "%s", strerror(errno));
	char *text = NULL;
	size_t len = 0;
	int err = read_all(f, &text, &len);
	if (!is_stdin)
		fclose(f);
	if (err)
		return err;
	err = sn_net_parse(text, len, is_stdin ? "<stdin>" : path, net);
	free(text);
	return err;
}

void sn_net_free(sn_net *net)
{
	if (!net)
		return;
	free(net->name);
	free(net->yaml);
	free(net->warnings);
	free(net->layers);
	free(net->views);
	free(net->param);
	free(net->grad);
	free(net->buffer);
	memset(net, 0, sizeof *net);
}

sn_param_view *sn_net_find(const sn_net *net, const char *name)
{
	for (int i = 0; i < net->nviews; i++)
		if (strcmp(net->views[i].name, name) == 0)
			return &net->views[i];
	return NULL;
}

/* ---- initialisation ---------------------------------------------------- */

enum init_method { INIT_HE, INIT_XAVIER, INIT_GAUSSIAN };

static void init_view(sn_param_view *v, enum init_method m, double std, sn_rng *r)
{
	const sn_param_desc *d = &v->layer->params[v->index];
	if (d->init != SN_INIT_FAN) {
		float x = d->init == SN_INIT_ONE ? 1.0f : 0.0f;
		for (int64_t i = 0; i < v->numel; i++)
			v->data[i] = x;
		return;
	}
	if (m == INIT_XAVIER) {
		double a = sqrt(6.0 / (double)(d->fan_in + d->fan_out));
		for (int64_t i = 0; i < v->numel; i++)
			v->data[i] = (float)(a * (2.0 * sn_rng_uniform_double(r) - 1.0));
		return;
	}
	double s = m == INIT_HE ? sqrt(2.0 / (double)d->fan_in) : std;
	for (int64_t i = 0; i < v->numel; i++)
		v->data[i] = (float)(s * sn_rng_normal(r));
}

int sn_net_init_weights(sn_net *net, const char *method, double std, uint64_t seed)
{
	enum init_method m;
	if (strcmp(method, "he") == 0)
		m = INIT_HE;
	else if (strcmp(method, "xavier") == 0)
		m = INIT_XAVIER;
	else if (strcmp(method, "gaussian") == 0)
		m = INIT_GAUSSIAN;
	else
		return sn_fail(SN_EINVAL, "unknown init method \"%s\" "
			       "(expected he, xavier or gaussian)", method);
	if (m == INIT_GAUSSIAN && !(std > 0 && isfinite(std)))
		return sn_fail(SN_EINVAL, "gaussian init needs a positive std (got %g)", std);
	for (int i = 0; i < net->nviews; i++) {
		const sn_param_desc *d = &net->views[i].layer->params[net->views[i].index];
		if (d->init == SN_INIT_FAN && (d->fan_in < 1 || d->fan_out < 1))
			return sn_fail(SN_ENET, "%s has no fan-in/fan-out to scale by",
				       net->views[i].name);
	}
	sn_rng r;
	sn_rng_seed(&r, seed);
	for (int i = 0; i < net->nviews; i++)
		init_view(&net->views[i], m, std, &r);
	return 0;
}

/* ---- weight files ------------------------------------------------------ */

static int check_tensor(const sn_param_view *v, const sn_tensor *t)
{
	char want[96], got[96];
	if (!t)
		return sn_fail(SN_EMISMATCH, "tensor \"%s\" is missing", v->name);
	if (t->dtype != SN_F32)
		return sn_fail(SN_EMISMATCH, "tensor \"%s\" is %s, expected F32", v->name,
			       sn_dtype_name(t->dtype));
	int same = t->ndim == v->ndim;
	for (int d = 0; same && d < v->ndim; d++)
		same = t->shape[d] == v->shape[d];
	if (!same)
		return sn_fail(SN_EMISMATCH, "tensor \"%s\" has shape %s, the net needs %s",
			       v->name, sn_shape_format(t->ndim, t->shape, got, sizeof got),
			       sn_shape_format(v->ndim, v->shape, want, sizeof want));
	return 0;
}

static int check_finite(const sn_tensor *t)
{
	int64_t n = sn_tensor_numel(t);
	for (int64_t j = 0; j < n; j++) {
		float v;
		memcpy(&v, (const char *)t->data + 4 * j, 4);
		if (!isfinite(v))
			return sn_fail(SN_ENONFINITE, "tensor \"%s\" has a non-finite value (%g) "
				       "at index %lld", t->name, (double)v, (long long)j);
	}
	return 0;
}

int sn_net_load_weights(sn_net *net, const sn_st *st)
{
	/* Check everything first, so a mismatch leaves the net untouched. */
	for (int i = 0; i < net->nviews; i++) {
		int err = check_tensor(&net->views[i], sn_st_find(st, net->views[i].name));
		if (!err)
			err = check_finite(sn_st_find(st, net->views[i].name));
		if (err)
			return err;
	}
	for (int i = 0; i < st->ntensors; i++)
		if (!sn_net_find(net, st->tensors[i].name))
			return sn_fail(SN_EMISMATCH, "tensor \"%s\" is not in the net",
				       st->tensors[i].name);
	for (int i = 0; i < net->nviews; i++) {
		const sn_tensor *t = sn_st_find(st, net->views[i].name);
		memcpy(net->views[i].data, t->data, (size_t)net->views[i].numel * sizeof(float));
	}
	return 0;
}

static int copy_meta(const sn_st *st, sn_st *out)
{
	for (int i = 0; i < st->nmeta; i++) {
		int err = sn_st_set_meta(out, st->meta[i].key, st->meta[i].value);
		if (err) {
			sn_st_free(out);
			return err;
		}
	}
	return 0;
}

int sn_net_from_weights(const char *path, sn_net *net, sn_st *meta_out)
{
	sn_st st;
	memset(net, 0, sizeof *net);
	if (meta_out)
		sn_st_init(meta_out);   /* always safe to free, even after a failure */
	int err = sn_st_read(path, &st, 0);
	if (err)
		return err;
	const char *format = sn_st_meta(&st, "format");
	const char *yaml = sn_st_meta(&st, "net");
	if (!format || strcmp(format, "sn.weights.v1") != 0) {
		err = sn_fail(SN_EFORMAT, "not a weights file (format \"%s\", expected "
			      "\"sn.weights.v1\")", format ? format : "");
		goto out;
	}
	if (!yaml) {
		err = sn_fail(SN_EFORMAT, "weights file without a \"net\" definition");
		goto out;
	}
	if ((err = sn_net_parse(yaml, strlen(yaml), "net", net)))
		goto out;
	if ((err = sn_net_load_weights(net, &st)))
		goto out_net;
	if (meta_out && (err = copy_meta(&st, meta_out)))
		goto out_net;
	goto out;
out_net:
	sn_net_free(net);
out:
	sn_st_free(&st);
	return err;
}

int sn_net_to_st(const sn_net *net, sn_st *st)
{
	int err;
	for (int i = 0; i < net->nviews; i++) {
		const sn_param_view *v = &net->views[i];
		if ((err = sn_st_add(st, v->name, SN_F32, v->ndim, v->shape, v->data, 0)))
			return err;
	}
	if ((err = sn_st_set_meta(st, "format", "sn.weights.v1")))
		return err;
	return sn_st_set_meta(st, "net", net->yaml);
}
