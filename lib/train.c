#include "train.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define STATE_FORMAT "sn.state.v1"

/* Distinct constants keep the epoch permutations and the dropout stream of
 * one seed from ever sharing an xoshiro state. */
#define EPOCH_MIX 0x9e3779b97f4a7c15ULL
#define DROPOUT_MIX 0xd1b54a32d192ed03ULL

static double now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Strict decimal: digits only, no sign, no blanks, no overflow. */
static int parse_u64(const char *s, uint64_t *v)
{
	if (!s || !*s)
		return -1;
	uint64_t x = 0;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return -1;
		unsigned d = (unsigned)(*p - '0');
		if (x > (UINT64_MAX - d) / 10)
			return -1;
		x = x * 10 + d;
	}
	*v = x;
	return 0;
}

int sn_train_meta_int(const sn_st *st, const char *key, int64_t *v)
{
	const char *s = sn_st_meta(st, key);
	uint64_t x;
	*v = 0;
	if (!s)
		return 0;
	if (parse_u64(s, &x) || x > INT64_MAX)
		return sn_fail(SN_EFORMAT, "metadata %s \"%.40s\" is not a non-negative integer",
			       key, s);
	*v = (int64_t)x;
	return 0;
}

int sn_train_check_counters(const sn_st *st)
{
	static const struct {
		const char *format, *keys[4];
		int required;
	} known[] = {
		{"sn.weights.v1", {"round", "steps", "examples"}, 0},
		{STATE_FORMAT, {"step", "epoch", "cursor", "seed"}, 1},
		{"sn.outer.v1", {"round"}, 1},
	};
	const char *format = sn_st_meta(st, "format");
	for (size_t i = 0; format && i < sizeof known / sizeof known[0]; i++) {
		if (strcmp(format, known[i].format))
			continue;
		for (int k = 0; k < 4 && known[i].keys[k]; k++) {
			const char *key = known[i].keys[k], *text = sn_st_meta(st, key);
			int64_t v;
			uint64_t u;
			int err;
			if (!text && known[i].required)
				return sn_fail(SN_EFORMAT, "%s has no \"%s\" metadata", format, key);
			if (!strcmp(key, "seed") && text && parse_u64(text, &u))
				return sn_fail(SN_EFORMAT, "metadata seed \"%.40s\" is not an integer",
					       text);
			if (strcmp(key, "seed") && (err = sn_train_meta_int(st, key, &v)))
				return err;
		}
	}
	return 0;
}

/* ---- solver state ---------------------------------------------------- */

int sn_train_state_init(sn_train_state *s, const sn_net *net,
			const sn_solver_config *c, uint64_t seed)
{
	memset(s, 0, sizeof *s);
	snprintf(s->solver, sizeof s->solver, "%s", c->type);
	s->nbuffers = sn_solver_nbuffers(c);
	s->n = net->nparam;
	s->seed = seed;
	sn_rng_seed(&s->rng, seed ^ DROPOUT_MIX);
	size_t n = s->n ? s->n : 1;
	if (s->nbuffers >= 1 && !(s->m1 = calloc(n, sizeof(float))))
		goto nomem;
	if (s->nbuffers >= 2 && !(s->m2 = calloc(n, sizeof(float))))
		goto nomem;
	return 0;
nomem:
	sn_train_state_free(s);
	return sn_fail(SN_ENOMEM, "out of memory for %zu solver moments", n);
}

void sn_train_state_free(sn_train_state *s)
{
	free(s->m1);
	free(s->m2);
	s->m1 = s->m2 = NULL;
}

static int meta_i64(const sn_st *st, const char *key, int64_t *v)
{
	if (!sn_st_meta(st, key))
		return sn_fail(SN_EFORMAT, "state has no \"%s\" metadata", key);
	return sn_train_meta_int(st, key, v);
}

static int same_shape(const sn_tensor *t, const sn_param_view *v)
{
	if (t->ndim != v->ndim)
		return 0;
	for (int i = 0; i < v->ndim; i++)
		if (t->shape[i] != v->shape[i])
			return 0;
	return 1;
}

