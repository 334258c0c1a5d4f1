/* optim_test.c - optimizers, clipping and schedules (optim.h, schedule.h).
 * Without arguments: each schedule at hand-computed points (warmup, its
 * end, mid-decay by the formula, the floor at the end), gradient norms and
 * clipping, one Adam/AdamW step worked by hand, the weight-decay mask, bad
 * segments refused, a pooled step and norm bit-identical to the serial
 * ones, and clipping folded into the step bit-identical to the two
 * passes.  With `--torch FILE` (tests/optim_torch.test): replays the cases
 * that tests/optim_reference.py ran through torch.optim and compares the
 * parameters, moments and gradient norms to 1e-6 relative (to the largest
 * element of each tensor).  Exit 0 pass,
 * 1 fail. */
#include "train/optim.h"
#include "train/schedule.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

static void near(const char *what, double got, double want, double tol)
{
    if (!(fabs(got - want) <= tol * fmax(1, fabs(want)))) {
        printf("FAIL: %s = %.17g, want %.17g\n", what, got, want);
        failures++;
    }
}

static void check(int ok, const char *what)
{
    if (!ok) {
        printf("FAIL: %s\n", what);
        failures++;
    }
}

/* Reproducible normal floats (xorshift64*, Box-Muller). */
static uint64_t rng_state = 88172645463325252ull;

static double uniform(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return ((rng_state * 2685821657736338717ull) >> 11) * 0x1.0p-53;
}

static void randn(float *x, int64_t n, double scale)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)(scale * sqrt(-2 * log(1 - uniform())) * cos(2 * M_PI * uniform()));
}

/* ---- schedules ---- */

