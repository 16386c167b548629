/* csv.c: CSV/TSV tables: one record per line, float features and a label
 * column (a class id or any string).  The first row may be a header. */
#include "reader.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LABEL_NAMES 65536

/* Split a line in place into fields.  A field may be double-quoted
 * ("a,b" and "say ""hi"""), on one line only. */
static int csv_split(sn_source *s, char *line)
{
	int n = 0;
	char *p = line;
	for (;;) {
		if (n == s->fieldcap) {
			int cap = s->fieldcap ? 2 * s->fieldcap : 64;
			char **f = realloc(s->fields, (size_t)cap * sizeof *f);
			if (!f)
				return sn_fail(SN_ENOMEM, "out of memory");
			s->fields = f;
			s->fieldcap = cap;
		}
		while (*p == ' ')
			p++;
		if (*p == '"') {
			char *w = ++p;
			s->fields[n++] = w;
			for (;;) {
				if (!*p)
					return sn_fail(SN_EFORMAT, "line %lld: unterminated quote",
						       (long long)s->line);
				if (*p == '"' && p[1] == '"')
					*w++ = '"', p += 2;
				else if (*p == '"')
					break;
				else
					*w++ = *p++;
			}
			*w = 0;
			p++;
			while (*p == ' ')
				p++;
			if (*p && *p != s->delim)
				return sn_fail(SN_EFORMAT, "line %lld: text after a closing quote",
					       (long long)s->line);
		} else {
			s->fields[n++] = p;
			p = strchr(p, s->delim);
			if (!p)
				p = s->fields[n - 1] + strlen(s->fields[n - 1]);
		}
		if (!*p)
			return n;
		*p++ = 0;
	}
}

static char *trim(char *f)
{
	while (isspace((unsigned char)*f))
		f++;
	size_t n = strlen(f);
	while (n && isspace((unsigned char)f[n - 1]))
		f[--n] = 0;
	return f;
}

static int parse_float(const char *f, float *v)
{
	char *end;
	errno = 0;
	*v = strtof(f, &end);
	while (end != f && isspace((unsigned char)*end))
		end++;
	return end == f || *end || !isfinite(*v) ? -1 : 0;
}

/* A class id: plain decimal digits, below SN_DATA_MAX_CLASSES; else -1. */
static int64_t parse_class_id(const char *f)
{
	if (!isdigit((unsigned char)f[0]))
		return -1;
	char *end;
	errno = 0;
	long v = strtol(f, &end, 10);
	return errno || *end || v >= SN_DATA_MAX_CLASSES ? -1 : v;
}

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

static int labtab_grow(sn_labtab *t)
{
	int cap = t->cap ? 2 * t->cap : 64;
	char **names = realloc(t->names, (size_t)cap * sizeof *names);
	if (names)
		t->names = names;
	int64_t *value = realloc(t->value, (size_t)cap * sizeof *value);
	if (value)
		t->value = value;
	int64_t *line = realloc(t->line, (size_t)cap * sizeof *line);
	if (line)
		t->line = line;
	const char **file = realloc(t->file, (size_t)cap * sizeof *file);
	if (file)
		t->file = file;
	int *slot = calloc((size_t)cap * 2, sizeof *slot);
	if (!names || !value || !line || !file || !slot) {
		free(slot);
		return sn_fail(SN_ENOMEM, "out of memory");
	}
	free(t->slot);
	t->slot = slot;
	t->nslot = cap * 2;
	t->cap = cap;
	for (int i = 0; i < t->n; i++) {
		size_t j = hash_str(t->names[i]) & (size_t)(t->nslot - 1);
		while (t->slot[j])
			j = (j + 1) & (size_t)(t->nslot - 1);
		t->slot[j] = i + 1;
	}
	return 0;
}

