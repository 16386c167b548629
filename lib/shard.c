/* shard.c: the shard writer behind sn-shard, in the order it runs:
 * open every input through its reader (readers/), read each record once
 * into an unlinked spool file while gathering normalisation statistics and
 * labels, split the records into K shards (+ val), write one shard in
 * memory at a time under a hidden staging name, and commit the set. */
#include "shard.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "layers.h"
#include "readers/reader.h"
#include "rng.h"

typedef struct {
	const sn_shard_opts *o;
	sn_shard_result *r;
	sn_source *src;
	int nsrc;
	sn_dtype dt;
	sn_shape shape;
	size_t recbytes;
	int spool;               /* unlinked temporary file of raw records */
	unsigned char *sbuf;
	size_t slen;
	int64_t n, cap;
	int32_t *labels;
	sn_labtab lt;
	int nstats, stat_len;    /* groups of values that share a mean/std */
	int64_t *hist;           /* u8: [nstats][256] counts */
	double *shift, *s1, *s2; /* f32: sums of (v - shift) and its square */
	char *mean, *std, *class_names, *sources;
	int classes;
	char **staged, **final;
	int nout;
	char *dir, *parent, *base; /* DIR with symlinks resolved, split */
	char *stage;             /* the hidden sibling the new set is built in */
	int exists, staging;     /* DIR existed; stage is ours to remove */
	int published;           /* the new set is in place: done, whatever comes */
} run;

#define SPOOL_BUF (1u << 20)

/* ---- The shard writer ------------------------------------------------- */

void sn_shard_opts_init(sn_shard_opts *o)
{
	memset(o, 0, sizeof *o);
	o->prefix = "shard";
	o->k = 1;
	o->split = SN_SPLIT_SHUFFLE;
	o->seed = 1;
	o->normalize = 1;
	o->cifar100 = -1;
	o->header = -1;
}

void sn_shard_result_free(sn_shard_result *r)
{
	free(r->mean);
	free(r->std);
	for (int i = 0; i < r->nfiles; i++)
		free(r->files[i]);
	free(r->files);
	memset(r, 0, sizeof *r);
}

static int check_opts(const sn_shard_opts *o)
{
	if (o->ninputs < 1)
		return sn_fail(SN_EINVAL, "no input");
	if (!o->outdir || !*o->outdir)
		return sn_fail(SN_EINVAL, "no output directory");
	if (o->k < 1 || o->k > SN_SHARD_MAX)
		return sn_fail(SN_EINVAL, "%d shards (1..%d)", o->k, SN_SHARD_MAX);
	if (!o->prefix || !*o->prefix || strchr(o->prefix, '/'))
		return sn_fail(SN_EINVAL, "bad prefix \"%s\"", o->prefix ? o->prefix : "");
	if (!(o->val >= 0 && o->val < 1))
		return sn_fail(SN_EINVAL, "--val %g outside [0,1)", o->val);
	if (o->classes < 0 || o->classes > SN_DATA_MAX_CLASSES || o->limit < 0)
		return sn_fail(SN_EINVAL, "bad --classes or --limit");
	int stdin_uses = 0;
	for (int i = 0; i < o->ninputs; i++)
		stdin_uses += !strcmp(o->inputs[i], "-");
	for (int i = 0; i < o->nlabels; i++)
		stdin_uses += !strcmp(o->labels[i], "-");
	return stdin_uses > 1 ? sn_fail(SN_EINVAL, "stdin (-) given more than once") : 0;
}

static int make_dir(const char *path)
{
	char *p = strdup(path);
	if (!p)
		return sn_fail(SN_ENOMEM, "out of memory");
	int rc = 0;
	for (char *c = p + 1;; c++) {
		if (*c && *c != '/')
			continue;
		char save = *c;
		*c = 0;
		if (mkdir(p, 0777) && errno != EEXIST) {
			rc = sn_fail(SN_EIO, "cannot create directory %s: %s", p, strerror(errno));
			break;
		}
		*c = save;
		if (!save)
			break;
	}
	struct stat sb;
	if (!rc && (stat(p, &sb) || !S_ISDIR(sb.st_mode)))
		rc = sn_fail(SN_EIO, "not a directory");
	free(p);
	return rc;
}

/* ---- The output directory: the new set is built aside, swapped in ------ */

/* DIR is replaced as a whole, so that a reader of DIR/ sees the complete
 * old set or the complete new one, never a mix, whatever happens: the new
 * set is written into a hidden sibling .BASE.sn-shard-PID, the other files
 * of DIR are hard-linked into it, and one renameat2(RENAME_EXCHANGE) swaps
 * the two (where the file system cannot exchange, DIR is renamed aside and
 * the new one into place, so DIR is briefly absent but never mixed).  A
 * sibling whose process is gone was left by a kill and is removed by the
 * next run into DIR. */

#define STAGE_TAG ".sn-shard-"

