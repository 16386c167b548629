/* layers.h: the layer interface.  One file per kind in lib/layers/, listed in
 * the static table in lib/layers/table.c.  Adding a kind touches that table
 * and its own file, nothing else.
 *
 * Shapes are per example: a layer sees `in` and produces `out`, each either
 * [C,H,W] (ndim 3) or [D] (ndim 1).  Activations are batches laid out
 * [B, ...] contiguously, float32, NCHW.  Parameters live in the net's flat
 * buffers; a layer gets pointers to its own slices (w[i], dw[i]). */
#ifndef SN_LAYERS_H
#define SN_LAYERS_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "parallel.h"
#include "rng.h"

/* SN_VECTOR_CLONES: a function compiled once per x86 vector width
 * (AVX-512, AVX2, SSE2), the widest the CPU has chosen when the program
 * loads.  For loops that vectorise exactly: elementwise, or sums kept in
 * fixed lanes.  Every clone does the same IEEE operations in the same
 * order (C11 mode contracts no multiply-add), so the bits are the same
 * on any x86 CPU (tests/unit/test_layers.c builds them without clones, and
 * compares).  -DSN_NO_VECTOR_CLONES turns them off. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && \
	!defined(SN_NO_VECTOR_CLONES)
#define SN_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SN_VECTOR_CLONES
#endif

/* Options a layer may take in YAML.  Each kind says which it accepts. */
enum sn_opt {
	SN_OPT_FILTERS,   /* conv: output channels                 */
	SN_OPT_KERNEL,    /* conv/pool: square kernel size         */
	SN_OPT_STRIDE,    /* conv/pool                             */
	SN_OPT_PAD,       /* conv/pool: zero (conv) / -inf (max) pad */
	SN_OPT_UNITS,     /* dense: outputs                        */
	SN_OPT_SLOPE,     /* leaky_relu: negative slope (0.01)     */
	SN_OPT_RATE,      /* dropout: drop probability (0.5)       */
	SN_OPT_EPS,       /* batchnorm: epsilon (1e-5)             */
	SN_OPT_MOMENTUM,  /* batchnorm: running-stat momentum (0.1, PyTorch's) */
	SN_OPT_BIAS,      /* conv/dense: 1 to have a bias (default 1) */
	SN_OPT_COUNT
};
extern const char *const sn_opt_names[SN_OPT_COUNT];  /* "filters", ... */

typedef struct {
	int ndim;          /* 1 or 3 */
	int64_t d[3];      /* [D] or [C,H,W] */
} sn_shape;
int64_t sn_shape_size(const sn_shape *s);

enum sn_init { SN_INIT_FAN, SN_INIT_ZERO, SN_INIT_ONE };

#define SN_MAX_LAYER_PARAMS 4
#define SN_MAX_INPUTS 16     /* of one layer: an inception block joins 4 */

/* One named tensor of a layer: "<layer>.<suffix>", e.g. conv1.weight. */
typedef struct {
	char suffix[16];        /* "weight", "bias", "running_mean", "running_var" */
	int ndim;
	int64_t shape[4];       /* PyTorch layout: conv [out,in,kh,kw], dense [out,in] */
	int64_t numel;
	int trainable;          /* 0 for batchnorm running statistics */
	enum sn_init init;
	int64_t fan_in, fan_out;
} sn_param_desc;

typedef struct sn_layer sn_layer;

/* What an evaluation pass may apply to a layer's outputs as they are
 * stored, in place of the batchnorm and the relu that follow it (model.c
 * sets it for a conv or an add whose output only they read): per channel f,
 * y = gamma[f] * ((x - mean[f]) * invstd[f]) + beta[f] where mean is not
 * NULL, then y < 0 ? 0 : y where relu is set.  These are batchnorm's and
 * relu's own float operations, so the bits are theirs. */
typedef struct {
	const float *mean, *invstd, *gamma, *beta;
	int relu;
} sn_epilogue;

