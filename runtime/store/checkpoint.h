/* checkpoint.h - a training run's checkpoint: ONE safetensors file
 * (safetensors.h), OUT/checkpoint.safetensors, replaced atomically.
 *
 * Tensors, all F32, little-endian, row-major:
 *   NAME           every parameter under its StrataParam.name, with its
 *                  shape: a matrix [rows, cols], a vector [n], a scalar []
 *   optim.m.NAME   the optimizer's first moment of that parameter (same shape)
 *   optim.v.NAME   the second moment (same shape)
 * (A file written without optimizer state, e.g. by an exporter, is a valid
 * --init / eval / sample checkpoint; --resume needs the moments.)
 * Metadata (__metadata__, strings):
 *   format             "pt" (what Hugging Face loaders expect)
 *   strata.abi         STRATA_ABI_VERSION as text (RT_ABI_STRING)
 *   strata.model       the model file's text
 *   strata.model_path  the model file's name
 *   strata.config      the resolved config as JSON ({"vocab": 32, "d": 16, ...})
 *   strata.model_id    identity of the resolved model (16 hex digits, see
 *                      compiler/driver/ident.h; "" when not known)
 *   strata.sources     every source file of the model, imports and the
 *                      standard library included: {"name": "text", ...}
 *   strata.defines     the -D values and preset it was resolved with:
 *                      {"defines": ["d=32", ...], "preset": null}
 *   strata.state       the training state as a JSON object: "step" (updates
 *                      done), "optim_step" (the optimizer's t), "epoch" and
 *                      "pos" (the data loader's state), "seed", "tokens"
 *                      (trained on), "skipped" (NaN steps skipped),
 *                      "tokenizer" (path or ""), and every training option
 *                      under its flag's name without dashes, "-" as "_"
 *                      ("batch", "seq", "lr", "min_lr_ratio", "data",
 *                      "threads", ...; see train.h), and "data_id" and
 *                      "data_what": the identity of the training data
 *                      (16 hex digits) and its size in words.  Reals are
 *                      written with 17 significant digits, so they read
 *                      back bit-exactly.
 * Errors are malloc'd messages naming the checkpoint file and the tensor. */
#ifndef STRATA_CHECKPOINT_H
#define STRATA_CHECKPOINT_H
#include <stdbool.h>
#include <stdint.h>

#include "model_abi.h"

#define RT_ABI_STR2(x) #x
#define RT_ABI_STR1(x) RT_ABI_STR2(x)
/* STRATA_ABI_VERSION as a string, for checkpoints' strata.abi. */
#define RT_ABI_STRING RT_ABI_STR1(STRATA_ABI_VERSION)
#include "store/safetensors.h"

#define RT_CKPT_NAME "checkpoint.safetensors"

typedef struct RtCkptInfo {
    const char *source;       /* strata.model (NULL: "") */
    const char *model_path;   /* strata.model_path */
    const char *config_json;  /* strata.config */
    const char *state_json;   /* strata.state */
    const char *model_id;     /* strata.model_id */
    const char *sources_json; /* strata.sources */
    const char *defines_json; /* strata.defines */
} RtCkptInfo;

/* The shape a parameter has in a checkpoint; returns ndim (0, 1 or 2). */
int rt_ckpt_shape(const StrataParam *p, int64_t shape[2]);
/* Writes params (and m, v unless NULL), each desc->params_numel floats at
 * the parameters' offsets, with the metadata, atomically.  0 or -1. */
int rt_ckpt_write(const char *path, const StrataModelDesc *d, const float *params, const float *m, const float *v,
                  const RtCkptInfo *info, char **err);
/* Copies every parameter into params (params_numel floats; padding left
 * alone).  The file must hold exactly the model's parameters, F32, with
 * the model's shapes, plus optionally optim.m.* / optim.v.* tensors:
 * a missing tensor, an extra one or a shape mismatch is an error naming
 * the file, the tensor and both shapes; so is a NaN or an infinity in a
 * parameter (eval, sample, analyze, --init and --resume all refuse a
 * poisoned checkpoint).  0 or -1. */
int rt_ckpt_read_params(const RtSafetensors *st, const StrataModelDesc *d, float *params, char **err);
/* -1 with *err ("PATH: tensor 'NAME' holds NaN at element I (K of its N
 * values are NaN or infinite): ...") when x (n floats) is not all finite:
 * a run that diverged saved it, or the file is damaged. */
int rt_ckpt_check_finite(const char *path, const char *name, const float *x, int64_t n, char **err);
/* Copies the moments into m and v (params_numel floats each); every
 * parameter's optim.m.NAME and optim.v.NAME must be there, finite.  0 or
 * -1. */
int rt_ckpt_read_moments(const RtSafetensors *st, const StrataModelDesc *d, float *m, float *v, char **err);
#endif
