/* model.h - a compiled model as the runtime sees it: the descriptor and
 * entry points of model ABI v4 (model_abi.h) with the source it came from,
 * and what every command needs from a checkpoint of it.  A standalone
 * trainer's generated main fills an RtModel with the linked-in model; the
 * JIT (`strata train MODEL ...`) fills one with the compiled code.
 * Implemented in runtime/train/model.c. */
#ifndef STRATA_MODEL_H
#define STRATA_MODEL_H
#include <stdint.h>

#include "model_abi.h"

struct json_t; /* jansson's */

typedef struct RtModel {
    const StrataModelDesc *desc;  /* fp32 build (real_bytes 4) */
    StrataStepFn train_step;      /* strata_train_step */
    StrataStepFn forward;         /* strata_forward */
    StrataStepFn decode;          /* strata_decode (NULL: sampling runs strata_forward on the window) */
    const char *source;           /* the model file's text, kept in checkpoints */
    const char *path;             /* the model file's name, for messages and checkpoints */
    const char *config_json;      /* the resolved config, e.g. {"vocab": 256, "d": 128, "L": 8, ...} */
    int32_t precision;            /* StrataStep.precision of every call the runtime makes (STRATA_PRECISION_*) */
    /* What the model is, kept in checkpoints and compared by --resume
     * (compiler/driver/ident.h); NULL when not known (then the config and
     * source stand in for them). */
    const char *model_id;         /* 16 hex digits: hash of the resolved config, parameters and graph */
    const char *sources_json;     /* every source file, imports included: {"name": "text", ...} */
    const char *defines_json;     /* {"defines": ["d=32", ...], "preset": null} as given */
    /* The model's device program for --device cuda (PTX and launch plan,
     * runtime/gpu/plan.h), NULL when none was made (the JIT makes one only
     * for --device cuda, a built trainer has one when built with --device
     * cuda), and the precision its matrix products were compiled for. */
    const struct StrataGpuProgram *gpu;
    int32_t gpu_precision;        /* STRATA_PRECISION_* */
} RtModel;

/* "fp32" or "bf16" -> STRATA_PRECISION_*, else -1. */
int rt_precision_parse(const char *s);
const char *rt_precision_name(int precision);

/* A checkpoint's weights in a new 64-byte-aligned buffer (free it) and its
 * strata.state (NULL if none; json_decref it); NULL with a message that
 * starts with prog if the file does not fit the model or holds a NaN or an
 * infinity.  A checkpoint of another model with the same shapes gets a
 * warning (train/ident.h). */
float *rt_load_weights(const RtModel *m, const char *prog, const char *path, struct json_t **state);
/* The config's "ctx", else 256. */
int64_t rt_default_seq(const RtModel *m);
/* An integer of a checkpoint's state, else dflt. */
int64_t rt_state_int(struct json_t *state, const char *key, int64_t dflt);
#endif
