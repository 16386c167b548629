#include "delta.h"

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Decoding must give the same bits everywhere (see delta.h): plain float32
 * operations, each rounded once.  C11's FLT_EVAL_METHOD tells us the float
 * operations really are float32 ones (not x87 extended precision).  The
 * multiply (decode_at) and the add (reconstruct_at) are separate statements,
 * so even a compiler that contracts within an expression (clang's default)
 * cannot fuse them; GCC in -std=c11 contracts nothing. */
#if !defined(FLT_EVAL_METHOD) || FLT_EVAL_METHOD != 0
#error "sn's delta decoding needs float arithmetic in float32 (FLT_EVAL_METHOD 0)"
#endif

static const char *const scheme_names[SN_DELTA_SCHEMES] = {"none", "bf16", "int8", "int4"};

/* The largest code of the symmetric int8 and int4 grids; -128 and -8 are
 * never written, so a file holding them is corrupt. */
static const int scheme_qmax[SN_DELTA_SCHEMES] = {0, 0, 127, 7};

/* The dtype of a weight's entry (its codes) in each scheme. */
static const sn_dtype code_dtype[SN_DELTA_SCHEMES] = {SN_U32, SN_BF16, SN_I8, SN_U8};

const char *sn_delta_scheme_name(sn_delta_scheme s)
{
	return (unsigned)s < SN_DELTA_SCHEMES ? scheme_names[s] : "?";
}

int sn_delta_scheme_parse(const char *name, sn_delta_scheme *s)
{
	for (int i = 0; i < SN_DELTA_SCHEMES; i++)
		if (strcmp(name, scheme_names[i]) == 0) {
			*s = (sn_delta_scheme)i;
			return 0;
		}
	return sn_fail(SN_EINVAL, "unknown scheme \"%s\" (none, bf16, int8 or int4)", name);
}

void sn_delta_opts_default(sn_delta_opts *o)
{
	memset(o, 0, sizeof *o);
	o->scheme = SN_DELTA_NONE;
	o->block = SN_DELTA_BLOCK_DEFAULT;
}

int sn_delta_is_delta(const sn_st *st)
{
	const char *f = sn_st_meta(st, "format");
	return f && strcmp(f, "sn.delta.v1") == 0;
}

static int is_blocked(sn_delta_scheme s)
{
	return s == SN_DELTA_INT8 || s == SN_DELTA_INT4;
}

/* ---------------------------------------------------------------- small helpers */

static float load_f32(const void *p, int64_t i)
{
	float v;
	memcpy(&v, (const char *)p + 4 * i, 4);
	return v;
}

static uint32_t f32_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return u;
}