static void test_schedules(void)
{
    const double M = 6e-4, r = 0.1, m = r * M;
    RtLrSchedule s = {.kind = RT_LR_COSINE, .max_lr = M, .min_ratio = r, .warmup = 10, .total = 110};
    check(rt_lr_check(&s) == NULL, "cosine schedule valid");
    near("cosine step 0", rt_lr(&s, 0), M * 1 / 10, 1e-15);
    near("cosine step 4", rt_lr(&s, 4), M * 5 / 10, 1e-15);
    near("cosine warmup end (step 9)", rt_lr(&s, 9), M, 1e-15);
    near("cosine step 10 (decay starts at max)", rt_lr(&s, 10), M, 1e-15);
    near("cosine middle (step 60)", rt_lr(&s, 60), m + (M - m) * 0.5, 1e-15); /* p = 1/2: cos = 0 */
    near("cosine step 35", rt_lr(&s, 35), m + (M - m) * 0.5 * (1 + cos(M_PI * 25 / 100)), 1e-15);
    near("cosine last step (109)", rt_lr(&s, 109), m + (M - m) * 0.5 * (1 + cos(M_PI * 99 / 100)), 1e-15);
    near("cosine floor (step 110)", rt_lr(&s, 110), m, 1e-15);
    near("cosine past the end", rt_lr(&s, 1000), m, 1e-15);
    near("cosine negative step", rt_lr(&s, -5), rt_lr(&s, 0), 0);
    for (int64_t k = 10; k < 110; k++)
        if (rt_lr(&s, k + 1) > rt_lr(&s, k)) {
            check(0, "cosine decay is monotone");
            break;
        }

    s.kind = RT_LR_LINEAR;
    near("linear warmup end", rt_lr(&s, 9), M, 1e-15);
    near("linear step 35", rt_lr(&s, 35), m + (M - m) * 0.75, 1e-15);
    near("linear middle", rt_lr(&s, 60), (M + m) / 2, 1e-15);
    near("linear floor", rt_lr(&s, 110), m, 1e-15);

    s.kind = RT_LR_CONSTANT;
    near("constant warmup step 1", rt_lr(&s, 1), M * 2 / 10, 1e-15);
    near("constant after warmup", rt_lr(&s, 50), M, 0);
    near("constant past the end", rt_lr(&s, 500), M, 0);
    s.warmup = 0;
    near("constant without warmup, step 0", rt_lr(&s, 0), M, 0);

    /* WSD: T = 100, W = 10, decay the last 20% (S = 80). */
    RtLrSchedule w = {.kind = RT_LR_WSD, .max_lr = 1e-3, .min_ratio = 0, .warmup = 10, .total = 100,
                      .decay_frac = 0.2, .wsd_shape = RT_WSD_LINEAR};
    check(rt_lr_check(&w) == NULL, "wsd schedule valid");
    near("wsd warmup step 0", rt_lr(&w, 0), 1e-4, 1e-15);
    near("wsd warmup end", rt_lr(&w, 9), 1e-3, 1e-15);
    near("wsd stable", rt_lr(&w, 50), 1e-3, 0);
    near("wsd last stable (79)", rt_lr(&w, 79), 1e-3, 0);
    near("wsd decay start (80)", rt_lr(&w, 80), 1e-3, 1e-15);
    near("wsd decay (85)", rt_lr(&w, 85), 1e-3 * (1 - 5.0 / 20), 1e-15);
    near("wsd decay (90)", rt_lr(&w, 90), 1e-3 * 0.5, 1e-15);
    near("wsd floor (100)", rt_lr(&w, 100), 0, 1e-15);
    w.wsd_shape = RT_WSD_SQRT;
    w.min_ratio = 0.1;
    near("wsd 1-sqrt (85)", rt_lr(&w, 85), 1e-4 + (1e-3 - 1e-4) * (1 - sqrt(0.25)), 1e-15);
    near("wsd 1-sqrt floor", rt_lr(&w, 100), 1e-4, 1e-15);
    w.decay_frac = 0.95; /* the decay never starts before warmup ends */
    near("wsd long decay, warmup end", rt_lr(&w, 9), 1e-3, 1e-15);
    near("wsd long decay, step 10", rt_lr(&w, 10), 1e-3, 1e-15);
    near("wsd long decay, step 55", rt_lr(&w, 55), 1e-4 + 9e-4 * (1 - sqrt(0.5)), 1e-15);

    /* Degenerate: warmup longer than the run. */
    RtLrSchedule d = {.kind = RT_LR_COSINE, .max_lr = 1, .min_ratio = 0.5, .warmup = 10, .total = 5};
    near("warmup > total, step 4", rt_lr(&d, 4), 0.5, 0);
    near("warmup > total, step 10", rt_lr(&d, 10), 0.5, 0);

    RtLrSchedule bad = s;
    bad.min_ratio = 2;
    check(rt_lr_check(&bad) != NULL, "min_ratio 2 refused");
    bad = s;
    bad.total = 0;
    check(rt_lr_check(&bad) != NULL, "total 0 refused");
    RtLrKind k;
    check(rt_lr_kind_parse("wsd", &k) == 0 && k == RT_LR_WSD, "parse wsd");
    check(rt_lr_kind_parse("cosine", &k) == 0 && strcmp(rt_lr_kind_name(k), "cosine") == 0, "cosine round trip");
    check(rt_lr_kind_parse("exp", &k) == -1, "unknown kind refused");
}

/* ---- norms and clipping ---- */

static void test_clip(void)
{
    float g[4] = {3, 0, -4, 0};
    double norm = rt_grad_norm(g, 4);
    near("norm (3,0,-4,0)", norm, 5, 0);
    double c = rt_clip_grads(g, 4, 1.0, norm);
    near("clip factor", c, 1 / (5 + 1e-6), 1e-7);
    near("clipped g0", g[0], 3 * (float)c, 0);
    near("clipped norm", rt_grad_norm(g, 4), 1, 1e-6);
    float h[2] = {0.3f, 0.4f};
    check(rt_clip_grads(h, 2, 1.0, rt_grad_norm(h, 2)) == 1 && h[0] == 0.3f && h[1] == 0.4f,
          "no clipping under max_norm");
    check(rt_clip_grads(h, 2, 1.0, NAN) == 1 && h[0] == 0.3f, "NaN norm leaves g alone");
    check(isnan(rt_grad_norm((float[]){1, NAN}, 2)), "NaN gradient gives a NaN norm");
    near("empty norm", rt_grad_norm(g, 0), 0, 0);

    /* Against a plain double sum, and pooled = serial to the bit. */
    int64_t n = 3 * RT_NORM_BLOCK * 7 + 123;
    float *x = malloc(sizeof *x * (size_t)n);
    randn(x, n, 1e-3);
    double plain = 0;
    for (int64_t i = 0; i < n; i++)
        plain += (double)x[i] * x[i];
    double serial = rt_grad_norm(x, n);
    near("norm vs plain sum", serial, sqrt(plain), 1e-13);
    for (int t = 1; t <= 5; t++) {
        RtPool *p = rt_pool_create(t);
        int64_t ns[] = {n, 17 * RT_NORM_BLOCK, 16 * RT_NORM_BLOCK + 1, 100};
        for (int i = 0; i < 4; i++) {
            char what[64];
            snprintf(what, sizeof what, "pooled norm (%d threads, n %lld)", t, (long long)ns[i]);
            check(rt_grad_norm_pool(x, ns[i], p) == rt_grad_norm(x, ns[i]), what);
        }
        rt_pool_free(p);
    }
    free(x);
}