/* Copy every <weight>.m1/.m2 of st into the flat moment buffers, refusing
 * missing, extra or differently shaped tensors. */
static int load_moments(sn_train_state *s, const sn_st *st, const sn_net *net)
{
	int expected = 0;
	char name[128];
	for (int i = 0; i < net->nviews; i++) {
		const sn_param_view *v = &net->views[i];
		if (!v->trainable)
			continue;
		for (int b = 0; b < s->nbuffers; b++) {
			snprintf(name, sizeof name, "%s.m%d", v->name, b + 1);
			const sn_tensor *t = sn_st_find(st, name);
			char s1[64], s2[64];
			if (!t)
				return sn_fail(SN_EMISMATCH, "state has no tensor %s", name);
			if (t->dtype != SN_F32 || !same_shape(t, v))
				return sn_fail(SN_EMISMATCH, "state tensor %s is %s%s, the net needs F32%s",
					       name, sn_dtype_name(t->dtype),
					       sn_shape_format(t->ndim, t->shape, s1, sizeof s1),
					       sn_shape_format(v->ndim, v->shape, s2, sizeof s2));
			float *dst = (b == 0 ? s->m1 : s->m2) + (v->data - net->param);
			memcpy(dst, t->data, t->nbytes);
			expected++;
		}
	}
	if (st->ntensors != expected) {
		for (int i = 0; i < st->ntensors; i++) {
			const char *tn = st->tensors[i].name;
			size_t len = strlen(tn);
			int ok = 0;
			if (len > 3 && tn[len - 3] == '.' && tn[len - 2] == 'm' &&
			    tn[len - 1] - '1' >= 0 && tn[len - 1] - '1' < s->nbuffers) {
				snprintf(name, sizeof name, "%.*s", (int)(len - 3), tn);
				const sn_param_view *v = sn_net_find(net, name);
				ok = v && v->trainable;
			}
			if (!ok)
				return sn_fail(SN_EMISMATCH, "state tensor %s does not belong to this net", tn);
		}
		return sn_fail(SN_EMISMATCH, "state has %d tensors, the net needs %d",
			       st->ntensors, expected);
	}
	return 0;
}

static int load_counters(sn_train_state *s, const sn_st *st)
{
	int err;
	const char *rng = sn_st_meta(st, "rng");
	const char *seed_text = sn_st_meta(st, "seed");
	uint64_t useed;
	if ((err = meta_i64(st, "step", &s->step)) ||
	    (err = meta_i64(st, "epoch", &s->epoch)) ||
	    (err = meta_i64(st, "cursor", &s->cursor)))
		return err;
	if (!seed_text || parse_u64(seed_text, &useed))
		return sn_fail(SN_EFORMAT, "state metadata seed is missing or not an integer");
	s->seed = useed;
	if (!rng)
		return sn_fail(SN_EFORMAT, "state has no \"rng\" metadata");
	if (sn_rng_parse(&s->rng, rng))
		return sn_fail(SN_EFORMAT, "state metadata rng \"%.70s\" is malformed", rng);
	return 0;
}

int sn_train_state_load(sn_train_state *s, const char *path, const sn_net *net,
			const sn_solver_config *c, uint64_t seed, int *found)
{
	struct stat sb;
	sn_st st;
	int err;
	*found = 0;
	memset(s, 0, sizeof *s);
	if (stat(path, &sb) != 0) {
		if (errno == ENOENT)
			return sn_train_state_init(s, net, c, seed);
		return sn_fail(SN_EIO, "%s", strerror(errno));
	}
	if ((err = sn_st_read(path, &st, 0)))
		return err;
	const char *format = sn_st_meta(&st, "format");
	const char *solver = sn_st_meta(&st, "solver");
	if (!format || strcmp(format, STATE_FORMAT)) {
		err = sn_fail(SN_EFORMAT, "format is \"%.40s\", not %s",
			      format ? format : "(none)", STATE_FORMAT);
		goto out;
	}
	if (!solver || strcmp(solver, c->type)) {
		err = sn_fail(SN_EMISMATCH, "state is for solver \"%.20s\", this run uses \"%s\"",
			      solver ? solver : "(none)", c->type);
		goto out;
	}
	if ((err = sn_train_state_init(s, net, c, seed)))
		goto out;
	if ((err = load_counters(s, &st)) || (err = load_moments(s, &st, net)))
		goto out;
	*found = 1;
out:
	if (err)
		sn_train_state_free(s);
	sn_st_free(&st);
	return err;
}