/* A file of the set sn-shard writes: PREFIX-NNN.safetensors or
 * val.safetensors, compressed or not. */
static int in_set(const char *name, const char *prefix)
{
	size_t p = strlen(prefix);
	const char *rest = NULL;
	if (!strncmp(name, prefix, p) && name[p] == '-' && isdigit((unsigned char)name[p + 1]) &&
	    isdigit((unsigned char)name[p + 2]) && isdigit((unsigned char)name[p + 3]))
		rest = name + p + 4;
	else if (!strncmp(name, "val", 3))
		rest = name + 3;
	return rest && (!strcmp(rest, ".safetensors") || !strcmp(rest, ".safetensors.gz"));
}

/* Remove a staging directory and the files in it (it holds nothing else). */
static void remove_stage(const char *path)
{
	DIR *d = opendir(path);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			(void)unlinkat(dirfd(d), e->d_name, 0);
	closedir(d);
	(void)rmdir(path);
}

/* Siblings .BASE.sn-shard-PID[.old] whose process no longer runs. */
static void remove_stale_stages(const char *parent, const char *base)
{
	DIR *d = opendir(parent);
	if (!d)
		return;
	size_t bl = strlen(base);
	struct dirent *e;
	while ((e = readdir(d))) {
		const char *n = e->d_name;
		if (n[0] != '.' || strncmp(n + 1, base, bl) || strncmp(n + 1 + bl, STAGE_TAG, strlen(STAGE_TAG)))
			continue;
		char *end;
		long pid = strtol(n + 1 + bl + strlen(STAGE_TAG), &end, 10);
		if ((*end && strcmp(end, ".old")) || pid <= 0)
			continue;
		if (pid != getpid() && (kill((pid_t)pid, 0) == 0 || errno != ESRCH))
			continue;
		char *path;
		if (asprintf(&path, "%s/%s", parent, n) >= 0) {
			remove_stage(path);
			free(path);
		}
	}
	closedir(d);
}

/* DIR may hold files besides the set, carried over; not directories,
 * which a hard link cannot carry. */
static int check_dir_entries(run *R)
{
	DIR *d = opendir(R->dir);
	if (!d)
		return sn_fail(SN_EIO, "cannot read: %s", strerror(errno));
	int rc = 0;
	struct dirent *e;
	while ((e = readdir(d)) && !rc) {
		struct stat sb;
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (fstatat(dirfd(d), e->d_name, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(sb.st_mode))
			rc = sn_fail(SN_EUNSUPPORTED, "holds a directory, %s: sn-shard replaces the whole "
				     "output directory, which may hold files only", e->d_name);
	}
	closedir(d);
	return rc;
}

static int split_path(run *R)
{
	const char *out = R->o->outdir;
	struct stat sb;
	if (lstat(out, &sb) == 0) {
		R->exists = 1;
		if (!(R->dir = realpath(out, NULL)))
			return sn_fail(SN_EIO, "%s", strerror(errno));
		if (stat(R->dir, &sb) || !S_ISDIR(sb.st_mode))
			return sn_fail(SN_EIO, "not a directory");
	} else if (errno != ENOENT) {
		return sn_fail(SN_EIO, "%s", strerror(errno));
	} else if (!(R->dir = strdup(out))) {
		return sn_fail(SN_ENOMEM, "out of memory");
	}
	size_t n = strlen(R->dir);
	while (n > 1 && R->dir[n - 1] == '/')
		R->dir[--n] = 0;
	char *slash = strrchr(R->dir, '/');
	const char *base = slash ? slash + 1 : R->dir;
	if (!*base || !strcmp(base, ".") || !strcmp(base, ".."))
		return sn_fail(SN_EINVAL, "cannot replace this directory; name the output "
			       "directory from its parent (-o ../NAME)");
	R->base = strdup(base);
	R->parent = slash ? strndup(R->dir, slash == R->dir ? 1 : (size_t)(slash - R->dir)) : strdup(".");
	if (!R->base || !R->parent)
		return sn_fail(SN_ENOMEM, "out of memory");
	char cwd[PATH_MAX];
	if (R->exists && getcwd(cwd, sizeof cwd) && !strcmp(cwd, R->dir))
		return sn_fail(SN_EINVAL, "is the current directory, which sn-shard would replace; "
			       "name it from its parent (-o ../%s)", R->base);
	return 0;
}

/* Resolve DIR, clean what killed runs left, and create the staging dir. */
static int out_prepare(run *R)
{
	int rc = split_path(R);
	if (!rc)
		rc = make_dir(R->parent);
	if (!rc && R->exists)
		rc = check_dir_entries(R);
	if (rc)
		return rc;
	remove_stale_stages(R->parent, R->base);
	if (asprintf(&R->stage, "%s/.%s" STAGE_TAG "%d", R->parent, R->base, (int)getpid()) < 0) {
		R->stage = NULL;
		return sn_fail(SN_ENOMEM, "out of memory");
	}
	if (mkdir(R->stage, 0777))
		return sn_fail(SN_EIO, "cannot create %s: %s", R->stage, strerror(errno));
	R->staging = 1;
	return 0;
}

/* Hard-link every file of DIR that is not of the set into the stage. */
static int carry_over(run *R)
{
	DIR *d = opendir(R->dir);
	if (!d)
		return sn_fail(SN_EIO, "cannot read: %s", strerror(errno));
	int sfd = open(R->stage, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;
	struct dirent *e;
	while (sfd >= 0 && !rc && (e = readdir(d))) {
		const char *n = e->d_name;
		if (!strcmp(n, ".") || !strcmp(n, "..") || in_set(n, R->o->prefix) ||
		    !strncmp(n, STAGE_TAG, strlen(STAGE_TAG)))
			continue;
		if (linkat(dirfd(d), n, sfd, n, 0))
			rc = sn_fail(SN_EIO, "cannot keep %s in the new set: %s", n, strerror(errno));
	}
	if (sfd < 0)
		rc = sn_fail(SN_EIO, "%s: %s", R->stage, strerror(errno));
	else if (!rc && fsync(sfd))
		rc = sn_fail(SN_EIO, "%s: %s", R->stage, strerror(errno));
	if (sfd >= 0)
		close(sfd);
	closedir(d);
	return rc;
}

static void sync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		(void)fsync(fd);
		close(fd);
	}
}

