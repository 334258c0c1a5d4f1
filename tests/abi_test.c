/* abi_test.c - model ABI v4 (runtime/model_abi.h) beyond plain numbers,
 * which lower_test.c checks: for every model in $srcdir/models at tiny
 * sizes, JIT-compiled in float,
 *   desc      the descriptor matches the IR (names, sizes, layout, vocab,
 *             width, blocks) and every block can be skipped both ways;
 *   threads   no pool and pools of 1 to 16 threads give bitwise the same
 *             loss, logits and gradients, with the host's BLAS and with a
 *             position-sensitive product (issue #13: every split follows
 *             the shape, never the thread count);
 *   bf16      a bf16 step reaches every product, stays near fp32 and is
 *             the same bits for 1 and 3 threads;
 *   capture   capture[0] is block 0's input, capture[l+1] block l's output,
 *             as the interpreter computes them;
 *   forward   strata_forward's logits are the train step's, bitwise, in
 *             the arena or in the caller's buffer;
 *   mask      a NULL mask is an all-ones mask, bitwise;
 *   accumulate  a second step with accumulate adds its gradient (2 g);
 *   arena     the arena is smaller than the stored values without reuse;
 *   kinds     the blocks' kernels inline in the entry points instead of in
 *             one function per kind of block give bitwise the same results;
 *   norm      at sizes where parameters hold whole blocks of the gradient
 *             norm (RT_NORM_BLOCK), the block sums a train step takes as it
 *             finishes each gradient (StrataStep.grad_sumsq) give, through
 *             rt_grad_norm_finish, bitwise rt_grad_norm_pool of its
 *             gradients: fp32 and bf16, accumulating, kinds and inline,
 *             every block inside a parameter written.
 * Then skipping: pre_ln at L=4 with blocks 1 and 3 skipped must be pre_ln
 * at L=2 with the parameters of blocks 0 and 2 (interpreter, f64 and f32):
 * forward logits, loss and gradients, with zero gradients for the skipped
 * blocks' parameters, and the captured output of a skipped block equal to its
 * input; a block that leaks a value cannot be skipped.  And the error codes.
 * Exit 0 pass, 1 fail, 77 skip. */
#define _POSIX_C_SOURCE 200809L /* glob */
#include "core/gemm.h"
#include "lower_case.h"

#include <glob.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TOL_F64 1e-10
#define TOL_F32 2e-4 /* as lower_test.c */

static int failures;

static void report(bool ok, const char *model, const char *what, const char *detail)
{
    printf("%s %-26s %-10s %s\n", ok ? "ok  " : "FAIL", model, what, detail);
    failures += !ok;
}

static const char *base_name(const char *path)
{
    const char *b = strrchr(path, '/');
    return b ? b + 1 : path;
}

/* ---- descriptor ---- */

static bool check_desc(const Case *c, const JitModel *m, bool strict, char *why, size_t n)
{
    const StrataModelDesc *d = m->desc;
    const IrGraph *g = &c->g;
    if (d->magic != STRATA_MODEL_MAGIC || d->abi_version != STRATA_ABI_VERSION || d->real_bytes != 4)
        return snprintf(why, n, "magic, version or precision"), false;
    if (d->nparams != g->params.n || d->nblocks != g->blocks.n || d->vocab != g->logits->width)
        return snprintf(why, n, "counts"), false;
    int64_t end = 0;
    for (int i = 0; i < g->params.n; i++) {
        const IrParam *p = g->params.v[i];
        const StrataParam *q = &d->params[i];
        if (strcmp(q->name, p->name) || q->numel != p->numel || q->ndim != p->ndim || q->block != p->block ||
            q->init != (int)p->init.kind || q->init_a != p->init.a || q->offset % 16 || q->offset < end)
            return snprintf(why, n, "parameter %s", p->name), false;
        end = q->offset + q->numel;
    }
    if (end > d->params_numel || d->width != ((IrBlock *)g->blocks.v[0])->in->width)
        return snprintf(why, n, "sizes"), false;
    for (int l = 0; l < d->nblocks && strict; l++)
        if (d->block_skip[l] != (STRATA_SKIP_FORWARD | STRATA_SKIP_TRAIN))
            return snprintf(why, n, "block %d cannot be skipped (%d)", l, d->block_skip[l]), false;
    if (d->arena_rows_bytes % 64 || d->arena_seq_bytes % 64 || d->arena_fixed_bytes % 64 || d->arena_thread_bytes % 64)
        return snprintf(why, n, "region sizes not multiples of 64"), false;
    snprintf(why, n, "%lld params, %lld REALs, arena %lld B/token + %lld B/position + %lld + %lld B/thread",
             (long long)d->nparams, (long long)d->params_numel, (long long)d->arena_rows_bytes,
             (long long)d->arena_seq_bytes, (long long)d->arena_fixed_bytes, (long long)d->arena_thread_bytes);
    return true;
}