static int set_meta_i64(sn_st *st, const char *key, int64_t v)
{
	char buf[32];
	snprintf(buf, sizeof buf, "%" PRId64, v);
	return sn_st_set_meta(st, key, buf);
}

int sn_train_state_st(const sn_train_state *s, const sn_net *net, sn_st *st)
{
	char name[128], text[72];
	int err;
	for (int i = 0; i < net->nviews; i++) {
		const sn_param_view *v = &net->views[i];
		if (!v->trainable)
			continue;
		for (int b = 0; b < s->nbuffers; b++) {
			const float *src = (b == 0 ? s->m1 : s->m2) + (v->data - net->param);
			snprintf(name, sizeof name, "%s.m%d", v->name, b + 1);
			if ((err = sn_st_add(st, name, SN_F32, v->ndim, v->shape, src, 0)))
				return err;
		}
	}
	sn_rng_format(&s->rng, text);
	snprintf(name, sizeof name, "%" PRIu64, s->seed);
	if ((err = sn_st_set_meta(st, "format", STATE_FORMAT)) ||
	    (err = sn_st_set_meta(st, "solver", s->solver)) ||
	    (err = set_meta_i64(st, "step", s->step)) ||
	    (err = set_meta_i64(st, "epoch", s->epoch)) ||
	    (err = set_meta_i64(st, "cursor", s->cursor)) ||
	    (err = sn_st_set_meta(st, "seed", name)) ||
	    (err = sn_st_set_meta(st, "rng", text)))
		return err;
	return 0;
}

int sn_train_state_save(const sn_train_state *s, const char *path, const sn_net *net)
{
	sn_st st;
	sn_st_init(&st);
	int err = sn_train_state_st(s, net, &st);
	if (!err)
		err = sn_st_write(&st, path);
	sn_st_free(&st);
	return err;
}

/* ---- data checks ----------------------------------------------------- */

static void format_shape(const sn_shape *s, char *buf, size_t len)
{
	sn_shape_format(s->ndim, s->d, buf, len);
}

int sn_train_check_data(const sn_net *net, const sn_data *d)
{
	int same = d->shape.ndim == net->input.ndim;
	for (int i = 0; same && i < net->input.ndim; i++)
		same = d->shape.d[i] == net->input.d[i];
	if (!same && net->input.ndim == 1)
		same = sn_shape_size(&d->shape) == net->input.d[0];
	if (!same) {
		char a[64], b[64];
		format_shape(&d->shape, a, sizeof a);
		format_shape(&net->input, b, sizeof b);
		return sn_fail(SN_EMISMATCH, "example shape %s does not match net input %s", a, b);
	}
	for (int64_t i = 0; i < d->n; i++) {
		double y = sn_tensor_get(d->y, (size_t)i);
		if (y < 0 || y >= net->classes)
			return sn_fail(SN_EMISMATCH, "label %.0f of example %" PRId64
				       " is not below the net's %d classes", y, i, net->classes);
	}
	return 0;
}

/* ---- training loop --------------------------------------------------- */

static void epoch_permutation(uint64_t seed, int64_t epoch, int64_t *perm, int64_t n)
{
	sn_rng r;
	sn_rng_seed(&r, seed ^ (EPOCH_MIX * ((uint64_t)epoch + 1)));   /* no overflow at INT64_MAX */
	for (int64_t i = 0; i < n; i++)
		perm[i] = i;
	sn_rng_shuffle(&r, perm, n);
}

