#include "average.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "delta.h"
#include "st.h"
#include "train.h"

/* The layout every input must share: taken from the first usable input. */
typedef struct {
	char *name;
	int ndim;
	int64_t shape[SN_MAX_DIMS];
	int64_t numel;
	size_t offset;            /* into the flat accumulator */
} ref_tensor;

typedef struct {
	char *yaml;
	const char *path;
	ref_tensor *t;
	int nt;
	size_t total;
} ref_layout;

/* What pass 1 learns about one usable input.  Inputs are kept in memory
 * from pass 1 to pass 2 while they fit in KEEP_BYTES together; the others
 * are read again, and must not have changed in between. */
typedef struct {
	const char *path;
	uint64_t hash;
	uint32_t crc;
	double loss, seconds;
	int has_loss;
	int64_t examples, steps, round;
	int kept;
	sn_st st;
} input_info;

#define KEEP_BYTES ((size_t)1 << 30)

void sn_average_opts_default(sn_average_opts *o)
{
	memset(o, 0, sizeof *o);
	o->outer_lr = 1.0;
	o->min_inputs = 1;
}

static double meta_number(const sn_st *st, const char *key, double dflt, int *present)
{
	const char *s = sn_st_meta(st, key);
	char *end;
	if (present)
		*present = 0;
	if (!s || !*s)
		return dflt;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || *end || !isfinite(v))
		return dflt;
	if (present)
		*present = 1;
	return v;
}

static void ref_free(ref_layout *r)
{
	for (int i = 0; i < r->nt; i++)
		free(r->t[i].name);
	free(r->t);
	free(r->yaml);
	memset(r, 0, sizeof *r);
}

static int ref_build(ref_layout *r, const sn_st *st, const char *path)
{
	const char *yaml = sn_st_meta(st, "net");
	r->yaml = strdup(yaml ? yaml : "");
	r->t = calloc(st->ntensors ? st->ntensors : 1, sizeof *r->t);
	if (!r->yaml || !r->t)
		return sn_fail(SN_ENOMEM, "out of memory");
	r->path = path;
	for (int i = 0; i < st->ntensors; i++) {
		const sn_tensor *t = &st->tensors[i];
		ref_tensor *rt = &r->t[r->nt];
		rt->name = strdup(t->name);
		if (!rt->name)
			return sn_fail(SN_ENOMEM, "out of memory");
		r->nt++;
		rt->ndim = t->ndim;
		memcpy(rt->shape, t->shape, sizeof rt->shape);
		rt->numel = sn_tensor_numel(t);
		rt->offset = r->total;
		r->total += (size_t)rt->numel;
	}
	return 0;
}

/* Weights are F32 throughout sn; anything else is refused, not converted. */
static int check_tensors_f32(const sn_st *st)
{
	for (int i = 0; i < st->ntensors; i++)
		if (st->tensors[i].dtype != SN_F32)
			return sn_fail(SN_EUNSUPPORTED, "tensor \"%s\" is %s, expected F32",
				       st->tensors[i].name, sn_dtype_name(st->tensors[i].dtype));
	if (st->ntensors == 0)
		return sn_fail(SN_EFORMAT, "no tensors");
	return 0;
}

/* SN_EMISMATCH naming `other` and the first tensor that differs; the YAML
 * text is compared last so the message points at a tensor when one differs. */
