/* optim.c - Adam/AdamW and gradient clipping (optim.h).  The step walks
 * [begin, end) of the flat buffer once, cutting it at the decay ranges;
 * the per-element arithmetic mirrors torch's fp32 CPU kernels op for op,
 * roundings included (checked against torch 1.13's ATen: add with alpha
 * and addcmul fuse their last multiply-add, addcdiv computes
 * self + (value t1) / t2, division by a scalar is a true division). */
#include "train/optim.h"

#include "core/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "strata: out of memory (%zu bytes)\n", n);
        exit(3);
    }
    return p;
}

RtAdamWConfig rt_adamw_defaults(RtOptimKind kind)
{
    return (RtAdamWConfig){
        .kind = kind,
        .beta1 = 0.9,
        .beta2 = 0.999,
        .eps = 1e-8,
        .weight_decay = kind == RT_OPTIM_ADAMW ? 0.01 : 0,
    };
}

static int cmp_segment(const void *a, const void *b)
{
    int64_t x = ((const RtSegment *)a)->offset, y = ((const RtSegment *)b)->offset;
    return x < y ? -1 : x > y;
}

int rt_adamw_init(RtAdamW *o, int64_t n, const RtSegment *segs, int nsegs, RtAdamWConfig cfg)
{
    memset(o, 0, sizeof *o);
    if (n < 0 || !(cfg.beta1 >= 0 && cfg.beta1 < 1) || !(cfg.beta2 >= 0 && cfg.beta2 < 1) || !(cfg.eps >= 0) ||
        !(cfg.weight_decay >= 0)) {
        fprintf(stderr, "strata: optimizer: bad hyperparameters (n %lld, betas %g %g, eps %g, wd %g)\n",
                (long long)n, cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay);
        return -1;
    }
    RtSegment all = {0, n, 1};
    if (!segs) {
        segs = &all;
        nsegs = 1;
    }
    RtSegment *sorted = xmalloc(sizeof *sorted * (size_t)nsegs);
    memcpy(sorted, segs, sizeof *sorted * (size_t)nsegs);
    qsort(sorted, (size_t)nsegs, sizeof *sorted, cmp_segment);
    int ndecay = 0;
    for (int i = 0; i < nsegs; i++) {
        RtSegment s = sorted[i];
        if (s.offset < 0 || s.numel < 0 || s.offset > n - s.numel) {
            fprintf(stderr, "strata: optimizer: segment [%lld, +%lld) outside the %lld parameters\n",
                    (long long)s.offset, (long long)s.numel, (long long)n);
            free(sorted);
            return -1;
        }
        if (i > 0 && s.offset < sorted[i - 1].offset + sorted[i - 1].numel) {
            fprintf(stderr, "strata: optimizer: segments at %lld and %lld overlap\n",
                    (long long)sorted[i - 1].offset, (long long)s.offset);
            free(sorted);
            return -1;
        }
        if (!s.decay || s.numel == 0)
            continue;
        s.decay = 1;
        if (ndecay > 0 && sorted[ndecay - 1].offset + sorted[ndecay - 1].numel == s.offset)
            sorted[ndecay - 1].numel += s.numel; /* merge neighbours */
        else
            sorted[ndecay++] = s; /* ndecay <= i: never overwrites an unread one */
    }
    o->cfg = cfg;
    o->n = n;
    o->decay = sorted;
    o->ndecay = ndecay;
    o->m = rt_zalloc64(sizeof *o->m * (size_t)n);
    o->v = rt_zalloc64(sizeof *o->v * (size_t)n);
    return 0;
}

void rt_adamw_free(RtAdamW *o)
{
    free(o->m);
    free(o->v);
    free(o->decay);
    memset(o, 0, sizeof *o);
}

/* a b + c, fused where the CPU has FMA, as ATen's vectorized kernels do
 * (add with alpha and addcmul end in an fmadd); without FMA a separate
 * multiply and add (fmaf would be a slow library call), which differs from
 * torch by an ulp now and then. */
