/* train_bench.c - times full training steps of a JIT-compiled model against
 * the host's GEMM-only roofline measured in the same run (make bench;
 * issues #3, #15).
 *   bench/train_bench [MODEL.strata] [-D NAME=VALUE]... [--batch B] [--seq T]
 *                     [--steps K] [--warmup W] [--threads N] [--precision P]
 *                     [--remat[=MODE]] [--versus fp32|bf16|MODEL2.strata]
 * One step = strata_train_step (taking the gradient norm's block sums as
 * it goes) + rt_grad_norm_finish + clipping to max norm 1 folded into
 * rt_adamw_step_scaled (lr 3e-4, betas 0.9/0.95, eps 1e-8,
 * weight decay 0.1 on matrices only), as runtime/train/train.c does it and
 * bench/torch_train_bench.py does it in torch.  --remat[=MODE]: the step of
 * strata train --remat[=MODE] (compiler/ir/pipeline.h: pointwise by default,
 * blocks for plain --remat, none; the arena line shows its size).  W
 * warm-up steps (default 2), then K timed ones (default 5): median and min.
 * Model FLOPs per step (fwd + bwd), from the parameter table:
 *   matmul    = 6 * (elements of every STRATA_ROLE_MATRIX parameter) * B*T
 *   attention = 12 * L * d * T * B*T   (QK^T and PV over all T keys, as in
 *               PaLM's MFU; a causal kernel does about half of it)
 * The roofline is measured here, in this process: every distinct matrix
 * product of the step (forward and backward, memplan_products) timed
 * through the matrix-product layer (runtime/core/gemm.h) with every backend
 * that does the step's precision, on the same pool; roofline = the sum of
 * each product's best time over its occurrences.  The line per product
 * shows every backend's rate and marks the one the step uses, then the
 * rate of the same product inside the timed steps (rt_gemm_clock: every
 * call of the step timed where it runs, its operands as the step leaves
 * them in the caches), and a line compares the step's products inside
 * the step with the same products alone.  The last line, "result
 * key=value ...", is for bench/train-vs-torch.
 * --versus: no roofline; two sides' steps alternated instead, A (MODEL at
 * --precision) then B (the same model at the other precision, on the
 * same buffers, or MODEL2 with its own), then B then A, K rounds after W
 * warm-up steps each: both medians and B's over A's, for ratios that a
 * noisy host does not move as it moves separate runs ("result versus").
 * Memory: a side's buffers are malloc'd by side_open and freed by
 * side_close, the rest in main (or versus) and freed there; exit 0 ok,
 * 1 bad model or failing step, 2 usage. */
#include "ir/memplan.h"
#include "ir/pipeline.h"
#include "front/ast.h"
#include "lower/jit.h"
#include "train/optim.h"
#include "core/cpu.h"
#include "core/gemm.h"
#include "core/pool.h"
#include "core/util.h"
#include "resolve/sema.h"

#include <math.h>
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
    const char *model;
    const char *defines[64];
    int ndefines, batch, seq, threads, steps, warmup, bf16;
    IrRemat remat;
    const char *versus;    /* --versus: fp32, bf16 or another model file; NULL: none */
} Args;