typedef struct {
	int64_t *perm, perm_epoch, *idx;
	float *x;
	int32_t *y;
	float *pad, *example;   /* augmentation: per-channel pad value, one example */
} batch_buffers;

/* The next B indices in (epoch, cursor) order, wrapping into later epochs;
 * the cursor is kept below n so a saved state is canonical. */
static int next_batch(sn_train_state *s, batch_buffers *bb, int64_t n, int B)
{
	for (int i = 0; i < B; i++) {
		if (bb->perm_epoch != s->epoch) {
			epoch_permutation(s->seed, s->epoch, bb->perm, n);
			bb->perm_epoch = s->epoch;
		}
		bb->idx[i] = bb->perm[s->cursor++];
		if (s->cursor == n) {
			if (s->epoch == INT64_MAX)
				return sn_fail(SN_EFORMAT, "state epoch %" PRId64 " cannot advance",
					       s->epoch);
			s->epoch++;
			s->cursor = 0;
		}
	}
	return 0;
}

int sn_train_check_steps(int64_t steps, int64_t iters, const char *what)
{
	int64_t end;
	if (steps < 0 || __builtin_add_overflow(steps, iters, &end))
		return sn_fail(SN_EFORMAT, "%s %" PRId64 " leaves no room for %" PRId64
			       " more steps", what, steps, iters);
	return 0;
}

void sn_train_augment(float *x, int B, const sn_shape *shape, int64_t crop_pad, int mirror,
		      const float *pad, float *example, sn_rng *r)
{
	const int64_t C = shape->d[0], H = shape->d[1], W = shape->d[2], P = crop_pad;
	for (int b = 0; b < B; b++) {
		float *out = x + b * C * H * W;
		int64_t dy = P, dx = P;
		if (P > 0) {
			dy = (int64_t)sn_rng_below(r, (uint64_t)(2 * P + 1));
			dx = (int64_t)sn_rng_below(r, (uint64_t)(2 * P + 1));
		}
		const int flip = mirror && sn_rng_below(r, 2);
		if (dy == P && dx == P && !flip)
			continue;
		memcpy(example, out, (size_t)(C * H * W) * sizeof *example);
		/* output (i, j) is padded (i + dy, j + dx) = input (i + dy - P, ...) */
		for (int64_t c = 0; c < C; c++)
			for (int64_t i = 0; i < H; i++) {
				const int64_t si = i + dy - P;
				float *row = out + (c * H + i) * W;
				for (int64_t j = 0; j < W; j++) {
					const int64_t sj = (flip ? W - 1 - j : j) + dx - P;
					row[j] = si < 0 || si >= H || sj < 0 || sj >= W
						 ? pad[c] : example[(c * H + si) * W + sj];
				}
			}
	}
}

/* The value a stored 0 (a black pixel) has after normalisation. */
static void pad_values(const sn_data *d, float *pad)
{
	for (int64_t c = 0; c < d->shape.d[0]; c++) {
		const int k = c < d->nstats ? (int)c : 0;
		pad[c] = d->nstats ? -d->mean[k] / d->std[k] : 0.0f;
	}
}

static int nonfinite_at(int64_t step)
{
	char what[400];
	snprintf(what, sizeof what, "%s", sn_errdetail());
	return sn_fail(SN_ENONFINITE, "step %" PRId64 ": %s", step, what);
}

static int check_weights_finite(const sn_net *net, int64_t step)
{
	for (size_t i = 0; i < net->nparam; i++)
		if (!isfinite(net->param[i])) {
			sn_fail(SN_ENONFINITE, "non-finite weights after the update");
			return nonfinite_at(step);
		}
	return 0;
}