/* ---- comparisons ---- */

static bool same_bits(const double *a, const double *b, int64_t n)
{
    return memcmp(a, b, (size_t)n * sizeof *a) == 0;
}

static bool same_result(const Case *c, const JitModel *m, const Result *a, const Result *b, bool grads)
{
    int64_t BT = (int64_t)c->B * c->T;
    bool ok = a->status == 0 && b->status == 0 && same_bits(a->logits, b->logits, BT * m->desc->vocab);
    for (int p = 0; grads && ok && p < m->desc->nparams; p++)
        ok = same_bits(a->grads[p], b->grads[p], m->desc->params[p].numel);
    return ok && (!grads || memcmp(&a->loss, &b->loss, sizeof a->loss) == 0);
}

/* ---- thread counts (issue #13) ---- */

/* A position-sensitive reference product for rt_gemm_set_backend: each
 * element of C is its exact sum (in double), scaled by 1 + 2^-12 ((i mod 5)
 * + (M mod 3)) before it is rounded, i the row inside this call and M the
 * call's rows.  So a row's bits depend on where it falls in a call and on
 * the call's size, as with BLAS edge kernels, only always: any split of a
 * product that follows the thread count changes the bits, on every host. */
#define POS_GEMM(REAL, NAME)                                                                                      \
    static void NAME(int ta, int tb, int64_t M, int64_t N, int64_t K, const REAL *A, int64_t lda, const REAL *B, \
                     int64_t ldb, REAL beta, REAL *C, int64_t ldc)                                                \
    {                                                                                                             \
        for (int64_t i = 0; i < M; i++)                                                                           \
            for (int64_t j = 0; j < N; j++) {                                                                     \
                double s = 0;                                                                                     \
                for (int64_t k = 0; k < K; k++)                                                                   \
                    s += (double)(ta ? A[k * lda + i] : A[i * lda + k]) * (tb ? B[j * ldb + k] : B[k * ldb + j]); \
                s *= 1 + ldexp((double)(i % 5 + M % 3), -12);                                                   \
                C[i * ldc + j] = (REAL)(s + (beta != 0 ? (double)beta * C[i * ldc + j] : 0.0));                   \
            }                                                                                                     \
    }
POS_GEMM(float, pos_gemm_f32)
POS_GEMM(double, pos_gemm_f64)
static const RtGemmBackend pos_gemm = {"position-sensitive", pos_gemm_f32, pos_gemm_f64, NULL};

/* The backend is what it claims: rows 0..63 of a 64-row product computed
 * in one call and in two calls of 32 rows differ. */
static bool pos_gemm_is_sensitive(void)
{
    enum { M = 64, N = 8, K = 16 };
    float A[M * K], B[K * N], C1[M * N], C2[M * N];
    for (int i = 0; i < M * K; i++)
        A[i] = (float)((i * 37 % 17) - 8) / 8;
    for (int i = 0; i < K * N; i++)
        B[i] = (float)((i * 11 % 13) - 6) / 8;
    pos_gemm.f32(0, 0, M, N, K, A, K, B, N, 0, C1, N);
    pos_gemm.f32(0, 0, M / 2, N, K, A, K, B, N, 0, C2, N);
    pos_gemm.f32(0, 0, M / 2, N, K, A + M / 2 * K, K, B, N, 0, C2 + M / 2 * N, N);
    return memcmp(C1, C2, sizeof C1) != 0;
}

