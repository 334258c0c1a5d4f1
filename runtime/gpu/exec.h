/* exec.h - INTERFACE OWNED BY GPU-LOWER (branch gpu-lower, issue #18).
 * Written by gpu-runtime from the contract between the two GPU branches so
 * that its callers (runtime/train, runtime/cmd) compile; at the merge take
 * gpu-lower's exec.h (and plan.h) and delete runtime/gpu/exec_missing.c.
 * A model's device program (StrataGpuProgram: PTX and launch plan, plan.h)
 * opened on an RtCuda at a batch shape: parameters, gradients, AdamW
 * moments and the arena live on the device; host copies move through the
 * calls below.  Every int call returns 0, else -1 with rt_gpu_error. */
#ifndef STRATA_GPU_EXEC_H
#define STRATA_GPU_EXEC_H
#include <stdint.h>

#include "gpu/cuda.h"

typedef struct StrataGpuProgram StrataGpuProgram; /* plan.h (gpu-lower) */
typedef struct RtGpuModel RtGpuModel;

/* AdamW of one step, as runtime/train/optim.c (decoupled decay on the
 * parameters the plan's decay mask marks).  step: this update's t, 1 for
 * the first (bias corrections 1 - beta^t); clip: the global gradient-norm
 * limit, 0 = off. */
typedef struct RtGpuAdamW {
    double lr, beta1, beta2, eps, weight_decay, clip;
    int64_t step;
} RtGpuAdamW;

/* Loads the PTX and allocates params/grads/m/v/arena for (B,T) batches. */
int rt_gpu_model_open(RtGpuModel **out, RtCuda *cu, const StrataGpuProgram *prog, int64_t B, int64_t T,
                      char *err, size_t errlen);
void rt_gpu_model_close(RtGpuModel *g);
int rt_gpu_set_params(RtGpuModel *g, const float *host);            /* (params_numel) */
int rt_gpu_get_params(RtGpuModel *g, float *host);
int rt_gpu_set_moments(RtGpuModel *g, const float *m, const float *v); /* AdamW state, for resume */
int rt_gpu_get_moments(RtGpuModel *g, float *m, float *v);          /* for checkpoints */
int rt_gpu_get_grads(RtGpuModel *g, float *host);                   /* for gradient checks */
/* Forward and backward of one (B,T) batch on the device; mask NULL = all
 * ones; accumulate: add to the gradients instead of overwriting them. */
int rt_gpu_train_step(RtGpuModel *g, const int32_t *tokens, const int32_t *targets, const float *mask,
                      int accumulate, double *loss);
/* Clip and AdamW on the device; *grad_norm: the norm before clipping. */
int rt_gpu_optim_step(RtGpuModel *g, const RtGpuAdamW *hp, double *grad_norm);
/* The logits (B,T,vocab) of a (B,T) batch, to host memory. */
int rt_gpu_forward(RtGpuModel *g, const int32_t *tokens, float *logits);
const char *rt_gpu_error(const RtGpuModel *g);
#endif
