/* solver.c: optimizer configuration, learning-rate policies and the updates.
 *
 * The update rules follow PyTorch's torch.optim (momentum buffers start at
 * zero, so the first step equals PyTorch's buf = g), and the lr policies
 * follow Caffe's SGDSolver::GetLearningRate. */
#include "solver.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const solver_types[] = {
	"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", NULL
};
static const char *const lr_policies[] = {
	"fixed", "step", "multistep", "exp", "inv", "poly", "cosine", NULL
};

void sn_solver_config_default(sn_solver_config *c)
{
	memset(c, 0, sizeof *c);
	strcpy(c->type, "sgd");
	c->lr = 0.01;
	c->momentum = 0.9;
	c->beta1 = 0.9;
	c->beta2 = 0.999;
	c->eps = 1e-8;
	c->rms_decay = 0.99;
	c->batch = 64;
	strcpy(c->lr_policy, "fixed");
	c->gamma = 0.1;
	c->power = 1.0;
}

static int in_list(const char *const *list, const char *s)
{
	for (int i = 0; list[i]; i++)
		if (strcmp(list[i], s) == 0)
			return 1;
	return 0;
}

static int parse_double(const char *key, const char *s, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !isfinite(v))
		return sn_fail(SN_EINVAL, "%s: invalid number \"%s\"", key, s);
	*out = v;
	return 0;
}

static int parse_int(const char *key, const char *s, int64_t min, int64_t *out)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || end == s || *end || v < min)
		return sn_fail(SN_EINVAL, "%s: invalid integer \"%s\" (expected >= %lld)",
			       key, s, (long long)min);
	*out = v;
	return 0;
}

static int parse_name(const char *key, const char *s, const char *const *list,
		      char *out, size_t cap)
{
	if (!in_list(list, s) || strlen(s) >= cap)
		return sn_fail(SN_EINVAL, "%s: unknown value \"%s\"", key, s);
	strcpy(out, s);
	return 0;
}

/* "1000,2000,3000": strictly increasing positive step numbers. */
int sn_solver_key_takes_list(const char *key)
{
	return strcmp(key, "multistep") == 0;
}

static int parse_multistep(sn_solver_config *c, const char *s)
{
	int64_t steps[SN_MAX_MULTISTEP];
	int n = 0;
	const char *p = s;
	for (;;) {
		char *end;
		errno = 0;
		long long v = strtoll(p, &end, 10);
		if (errno || end == p || v < 1 || (n && v <= steps[n - 1]))
			return sn_fail(SN_EINVAL, "multistep: invalid list \"%s\" "
				       "(expected increasing positive steps)", s);
		if (n == SN_MAX_MULTISTEP)
			return sn_fail(SN_EINVAL, "multistep: more than %d steps",
				       SN_MAX_MULTISTEP);
		steps[n++] = v;
		if (*end == 0)
			break;
		if (*end != ',')
			return sn_fail(SN_EINVAL, "multistep: invalid list \"%s\"", s);
		p = end + 1;
	}
	memcpy(c->multistep, steps, sizeof steps[0] * n);
	c->nmultistep = n;
	return 0;
}

int sn_solver_config_set(sn_solver_config *c, const char *key, const char *value)
{
	struct { const char *key; double *field; } doubles[] = {
		{"lr", &c->lr}, {"momentum", &c->momentum},
		{"weight_decay", &c->weight_decay}, {"beta1", &c->beta1},
		{"beta2", &c->beta2}, {"eps", &c->eps}, {"rms_decay", &c->rms_decay},
		{"clip_norm", &c->clip_norm}, {"gamma", &c->gamma},
		{"power", &c->power}, {"lr_min", &c->lr_min},
	};
	struct { const char *key; int64_t *field; int64_t min; } ints[] = {
		{"step_size", &c->step_size, 1}, {"max_steps", &c->max_steps, 1},
		{"warmup", &c->warmup, 0}, {"crop_pad", &c->crop_pad, 0},
		{"mirror", &c->mirror, 0},
	};
	for (size_t i = 0; i < sizeof doubles / sizeof doubles[0]; i++)
		if (strcmp(key, doubles[i].key) == 0)
			return parse_double(key, value, doubles[i].field);
	for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
		if (strcmp(key, ints[i].key) == 0)
			return parse_int(key, value, ints[i].min, ints[i].field);
	if (strcmp(key, "batch") == 0) {
		int64_t b;
		int err = parse_int(key, value, 1, &b);
		if (err)
			return err;
		if (b > (1 << 24))
			return sn_fail(SN_EINVAL, "batch: %s is too large", value);
		c->batch = (int)b;
		return 0;
	}
	if (strcmp(key, "type") == 0)
		return parse_name(key, value, solver_types, c->type, sizeof c->type);
	if (strcmp(key, "lr_policy") == 0)
		return parse_name(key, value, lr_policies, c->lr_policy, sizeof c->lr_policy);
	if (strcmp(key, "multistep") == 0)
		return parse_multistep(c, value);
	return sn_fail(SN_EINVAL, "unknown solver key \"%s\"", key);
}