/* The one step that makes the new set visible; then the old one goes. */
static int publish(run *R)
{
	int rc = R->exists ? carry_over(R) : 0;
	if (rc)
		return rc;
	if (!R->exists) {
		if (rename(R->stage, R->dir))
			return sn_fail(SN_EIO, "cannot put the new set in place: %s", strerror(errno));
	} else if (renameat2(AT_FDCWD, R->stage, AT_FDCWD, R->dir, RENAME_EXCHANGE)) {
		if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
			return sn_fail(SN_EIO, "cannot put the new set in place: %s", strerror(errno));
		char *old;
		if (asprintf(&old, "%s.old", R->stage) < 0)
			return sn_fail(SN_ENOMEM, "out of memory");
		if (rename(R->dir, old)) {
			rc = sn_fail(SN_EIO, "cannot rename %s aside: %s", R->dir, strerror(errno));
		} else if (rename(R->stage, R->dir)) {
			rc = sn_fail(SN_EIO, "cannot put the new set in place: %s", strerror(errno));
			(void)rename(old, R->dir);
		}
		if (!rc) {
			remove_stage(old);
			R->staging = 0;
		}
		free(old);
		if (rc)
			return rc;
	}
	R->staging = 0;
	R->published = 1;
	sync_dir(R->parent);
	if (R->exists)
		remove_stage(R->stage);    /* now the old set */
	return 0;
}

/* Pair IDX images with --labels in order, open everything, and check that
 * all inputs agree on format, dtype and record shape. */
static int open_sources(run *R)
{
	const sn_shard_opts *o = R->o;
	R->src = calloc((size_t)o->ninputs, sizeof *R->src);
	if (!R->src)
		return sn_fail(SN_ENOMEM, "out of memory");
	int nlab = 0;
	for (int i = 0; i < o->ninputs; i++) {
		sn_source *s = &R->src[R->nsrc++];
		s->path = o->inputs[i];
		s->labpath = nlab < o->nlabels ? o->labels[nlab] : NULL;
		s->o = o;
		s->labtab = &R->lt;
		int rc = sn_source_open(s);
		if (rc) {
			R->r->errfile = s->errpath;
			return rc;
		}
		nlab += s->reader == &sn_reader_idx;
		const sn_source *f = &R->src[0];
		char a[64], b[64];
		sn_shape_format(s->shape.ndim, s->shape.d, a, sizeof a);
		sn_shape_format(f->shape.ndim, f->shape.d, b, sizeof b);
		if (s->reader != f->reader || s->dt != f->dt || strcmp(a, b)) {
			R->r->errfile = s->path;
			return sn_fail(SN_EMISMATCH, "%s records %s differ from %s %s of %s",
				       sn_dtype_name(s->dt), a, sn_dtype_name(f->dt), b, f->path);
		}
	}
	if (nlab != o->nlabels) {
		R->r->errfile = o->labels[nlab];
		return sn_fail(SN_EINVAL, "labels without IDX images to go with them");
	}
	R->dt = R->src[0].dt;
	R->shape = R->src[0].shape;
	R->recbytes = R->src[0].recbytes;
	if (R->src[0].reader == &sn_reader_sn) {
		const char *cn = sn_st_meta(&R->src[0].d.st, "class_names");
		if (cn && !(R->class_names = strdup(cn)))
			return sn_fail(SN_ENOMEM, "out of memory");
	}
	return 0;
}