/* The norm from block sums taken parameter by parameter (as a train step
 * takes them, in any order) and finished by rt_grad_norm_finish is
 * rt_grad_norm to the bit, for layouts with parameters smaller than a
 * block, straddling blocks, gaps between parameters, a short last block,
 * and the spans listed out of order; every sum the finish reads must have
 * been written (the others are NaN). */
static void test_norm_blocks(void)
{
    const int64_t B = RT_NORM_BLOCK;
    /* sizes of consecutive parameters; a negative size is a gap */
    static const int64_t layouts[][8] = {
        {B, B, B, 0},                              /* aligned, whole blocks */
        {5, 3 * B + 7, -11, B - 5, 2 * B, 1, 0},   /* straddling, a gap, a tiny one */
        {B / 2, B / 2, 4 * B + B / 3, 17, 0},      /* two halves share a block; short tail */
        {7 * B + 1, 0},                            /* one parameter, short last block */
        {3, -2, 5, 0},                             /* no whole block anywhere */
    };
    RtPool *pool = rt_pool_create(3);
    for (size_t L = 0; L < sizeof layouts / sizeof *layouts; L++) {
        RtSegment spans[8];
        int64_t n = 0;
        int np = 0;
        for (int i = 0; layouts[L][i]; i++) {
            int64_t s = layouts[L][i];
            if (s > 0)
                spans[np++] = (RtSegment){n, s, 0};
            n += s > 0 ? s : -s;
        }
        float *g = malloc(sizeof *g * (size_t)n);
        randn(g, n, 1e-2);
        int64_t nb = rt_grad_norm_blocks(n);
        double *sums = malloc(sizeof *sums * (size_t)nb);
        for (int64_t b = 0; b < nb; b++)
            sums[b] = NAN;
        for (int i = np - 1; i >= 0; i--) /* last parameter first, one with the pool, one without */
            rt_grad_sumsq_blocks(i % 2 ? pool : NULL, g, g + spans[i].offset, spans[i].numel, sums);
        RtSegment *rev = malloc(sizeof *rev * (size_t)np);
        for (int i = 0; i < np; i++)
            rev[i] = spans[np - 1 - i];
        double want = rt_grad_norm(g, n), got = rt_grad_norm_finish(g, n, rev, np, sums);
        char what[160];
        snprintf(what, sizeof what, "norm from block sums, layout %zu (n %lld): %.17g vs %.17g", L, (long long)n,
                 got, want);
        check(got == want, what);
        free(g), free(sums), free(rev);
    }
    rt_pool_free(pool);
}

/* The norm from block sums taken piece by piece (as the all-reduce of
 * data-parallel training hands out its pieces: rt_grad_sumsq_piece) and
 * finished by rt_grad_norm_done is rt_grad_norm to the bit, for pieces
 * aligned to blocks, straddling them, smaller than one, and a short last
 * block, taken in any order; a block no piece holds whole is left unmarked
 * (its sum NaN, never read). */