/* What a forward/backward pass needs beyond its tensors. */
typedef struct {
	int training;            /* batchnorm batch stats, dropout active */
	sn_rng *rng;             /* dropout masks */
	float *scratch;          /* temporary space, see scratch_*: thread t's ... */
	int64_t scratch_stride;  /* ... at scratch + t * scratch_stride */
	sn_parallel *pool;       /* runs a layer's units; NULL: all on the caller */
	const int32_t *labels;   /* loss layer: [B] */
	double loss;             /* loss layer writes the mean loss here */
	const sn_epilogue *epilogue;   /* forward, kinds with takes_epilogue: or NULL */
} sn_pass;

/* Thread t's scratch area (see sn_parallel_fn). */
static inline float *sn_pass_scratch(const sn_pass *p, int thread)
{
	return p->scratch + thread * p->scratch_stride;
}

typedef struct {
	const char *name;            /* YAML kind: "conv", "relu", ... */
	const char *name_prefix;     /* default layer names: "conv" -> conv1; NULL if unnamed */
	unsigned options;            /* bit set of (1u << SN_OPT_*) accepted */
	int is_loss;                 /* must be the last layer */
	/* Evaluation fusion (sn_epilogue): takes_epilogue, the parts whose
	 * p->epilogue forward applies ((1u << SN_EPILOGUE_*), 0: none);
	 * epilogue_part, the part this layer can be folded into one as:
	 * SN_EPILOGUE_BATCHNORM or SN_EPILOGUE_RELU (0: it cannot). */
	unsigned takes_epilogue;
	int epilogue_part;

	/* Validate options (l->opt[], l->opt_set), set l->out, the parameter
	 * descriptors, FLOPs and workspace sizes from l->in.  Returns 0 or
	 * SN_ENET with a detail ("kernel 7 larger than input 5x5"). */
	int (*setup)(sn_layer *l);

	/* out[B, out] = f(in[B, in]). */
	void (*forward)(sn_layer *l, const float *in, float *out, int B, sn_pass *p);

	/* Given dout = dL/dout, accumulate dL/dw into l->dw[] (+=) and write
	 * dL/din into din (overwrite), unless din is NULL (the net's input). */
	void (*backward)(sn_layer *l, const float *in, const float *out,
			 const float *dout, float *din, int B, sn_pass *p);

	/* Kinds that join several inputs (add, concat) set these instead of
	 * forward and backward: in[k] is input k, [B, l->ins[k]].  Backward
	 * adds (+=) dL/din[k] into din[k], so an input listed twice gets both
	 * shares; din[k] is NULL for the net's input. */
	void (*forward_join)(sn_layer *l, const float *const *in, float *out, int B,
			     sn_pass *p);
	void (*backward_join)(sn_layer *l, const float *const *in, const float *out,
			      const float *dout, float *const *din, int B, sn_pass *p);
} sn_layer_kind;

struct sn_layer {
	const sn_layer_kind *kind;
	char name[64];                 /* "conv1" (given or defaulted) */
	int line, column;              /* where it was defined in YAML (1-based) */

	double opt[SN_OPT_COUNT];      /* option values ... */
	unsigned opt_set;              /* ... and which were given in YAML */

	/* What the layer reads: activation 0 is the net's input, j+1 is layer
	 * j's output.  Without inputs: in YAML, one input, the previous layer. */
	int ninputs;
	int input[SN_MAX_INPUTS];
	sn_shape ins[SN_MAX_INPUTS];   /* their shapes */
	sn_shape in, out;              /* in = ins[0] */

	int nparams;
	sn_param_desc params[SN_MAX_LAYER_PARAMS];
	float *w[SN_MAX_LAYER_PARAMS];     /* views into the net's flat buffers */
	float *dw[SN_MAX_LAYER_PARAMS];    /* NULL for non-trainable */

	int64_t flops_forward;         /* per example; multiply-add = 2 FLOPs */
	int64_t flops_backward;        /* per example */