/* No pool and pools of 1, 2, 3, 4, 7 and 16 threads give bitwise the same
 * loss, logits and gradients, with the host's BLAS and with the
 * position-sensitive products (so the test fails on a split that follows
 * the thread count even where the host's kernel happens to hide it).  At
 * B=4, T=40 (160 rows) the products, row kernels, attention and
 * cross-entropy all have several tiles. */
static void check_threads(Case *c, const JitModel *m, const char *name)
{
    static const int sizes[] = {1, 2, 3, 4, 7, 16};
    enum { NS = sizeof sizes / sizeof *sizes };
    bool ok = case_batch(c, 23, 4, 40);
    for (int backend = 0; backend < 2 && ok; backend++) {
        const RtGemmBackend *old = rt_gemm_set_backend(backend ? &pos_gemm : NULL);
        Result r0;
        case_run(c, m, &(RunOpts){0}, &r0);
        ok = r0.status == 0 && isfinite(r0.loss);
        for (int s = 0; s < NS && ok; s++) {
            RtPool *p = rt_pool_create(sizes[s]);
            Result r;
            case_run(c, m, &(RunOpts){.pool = p}, &r);
            ok = rt_pool_size(p) == sizes[s] && same_result(c, m, &r0, &r, true);
            result_free(c, &r);
            rt_pool_free(p);
        }
        result_free(c, &r0);
        rt_gemm_set_backend(old);
    }
    case_free_batch(c);
    report(ok, name, "threads",
           "none, 1, 2, 3, 4, 7, 16 threads, host BLAS and position-sensitive products: bitwise the same");
}

/* --precision bf16 reaches every product (in blocks compiled once per
 * kind too): the logits move off fp32's (the products' operands lose 16
 * bits), by less than 20% of the largest logit through the tiny model's
 * random layers, the loss by less than 1%, and the bits stay the same
 * for 1 and 3 threads.  (Each product's own error is bounded in
 * gemm_test.) */
static void check_bf16(Case *c, const JitModel *m, const char *name)
{
    bool ok = case_batch(c, 29, 4, 40);
    Result f, b1, b3;
    RtPool *p1 = rt_pool_create(1), *p3 = rt_pool_create(3);
    case_run(c, m, &(RunOpts){.pool = p1}, &f);
    case_run(c, m, &(RunOpts){.pool = p1, .precision = STRATA_PRECISION_BF16}, &b1);
    case_run(c, m, &(RunOpts){.pool = p3, .precision = STRATA_PRECISION_BF16}, &b3);
    int64_t n = (int64_t)c->B * c->T * m->desc->vocab;
    double err = tensor_error(b1.logits, f.logits, n);
    ok = ok && f.status == 0 && same_result(c, m, &b1, &b3, true) && err > 0 && err < 0.2 &&
         fabs(b1.loss - f.loss) <= 1e-2 * fabs(f.loss) && b1.loss != f.loss;
    char detail[128];
    snprintf(detail, sizeof detail, "logits off fp32 by %.1e (relative), loss %.6f vs %.6f; 1 and 3 threads bitwise",
             err, b1.loss, f.loss);
    report(ok, name, "bf16", detail);
    result_free(c, &f), result_free(c, &b1), result_free(c, &b3);
    rt_pool_free(p1), rt_pool_free(p3);
    case_free_batch(c);
}

static void check_capture(const Case *c, const JitModel *m, RtPool *pool, const char *name)
{
    Result r;
    case_run(c, m, &(RunOpts){.pool = pool, .capture = true}, &r);
    const StrataModelDesc *d = m->desc;
    int64_t slice = (int64_t)c->B * c->T * d->width;
    double err = r.status ? INFINITY : 0;
    for (int l = 0; l <= d->nblocks; l++) {
        const IrBlock *b = c->g.blocks.v[l ? l - 1 : 0];
        const IrNode *x = l ? b->out : b->in;
        err = fmax(err, tensor_error(r.capture + l * slice, interp_value(&c->ref, x), slice));
    }
    char detail[96];
    snprintf(detail, sizeof detail, "%lld residual streams vs interpreter: %.1e", (long long)d->nblocks + 1, err);
    report(err <= TOL_F32, name, "capture", detail);
    result_free(c, &r);
}