static int check_run_args(const sn_model *m, const sn_data *d, const sn_solver_config *c,
			  const sn_train_state *s)
{
	if (c->batch < 1 || c->batch > m->max_batch)
		return sn_fail(SN_EINVAL, "batch %d outside 1..%d", c->batch, m->max_batch);
	if (d->n < 1)
		return sn_fail(SN_EINVAL, "no examples to train on");
	if (s->cursor < 0 || s->cursor >= d->n || s->epoch < 0)
		return sn_fail(SN_EMISMATCH, "state cursor %" PRId64 " is beyond the shard's %"
			       PRId64 " examples", s->cursor, d->n);
	if (s->n != m->net->nparam || sn_solver_nbuffers(c) != s->nbuffers)
		return sn_fail(SN_EMISMATCH, "solver state does not fit this net and solver");
	if ((c->crop_pad || c->mirror) && d->shape.ndim != 3)
		return sn_fail(SN_EINVAL, "crop_pad and mirror need [C,H,W] examples");
	if (c->crop_pad > d->shape.d[1] || c->crop_pad > d->shape.d[2])
		return sn_fail(SN_EINVAL, "crop_pad %" PRId64 " is larger than the %" PRId64 "x%"
			       PRId64 " examples", c->crop_pad, d->shape.d[1], d->shape.d[2]);
	return 0;
}

/* The batch and the solver step are per example and per weight, so they
 * run on the pool in fixed pieces (of EXAMPLES examples, of WEIGHTS
 * weights); the results do not depend on the thread count.  Clipping by
 * the gradient norm needs all of it, so it keeps the whole step together. */
#define EXAMPLES 8
#define WEIGHTS 16384

typedef struct {
	const sn_data *d;
	const int64_t *idx;
	int B;
	float *x;
	int32_t *y;
} batch_job;

static void batch_unit(void *ctx, int64_t unit, int thread)
{
	(void)thread;
	const batch_job *j = ctx;
	const int b0 = (int)unit * EXAMPLES, n = j->B - b0 < EXAMPLES ? j->B - b0 : EXAMPLES;
	sn_data_batch(j->d, j->idx + b0, n, j->x + b0 * sn_shape_size(&j->d->shape), j->y + b0);
}

static void gather_batch(sn_parallel *pool, const sn_data *d, const int64_t *idx, int B,
			 float *x, int32_t *y)
{
	batch_job j = {d, idx, B, x, y};
	sn_parallel_for(pool, (B + EXAMPLES - 1) / EXAMPLES, batch_unit, &j);
}

typedef struct {
	const sn_solver_config *c;
	int64_t step;
	sn_net *net;
	sn_train_state *s;
} solver_job;

static void solver_unit(void *ctx, int64_t unit, int thread)
{
	(void)thread;
	const solver_job *j = ctx;
	const size_t i = (size_t)unit * WEIGHTS, n = j->net->nparam - i < WEIGHTS
						       ? j->net->nparam - i : WEIGHTS;
	sn_solver_step(j->c, j->step, j->net->param + i, j->net->grad + i,
		       j->s->m1 ? j->s->m1 + i : NULL, j->s->m2 ? j->s->m2 + i : NULL, n);
}

static void solver_step(sn_parallel *pool, const sn_solver_config *c, int64_t step,
			sn_net *net, sn_train_state *s)
{
	if (c->clip_norm > 0) {
		sn_solver_step(c, step, net->param, net->grad, s->m1, s->m2, net->nparam);
		return;
	}
	solver_job j = {c, step, net, s};
	sn_parallel_for(pool, (int64_t)((net->nparam + WEIGHTS - 1) / WEIGHTS), solver_unit, &j);
}

