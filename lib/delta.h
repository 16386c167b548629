/* delta.h: the sn.delta.v1 file, what a worker sends instead of its weights:
 * NEW - BASE, exact (`none`, the XOR of the float bits) or quantised (`bf16`,
 * `int8`, `int4` with a scale per block), with error feedback through an
 * sn.residual.v1 file; and its reverse, BASE + delta = the weights again.
 * The formats are in sn-formats(5), the choices (block, scale) in sn-delta(1).
 *
 * Decoding is plain float32 arithmetic, one rounding per operation, so every
 * machine reconstructs the same weights bit for bit.  That needs FLT_EVAL_METHOD
 * 0 (SSE, NEON: not x87) and no FMA contraction: -std=c11 turns GCC's
 * -ffp-contract=fast into off, so keep the build in a strict ISO mode. */
#ifndef SN_DELTA_H
#define SN_DELTA_H

#include <stdint.h>

#include "error.h"
#include "st.h"

typedef enum {
	SN_DELTA_NONE,      /* U32: bits(NEW) XOR bits(BASE), lossless */
	SN_DELTA_BF16,      /* BF16: the difference, rounded to nearest even */
	SN_DELTA_INT8,      /* I8 in -127..127 and an F32 scale per block */
	SN_DELTA_INT4,      /* two 4-bit values in -7..7 per U8, F32 scale per block */
	SN_DELTA_SCHEMES
} sn_delta_scheme;

#define SN_DELTA_BLOCK_DEFAULT 64
#define SN_DELTA_BLOCK_MAX (1 << 24)

/* "none", "bf16", "int8", "int4". */
const char *sn_delta_scheme_name(sn_delta_scheme s);
int sn_delta_scheme_parse(const char *name, sn_delta_scheme *s) SN_MUST_CHECK;

typedef struct {
	sn_delta_scheme scheme;
	int block;                /* values per scale (int8, int4) */
	const char *feedback;     /* residual file: read if present, rewritten;
	                             NULL: no error feedback */
} sn_delta_opts;

void sn_delta_opts_default(sn_delta_opts *o);

/* What a diff or an apply did, for --json. */
typedef struct {
	sn_delta_scheme scheme;
	int block;
	int tensors;
	int64_t values;
	double max_abs_error;     /* diff: max |decoded delta - (NEW - BASE)| */
	double residual_max_abs;  /* diff with feedback: max |residual written| */
	uint32_t base_crc;
	const char *bad_path;     /* on failure: the file the error is about */
} sn_delta_summary;

/* 1 when st's format is sn.delta.v1. */
int sn_delta_is_delta(const sn_st *st);

/* Encode new_w - base (+ residual, a flat F32 array in base's tensor order,
 * or NULL) into delta (built from scratch, owned data).  residual_out (flat,
 * base order, may be NULL) receives NEW + residual - decode(delta), computed
 * in double: what quantisation dropped.  Both inputs must be sn.weights.v1
 * style F32 files with the same tensors (names, shapes) and finite values. */
int sn_delta_encode(const sn_st *base, const sn_st *new_w, const float *residual,
		    const sn_delta_opts *o, sn_st *delta, float *residual_out,
		    sn_delta_summary *s) SN_MUST_CHECK;

/* Validate delta against base (format, scheme, block, base_crc32, one entry
 * per base tensor of the right dtype and shape, scale lengths, finite
 * non-negative scales, reserved codes) and build weights = base + decode:
 * an sn.weights.v1 file with base's net and tensor order, and the delta's
 * round, steps, examples, loss and seconds.  SN_EMISMATCH "made against other
 * weights" when base_crc32 is not base's. */
int sn_delta_decode(const sn_st *base, const sn_st *delta, sn_st *weights) SN_MUST_CHECK;

/* The files: DELTA from BASE and NEW (with the residual, committed together
 * by sn_st_write_all, the delta last); NEW from BASE and DELTA. */
int sn_delta_diff_files(const char *base, const char *new_w, const char *out,
			const sn_delta_opts *o, sn_delta_summary *s) SN_MUST_CHECK;
int sn_delta_apply_files(const char *base, const char *delta, const char *out,
			 sn_delta_summary *s) SN_MUST_CHECK;

/* Validate an sn.residual.v1 file against base's tensors and load it into a
 * flat F32 array (base order); a file that does not exist gives zeros. */
int sn_delta_residual_load(const char *path, const sn_st *base, float *flat) SN_MUST_CHECK;

/* A delta on its own, without its base (sn-info): validate what can be
 * validated (metadata, dtypes for the scheme, a scale of a fitting length for
 * each int8/int4 entry, finite non-negative scales, reserved codes, no stray
 * tensors) and describe each entry by its decoded differences. */
typedef struct {
	char *name;               /* the weight tensor it belongs to */
	int64_t values;           /* int4 with an ambiguous odd count: one more */
	int64_t changed;          /* values whose difference is not 0 (none: bits) */
	sn_tensor_stats stats;    /* of the decoded differences (none: all 0) */
} sn_delta_entry;

int sn_delta_inspect(const sn_st *delta, sn_delta_entry **entries, int *n) SN_MUST_CHECK;
void sn_delta_entries_free(sn_delta_entry *entries, int n);

/* A residual on its own: format, F32 tensors, finite values. */
int sn_delta_residual_check(const sn_st *residual) SN_MUST_CHECK;

#endif