/* strata_forward (logits in the arena, and in a buffer) vs the train step. */
static void check_forward(const Case *c, const JitModel *m, RtPool *pool, const char *name)
{
    Result t, f, o;
    case_run(c, m, &(RunOpts){.pool = pool}, &t);
    case_run(c, m, &(RunOpts){.pool = pool, .forward = true}, &f);
    case_run(c, m, &(RunOpts){.pool = pool, .forward = true, .logits_out = true}, &o);
    bool ok = same_result(c, m, &t, &f, false) && same_result(c, m, &t, &o, false) && isnan(f.loss);
    report(ok, name, "forward", "logits in the arena and in a buffer = the train step's, bitwise; no loss");
    result_free(c, &t), result_free(c, &f), result_free(c, &o);
}

static void check_mask(Case *c, const JitModel *m, RtPool *pool, const char *name)
{
    int64_t BT = (int64_t)c->B * c->T;
    double *saved = c->mask, *ones = malloc((size_t)BT * sizeof *ones);
    for (int64_t r = 0; r < BT; r++)
        ones[r] = 1;
    c->mask = ones;
    Result a, b;
    case_run(c, m, &(RunOpts){.pool = pool}, &a);
    case_run(c, m, &(RunOpts){.pool = pool, .no_mask = true}, &b);
    c->mask = saved;
    report(same_result(c, m, &a, &b, true), name, "mask", "NULL = all ones, bitwise");
    result_free(c, &a), result_free(c, &b);
    free(ones);
}

static void check_accumulate(const Case *c, const JitModel *m, RtPool *pool, const char *name)
{
    Result a, b;
    case_run(c, m, &(RunOpts){.pool = pool}, &a);
    case_run(c, m, &(RunOpts){.pool = pool, .accumulate = 1, .grads_from = &a}, &b);
    double err = a.status || b.status ? INFINITY : 0;
    for (int p = 0; p < m->desc->nparams; p++) {
        int64_t n = m->desc->params[p].numel;
        double *twice = malloc((size_t)n * sizeof *twice);
        for (int64_t k = 0; k < n; k++)
            twice[k] = 2 * a.grads[p][k];
        err = fmax(err, tensor_error(b.grads[p], twice, n));
        free(twice);
    }
    /* Not bitwise: the second step adds into the buffer term by term (BLAS
     * beta = 1, sums over tokens start from the old value), so f32 rounds
     * differently; forgetting to add would give 0.5. */
    char detail[64];
    snprintf(detail, sizeof detail, "g + g vs 2 g: %.1e", err);
    report(err <= TOL_F32, name, "accumulate", detail);
    result_free(c, &a), result_free(c, &b);
}

/* The arena against every stored value (and aux state) without reuse. */
static void check_arena(const Case *c, const JitModel *m, const char *name)
{
    const IrGraph *g = &c->g;
    int64_t sum = 0, BT = (int64_t)c->B * c->T;
    for (int i = 0; i < g->nodes.n; i++) {
        const IrNode *x = g->nodes.v[i];
        if (x->kernel >= 0 && x->stored)
            sum += (x->tok ? BT : x->rows) * x->width * 4;
    }
    int64_t arena = strata_arena_bytes(m->desc, c->B, c->T, 1);
    char detail[96];
    snprintf(detail, sizeof detail, "B=%d T=%d: %lld bytes, stored values %lld", c->B, c->T, (long long)arena,
             (long long)sum);
    report(arena < sum, name, "arena", detail);
}

/* ---- kinds of blocks (issue #19) ---- */

static bool same_capture(const Case *c, const JitModel *m, const Result *a, const Result *b)
{
    int64_t n = (m->desc->nblocks + 1) * (int64_t)c->B * c->T * m->desc->width;
    return !a->capture == !b->capture && (!a->capture || same_bits(a->capture, b->capture, n));
}

/* The model compiled with every block's kernels inline in the entry points
 * (LowerOptions.inline_blocks: the code before kinds) must give bitwise
 * what the kinds' functions give, called with each block's row: loss,
 * logits, gradients and captured streams, with odd blocks skipped, with
 * accumulation, and from strata_forward. */