/* The provisional id of a label string: its rank of first appearance. */
static int labtab_id(sn_labtab *t, const char *name, const sn_source *s, int32_t *id)
{
	if (t->n == t->cap) {
		if (t->n == MAX_LABEL_NAMES)
			return sn_fail(SN_EFORMAT, "line %lld: more than %d distinct labels",
				       (long long)s->line, MAX_LABEL_NAMES);
		int rc = labtab_grow(t);
		if (rc)
			return rc;
	}
	size_t j = hash_str(name) & (size_t)(t->nslot - 1);
	for (; t->slot[j]; j = (j + 1) & (size_t)(t->nslot - 1)) {
		if (!strcmp(t->names[t->slot[j] - 1], name)) {
			*id = t->slot[j] - 1;
			return 0;
		}
	}
	char *copy = strdup(name);
	if (!copy)
		return sn_fail(SN_ENOMEM, "out of memory");
	t->names[t->n] = copy;
	t->value[t->n] = parse_class_id(name);
	t->line[t->n] = s->line;
	t->file[t->n] = s->path;
	t->slot[j] = t->n + 1;
	*id = t->n++;
	return 0;
}

void sn_labtab_free(sn_labtab *t)
{
	for (int i = 0; i < t->n; i++)
		free(t->names[i]);
	free(t->names);
	free(t->value);
	free(t->line);
	free(t->file);
	free(t->slot);
	memset(t, 0, sizeof *t);
}

/* The next line that is not blank, or 0 at the end. */
static int csv_line(sn_source *s, char **line)
{
	size_t len = 0;
	for (;;) {
		int rc = sn_in_line(&s->in, line, &len);
		if (rc <= 0)
			return rc;
		s->line++;
		if (memchr(*line, 0, len))
			return sn_fail(SN_EFORMAT, "line %lld: a NUL byte in text", (long long)s->line);
		if (strspn(*line, " \t") < len)
			return 1;
	}
}

static int csv_label_col(sn_source *s, int header)
{
	const char *lc = s->o->label_col;
	if (!lc) {
		s->labcol = s->nfields - 1;
		return 0;
	}
	int64_t v = parse_class_id(lc);
	if (v >= 0) {
		if (v >= s->nfields)
			return sn_fail(SN_EINVAL, "--label-col %s: only %d columns", lc, s->nfields);
		s->labcol = (int)v;
		return 0;
	}
	if (!header)
		return sn_fail(SN_EINVAL, "--label-col %s: no header row to find it in", lc);
	for (int i = 0; i < s->nfields; i++) {
		if (!strcmp(trim(s->fields[i]), lc)) {
			s->labcol = i;
			return 0;
		}
	}
	return sn_fail(SN_EINVAL, "--label-col %s: no such column in the header", lc);
}

/* The first row is a header when asked, when --label-col names a column,
 * or when a feature cell of it is not a number. */
static int csv_is_header(sn_source *s)
{
	const sn_shard_opts *o = s->o;
	if (o->header >= 0)
		return o->header;
	if (o->label_col && parse_class_id(o->label_col) < 0)
		return 1;
	int lab = o->label_col ? (int)parse_class_id(o->label_col) : s->nfields - 1;
	for (int i = 0; i < s->nfields; i++) {
		float v;
		if (i != lab && parse_float(s->fields[i], &v))
			return 1;
	}
	return 0;
}

static int csv_open(sn_source *s)
{
	const sn_shard_opts *o = s->o;
	char *line;
	int rc = csv_line(s, &line);
	if (rc <= 0)
		return rc ? rc : sn_fail(SN_EFORMAT, "empty input");
	if (o->delimiter)
		s->delim = o->delimiter;
	else if (!s->delim)
		s->delim = strchr(line, '\t') ? '\t' : strchr(line, ',') ? ',' : strchr(line, ';') ? ';' : ',';
	s->pending = strdup(line);
	if (!s->pending)
		return sn_fail(SN_ENOMEM, "out of memory");
	if ((rc = csv_split(s, line)) < 0)
		return rc;
	s->nfields = rc;
	if (s->nfields < 2)
		return sn_fail(SN_EFORMAT, "line %lld: %d field; need features and a label",
			       (long long)s->line, s->nfields);
	int header = csv_is_header(s);
	if ((rc = csv_label_col(s, header)))
		return rc;
	if (header) {
		free(s->pending);
		s->pending = NULL;
	}
	s->dt = SN_F32;
	s->shape = (sn_shape){ 1, { s->nfields - 1, 0, 0 } };
	s->recbytes = (size_t)(s->nfields - 1) * sizeof(float);
	s->n = -1;
	return 0;
}

