/* exec_missing.c - DELETE AT THE MERGE with branch gpu-lower, which owns
 * runtime/gpu/exec.c.  On the gpu-runtime branch alone the device executor
 * does not exist: rt_gpu_model_open says so, and nothing else can be
 * reached (no RtGpuModel is ever made).  It lets this branch link and its
 * CPU-side tests run; it is not an implementation. */
#include "gpu/exec.h"

#include <stdio.h>

int rt_gpu_model_open(RtGpuModel **out, RtCuda *cu, const StrataGpuProgram *prog, int64_t B, int64_t T,
                      char *err, size_t errlen)
{
    (void)cu, (void)prog, (void)B, (void)T;
    *out = NULL;
    snprintf(err, errlen, "this build has no GPU executor (runtime/gpu/exec.c comes with the gpu-lower branch of "
                          "issue #18)");
    return -1;
}

void rt_gpu_model_close(RtGpuModel *g) { (void)g; }
int rt_gpu_set_params(RtGpuModel *g, const float *host) { (void)g, (void)host; return -1; }
int rt_gpu_get_params(RtGpuModel *g, float *host) { (void)g, (void)host; return -1; }
int rt_gpu_set_moments(RtGpuModel *g, const float *m, const float *v) { (void)g, (void)m, (void)v; return -1; }
int rt_gpu_get_moments(RtGpuModel *g, float *m, float *v) { (void)g, (void)m, (void)v; return -1; }
int rt_gpu_get_grads(RtGpuModel *g, float *host) { (void)g, (void)host; return -1; }
int rt_gpu_train_step(RtGpuModel *g, const int32_t *tokens, const int32_t *targets, const float *mask,
                      int accumulate, double *loss)
{
    (void)g, (void)tokens, (void)targets, (void)mask, (void)accumulate, (void)loss;
    return -1;
}
int rt_gpu_optim_step(RtGpuModel *g, const RtGpuAdamW *hp, double *grad_norm)
{
    (void)g, (void)hp, (void)grad_norm;
    return -1;
}
int rt_gpu_forward(RtGpuModel *g, const int32_t *tokens, float *logits)
{
    (void)g, (void)tokens, (void)logits;
    return -1;
}
const char *rt_gpu_error(const RtGpuModel *g)
{
    (void)g;
    return "this build has no GPU executor";
}