static int compare_layout(const sn_st *st, const ref_layout *r, int check_yaml)
{
	char a[128], b[128];
	for (int i = 0; i < r->nt; i++) {
		const ref_tensor *rt = &r->t[i];
		const sn_tensor *t = sn_st_find(st, rt->name);
		if (!t)
			return sn_fail(SN_EMISMATCH, "net differs from %s: tensor \"%s\" is missing",
				       r->path, rt->name);
		if (t->ndim != rt->ndim || memcmp(t->shape, rt->shape, sizeof(int64_t) * (size_t)t->ndim))
			return sn_fail(SN_EMISMATCH, "net differs from %s: tensor \"%s\" has shape %s, not %s",
				       r->path, rt->name, sn_shape_format(t->ndim, t->shape, a, sizeof a),
				       sn_shape_format(rt->ndim, rt->shape, b, sizeof b));
	}
	if (st->ntensors != r->nt) {
		for (int i = 0; i < st->ntensors; i++) {
			int found = 0;
			for (int j = 0; j < r->nt && !found; j++)
				found = strcmp(st->tensors[i].name, r->t[j].name) == 0;
			if (!found)
				return sn_fail(SN_EMISMATCH, "net differs from %s: extra tensor \"%s\"",
					       r->path, st->tensors[i].name);
		}
		return sn_fail(SN_EMISMATCH, "net differs from %s: %d tensors, not %d",
			       r->path, st->ntensors, r->nt);
	}
	if (check_yaml) {
		const char *yaml = sn_st_meta(st, "net");
		if (strcmp(yaml ? yaml : "", r->yaml) != 0)
			return sn_fail(SN_EMISMATCH, "net differs from %s: the net YAML text differs",
				       r->path);
	}
	return 0;
}

static int scan_finite(const sn_st *st)
{
	for (int i = 0; i < st->ntensors; i++) {
		const sn_tensor *t = &st->tensors[i];
		int64_t n = t->dtype == SN_F32 ? sn_tensor_numel(t) : 0;   /* others are refused later */
		for (int64_t j = 0; j < n; j++) {
			float v;
			memcpy(&v, (const char *)t->data + 4 * j, 4);
			if (!isfinite(v))
				return sn_fail(SN_ENONFINITE, "tensor \"%s\" has a non-finite value at %lld",
					       t->name, (long long)j);
		}
	}
	return 0;
}

/* A content key: two inputs with the same key hold the same numbers, so
 * summing them in key order makes the result independent of argument order. */
static uint64_t content_hash(const sn_st *st)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (int i = 0; i < st->ntensors; i++) {
		const sn_tensor *t = &st->tensors[i];
		for (const char *p = t->name; *p; p++)
			h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
		const unsigned char *d = t->data;
		size_t j = 0;
		for (; j + 8 <= t->nbytes; j += 8) {
			uint64_t w;
			memcpy(&w, d + j, 8);
			h = (h ^ w) * 0x100000001b3ull;
			h ^= h >> 29;
		}
		for (; j < t->nbytes; j++)
			h = (h ^ d[j]) * 0x100000001b3ull;
	}
	return h;
}

static int cmp_double(double a, double b)
{
	return (a > b) - (a < b);
}

static int input_cmp(const void *pa, const void *pb)
{
	const input_info *a = pa, *b = pb;
	if (a->hash != b->hash)
		return a->hash < b->hash ? -1 : 1;
	if (a->crc != b->crc)
		return a->crc < b->crc ? -1 : 1;
	int c = (a->examples > b->examples) - (a->examples < b->examples);
	if (!c)
		c = cmp_double(a->loss, b->loss);
	if (!c)
		c = (a->steps > b->steps) - (a->steps < b->steps);
	if (!c)
		c = cmp_double(a->seconds, b->seconds);
	if (!c)
		c = (a->round > b->round) - (a->round < b->round);
	return c;
}

/* The counters are strict (sn_train_meta_int): a worker file whose counters
 * are not non-negative integers is as corrupt as one with a bad crc32. */
static int record_meta(input_info *in, const sn_st *st)
{
	int err;
	if ((err = sn_train_meta_int(st, "examples", &in->examples)) ||
	    (err = sn_train_meta_int(st, "steps", &in->steps)) ||
	    (err = sn_train_meta_int(st, "round", &in->round)))
		return err;
	in->loss = meta_number(st, "loss", 0, &in->has_loss);
	in->seconds = meta_number(st, "seconds", 0, NULL);
	in->hash = content_hash(st);
	in->crc = sn_st_data_crc(st);
	return 0;
}

/* An input as weights: a delta file (sn.delta.v1) is applied to the base
 * first, so it averages exactly like the weight file sn-delta apply writes. */