static void test_norm_pieces(void)
{
    const int64_t B = RT_NORM_BLOCK;
    static const int64_t cuts[][8] = {
        {4 * B, 0},                          /* one piece, whole blocks */
        {B, B, 2 * B, 0},                    /* aligned pieces */
        {B + 3, 2 * B - 6, B / 2, B + 3, 0}, /* straddling, one inside a block */
        {5, 7, 3 * B, 11, B + 1, 0},         /* tiny pieces; a short last block */
        {6 * B + 17, 0},                     /* one piece, short last block */
    };
    RtPool *pool = rt_pool_create(3);
    for (size_t L = 0; L < sizeof cuts / sizeof *cuts; L++) {
        int64_t at[8], len[8], n = 0;
        int np = 0;
        for (; cuts[L][np]; np++)
            at[np] = n, len[np] = cuts[L][np], n += cuts[L][np];
        float *g = malloc(sizeof *g * (size_t)n);
        randn(g, n, 1e-2);
        int64_t nb = rt_grad_norm_blocks(n);
        double *sums = malloc(sizeof *sums * (size_t)nb), *done = calloc((size_t)nb, sizeof *done);
        for (int64_t b = 0; b < nb; b++)
            sums[b] = NAN;
        for (int i = np - 1; i >= 0; i--) /* last piece first, one with the pool, one without */
            rt_grad_sumsq_piece(i % 2 ? pool : NULL, g, at[i], len[i], sums, done);
        int64_t marked = 0, whole = 0;
        for (int64_t b = 0; b < nb; b++) {
            marked += done[b] != 0;
            for (int i = 0; i < np; i++) /* a block some piece holds whole */
                whole += at[i] <= b * B && (b + 1) * B <= at[i] + len[i];
        }
        double want = rt_grad_norm(g, n), got = rt_grad_norm_done(g, n, sums, done);
        char what[160];
        snprintf(what, sizeof what, "norm from pieces, cut %zu (n %lld): %.17g vs %.17g", L, (long long)n, got,
                 want);
        check(got == want, what);
        snprintf(what, sizeof what, "cut %zu: %lld blocks marked, %lld held whole by a piece", L, (long long)marked,
                 (long long)whole);
        check(marked == whole, what);
        free(g), free(sums), free(done);
    }
    rt_pool_free(pool);
}

/* ---- the optimizer by hand ---- */

static void test_step_by_hand(void)
{
    /* Step 1 from zero moments: m_hat = g, v_hat = g^2, so the update is
     * lr g / (|g| + eps); AdamW decays p by (1 - lr wd) first. */
    RtAdamWConfig cfg = rt_adamw_defaults(RT_OPTIM_ADAMW);
    cfg.weight_decay = 0.1;
    RtSegment segs[] = {{0, 1, 1}, {1, 1, 0}};
    RtAdamW o;
    check(rt_adamw_init(&o, 2, segs, 2, cfg) == 0, "adamw init");
    float p[2] = {2, 2}, g[2] = {0.5f, -0.25f};
    double lr = 0.01;
    rt_adamw_step(&o, p, g, lr, NULL);
    check(o.step == 1, "step counted");
    near("adamw decayed element", p[0], 2 * (1 - lr * 0.1) - lr * 0.5 / (0.5 + 1e-8), 1e-7);
    near("adamw masked element", p[1], 2 + lr * 0.25 / (0.25 + 1e-8), 1e-7);
    near("m after one step", o.m[0], 0.1 * 0.5, 1e-7);
    near("v after one step", o.v[1], 0.001 * 0.0625, 1e-7);
    /* Step 2 with the same gradient: m_hat = g, v_hat = g^2 again. */
    rt_adamw_step(&o, p, g, lr, NULL);
    near("m after two steps", o.m[0], (0.9 * 0.1 + 0.1) * 0.5, 1e-7);
    near("adamw masked element, 2 steps", p[1], 2 + 2 * lr * 0.25 / (0.25 + 1e-8), 1e-7);
    rt_adamw_free(&o);

    /* Adam (L2): g' = g + wd p. */
    cfg = rt_adamw_defaults(RT_OPTIM_ADAM);
    cfg.weight_decay = 0.5;
    check(rt_adamw_init(&o, 2, segs, 2, cfg) == 0, "adam init");
    float q[2] = {1, 1}, h[2] = {-0.75f, 0.25f};
    rt_adamw_step(&o, q, h, lr, NULL);
    near("adam L2 element (g' = -0.25)", q[0], 1 + lr * 0.25 / (0.25 + 1e-8), 1e-7);
    near("adam L2 m", o.m[0], 0.1 * -0.25, 1e-7);
    near("adam masked element", q[1], 1 - lr * 0.25 / (0.25 + 1e-8), 1e-7);
    rt_adamw_free(&o);
}