static int train_steps(sn_model *m, const sn_data *d, const sn_solver_config *c,
		       const sn_train_options *o, sn_train_state *s, batch_buffers *bb,
		       sn_train_result *r)
{
	sn_net *net = m->net;
	const int B = c->batch;
	double t0 = now_seconds(), loss_sum = 0;
	int err;
	for (int64_t i = 0; i < o->iters; i++) {
		if (i > 0 && o->time_limit > 0 && now_seconds() - t0 >= o->time_limit)
			break;
		int64_t step = o->first_step + i;
		double loss = 0;
		if ((err = next_batch(s, bb, d->n, B)))
			return err;
		gather_batch(m->pool, d, bb->idx, B, bb->x, bb->y);
		if (c->crop_pad || c->mirror)
			sn_train_augment(bb->x, B, &d->shape, c->crop_pad, (int)c->mirror, bb->pad,
					 bb->example, &s->rng);
		if ((err = sn_model_forward(m, bb->x, bb->y, B, 1, &s->rng, &loss)))
			return err == SN_ENONFINITE ? nonfinite_at(step + 1) : err;
		if (!isfinite(loss)) {
			sn_fail(SN_ENONFINITE, "non-finite loss");
			return nonfinite_at(step + 1);
		}
		sn_model_backward(m, B);
		solver_step(m->pool, c, step, net, s);
		s->step++;
		r->steps++;
		loss_sum += loss;
		r->seconds = now_seconds() - t0;
		if (o->progress)
			o->progress(o->progress_ctx, r->steps, loss_sum / (double)r->steps,
				    r->seconds > 0 ? (double)(r->steps * B) / r->seconds : 0);
	}
	if (__builtin_mul_overflow(r->steps, (int64_t)B, &r->examples))
		return sn_fail(SN_EINVAL, "%" PRId64 " steps of %d examples overflow a counter",
			       r->steps, B);
	r->loss = loss_sum / (double)r->steps;
	r->seconds = now_seconds() - t0;
	return check_weights_finite(net, o->first_step + r->steps);
}

int sn_train_run(sn_model *m, const sn_data *d, const sn_solver_config *c,
		 const sn_train_options *o, sn_train_state *s, sn_train_result *r)
{
	batch_buffers bb = {.perm_epoch = -1};
	int err;
	memset(r, 0, sizeof *r);
	if (o->iters < 1)
		return sn_fail(SN_EINVAL, "iterations must be at least 1");
	if ((err = check_run_args(m, d, c, s)) ||
	    (err = sn_train_check_steps(o->first_step, o->iters, "weights metadata steps")) ||
	    (err = sn_train_check_steps(s->step, o->iters, "state step")))
		return err;
	int64_t in = sn_shape_size(&d->shape);
	bb.perm = malloc((size_t)d->n * sizeof *bb.perm);
	bb.idx = malloc((size_t)c->batch * sizeof *bb.idx);
	bb.x = malloc((size_t)c->batch * (size_t)in * sizeof *bb.x);
	bb.y = malloc((size_t)c->batch * sizeof *bb.y);
	bb.example = malloc((size_t)in * sizeof *bb.example);
	bb.pad = malloc((size_t)d->shape.d[0] * sizeof *bb.pad);
	if (!bb.perm || !bb.idx || !bb.x || !bb.y || !bb.example || !bb.pad) {
		err = sn_fail(SN_ENOMEM, "out of memory for batches of %d", c->batch);
		goto out;
	}
	pad_values(d, bb.pad);
	err = train_steps(m, d, c, o, s, &bb, r);
out:
	free(bb.example);
	free(bb.pad);
	free(bb.perm);
	free(bb.idx);
	free(bb.x);
	free(bb.y);
	return err;
}

int sn_train_weights_st(const sn_net *net, sn_st *st, int64_t round, int64_t steps,
			const sn_train_result *r)
{
	char buf[64];
	int err;
	if ((err = sn_net_to_st(net, st)) ||
	    (err = set_meta_i64(st, "round", round)) ||
	    (err = set_meta_i64(st, "steps", steps)) ||
	    (err = set_meta_i64(st, "examples", r->examples)))
		return err;
	snprintf(buf, sizeof buf, "%.9g", r->loss);
	if ((err = sn_st_set_meta(st, "loss", buf)))
		return err;
	snprintf(buf, sizeof buf, "%.3f", r->seconds);
	return sn_st_set_meta(st, "seconds", buf);
}

