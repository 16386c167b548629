/* reader.h: the input readers behind sn-shard, internal to libsn.
 *
 * A reader turns one input file into records: sn_source_open() picks the
 * reader (from --format, the name, then the first bytes) and calls its
 * open(), which reads the header and sets dt, shape, recbytes and n; then
 * next() yields one record at a time, raw (u8 or f32) as the shard stores
 * it.  Each reader is one file: idx.c, cifar.c, csv.c, sn.c; table.c holds
 * the table and the dispatch; stream.c the buffered plain/gzip/stdin input
 * they all read through. */
#ifndef SN_READER_H
#define SN_READER_H

#include <stddef.h>
#include <stdint.h>

#include "data.h"
#include "error.h"
#include "gz.h"
#include "shard.h"

/* ---- stream.c: plain, gzip or stdin, with a look-ahead buffer -------- */
/* (gzip read strictly: see gz.h) */

typedef struct {
	sn_gz *gz;
	unsigned char *buf;
	size_t cap, pos, len;
	int eof;
} sn_instream;

#define SN_IN_CHUNK (1u << 18)

int sn_in_open(sn_instream *s, const char *path) SN_MUST_CHECK;
void sn_in_close(sn_instream *s);
/* Keep at least `want` bytes buffered (fewer only at the end of input). */
int sn_in_fill(sn_instream *s, size_t want) SN_MUST_CHECK;
/* Up to n bytes into dst; *got says how many (short only at the end). */
int sn_in_read(sn_instream *s, void *dst, size_t n, size_t *got) SN_MUST_CHECK;
/* The next line without its newline (and CR), NUL-terminated in the
 * buffer; 1 for a line, 0 at the end. */
int sn_in_line(sn_instream *s, char **line, size_t *len) SN_MUST_CHECK;
/* Size of a plain regular file, or -1 for gzip, pipes and stdin. */
int64_t sn_in_plain_size(const sn_instream *s, const char *path);

/* ---- csv.c: distinct CSV label strings ------------------------------- */

/* In order of first appearance, shared by every CSV input of a run; an
 * open addressing table maps a string to its provisional id. */
typedef struct {
	char **names;
	int64_t *value;          /* the label as a class id, or -1 if not one */
	int64_t *line;           /* where it first appeared, for messages */
	const char **file;
	int n, cap;
	int *slot;               /* id + 1, 0 = empty */
	int nslot;
} sn_labtab;

void sn_labtab_free(sn_labtab *t);
/* Turn the provisional ids in labels[0..n) into classes: class ids when
 * every label is one, else names in sorted order (then *class_names is
 * their JSON array).  *natural: the classes they imply.  A label beyond
 * `classes` (if > 0) fails and sets *errfile. */
int sn_labtab_finish(const sn_labtab *t, int classes, int32_t *labels, int64_t n,
		     int *natural, char **class_names, const char **errfile) SN_MUST_CHECK;

/* ---- One input file ---------------------------------------------------- */

typedef struct sn_source {
	const sn_shard_opts *o;
	const char *path, *labpath;
	const char *errpath;     /* the file the last failure is about */
	sn_labtab *labtab;       /* CSV: the run's shared label table */
	const struct sn_reader *reader;
	sn_instream in, lab;
	sn_dtype dt;
	sn_shape shape;
	size_t recbytes;
	int64_t n, done;         /* n: records declared by the file, -1 unknown */
	int classes;             /* the classes the file implies (max label + 1) */
	uint8_t *labels;         /* IDX: the whole label file */
	unsigned char *rec;      /* CIFAR: one raw record */
	int reclen, labskip;
	char delim;              /* CSV */
	int nfields, labcol;
	int64_t line;
	char **fields;
	int fieldcap;
	char *pending;           /* CSV: a first line that was data, not a header */
	sn_data d;               /* sn data file */
	int data_open;
} sn_source;

typedef struct sn_reader {
	const char *name;        /* as --format spells it */
	sn_input_format format;
	int opens_path;          /* opens s->path itself rather than s->in */
	int (*open)(sn_source *s);
	/* 1: a record in x (recbytes) and *y; 0: the end; < 0: an error. */
	int (*next)(sn_source *s, void *x, int32_t *y);
} sn_reader;

extern const sn_reader sn_reader_idx, sn_reader_cifar, sn_reader_csv, sn_reader_sn;

/* s->o, path, labpath and labtab set; picks the reader and opens. */
int sn_source_open(sn_source *s) SN_MUST_CHECK;
int sn_source_next(sn_source *s, void *x, int32_t *y) SN_MUST_CHECK;
void sn_source_close(sn_source *s);

/* A label must lie below --classes, or below the classes the format
 * implies (natural, 0 if none). */
int sn_reader_check_class(const sn_shard_opts *o, int64_t rec, int label, int natural) SN_MUST_CHECK;

#endif
