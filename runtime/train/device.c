/* device.c - --device (device.h): the flag, the driver and device opened
 * before anything else, the model's device program, and the validation
 * loss through the device's forward pass. */
#include "train/device.h"
#include "train/sample.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int rt_device_open(RtDevice *d, const char *spec, const char *prog, const char *cmd, int talk)
{
    *d = (RtDevice){0};
    snprintf(d->name, sizeof d->name, "cpu");
    if (!spec || !strcmp(spec, "cpu"))
        return 0;
    long ord = 0;
    if (!strncmp(spec, "cuda:", 5)) {
        char *end;
        errno = 0;
        ord = strtol(spec + 5, &end, 10);
        if (!spec[5] || *end || errno || ord < 0 || ord > 1023)
            ord = -1;
    } else if (strcmp(spec, "cuda"))
        ord = -1;
    if (ord < 0) {
        fprintf(stderr, "%s %s: --device must be cpu, cuda or cuda:N (N a device number), not '%s'\n", prog, cmd,
                spec);
        return 2;
    }
    char err[1024];
    if (rt_cuda_open(&d->cu, (int)ord, err, sizeof err)) {
        fprintf(stderr, "%s %s: --device %s: %s\n", prog, cmd, spec, err);
        return 1;
    }
    d->cuda = 1;
    d->ordinal = (int)ord;
    snprintf(d->name, sizeof d->name, "cuda:%d", (int)ord);
    if (talk) {
        int v = rt_cuda_driver_version(d->cu);
        fprintf(stderr, "%s: device %s: %s (sm_%d, %d SMs, %.1f GiB, CUDA driver %d.%d)\n", prog, d->name,
                rt_cuda_name(d->cu), rt_cuda_cc(d->cu), rt_cuda_sm_count(d->cu),
                (double)rt_cuda_total_mem(d->cu) / (1 << 30), v / 1000, v % 1000 / 10);
    }
    return 0;
}

void rt_device_close(RtDevice *d)
{
    rt_cuda_close(d->cu);
    d->cu = NULL;
}

int rt_device_model(RtDevice *d, const RtModel *m, int precision, int64_t B, int64_t T, const char *prog,
                    RtGpuModel **out)
{
    *out = NULL;
    if (!m->gpu) {
        fprintf(stderr, "%s: --device %s: this trainer has no device program (build it with strata build "
                        "--device cuda, or run strata train MODEL --device cuda)\n", prog, d->name);
        return 1;
    }
    if (m->gpu_precision != precision) {
        fprintf(stderr, "%s: --device %s: the device program was compiled for --precision %s, the run asks for "
                        "%s (give --precision %s, or compile for %s)\n", prog, d->name,
                rt_precision_name(m->gpu_precision), rt_precision_name(precision),
                rt_precision_name(m->gpu_precision), rt_precision_name(precision));
        return 1;
    }
    char err[1024];
    if (rt_gpu_model_open(out, d->cu, m->gpu, B, T, err, sizeof err)) {
        fprintf(stderr, "%s: --device %s: %s\n", prog, d->name, err);
        return 1;
    }
    return 0;
}

static int gpu_forward(void *g, const int32_t *tokens, float *logits)
{
    return rt_gpu_forward(g, tokens, logits);
}

int rt_gpu_eval_loss(RtGpuModel *g, int64_t vocab, RtLoader *l, int64_t batches, float *logits, double *loss,
                     int64_t *ntok)
{
    return rt_mean_xent(l, batches, vocab, logits, gpu_forward, g, loss, ntok);
}