static float bits_f32(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

static int64_t div_up(int64_t a, int64_t b)
{
	return a / b + (a % b != 0);
}

/* Append a tensor whose malloc'd data the file takes over. */
static int add_owned(sn_st *st, const char *name, sn_dtype dt, int ndim, const int64_t *shape,
		     void *data)
{
	int err = sn_st_add(st, name, dt, ndim, shape, data, 0);
	if (err) {
		free(data);
		return err;
	}
	st->tensors[st->ntensors - 1].data = data;
	st->tensors[st->ntensors - 1].owned = data != NULL;
	return 0;
}

static char *scale_name(const char *name)
{
	size_t n = strlen(name);
	char *s = malloc(n + sizeof ".scale");
	if (s) {
		memcpy(s, name, n);
		memcpy(s + n, ".scale", sizeof ".scale");
	}
	return s;
}

/* Parse a strictly decimal metadata integer in [lo, hi]. */
static int meta_int(const sn_st *st, const char *key, int64_t lo, int64_t hi, int64_t *v)
{
	const char *s = sn_st_meta(st, key);
	char *end;
	if (!s)
		return sn_fail(SN_EFORMAT, "no \"%s\" in the metadata", key);
	errno = 0;
	long long x = strtoll(s, &end, 10);
	if (errno || end == s || *end || x < lo || x > hi || s[0] == '+' || s[0] == ' ')
		return sn_fail(SN_EFORMAT, "metadata \"%s\" is \"%s\", not an integer in %" PRId64
			       "..%" PRId64, key, s, lo, hi);
	*v = x;
	return 0;
}

/* A weights-style file: F32 tensors only, at least one, all finite. */
static int check_weights(const sn_st *st, const char *what)
{
	if (st->ntensors == 0)
		return sn_fail(SN_EFORMAT, "%s has no tensors", what);
	for (int i = 0; i < st->ntensors; i++) {
		const sn_tensor *t = &st->tensors[i];
		if (t->dtype != SN_F32)
			return sn_fail(SN_EUNSUPPORTED, "%s: tensor \"%s\" is %s, expected F32", what,
				       t->name, sn_dtype_name(t->dtype));
		int64_t n = sn_tensor_numel(t);
		for (int64_t j = 0; j < n; j++)
			if (!isfinite(load_f32(t->data, j)))
				return sn_fail(SN_ENONFINITE, "%s: tensor \"%s\" has a non-finite value at %" PRId64,
					       what, t->name, j);
	}
	return 0;
}

static int same_shape(const sn_tensor *a, const sn_tensor *b)
{
	return a->ndim == b->ndim && memcmp(a->shape, b->shape, sizeof(int64_t) * (size_t)a->ndim) == 0;
}

/* other must hold exactly base's tensor names with the same shapes. */
static int check_same_tensors(const sn_st *base, const sn_st *other, const char *what)
{
	char a[128], b[128];
	for (int i = 0; i < base->ntensors; i++) {
		const sn_tensor *bt = &base->tensors[i], *t = sn_st_find(other, bt->name);
		if (!t)
			return sn_fail(SN_EMISMATCH, "%s has no tensor \"%s\" (the base has)", what, bt->name);
		if (!same_shape(bt, t))
			return sn_fail(SN_EMISMATCH, "%s: tensor \"%s\" has shape %s, the base's is %s", what,
				       bt->name, sn_shape_format(t->ndim, t->shape, a, sizeof a),
				       sn_shape_format(bt->ndim, bt->shape, b, sizeof b));
	}
	if (other->ntensors != base->ntensors)
		return sn_fail(SN_EMISMATCH, "%s has %d tensors, the base %d", what, other->ntensors,
			       base->ntensors);
	return 0;
}

/* apply writes BASE's net, so NEW must have the same one to come back as it was. */
static int check_same_net(const sn_st *base, const sn_st *nw)
{
	const char *a = sn_st_meta(base, "net"), *b = sn_st_meta(nw, "net");
	if (strcmp(a ? a : "", b ? b : "") != 0)
		return sn_fail(SN_EMISMATCH, "the net YAML text differs from the base's");
	return 0;
}

/* ---------------------------------------------------------------- one tensor's codes */

/* Where one base tensor's delta lives in a delta file. */
typedef struct {
	const sn_tensor *base;
	const sn_tensor *codes;   /* NAME */
	const sn_tensor *scale;   /* NAME.scale, int8/int4 */
	int64_t n;
} entry;

static int code_at(sn_delta_scheme s, const void *codes, int64_t j)
{
	if (s == SN_DELTA_INT8)
		return ((const int8_t *)codes)[j];
	unsigned byte = ((const uint8_t *)codes)[j / 2];
	unsigned nib = j % 2 ? byte >> 4 : byte & 15;   /* even index: low nibble */
	return (int)nib - (nib & 8 ? 16 : 0);
}

/* The decoded difference of value j: exactly what every reader computes. */
static float decode_at(sn_delta_scheme s, int block, const entry *e, int64_t j)
{
	switch (s) {
	case SN_DELTA_BF16: {
		uint16_t h;
		memcpy(&h, (const char *)e->codes->data + 2 * j, 2);
		return sn_bf16_to_f32(h);
	}
	case SN_DELTA_INT8:
	case SN_DELTA_INT4:
		return (float)code_at(s, e->codes->data, j) * load_f32(e->scale->data, j / block);
	default:
		return 0;
	}
}

/* base + delta for value j, as a float32 (none: the XOR of the bits). */
static float reconstruct_at(sn_delta_scheme s, int block, const entry *e, int64_t j)
{
	float b = load_f32(e->base->data, j);
	if (s == SN_DELTA_NONE) {
		uint32_t x;
		memcpy(&x, (const char *)e->codes->data + 4 * j, 4);
		return bits_f32(f32_bits(b) ^ x);
	}
	float d = decode_at(s, block, e, j);
	return b + d;
}

/* ---------------------------------------------------------------- decoding */

static int check_scale(const entry *e, int block)
{
	char want[64], got[64];
	int64_t nb = div_up(e->n, block);
	if (!e->scale)
		return sn_fail(SN_EFORMAT, "no scale tensor for \"%s\"", e->base->name);
	if (e->scale->dtype != SN_F32 || e->scale->ndim != 1 || e->scale->shape[0] != nb)
		return sn_fail(SN_EFORMAT, "scale of \"%s\" is %s %s, expected F32 %s", e->base->name,
			       sn_dtype_name(e->scale->dtype),
			       sn_shape_format(e->scale->ndim, e->scale->shape, got, sizeof got),
			       sn_shape_format(1, &nb, want, sizeof want));
	for (int64_t k = 0; k < nb; k++) {
		float v = load_f32(e->scale->data, k);
		if (!isfinite(v) || v < 0)
			return sn_fail(SN_EFORMAT, "scale of \"%s\" has a %s value at %" PRId64,
				       e->base->name, isfinite(v) ? "negative" : "non-finite", k);
	}
	return 0;
}

/* Codes outside the grid (-128, the nibble -8, a non-zero pad nibble). */
static int check_codes(sn_delta_scheme s, const entry *e)
{
	int64_t nc = s == SN_DELTA_INT4 ? 2 * e->codes->shape[0] : e->n;
	for (int64_t j = 0; j < nc; j++) {
		int q = code_at(s, e->codes->data, j);
		if (j >= e->n && q != 0)
			return sn_fail(SN_EFORMAT, "\"%s\": the unused last nibble is not 0", e->base->name);
		if (q < -scheme_qmax[s])
			return sn_fail(SN_EFORMAT, "\"%s\": reserved code %d at %" PRId64, e->base->name, q, j);
	}
	return 0;
}

static int check_entry(sn_delta_scheme s, int block, const sn_st *delta, entry *e)
{
	char want[160], got[160];
	const sn_tensor *c = e->codes;
	int64_t packed = div_up(e->n, 2);
	int ndim = s == SN_DELTA_INT4 ? 1 : e->base->ndim;
	const int64_t *shape = s == SN_DELTA_INT4 ? &packed : e->base->shape;
	if (!c)
		return sn_fail(SN_EFORMAT, "no entry for tensor \"%s\"", e->base->name);
	if (c->dtype != code_dtype[s] || c->ndim != ndim ||
	    memcmp(c->shape, shape, sizeof(int64_t) * (size_t)ndim) != 0)
		return sn_fail(SN_EFORMAT, "entry \"%s\" is %s %s, expected %s %s for %s",
			       e->base->name, sn_dtype_name(c->dtype),
			       sn_shape_format(c->ndim, c->shape, got, sizeof got),
			       sn_dtype_name(code_dtype[s]), sn_shape_format(ndim, shape, want, sizeof want),
			       scheme_names[s]);
	if (!is_blocked(s))
		return 0;
	char *sn = scale_name(e->base->name);
	if (!sn)
		return sn_fail(SN_ENOMEM, "out of memory");
	e->scale = sn_st_find(delta, sn);
	free(sn);
	int err = check_scale(e, block);
	return err ? err : check_codes(s, e);
}

/* The scheme and block a delta's metadata declares. */
static int read_scheme(const sn_st *delta, sn_delta_scheme *s, int *block)
{
	const char *f = sn_st_meta(delta, "format");
	if (!sn_delta_is_delta(delta))
		return sn_fail(SN_EFORMAT, "not a delta file (format \"%s\")", f ? f : "");
	const char *name = sn_st_meta(delta, "scheme");
	if (!name || sn_delta_scheme_parse(name, s) != 0)
		return sn_fail(SN_EFORMAT, "unknown scheme \"%s\"", name ? name : "");
	int64_t b = 0;
	int err = meta_int(delta, "block", is_blocked(*s) ? 1 : 0,
			   is_blocked(*s) ? SN_DELTA_BLOCK_MAX : 0, &b);
	*block = (int)b;
	return err;
}

/* Entries for every base tensor, validated; no tensor of delta is left over. */
static int collect_entries(const sn_st *base, const sn_st *delta, sn_delta_scheme s, int block,
			   entry *es)
{
	for (int i = 0; i < base->ntensors; i++) {
		entry *e = &es[i];
		memset(e, 0, sizeof *e);
		e->base = &base->tensors[i];
		e->n = sn_tensor_numel(e->base);
		e->codes = sn_st_find(delta, e->base->name);
		int err = check_entry(s, block, delta, e);
		if (err)
			return err;
	}
	int per = is_blocked(s) ? 2 : 1;
	if (delta->ntensors != per * base->ntensors)
		return sn_fail(SN_EFORMAT, "%d tensors where the base's %d need %d", delta->ntensors,
			       base->ntensors, per * base->ntensors);
	return 0;
}

static const char *const run_keys[] = {"round", "steps", "examples", "loss", "seconds"};

/* The run's metadata (run_keys) from src into dst, in src's order, so that
 * apply(diff(NEW)) lays its header out as NEW did. */
static int copy_run_meta(sn_st *dst, const sn_st *src)
{
	int err = 0;
	for (int i = 0; i < src->nmeta && !err; i++)
		for (size_t k = 0; k < sizeof run_keys / sizeof *run_keys && !err; k++)
			if (strcmp(src->meta[i].key, run_keys[k]) == 0)
				err = sn_st_set_meta(dst, src->meta[i].key, src->meta[i].value);
	return err;
}

int sn_delta_decode(const sn_st *base, const sn_st *delta, sn_st *w)
{
	sn_delta_scheme s;
	int block, err;
	char crc[16];
	sn_st_init(w);
	if ((err = read_scheme(delta, &s, &block)))
		return err;
	const char *want = sn_st_meta(delta, "base_crc32");
	snprintf(crc, sizeof crc, "%08" PRIx32, sn_st_data_crc(base));
	if (!want)
		return sn_fail(SN_EFORMAT, "no \"base_crc32\" in the metadata");
	if (strcmp(want, crc) != 0)
		return sn_fail(SN_EMISMATCH, "made against other weights (base_crc32 %.16s, the "
			       "base's is %s)", want, crc);
	if ((err = check_weights(base, "the base")))
		return err;
	entry *es = calloc((size_t)base->ntensors, sizeof *es);
	if (!es)
		return sn_fail(SN_ENOMEM, "out of memory");
	err = collect_entries(base, delta, s, block, es);
	const char *net = sn_st_meta(base, "net");
	if (!err)
		err = sn_st_set_meta(w, "format", "sn.weights.v1");
	if (!err && net)
		err = sn_st_set_meta(w, "net", net);
	if (!err)
		err = copy_run_meta(w, delta);
	for (int i = 0; i < base->ntensors && !err; i++) {
		const entry *e = &es[i];
		float *v = malloc(4 * (size_t)(e->n ? e->n : 1));
		if (!v) {
			err = sn_fail(SN_ENOMEM, "out of memory");
			break;
		}
		for (int64_t j = 0; j < e->n && !err; j++) {
			v[j] = reconstruct_at(s, block, e, j);
			if (!isfinite(v[j]))
				err = sn_fail(SN_EFORMAT, "\"%s\": the weight it gives at %" PRId64
					      " is not finite", e->base->name, j);
		}
		if (err)
			free(v);
		else
			err = add_owned(w, e->base->name, SN_F32, e->base->ndim, e->base->shape, v);
	}
	free(es);
	if (err)
		sn_st_free(w);
	return err;
}

/* ---------------------------------------------------------------- encoding */

/* The codes of one tensor's values t[0..n) (difference + residual). */
static int quantise(sn_delta_scheme s, int block, const double *t, int64_t n, const sn_tensor *b,
		    const sn_tensor *nw, void **codes, float **scale)
{
	size_t esize = s == SN_DELTA_BF16 ? 2 : s == SN_DELTA_NONE ? 4 : 1;
	size_t ncodes = s == SN_DELTA_INT4 ? (size_t)div_up(n, 2) : (size_t)n;
	int64_t nb = is_blocked(s) ? div_up(n, block) : 0;
	*codes = calloc(ncodes ? ncodes : 1, esize);
	*scale = is_blocked(s) ? malloc(4 * (size_t)(nb ? nb : 1)) : NULL;
	if (!*codes || (is_blocked(s) && !*scale))
		return sn_fail(SN_ENOMEM, "out of memory");
	if (s == SN_DELTA_NONE) {
		uint32_t *x = *codes;
		for (int64_t j = 0; j < n; j++)
			x[j] = f32_bits(load_f32(nw->data, j)) ^ f32_bits(load_f32(b->data, j));
	} else if (s == SN_DELTA_BF16) {
		for (int64_t j = 0; j < n; j++) {
			uint16_t h = sn_f32_to_bf16((float)t[j]);
			memcpy((char *)*codes + 2 * j, &h, 2);
		}
	} else {
		int qmax = scheme_qmax[s];
		for (int64_t k = 0; k < nb; k++) {
			int64_t lo = k * block, hi = lo + block < n ? lo + block : n;
			double m = 0;
			for (int64_t j = lo; j < hi; j++)
				m = fmax(m, fabs(t[j]));
			float sc = (float)(m / qmax);
			(*scale)[k] = sc;
			for (int64_t j = lo; j < hi && sc > 0; j++) {
				double q = rint(t[j] / sc);   /* ties to even */
				int c = (int)fmin(fmax(q, -qmax), qmax);
				if (s == SN_DELTA_INT8)
					((int8_t *)*codes)[j] = (int8_t)c;
				else
					((uint8_t *)*codes)[j / 2] |= (uint8_t)((c & 15) << (j % 2 ? 4 : 0));
			}
		}
	}
	return 0;
}

/* Refuse names that an int8/int4 delta could not keep apart. */
static int check_scale_names(const sn_st *base)
{
	for (int i = 0; i < base->ntensors; i++) {
		char *sn = scale_name(base->tensors[i].name);
		if (!sn)
			return sn_fail(SN_ENOMEM, "out of memory");
		int clash = sn_st_find(base, sn) != NULL;
		free(sn);
		if (clash)
			return sn_fail(SN_EUNSUPPORTED, "tensors \"%s\" and \"%s.scale\" cannot both have "
				       "a quantised delta", base->tensors[i].name, base->tensors[i].name);
	}
	return 0;
}

static int delta_meta(sn_st *delta, const sn_st *base, const sn_st *nw, sn_delta_scheme s,
		      int block)
{
	char crc[16], blk[16];
	const char *base_round = sn_st_meta(base, "round");
	snprintf(crc, sizeof crc, "%08" PRIx32, sn_st_data_crc(base));
	snprintf(blk, sizeof blk, "%d", is_blocked(s) ? block : 0);
	int err = sn_st_set_meta(delta, "format", "sn.delta.v1");
	if (!err)
		err = sn_st_set_meta(delta, "scheme", scheme_names[s]);
	if (!err)
		err = sn_st_set_meta(delta, "block", blk);
	if (!err)
		err = sn_st_set_meta(delta, "base_crc32", crc);
	if (!err)
		err = sn_st_set_meta(delta, "base_round", base_round ? base_round : "0");
	if (!err)
		err = copy_run_meta(delta, nw);
	return err;
}

/* Quantise one tensor into delta; check what it decodes to, fill residual. */
static int encode_tensor(const sn_tensor *b, const sn_tensor *nw, const float *r,
			 const sn_delta_opts *o, sn_st *delta, float *r_out, double *t,
			 sn_delta_summary *sum)
{
	int64_t n = sn_tensor_numel(b);
	for (int64_t j = 0; j < n; j++) {
		t[j] = (double)load_f32(nw->data, j) - (double)load_f32(b->data, j);
		if (r)
			t[j] += (double)r[j];
	}
	void *codes = NULL;
	float *scale = NULL;
	int err = quantise(o->scheme, o->block, t, n, b, nw, &codes, &scale);
	int64_t packed = div_up(n, 2);
	if (!err)
		err = o->scheme == SN_DELTA_INT4
			      ? add_owned(delta, b->name, SN_U8, 1, &packed, codes)
			      : add_owned(delta, b->name, code_dtype[o->scheme], b->ndim, b->shape, codes);
	else
		free(codes);
	codes = NULL;
	if (!err && scale) {
		int64_t nb = div_up(n, o->block);
		char *name = scale_name(b->name);
		err = name ? add_owned(delta, name, SN_F32, 1, &nb, scale)
			   : sn_fail(SN_ENOMEM, "out of memory");
		free(name);
	} else {
		free(scale);
	}
	scale = NULL;
	if (err)
		return err;
	entry e = {.base = b, .codes = sn_st_find(delta, b->name), .n = n};
	if (is_blocked(o->scheme)) {
		char *name = scale_name(b->name);
		if (!name)
			return sn_fail(SN_ENOMEM, "out of memory");
		e.scale = sn_st_find(delta, name);
		free(name);
	}
	for (int64_t j = 0; j < n; j++) {
		float w = reconstruct_at(o->scheme, o->block, &e, j);
		double nv = (double)load_f32(nw->data, j);
		if (!isfinite(w))
			return sn_fail(SN_EUNSUPPORTED, "tensor \"%s\": the difference at %" PRId64
				       " does not fit float32", b->name, j);
		sum->max_abs_error = fmax(sum->max_abs_error, fabs((double)w - nv));
		if (r_out) {
			/* what the receiver lacks: NEW + residual - what it reconstructs */
			r_out[j] = (float)(nv + (r ? (double)r[j] : 0) - (double)w);
			sum->residual_max_abs = fmax(sum->residual_max_abs, fabs((double)r_out[j]));
		}
	}
	sum->values += n;
	return 0;
}

int sn_delta_encode(const sn_st *base, const sn_st *nw, const float *residual,
		    const sn_delta_opts *o, sn_st *delta, float *residual_out,
		    sn_delta_summary *sum)
{
	int err;
	sn_st_init(delta);
	memset(sum, 0, sizeof *sum);
	sum->scheme = o->scheme;
	sum->block = is_blocked(o->scheme) ? o->block : 0;
	if ((unsigned)o->scheme >= SN_DELTA_SCHEMES ||
	    (is_blocked(o->scheme) && (o->block < 1 || o->block > SN_DELTA_BLOCK_MAX)))
		return sn_fail(SN_EINVAL, "bad scheme or block size");
	if ((err = check_weights(base, "the base")) || (err = check_weights(nw, "the new weights")) ||
	    (err = check_same_tensors(base, nw, "the new weights")))
		return err;
	if (is_blocked(o->scheme) && (err = check_scale_names(base)))
		return err;
	sum->base_crc = sn_st_data_crc(base);
	int64_t most = 1;
	for (int i = 0; i < base->ntensors; i++)
		most = sn_tensor_numel(&base->tensors[i]) > most ? sn_tensor_numel(&base->tensors[i]) : most;
	double *t = malloc(sizeof *t * (size_t)most);
	if (!t)
		return sn_fail(SN_ENOMEM, "out of memory");
	err = delta_meta(delta, base, nw, o->scheme, o->block);
	size_t at = 0;
	for (int i = 0; i < base->ntensors && !err; i++) {
		const sn_tensor *b = &base->tensors[i];
		err = encode_tensor(b, sn_st_find(nw, b->name), residual ? residual + at : NULL, o,
				    delta, residual_out ? residual_out + at : NULL, t, sum);
		at += (size_t)sn_tensor_numel(b);
	}
	sum->tensors = base->ntensors;
	free(t);
	if (err)
		sn_st_free(delta);
	return err;
}

/* ---------------------------------------------------------------- residual files */

int sn_delta_residual_load(const char *path, const sn_st *base, float *flat)
{
	struct stat sb;
	size_t total = 0;
	for (int i = 0; i < base->ntensors; i++)
		total += (size_t)sn_tensor_numel(&base->tensors[i]);
	if (stat(path, &sb) != 0 && errno == ENOENT) {
		memset(flat, 0, 4 * total);
		return 0;
	}
	sn_st st;
	int err = sn_st_read(path, &st, 0);
	if (err)
		return err;
	const char *f = sn_st_meta(&st, "format");
	if (!f || strcmp(f, "sn.residual.v1") != 0)
		err = sn_fail(SN_EFORMAT, "not a residual file (format \"%s\")", f ? f : "");
	if (!err)
		err = check_weights(&st, "the residual");
	if (!err)
		err = check_same_tensors(base, &st, "the residual");
	size_t at = 0;
	for (int i = 0; i < base->ntensors && !err; i++) {
		const sn_tensor *t = sn_st_find(&st, base->tensors[i].name);
		memcpy(flat + at, t->data, t->nbytes);
		at += (size_t)sn_tensor_numel(t);
	}
	sn_st_free(&st);
	return err;
}

static int residual_build(sn_st *st, const sn_st *base, const sn_st *nw, float *flat,
			  const sn_delta_opts *o)
{
	char blk[16];
	const char *round = sn_st_meta(nw, "round");
	snprintf(blk, sizeof blk, "%d", is_blocked(o->scheme) ? o->block : 0);
	sn_st_init(st);
	int err = sn_st_set_meta(st, "format", "sn.residual.v1");
	if (!err)
		err = sn_st_set_meta(st, "scheme", scheme_names[o->scheme]);
	if (!err)
		err = sn_st_set_meta(st, "block", blk);
	if (!err)
		err = sn_st_set_meta(st, "round", round ? round : "0");
	size_t at = 0;
	for (int i = 0; i < base->ntensors && !err; i++) {
		const sn_tensor *b = &base->tensors[i];
		err = sn_st_add(st, b->name, SN_F32, b->ndim, b->shape, flat + at, 0);
		at += (size_t)sn_tensor_numel(b);
	}
	return err;
}

/* ---------------------------------------------------------------- the files */

static int read_weights(const char *path, sn_st *st, const char **bad_path)
{
	*bad_path = path;
	int err = sn_st_read(path, st, 0);
	if (err)
		return err;
	const char *f = sn_st_meta(st, "format");
	if (!f || strcmp(f, "sn.weights.v1") != 0) {
		sn_st_free(st);
		return sn_fail(SN_EFORMAT, "not a weight file (format \"%s\")", f ? f : "");
	}
	return 0;
}

int sn_delta_diff_files(const char *base_path, const char *new_path, const char *out,
			const sn_delta_opts *o, sn_delta_summary *sum)
{
	sn_st base, nw, delta, resid;
	float *r_in = NULL, *r_out = NULL;
	int err;
	sn_st_init(&base);
	sn_st_init(&nw);
	sn_st_init(&delta);
	sn_st_init(&resid);
	memset(sum, 0, sizeof *sum);
	if (o->feedback && o->scheme == SN_DELTA_NONE)
		return sn_fail(SN_EINVAL, "none is exact: it has no residual to feed back");
	if (o->feedback && strcmp(out, "-") == 0)
		return sn_fail(SN_EINVAL, "a delta with feedback must go to a file, not stdout");
	if ((err = read_weights(base_path, &base, &sum->bad_path)) ||
	    (err = read_weights(new_path, &nw, &sum->bad_path)))
		goto done;
	sum->bad_path = base_path;
	if ((err = check_weights(&base, "the base")))
		goto done;
	sum->bad_path = new_path;
	if ((err = check_weights(&nw, "the new weights")) ||
	    (err = check_same_tensors(&base, &nw, "the new weights")) || (err = check_same_net(&base, &nw)))
		goto done;
	if (o->feedback) {
		size_t total = 0;
		for (int i = 0; i < base.ntensors; i++)
			total += (size_t)sn_tensor_numel(&base.tensors[i]);
		r_in = malloc(4 * (total ? total : 1));
		r_out = malloc(4 * (total ? total : 1));
		if (!r_in || !r_out) {
			err = sn_fail(SN_ENOMEM, "out of memory");
			goto done;
		}
		sum->bad_path = o->feedback;
		if ((err = sn_delta_residual_load(o->feedback, &base, r_in)))
			goto done;
	}
	sum->bad_path = new_path;
	if ((err = sn_delta_encode(&base, &nw, r_in, o, &delta, r_out, sum)))
		goto done;
	sum->bad_path = out;
	if (!o->feedback) {
		err = sn_st_write(&delta, out);
	} else if (!(err = residual_build(&resid, &base, &nw, r_out, o))) {
		/* the delta last: its presence means the residual is current */
		const sn_st *sts[2] = {&resid, &delta};
		const char *paths[2] = {o->feedback, out};
		int failed = 1;
		err = sn_st_write_all(sts, paths, 2, &failed);
		sum->bad_path = paths[failed >= 0 && failed < 2 ? failed : 1];
	}
done:
	sn_st_free(&base);
	sn_st_free(&nw);
	sn_st_free(&delta);
	sn_st_free(&resid);
	free(r_in);
	free(r_out);
	return err;
}

int sn_delta_apply_files(const char *base_path, const char *delta_path, const char *out,
			 sn_delta_summary *sum)
{
	sn_st base, delta, w;
	int err;
	sn_st_init(&base);
	sn_st_init(&delta);
	sn_st_init(&w);
	memset(sum, 0, sizeof *sum);
	if ((err = read_weights(base_path, &base, &sum->bad_path)))
		goto done;
	sum->bad_path = delta_path;
	if ((err = sn_st_read(delta_path, &delta, 0)))
		goto done;
	if ((err = sn_delta_decode(&base, &delta, &w)))
		goto done;
	(void)read_scheme(&delta, &sum->scheme, &sum->block);
	sum->tensors = w.ntensors;
	for (int i = 0; i < w.ntensors; i++)
		sum->values += sn_tensor_numel(&w.tensors[i]);
	sum->base_crc = sn_st_data_crc(&base);
	sum->bad_path = out;
	err = sn_st_write(&w, out);
done:
	sn_st_free(&base);
	sn_st_free(&delta);
	sn_st_free(&w);
	return err;
}

/* ---------------------------------------------------------------- inspecting */

static int ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);
	return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* The values an int4 entry of `bytes` bytes holds, as far as its scale tells:
 * 2*bytes, or one less when only that fits the scale's length. */