static int check_range(const char *key, double v, double lo, double hi, int hi_open)
{
	if (!isfinite(v) || v < lo || v > hi || (hi_open && v == hi))
		return sn_fail(SN_EINVAL, "%s %g is out of range [%g, %g%s", key, v, lo, hi,
			       hi_open ? ")" : "]");
	return 0;
}

int sn_solver_config_check(const sn_solver_config *c)
{
	int err;
	if (!in_list(solver_types, c->type))
		return sn_fail(SN_EINVAL, "unknown solver type \"%s\"", c->type);
	if (!in_list(lr_policies, c->lr_policy))
		return sn_fail(SN_EINVAL, "unknown lr_policy \"%s\"", c->lr_policy);
	if (!(c->lr > 0) || !isfinite(c->lr))
		return sn_fail(SN_EINVAL, "lr must be positive (got %g)", c->lr);
	if ((err = check_range("momentum", c->momentum, 0, 1, 1)) ||
	    (err = check_range("weight_decay", c->weight_decay, 0, HUGE_VAL, 0)) ||
	    (err = check_range("beta1", c->beta1, 0, 1, 1)) ||
	    (err = check_range("beta2", c->beta2, 0, 1, 1)) ||
	    (err = check_range("rms_decay", c->rms_decay, 0, 1, 1)) ||
	    (err = check_range("clip_norm", c->clip_norm, 0, HUGE_VAL, 0)) ||
	    (err = check_range("lr_min", c->lr_min, 0, c->lr, 0)) ||
	    (err = check_range("gamma", c->gamma, 0, HUGE_VAL, 0)) ||
	    (err = check_range("power", c->power, 0, HUGE_VAL, 0)))
		return err;
	if (!(c->eps > 0) || !isfinite(c->eps))
		return sn_fail(SN_EINVAL, "eps must be positive (got %g)", c->eps);
	if (c->batch < 1)
		return sn_fail(SN_EINVAL, "batch must be at least 1 (got %d)", c->batch);
	if (c->warmup < 0)
		return sn_fail(SN_EINVAL, "warmup must not be negative");
	if (c->crop_pad < 0 || c->crop_pad > SN_MAX_CROP_PAD)
		return sn_fail(SN_EINVAL, "crop_pad %lld is out of range [0, %d]",
			       (long long)c->crop_pad, SN_MAX_CROP_PAD);
	if (c->mirror != 0 && c->mirror != 1)
		return sn_fail(SN_EINVAL, "mirror must be 0 or 1 (got %lld)", (long long)c->mirror);
	if (strcmp(c->lr_policy, "step") == 0 && c->step_size < 1)
		return sn_fail(SN_EINVAL, "lr_policy step needs step_size");
	if (strcmp(c->lr_policy, "multistep") == 0 && c->nmultistep < 1)
		return sn_fail(SN_EINVAL, "lr_policy multistep needs multistep steps");
	if ((strcmp(c->lr_policy, "poly") == 0 || strcmp(c->lr_policy, "cosine") == 0) &&
	    c->max_steps < 1)
		return sn_fail(SN_EINVAL, "lr_policy %s needs max_steps", c->lr_policy);
	return 0;
}

static double policy_lr(const sn_solver_config *c, int64_t step)
{
	const char *p = c->lr_policy;
	if (strcmp(p, "step") == 0)
		return c->lr * pow(c->gamma, (double)(step / c->step_size));
	if (strcmp(p, "multistep") == 0) {
		int passed = 0;
		while (passed < c->nmultistep && step >= c->multistep[passed])
			passed++;
		return c->lr * pow(c->gamma, passed);
	}
	if (strcmp(p, "exp") == 0)
		return c->lr * pow(c->gamma, (double)step);
	if (strcmp(p, "inv") == 0)
		return c->lr * pow(1.0 + c->gamma * (double)step, -c->power);
	if (strcmp(p, "poly") == 0) {
		/* Past the horizon the base would go negative: hold at 0. */
		double t = step >= c->max_steps ? 1.0 : (double)step / (double)c->max_steps;
		return c->lr * pow(1.0 - t, c->power);
	}
	if (strcmp(p, "cosine") == 0) {
		double t = step >= c->max_steps ? 1.0 : (double)step / (double)c->max_steps;
		return c->lr_min + (c->lr - c->lr_min) * (1.0 + cos(M_PI * t)) / 2.0;
	}
	return c->lr;
}

double sn_solver_lr(const sn_solver_config *c, int64_t step)
{
	if (step < 0)
		step = 0;
	double lr = policy_lr(c, step);
	if (step < c->warmup)
		lr *= (double)(step + 1) / (double)c->warmup;
	return lr;
}