static int read_input(const char *path, const sn_st *base, sn_st *st)
{
	int err = sn_st_read(path, st, 0);
	if (err || !sn_delta_is_delta(st))
		return err;
	sn_st w;
	if (!base)
		err = sn_fail(SN_EINVAL, "a delta file needs --base, the weights it was made against");
	else
		err = sn_delta_decode(base, st, &w);
	sn_st_free(st);
	if (!err)
		*st = w;
	return err;
}

/* A delta for other weights, or one given without a base, is a mistake in
 * the round, not a damaged file: it stops the average like a different net. */
static int fatal_input_error(int err)
{
	return err == SN_ENOMEM || err == SN_EMISMATCH || err == SN_EINVAL;
}

/* Pass 1: validate every input, keep what is usable and learn the layout.
 * Corrupt or non-finite inputs are excluded; a different net is fatal. */
static int survey(const char *const *paths, int n, const sn_st *base, ref_layout *ref,
		  input_info *usable, int *nusable, sn_average_warn_fn warn, void *ctx,
		  sn_average_summary *s)
{
	size_t kept_bytes = 0;
	for (int i = 0; i < n; i++) {
		sn_st st;
		int err = read_input(paths[i], base, &st);
		if (!err)
			err = scan_finite(&st);
		if (!err)
			err = record_meta(&usable[*nusable], &st);
		if (err && !fatal_input_error(err)) {
			if (warn)
				warn(ctx, paths[i], sn_errdetail());
			s->excluded++;
			sn_st_free(&st);
			sn_errclear();
			continue;
		}
		if (!err)
			err = check_tensors_f32(&st);
		if (!err && !ref->t)
			err = ref_build(ref, &st, paths[i]);
		else if (!err)
			err = compare_layout(&st, ref, 1);
		if (err) {
			s->bad_path = paths[i];
			sn_st_free(&st);
			return err;
		}
		usable[*nusable].path = paths[i];
		size_t bytes = 0;
		for (int t = 0; t < st.ntensors; t++)
			bytes += st.tensors[t].nbytes;
		if (bytes <= KEEP_BYTES - kept_bytes) {
			kept_bytes += bytes;
			usable[*nusable].st = st;
			usable[*nusable].kept = 1;
		} else {
			sn_st_free(&st);
		}
		(*nusable)++;
	}
	return 0;
}

/* Pass 2: add the inputs in key order into acc (weighted or not). */
static int accumulate(input_info *in, int n, const sn_st *base, const ref_layout *ref,
		      int weighted, double *acc, int *order, const char **bad_path)
{
	for (int i = 0; i < n; i++) {
		sn_st st;
		*bad_path = in[i].path;
		if (in[i].kept) {
			st = in[i].st;
			in[i].kept = 0;
		} else {
			int err = read_input(in[i].path, base, &st);
			if (err)
				return err;
			if (content_hash(&st) != in[i].hash) {
				sn_st_free(&st);
				return sn_fail(SN_EIO, "changed while it was being averaged");
			}
		}
		double w = weighted ? (double)in[i].examples : 1.0;
		for (int k = 0; k < ref->nt; k++) {
			const ref_tensor *rt = &ref->t[k];
			const sn_tensor *t = sn_st_find(&st, rt->name);
			double *a = acc + rt->offset;
			for (int64_t j = 0; j < rt->numel; j++) {
				float v;
				memcpy(&v, (const char *)t->data + 4 * j, 4);
				a[j] += w * (double)v;
			}
		}
		/* the output keeps the tensor order of the first input in key order */
		for (int k = 0; i == 0 && k < st.ntensors; k++)
			for (int r = 0; r < ref->nt; r++)
				if (strcmp(st.tensors[k].name, ref->t[r].name) == 0)
					order[k] = r;
		sn_st_free(&st);
	}
	return 0;
}

/* The base weights (PREV) as one flat float array in layout order. */
static int load_base(const ref_layout *ref, float *flat, const sn_st *meta)
{
	int err = check_tensors_f32(meta);
	if (!err)
		err = compare_layout(meta, ref, 1);
	if (err)
		return err;
	for (int k = 0; k < ref->nt; k++)
		memcpy(flat + ref->t[k].offset, sn_st_find(meta, ref->t[k].name)->data,
		       4 * (size_t)ref->t[k].numel);
	return 0;
}

