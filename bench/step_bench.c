/* step_bench.c - times one model's compiled training step (make bench).
 *   bench/step_bench MODEL.strata [-D NAME=VALUE]... [--batch B] [--seq T]
 *                    [--threads N] [--f64] [--libm-exp] [--inline-blocks] [--steps K]
 * JIT-compiles the model (model ABI v1), fills the parameters with small
 * random numbers and a batch with arbitrary tokens, runs strata_forward and
 * strata_train_step once each to warm up (page faults, OpenBLAS's threads),
 * then K times each (default 1), printing every time: these are single
 * measurements, not a statistic.  --threads is the pool size (default 1);
 * every product, row loop and kernel runs on the pool (runtime/core/gemm.h).
 * Each step also prints the CPU time of the calling thread, which with one
 * thread (the pool then runs everything on the caller) moves less with the
 * machine's load than the wall time.  --inline-blocks compiles every
 * block's kernels inline in the entry points (LowerOptions.inline_blocks),
 * the code before one function per kind of block, for comparison. */
#include "ir/ad.h"
#include "front/ast.h"
#include "ir/fuse.h"
#include "lower/jit.h"
#include "core/pool.h"
#include "resolve/sema.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double now(void)
{
    return clock_s(CLOCK_MONOTONIC);
}

typedef struct Args {
    const char *model;
    const char *defines[64];
    int ndefines, batch, seq, threads, steps;
    bool f64, libm_exp, inline_blocks;
} Args;

static bool parse(int argc, char **argv, Args *a)
{
    *a = (Args){.batch = 8, .seq = 256, .threads = 1, .steps = 1};
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
        else if (!strcmp(s, "--steps") && v)
            a->steps = atoi(argv[++i]);
        else if (!strcmp(s, "--f64"))
            a->f64 = true;
        else if (!strcmp(s, "--libm-exp"))
            a->libm_exp = true;
        else if (!strcmp(s, "--inline-blocks"))
            a->inline_blocks = true;
        else if (s[0] != '-' && !a->model)
            a->model = s;
        else
            return false;
    }
    return a->model && a->batch > 0 && a->seq > 0 && a->threads > 0;
}

static bool load(IrGraph *g, Program *prog, const Args *a)
{
    Diag d;
    diag_init(&d, stderr);
    const char *why = NULL;
    SrcFile *src = src_read(a->model, &why);
    if (!src) {
        fprintf(stderr, "step_bench: cannot read %s: %s\n", a->model, why);
        return false;
    }
    SemaOptions opt = {.defines = (const char **)a->defines, .ndefines = a->ndefines};
    g->model_name = a->model;
    bool ok = ast_load(prog, &d, src) && sema_resolve(prog, &opt, &d, g);
    diag_finish(&d);
    if (ok) {
        ad_build(g);
        fuse_graph(g);
    }
    return ok;
}

/* Small random parameters (ones for gains), as REAL. */
static void *init_params(const StrataModelDesc *d)
{
    char *p = calloc((size_t)d->params_numel, (size_t)d->real_bytes);
    uint64_t s = 1;
    for (int i = 0; i < d->nparams; i++)
        for (int64_t k = 0; k < d->params[i].numel; k++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            double v = d->params[i].init == STRATA_INIT_ONES ? 1 : ((double)(s >> 11) * 0x1.0p-53 - 0.5) * 0.04;
            int64_t at = d->params[i].offset + k;
            if (d->real_bytes == 4)
                ((float *)p)[at] = (float)v;
            else
                ((double *)p)[at] = v;
        }
    return p;
}

int main(int argc, char **argv)
{
    Args a;
    if (!parse(argc, argv, &a)) {
        fprintf(stderr, "usage: step_bench MODEL.strata [-D NAME=VALUE]... [--batch B] [--seq T] [--threads N] "
                        "[--f64] [--libm-exp] [--inline-blocks] [--steps K]\n");
        return 2;
    }
    IrGraph g;
    Program prog = {0};
    ir_init(&g);
    if (!load(&g, &prog, &a))
        return 1;
    char *err = NULL;
    Jit *jit = jit_create(&err);
    JitModel m;
    LowerOptions o = {.precision = a.f64 ? LOWER_F64 : LOWER_F32, .opt_level = 2, .libm_exp = a.libm_exp,
                      .inline_blocks = a.inline_blocks};
    if (!jit || !jit_compile(jit, &g, &o, &m, &err)) {
        fprintf(stderr, "step_bench: %s\n", err);
        return 1;
    }
    const StrataModelDesc *d = m.desc;
    int64_t numel = 0;
    for (int i = 0; i < d->nparams; i++)
        numel += d->params[i].numel;
    printf("%s: %lld parameters in %lld REALs of %lld bytes, %lld blocks\n", a.model, (long long)numel,
           (long long)d->params_numel, (long long)d->real_bytes, (long long)d->nblocks);
    printf("jit %.3f s (lower %.3f, optimise %.3f, machine code %.3f)\n", m.stats.total_s, m.stats.lower_s,
           m.stats.opt_s, m.stats.codegen_s);
    RtPool *pool = rt_pool_create(a.threads);
    int64_t B = a.batch, T = a.seq, BT = B * T, bytes = strata_arena_bytes(d, B, T, rt_pool_size(pool));
    printf("batch %lld x %lld, %d pool threads, arena %.1f MiB\n", (long long)B, (long long)T, rt_pool_size(pool),
           (double)bytes / (1 << 20));
    void *params = init_params(d), *grads = calloc((size_t)d->params_numel, (size_t)d->real_bytes);
    void *arena = aligned_alloc(64, ((size_t)bytes + 63) / 64 * 64);
    int32_t *tokens = malloc((size_t)BT * sizeof *tokens), *targets = malloc((size_t)BT * sizeof *targets);
    for (int64_t r = 0; r < BT; r++) {
        tokens[r] = (int32_t)(r * 7919 % d->vocab);
        targets[r] = (int32_t)(r * 104729 % d->vocab);
    }
    double loss = 0;
    StrataStep s = {.params = params, .grads = grads, .arena = arena, .arena_bytes = bytes, .tokens = tokens,
                    .targets = targets, .B = B, .T = T, .loss = &loss, .pool = pool};
    for (int k = 0; k <= a.steps; k++) {
        double t0 = now();
        int st = m.forward(&s);
        double t1 = now(), c1 = clock_s(CLOCK_THREAD_CPUTIME_ID);
        st |= m.train_step(&s);
        double t2 = now(), c2 = clock_s(CLOCK_THREAD_CPUTIME_ID);
        printf("%s forward %.3f s, train step %.3f s (cpu %.4f s), loss %.6f%s\n", k ? "run   " : "warm-up", t1 - t0,
               t2 - t1, c2 - c1, loss, st ? " (error)" : "");
    }
    rt_pool_free(pool);
    jit_release(jit, &m);
    jit_free(jit);
    ir_free(&g);
    ast_program_free(&prog);
    free(params), free(grads), free(arena), free(tokens), free(targets);
    return 0;
}