static int spool_open(run *R)
{
	size_t len = strlen(R->stage) + 32;
	char *tmp = malloc(len);
	if (!tmp)
		return sn_fail(SN_ENOMEM, "out of memory");
	snprintf(tmp, len, "%s/" STAGE_TAG "spool-XXXXXX", R->stage);
	R->spool = mkostemp(tmp, O_CLOEXEC);
	int err = errno;
	if (R->spool >= 0)
		unlink(tmp);
	free(tmp);
	if (R->spool < 0)
		return sn_fail(SN_EIO, "cannot create a temporary file: %s", strerror(err));
	R->sbuf = malloc(SPOOL_BUF);
	return R->sbuf ? 0 : sn_fail(SN_ENOMEM, "out of memory");
}

static int spool_flush(run *R)
{
	int rc = sn_write_all(R->spool, R->sbuf, R->slen);
	R->slen = 0;
	return rc;
}

static int spool_put(run *R, const void *rec)
{
	if (R->slen + R->recbytes > SPOOL_BUF) {
		int rc = spool_flush(R);
		if (rc)
			return rc;
		if (R->recbytes > SPOOL_BUF)
			return sn_write_all(R->spool, rec, R->recbytes);
	}
	memcpy(R->sbuf + R->slen, rec, R->recbytes);
	R->slen += R->recbytes;
	return 0;
}

static int labels_push(run *R, int32_t y)
{
	if (R->n == R->cap) {
		int64_t cap = R->cap ? 2 * R->cap : 4096;
		int32_t *l = realloc(R->labels, (size_t)cap * sizeof *l);
		if (!l)
			return sn_fail(SN_ENOMEM, "out of memory");
		R->labels = l;
		R->cap = cap;
	}
	R->labels[R->n++] = y;
	return 0;
}

/* ---- Normalisation statistics ------------------------------------------ */

/* Stats are per channel for images and per feature for tables (one pair
 * for all when there are too many features). */
static int stats_init(run *R)
{
	int64_t e = sn_shape_size(&R->shape);
	if (R->shape.ndim == 3)
		R->nstats = (int)R->shape.d[0];
	else
		R->nstats = e <= SN_DATA_MAX_CHANNELS ? (int)e : 1;
	R->stat_len = (int)(e / R->nstats);
	if (R->src[0].reader == &sn_reader_sn || !R->o->normalize || R->o->stats_from)
		return 0;
	if (R->dt == SN_U8) {
		R->hist = calloc((size_t)R->nstats * 256, sizeof *R->hist);
		return R->hist ? 0 : sn_fail(SN_ENOMEM, "out of memory");
	}
	R->shift = calloc((size_t)R->nstats, sizeof *R->shift);
	R->s1 = calloc((size_t)R->nstats, sizeof *R->s1);
	R->s2 = calloc((size_t)R->nstats, sizeof *R->s2);
	return R->shift && R->s1 && R->s2 ? 0 : sn_fail(SN_ENOMEM, "out of memory");
}

static void stats_add(run *R, const void *rec)
{
	int L = R->stat_len;
	if (R->hist) {
		const uint8_t *p = rec;
		for (int c = 0; c < R->nstats; c++) {
			int64_t *h = R->hist + 256 * c;
			for (int j = 0; j < L; j++)
				h[p[c * L + j]]++;
		}
	} else if (R->s1) {
		const float *p = rec;
		if (R->n == 0)       /* shifting by a first value keeps the sums exact-ish */
			for (int c = 0; c < R->nstats; c++)
				R->shift[c] = p[c * L];
		for (int c = 0; c < R->nstats; c++) {
			double s1 = 0, s2 = 0, sh = R->shift[c];
			for (int j = 0; j < L; j++) {
				double d = p[c * L + j] - sh;
				s1 += d;
				s2 += d * d;
			}
			R->s1[c] += s1;
			R->s2[c] += s2;
		}
	}
}

static char *json_numbers(const double *v, int n)
{
	size_t cap = (size_t)n * 26 + 3, len = 0;
	char *s = malloc(cap);
	if (!s)
		return NULL;
	s[len++] = '[';
	for (int i = 0; i < n; i++)
		len += (size_t)snprintf(s + len, cap - len, "%s%.9g", i ? "," : "", v[i]);
	snprintf(s + len, cap - len, "]");
	return s;
}

static int stats_set(run *R, const double *mean, const double *std, int n)
{
	R->mean = json_numbers(mean, n);
	R->std = json_numbers(std, n);
	return R->mean && R->std ? 0 : sn_fail(SN_ENOMEM, "out of memory");
}

/* Population mean and std of the values as the trainer sees them before
 * normalising (u8 as v/255); a constant channel gets std 1. */
