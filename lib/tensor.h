/* tensor.h: the lightweight tensor (dtype, shape, data) and half-float helpers.
 *
 * A tensor never owns a name's storage beyond its own `name` string; its data
 * is either owned (malloc'd, freed with the tensor) or borrowed (a view into an
 * mmap'd or decompressed file, or into a net's flat parameter buffer). */
#ifndef SN_TENSOR_H
#define SN_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define SN_MAX_DIMS 8

typedef enum {
	SN_F64, SN_F32, SN_F16, SN_BF16,
	SN_I64, SN_I32, SN_I16, SN_I8,
	SN_U64, SN_U32, SN_U16, SN_U8,
	SN_BOOL,
	SN_DTYPE_COUNT
} sn_dtype;

/* safetensors spelling: "F32", "BF16", "U8", "BOOL" ... */
const char *sn_dtype_name(sn_dtype dt);
/* 0 and *dt set, or SN_EFORMAT for a name that is not a safetensors dtype. */
int sn_dtype_parse(const char *name, sn_dtype *dt) SN_MUST_CHECK;
size_t sn_dtype_size(sn_dtype dt);

typedef struct {
	char *name;                    /* malloc'd, NUL-terminated */
	sn_dtype dtype;
	int ndim;                      /* 0 (scalar) .. SN_MAX_DIMS */
	int64_t shape[SN_MAX_DIMS];
	void *data;
	size_t nbytes;                 /* = numel * dtype size */
	int owned;                     /* data is malloc'd and freed with us */
} sn_tensor;

/* Element count, or -1 when the product overflows int64. */
int64_t sn_shape_numel(int ndim, const int64_t *shape);
int64_t sn_tensor_numel(const sn_tensor *t);

/* Element i of any numeric dtype as a double (unaligned data is fine). */
double sn_tensor_get(const sn_tensor *t, size_t i);

/* "[20,1,5,5]" into buf; returns buf. */
char *sn_shape_format(int ndim, const int64_t *shape, char *buf, size_t len);

float sn_f16_to_f32(uint16_t h);
uint16_t sn_f32_to_f16(float f);     /* round to nearest even */
float sn_bf16_to_f32(uint16_t h);
uint16_t sn_f32_to_bf16(float f);    /* round to nearest even */

/* Summary statistics over a tensor, in double. */
typedef struct {
	double min, max, mean, std, l2;
	int64_t nonfinite;             /* count of NaN / Inf elements */
} sn_tensor_stats;
void sn_tensor_stats_compute(const sn_tensor *t, sn_tensor_stats *s);

/* Element-wise comparison of two tensors with the same element count, in
 * double: max |a-b| and ||a-b|| / ||a|| (0 when both are 0, inf when only a
 * is).  Equal non-finite values (NaN and NaN, inf and inf) count as equal;
 * a non-finite value against anything else makes max_abs inf. */
typedef struct {
	double max_abs, rel_l2;
} sn_tensor_diff;
void sn_tensor_diff_compute(const sn_tensor *a, const sn_tensor *b, sn_tensor_diff *d);

#endif