	/* Workspace sizes in floats, set by setup.  `saved` keeps values from
	 * forward to backward (masks, argmax, normalised inputs) and is private
	 * to the layer: saved_per_example*B + saved_fixed floats at l->saved.
	 * `scratch` is temporary and shared by all layers (sn_pass.scratch):
	 * scratch_per_example*B + scratch_fixed floats for each thread.
	 * Results must not depend on the thread count (lib/parallel.h). */
	int64_t saved_per_example, saved_fixed;
	int64_t scratch_per_example, scratch_fixed;
	float *saved;
};

/* The kinds, NULL-terminated, and lookup by YAML name. */
extern const sn_layer_kind *const sn_layer_kinds[];
const sn_layer_kind *sn_layer_kind_find(const char *name);

enum { SN_EPILOGUE_BATCHNORM = 1, SN_EPILOGUE_RELU };

/* A batchnorm's evaluation mean and 1/sqrt(var + eps) per channel, as its
 * forward pass uses them. */
void sn_batchnorm_eval_coefficients(const sn_layer *l, float *mean, float *invstd);

/* acc[0..n) += x[0..n) on pool's threads (add.c), the same bits on any. */
void sn_add_into(sn_parallel *pool, float *acc, const float *x, int64_t n);

/* Naive reference kernels, kept beside the fast ones for tests. */
void sn_conv_forward_naive(const sn_layer *l, const float *in, float *out, int B);
void sn_dense_forward_naive(const sn_layer *l, const float *in, float *out, int B);
/* Max pooling window by window, and the flat index in its plane of each
 * output's input (the first in reading order among equals, NaN winning). */
void sn_maxpool_forward_naive(const sn_layer *l, const float *in, float *out, int32_t *arg,
			      int B);
void sn_avgpool_forward_naive(const sn_layer *l, const float *in, float *out, int B);

/* The direct convolution (lib/layers/conv_direct.c): whether it takes a
 * stride-1 or stride-2 layer of F filters, k x k, OH x OW outputs on this
 * CPU, and the layer applied to one example whose H x W planes are already
 * padded; for stride 2 each plane is split in two, its even columns then its
 * odd ones, (W + 1) / 2 floats a row ([C][2][H][(W + 1) / 2]).
 * sn_avx512_kernels (1): whether the AVX-512 kernels (this one, and max
 * pooling of stride 2 in pool.c) run where the CPU has AVX-512; tests and
 * benchmarks set it to 0 to run the portable paths. */
extern int sn_avx512_kernels;
int sn_conv_direct_takes(int64_t F, int64_t k, int64_t OH, int64_t OW);
void sn_conv_direct(const float *in, int64_t C, int64_t H, int64_t W, int64_t stride,
		    const float *w, int64_t F, int64_t k, const float *bias,
		    const sn_epilogue *epilogue, float *out);
/* Where it takes the layer, its weight gradient over n examples: x, the
 * examples' unpadded C x H x W planes, xstride floats apart; dy, their
 * NCHW output gradients, dystride apart; dwt[((c*k + ki)*k + kj)*F + f]
 * += the sums. */
typedef struct {
	const float *x, *dy;
	int64_t xstride, dystride, n, C, H, W, pad, F, k;
	float *dwt;
} sn_conv_dw_args;
void sn_conv_direct_dw(const sn_conv_dw_args *a);

/* Helpers for the kinds' setup functions (lib/layers/table.c).
 * sn_layer_opt_int: option o as an integer >= min, or dflt when it was not
 * given; dflt < 0 makes it required.  SN_ENET names the option on failure. */
int sn_layer_opt_int(const sn_layer *l, enum sn_opt o, int64_t dflt, int64_t min,
		     int64_t *v) SN_MUST_CHECK;
/* Append a parameter descriptor to l->params[] (at most SN_MAX_LAYER_PARAMS). */
void sn_layer_add_param(sn_layer *l, const char *suffix, int ndim, const int64_t *shape,
			int trainable, enum sn_init init, int64_t fan_in, int64_t fan_out);

#endif