static int stats_finish(run *R)
{
	int n = R->nstats;
	double *m = calloc((size_t)n * 2, sizeof *m), *sd = m + n;
	if (!m)
		return sn_fail(SN_ENOMEM, "out of memory");
	double count = (double)R->n * R->stat_len;
	for (int c = 0; c < n; c++) {
		double s1 = 0, s2 = 0, var;
		if (R->hist) {
			for (int v = 0; v < 256; v++) {
				s1 += (double)R->hist[256 * c + v] * v;
				s2 += (double)R->hist[256 * c + v] * v * v;
			}
			m[c] = s1 / count / 255.0;
			var = (s2 / count - (s1 / count) * (s1 / count)) / (255.0 * 255.0);
		} else {
			m[c] = R->shift[c] + R->s1[c] / count;
			var = R->s2[c] / count - (R->s1[c] / count) * (R->s1[c] / count);
		}
		sd[c] = var > 0 ? sqrt(var) : 0;
		if (!(sd[c] > 1e-12) || !isfinite(sd[c]) || !isfinite((float)sd[c]))
			sd[c] = 1;
	}
	int rc = stats_set(R, m, sd, n);
	free(m);
	return rc;
}

/* The statistics the shards carry, when they are not computed here. */
static int stats_given(run *R)
{
	const sn_shard_opts *o = R->o;
	if (o->stats_from) {
		sn_data d;
		int rc = sn_data_open(o->stats_from, &d);
		if (!rc && d.nstats != R->nstats && !(R->shape.ndim == 1 && d.nstats == 1))
			rc = sn_fail(SN_EMISMATCH, "%d mean/std entries, the input needs %d",
				     d.nstats, R->nstats);
		if (!rc) {
			R->mean = strdup(sn_st_meta(&d.st, "mean"));
			R->std = strdup(sn_st_meta(&d.st, "std"));
			if (!R->mean || !R->std)
				rc = sn_fail(SN_ENOMEM, "out of memory");
		}
		if (d.st.base || d.mean)
			sn_data_close(&d);
		if (rc)
			R->r->errfile = o->stats_from;
		return rc;
	}
	if (!o->normalize) {
		int n = R->shape.ndim == 3 ? R->nstats : 1;
		double *v = calloc((size_t)n * 2, sizeof *v);
		if (!v)
			return sn_fail(SN_ENOMEM, "out of memory");
		for (int i = 0; i < n; i++)
			v[n + i] = 1;
		int rc = stats_set(R, v, v + n, n);
		free(v);
		return rc;
	}
	if (R->src[0].reader != &sn_reader_sn)
		return 0;
	const sn_st *f = &R->src[0].d.st;
	for (int i = 1; i < R->nsrc; i++) {
		const sn_st *s = &R->src[i].d.st;
		if (strcmp(sn_st_meta(s, "mean"), sn_st_meta(f, "mean")) ||
		    strcmp(sn_st_meta(s, "std"), sn_st_meta(f, "std"))) {
			R->r->errfile = R->src[i].path;
			return sn_fail(SN_EMISMATCH, "mean/std differ from those of %s",
				       R->src[0].path);
		}
	}
	R->mean = strdup(sn_st_meta(f, "mean"));
	R->std = strdup(sn_st_meta(f, "std"));
	return R->mean && R->std ? 0 : sn_fail(SN_ENOMEM, "out of memory");
}


static int finish_labels(run *R)
{
	int natural = 0, rc = 0;
	if (R->src[0].reader == &sn_reader_csv)
		rc = sn_labtab_finish(&R->lt, R->o->classes, R->labels, R->n, &natural,
				      &R->class_names, &R->r->errfile);
	for (int i = 0; i < R->nsrc; i++)
		if (R->src[i].classes > natural)
			natural = R->src[i].classes;
	R->classes = R->o->classes ? R->o->classes : natural;
	json_t *src = json_array();
	for (int i = 0; src && i < R->nsrc; i++) {
		const char *p[2] = { R->src[i].path, R->src[i].labpath };
		for (int j = 0; j < 2 && p[j]; j++) {
			const char *b = strcmp(p[j], "-") ? strrchr(p[j], '/') : NULL;
			json_array_append_new(src, json_string(!strcmp(p[j], "-") ? "stdin" : b ? b + 1 : p[j]));
		}
	}
	R->sources = src ? json_dumps(src, JSON_COMPACT) : NULL;
	json_decref(src);
	if (!rc && !R->sources)
		rc = sn_fail(SN_ENOMEM, "out of memory");
	return rc;
}

/* ---- Reading: every record once, into the spool ------------------------- */

static int cancelled(const sn_shard_opts *o)
{
	return o->cancel && *o->cancel;
}