/* The outer momentum m, zero when the state file does not exist yet. */
static int load_outer_state(const char *path, const ref_layout *ref, int64_t base_round, float *m)
{
	struct stat sb;
	if (stat(path, &sb) != 0 && errno == ENOENT) {
		memset(m, 0, 4 * ref->total);
		return 0;
	}
	sn_st st;
	int err = sn_st_read(path, &st, 0);
	if (err)
		return err;
	const char *fmt = sn_st_meta(&st, "format");
	if (!fmt || strcmp(fmt, "sn.outer.v1") != 0)
		err = sn_fail(SN_EFORMAT, "not an outer state file (format \"%s\")", fmt ? fmt : "");
	if (!err)
		err = check_tensors_f32(&st);
	if (!err)
		err = compare_layout(&st, ref, 0);
	int64_t round = -1;
	if (!err && !sn_st_meta(&st, "round"))
		err = sn_fail(SN_EFORMAT, "outer state has no \"round\" metadata");
	if (!err)
		err = sn_train_meta_int(&st, "round", &round);
	if (!err && round != base_round)
		err = sn_fail(SN_EMISMATCH, "outer state is for round %lld, the base is round %lld",
			      (long long)round, (long long)base_round);
	if (!err && (err = scan_finite(&st)) == 0)
		for (int k = 0; k < ref->nt; k++)
			memcpy(m + ref->t[k].offset, sn_st_find(&st, ref->t[k].name)->data,
			       4 * (size_t)ref->t[k].numel);
	sn_st_free(&st);
	return err;
}

/* A file holding `flat` in layout order `order` (borrowed, not copied). */
static int build_flat(sn_st *st, const ref_layout *ref, const int *order, const float *flat,
		      const sn_meta *meta, int nmeta)
{
	int err = 0;
	for (int i = 0; i < nmeta && !err; i++)
		err = sn_st_set_meta(st, meta[i].key, meta[i].value);
	for (int i = 0; i < ref->nt && !err; i++) {
		const ref_tensor *rt = &ref->t[order[i]];
		err = sn_st_add(st, rt->name, SN_F32, rt->ndim, rt->shape, flat + rt->offset, 0);
	}
	return err;
}

/* Metadata of the result; see sn-average(1) for the rules.  Counters are
 * added with overflow checks: the file that overflows one is blamed. */
static int summarize(const input_info *in, int n, const sn_st *base, const char *base_path,
		     sn_average_summary *s)
{
	double lw = 0, lsum = 0, lplain = 0, secs = 0;
	int nloss = 0, err;
	int64_t ex = 0, steps = 0, max_round = 0, base_steps = 0, base_round = 0;
	if (base && ((err = sn_train_meta_int(base, "steps", &base_steps)) ||
		     (err = sn_train_meta_int(base, "round", &base_round)))) {
		s->bad_path = base_path;
		return err;
	}
	s->seconds_max = 0;
	for (int i = 0; i < n; i++) {
		s->bad_path = in[i].path;
		if (__builtin_add_overflow(ex, in[i].examples, &ex))
			return sn_fail(SN_EFORMAT, "examples %lld: the sum over the inputs overflows",
				       (long long)in[i].examples);
		if (__builtin_add_overflow(steps, in[i].steps - base_steps, &steps))
			return sn_fail(SN_EFORMAT, "steps %lld: the sum over the inputs overflows",
				       (long long)in[i].steps);
		secs += in[i].seconds;
		if (in[i].seconds > s->seconds_max)
			s->seconds_max = in[i].seconds;
		if (in[i].round > max_round || i == 0)
			max_round = in[i].round;
		if (in[i].has_loss) {
			lw += (double)in[i].examples;
			lsum += (double)in[i].examples * in[i].loss;
			lplain += in[i].loss;
			nloss++;
		}
	}
	s->examples = ex;
	s->loss = nloss == 0 ? NAN : lw > 0 ? lsum / lw : lplain / nloss;
	s->seconds_mean = secs / n;
	if (__builtin_add_overflow(base_steps, (int64_t)llround((double)steps / n), &s->steps))
		return sn_fail(SN_EFORMAT, "steps: the mean overflows");
	if (base)
		s->bad_path = base_path;
	else
		for (int i = 0; i < n; i++)
			if (in[i].round == max_round)
				s->bad_path = in[i].path;
	if (__builtin_add_overflow(base ? base_round : max_round, 1, &s->round))
		return sn_fail(SN_EFORMAT, "round %lld is the last there can be",
			       (long long)(base ? base_round : max_round));
	return 0;
}