#if defined(__FMA__) || defined(__aarch64__)
#define FMA(a, b, c) fmaf(a, b, c)
#else
#define FMA(a, b, c) ((a) * (b) + (c))
#endif

/* The scalars of one step, rounded to float once, as torch passes them. */
typedef struct StepCtx {
    const RtAdamW *o;
    float *p;                   /* (n) */
    const float *g;             /* (n) */
    float gscale;               /* every g[i] is used as g[i] * gscale (clipping) */
    float b1, one_minus_b1;     /* beta1, 1 - beta1 */
    float b2, one_minus_b2;
    float eps;
    float bc2_sqrt;             /* sqrt(1 - beta2^t) */
    float neg_step_size;        /* -lr / (1 - beta1^t) */
    float decay_factor;         /* AdamW: 1 - lr wd */
    float l2;                   /* Adam: wd */
} StepCtx;

/* Elements [b, e), all with the same decay (wd = 0 if !decay). */
static void update_range(const StepCtx *c, int64_t b, int64_t e, int decay)
{
    float *restrict p = c->p, *restrict m = c->o->m, *restrict v = c->o->v;
    const float *restrict g = c->g;
    const float b1 = c->b1, omb1 = c->one_minus_b1, b2 = c->b2, omb2 = c->one_minus_b2;
    const float eps = c->eps, bc2 = c->bc2_sqrt, nss = c->neg_step_size, gs = c->gscale;
    const int adamw = c->o->cfg.kind == RT_OPTIM_ADAMW;
    const float factor = decay && adamw ? c->decay_factor : 1.0f;
    const float l2 = decay && !adamw ? c->l2 : 0.0f;
    for (int64_t i = b; i < e; i++) {
        float pi = p[i] * factor;                 /* param.mul_(1 - lr wd) */
        float gc = g[i] * gs;                     /* clip_grad_norm_: grad.mul_(clip_coef) */
        float gi = FMA(pi, l2, gc);               /* grad.add(param, alpha=wd) */
        float mi = FMA(gi, omb1, m[i] * b1);      /* exp_avg.mul_(b1).add_(g, alpha=1-b1) */
        float vi = FMA(omb2 * gi, gi, v[i] * b2); /* exp_avg_sq.mul_(b2).addcmul_(g, g, value=1-b2) */
        float denom = sqrtf(vi) / bc2 + eps;      /* (exp_avg_sq.sqrt() / bc2_sqrt).add_(eps) */
        p[i] = pi + (nss * mi) / denom;           /* param.addcdiv_(m, denom, value=-step_size) */
        m[i] = mi;
        v[i] = vi;
    }
}

/* [begin, end), cut at the decay ranges. */
static void step_chunk(void *ctx, int64_t begin, int64_t end, int thread)
{
    const StepCtx *c = ctx;
    const RtSegment *d = c->o->decay;
    int lo = 0, hi = c->o->ndecay; /* first decay range that ends after begin */
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (d[mid].offset + d[mid].numel <= begin)
            lo = mid + 1;
        else
            hi = mid;
    }
    int64_t i = begin;
    for (int k = lo; i < end; k++) {
        int64_t ds = k < c->o->ndecay ? d[k].offset : end, de = k < c->o->ndecay ? d[k].offset + d[k].numel : end;
        ds = ds < i ? i : ds > end ? end : ds;
        de = de > end ? end : de;
        if (i < ds)
            update_range(c, i, ds, 0);
        if (ds < de)
            update_range(c, ds, de, 1);
        i = de > ds ? de : ds;
    }
}

void rt_adamw_step(RtAdamW *o, float *params, const float *grads, double lr, RtPool *pool)
{
    rt_adamw_step_scaled(o, params, grads, 1.0f, lr, pool);
}