static int read_all(run *R)
{
	const sn_shard_opts *o = R->o;
	int64_t limit = o->limit ? o->limit : INT64_MAX, total = 0;
	for (int i = 0; i < R->nsrc; i++)
		total = R->src[i].n < 0 || total < 0 ? -1 : total + R->src[i].n;
	unsigned char *rec = malloc(R->recbytes);
	if (!rec)
		return sn_fail(SN_ENOMEM, "out of memory");
	int rc = 0;
	for (int i = 0; i < R->nsrc && R->n < limit && !rc; i++) {
		sn_source *s = &R->src[i];
		int32_t y = 0;
		while (R->n < limit && !cancelled(o) && (rc = sn_source_next(s, rec, &y)) == 1) {
			stats_add(R, rec);
			if ((rc = labels_push(R, y)))
				break;
			if ((rc = spool_put(R, rec))) {
				s->errpath = o->outdir;
				break;
			}
			if (o->progress && (R->n & 0x3fff) == 0)
				o->progress(o->progress_ctx, "reading", R->n, total);
		}
		if (rc < 0)
			R->r->errfile = s->errpath;
		if (rc > 0)
			rc = 0;
		if (s->data_open) {     /* unmap what has been spooled */
			sn_data_close(&s->d);
			s->data_open = 0;
		}
	}
	free(rec);
	if (!rc && (rc = spool_flush(R)))
		R->r->errfile = o->outdir;
	return rc;
}

/* ---- Splitting --------------------------------------------------------- */

/* Position j of m records dealt into k contiguous chunks whose sizes
 * differ by at most one, the larger first. */
static int chunk_of(int64_t j, int64_t m, int k)
{
	int64_t q = m / k, r = m % k;
	return (int)(j < (q + 1) * r ? j / (q + 1) : r + (j - (q + 1) * r) / q);
}

static int64_t val_count(double f, int64_t n)
{
	int64_t v = (int64_t)floor(f * (double)n + 0.5);
	return f > 0 && v == 0 ? 1 : v;
}

/* assign[i]: the shard of record i (k = validation); seq: the dealing
 * order, which also orders the records inside a shard before its shuffle. */
static void split_stratified(run *R, sn_rng *rng, int32_t *assign, int64_t *seq, int64_t *nval)
{
	int k = R->o->k;
	int64_t *start = calloc((size_t)R->classes + 1, sizeof *start);
	if (!start)
		return;
	for (int64_t i = 0; i < R->n; i++)
		start[R->labels[i] + 1]++;
	for (int c = 0; c < R->classes; c++)
		start[c + 1] += start[c];
	for (int64_t i = 0; i < R->n; i++)
		seq[start[R->labels[i]]++] = i;    /* start[c] now ends class c */
	int64_t deal = 0, b = 0;
	*nval = 0;
	for (int c = 0; c < R->classes; c++) {
		int64_t e = start[c], nc = e - b;
		sn_rng_shuffle(rng, seq + b, nc);
		int64_t v = R->o->val > 0 ? (int64_t)floor(R->o->val * (double)nc + 0.5) : 0;
		for (int64_t j = 0; j < nc; j++)
			assign[seq[b + j]] = j < v ? k : (int)(deal++ % k);
		*nval += v;
		b = e;
	}
	free(start);
}

static int split(run *R, int64_t *order, int64_t *off)
{
	const sn_shard_opts *o = R->o;
	int64_t n = R->n, nval = val_count(o->val, n);
	int k = o->k;
	int32_t *assign = malloc((size_t)n * sizeof *assign);
	int64_t *seq = malloc((size_t)n * sizeof *seq);
	if (!assign || !seq) {
		free(assign);
		free(seq);
		return sn_fail(SN_ENOMEM, "out of memory");
	}
	sn_rng rng;
	sn_rng_seed(&rng, o->seed);
	for (int64_t i = 0; i < n; i++)
		seq[i] = i;
	int64_t m = n - nval;
	if (o->split == SN_SPLIT_STRATIFY) {
		nval = -1;
		split_stratified(R, &rng, assign, seq, &nval);
		m = n - nval;
	} else if (o->split == SN_SPLIT_SHUFFLE) {
		sn_rng_shuffle(&rng, seq, n);
		for (int64_t j = 0; j < n; j++)
			assign[seq[j]] = j < nval ? k : chunk_of(j - nval, m, k);
	} else {
		for (int64_t i = 0; i < n; i++)
			assign[i] = i >= m ? k : o->split == SN_SPLIT_ROUND_ROBIN ? (int)(i % k)
									  : chunk_of(i, m, k);
	}
	int rc = 0;
	if (nval < 0)
		rc = sn_fail(SN_ENOMEM, "out of memory");
	else if (m < k)
		rc = sn_fail(SN_EMISMATCH, "%d shards but only %lld records%s", k, (long long)m,
			     nval ? " besides the validation split" : "");
	else if (o->val > 0 && nval == 0)
		rc = sn_fail(SN_EMISMATCH, "--val %g leaves no validation records", o->val);
	for (int j = 0; j <= k + 1; j++)
		off[j] = 0;
	for (int64_t i = 0; i < n && !rc; i++)
		off[assign[i] + 1]++;
	for (int j = 0; j <= k; j++)
		off[j + 1] += off[j];
	for (int64_t j = 0; j < n && !rc; j++)
		order[off[assign[seq[j]]]++] = seq[j];
	for (int j = k + 1; j > 0; j--)
		off[j] = off[j - 1];
	off[0] = 0;
	free(assign);
	free(seq);
	return rc;
}