static void check_kinds(Jit *jit, Case *c, const JitModel *m, RtPool *pool, const char *name)
{
    JitModel in;
    LowerOptions o = {.precision = LOWER_F32, .opt_level = 2, .inline_blocks = true};
    if (!case_compile_with(jit, c, &o, &in)) {
        report(false, name, "kinds", "the inline build does not compile");
        return;
    }
    const StrataModelDesc *d = m->desc;
    uint8_t *skip = calloc((size_t)d->nblocks + 1, 1), *skip_fwd = calloc((size_t)d->nblocks + 1, 1);
    for (int l = 1; l < d->nblocks; l += 2) { /* odd blocks, those each entry point can skip */
        skip[l] = d->block_skip[l] == (STRATA_SKIP_FORWARD | STRATA_SKIP_TRAIN);
        skip_fwd[l] = (d->block_skip[l] & STRATA_SKIP_FORWARD) != 0;
    }
    Result base;
    case_run(c, m, &(RunOpts){.pool = pool}, &base);
    const RunOpts runs[] = {
        {.pool = pool, .capture = d->width > 0},
        {.pool = pool, .capture = d->width > 0, .skip = skip},
        {.pool = pool, .accumulate = 1, .grads_from = &base},
        {.pool = pool, .accumulate = 1, .grads_from = &base, .skip = skip},
        {.pool = pool, .forward = true, .capture = d->width > 0},
        {.pool = pool, .forward = true, .capture = d->width > 0, .skip = skip_fwd},
    };
    bool ok = base.status == 0;
    for (size_t i = 0; i < sizeof runs / sizeof *runs && ok; i++) {
        Result a, b;
        case_run(c, m, &runs[i], &a);
        case_run(c, &in, &runs[i], &b);
        ok = same_result(c, m, &a, &b, !runs[i].forward) && same_capture(c, m, &a, &b);
        if (!ok)
            fprintf(stderr, "  %s: run %zu differs from the inline build\n", name, i);
        result_free(c, &a), result_free(c, &b);
    }
    result_free(c, &base);
    free(skip);
    free(skip_fwd);
    jit_release(jit, &in);
    report(ok, name, "kinds", "= every block inline, bitwise: capture, skip, accumulate, forward");
}

/* ---- the gradient norm's block sums ---- */

static void check_norm(Jit *jit, RtPool *pool, const char *path, const char *text)
{
    static const char *const sizes[] = {"vocab=300", "d=64", "heads=2", "ffn=128", "L=3", "ctx=5"};
    const char *name = base_name(path);
    Case c;
    JitModel m[2];
    LowerOptions inl = {.precision = LOWER_F32, .opt_level = 2, .inline_blocks = true};
    if (!case_load(&c, path, text, sizes, 6) || !case_compile(jit, &c, LOWER_F32, &m[0]) ||
        !case_compile_with(jit, &c, &inl, &m[1])) {
        report(false, name, "norm", "does not load or compile at the norm's sizes");
        case_free(&c);
        return;
    }
    case_params(&c, 3);
    bool ok = case_batch(&c, 5, 2, 5);
    char detail[160] = "no batch";
    Result base = {0};
    if (ok)
        case_run(&c, &m[0], &(RunOpts){.pool = pool}, &base);
    for (int build = 0; build < 2 && ok; build++) {
        const RunOpts runs[] = {
            {.pool = pool, .norm = true},
            {.pool = NULL, .norm = true},
            {.pool = pool, .norm = true, .precision = STRATA_PRECISION_BF16},
            {.pool = pool, .norm = true, .accumulate = 1, .grads_from = &base},
        };
        for (size_t i = 0; i < sizeof runs / sizeof *runs && ok; i++) {
            Result r;
            case_run(&c, &m[build], &runs[i], &r);
            ok = r.status == 0 && isfinite(r.norm_pass) && r.norm_fused == r.norm_pass && r.sums_inside > 0 &&
                 r.sums_written == r.sums_inside;
            snprintf(detail, sizeof detail, "%s run %zu: %lld of %lld blocks from the step, norm %.17g vs %.17g",
                     build ? "inline" : "kinds", i, (long long)r.sums_written, (long long)r.sums_inside,
                     r.norm_fused, r.norm_pass);
            result_free(&c, &r);
        }
    }
    if (ok) /* every run passed: say what they covered */
        snprintf(detail, sizeof detail, "4 runs (fp32, no pool, bf16, accumulate) x kinds, inline: the step's "
                 "block sums = rt_grad_norm_pool, bitwise");
    report(ok, name, "norm", detail);
    result_free(&c, &base);
    jit_release(jit, &m[0]);
    jit_release(jit, &m[1]);
    case_free(&c);
}