/* The outer state and the weights are one commit (sn_st_write_all): the
 * state is renamed first and the weights last, so new weights always have
 * their state beside them, and a failure leaves both as they were. */
static int write_outputs(const char *out, const sn_average_opts *o, const ref_layout *ref,
			 const int *order, const float *w, const float *m,
			 sn_average_summary *s)
{
	char steps[32], ex[32], loss[32], round[32], secs[32];
	snprintf(steps, sizeof steps, "%lld", (long long)s->steps);
	snprintf(ex, sizeof ex, "%lld", (long long)s->examples);
	snprintf(loss, sizeof loss, "%.9g", s->loss);
	snprintf(round, sizeof round, "%lld", (long long)s->round);
	snprintf(secs, sizeof secs, "%.6f", s->seconds_max);
	sn_meta om[] = {{"format", "sn.outer.v1"}, {"round", round}};
	sn_meta wm[] = {{"format", "sn.weights.v1"}, {"net", ref->yaml}, {"round", round},
			{"steps", steps}, {"examples", ex}, {"seconds", secs}, {"loss", loss}};
	sn_st ost, wst;
	sn_st_init(&ost);
	sn_st_init(&wst);
	int with_state = m && o->outer_state, failed = with_state;
	int err = build_flat(&wst, ref, order, w, wm, isnan(s->loss) ? 6 : 7);
	if (!err && with_state)
		err = build_flat(&ost, ref, order, m, om, 2);
	if (!err) {
		const sn_st *files[] = {&ost, &wst};
		const char *paths[] = {o->outer_state, out};
		err = sn_st_write_all(files + !with_state, paths + !with_state, 1 + with_state,
				      &failed);
		failed += !with_state;
	}
	s->bad_path = failed == 0 ? o->outer_state : out;
	sn_st_free(&ost);
	sn_st_free(&wst);
	return err;
}

/* Batchnorm's running statistics are estimates, not parameters: an outer
 * step would extrapolate them (running_var below zero), so they take the
 * plain mean and keep no momentum, as DiLoCo's outer optimizer sees only
 * the parameters. */
static int is_running_statistic(const char *name)
{
	static const char *const suffixes[] = {".running_mean", ".running_var"};
	const size_t len = strlen(name);
	for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes; i++) {
		const size_t sl = strlen(suffixes[i]);
		if (len > sl && strcmp(name + len - sl, suffixes[i]) == 0)
			return 1;
	}
	return 0;
}

/* The averaged weights into w; with an outer step, the new momentum into m.
 * w = mean + (1 - LR)·Δ - LR·M·m is PREV - LR·(Δ + M·m) rearranged so that
 * LR = 1, M = 0 yields the mean itself, bit for bit. */
static void combine(const double *acc, double total_weight, const float *prev, float *m,
		    const sn_average_opts *o, float *w, size_t n)
{
	for (size_t j = 0; j < n; j++) {
		double mean = acc[j] / total_weight;
		if (!prev) {
			w[j] = (float)mean;
			continue;
		}
		double delta = (double)prev[j] - mean;
		double mnew = o->outer_momentum * (double)m[j] + delta;
		w[j] = (float)(mean + (1.0 - o->outer_lr) * delta - o->outer_lr * o->outer_momentum * mnew);
		m[j] = (float)mnew;
	}
}