static bool parse(int argc, char **argv, Args *a)
{
    *a = (Args){.model = "models/pre_ln.strata", .batch = 8, .seq = 256, .threads = 2, .steps = 5, .warmup = 2};
    bool have_model = false;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(s, "-D") && v && a->ndefines < 64)
            a->defines[a->ndefines++] = argv[++i];
        else if (!strcmp(s, "--batch") && v)
            a->batch = atoi(argv[++i]);
        else if (!strcmp(s, "--seq") && v)
            a->seq = atoi(argv[++i]);
        else if (!strcmp(s, "--threads") && v)
            a->threads = atoi(argv[++i]);
        else if (!strcmp(s, "--precision") && v && (!strcmp(v, "fp32") || !strcmp(v, "bf16")))
            a->bf16 = !strcmp(argv[++i], "bf16");
        else if (!strcmp(s, "--steps") && v)
            a->steps = atoi(argv[++i]);
        else if (!strcmp(s, "--warmup") && v)
            a->warmup = atoi(argv[++i]);
        else if (!strcmp(s, "--versus") && v)
            a->versus = argv[++i];
        else if (!strcmp(s, "--remat"))
            a->remat = IR_REMAT_BLOCKS;
        else if (!strncmp(s, "--remat=", 8) && ir_remat_parse(s + 8, &a->remat))
            ;
        else if (s[0] != '-' && !have_model)
            a->model = s, have_model = true;
        else
            return false;
    }
    return a->batch > 0 && a->seq > 0 && a->threads > 0 && a->steps > 0 && a->warmup >= 0;
}

/* Model file -> IR with gradients, fused; false with the diagnostics printed. */
static bool load(IrGraph *g, Program *prog, const Args *a, const char *model)
{
    Diag d;
    diag_init(&d, stderr);
    const char *why = NULL;
    SrcFile *src = src_read(model, &why);
    if (!src) {
        fprintf(stderr, "train_bench: cannot read %s: %s\n", model, why);
        return false;
    }
    SemaOptions opt = {.defines = (const char **)a->defines, .ndefines = a->ndefines};
    g->model_name = model;
    bool ok = ast_load(prog, &d, src) && sema_resolve(prog, &opt, &d, g);
    diag_finish(&d);
    if (ok) {
        const char *what;
        ok = ir_train_graph(g, a->remat, stderr, &what);
        if (!ok)
            fprintf(stderr, "train_bench: internal error: %s built an invalid graph\n", what);
    }
    return ok;
}

static void *bench_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p) {
        fprintf(stderr, "train_bench: out of memory (%zu x %zu bytes)\n", n, size);
        exit(3);
    }
    return p;
}

static uint64_t lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 11;
}

/* Parameters as the model's init rules roughly ask (ones and zeros exact,
 * everything else uniform with standard deviation 0.02): timing does not
 * depend on the values, only the loss printout does. */
