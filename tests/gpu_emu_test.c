/* gpu_emu_test.c - the GPU path run without a GPU (issue #18): each model
 * of models/ at gradcheck's tiny sizes is lowered by the GPU lowering with
 * its kernels built for this host (lower_gpu_emulation: the same kernel
 * code and launch plan as the PTX, with thread ids and barriers through
 * hooks), linked into a shared object, and run by runtime/gpu/exec.c on a
 * fake of cuda.h (below: host memory, the GPU threads of one CTA at a time
 * as coroutines that switch at bar.sync).  Checked against the fp64
 * interpreter (compiler/ir/interp.c): the loss, every gradient and the
 * logits within 2e-4 relative (fp32, as tests/lower_test.c); gradients
 * with accumulate are twice those without; one optimizer step (norm,
 * clipping, AdamW) equals runtime/train/optim.c's on the same gradients;
 * the bf16 program (tensor-core products, mma emulated per warp) against
 * the CPU's bf16 step.
 * What this does not test: the PTX itself (tests/ptx_test.c assembles it),
 * the approximate lg2/ex2 of PTX (replaced here by exact log2/exp2),
 * warps, and the device memory model.  Skips (77) without a C compiler.
 *
 * Built with -DGPU_DEVICE (tests/gpu_device_test, when the tree has the
 * CUDA driver layer runtime/gpu/cuda.c) the same checks run the PTX on
 * device 0 through that layer instead; without a driver or a device it
 * skips (77) saying why. */
#include "gpu/cuda.h"
#include "gpu/exec.h"
#include "lower/lower.h"
#include "lower_case.h"
#include "train/optim.h"

#include <dlfcn.h>
#include <glob.h>
#include <math.h>
#include <ucontext.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef GPU_DEVICE
/* ---- the fake driver ---- */

struct RtCuda {
    void *so;                  /* the emulated module */
};

struct RtCudaKernel {
    void (*fn)(void **args);
};

/* GPU threads as coroutines (ucontext) on this OS thread: a CTA's threads
 * run round-robin, each until its next barrier or its end, so a barrier
 * holds until every thread of the CTA has reached it (every kernel has its
 * barriers on paths that all threads of a CTA take). */
typedef struct Co {
    ucontext_t ctx;
    int64_t reg[9];            /* tid.xyz, ctaid.xyz, ntid.xyz */
    int done;
} Co;

#define EMU_STACK (256 * 1024)
static ucontext_t emu_sched;
static Co *emu_cur, *emu_co;
static char *emu_stacks;
static unsigned emu_cap;
static void (*emu_fn)(void **);
static void **emu_args;

static int64_t emu_sreg(int32_t code)
{
    return emu_cur->reg[code];
}

static void emu_barrier(void)
{
    swapcontext(&emu_cur->ctx, &emu_sched);
}

/* mma.sync m16n8k16 bf16 of one warp, called by each of its lanes: the
 * lanes' fragments meet in a table (layouts as in nvptx_kern.c, from the
 * PTX ISA), each lane computes its four outputs, fp32 sums in k order. */
static struct {
    int32_t a[4], b[2];
    float c[4];
} mma_in[1024];

