/* data.h: sn.data.v1 data files (shards): open, validate, and gather
 * normalised minibatches.  Writing them is shard.h's job.
 *
 * Normalisation, applied as a batch is read: u8 values first become v/255,
 * then (v - mean[c]) / std[c] per channel c (one channel for [N,D] tables,
 * where mean/std have one entry or D entries). */
#ifndef SN_DATA_H
#define SN_DATA_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "layers.h"
#include "st.h"

#define SN_DATA_MAX_CHANNELS 4096
#define SN_DATA_MAX_CLASSES (1 << 24)

typedef struct {
	sn_st st;
	const sn_tensor *x;     /* [N,C,H,W] or [N,D], U8 or F32 */
	const sn_tensor *y;     /* [N], I32 or U8 */
	int64_t n;
	sn_shape shape;         /* per example: [C,H,W] or [D] */
	int classes;
	int nstats;             /* entries in mean/std: channels, or D for tables */
	float *mean, *std;
} sn_data;

/* Open and validate a data file (format sn.data.v1, x/y present with
 * matching N, labels in [0, classes), f32 x finite, mean/std well formed
 * with every std large enough to divide by).  Bad input is SN_EFORMAT,
 * never SN_ENONFINITE, which means a run diverged. */
int sn_data_open(const char *path, sn_data *d) SN_MUST_CHECK;
/* The same for a file already in memory (copied); flags as sn_st_read's
 * (the fuzzers skip the crc32). */
int sn_data_open_buffer(const void *buf, size_t len, unsigned flags, sn_data *d) SN_MUST_CHECK;
void sn_data_close(sn_data *d);

/* Label i (y may be U8 or I32, and need not be aligned). */
int32_t sn_data_label(const sn_data *d, int64_t i);
/* Fails (SN_EFORMAT, naming the record) if a label is outside [0,classes). */
int sn_data_check_labels(const sn_data *d, int classes) SN_MUST_CHECK;

/* Gather examples idx[0..B) into x[B, shape] (normalised float) and y[B]. */
void sn_data_batch(const sn_data *d, const int64_t *idx, int B, float *x, int32_t *y);

#endif
