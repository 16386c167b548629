/* model.c: runs a net's layers over a batch.  Every activation and its
 * gradient has its own buffer sized for max_batch, so backward can read
 * any layer's input and output; the layers' temporary space is one shared
 * scratch buffer, sized for the hungriest layer.  Layers run in file order,
 * which is an order of the graph since inputs name earlier layers only. */
#include "model.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Floats of one activation: act[0] is the net input, act[i+1] layer i's output. */
static int64_t act_size(const sn_net *net, int i)
{
	return i == 0 ? sn_shape_size(&net->input) : sn_shape_size(&net->layers[i - 1].out);
}

int sn_model_cache_batch(const sn_net *net, int batch)
{
	const int64_t cache_floats = (INT64_C(4) << 20) / (int64_t)sizeof(float), least = 16;
	int64_t widest = 1;
	for (int i = 0; i <= net->nlayers; i++)
		if (act_size(net, i) > widest)
			widest = act_size(net, i);
	int64_t fit = cache_floats / widest;
	if (fit < least)
		fit = least;
	return fit < batch ? (int)fit : batch;
}

/* n * B floats, or -1 when that is not a sane allocation size. */
static int64_t batch_floats(int64_t n, int64_t fixed, int B)
{
	const int64_t limit = (int64_t)(SIZE_MAX / sizeof(float) / 2);
	if (n < 0 || fixed < 0 || (n > 0 && B > limit / n) || n * B > limit - fixed)
		return -1;
	return n * B + fixed;
}

static int alloc_floats(float **p, int64_t n)
{
	*p = calloc(n > 0 ? (size_t)n : 1, sizeof **p);
	return *p ? 0 : sn_fail(SN_ENOMEM, "cannot allocate %lld floats", (long long)n);
}

static int alloc_activations(sn_model *m)
{
	const sn_net *net = m->net;
	const int n = net->nlayers;
	int err;
	m->act = calloc((size_t)n + 1, sizeof *m->act);
	m->dact = calloc((size_t)n + 1, sizeof *m->dact);
	if (!m->act || !m->dact)
		return sn_fail(SN_ENOMEM, "cannot allocate the activation table");
	for (int i = 0; i <= n; i++) {
		/* BLAS takes dimensions such as batch x features as int */
		int64_t size = batch_floats(act_size(net, i), 0, m->max_batch);
		if (size < 0 || size > INT32_MAX)
			return sn_fail(SN_EINVAL, "batch %d too large for the %s of %s",
				       m->max_batch, i ? "output" : "input",
				       i ? net->layers[i - 1].name : "the net");
		if ((err = alloc_floats(&m->act[i], size)))
			return err;
		if (i > 0 && (err = alloc_floats(&m->dact[i], size)))
			return err;
	}
	return 0;
}

/* Which activations sum several gradients, which layers reach the loss,
 * and the buffer a one-input layer's share goes to before it is added. */
static int plan_gradients(sn_model *m)
{
	const sn_net *net = m->net;
	const int n = net->nlayers;
	int *readers = calloc((size_t)n + 1, sizeof *readers);
	m->summed = calloc((size_t)n + 1, 1);
	m->live = calloc((size_t)n, 1);
	if (!readers || !m->summed || !m->live) {
		free(readers);
		return sn_fail(SN_ENOMEM, "cannot allocate the gradient plan");
	}
	m->live[n - 1] = 1;
	for (int i = n - 1; i >= 0; i--) {
		const sn_layer *l = &net->layers[i];
		if (!m->live[i])
			continue;
		for (int k = 0; k < l->ninputs; k++) {
			const int a = l->input[k];
			if (a > 0)
				m->live[a - 1] = 1;
			if (++readers[a] > 1 || l->kind->forward_join)
				m->summed[a] = 1;
		}
	}
	int64_t share = 0;
	for (int i = 0; i < n; i++) {
		const sn_layer *l = &net->layers[i];
		if (m->live[i] && !l->kind->forward_join && l->input[0] > 0 &&
		    m->summed[l->input[0]] && act_size(net, l->input[0]) > share)
			share = act_size(net, l->input[0]);
	}
	free(readers);
	return share ? alloc_floats(&m->dshare, share * m->max_batch) : 0;
}

/* Which layers evaluation folds into the layer before them: a batchnorm,
 * then a relu, each the only reader of the output before it, as far as the
 * first layer takes them (a conv both, an add a relu). */