/* With zero gradients the moments stay 0 and the update is 0, so AdamW
 * only decays: p (1 - lr wd) in the mask, p elsewhere (gaps included). */
static void test_mask(void)
{
    RtAdamWConfig cfg = rt_adamw_defaults(RT_OPTIM_ADAMW);
    cfg.weight_decay = 0.2;
    /* Out of order, adjacent decay segments (merged), gaps. */
    RtSegment segs[] = {{50, 10, 1}, {0, 10, 1}, {10, 5, 1}, {20, 10, 0}, {60, 0, 1}, {70, 30, 1}};
    int64_t n = 100;
    RtAdamW o;
    check(rt_adamw_init(&o, n, segs, 6, cfg) == 0, "mask init");
    check(o.ndecay == 3, "decay ranges merged");
    float p[100], g[100] = {0};
    for (int i = 0; i < n; i++)
        p[i] = 1 + i;
    rt_adamw_step(&o, p, g, 0.5, NULL);
    int ok = 1;
    for (int i = 0; i < n; i++) {
        int decays = i < 15 || (i >= 50 && i < 60) || i >= 70;
        float want = decays ? (float)(1 + i) * (float)(1 - 0.5 * 0.2) : (float)(1 + i);
        ok &= p[i] == want;
    }
    check(ok, "decay exactly on the masked segments");
    rt_adamw_free(&o);

    printf("(four optimizer errors on stderr are expected next)\n");
    fflush(stdout);
    check(rt_adamw_init(&o, 10, (RtSegment[]){{0, 5, 1}, {4, 3, 0}}, 2, cfg) == -1, "overlap refused");
    check(rt_adamw_init(&o, 10, (RtSegment[]){{8, 5, 1}}, 1, cfg) == -1, "segment past the end refused");
    check(rt_adamw_init(&o, 10, (RtSegment[]){{-1, 2, 1}}, 1, cfg) == -1, "negative offset refused");
    cfg.beta2 = 1;
    check(rt_adamw_init(&o, 10, NULL, 0, cfg) == -1, "beta2 = 1 refused");

    /* NULL segments: everything decays. */
    cfg = rt_adamw_defaults(RT_OPTIM_ADAMW);
    check(rt_adamw_init(&o, 3, NULL, 0, cfg) == 0 && o.ndecay == 1, "NULL mask: all decay");
    rt_adamw_free(&o);
}

/* A pooled step changes exactly the same bits as a serial one. */
static void test_pool_step(void)
{
    int64_t n = 300007;
    RtSegment segs[] = {{0, 100000, 1}, {100000, 777, 0}, {100777, 150000, 1}, {250777, 49230, 0}};
    float *p1 = malloc(sizeof(float) * (size_t)n), *p2 = malloc(sizeof(float) * (size_t)n);
    float *g = malloc(sizeof(float) * (size_t)n);
    randn(p1, n, 1);
    memcpy(p2, p1, sizeof(float) * (size_t)n);
    for (int kind = 0; kind < 2; kind++) {
        RtAdamWConfig cfg = rt_adamw_defaults((RtOptimKind)kind);
        cfg.weight_decay = 0.1;
        RtAdamW a, b;
        rt_adamw_init(&a, n, segs, 4, cfg);
        rt_adamw_init(&b, n, segs, 4, cfg);
        RtPool *pool = rt_pool_create(3);
        for (int s = 0; s < 5; s++) {
            randn(g, n, 1e-2);
            rt_adamw_step(&a, p1, g, 1e-3, NULL);
            rt_adamw_step(&b, p2, g, 1e-3, pool);
        }
        check(memcmp(p1, p2, sizeof(float) * (size_t)n) == 0, "pooled step: same parameters");
        check(memcmp(a.m, b.m, sizeof(float) * (size_t)n) == 0 && memcmp(a.v, b.v, sizeof(float) * (size_t)n) == 0,
              "pooled step: same moments");
        rt_pool_free(pool);
        rt_adamw_free(&a);
        rt_adamw_free(&b);
    }
    free(p1);
    free(p2);
    free(g);
}