static int csv_next(sn_source *s, void *x, int32_t *y)
{
	char *line = s->pending;
	int rc = 1;
	if (!line && (rc = csv_line(s, &line)) <= 0) {
		if (rc == 0 && s->done == 0)
			return sn_fail(SN_EFORMAT, "no records");
		return rc;
	}
	int n = csv_split(s, line);
	if (n < 0)
		goto out;
	if (n != s->nfields) {
		rc = sn_fail(SN_EFORMAT, "line %lld: expected %d fields, got %d", (long long)s->line,
			     s->nfields, n);
		goto out;
	}
	float *v = x;
	for (int i = 0, j = 0; i < n; i++) {
		if (i == s->labcol)
			continue;
		if (parse_float(s->fields[i], &v[j++])) {
			rc = sn_fail(SN_EFORMAT, "line %lld: field %d: \"%s\" is not a finite number",
				     (long long)s->line, i + 1, trim(s->fields[i]));
			goto out;
		}
	}
	rc = labtab_id(s->labtab, trim(s->fields[s->labcol]), s, y);
	if (!rc) {
		rc = 1;
		s->done++;
	}
out:
	if (line == s->pending) {
		free(s->pending);
		s->pending = NULL;
	}
	return n < 0 ? n : rc;
}

/* ---- Labels and classes ------------------------------------------------ */

static const sn_labtab *sort_tab;

static int cmp_names(const void *a, const void *b)
{
	return strcmp(sort_tab->names[*(const int *)a], sort_tab->names[*(const int *)b]);
}

int sn_labtab_finish(const sn_labtab *t, int classes, int32_t *labels, int64_t n,
		     int *natural, char **class_names, const char **errfile)
{
	int strings = 0, rc = 0;
	for (int i = 0; i < t->n; i++)
		strings |= t->value[i] < 0;
	int32_t *map = malloc((size_t)t->n * sizeof *map);
	int *order = malloc((size_t)t->n * sizeof *order);
	json_t *names = json_array();
	if (!map || !order || !names) {
		rc = sn_fail(SN_ENOMEM, "out of memory");
		goto out;
	}
	*natural = 0;
	for (int i = 0; i < t->n; i++) {
		order[i] = i;
		if (!strings && t->value[i] >= *natural)
			*natural = (int)t->value[i] + 1;
	}
	if (strings) {
		sort_tab = t;
		qsort(order, (size_t)t->n, sizeof *order, cmp_names);
		*natural = t->n;
		for (int i = 0; i < t->n; i++)
			if (json_array_append_new(names, json_string(t->names[order[i]])))
				rc = sn_fail(SN_ENOMEM, "out of memory");
		*class_names = rc ? NULL : json_dumps(names, JSON_COMPACT);
		if (!rc && !*class_names)
			rc = sn_fail(SN_ENOMEM, "out of memory");
	}
	for (int i = 0; i < t->n && !rc; i++) {
		int id = strings ? 0 : (int)t->value[order[i]];
		map[order[i]] = strings ? i : id;
		if (classes && (strings ? t->n : id + 1) > classes) {
			*errfile = t->file[order[i]];
			rc = sn_fail(SN_EFORMAT, "line %lld: label \"%s\" outside %d classes",
				     (long long)t->line[order[i]], t->names[order[i]], classes);
		}
	}
	for (int64_t i = 0; i < n && !rc; i++)
		labels[i] = map[labels[i]];
out:
	json_decref(names);
	free(map);
	free(order);
	return rc;
}

const sn_reader sn_reader_csv = {
	.name = "csv", .format = SN_INPUT_CSV, .open = csv_open, .next = csv_next,
};