void sn_train_profile(const sn_model *m, int64_t steps, int batch,
		      sn_train_layer_profile *rows)
{
	const sn_net *net = m->net;
	double total = 0;
	for (int i = 0; i < net->nlayers; i++)
		total += m->seconds_forward[i] + m->seconds_backward[i];
	for (int i = 0; i < net->nlayers; i++) {
		const sn_layer *l = &net->layers[i];
		double f = m->seconds_forward[i], b = m->seconds_backward[i];
		double flops = (double)(l->flops_forward + l->flops_backward) *
			       (double)batch * (double)steps;
		rows[i].name = l->name;
		rows[i].kind = l->kind->name;
		rows[i].forward_ms = steps > 0 ? f * 1e3 / (double)steps : 0;
		rows[i].backward_ms = steps > 0 ? b * 1e3 / (double)steps : 0;
		rows[i].share = total > 0 ? 100 * (f + b) / total : 0;
		rows[i].gflops = f + b > 0 ? flops / (f + b) * 1e-9 : 0;
	}
}

/* ---- evaluation ------------------------------------------------------ */

int sn_eval_init(sn_eval *e, int classes, int k, int keep_predictions)
{
	memset(e, 0, sizeof *e);
	if (classes < 1)
		return sn_fail(SN_EINVAL, "a net with %d classes cannot be evaluated", classes);
	e->classes = classes;
	e->k = k < 1 ? 1 : (k > classes ? classes : k);
	e->keep_predictions = keep_predictions;
	e->confusion = calloc((size_t)classes * (size_t)classes, sizeof *e->confusion);
	if (!e->confusion)
		return sn_fail(SN_ENOMEM, "out of memory for a %d-class confusion matrix", classes);
	return 0;
}

void sn_eval_free(sn_eval *e)
{
	free(e->confusion);
	free(e->label);
	free(e->predicted);
	free(e->prob);
	memset(e, 0, sizeof *e);
}

static int eval_reserve(sn_eval *e, size_t need)
{
	if (!e->keep_predictions || need <= e->cap)
		return 0;
	size_t cap = e->cap ? e->cap : 1024;
	while (cap < need)
		cap *= 2;
	int32_t *l = realloc(e->label, cap * sizeof *l);
	if (l)
		e->label = l;
	int32_t *p = realloc(e->predicted, cap * sizeof *p);
	if (p)
		e->predicted = p;
	float *q = realloc(e->prob, cap * sizeof *q);
	if (q)
		e->prob = q;
	if (!l || !p || !q)
		return sn_fail(SN_ENOMEM, "out of memory for %zu predictions", need);
	e->cap = cap;
	return 0;
}

/* Top-1 is the first largest probability; the label is within the top k
 * when fewer than k classes rank above it under that same tie rule. */
static void eval_example(sn_eval *e, const float *p, int label)
{
	int best = 0, above = 0;
	for (int j = 1; j < e->classes; j++)
		if (p[j] > p[best])
			best = j;
	for (int j = 0; j < e->classes; j++)
		if (p[j] > p[label] || (p[j] == p[label] && j < label))
			above++;
	e->correct += best == label;
	e->correct_k += above < e->k;
	e->confusion[(size_t)label * (size_t)e->classes + (size_t)best]++;
	if (e->keep_predictions) {
		e->label[e->n] = label;
		e->predicted[e->n] = best;
		e->prob[e->n] = p[best];
	}
	e->n++;
}