static int plan_folding(sn_model *m)
{
	const sn_net *net = m->net;
	const int n = net->nlayers;
	int *readers = calloc((size_t)n + 1, sizeof *readers);
	m->folded = calloc((size_t)n, 1);
	int64_t channels = 0;
	if (!readers || !m->folded) {
		free(readers);
		return sn_fail(SN_ENOMEM, "cannot allocate the folding plan");
	}
	for (int i = 0; i < n; i++)
		for (int k = 0; k < net->layers[i].ninputs; k++)
			readers[net->layers[i].input[k]]++;
	for (int i = 0; i < n; i++) {
		const unsigned takes = net->layers[i].kind->takes_epilogue;
		int end = i, parts = 0;   /* the chain's last layer, the parts folded */
		while (takes && end + 1 < n) {
			const sn_layer *next = &net->layers[end + 1];
			const int part = next->kind->epilogue_part;
			if (next->kind->forward_join || next->input[0] != end + 1 ||
			    readers[end + 1] != 1 || !part || part <= parts ||
			    !(takes & (1u << part)))
				break;
			parts = part;
			if (part == SN_EPILOGUE_BATCHNORM && next->in.d[0] > channels)
				channels = next->in.d[0];
			end++;
		}
		m->folded[i] = (unsigned char)(end - i);
		i = end;
	}
	free(readers);
	m->fuse = 1;
	return alloc_floats(&m->coef, 2 * channels);
}

/* Layer i's forward, or in evaluation, with the layers folded into it,
 * writing the last one's output; returns the layers run. */
static int forward_layer(sn_model *m, int i, int B, sn_pass *p, int fold)
{
	sn_layer *l = &m->net->layers[i];
	const int folded = fold ? m->folded[i] : 0;
	sn_epilogue e = {0};
	for (int j = i + 1; j <= i + folded; j++) {
		const sn_layer *f = &m->net->layers[j];
		if (f->kind->epilogue_part == SN_EPILOGUE_RELU) {
			e.relu = 1;
			continue;
		}
		sn_batchnorm_eval_coefficients(f, m->coef, m->coef + f->in.d[0]);
		e.mean = m->coef, e.invstd = m->coef + f->in.d[0];
		e.gamma = f->w[0], e.beta = f->w[1];
	}
	p->epilogue = folded ? &e : NULL;
	if (l->kind->forward_join) {
		const float *in[SN_MAX_INPUTS];
		for (int k = 0; k < l->ninputs; k++)
			in[k] = m->act[l->input[k]];
		l->kind->forward_join(l, in, m->act[i + 1 + folded], B, p);
	} else {
		l->kind->forward(l, m->act[l->input[0]], m->act[i + 1 + folded], B, p);
	}
	p->epilogue = NULL;
	return 1 + folded;
}

static int alloc_workspaces(sn_model *m)
{
	sn_net *net = m->net;
	int64_t scratch = 0, saved = 0;
	for (int i = 0; i < net->nlayers; i++) {
		const sn_layer *l = &net->layers[i];
		int64_t s = batch_floats(l->scratch_per_example, l->scratch_fixed, m->max_batch);
		int64_t v = batch_floats(l->saved_per_example, l->saved_fixed, m->max_batch);
		if (s < 0 || v < 0 || v > INT64_MAX / 2 - saved)
			return sn_fail(SN_ENOMEM, "workspace of layer %s too large for batch %d",
				       l->name, m->max_batch);
		scratch = s > scratch ? s : scratch;
		saved += v;
	}
	/* whole cache lines apart, so every thread's area is aligned alike */
	m->scratch_stride = (scratch + 15) / 16 * 16;
	const int threads = sn_parallel_threads(m->pool);
	if (m->scratch_stride > INT64_MAX / 2 / threads)
		return sn_fail(SN_ENOMEM, "scratch too large for %d threads", threads);
	int err;
	free(m->scratch);
	free(m->saved);
	m->scratch = m->saved = NULL;
	if ((err = alloc_floats(&m->scratch, m->scratch_stride * threads)) ||
	    (err = alloc_floats(&m->saved, saved)))
		return err;
	return 0;
}

int sn_model_use_pool(sn_model *m, sn_parallel *pool)
{
	m->pool = pool;
	return alloc_workspaces(m);
}

/* Point each layer's saved area into this model's buffer.  Done before
 * every pass, not once, so two models over one net (say, a training and an
 * evaluation batch size) never run on each other's buffers. */
static void bind_saved(sn_model *m)
{
	float *at = m->saved;
	for (int i = 0; i < m->net->nlayers; i++) {
		sn_layer *l = &m->net->layers[i];
		int64_t v = batch_floats(l->saved_per_example, l->saved_fixed, m->max_batch);
		l->saved = v > 0 ? at : NULL;
		at += v;
	}
}

int sn_model_init(sn_model *m, sn_net *net, int max_batch)
{
	int err;
	memset(m, 0, sizeof *m);
	if (max_batch < 1)
		return sn_fail(SN_EINVAL, "batch size %d must be positive", max_batch);
	if (net->nlayers < 1)
		return sn_fail(SN_ENET, "net %s has no layers", net->name ? net->name : "");
	m->net = net;
	m->max_batch = max_batch;
	m->seconds_forward = calloc((size_t)net->nlayers, sizeof *m->seconds_forward);
	m->seconds_backward = calloc((size_t)net->nlayers, sizeof *m->seconds_backward);
	if (!m->seconds_forward || !m->seconds_backward) {
		err = sn_fail(SN_ENOMEM, "cannot allocate the profile");
		goto fail;
	}
	if ((err = alloc_activations(m)) || (err = alloc_workspaces(m)) ||
	    (err = plan_gradients(m)) || (err = plan_folding(m)))
		goto fail;
	return 0;
fail:
	sn_model_free(m);
	return err;
}