static int64_t int4_values(int64_t bytes, const sn_tensor *scale, int block)
{
	int64_t n = 2 * bytes;
	if (n > 0 && scale && scale->ndim == 1 && scale->shape[0] != div_up(n, block) &&
	    scale->shape[0] == div_up(n - 1, block))
		return n - 1;
	return n;
}

static int inspect_entry(sn_delta_scheme s, int block, const sn_st *delta, const sn_tensor *c,
			 sn_delta_entry *out)
{
	sn_tensor fake = {.name = c->name, .dtype = SN_F32, .ndim = c->ndim};
	entry e = {.base = &fake, .codes = c};
	int err = 0;
	if (c->dtype != code_dtype[s] || (s == SN_DELTA_INT4 && c->ndim != 1))
		return sn_fail(SN_EFORMAT, "entry \"%s\" is %s with %d dimensions, not %s%s", c->name,
			       sn_dtype_name(c->dtype), c->ndim, sn_dtype_name(code_dtype[s]),
			       s == SN_DELTA_INT4 ? " with 1" : "");
	memcpy(fake.shape, c->shape, sizeof fake.shape);
	e.n = sn_tensor_numel(c);
	if (is_blocked(s)) {
		char *name = scale_name(c->name);
		if (!name)
			return sn_fail(SN_ENOMEM, "out of memory");
		e.scale = sn_st_find(delta, name);
		free(name);
		if (s == SN_DELTA_INT4)
			e.n = int4_values(c->shape[0], e.scale, block);
		if ((err = check_scale(&e, block)) || (err = check_codes(s, &e)))
			return err;
	}
	float *v = malloc(4 * (size_t)(e.n ? e.n : 1));
	if (!v || !(out->name = strdup(c->name))) {
		free(v);
		return sn_fail(SN_ENOMEM, "out of memory");
	}
	out->values = e.n;
	for (int64_t j = 0; j < e.n; j++) {
		if (s == SN_DELTA_NONE) {
			uint32_t x;
			memcpy(&x, (const char *)c->data + 4 * j, 4);
			out->changed += x != 0;
			v[j] = 0;
		} else {
			v[j] = decode_at(s, block, &e, j);
			out->changed += v[j] != 0;
		}
	}
	sn_tensor t = {.dtype = SN_F32, .ndim = 1, .shape = {e.n}, .data = v, .nbytes = 4 * (size_t)e.n};
	sn_tensor_stats_compute(&t, &out->stats);
	free(v);
	return 0;
}