void rt_adamw_step_scaled(RtAdamW *o, float *params, const float *grads, float gscale, double lr, RtPool *pool)
{
    o->step++;
    const RtAdamWConfig *cf = &o->cfg;
    double t = (double)o->step;
    StepCtx c = {
        .o = o,
        .p = params,
        .g = grads,
        .gscale = gscale,
        .b1 = (float)cf->beta1,
        .one_minus_b1 = (float)(1 - cf->beta1),
        .b2 = (float)cf->beta2,
        .one_minus_b2 = (float)(1 - cf->beta2),
        .eps = (float)cf->eps,
        .bc2_sqrt = (float)sqrt(1 - pow(cf->beta2, t)),
        .neg_step_size = (float)(-lr / (1 - pow(cf->beta1, t))),
        .decay_factor = (float)(1 - lr * cf->weight_decay),
        .l2 = (float)cf->weight_decay,
    };
    /* Tiles of RT_STEP_TILE elements, whatever the pool (pool.h). */
    rt_pool_run(pool, o->n, RT_STEP_TILE, step_chunk, &c);
}

/* Sum of squares of one block: lane i % 8 gets g[i]^2, lanes added in
 * order.  The fixed lanes keep it deterministic and let it vectorize. */
static double block_sumsq(const float *g, int64_t len)
{
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= len; i += 8)
        for (int j = 0; j < 8; j++)
            acc[j] += (double)g[i + j] * g[i + j];
    for (int j = 0; i + j < len; j++) /* the tail: i is a multiple of 8, so lane j */
        acc[j] += (double)g[i + j] * g[i + j];
    double s = 0;
    for (int j = 0; j < 8; j++)
        s += acc[j];
    return s;
}

double rt_grad_norm(const float *g, int64_t n)
{
    double s = 0;
    for (int64_t b = 0; b < n; b += RT_NORM_BLOCK)
        s += block_sumsq(g + b, n - b < RT_NORM_BLOCK ? n - b : RT_NORM_BLOCK);
    return sqrt(s);
}

typedef struct NormCtx {
    const float *g;             /* (n) */
    int64_t n;
    double *sums;               /* (nblocks) */
} NormCtx;

static void norm_chunk(void *ctx, int64_t begin, int64_t end, int thread)
{
    const NormCtx *c = ctx;
    for (int64_t k = begin; k < end; k++) {
        int64_t b = k * RT_NORM_BLOCK;
        c->sums[k] = block_sumsq(c->g + b, c->n - b < RT_NORM_BLOCK ? c->n - b : RT_NORM_BLOCK);
    }
}

double rt_grad_norm_pool(const float *g, int64_t n, RtPool *pool)
{
    int64_t nblocks = (n + RT_NORM_BLOCK - 1) / RT_NORM_BLOCK;
    if (nblocks < 16) /* the same blocks in the same order, on the caller */
        return rt_grad_norm(g, n);
    NormCtx c = {g, n, xmalloc(sizeof(double) * (size_t)nblocks)};
    rt_pool_run(pool, nblocks, 4, norm_chunk, &c);
    double s = 0;
    for (int64_t k = 0; k < nblocks; k++) /* block order, as rt_grad_norm */
        s += c.sums[k];
    free(c.sums);
    return sqrt(s);
}

int64_t rt_grad_norm_blocks(int64_t n)
{
    return (n + RT_NORM_BLOCK - 1) / RT_NORM_BLOCK;
}

/* The blocks [*b0, *b1) wholly inside elements [off, off + numel): full
 * blocks only, so the short last block of the buffer is never inside. */
static void blocks_inside(int64_t off, int64_t numel, int64_t *b0, int64_t *b1)
{
    *b0 = (off + RT_NORM_BLOCK - 1) / RT_NORM_BLOCK;
    *b1 = (off + numel) / RT_NORM_BLOCK;
    if (*b1 < *b0)
        *b1 = *b0;
}

