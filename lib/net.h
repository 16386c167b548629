/* net.h: a net definition (YAML) becomes an sn_net: its layers with inferred
 * shapes, parameter table and FLOPs, its flat parameter buffers, and its
 * solver defaults.  The YAML grammar is in sn-formats(5):
 *
 *   name: lenet
 *   input: [1, 28, 28]            # [C,H,W] or [D]
 *   classes: 10                   # optional; else from the last layer
 *   layers:
 *     - {type: conv, name: conv1, filters: 20, kernel: 5}
 *     - {type: maxpool, kernel: 2, stride: 2}
 *     - relu                      # a bare kind takes no options
 *     - {type: dense, units: 10}  # dense flattens [C,H,W] input itself
 *     - softmax_cross_entropy
 *
 * A layer reads the previous layer's output unless it lists `inputs:`,
 * earlier layers by name or `input`; add and concat join several:
 *     - {type: conv, name: a, filters: 1, kernel: 3, pad: 1}
 *     - {type: add, inputs: [a, input]}
 *   solver: {type: momentum, lr: 0.01, batch: 64}
 *
 * Unknown keys, kinds and options are errors with file:line:column. */
#ifndef SN_NET_H
#define SN_NET_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "layers.h"
#include "solver.h"
#include "st.h"

/* A named view into the flat buffers: the table behind weight files. */
typedef struct {
	char name[96];          /* "conv1.weight" */
	int ndim;
	int64_t shape[4];
	int64_t numel;
	int trainable;
	float *data;            /* into net->param (trainable) or net->buffer */
	float *grad;            /* into net->grad, NULL if not trainable */
	sn_layer *layer;
	int index;              /* into layer->params[] */
} sn_param_view;

typedef struct {
	char *name;             /* "lenet" (or the file's base name) */
	char *yaml;             /* the YAML text, stored in weight files */
	char *warnings;         /* NULL, or lines "SOURCE:LINE:COL: what\n" for sn-init */
	sn_shape input;
	int classes;            /* outputs of the loss layer */

	sn_layer *layers;
	int nlayers;

	sn_param_view *views;   /* trainable first, in layer order, then buffers */
	int nviews;

	float *param;           /* all trainable parameters, flat */
	float *grad;            /* same length */
	size_t nparam;
	float *buffer;          /* non-trainable tensors (BN running stats) */
	size_t nbuffer;

	int64_t flops_forward;  /* per example, sums of the layers' */
	int64_t flops_backward;

	sn_solver_config solver; /* defaults, then the YAML `solver:` section */
} sn_net;

/* Parse YAML text; `source` names it in error details ("lenet.yaml:7:5:
 * unknown layer kind \"convv\"").  Builds the layers, infers shapes, and
 * allocates the flat buffers (zeroed). */
int sn_net_parse(const char *yaml, size_t len, const char *source, sn_net *net) SN_MUST_CHECK;
/* Read a YAML file ("-" for stdin) and parse it. */
int sn_net_load(const char *path, sn_net *net) SN_MUST_CHECK;
void sn_net_free(sn_net *net);

sn_param_view *sn_net_find(const sn_net *net, const char *name);

/* Seeded initialisation: method "he", "xavier" or "gaussian" (then std).
 * Weights draw from N(0, 2/fan_in), U(+-sqrt(6/(fan_in+fan_out))) or
 * N(0, std^2); biases 0; batchnorm weight 1, bias 0, running_var 1. */
int sn_net_init_weights(sn_net *net, const char *method, double std, uint64_t seed) SN_MUST_CHECK;

/* Copy a weights file's tensors into the flat buffers.  Every view must be
 * present as F32 with the same shape, and no other tensor may be present:
 * SN_EMISMATCH names the first that differs.  A NaN or an infinity is
 * SN_ENONFINITE naming the tensor and index: the file is bad input, and
 * whatever a net computes from it would be blamed on the data. */
int sn_net_load_weights(sn_net *net, const sn_st *st) SN_MUST_CHECK;

/* Open a weights file: read it, parse the net from its `net` metadata, load
 * the tensors.  The st is freed before returning. */
int sn_net_from_weights(const char *path, sn_net *net, sn_st *meta_out) SN_MUST_CHECK;

/* Add every view as an F32 tensor (borrowed) plus format=sn.weights.v1 and
 * net=<yaml> metadata to st, ready for sn_st_write. */
int sn_net_to_st(const sn_net *net, sn_st *st) SN_MUST_CHECK;

#endif