/* A model file (text NULL) or the source text under the name `path`, at
 * gradcheck's tiny sizes or `sizes`.  strict: every block must be skippable
 * (as in every model of models/). */
static void check_model(Jit *jit, RtPool *pool, const char *path, const char *text, const char *const *sizes,
                        int nsizes, bool strict)
{
    const char *name = base_name(path);
    Case c;
    JitModel m;
    if (!case_load(&c, path, text, sizes, nsizes) || !case_compile(jit, &c, LOWER_F32, &m)) {
        report(false, name, "load", "does not load or compile");
        case_free(&c);
        return;
    }
    case_params(&c, 1);
    char why[160];
    bool ok = check_desc(&c, &m, strict, why, sizeof why);
    report(ok, name, "desc", why);
    if (ok)
        check_threads(&c, &m, name);
    if (ok)
        check_bf16(&c, &m, name);
    if (ok && case_batch(&c, 11, 3, 8)) {
        check_capture(&c, &m, pool, name);
        check_forward(&c, &m, pool, name);
        check_mask(&c, &m, pool, name);
        check_accumulate(&c, &m, pool, name);
        check_arena(&c, &m, name);
        check_kinds(jit, &c, &m, pool, name);
        case_free_batch(&c);
    }
    jit_release(jit, &m);
    case_free(&c);
}

/* ---- skipping blocks ---- */

/* The parameters of `small` (L=2) from those of `big` (L=4) with blocks
 * kept[] = {0, 2}: block b of small is block kept[b] of big, parameters in
 * table order within a block; those outside blocks in order.  map[i] =
 * big's index of small's parameter i. */
static bool map_params(const Case *big, const Case *small, const int *kept, int *map)
{
    for (int i = 0; i < small->g.params.n; i++) {
        const IrParam *p = small->g.params.v[i];
        int want = p->block < 0 ? -1 : kept[p->block], rank = 0;
        for (int j = 0; j < i; j++)
            rank += ((IrParam *)small->g.params.v[j])->block == p->block;
        map[i] = -1;
        for (int j = 0; j < big->g.params.n && map[i] < 0; j++) {
            const IrParam *q = big->g.params.v[j];
            if (q->block == want && rank-- == 0)
                map[i] = j;
        }
        if (map[i] < 0 || ((IrParam *)big->g.params.v[map[i]])->numel != p->numel)
            return false;
    }
    return true;
}

static double skip_errors(const Case *big, const Case *small, const int *map, const Result *t, const Result *f)
{
    const IrGraph *g = &small->g;
    double ref = interp_value(&small->ref, g->loss)[0];
    double e = fmax(fabs(t->loss - ref) / fabs(ref), tensor_error(f->logits, interp_value(&small->ref, g->logits),
                                                                   interp_numel(&small->ref, g->logits)));
    bool *mapped = calloc((size_t)big->g.params.n + 1, sizeof *mapped);
    for (int i = 0; i < g->params.n; i++) {
        const IrNode *gn = g->grads.v[i];
        mapped[map[i]] = true;
        if (gn)
            e = fmax(e, tensor_error(t->grads[map[i]], interp_value(&small->ref, gn), interp_numel(&small->ref, gn)));
    }
    for (int j = 0; j < big->g.params.n; j++) /* the skipped blocks' gradients: zero */
        for (int64_t k = 0; !mapped[j] && k < ((IrParam *)big->g.params.v[j])->numel; k++)
            e = fmax(e, t->grads[j][k] == 0 ? 0 : INFINITY);
    free(mapped);
    return isnan(e) || t->status || f->status ? INFINITY : e;
}