/* ---- Writing: one shard in memory at a time ----------------------------- */

static int pread_all(int fd, void *buf, size_t len, int64_t off)
{
	while (len) {
		ssize_t got = pread(fd, buf, len, off);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			return sn_fail(SN_EIO, "reading the spool: %s",
				       got < 0 ? strerror(errno) : "unexpected end");
		buf = (char *)buf + got;
		len -= (size_t)got;
		off += got;
	}
	return 0;
}

/* Gather the records of list[0..cnt) from the spool, reading runs of
 * consecutive records at once. */
static int gather(run *R, const int64_t *list, int64_t cnt, unsigned char *x, int32_t *y)
{
	size_t rb = R->recbytes;
	for (int64_t j = 0; j < cnt;) {
		int64_t j0 = j;
		while (++j < cnt && list[j] == list[j - 1] + 1)
			;
		int rc = pread_all(R->spool, x + j0 * rb, (size_t)(j - j0) * rb, list[j0] * (int64_t)rb);
		if (rc)
			return rc;
	}
	for (int64_t j = 0; j < cnt; j++)
		y[j] = R->labels[list[j]];
	return 0;
}

static int shard_meta(run *R, sn_st *st, int k)
{
	const sn_shard_opts *o = R->o;
	static const char *const splits[] = { "shuffle", "contiguous", "round-robin", "stratify" };
	char classes[16], shard[32], seed[24];
	snprintf(classes, sizeof classes, "%d", R->classes);
	if (k < o->k)
		snprintf(shard, sizeof shard, "%d/%d", k + 1, o->k);
	else
		snprintf(shard, sizeof shard, "val");
	snprintf(seed, sizeof seed, "%llu", (unsigned long long)o->seed);
	const char *kv[][2] = {
		{ "format", "sn.data.v1" }, { "classes", classes }, { "source", R->sources },
		{ "shard", shard }, { "split", splits[o->split] }, { "seed", seed },
		{ "mean", R->mean }, { "std", R->std }, { "class_names", R->class_names },
	};
	for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++) {
		if (!kv[i][1])
			continue;
		int rc = sn_st_set_meta(st, kv[i][0], kv[i][1]);
		if (rc)
			return rc;
	}
	return 0;
}

static int write_shard(run *R, int k, const int64_t *off, int64_t *order)
{
	const sn_shard_opts *o = R->o;
	int64_t cnt = off[k + 1] - off[k];
	int64_t *list = order + off[k];
	if (o->split == SN_SPLIT_SHUFFLE || o->split == SN_SPLIT_STRATIFY) {
		sn_rng rng;
		sn_rng_seed(&rng, o->seed ^ (0x9e3779b97f4a7c15ULL * (uint64_t)(k + 1)));
		sn_rng_shuffle(&rng, list, cnt);
	}
	unsigned char *x = malloc((size_t)cnt * R->recbytes);
	int32_t *y = malloc((size_t)cnt * sizeof *y);
	sn_st st;
	sn_st_init(&st);
	int64_t xs[4] = { cnt, R->shape.d[0], R->shape.d[1], R->shape.d[2] };
	int rc = !x || !y ? sn_fail(SN_ENOMEM, "out of memory") : gather(R, list, cnt, x, y);
	/* y first: then x starts 4-aligned whatever the size of a u8 x */
	if (!rc)
		rc = sn_st_add(&st, "y", SN_I32, 1, &cnt, y, 0);
	if (!rc)
		rc = sn_st_add(&st, "x", R->dt, R->shape.ndim + 1, xs, x, 0);
	if (!rc)
		rc = shard_meta(R, &st, k);
	if (!rc)
		rc = sn_st_write(&st, R->staged[k]);
	sn_st_free(&st);
	free(x);
	free(y);
	if (!rc)
		R->nout = k + 1;
	return rc;
}