static int eval_batches(sn_model *m, const sn_data *d, sn_eval *e, int64_t *idx,
			float *x, int32_t *y)
{
	const int B = m->max_batch;
	for (int64_t start = 0; start < d->n; start += B) {
		int b = (int)(d->n - start < B ? d->n - start : B);
		double loss = 0;
		int err;
		for (int i = 0; i < b; i++)
			idx[i] = start + i;
		gather_batch(m->pool, d, idx, b, x, y);
		if ((err = eval_reserve(e, (size_t)(e->n + b))))
			return err;
		if ((err = sn_model_forward(m, x, y, b, 0, NULL, &loss))) {
			if (err != SN_ENONFINITE)
				return err;
			char what[400];
			snprintf(what, sizeof what, "%s", sn_errdetail());
			return sn_fail(err, "examples %" PRId64 "..%" PRId64 ": %s",
				       start, start + b - 1, what);
		}
		const float *probs = sn_model_probs(m);
		for (int i = 0; i < b; i++)
			eval_example(e, probs + (size_t)i * (size_t)e->classes, y[i]);
		e->loss_sum += loss * b;
	}
	return 0;
}

int sn_eval_add(sn_model *m, const sn_data *d, sn_eval *e)
{
	int err;
	if (m->net->classes != e->classes)
		return sn_fail(SN_EINVAL, "evaluation set up for %d classes, the net has %d",
			       e->classes, m->net->classes);
	if ((err = sn_train_check_data(m->net, d)))
		return err;
	int64_t in = sn_shape_size(&d->shape);
	size_t B = (size_t)m->max_batch;
	int64_t *idx = malloc(B * sizeof *idx);
	float *x = malloc(B * (size_t)in * sizeof *x);
	int32_t *y = malloc(B * sizeof *y);
	if (!idx || !x || !y)
		err = sn_fail(SN_ENOMEM, "out of memory for batches of %zu", B);
	else
		err = eval_batches(m, d, e, idx, x, y);
	free(idx);
	free(x);
	free(y);
	return err;
}

static int write_prediction_lines(const sn_eval *e, int fd)
{
	char buf[1 << 16];
	size_t len = (size_t)snprintf(buf, sizeof buf, "index\tlabel\tpredicted\tprobability\n");
	int err;
	for (int64_t i = 0; i < e->n; i++) {
		if (len > sizeof buf - 128) {
			if ((err = sn_write_all(fd, buf, len)))
				return err;
			len = 0;
		}
		len += (size_t)snprintf(buf + len, sizeof buf - len, "%" PRId64 "\t%d\t%d\t%.6f\n",
					i, e->label[i], e->predicted[i], e->prob[i]);
	}
	return sn_write_all(fd, buf, len);
}

int sn_eval_write_predictions(const sn_eval *e, const char *path)
{
	sn_atomic a;
	int err;
	if (!e->keep_predictions)
		return sn_fail(SN_EINVAL, "predictions were not kept");
	if ((err = sn_atomic_open(&a, path)))
		return err;
	if ((err = write_prediction_lines(e, a.fd))) {
		sn_atomic_abort(&a);
		return err;
	}
	return sn_atomic_commit(&a);
}

int sn_eval_class_names(const sn_data *d, int classes, char ***names)
{
	const char *text = sn_st_meta(&d->st, "class_names");
	json_t *root = NULL;
	*names = NULL;
	if (!text || !(root = json_loads(text, 0, NULL)))
		return 0;
	if (!json_is_array(root) || json_array_size(root) != (size_t)classes)
		goto out;
	for (int i = 0; i < classes; i++)
		if (!json_is_string(json_array_get(root, (size_t)i)))
			goto out;
	char **v = calloc((size_t)classes, sizeof *v);
	if (!v) {
		json_decref(root);
		return sn_fail(SN_ENOMEM, "out of memory for class names");
	}
	for (int i = 0; i < classes; i++)
		if (!(v[i] = strdup(json_string_value(json_array_get(root, (size_t)i))))) {
			sn_eval_class_names_free(v, classes);
			json_decref(root);
			return sn_fail(SN_ENOMEM, "out of memory for class names");
		}
	*names = v;
out:
	json_decref(root);
	return 0;
}

void sn_eval_class_names_free(char **names, int classes)
{
	if (!names)
		return;
	for (int i = 0; i < classes; i++)
		free(names[i]);
	free(names);
}