void sn_delta_entries_free(sn_delta_entry *es, int n)
{
	for (int i = 0; i < n; i++)
		free(es[i].name);
	free(es);
}

int sn_delta_inspect(const sn_st *delta, sn_delta_entry **entries, int *n)
{
	sn_delta_scheme s;
	int block, err, scales = 0;
	*entries = NULL;
	*n = 0;
	if ((err = read_scheme(delta, &s, &block)))
		return err;
	const char *crc = sn_st_meta(delta, "base_crc32");
	if (!crc || strlen(crc) != 8 || strspn(crc, "0123456789abcdef") != 8)
		return sn_fail(SN_EFORMAT, "\"base_crc32\" is not 8 lowercase hex digits");
	sn_delta_entry *es = calloc((size_t)delta->ntensors + 1, sizeof *es);
	if (!es)
		return sn_fail(SN_ENOMEM, "out of memory");
	for (int i = 0; i < delta->ntensors && !err; i++) {
		const sn_tensor *c = &delta->tensors[i];
		if (is_blocked(s) && ends_with(c->name, ".scale") && c->dtype == SN_F32) {
			scales++;   /* checked with its entry; counted to find strays */
			continue;
		}
		if (!(err = inspect_entry(s, block, delta, c, &es[*n])))
			(*n)++;
	}
	if (!err && scales != (is_blocked(s) ? *n : 0))
		err = sn_fail(SN_EFORMAT, "%d scale tensors for %d entries", scales, *n);
	if (err) {
		sn_delta_entries_free(es, *n);
		*n = 0;
		return err;
	}
	*entries = es;
	return 0;
}

int sn_delta_residual_check(const sn_st *r)
{
	const char *f = sn_st_meta(r, "format");
	if (!f || strcmp(f, "sn.residual.v1") != 0)
		return sn_fail(SN_EFORMAT, "not a residual file (format \"%s\")", f ? f : "");
	return check_weights(r, "the residual");
}