static int name_outputs(run *R, int nout)
{
	const sn_shard_opts *o = R->o;
	R->staged = calloc((size_t)nout, sizeof *R->staged);
	R->final = calloc((size_t)nout, sizeof *R->final);
	if (!R->staged || !R->final)
		return sn_fail(SN_ENOMEM, "out of memory");
	const char *gz = o->compress ? ".gz" : "";
	for (int k = 0; k < nout; k++) {
		int a, b;
		if (k < o->k) {
			a = asprintf(&R->final[k], "%s/%s-%03d.safetensors%s", o->outdir, o->prefix, k, gz);
			b = asprintf(&R->staged[k], "%s/%s-%03d.safetensors%s", R->stage, o->prefix, k, gz);
		} else {
			a = asprintf(&R->final[k], "%s/val.safetensors%s", o->outdir, gz);
			b = asprintf(&R->staged[k], "%s/val.safetensors%s", R->stage, gz);
		}
		if (a < 0 || b < 0) {
			R->final[k] = a < 0 ? NULL : R->final[k];
			R->staged[k] = b < 0 ? NULL : R->staged[k];
			return sn_fail(SN_ENOMEM, "out of memory");
		}
	}
	return 0;
}

static void count_bytes(run *R, int nout)
{
	for (int k = 0; k < nout; k++) {
		struct stat sb;
		if (stat(R->staged[k], &sb) == 0)
			R->r->bytes += (uint64_t)sb.st_size;
	}
}

static void run_free(run *R, int failed)
{
	int nout = R->o->k + 1;
	if (R->staging)
		remove_stage(R->stage);
	free(R->dir);
	free(R->parent);
	free(R->base);
	free(R->stage);
	for (int k = 0; k < nout; k++) {
		if (R->staged)
			free(R->staged[k]);
		if (R->final && (failed || !R->r->files || k >= R->r->nfiles))
			free(R->final[k]);
	}
	free(R->staged);
	if (failed || !R->r->files)
		free(R->final);
	for (int i = 0; i < R->nsrc; i++)
		sn_source_close(&R->src[i]);
	free(R->src);
	if (R->spool >= 0)
		close(R->spool);
	free(R->sbuf);
	free(R->labels);
	sn_labtab_free(&R->lt);
	free(R->hist);
	free(R->shift);
	free(R->s1);
	free(R->s2);
	free(R->mean);
	free(R->std);
	free(R->class_names);
	free(R->sources);
}

static int write_all(run *R)
{
	const sn_shard_opts *o = R->o;
	int64_t *order = malloc((size_t)R->n * sizeof *order);
	int64_t *off = malloc((size_t)(o->k + 2) * sizeof *off);
	int rc = !order || !off ? sn_fail(SN_ENOMEM, "out of memory") : split(R, order, off);
	if (rc)
		R->r->errfile = o->inputs[0];
	int nout = !rc && off[o->k + 1] > off[o->k] ? o->k + 1 : o->k;
	if (!rc && (rc = name_outputs(R, o->k + 1)))
		R->r->errfile = o->outdir;
	for (int k = 0; k < nout && !rc && !cancelled(o); k++) {
		if ((rc = write_shard(R, k, off, order)))
			R->r->errfile = o->outdir;
		else if (o->progress)
			o->progress(o->progress_ctx, "writing", k + 1, nout);
	}
	if (!rc && !cancelled(o)) {
		count_bytes(R, nout);
		if ((rc = publish(R)))
			R->r->errfile = o->outdir;
	}
	if (!rc) {
		R->r->val_records = off[o->k + 1] - off[o->k];
		R->r->nfiles = nout;
	}
	free(order);
	free(off);
	return rc;
}

int sn_shard_write(const sn_shard_opts *o, sn_shard_result *r)
{
	memset(r, 0, sizeof *r);
	run R = { .o = o, .r = r, .spool = -1 };
	int rc = check_opts(o);
	if (!rc && (rc = out_prepare(&R)))
		r->errfile = o->outdir;
	if (!rc)
		rc = open_sources(&R);
	if (!rc && (rc = stats_init(&R)))
		r->errfile = o->outdir;
	if (!rc)
		rc = stats_given(&R);
	if (!rc && (rc = spool_open(&R)))
		r->errfile = o->outdir;
	if (!rc)
		rc = read_all(&R);
	if (!rc && R.n == 0) {
		r->errfile = o->inputs[0];
		rc = sn_fail(SN_EFORMAT, "no records");
	}
	if (!rc)
		rc = finish_labels(&R);
	if (!rc && !R.mean && (rc = stats_finish(&R)))
		r->errfile = o->outdir;
	if (!rc && !cancelled(o))
		rc = write_all(&R);
	if (cancelled(o) && !R.published) {  /* whatever failed on the way was the signal */
		r->errfile = o->outdir;
		rc = sn_fail(SN_EIO, "interrupted");
	}
	if (!rc) {
		r->records = R.n;
		r->classes = R.classes;
		r->shards = o->k;
		r->mean = R.mean;
		r->std = R.std;
		R.mean = R.std = NULL;
		r->files = R.final;
	}
	run_free(&R, rc != 0);
	if (rc && !r->errfile)
		r->errfile = o->inputs && o->ninputs ? o->inputs[0] : "-";
	if (rc) {
		free(r->mean);
		free(r->std);
		r->files = NULL;
		r->nfiles = 0;
	}
	return rc;
}
