/* gpu_step_bench.c - times a model's training step on the GPU (issue #18):
 *   bench/gpu_step_bench MODEL.strata [--preset NAME] [-D NAME=VALUE]... [--batch B] [--seq T]
 *                        [--precision fp32|bf16] [--steps K] [--peak TFLOPS]
 * Lowers the model with lower_gpu_program for device 0's architecture, runs
 * it through runtime/gpu/exec.c (small random parameters, random tokens),
 * two warm-up steps, then K (default 10) steps of forward + backward +
 * clip + AdamW, each ending in a synchronising download (the loss, the
 * norm).  Prints each step's wall time, then tokens/s and the model FLOP
 * rate: the matrix products of the step as the IR has them (2 M N K for
 * every MATMUL and MATMUL_GRAD_W, forward and backward) plus causal
 * attention (2 B T^2 width forward, twice that backward), against --peak
 * (default 989 TFLOP/s, the H100/H200 dense bf16 peak) as MFU.  Built with
 * the CUDA driver layer (runtime/gpu/cuda.c); without a GPU it says why and
 * exits 77. */
#include "ir/ad.h"
#include "front/ast.h"
#include "ir/fuse.h"
#include "gpu/exec.h"
#include "lower/lower.h"
#include "resolve/sema.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct Args {
    const char *model, *preset, *defines[64];
    int ndefines, batch, seq, steps, bf16;
    double peak;
} Args;

static bool parse(int argc, char **argv, Args *a)
{
    *a = (Args){.batch = 64, .seq = 256, .steps = 10, .peak = 989};
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(s, "-D") && v && a->ndefines < 64)
            a->defines[a->ndefines++] = argv[++i];
        else if (!strcmp(s, "--preset") && v)
            a->preset = argv[++i];
        else if (!strcmp(s, "--batch") && v)
            a->batch = atoi(argv[++i]);
        else if (!strcmp(s, "--seq") && v)
            a->seq = atoi(argv[++i]);
        else if (!strcmp(s, "--steps") && v)
            a->steps = atoi(argv[++i]);
        else if (!strcmp(s, "--peak") && v)
            a->peak = atof(argv[++i]);
        else if (!strcmp(s, "--precision") && v && (!strcmp(v, "fp32") || !strcmp(v, "bf16")))
            a->bf16 = !strcmp(argv[++i], "bf16");
        else if (s[0] != '-' && !a->model)
            a->model = s;
        else
            return false;
    }
    return a->model && a->batch > 0 && a->seq > 0 && a->steps > 0 && a->peak > 0;
}

static bool load(IrGraph *g, Program *prog, const Args *a)
{
    Diag d;
    diag_init(&d, stderr);
    const char *why = NULL;
    SrcFile *src = src_read(a->model, &why);
    if (!src) {
        fprintf(stderr, "gpu_step_bench: cannot read %s: %s\n", a->model, why);
        return false;
    }
    SemaOptions opt = {.defines = (const char **)a->defines, .ndefines = a->ndefines, .preset = a->preset};
    g->model_name = a->model;
    bool ok = ast_load(prog, &d, src) && sema_resolve(prog, &opt, &d, g);
    diag_finish(&d);
    if (ok) {
        ad_build(g);
        fuse_graph(g);
    }
    return ok;
}

/* Model FLOPs of one training step (see the file comment). */
static double step_flops(const IrGraph *g, int64_t B, int64_t T)
{
    double f = 0, BT = (double)B * (double)T;
    for (int i = 0; i < g->nodes.n; i++) {
        const IrNode *x = g->nodes.v[i];
        if (x->op == IR_MATMUL)
            f += 2.0 * (x->tok ? BT : (double)x->rows) * (double)x->width * (double)x->in[0]->width;
        else if (x->op == IR_MATMUL_GRAD_W)
            f += 2.0 * (double)x->rows * (double)x->width * (x->in[0]->tok ? BT : (double)x->in[0]->rows);
        else if (x->op == IR_ATTENTION)
            f += 3 * 2.0 * (double)B * (double)T * (double)T * (double)x->width;
    }
    return f;
}

