/* shard.h: the shard writer behind sn-shard.  Reads every input through
 * the readers (lib/readers/), spools the records, computes normalisation
 * statistics, splits them, and commits K sn.data.v1 shards (+ val) as one
 * set (lib/shard.c). */
#ifndef SN_SHARD_H
#define SN_SHARD_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "data.h"
#include "error.h"

#define SN_SHARD_MAX 999

typedef enum {
	SN_SPLIT_SHUFFLE,      /* seeded permutation, then contiguous chunks */
	SN_SPLIT_CONTIGUOUS,   /* input order, contiguous chunks */
	SN_SPLIT_ROUND_ROBIN,  /* record i to shard i mod K */
	SN_SPLIT_STRATIFY      /* each class shuffled, dealt round-robin */
} sn_split;

typedef enum {
	SN_INPUT_AUTO,         /* from the name, then from the first bytes */
	SN_INPUT_IDX, SN_INPUT_CIFAR, SN_INPUT_CSV, SN_INPUT_DATA
} sn_input_format;

typedef struct {
	const char *const *inputs;   /* "-" is stdin */
	int ninputs;
	const char *const *labels;   /* IDX label files, paired with IDX inputs */
	int nlabels;
	const char *outdir, *prefix; /* prefix default "shard" */
	int k;                       /* shards, 1..SN_SHARD_MAX */
	int compress;                /* .safetensors.gz */
	sn_split split;
	uint64_t seed;
	double val;                  /* fraction for DIR/val.safetensors, [0,1) */
	int64_t limit;               /* first records only; 0 = all */
	int normalize;               /* 0: mean 0, std 1 */
	const char *stats_from;      /* copy mean/std from this data file */
	int classes;                 /* 0: from the input */
	sn_input_format format;
	int cifar100;                /* -1 auto (file size), 0, 1 */
	int cifar_coarse;            /* CIFAR-100: coarse (20) instead of fine */
	int header;                  /* CSV: -1 auto, 0 none, 1 first row */
	char delimiter;              /* CSV: 0 from the extension or first line */
	const char *label_col;       /* CSV: name or 0-based index; NULL = last */
	/* Called now and then from the reading pass and once per shard. */
	void (*progress)(void *ctx, const char *phase, int64_t done, int64_t total);
	void *progress_ctx;
	/* Set (by a signal handler) to stop early: the run then fails with
	 * "interrupted" and removes what it wrote, like any other failure. */
	volatile sig_atomic_t *cancel;
} sn_shard_opts;

typedef struct {
	int64_t records;             /* read (after --limit) */
	int64_t val_records;
	int classes, shards;
	uint64_t bytes;              /* total size of the files written */
	char *mean, *std;            /* the JSON arrays written to metadata */
	char **files;                /* the paths written, shards then val */
	int nfiles;
	const char *errfile;         /* on failure: the input or dir at fault */
} sn_shard_result;

void sn_shard_opts_init(sn_shard_opts *o);

/* Read every input (IDX with its labels, CIFAR-10/100 binary, CSV/TSV, or
 * sn data files), split it into o->k shards (+ val) in o->outdir.  Records
 * are spooled to an unlinked temporary file in outdir, so memory stays at
 * one shard plus the per-record label and index arrays; all shards are
 * written under hidden staging names and renamed only when every one is
 * complete, so a failure leaves no shard behind. */
int sn_shard_write(const sn_shard_opts *o, sn_shard_result *r) SN_MUST_CHECK;
void sn_shard_result_free(sn_shard_result *r);

#endif
