/* table.c: the table of readers, and picking one for an input: --format,
 * else the file name, else the first bytes. */
#include "reader.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const sn_reader *const sn_readers[] = {
	&sn_reader_idx, &sn_reader_cifar, &sn_reader_csv, &sn_reader_sn, NULL,
};

static int ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a >= b && strcasecmp(s + a - b, suffix) == 0;
}

static int kind_from_name(const char *path, char *delim)
{
	char name[4096];
	snprintf(name, sizeof name, "%s", path);
	if (ends_with(name, ".gz"))
		name[strlen(name) - 3] = 0;
	if (ends_with(name, ".safetensors"))
		return SN_INPUT_DATA;
	if (ends_with(name, ".tsv") || ends_with(name, ".tab"))
		*delim = '\t';
	else if (ends_with(name, ".csv"))
		*delim = ',';
	if (*delim)
		return SN_INPUT_CSV;
	if (ends_with(name, ".bin"))
		return SN_INPUT_CIFAR;
	return SN_INPUT_AUTO;
}

static int kind_sniff(sn_instream *in)
{
	int rc = sn_in_fill(in, 4096);
	if (rc)
		return rc;
	const unsigned char *b = in->buf + in->pos;
	size_t n = in->len - in->pos;
	if (n == 0)
		return sn_fail(SN_EFORMAT, "empty input");
	/* any IDX magic (type 0x08..0x0e, 1..4 dims), so a wrong one is named */
	if (n >= 4 && b[0] == 0 && b[1] == 0 && b[2] >= 8 && b[2] <= 0x0e && b[3] >= 1 && b[3] <= 4)
		return SN_INPUT_IDX;
	if (n >= 9 && b[8] == '{' && b[5] == 0 && b[6] == 0 && b[7] == 0)
		return SN_INPUT_DATA;
	for (size_t i = 0; i < n && i < 4096; i++)
		if (b[i] < 32 && b[i] != '\t' && b[i] != '\n' && b[i] != '\r')
			return SN_INPUT_CIFAR;
	return SN_INPUT_CSV;
}

int sn_reader_check_class(const sn_shard_opts *o, int64_t rec, int label, int natural)
{
	int lim = o->classes ? o->classes : natural;
	if (lim && label >= lim)
		return sn_fail(SN_EFORMAT, "record %lld: label %d outside [0,%d)",
			       (long long)rec, label, lim);
	return 0;
}

static const sn_reader *reader_of(sn_input_format f)
{
	for (int i = 0; sn_readers[i]; i++)
		if (sn_readers[i]->format == f)
			return sn_readers[i];
	return NULL;
}

int sn_source_open(sn_source *s)
{
	s->errpath = s->path;
	int f = s->o->format != SN_INPUT_AUTO ? (int)s->o->format : kind_from_name(s->path, &s->delim);
	if (f != SN_INPUT_AUTO && (s->reader = reader_of(f))->opens_path && strcmp(s->path, "-"))
		return s->reader->open(s);
	int rc = sn_in_open(&s->in, s->path);
	if (rc)
		return rc;
	if (f == SN_INPUT_AUTO && (rc = f = kind_sniff(&s->in)) < 0)
		return rc;
	s->reader = reader_of(f);
	if (s->reader->format != SN_INPUT_IDX && s->labpath)
		return sn_fail(SN_EINVAL, "--labels is only for IDX images");
	return s->reader->open(s);
}

int sn_source_next(sn_source *s, void *x, int32_t *y)
{
	return s->reader->next(s, x, y);
}

void sn_source_close(sn_source *s)
{
	sn_in_close(&s->in);
	sn_in_close(&s->lab);
	free(s->labels);
	free(s->rec);
	free(s->fields);
	free(s->pending);
	if (s->data_open)
		sn_data_close(&s->d);
	memset(s, 0, sizeof *s);
}