void sn_model_free(sn_model *m)
{
	if (m->act && m->net)
		for (int i = 0; i <= m->net->nlayers; i++)
			free(m->act[i]);
	if (m->dact && m->net)
		for (int i = 0; i <= m->net->nlayers; i++)
			free(m->dact[i]);
	free(m->act);
	free(m->dact);
	free(m->scratch);
	free(m->saved);
	free(m->summed);
	free(m->live);
	free(m->dshare);
	free(m->folded);
	free(m->coef);
	free(m->seconds_forward);
	free(m->seconds_backward);
	memset(m, 0, sizeof *m);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int all_finite(const float *x, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		if (!isfinite(x[i]))
			return 0;
	return 1;
}

/* Name the first layer whose output went non-finite. */
static int nonfinite(const sn_model *m, int B)
{
	const sn_net *net = m->net;
	for (int i = 0; i < net->nlayers; i++)
		if (!all_finite(m->act[i + 1], act_size(net, i + 1) * B))
			return sn_fail(SN_ENONFINITE, "non-finite output in layer %s",
				       net->layers[i].name);
	return sn_fail(SN_ENONFINITE, "non-finite loss");
}

int sn_model_forward(sn_model *m, const float *x, const int32_t *y, int B,
		     int training, sn_rng *rng, double *loss)
{
	sn_net *net = m->net;
	const int n = net->nlayers;
	if (B < 1 || B > m->max_batch)
		return sn_fail(SN_EINVAL, "batch of %d outside 1..%d", B, m->max_batch);
	memcpy(m->act[0], x, (size_t)(act_size(net, 0) * B) * sizeof *x);
	bind_saved(m);
	sn_pass p = {.training = training, .rng = rng, .scratch = m->scratch,
		     .scratch_stride = m->scratch_stride, .pool = m->pool, .labels = y};
	const int fold = !training && m->fuse;
	for (int i = 0; i < n;) {
		double t0 = m->profile ? now() : 0;
		const int ran = forward_layer(m, i, B, &p, fold);
		if (m->profile)
			m->seconds_forward[i] += now() - t0;
		i += ran;
	}
	const int has_loss = y && net->layers[n - 1].kind->is_loss;
	if (loss)
		*loss = has_loss ? p.loss : 0;
	if (has_loss ? !isfinite(p.loss) : !all_finite(m->act[n], act_size(net, n) * B)) {
		/* the folded layers' outputs were never written: run them all
		 * to name the first that went non-finite */
		for (int i = 0; fold && i < n; i++)
			forward_layer(m, i, B, &p, 0);
		return nonfinite(m, B);
	}
	return 0;
}

static void backward_join(sn_model *m, sn_layer *l, int i, int B, sn_pass *p)
{
	const float *in[SN_MAX_INPUTS];
	float *din[SN_MAX_INPUTS];
	for (int k = 0; k < l->ninputs; k++) {
		in[k] = m->act[l->input[k]];
		din[k] = l->input[k] ? m->dact[l->input[k]] : NULL;
	}
	l->kind->backward_join(l, in, m->act[i + 1], m->dact[i + 1], din, B, p);
}

/* A one-input layer overwrites din: where its input sums several shares,
 * it writes to dshare, added in here in reverse file order, a fixed order. */
static void backward_one(sn_model *m, sn_layer *l, int i, int B, sn_pass *p)
{
	const int a = l->input[0];
	float *din = a == 0 ? NULL : m->summed[a] ? m->dshare : m->dact[a];
	l->kind->backward(l, m->act[a], m->act[i + 1], m->dact[i + 1], din, B, p);
	if (a > 0 && m->summed[a])
		sn_add_into(m->pool, m->dact[a], m->dshare, act_size(m->net, a) * B);
}

void sn_model_backward(sn_model *m, int B)
{
	sn_net *net = m->net;
	if (B < 1 || B > m->max_batch)
		return;
	if (net->grad && net->nparam)
		memset(net->grad, 0, net->nparam * sizeof *net->grad);
	bind_saved(m);
	for (int a = 1; a <= net->nlayers; a++)
		if (m->summed[a])
			memset(m->dact[a], 0, (size_t)(act_size(net, a) * B) * sizeof(float));
	sn_pass p = {.training = 1, .scratch = m->scratch, .scratch_stride = m->scratch_stride,
		     .pool = m->pool};
	for (int i = net->nlayers - 1; i >= 0; i--) {
		sn_layer *l = &net->layers[i];
		if (!m->live[i])
			continue;
		double t0 = m->profile ? now() : 0;
		if (l->kind->forward_join)
			backward_join(m, l, i, B, &p);
		else
			backward_one(m, l, i, B, &p);
		if (m->profile)
			m->seconds_backward[i] += now() - t0;
	}
}

const float *sn_model_probs(const sn_model *m)
{
	return m->act[m->net->nlayers];
}