static float bf16_half(int32_t reg, int hi)
{
    uint32_t u = ((uint32_t)reg >> (hi ? 16 : 0) & 0xffffu) << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void emu_mma(const int32_t *a, const int32_t *b, const float *c, float *d)
{
    Co *me = emu_cur;
    int64_t tid = me->reg[0] + me->reg[6] * (me->reg[1] + me->reg[7] * me->reg[2]);
    memcpy(mma_in[tid].a, a, sizeof mma_in[tid].a);
    memcpy(mma_in[tid].b, b, sizeof mma_in[tid].b);
    memcpy(mma_in[tid].c, c, sizeof mma_in[tid].c);
    emu_barrier();
    int64_t w0 = tid / 32 * 32, lane = tid % 32;
    float A[16][16], Bm[16][8];
    for (int L = 0; L < 32; L++) {
        int g = L / 4, t = L % 4;
        const int32_t *ra = mma_in[w0 + L].a, *rb = mma_in[w0 + L].b;
        for (int h = 0; h < 2; h++) {
            A[g][2 * t + h] = bf16_half(ra[0], h);
            A[g + 8][2 * t + h] = bf16_half(ra[1], h);
            A[g][2 * t + 8 + h] = bf16_half(ra[2], h);
            A[g + 8][2 * t + 8 + h] = bf16_half(ra[3], h);
            Bm[2 * t + h][g] = bf16_half(rb[0], h);
            Bm[2 * t + 8 + h][g] = bf16_half(rb[1], h);
        }
    }
    int g = (int)lane / 4, t = (int)lane % 4;
    for (int i = 0; i < 4; i++) {
        int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
        float sum = 0;
        for (int k = 0; k < 16; k++)
            sum += A[row][k] * Bm[k][col];
        d[i] = mma_in[tid].c[i] + sum;
    }
    emu_barrier();
}

static void emu_main(void)
{
    emu_fn(emu_args);
    emu_cur->done = 1;
}

static void *pending_so;       /* what rt_cuda_load_ptx "loads" */

int rt_cuda_open(RtCuda **out, int ordinal, char *err, size_t errlen)
{
    *out = calloc(1, sizeof **out);
    return 0;
}

void rt_cuda_close(RtCuda *cu)
{
    free(cu);
}

const char *rt_cuda_name(const RtCuda *cu) { return "emulated"; }
int rt_cuda_cc(const RtCuda *cu) { return 90; }
int rt_cuda_sm_count(const RtCuda *cu) { return 1; }

int rt_cuda_alloc(RtCuda *cu, uint64_t *dptr, size_t bytes, char *err, size_t errlen)
{
    void *p = malloc(bytes);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    memset(p, 0xff, bytes); /* NaN: what is read before it is written shows */
    *dptr = (uint64_t)(uintptr_t)p;
    return 0;
}

void rt_cuda_free(RtCuda *cu, uint64_t dptr)
{
    free((void *)(uintptr_t)dptr);
}

int rt_cuda_upload(RtCuda *cu, uint64_t dst, const void *src, size_t bytes, char *err, size_t errlen)
{
    memcpy((void *)(uintptr_t)dst, src, bytes);
    return 0;
}

int rt_cuda_download(RtCuda *cu, void *dst, uint64_t src, size_t bytes, char *err, size_t errlen)
{
    memcpy(dst, (void *)(uintptr_t)src, bytes);
    return 0;
}

int rt_cuda_memset0(RtCuda *cu, uint64_t dst, size_t bytes, char *err, size_t errlen)
{
    memset((void *)(uintptr_t)dst, 0, bytes);
    return 0;
}

int rt_cuda_load_ptx(RtCuda *cu, const char *ptx, char *err, size_t errlen)
{
    cu->so = pending_so;
    return 0;
}

int rt_cuda_kernel(RtCuda *cu, const char *name, RtCudaKernel **out, char *err, size_t errlen)
{
    char sym[128];
    snprintf(sym, sizeof sym, "%s_emu", name);
    void *f = dlsym(cu->so, sym);
    if (!f) {
        snprintf(err, errlen, "no kernel %s", name);
        return -1;
    }
    RtCudaKernel *k = malloc(sizeof *k);
    *(void **)&k->fn = f;
    *out = k; /* leaked: a few per model */
    return 0;
}

static long launches;

/* Coroutine i starts the kernel with registers r (its own function:
 * getcontext returns twice). */
static void co_init(unsigned i, const int64_t r[9])
{
    Co *c = &emu_co[i];
    memcpy(c->reg, r, sizeof c->reg);
    c->done = 0;
    getcontext(&c->ctx);
    c->ctx.uc_stack.ss_sp = emu_stacks + (size_t)i * EMU_STACK;
    c->ctx.uc_stack.ss_size = EMU_STACK;
    c->ctx.uc_link = &emu_sched;
    makecontext(&c->ctx, emu_main, 0);
}

int rt_cuda_launch(RtCuda *cu, RtCudaKernel *k, const unsigned grid[3], const unsigned block[3],
                   unsigned shared_bytes, void **args, char *err, size_t errlen)
{
    unsigned nt = block[0] * block[1] * block[2];
    if (nt > emu_cap) {
        free(emu_co);
        free(emu_stacks);
        emu_co = calloc(nt, sizeof *emu_co);
        emu_stacks = malloc((size_t)nt * EMU_STACK);
        emu_cap = nt;
    }
    launches++;
    emu_fn = k->fn;
    emu_args = args;
    for (unsigned bz = 0; bz < grid[2]; bz++)
        for (unsigned by = 0; by < grid[1]; by++)
            for (unsigned bx = 0; bx < grid[0]; bx++) {
                unsigned i = 0;
                for (unsigned z = 0; z < block[2]; z++)
                    for (unsigned y = 0; y < block[1]; y++)
                        for (unsigned x = 0; x < block[0]; x++, i++) {
                            int64_t r[9] = {x, y, z, bx, by, bz, block[0], block[1], block[2]};
                            co_init(i, r);
                        }
                for (unsigned alive = nt; alive;)
                    for (unsigned j = 0; j < nt; j++) {
                        if (emu_co[j].done)
                            continue;
                        emu_cur = &emu_co[j];
                        swapcontext(&emu_sched, &emu_co[j].ctx);
                        alive -= emu_co[j].done;
                    }
            }
    return 0;
}

int rt_cuda_sync(RtCuda *cu, char *err, size_t errlen)
{
    return 0;
}

#endif

/* ---- the test ---- */

static int failures;

static void expect(bool ok, const char *path, const char *what, double err)
{
    if (!ok) {
        failures++;
        printf("FAIL %s: %s (error %.3g)\n", path, what, err);
    }
}

#ifdef GPU_DEVICE
static RtCuda *device; /* the one device of a run */
static void *pending_so;

/* The PTX for the device's architecture (any handle but NULL for success). */
static void *build_so(const IrGraph *g, const char *dir, int precision, StrataGpuProgram **prog)
{
    char err[1024];
    LowerGpuOptions go = {.sm = rt_cuda_cc(device) >= 90 ? 90 : 80, .precision = precision};
    if (lower_gpu_program(g, &go, prog, err, sizeof err) != 0) {
        printf("FAIL: lower_gpu_program: %s\n", err);
        return NULL;
    }
    return prog;
}

static int open_device(RtCuda **cu, char *err, size_t errlen)
{
    *cu = device;
    return 0;
}

static void close_device(RtCuda *cu)
{
}
#else
static int open_device(RtCuda **cu, char *err, size_t errlen)
{
    return rt_cuda_open(cu, 0, err, errlen);
}

static void close_device(RtCuda *cu)
{
    rt_cuda_close(cu);
}

static void *build_so(const IrGraph *g, const char *dir, int precision, StrataGpuProgram **prog)
{
    static int seq; /* a new name each time: dlopen returns the loaded object for a path it knows */
    char obj[512], so[600], cmd[2048], err[1024];
    snprintf(obj, sizeof obj, "%s/k%d.o", dir, seq);
    snprintf(so, sizeof so, "%s/k%d.so", dir, seq++);
    LowerGpuOptions go = {.sm = 90, .precision = precision};
    if (lower_gpu_emulation(g, &go, obj, prog, err, sizeof err) != 0) {
        printf("FAIL: lower_gpu_emulation: %s\n", err);
        return NULL;
    }
    const char *cc = getenv("CC") ? getenv("CC") : "cc";
    snprintf(cmd, sizeof cmd, "%s -shared -o '%s' '%s' -lm", cc, so, obj);
    if (system(cmd) != 0) {
        printf("FAIL: %s\n", cmd);
        return NULL;
    }
    void *h = dlopen(so, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        printf("FAIL: dlopen: %s\n", dlerror());
        return NULL;
    }
    void **hs = dlsym(h, "strata_emu_sreg"), **hb = dlsym(h, "strata_emu_barrier"), **hm = dlsym(h, "strata_emu_mma");
    if (hm)
        *hm = (void *)(uintptr_t)emu_mma;
    if (hs)
        *hs = (void *)(uintptr_t)emu_sreg;
    if (hb)
        *hb = (void *)(uintptr_t)emu_barrier;
    return h;
}
#endif

/* Widths past one tile of the matrix products (64) and a head size that is
 * not a power of two. */
static const char *const wide[] = {"vocab=70", "d=80", "heads=2", "ffn=136", "L=2", "ctx=5"};

static void check_model(const char *path, const char *text, const char *dir, int B, int T, const char *const *sizes,
                        int nsizes)
{
    Case c;
    if (!case_load(&c, path, text, sizes, nsizes)) {
        failures++;
        return;
    }
    case_params(&c, 7);
    if (!case_batch(&c, 11, B, T)) {
        failures++;
        case_free(&c);
        return;
    }
    const IrGraph *g = &c.g;
    StrataGpuProgram *prog = NULL;
    pending_so = build_so(g, dir, STRATA_PRECISION_FP32, &prog);
    if (!pending_so) {
        failures++;
        case_free(&c);
        return;
    }
    RtCuda *cu;
    char err[1024];
    open_device(&cu, err, sizeof err);
    RtGpuModel *m;
    if (rt_gpu_model_open(&m, cu, prog, B, T, err, sizeof err)) {
        printf("FAIL %s: rt_gpu_model_open: %s\n", path, err);
        failures++;
        goto out;
    }
    int64_t n = prog->params_numel, bt = B * T;
    float *params = calloc((size_t)n, sizeof *params), *grads = calloc((size_t)n, sizeof *grads);
    float *grads2 = calloc((size_t)n, sizeof *grads2), *mask = malloc((size_t)bt * sizeof *mask);
    float *logits = malloc((size_t)(bt * prog->vocab) * sizeof *logits);
    double *tmp = malloc((size_t)(n > bt * prog->vocab ? n : bt * prog->vocab) * sizeof *tmp);
    for (int i = 0; i < g->params.n; i++) {
        const IrParam *p = g->params.v[i];
        for (int64_t j = 0; j < p->numel; j++)
            params[prog->params[i].offset + j] = (float)c.params[i][j];
    }
    for (int64_t i = 0; i < bt; i++)
        mask[i] = (float)c.mask[i];
    double loss = NAN, loss2 = NAN;
    int before = failures;
    if (rt_gpu_set_params(m, params) || rt_gpu_train_step(m, c.tokens, c.targets, mask, 0, &loss) ||
        rt_gpu_get_grads(m, grads) || rt_gpu_train_step(m, c.tokens, c.targets, mask, 1, &loss2) ||
        rt_gpu_get_grads(m, grads2) || rt_gpu_forward(m, c.tokens, logits)) {
        printf("FAIL %s: %s\n", path, rt_gpu_error(m));
        failures++;
    } else {
        double ref = interp_value(&c.ref, g->loss)[0], e = fabs(loss - ref) / fabs(ref);
        expect(e < 2e-4, path, "loss", e);
        expect(loss2 == loss, path, "loss of the accumulating step", fabs(loss2 - loss));
        double worst = 0;
        for (int i = 0; i < g->params.n; i++) {
            const IrParam *p = g->params.v[i];
            const IrNode *gn = g->grads.v[i];
            for (int64_t j = 0; j < p->numel; j++)
                tmp[j] = grads[prog->params[i].offset + j];
            double gerr;
            if (gn) {
                gerr = tensor_error(tmp, interp_value(&c.ref, gn), p->numel);
            } else {
                gerr = 0;
                for (int64_t j = 0; j < p->numel; j++)
                    gerr = fmax(gerr, fabs(tmp[j]));
            }
            worst = fmax(worst, gerr);
            if (!(gerr < 2e-4))
                printf("  gradient of %s: error %.3g\n", p->name, gerr);
            /* twice, up to the rounding of adding row by row onto what is there (embeddings) */
            double scale = 0, diff = 0;
            for (int64_t j = 0; j < p->numel; j++) {
                float a = grads[prog->params[i].offset + j], b = grads2[prog->params[i].offset + j];
                scale = fmax(scale, fabs(2.0 * a));
                diff = fmax(diff, fabs((double)b - 2.0 * a));
            }
            expect(diff <= 1e-6 * scale, path, "accumulated gradient is not twice the gradient",
                   scale > 0 ? diff / scale : diff);
        }
        expect(worst < 2e-4, path, "gradients", worst);
        for (int64_t j = 0; j < bt * prog->vocab; j++)
            tmp[j] = logits[j];
        double le = tensor_error(tmp, interp_value(&c.ref, g->logits), bt * prog->vocab);
        expect(le < 2e-4, path, "logits", le);

        /* one optimizer step against runtime/train/optim.c on the same gradients (grads2) */
        RtSegment *segs = calloc((size_t)prog->nparams + 1, sizeof *segs);
        for (int i = 0; i < prog->nparams; i++)
            segs[i] = (RtSegment){prog->params[i].offset, prog->params[i].numel, prog->params[i].decay};
        RtAdamWConfig cfg = rt_adamw_defaults(RT_OPTIM_ADAMW);
        cfg.weight_decay = 0.1;
        cfg.beta2 = 0.95;
        RtAdamW opt;
        double gn_gpu = NAN;
        float *after = malloc((size_t)n * sizeof *after);
        if (rt_adamw_init(&opt, n, segs, prog->nparams, cfg) == 0) {
            double norm = rt_grad_norm(grads2, n);
            float cf = rt_clip_factor(0.5, norm);
            rt_adamw_step_scaled(&opt, params, grads2, cf, 3e-3, NULL);
            RtGpuAdamW hp = {.lr = 3e-3, .beta1 = cfg.beta1, .beta2 = cfg.beta2, .eps = cfg.eps,
                             .weight_decay = 0.1, .clip = 0.5, .step = 1};
            if (rt_gpu_optim_step(m, &hp, &gn_gpu) || rt_gpu_get_params(m, after)) {
                printf("FAIL %s: %s\n", path, rt_gpu_error(m));
                failures++;
            } else {
                expect(fabs(gn_gpu - norm) <= 1e-12 * norm, path, "gradient norm", fabs(gn_gpu - norm) / norm);
                double pe = 0;
                for (int64_t j = 0; j < n; j++)
                    pe = fmax(pe, fabs((double)after[j] - params[j]) / (fabs(params[j]) + 1e-3));
                expect(pe < 1e-6, path, "parameters after AdamW", pe);
            }
            rt_adamw_free(&opt);
        }
        free(after);
        free(segs);
        printf("%s %s (B=%d, T=%d): loss %.6f (ref %.6f), worst gradient error %.2g, logits %.2g, %d launches/step\n",
               failures == before ? "ok" : "FAIL", path, B, T, loss, ref, worst, le, prog->nlaunches);
    }
    free(params);
    free(grads);
    free(grads2);
    free(mask);
    free(logits);
    free(tmp);
    rt_gpu_model_close(m);
out:
    close_device(cu);
    lower_gpu_program_free(prog);
    case_free(&c);
}

/* bf16 products on the emulated tensor cores against the CPU's bf16 step
 * (StrataStep.precision: the same operands rounded to bf16, fp32 sums):
 * loss within 1e-4, gradients within 1e-2: the fp32 sums run in another
 * order, so now and then an operand rounds to the other bf16 neighbour
 * (2^-8 relative), which a small gradient such as attention's wk shows
 * (measured up to 2.2e-3); a wrong fragment layout gives errors of order 1. */
static void check_bf16(Jit *jit, const char *path, const char *dir, int B, int T, const char *const *sizes,
                       int nsizes)
{
    Case c;
    if (!case_load(&c, path, NULL, sizes, nsizes)) {
        failures++;
        return;
    }
    case_params(&c, 5);
    JitModel jm;
    Result r;
    if (!case_batch(&c, 13, B, T) || !case_compile(jit, &c, LOWER_F32, &jm)) {
        failures++;
        case_free(&c);
        return;
    }
    case_run(&c, &jm, &(RunOpts){.precision = STRATA_PRECISION_BF16}, &r);
    const IrGraph *g = &c.g;
    StrataGpuProgram *prog = NULL;
    RtCuda *cu = NULL;
    RtGpuModel *m = NULL;
    char err[1024];
    pending_so = build_so(g, dir, STRATA_PRECISION_BF16, &prog);
    open_device(&cu, err, sizeof err);
    if (!pending_so || r.status != 0 || rt_gpu_model_open(&m, cu, prog, B, T, err, sizeof err)) {
        printf("FAIL %s (bf16): %s\n", path, pending_so ? err : "no program");
        failures++;
    } else {
        int64_t n = prog->params_numel, bt = B * T, V = prog->vocab;
        float *params = calloc((size_t)n, sizeof *params), *grads = calloc((size_t)n, sizeof *grads);
        float *mask = malloc((size_t)bt * sizeof *mask), *logits = malloc((size_t)(bt * V) * sizeof *logits);
        double *tmp = malloc((size_t)(n > bt * V ? n : bt * V) * sizeof *tmp), loss = NAN;
        for (int i = 0; i < g->params.n; i++)
            for (int64_t j = 0; j < ((IrParam *)g->params.v[i])->numel; j++)
                params[prog->params[i].offset + j] = (float)c.params[i][j];
        for (int64_t i = 0; i < bt; i++)
            mask[i] = (float)c.mask[i];
        int before = failures;
        if (rt_gpu_set_params(m, params) || rt_gpu_train_step(m, c.tokens, c.targets, mask, 0, &loss) ||
            rt_gpu_get_grads(m, grads)) {
            printf("FAIL %s (bf16): %s\n", path, rt_gpu_error(m));
            failures++;
        } else {
            double le = fabs(loss - r.loss) / fabs(r.loss), worst = 0;
            expect(le < 1e-4, path, "bf16 loss against the CPU's bf16 step", le);
            for (int i = 0; i < g->params.n; i++) {
                const IrParam *p = g->params.v[i];
                for (int64_t j = 0; j < p->numel; j++)
                    tmp[j] = grads[prog->params[i].offset + j];
                double e = tensor_error(tmp, r.grads[i], p->numel);
                worst = fmax(worst, e);
                if (!(e < 1e-2))
                    printf("  bf16 gradient of %s: error %.3g\n", p->name, e);
            }
            expect(worst < 1e-2, path, "bf16 gradients against the CPU's bf16 step", worst);
            printf("%s %s (bf16 tensor cores, B=%d, T=%d): loss %.6f (CPU bf16 %.6f), worst gradient error %.2g\n",
                   failures == before ? "ok" : "FAIL", path, B, T, loss, r.loss, worst);
        }
        free(params);
        free(grads);
        free(mask);
        free(logits);
        free(tmp);
    }
    rt_gpu_model_close(m);
    close_device(cu);
    lower_gpu_program_free(prog);
    result_free(&c, &r);
    jit_release(jit, &jm);
    case_free(&c);
}

/* Bad input gets a message, not a crash: a program of another version, a
 * batch too large, token ids and targets outside the vocabulary (a masked
 * target may be anything, as -100 in fine-tuning), an AdamW step 0. */
static void check_errors(const char *path, const char *dir)
{
    Case c;
    if (!case_load(&c, path, NULL, NULL, 0) || (case_params(&c, 1), !case_batch(&c, 3, 2, 5))) {
        failures++;
        return;
    }
    StrataGpuProgram *prog = NULL;
    RtCuda *cu = NULL;
    RtGpuModel *m = NULL;
    char err[1024];
    pending_so = build_so(&c.g, dir, STRATA_PRECISION_FP32, &prog);
    open_device(&cu, err, sizeof err);
    if (!pending_so) {
        failures++;
        goto out;
    }
    StrataGpuProgram bad = *prog;
    bad.version = STRATA_GPU_VERSION + 1;
    expect(rt_gpu_model_open(&m, cu, &bad, 2, 5, err, sizeof err) == -1 && !m && strstr(err, "version"), path,
           "a program of another version is refused", 0);
    expect(rt_gpu_model_open(&m, cu, prog, 1, (int64_t)1 << 40, err, sizeof err) == -1 && strstr(err, "out of range"),
           path, "a batch too large is refused", 0);
    if (rt_gpu_model_open(&m, cu, prog, 2, 5, err, sizeof err)) {
        printf("FAIL %s: %s\n", path, err);
        failures++;
        goto out;
    }
    int32_t tokens[10], targets[10];
    float mask[10];
    for (int i = 0; i < 10; i++)
        tokens[i] = c.tokens[i], targets[i] = c.targets[i], mask[i] = 1;
    double loss;
    tokens[3] = (int32_t)prog->vocab;
    expect(rt_gpu_train_step(m, tokens, targets, mask, 0, &loss) == -1 && strstr(rt_gpu_error(m), "tokens[3]"), path,
           "a token id past the vocabulary is refused", 0);
    tokens[3] = c.tokens[3];
    targets[7] = -100;
    expect(rt_gpu_train_step(m, tokens, targets, mask, 0, &loss) == -1 && strstr(rt_gpu_error(m), "targets[7]"), path,
           "a target outside the vocabulary is refused where the mask counts it", 0);
    mask[7] = 0;
    expect(rt_gpu_train_step(m, tokens, targets, mask, 0, &loss) == 0 && isfinite(loss), path,
           "a masked target of -100 is accepted", 0);
    RtGpuAdamW hp = {.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .step = 0};
    expect(rt_gpu_optim_step(m, &hp, NULL) == -1 && strstr(rt_gpu_error(m), "step"), path, "AdamW step 0 is refused",
           0);
out:
    rt_gpu_model_close(m);
    close_device(cu);
    lower_gpu_program_free(prog);
    case_free(&c);
}

int main(int argc, char **argv)
{
#ifdef GPU_DEVICE
    char derr[1024];
    if (rt_cuda_open(&device, 0, derr, sizeof derr)) {
        printf("SKIP: no GPU to run the PTX on: %s\n", derr);
        return 77;
    }
    printf("device: %s (sm_%d, %d SMs)\n", rt_cuda_name(device), rt_cuda_cc(device), rt_cuda_sm_count(device));
#else
    if (system("${CC:-cc} --version > /dev/null 2>&1") != 0) {
        printf("SKIP: no C compiler to link the emulated kernels\n");
        return 77;
    }
#endif
    char dir[] = "/tmp/strata-gpu-emu-XXXXXX";
    if (!mkdtemp(dir))
        return 99;
    glob_t gl = {0};
    char pattern[4096];
    if (argc < 2) {
        const char *srcdir = getenv("srcdir");
        snprintf(pattern, sizeof pattern, "%s/models/*.strata", srcdir ? srcdir : ".");
        if (glob(pattern, 0, NULL, &gl) != 0 || gl.gl_pathc == 0) {
            fprintf(stderr, "no models at %s\n", pattern);
            return 1;
        }
    }
    char *jerr = NULL;
    Jit *jit = jit_create(&jerr);
    if (!jit) {
        fprintf(stderr, "jit: %s\n", jerr);
        return 1;
    }
    int n = argc < 2 ? (int)gl.gl_pathc : argc - 1;
    for (int i = 0; i < n; i++) {
        check_model(argc < 2 ? gl.gl_pathv[i] : argv[i + 1], NULL, dir, 2, 5, NULL, 0);
        check_bf16(jit, argc < 2 ? gl.gl_pathv[i] : argv[i + 1], dir, 2, 5, NULL, 0);
    }
    if (argc < 2 && n > 0)
        check_errors(gl.gl_pathv[0], dir);
    /* every elementwise op and reduction, and blocks of several kinds (tests/lower_case.c) */
    if (argc < 2) {
        check_model("ops_zoo", ops_zoo, dir, 3, 8, NULL, 0);
        check_model("kinds_zoo", kinds_zoo, dir, 2, 5, NULL, 0);
    }
    /* block rematerialisation (strata --remat): the recomputed forward in
     * the backward pass, the logits' gradient over the logits */
    if (argc < 2) {
        case_remat = IR_REMAT_BLOCKS;
        printf("with --remat:\n");
        for (int i = 0; i < n; i++)
            if (strstr(gl.gl_pathv[i], "/pre_ln.strata") || strstr(gl.gl_pathv[i], "/mix_ln.strata"))
                check_model(gl.gl_pathv[i], NULL, dir, 2, 5, NULL, 0);
        check_model("kinds_zoo", kinds_zoo, dir, 2, 5, NULL, 0);
        case_remat = IR_REMAT_POINTWISE;
    }
    /* sequences longer than a tile of the attention kernels (64), products
     * of several tiles in every dimension */
    if (argc < 2)
        for (int i = 0; i < n; i++)
            if (strstr(gl.gl_pathv[i], "/pre_ln.strata")) {
                check_model(gl.gl_pathv[i], NULL, dir, 2, 150, NULL, 0);
                check_model(gl.gl_pathv[i], NULL, dir, 2, 70, wide, 6);
                check_bf16(jit, gl.gl_pathv[i], dir, 2, 70, wide, 6);
            }
    jit_free(jit);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
    globfree(&gl);
#ifdef GPU_DEVICE
    rt_cuda_close(device);
    printf("%d models, %d failures on the device\n", n, failures);
#else
    printf("%d models, %d failures, %ld emulated launches\n", n, failures, launches);
#endif
    return failures ? 1 : 0;
}