int sn_solver_nbuffers(const sn_solver_config *c)
{
	if (strcmp(c->type, "adam") == 0 || strcmp(c->type, "adamw") == 0)
		return 2;
	if (strcmp(c->type, "sgd") == 0)
		return 0;
	return 1;
}

double sn_grad_norm(const float *g, size_t n)
{
	double s = 0;
	for (size_t i = 0; i < n; i++)
		s += (double)g[i] * g[i];
	return sqrt(s);
}

/* GCC 12 at -O2 vectorises only loops whose trip count it knows; these
 * elementwise loops (no reductions, so bit-identical results) are worth its
 * full vectoriser: about 3x on SGD and momentum. */
#if defined(__GNUC__) && !defined(__clang__)
#define VECTORIZE __attribute__((optimize("tree-vectorize", "vect-cost-model=dynamic")))
#else
#define VECTORIZE
#endif

VECTORIZE static void scale(float *g, float k, size_t n)
{
	for (size_t i = 0; i < n; i++)
		g[i] *= k;
}

VECTORIZE static void add_decay(float *restrict g, const float *restrict w, float wd, size_t n)
{
	for (size_t i = 0; i < n; i++)
		g[i] += wd * w[i];
}

VECTORIZE static void update_sgd(float *restrict w, const float *restrict g, float lr, size_t n)
{
	for (size_t i = 0; i < n; i++)
		w[i] -= lr * g[i];
}

VECTORIZE static void update_momentum(float *restrict w, const float *restrict g, float *restrict m,
			    float lr, float mu, int nesterov, size_t n)
{
	if (nesterov) {
		for (size_t i = 0; i < n; i++) {
			m[i] = mu * m[i] + g[i];
			w[i] -= lr * (g[i] + mu * m[i]);
		}
	} else {
		for (size_t i = 0; i < n; i++) {
			m[i] = mu * m[i] + g[i];
			w[i] -= lr * m[i];
		}
	}
}

VECTORIZE static void update_adagrad(float *restrict w, const float *restrict g, float *restrict s,
			   float lr, float eps, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		s[i] += g[i] * g[i];
		w[i] -= lr * g[i] / (sqrtf(s[i]) + eps);
	}
}

VECTORIZE static void update_rmsprop(float *restrict w, const float *restrict g, float *restrict v,
			   float lr, float alpha, float eps, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		v[i] = alpha * v[i] + (1.0f - alpha) * g[i] * g[i];
		w[i] -= lr * g[i] / (sqrtf(v[i]) + eps);
	}
}

/* PyTorch's form: w -= (lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps). */
VECTORIZE static void update_adam(const sn_solver_config *c, int64_t step, float lr,
			float *restrict w, const float *restrict g, float *restrict m,
			float *restrict v, size_t n)
{
	double t = (double)step + 1.0;
	float b1 = (float)c->beta1, b2 = (float)c->beta2, eps = (float)c->eps;
	float step_size = (float)(lr / (1.0 - pow(c->beta1, t)));
	float inv_sqrt_bc2 = (float)(1.0 / sqrt(1.0 - pow(c->beta2, t)));
	for (size_t i = 0; i < n; i++) {
		m[i] = b1 * m[i] + (1.0f - b1) * g[i];
		v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
		w[i] -= step_size * m[i] / (sqrtf(v[i]) * inv_sqrt_bc2 + eps);
	}
}

void sn_solver_step(const sn_solver_config *c, int64_t step, float *w, float *g,
		    float *m1, float *m2, size_t n)
{
	double lr = sn_solver_lr(c, step);
	int adamw = strcmp(c->type, "adamw") == 0;
	if (c->clip_norm > 0) {
		/* torch.nn.utils.clip_grad_norm_: scale by max/(norm+1e-6) when above. */
		double norm = sn_grad_norm(g, n);
		if (norm > c->clip_norm)
			scale(g, (float)(c->clip_norm / (norm + 1e-6)), n);
	}
	if (c->weight_decay > 0) {
		if (adamw)
			scale(w, (float)(1.0 - lr * c->weight_decay), n);
		else
			add_decay(g, w, (float)c->weight_decay, n);
	}
	const char *t = c->type;
	if (strcmp(t, "momentum") == 0 || strcmp(t, "nesterov") == 0)
		update_momentum(w, g, m1, (float)lr, (float)c->momentum,
				strcmp(t, "nesterov") == 0, n);
	else if (strcmp(t, "adagrad") == 0)
		update_adagrad(w, g, m1, (float)lr, (float)c->eps, n);
	else if (strcmp(t, "rmsprop") == 0)
		update_rmsprop(w, g, m1, (float)lr, (float)c->rms_decay, (float)c->eps, n);
	else if (adamw || strcmp(t, "adam") == 0)
		update_adam(c, step, (float)lr, w, g, m1, m2, n);
	else
		update_sgd(w, g, (float)lr, n);
}