/* Clipping folded into the step (rt_adamw_step_scaled with rt_clip_factor)
 * changes the same bits as rt_clip_grads then rt_adamw_step, serial and
 * pooled, clipping or not, and leaves the gradients as they were. */
static void test_scaled_step(void)
{
    int64_t n = 200003;
    RtSegment segs[] = {{0, 90000, 1}, {90000, 333, 0}, {90333, 109670, 1}};
    float *p1 = malloc(sizeof(float) * (size_t)n), *p2 = malloc(sizeof(float) * (size_t)n);
    float *g = malloc(sizeof(float) * (size_t)n), *gc = malloc(sizeof(float) * (size_t)n);
    randn(p1, n, 1);
    memcpy(p2, p1, sizeof(float) * (size_t)n);
    RtPool *pool = rt_pool_create(3);
    for (int kind = 0; kind < 2; kind++) {
        RtAdamWConfig cfg = rt_adamw_defaults((RtOptimKind)kind);
        cfg.weight_decay = 0.1;
        RtAdamW a, b;
        rt_adamw_init(&a, n, segs, 3, cfg);
        rt_adamw_init(&b, n, segs, 3, cfg);
        int clipped = 0;
        for (int s = 0; s < 6; s++) {
            randn(g, n, s % 2 ? 1e-4 : 1e-1); /* norms about 0.04 and 45: every other step clips at 1 */
            memcpy(gc, g, sizeof(float) * (size_t)n);
            double norm = rt_grad_norm(g, n);
            double c = rt_clip_grads(gc, n, 1.0, norm);
            rt_adamw_step(&a, p1, gc, 1e-3, s < 3 ? NULL : pool);
            float f = rt_clip_factor(1.0, norm);
            check((double)f == c, "rt_clip_factor is the factor rt_clip_grads applied");
            clipped += f < 1;
            memcpy(gc, g, sizeof(float) * (size_t)n);
            rt_adamw_step_scaled(&b, p2, g, f, 1e-3, s < 3 ? NULL : pool);
            check(memcmp(g, gc, sizeof(float) * (size_t)n) == 0, "scaled step: gradients not written");
        }
        check(clipped == 3, "scaled step: three of six steps clip");
        check(memcmp(p1, p2, sizeof(float) * (size_t)n) == 0, "scaled step: same parameters as clip + step");
        check(memcmp(a.m, b.m, sizeof(float) * (size_t)n) == 0 && memcmp(a.v, b.v, sizeof(float) * (size_t)n) == 0,
              "scaled step: same moments as clip + step");
        rt_adamw_free(&a);
        rt_adamw_free(&b);
    }
    check(rt_clip_factor(1.0, NAN) == 1 && rt_clip_factor(1.0, INFINITY) == 1, "no clip factor for a bad norm");
    rt_pool_free(pool);
    free(p1);
    free(p2);
    free(g);
    free(gc);
}

/* ---- torch replay (--torch FILE) ---- */

static FILE *ref;
static const char *ref_name;

_Noreturn static void ref_fail(const char *what)
{
    printf("FAIL: %s: bad reference file (%s)\n", ref_name, what);
    exit(1);
}

static void read_floats(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        double d;
        if (fscanf(ref, "%lf", &d) != 1)
            ref_fail("expected a number");
        x[i] = (float)d;
    }
}

/* max |got - want| / max |want| over a tensor: its error relative to its
 * scale (an element of m may cancel to near zero; its error is that of the
 * terms that cancelled).  *same counts the bit-identical elements. */
static double rel_diff(const float *got, const float *want, int64_t n, int64_t *same)
{
    double big = 0, worst = 0;
    *same = 0;
    for (int64_t i = 0; i < n; i++) {
        big = fmax(big, fabs(want[i]));
        worst = fmax(worst, fabs((double)got[i] - want[i]));
        *same += memcmp(&got[i], &want[i], sizeof(float)) == 0;
    }
    return big > 0 ? worst / big : worst;
}