static void check_skip(Jit *jit, RtPool *pool, const char *path)
{
    static const char *const sizes4[] = {"vocab=11", "d=16", "heads=2", "ffn=24", "L=4", "ctx=5"};
    static const char *const sizes2[] = {"vocab=11", "d=16", "heads=2", "ffn=24", "L=2", "ctx=5"};
    static const int kept[] = {0, 2};
    static const uint8_t skip[] = {0, 1, 0, 1};
    Case big, small;
    bool ok = case_load(&big, path, NULL, sizes4, 6) && case_load(&small, path, NULL, sizes2, 6);
    int map[256];
    ok = ok && big.g.blocks.n == 4 && small.g.params.n < 256;
    if (ok) {
        case_params(&big, 3);
        case_params(&small, 3);
        ok = map_params(&big, &small, kept, map);
        for (int i = 0; ok && i < small.g.params.n; i++)
            memcpy(small.params[i], big.params[map[i]],
                   (size_t)((IrParam *)small.g.params.v[i])->numel * sizeof(double));
        ok = ok && case_batch(&big, 5, 3, 8) && case_batch(&small, 5, 3, 8);
    }
    for (int prec = 0; prec < 2 && ok; prec++) {
        JitModel m;
        if (!case_compile(jit, &big, prec ? LOWER_F32 : LOWER_F64, &m)) {
            ok = false;
            break;
        }
        Result t, f;
        case_run(&big, &m, &(RunOpts){.pool = pool, .skip = skip, .capture = true}, &t);
        case_run(&big, &m, &(RunOpts){.pool = pool, .skip = skip, .forward = true}, &f);
        double e = skip_errors(&big, &small, map, &t, &f), tol = prec ? TOL_F32 : TOL_F64;
        int64_t slice = (int64_t)big.B * big.T * m.desc->width; /* a skipped block's output is its input */
        if (!same_bits(t.capture + 2 * slice, t.capture + slice, slice) ||
            !same_bits(t.capture + 4 * slice, t.capture + 3 * slice, slice))
            e = INFINITY;
        char detail[128];
        snprintf(detail, sizeof detail, "%s: L=4 skipping blocks 1, 3 vs L=2 (interpreter): %.1e", prec ? "f32" : "f64",
                 e);
        report(e <= tol, base_name(path), "skip", detail);
        result_free(&big, &t), result_free(&big, &f);
        jit_release(jit, &m);
    }
    if (!ok)
        report(false, base_name(path), "skip", "could not set up the two models");
    case_free_batch(&big), case_free_batch(&small);
    case_free(&big), case_free(&small);
}

/* ---- errors ---- */

/* A model whose last block leaks a value past its output (`a`): that block
 * cannot be skipped (STRATA_ERR_SKIP), the first still can. */
static const char leak[] =
    "import \"std\"\n"
    "config {\n vocab = 11\n d = 16\n L = 2\n}\n"
    "model {\n"
    "    x = embed(tokens, vocab, d) as tok_embeddings\n"
    "    for l in 1..L {\n"
    "        x = x + linear(rmsnorm(x) as norm, d) as proj\n"
    "        a = x * 2\n"
    "    }\n"
    "    logits = linear(rmsnorm(x + a) as norm, vocab) as output\n"
    "}\n";

static void check_unskippable(Jit *jit, RtPool *pool)
{
    Case c;
    JitModel m;
    static const char *const sizes[] = {"L=2"};
    if (!case_load(&c, "leak", leak, sizes, 1) || !case_compile(jit, &c, LOWER_F32, &m)) {
        report(false, "leak", "skip", "does not load");
        case_free(&c);
        return;
    }
    case_params(&c, 2);
    bool ok = case_batch(&c, 2, 2, 5) && m.desc->nblocks == 2 && m.desc->block_skip[0] == 3 &&
              m.desc->block_skip[1] == 0;
    static const uint8_t first[] = {1, 0}, last[] = {0, 1};
    Result r[4];
    RunOpts o[4] = {{.pool = pool, .skip = first}, {.pool = pool, .skip = last},
                    {.pool = pool, .skip = first, .forward = true}, {.pool = pool, .skip = last, .forward = true}};
    int want[4] = {STRATA_OK, STRATA_ERR_SKIP, STRATA_OK, STRATA_ERR_SKIP};
    for (int i = 0; i < 4; i++) {
        ok &= c.tokens && case_run(&c, &m, &o[i], &r[i]) == want[i];
        result_free(&c, &r[i]);
    }
    report(ok, "leak", "skip", "a block whose value is read after it: not skippable, STRATA_ERR_SKIP");
    case_free_batch(&c);
    jit_release(jit, &m);
    case_free(&c);
}