int main(int argc, char **argv)
{
    Args a;
    if (!parse(argc, argv, &a)) {
        fprintf(stderr, "usage: gpu_step_bench MODEL.strata [--preset NAME] [-D NAME=VALUE]... [--batch B] "
                        "[--seq T] [--precision fp32|bf16] [--steps K] [--peak TFLOPS]\n");
        return 2;
    }
    char err[4096];
    RtCuda *cu;
    if (rt_cuda_open(&cu, 0, err, sizeof err)) {
        printf("SKIP: no GPU: %s\n", err);
        return 77;
    }
    IrGraph g;
    Program prog = {0};
    ir_init(&g);
    if (!load(&g, &prog, &a))
        return 1;
    double t0 = now();
    StrataGpuProgram *p;
    LowerGpuOptions go = {.sm = rt_cuda_cc(cu) >= 90 ? 90 : 80,
                          .precision = a.bf16 ? STRATA_PRECISION_BF16 : STRATA_PRECISION_FP32};
    if (lower_gpu_program(&g, &go, &p, err, sizeof err)) {
        fprintf(stderr, "gpu_step_bench: %s\n", err);
        return 1;
    }
    double t1 = now();
    RtGpuModel *m;
    if (rt_gpu_model_open(&m, cu, p, a.batch, a.seq, err, sizeof err)) {
        fprintf(stderr, "gpu_step_bench: %s\n", err);
        return 1;
    }
    printf("%s%s%s on %s (sm_%d, %d SMs), %s, B x T = %d x %d: %d kernels, %d launches, lowered in %.2f s, "
           "loaded in %.2f s\n",
           a.model, a.preset ? " --preset " : "", a.preset ? a.preset : "", rt_cuda_name(cu), rt_cuda_cc(cu),
           rt_cuda_sm_count(cu), a.bf16 ? "bf16" : "fp32", a.batch, a.seq, p->nkernels, p->nlaunches, t1 - t0,
           now() - t1);
    int64_t n = p->params_numel, bt = (int64_t)a.batch * a.seq, count = 0;
    float *params = calloc((size_t)n, sizeof *params);
    uint64_t s = 1;
    for (int i = 0; i < p->nparams; i++) {
        const IrParam *ip = g.params.v[i];
        count += ip->numel;
        for (int64_t k = 0; k < ip->numel; k++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            params[p->params[i].offset + k] =
                ip->init.kind == INIT_ONES ? 1.0f : (float)(((double)(s >> 11) * 0x1.0p-53 - 0.5) * 0.04);
        }
    }
    int32_t *tokens = malloc((size_t)bt * sizeof *tokens), *targets = malloc((size_t)bt * sizeof *targets);
    for (int64_t i = 0; i < bt; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        tokens[i] = (int32_t)((s >> 33) % (uint64_t)p->vocab);
        targets[i] = (int32_t)((s >> 13) % (uint64_t)p->vocab);
    }
    if (rt_gpu_set_params(m, params)) {
        fprintf(stderr, "gpu_step_bench: %s\n", rt_gpu_error(m));
        return 1;
    }
    double flops = step_flops(&g, a.batch, a.seq), total = 0;
    printf("%lld parameters; %.3g model FLOPs per step (%.3g per token)\n", (long long)count, flops, flops / (double)bt);
    for (int k = -2; k < a.steps; k++) {
        double loss, norm, ts = now();
        RtGpuAdamW hp = {.lr = 1e-4, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1, .clip = 1,
                         .step = k + 3};
        if (rt_gpu_train_step(m, tokens, targets, NULL, 0, &loss) || rt_gpu_optim_step(m, &hp, &norm)) {
            fprintf(stderr, "gpu_step_bench: %s\n", rt_gpu_error(m));
            return 1;
        }
        double dt = now() - ts;
        if (k >= 0)
            total += dt;
        printf("%s step %d: %.2f ms, loss %.6f, grad norm %.4g\n", k < 0 ? "warm-up" : "timed", k < 0 ? k + 3 : k + 1,
               1e3 * dt, loss, norm);
    }
    double per = total / a.steps;
    printf("summary: %s%s%s %s B x T = %d x %d: %.2f ms per step, %.0f tokens/s, %.1f TFLOP/s, MFU %.1f%% of %.0f "
           "TFLOP/s\n",
           a.model, a.preset ? " --preset " : "", a.preset ? a.preset : "", a.bf16 ? "bf16" : "fp32", a.batch, a.seq,
           1e3 * per, (double)bt / per, flops / per / 1e12, 100 * flops / per / (a.peak * 1e12), a.peak);
    rt_gpu_model_close(m);
    lower_gpu_program_free(p);
    rt_cuda_close(cu);
    free(params);
    free(tokens);
    free(targets);
    return 0;
}