static int replay_case(void)
{
    char name[64], kind[16];
    long long n;
    int nseg, steps;
    double b1, b2, eps, wd, max_norm;
    int r = fscanf(ref, " case %63s %15s %lld %d %d %lf %lf %lf %lf %lf", name, kind, &n, &nseg, &steps, &b1, &b2,
                   &eps, &wd, &max_norm);
    if (r == EOF)
        return 0;
    if (r != 10 || n <= 0 || nseg <= 0)
        ref_fail("case line");
    RtSegment *segs = calloc((size_t)nseg, sizeof *segs);
    int nmask = 0;
    for (int i = 0; i < nseg; i++) {
        long long off, numel;
        int decay;
        if (fscanf(ref, "%lld %lld %d", &off, &numel, &decay) != 3)
            ref_fail("segment");
        if (decay >= 0) /* -1: left out of the mask, so no decay */
            segs[nmask++] = (RtSegment){off, numel, decay};
    }
    RtAdamWConfig cfg = {strcmp(kind, "adam") == 0 ? RT_OPTIM_ADAM : RT_OPTIM_ADAMW, b1, b2, eps, wd};
    RtAdamW o;
    if (rt_adamw_init(&o, n, segs, nmask, cfg) != 0)
        ref_fail("segments refused");
    float *p = malloc(sizeof *p * (size_t)n), *g = malloc(sizeof *g * (size_t)n);
    float *want = calloc((size_t)n, sizeof *want);
    read_floats(p, n);
    double norm_err = 0;
    for (int s = 0; s < steps; s++) {
        int k;
        double lr, torch_norm;
        if (fscanf(ref, " step %d %lf %lf", &k, &lr, &torch_norm) != 3 || k != s)
            ref_fail("step line");
        read_floats(g, n);
        if (max_norm > 0) {
            /* Our norm is summed in double, torch's in float: compare them,
             * then clip with torch's, so the parameters test the clipping
             * and the update rather than the two sums' rounding. */
            double norm = rt_grad_norm(g, n);
            norm_err = fmax(norm_err, fabs(norm - torch_norm) / torch_norm);
        }
        /* Clipping folded into the step (the trainer's path). */
        float clip = max_norm > 0 ? rt_clip_factor(max_norm, torch_norm) : 1.0f;
        rt_adamw_step_scaled(&o, p, g, clip, lr, NULL);
    }
    int64_t same_p, same_m, same_v;
    read_floats(want, n);
    double ep = rel_diff(p, want, n, &same_p);
    read_floats(want, n);
    double em = rel_diff(o.m, want, n, &same_m);
    read_floats(want, n);
    double ev = rel_diff(o.v, want, n, &same_v);
    char end[8];
    if (fscanf(ref, " %7s", end) != 1 || strcmp(end, "end") != 0)
        ref_fail("missing end");
    const double tol = 1e-6;
    int ok = ep <= tol && em <= tol && ev <= tol && norm_err <= tol;
    printf("%s %s: n %lld, %d steps: max diff / max |torch| param %.3g, m %.3g, v %.3g", ok ? "ok:  " : "FAIL:",
           name, n, steps, ep, em, ev);
    if (max_norm > 0)
        printf(", grad norm rel %.3g", norm_err);
    printf("; bit-identical %lld/%lld/%lld of %lld (tolerance %g)\n", (long long)same_p, (long long)same_m,
           (long long)same_v, n, tol);
    failures += !ok;
    free(p);
    free(g);
    free(want);
    free(segs);
    rt_adamw_free(&o);
    return 1;
}

static void replay_torch(const char *path)
{
    ref_name = path;
    ref = fopen(path, "r");
    if (!ref) {
        perror(path);
        exit(1);
    }
    int version;
    if (fscanf(ref, "strata-optim-reference %d", &version) != 1 || version != 1)
        ref_fail("no strata-optim-reference 1 header");
    int cases = 0;
    while (replay_case())
        cases++;
    if (cases == 0)
        ref_fail("no cases");
    fclose(ref);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--torch") == 0) {
        replay_torch(argv[2]);
    } else if (argc == 1) {
        test_schedules();
        test_clip();
        test_norm_blocks();
        test_norm_pieces();
        test_step_by_hand();
        test_mask();
        test_pool_step();
        test_scaled_step();
    } else {
        fprintf(stderr, "usage: optim_test [--torch FILE]\n");
        return 2;
    }
    if (failures)
        printf("%d failures\n", failures);
    else
        printf("optim_test: all passed\n");
    return failures ? 1 : 0;
}