static void init_params(const StrataModelDesc *d, float *p)
{
    uint64_t s = 1;
    for (int i = 0; i < d->nparams; i++) {
        const StrataParam *q = &d->params[i];
        for (int64_t k = 0; k < q->numel; k++) {
            double v = ((double)lcg(&s) * 0x1.0p-53 - 0.5) * 0.0693; /* 0.02 * sqrt(12) */
            if (q->init == STRATA_INIT_ONES)
                v = 1;
            else if (q->init == STRATA_INIT_ZEROS)
                v = 0;
            else if (q->init == STRATA_INIT_CONSTANT)
                v = q->init_a;
            p[q->offset + k] = (float)v;
        }
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Best time of one product through the matrix-product layer with backend
 * b on the pool, as the step runs it: repeated until 0.3 s have gone (at
 * least 3 runs, the first one not counted). */
static double time_product(const RtGemmBackend *b, RtPool *pool, int flags, int64_t M, int64_t N, int64_t K)
{
    float *A = bench_calloc((size_t)(M * K), sizeof *A), *B = bench_calloc((size_t)(N * K), sizeof *B);
    float *C = bench_calloc((size_t)(M * N), sizeof *C);
    uint64_t s = 7;
    for (int64_t i = 0; i < M * K; i++)
        A[i] = (float)((double)lcg(&s) * 0x1.0p-53 - 0.5);
    for (int64_t i = 0; i < N * K; i++)
        B[i] = (float)((double)lcg(&s) * 0x1.0p-53 - 0.5);
    const RtGemmBackend *old = rt_gemm_set_backend(b);
    int64_t lda = flags & RT_GEMM_TA ? M : K, ldb = flags & RT_GEMM_TB ? K : N;
    double best = INFINITY, start = now();
    for (int r = 0; r < 4 || (r < 200 && now() - start < 0.3); r++) {
        double t0 = now();
        rt_matmul_f32(pool, flags, M, N, K, A, lda, B, ldb, 0.0f, C, N);
        double t = now() - t0;
        if (r > 0 && t < best)
            best = t;
    }
    rt_gemm_set_backend(old);
    free(A), free(B), free(C);
    return best;
}

/* The model's FLOPs, and the matrix products of one step, each timed with
 * every backend of this build that does the step's precision, on the
 * pool: the roofline is the sum of each product's best time (times the
 * number of its occurrences), the host's best GEMM-only step. */
typedef struct Work {
    double matmul, attention;  /* FLOPs per step, fwd + bwd */
    double roofline_s;         /* the step's products at their best backend's speed */
    double chosen_s;           /* the same at the backends the step uses */
    double peak;               /* the best rate of any backend on any product, FLOP/s */
} Work;

static Work measure_work(const IrGraph *g, const StrataModelDesc *d, RtPool *pool, int64_t B, int64_t T, int bf16)
{
    Work w = {0};
    int64_t BT = B * T;
    for (int i = 0; i < d->nparams; i++)
        if (d->params[i].role == STRATA_ROLE_MATRIX && d->params[i].ndim == 2)
            w.matmul += 6.0 * (double)d->params[i].numel * (double)BT;
    w.attention = 12.0 * (double)d->nblocks * (double)d->width * (double)T * (double)BT;
    MemProduct p[128];
    int n = memplan_products(g, B, T, MEMPLAN_HEAD_DIV, p, 128); /* as lower.c plans the step */
    const RtCpu *cpu = rt_cpu();
    printf("matrix products (%s; host %s, %s; GFLOP/s of each backend on %d pool threads, * = the step's):\n",
           bf16 ? "bf16" : "fp32", cpu->brand[0] ? cpu->brand : cpu->vendor, rt_cpu_isa_name(cpu),
           rt_pool_size(pool));
    for (int k = 0; k < n; k++) {
        int flags = (p[k].ta ? RT_GEMM_TA : 0) | (p[k].tb ? RT_GEMM_TB : 0) | (bf16 ? RT_GEMM_BF16 : 0);
        int64_t M = p[k].M, N = p[k].N, K = p[k].K, count = p[k].count;
        const RtGemmBackend *chosen = rt_gemm_choose(flags, M, N, K, NULL);
        double flops = 2.0 * (double)M * (double)N * (double)K, best = INFINITY, mine = INFINITY;
        printf("  %lld x %lld x %lld%s x%lld:", (long long)M, (long long)N, (long long)K,
               p[k].ta ? " (A^T)" : p[k].tb ? " (B^T)" : "", (long long)count);
        for (const RtGemmBackend *const *b = rt_gemm_backends(); *b; b++) {
            if (bf16 && !(*b)->bf16)
                continue;
            double t = time_product(*b, pool, flags, M, N, K);
            printf(" %s%s %.1f", (*b)->name, *b == chosen ? "*" : "", 1e-9 * flops / t);
            best = t < best ? t : best;
            if (*b == chosen)
                mine = t;
            if (flops / t > w.peak)
                w.peak = flops / t;
        }
        for (int c = 0; c < rt_gemm_clock.nshapes; c++) /* the timed steps' calls of this product */
            if (rt_gemm_clock.shape[c].flags == flags && rt_gemm_clock.shape[c].M == M &&
                rt_gemm_clock.shape[c].N == N && rt_gemm_clock.shape[c].K == K)
                printf("; in the step %.1f", 1e-9 * flops * (double)rt_gemm_clock.shape[c].calls /
                                                 rt_gemm_clock.shape[c].seconds);
        printf("\n");
        w.roofline_s += (double)count * best;
        w.chosen_s += (double)count * mine;
    }
    return w;
}

/* Weight decay on matrices only (not on norm gains, embeddings, scalars),
 * as the torch side's two parameter groups.  Returns the segment count. */
static int decay_segments(const StrataModelDesc *d, RtSegment *segs)
{
    int n = 0;
    for (int i = 0; i < d->nparams; i++)
        segs[n++] = (RtSegment){d->params[i].offset, d->params[i].numel, d->params[i].role == STRATA_ROLE_MATRIX};
    return n;
}

/* The process's peak RSS from here on: Linux resets VmHWM to the current
 * RSS on "5" in /proc/self/clear_refs.  False where it cannot. */
static bool peak_rss_reset(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f)
        return false;
    bool ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok;
}

/* VmHWM in KiB, -1 when unknown. */
static long peak_rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

/* One model being trained: its graph, compiled step and buffers, as the
 * trainer allocates them. */
typedef struct Side {
    const char *model;
    bool bf16;
    IrGraph g;
    Program prog;
    Jit *jit;
    JitModel m;
    int64_t n;                  /* parameters */
    float *params, *grads;
    void *arena;
    int64_t arena_bytes;
    int32_t *tokens, *targets;
    RtSegment *segs;
    int nsegs;
    double *sumsq, loss;
    RtAdamW opt;
    bool opt_ready;
    StrataStep st;
} Side;

/* Compiles `model` and sets up its step on the pool; false with the
 * reason printed. */
static bool side_open(Side *sd, const Args *a, const char *model, bool bf16, RtPool *pool)
{
    *sd = (Side){.model = model, .bf16 = bf16};
    ir_init(&sd->g);
    if (!load(&sd->g, &sd->prog, a, model))
        return false;
    char *err = NULL;
    sd->jit = jit_create(&err);
    LowerOptions lo = {.precision = LOWER_F32, .opt_level = 2};
    if (!sd->jit || !jit_compile(sd->jit, &sd->g, &lo, &sd->m, &err)) {
        fprintf(stderr, "train_bench: %s: %s\n", model, err);
        return false;
    }
    const StrataModelDesc *d = sd->m.desc;
    int64_t numel = 0;
    for (int i = 0; i < d->nparams; i++)
        numel += d->params[i].numel;
    printf("%s: %lld parameters, %lld blocks, width %lld, vocab %lld\n", model, (long long)numel,
           (long long)d->nblocks, (long long)d->width, (long long)d->vocab);
    printf("compile %.3f s (lower %.3f, optimise %.3f, machine code %.3f)\n", sd->m.stats.total_s,
           sd->m.stats.lower_s, sd->m.stats.opt_s, sd->m.stats.codegen_s);
    jit_drop_code_pages(); /* as strata train does */
    if ((double)a->batch * a->seq * (double)(d->width > d->vocab ? d->width : d->vocab) >= 0x1p31) {
        fprintf(stderr, "train_bench: %s: batch %d x seq %d is too large (B*T*max(width, vocab) must stay "
                        "below 2^31)\n", model, a->batch, a->seq);
        return false;
    }
    int64_t B = a->batch, T = a->seq, BT = B * T;
    sd->n = d->params_numel;
    sd->arena_bytes = strata_arena_bytes(d, B, T, rt_pool_size(pool));
    printf("batch %lld x %lld, %d pool threads, %s products, arena %.1f MiB (remat %s)\n", (long long)B,
           (long long)T, rt_pool_size(pool), bf16 ? "bf16" : "fp32", (double)sd->arena_bytes / (1 << 20),
           ir_remat_name(a->remat));
    /* the big buffers as the trainer allocates them (util.h: 2 MiB pages where THP allows) */
    sd->params = rt_zalloc64((size_t)sd->n * sizeof *sd->params);
    sd->grads = rt_zalloc64((size_t)sd->n * sizeof *sd->grads);
    init_params(d, sd->params);
    sd->arena = rt_zalloc64((size_t)sd->arena_bytes);
    sd->tokens = bench_calloc((size_t)BT, sizeof *sd->tokens);
    sd->targets = bench_calloc((size_t)BT, sizeof *sd->targets);
    sd->segs = bench_calloc((size_t)d->nparams, sizeof *sd->segs);
    sd->sumsq = bench_calloc((size_t)rt_grad_norm_blocks(sd->n), sizeof *sd->sumsq);
    uint64_t s = 12345;
    for (int64_t r = 0; r < BT; r++) {
        sd->tokens[r] = (int32_t)(lcg(&s) % (uint64_t)d->vocab);
        sd->targets[r] = (int32_t)(lcg(&s) % (uint64_t)d->vocab);
    }
    RtAdamWConfig cfg = rt_adamw_defaults(RT_OPTIM_ADAMW);
    cfg.beta2 = 0.95, cfg.weight_decay = 0.1;
    sd->nsegs = decay_segments(d, sd->segs);
    if (rt_adamw_init(&sd->opt, sd->n, sd->segs, sd->nsegs, cfg) != 0)
        return false;
    sd->opt_ready = true;
    sd->st = (StrataStep){.params = sd->params, .grads = sd->grads, .arena = sd->arena,
                          .arena_bytes = sd->arena_bytes, .tokens = sd->tokens, .targets = sd->targets, .B = B,
                          .T = T, .loss = &sd->loss, .pool = pool,
                          .precision = bf16 ? STRATA_PRECISION_BF16 : STRATA_PRECISION_FP32,
                          .grad_sumsq = sd->sumsq};
    return true;
}

/* One training step; its times in fb (train step) and upd (norm, clip,
 * AdamW), the gradient norm in *norm.  False with the reason printed. */
static bool side_step(Side *sd, RtPool *pool, int k, double *fb, double *upd, double *norm)
{
    double t0 = now();
    int status = sd->m.train_step(&sd->st);
    double t1 = now();
    *norm = rt_grad_norm_finish(sd->grads, sd->n, sd->segs, sd->nsegs, sd->sumsq);
    rt_adamw_step_scaled(&sd->opt, sd->params, sd->grads, rt_clip_factor(1.0, *norm), 3e-4, pool); /* clip folded in */
    double t2 = now();
    if (status != STRATA_OK || !isfinite(sd->loss)) {
        fprintf(stderr, "train_bench: %s: step %d failed (status %d, loss %g)\n", sd->model, k, status, sd->loss);
        return false;
    }
    *fb = t1 - t0, *upd = t2 - t1;
    return true;
}

static void side_close(Side *sd)
{
    if (sd->opt_ready)
        rt_adamw_free(&sd->opt);
    if (sd->jit) {
        if (sd->m.desc)
            jit_release(sd->jit, &sd->m);
        jit_free(sd->jit);
    }
    ir_free(&sd->g);
    ast_program_free(&sd->prog);
    free(sd->params), free(sd->grads), free(sd->arena), free(sd->tokens), free(sd->targets), free(sd->segs);
    free(sd->sumsq);
}

/* --versus: two sides' steps alternated, A B then B A, K rounds after W
 * warm-up steps each, so that both meet the same moments of a noisy host.
 * Prints both medians and b/a, the ratio of B's median step to A's, and
 * the median of the rounds' ratios. */
static int versus(const Args *a, RtPool *pool)
{
    /* another precision: the same side (model, buffers) at both, as the
     * step takes its precision at run time; another model: its own */
    bool precision = !strcmp(a->versus, "fp32") || !strcmp(a->versus, "bf16");
    Side sd[2];
    int status = 1, nopen = 1; /* the sides side_open was called on */
    bool opened = side_open(&sd[0], a, a->model, a->bf16, pool);
    if (opened && !precision)
        nopen = 2, opened = side_open(&sd[1], a, a->versus, a->bf16, pool);
    Side *side[2] = {&sd[0], precision ? &sd[0] : &sd[1]};
    bool bf16[2] = {a->bf16, precision ? !strcmp(a->versus, "bf16") : a->bf16};
    double *t[2] = {bench_calloc((size_t)a->steps, sizeof(double)), bench_calloc((size_t)a->steps, sizeof(double))};
    double *ratio = bench_calloc((size_t)a->steps, sizeof(double)), fb, upd, norm;
    if (!opened)
        goto out;
    for (int k = 0; k < a->warmup; k++)
        for (int x = 0; x < 2; x++) {
            side[x]->st.precision = bf16[x] ? STRATA_PRECISION_BF16 : STRATA_PRECISION_FP32;
            if (!side_step(side[x], pool, k, &fb, &upd, &norm))
                goto out;
        }
    for (int r = 0; r < a->steps; r++) {
        for (int q = 0; q < 2; q++) {
            int x = r % 2 ? 1 - q : q; /* A B, then B A */
            side[x]->st.precision = bf16[x] ? STRATA_PRECISION_BF16 : STRATA_PRECISION_FP32;
            if (!side_step(side[x], pool, a->warmup + r, &fb, &upd, &norm))
                goto out;
            t[x][r] = fb + upd;
        }
        ratio[r] = t[1][r] / t[0][r];
        printf("round %2d: a %8.1f ms, b %8.1f ms, b/a %.3f\n", r, 1e3 * t[0][r], 1e3 * t[1][r], ratio[r]);
    }
    double ma = median(t[0], a->steps), mb = median(t[1], a->steps), mr = median(ratio, a->steps);
    printf("versus: a = %s %s, b = %s %s: median a %.1f ms, b %.1f ms; b/a %.3f (median of the rounds' %.3f)\n",
           side[0]->model, bf16[0] ? "bf16" : "fp32", side[1]->model, bf16[1] ? "bf16" : "fp32", 1e3 * ma, 1e3 * mb,
           mb / ma, mr);
    printf("result versus a_ms=%.2f b_ms=%.2f b_over_a=%.4f round_ratio=%.4f rounds=%d\n", 1e3 * ma, 1e3 * mb,
           mb / ma, mr, a->steps);
    status = 0;
out:
    for (int x = 0; x < nopen; x++)
        side_close(&sd[x]);
    free(t[0]), free(t[1]), free(ratio);
    return status;
}

int main(int argc, char **argv)
{
    Args a;
    if (!parse(argc, argv, &a)) {
        fprintf(stderr, "usage: train_bench [MODEL.strata] [-D NAME=VALUE]... [--batch B] [--seq T] "
                        "[--steps K] [--warmup W] [--threads N] [--precision fp32|bf16]\n"
                        "                   [--remat[=none|pointwise|blocks]] [--versus fp32|bf16|MODEL2.strata]\n");
        return 2;
    }
    RtPool *pool = rt_pool_create(a.threads);
    if (a.versus) {
        int status = versus(&a, pool);
        rt_pool_free(pool);
        return status;
    }
    Side sd;
    if (!side_open(&sd, &a, a.model, a.bf16, pool)) {
        side_close(&sd);
        rt_pool_free(pool);
        return 1;
    }
    const StrataModelDesc *d = sd.m.desc;
    int64_t B = a.batch, T = a.seq, BT = B * T;
    double first_loss = 0;
    double *total = bench_calloc((size_t)a.steps, sizeof *total), *fb = bench_calloc((size_t)a.steps, sizeof *fb);
    double *upd = bench_calloc((size_t)a.steps, sizeof *upd), *prod = bench_calloc((size_t)a.steps, sizeof *prod);
    bool hwm = peak_rss_reset(); /* the steps' peak, not the product measurements' */
    for (int k = 0; k < a.warmup + a.steps; k++) {
        double f, u, norm, p0 = rt_gemm_clock.seconds;
        rt_gemm_clock.on = k >= a.warmup; /* the products' time inside the timed steps */
        if (!side_step(&sd, pool, k, &f, &u, &norm))
            return 1;
        rt_gemm_clock.on = false;
        if (k >= a.warmup)
            prod[k - a.warmup] = rt_gemm_clock.seconds - p0;
        if (k == 0)
            first_loss = sd.loss;
        printf("%s %2d: %8.1f ms (train step %.1f, norm+clip+adamw %.1f), loss %.6f, grad norm %.4f\n",
               k < a.warmup ? "warm-up" : "step   ", k, 1e3 * (f + u), 1e3 * f, 1e3 * u, sd.loss, norm);
        if (k >= a.warmup)
            total[k - a.warmup] = f + u, fb[k - a.warmup] = f, upd[k - a.warmup] = u;
    }
    long rss_kb = hwm ? peak_rss_kb() : -1;
    /* after the steps, so that their peak RSS leaves out what the other
     * backends allocate (OpenBLAS's buffers, oneDNN's) */
    Work w = measure_work(&sd.g, d, pool, B, T, a.bf16);
    double med = median(total, a.steps), best = total[0]; /* median() sorted total */
    double flops = w.matmul + w.attention, tps = (double)BT / med, rate = flops / med;
    printf("step: median %.1f ms, min %.1f ms over %d steps (train step median %.1f, optimizer %.1f)\n", 1e3 * med,
           1e3 * best, a.steps, 1e3 * median(fb, a.steps), 1e3 * median(upd, a.steps));
    printf("tokens/s %.0f\n", tps);
    double pm = median(prod, a.steps);
    printf("products inside the step: median %.1f ms (%.1f%% of the step; the same products alone: %.1f ms at the "
           "step's backends); the median step less that: %.1f ms\n",
           1e3 * pm, 100 * pm / med, 1e3 * w.chosen_s, 1e3 * (med - pm));
    printf("FLOPs per step: matmul 6*N*BT %.3f G (N = %.0f matrix elements), attention 12*L*d*T*BT %.3f G, "
           "total %.3f G\n",
           1e-9 * w.matmul, w.matmul / 6.0 / (double)BT, 1e-9 * w.attention, 1e-9 * flops);
    printf("achieved %.1f GFLOP/s total (%.1f matmul-only); the best product rate measured %.1f GFLOP/s\n",
           1e-9 * rate, 1e-9 * w.matmul / med, 1e-9 * w.peak);
    printf("roofline (every product at its best backend, nothing else) %.1f ms: the median step is at %.1f%% of "
           "it; the products at the step's backends take %.1f ms\n",
           1e3 * w.roofline_s, 100 * w.roofline_s / med, 1e3 * w.chosen_s);
    printf("loss %.6f -> %.6f\n", first_loss, sd.loss);
    if (rss_kb > 0)
        printf("peak RSS during the steps %ld KiB (%.3f GB; VmHWM, reset before the first step)\n", rss_kb,
               rss_kb * 1024e-9);
    printf("result median_ms=%.2f min_ms=%.2f tokens_s=%.0f gflops=%.2f peak_gflops=%.2f roofline_pct=%.1f "
           "roofline_ms=%.2f chosen_ms=%.2f compile_s=%.3f loss0=%.6f loss=%.6f isa=%s rss_kb=%ld\n",
           1e3 * med, 1e3 * best, tps, 1e-9 * rate, 1e-9 * w.peak, 100 * w.roofline_s / med, 1e3 * w.roofline_s,
           1e3 * w.chosen_s, sd.m.stats.total_s, first_loss, sd.loss, rt_cpu_isa_name(rt_cpu()), rss_kb);

    side_close(&sd);
    rt_pool_free(pool);
    free(total), free(fb), free(upd), free(prod);
    return 0;
}
