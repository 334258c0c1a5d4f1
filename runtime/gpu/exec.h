/* exec.h - a compiled model run on the GPU (issue #18): the program of
 * compiler/lower/nvptx.c (runtime/gpu/plan.h: PTX and launch plan) loaded
 * on an RtCuda (cuda.h) for one batch shape B x T, with the parameters,
 * gradients, AdamW moments and the arena in device memory.  The calls
 * mirror the CPU path: a training step is forward + backward (gradients
 * overwritten, or added with accumulate), the optimizer step clips to a
 * global norm and applies AdamW as runtime/train/optim.c does, element by
 * element with the same float operations.  Host buffers are the caller's.
 * Every int function returns 0, or -1 with rt_gpu_error(g) saying why.
 * Memory: rt_gpu_model_open allocates the device buffers, close frees
 * them; the program must outlive the model (it is not copied). */
#ifndef STRATA_GPU_EXEC_H
#define STRATA_GPU_EXEC_H
#include "gpu/cuda.h"
#include "gpu/plan.h"

#include <stddef.h>
#include <stdint.h>

typedef struct RtGpuModel RtGpuModel;

/* One AdamW update: step is its number t (1 for the first), as RtAdamW.step
 * after the increment; clip > 0 clips the gradients to that global norm
 * first (torch's clip_grad_norm_), 0 does not. */
typedef struct RtGpuAdamW {
    double lr, beta1, beta2, eps, weight_decay, clip;
    int64_t step;
} RtGpuAdamW;

/* Loads the PTX, allocates params/grads/m/v (zeroed) and the arena for
 * B x T; the parameters start at zero (rt_gpu_set_params). */
int rt_gpu_model_open(RtGpuModel **out, RtCuda *cu, const StrataGpuProgram *prog, int64_t B, int64_t T, char *err,
                      size_t errlen);
void rt_gpu_model_close(RtGpuModel *g);
int rt_gpu_set_params(RtGpuModel *g, const float *host /* (params_numel) */);
int rt_gpu_get_params(RtGpuModel *g, float *host /* (params_numel) */);
int rt_gpu_set_moments(RtGpuModel *g, const float *m, const float *v);   /* (params_numel) each, for resume */
int rt_gpu_get_moments(RtGpuModel *g, float *m, float *v);              /* for checkpoints */
int rt_gpu_get_grads(RtGpuModel *g, float *host /* (params_numel) */);
/* Forward and backward of one batch: tokens, targets (B*T); mask (B*T) or
 * NULL (all ones); gradients overwritten (accumulate 0) or added to; the
 * mean loss over unmasked tokens into *loss. */
int rt_gpu_train_step(RtGpuModel *g, const int32_t *tokens, const int32_t *targets, const float *mask,
                      int accumulate, double *loss);
/* Clip (hp->clip > 0) and AdamW on the device; the norm before clipping
 * into *grad_norm (may be NULL). */
int rt_gpu_optim_step(RtGpuModel *g, const RtGpuAdamW *hp, double *grad_norm);
/* The logits (B, T, vocab) of a batch, into host memory. */
int rt_gpu_forward(RtGpuModel *g, const int32_t *tokens, float *logits);
const char *rt_gpu_error(const RtGpuModel *g);
#endif