typedef struct SumsqCtx {
    const float *grads;
    int64_t b0;                 /* the units are blocks b0 + u */
    double *sums;
} SumsqCtx;

static void sumsq_chunk(void *ctx, int64_t begin, int64_t end, int thread)
{
    (void)thread;
    const SumsqCtx *c = ctx;
    for (int64_t u = begin; u < end; u++) {
        int64_t b = c->b0 + u;
        c->sums[b] = block_sumsq(c->grads + b * RT_NORM_BLOCK, RT_NORM_BLOCK);
    }
}

void rt_grad_sumsq_blocks(RtPool *pool, const float *grads, const float *g, int64_t numel, double *sums)
{
    int64_t b0, b1;
    blocks_inside(g - grads, numel, &b0, &b1);
    SumsqCtx c = {grads, b0, sums};
    if (b1 - b0 < 16) /* a small gradient: not worth waking the pool */
        sumsq_chunk(&c, 0, b1 - b0, 0);
    else
        rt_pool_run(pool, b1 - b0, 4, sumsq_chunk, &c);
}

void rt_grad_sumsq_piece(RtPool *pool, const float *grads, int64_t at, int64_t len, double *sums, double *done)
{
    int64_t b0, b1;
    blocks_inside(at, len, &b0, &b1);
    rt_grad_sumsq_blocks(pool, grads, grads + at, len, sums);
    for (int64_t b = b0; b < b1; b++)
        done[b] = 1;
}

double rt_grad_norm_done(const float *grads, int64_t n, const double *sums, const double *done)
{
    double s = 0;
    for (int64_t b = 0, nblocks = rt_grad_norm_blocks(n); b < nblocks; b++) {
        int64_t at = b * RT_NORM_BLOCK;
        s += done[b] != 0 ? sums[b] : block_sumsq(grads + at, n - at < RT_NORM_BLOCK ? n - at : RT_NORM_BLOCK);
    }
    return sqrt(s);
}

double rt_grad_norm_finish(const float *grads, int64_t n, const RtSegment *params, int nparams, const double *sums)
{
    int64_t nblocks = rt_grad_norm_blocks(n);
    RtSegment *ps = xmalloc(sizeof *ps * (size_t)(nparams > 0 ? nparams : 1));
    memcpy(ps, params, sizeof *ps * (size_t)nparams);
    qsort(ps, (size_t)nparams, sizeof *ps, cmp_segment);
    /* Walk the blocks and the parameters together: parameter i is the first
     * that ends after block b starts, the only one that can hold it; a block
     * it does not hold is summed here (about one per parameter). */
    double s = 0;
    int i = 0;
    for (int64_t b = 0; b < nblocks; b++) {
        while (i < nparams && ps[i].offset + ps[i].numel <= b * RT_NORM_BLOCK) /* ends before the block */
            i++;
        int64_t b0 = 0, b1 = 0;
        if (i < nparams)
            blocks_inside(ps[i].offset, ps[i].numel, &b0, &b1);
        if (b >= b0 && b < b1)
            s += sums[b];
        else {
            int64_t at = b * RT_NORM_BLOCK;
            s += block_sumsq(grads + at, n - at < RT_NORM_BLOCK ? n - at : RT_NORM_BLOCK);
        }
    }
    free(ps);
    return sqrt(s);
}

float rt_clip_factor(double max_norm, double norm)
{
    if (!isfinite(norm))
        return 1;
    /* In float, as torch's max_norm / (total_norm + 1e-6) on a float tensor
     * (Tensor.__rtruediv__: a reciprocal, then a multiply). */
    float c = 1.0f / ((float)norm + 1e-6f) * (float)max_norm;
    return c < 1 ? c : 1;
}

double rt_clip_grads(float *g, int64_t n, double max_norm, double norm)
{
    float c = rt_clip_factor(max_norm, norm);
    if (c == 1)
        return 1;
    for (int64_t i = 0; i < n; i++)
        g[i] *= c;
    return c;
}