static void check_errors(Jit *jit, const char *path)
{
    Case c;
    JitModel m;
    if (!case_load(&c, path, NULL, NULL, 0) || !case_compile(jit, &c, LOWER_F32, &m)) {
        report(false, base_name(path), "errors", "does not load");
        case_free(&c);
        return;
    }
    const StrataModelDesc *d = m.desc;
    int64_t bytes = strata_arena_bytes(d, 2, 5, 1);
    void *arena = calloc(1, (size_t)bytes), *params = calloc((size_t)d->params_numel, 4);
    void *grads = calloc((size_t)d->params_numel, 4);
    int32_t ids[10] = {0};
    uint8_t skip[64] = {1};
    StrataStep ok = {.params = params, .grads = grads, .arena = arena, .arena_bytes = bytes, .tokens = ids,
                     .targets = ids, .B = 2, .T = 5};
    StrataStep s[5] = {ok, ok, ok, ok, ok};
    s[1].grads = NULL;
    s[2].B = 0;
    s[3].arena_bytes = bytes - 1;
    s[4].T = 6; /* more tokens than the arena has room for */
    int want[5] = {STRATA_OK, STRATA_ERR_ARGS, STRATA_ERR_SHAPE, STRATA_ERR_ARENA, STRATA_ERR_ARENA};
    bool good = true;
    for (int i = 0; i < 5; i++)
        good &= m.train_step(&s[i]) == want[i];
    s[0].skip = skip; /* every block of the models can be skipped */
    good &= m.train_step(&s[0]) == STRATA_OK && m.forward(&s[1]) == STRATA_OK;
    report(good, base_name(path), "errors", "NULL grads, B=0, small arena: ARGS, SHAPE, ARENA; forward needs no grads");
    free(arena), free(params), free(grads);
    jit_release(jit, &m);
    case_free(&c);
}

int main(void)
{
    char *err = NULL;
    Jit *jit = jit_create(&err);
    if (!jit) {
        fprintf(stderr, "abi_test: no JIT for this host (%s): skipped\n", err);
        free(err);
        return 77;
    }
    const char *srcdir = getenv("srcdir");
    char pattern[4096], pre_ln[4096];
    snprintf(pattern, sizeof pattern, "%s/models/*.strata", srcdir ? srcdir : ".");
    snprintf(pre_ln, sizeof pre_ln, "%s/models/pre_ln.strata", srcdir ? srcdir : ".");
    glob_t gl = {0};
    if (glob(pattern, 0, NULL, &gl) != 0 || gl.gl_pathc == 0) {
        fprintf(stderr, "abi_test: no model files match %s\n", pattern);
        jit_free(jit);
        return 1;
    }
    report(pos_gemm_is_sensitive(), "position-sensitive", "gemm",
           "its rows differ between one 64-row call and two 32-row calls");
    const char *ct = getenv("OPENBLAS_CORETYPE");
    printf("host BLAS: OpenBLAS with OPENBLAS_CORETYPE %s (the environment as given)\n", ct ? ct : "unset");
    RtPool *pool = rt_pool_create(2);
    for (size_t i = 0; i < gl.gl_pathc; i++)
        check_model(jit, pool, gl.gl_pathv[i], NULL, NULL, 0, true);
    static const char *const zoo_sizes[] = {"vocab=11", "d=16", "heads=2", "ffn=24", "L=7", "ctx=5"};
    check_model(jit, pool, "kinds_zoo", kinds_zoo, zoo_sizes, 6, false);
    for (size_t i = 0; i < gl.gl_pathc; i++)
        check_norm(jit, pool, gl.gl_pathv[i], NULL);
    check_norm(jit, pool, "kinds_zoo", kinds_zoo);
    check_skip(jit, pool, pre_ln);
    check_errors(jit, pre_ln);
    check_unskippable(jit, pool);
    rt_pool_free(pool);
    globfree(&gl);
    jit_free(jit);
    printf("%d failures\n", failures);
    return failures ? 1 : 0;
}