int sn_average_files(const char *const *paths, int n, const char *out,
		     const sn_average_opts *o, sn_average_warn_fn warn, void *ctx,
		     sn_average_summary *s)
{
	ref_layout ref = {0};
	input_info *in = calloc(n > 0 ? (size_t)n : 1, sizeof *in);
	double *acc = NULL;
	float *w = NULL, *prev = NULL, *m = NULL;
	int *order = NULL, nin = 0, err;
	sn_st base;
	sn_st_init(&base);
	memset(s, 0, sizeof *s);
	s->bad_path = out;
	s->loss = NAN;
	if (!in)
		return sn_fail(SN_ENOMEM, "out of memory");
	if (o->outer && !o->base) {
		err = sn_fail(SN_EINVAL, "the outer step needs the base weights");
		goto done;
	}
	if (o->base) {
		s->bad_path = o->base;
		if ((err = sn_st_read(o->base, &base, 0)) != 0)
			goto done;
	}
	err = survey(paths, n, o->base ? &base : NULL, &ref, in, &nin, warn, ctx, s);
	if (err)
		goto done;
	s->used = nin;
	if (nin < (o->min_inputs > 0 ? o->min_inputs : 1)) {
		err = sn_fail(SN_EQUORUM, "%d usable input%s, fewer than the %d required",
			      nin, nin == 1 ? "" : "s", o->min_inputs > 0 ? o->min_inputs : 1);
		goto done;
	}
	qsort(in, (size_t)nin, sizeof *in, input_cmp);
	acc = calloc(ref.total, sizeof *acc);
	w = malloc(4 * ref.total);
	order = malloc(sizeof *order * (size_t)ref.nt);
	if (!acc || !w || !order) {
		err = sn_fail(SN_ENOMEM, "out of memory");
		goto done;
	}
	double total_weight = nin;
	if (o->weighted) {
		total_weight = 0;
		for (int i = 0; i < nin; i++)
			total_weight += in[i].examples;
		if (!(total_weight > 0)) {
			err = sn_fail(SN_EFORMAT, "no input has a positive \"examples\" to weight by");
			goto done;
		}
	}
	if ((err = accumulate(in, nin, o->base ? &base : NULL, &ref, o->weighted, acc, order,
			      &s->bad_path)) != 0)
		goto done;
	if (o->base) {
		prev = malloc(4 * ref.total);
		m = o->outer ? malloc(4 * ref.total) : NULL;
		if (!prev || (o->outer && !m)) {
			err = sn_fail(SN_ENOMEM, "out of memory");
			goto done;
		}
		s->bad_path = o->base;
		if ((err = load_base(&ref, prev, &base)) != 0)
			goto done;
		s->bad_path = o->outer_state;
		if (m)
			memset(m, 0, 4 * ref.total);
		int64_t base_round;
		if ((err = sn_train_meta_int(&base, "round", &base_round)) != 0) {
			s->bad_path = o->base;
			goto done;
		}
		if (o->outer && o->outer_state &&
		    (err = load_outer_state(o->outer_state, &ref, base_round, m)) != 0)
			goto done;
	}
	if ((err = summarize(in, nin, o->base ? &base : NULL, o->base, s)) != 0)
		goto done;
	s->bad_path = out;
	for (int t = 0; t < ref.nt; t++) {
		const size_t at = ref.t[t].offset;
		const int outer = o->outer && !is_running_statistic(ref.t[t].name);
		if (o->outer && !outer)
			memset(m + at, 0, 4 * (size_t)ref.t[t].numel);
		combine(acc + at, total_weight, outer ? prev + at : NULL, outer ? m + at : NULL, o,
			w + at, (size_t)ref.t[t].numel);
	}
	err = write_outputs(out, o, &ref, order, w, m, s);
done:
	sn_st_free(&base);
	ref_free(&ref);
	for (int i = 0; i < nin; i++)
		if (in[i].kept)
			sn_st_free(&in[i].st);
	free(in);
	free(acc);
	free(w);
	free(prev);
	free(m);
	free(order);
	return err;
}
