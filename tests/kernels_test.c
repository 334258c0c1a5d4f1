/* kernels_test.c - unit test of the runtime kernels (runtime/core/kernels.h)
 * against the fp64 reference interpreter (compiler/ir/interp.c).  For each
 * kernel it builds a small IrGraph with the matching op, runs the
 * interpreter on random inputs, and runs the kernel in double (full range,
 * one call) and in float (the range split in two calls, as two threads
 * would).  Inputs are rounded to float first, so both precisions and the
 * oracle see the same numbers.  Error = max |kernel - oracle| / max |oracle|
 * over the output; tolerances TOL_F64 and TOL_F32.  rt_attention_cached (a
 * KV cache filled position by position) is checked against rt_attention
 * over the whole sequence instead (observed: the same bytes).  Where the
 * runtime has the AVX-512 build of the float kernels (kernels_isa.h) and
 * this CPU runs it, its attention (forward, cached, backward) and
 * cross-entropy (rows, gradient) must give the bytes of the base build on
 * every shape (test_wide).  Exit 0 =
 * pass, 1 = fail; one line per check with both errors. */
#include "ir/interp.h"
#include "core/cpu.h"
#include "core/kernels.h"
#include "core/kernels_isa.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TOL_F64 1e-12
#define TOL_F32 1e-5
#define ROPE_BASE 10000.0
#define VOCAB 50

static int failures;

/* ---- random numbers: splitmix64, as interp_test.c ---- */

static uint64_t rng_state = 20240611;

static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* N(0, 1) rounded to the nearest float (Box-Muller). */
static double rng_normal(void)
{
    double u = (double)(rng_next() >> 11) * 0x1.0p-53, v = (double)(rng_next() >> 11) * 0x1.0p-53;
    return (float)(sqrt(-2 * log(u + 1e-300)) * cos(2 * acos(-1.0) * v));
}

/* ---- errors and checks ---- */

static double max_abs(const double *ref, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        m = fmax(m, fabs(ref[i]));
    return m > 0 ? m : 1;
}

static double err_f64(const double *a, const double *ref, int64_t n)
{
    double e = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs(a[i] - ref[i]);
        e = isnan(d) ? INFINITY : fmax(e, d);
    }
    return e / max_abs(ref, n);
}

static double err_f32(const float *a, const double *ref, int64_t n)
{
    double e = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - ref[i]);
        e = isnan(d) ? INFINITY : fmax(e, d);
    }
    return e / max_abs(ref, n);
}

static void check(const char *what, const char *shape, double e64, double e32)
{
    bool ok = e64 <= TOL_F64 && e32 <= TOL_F32; /* NaN fails */
    printf("%s %-22s %-22s f64 %.2e  f32 %.2e\n", ok ? "ok  " : "FAIL", what, shape, e64, e32);
    failures += !ok;
}

static float *to_f32(const double *x, int64_t n)
{
    float *y = xmalloc((size_t)n * sizeof *y);
    for (int64_t i = 0; i < n; i++)
        y[i] = (float)x[i];
    return y;
}

/* ---- a graph for the interpreter, its inputs and its last run ---- */

typedef struct Rig {
    IrGraph g;
    int B, T;
    IrNode *tokens, *targets; /* (B,T,1) ids */
    int32_t *tok, *tgt;       /* (B*T); identity unless a test sets them */
    double *mask;             /* (B*T) or NULL */
    double *params[16];       /* params[p->index] */
    Interp it;
    bool ran;
} Rig;

static void rig_init(Rig *r, int B, int T)
{
    memset(r, 0, sizeof *r);
    ir_init(&r->g);
    r->B = B, r->T = T;
    r->tokens = ir_add(&r->g, IR_INPUT_TOKENS, (Loc){0});
    r->targets = ir_add(&r->g, IR_INPUT_TARGETS, (Loc){0});
    for (IrNode **n = (IrNode *[]){r->tokens, r->targets, NULL}; *n; n++)
        (*n)->tok = (*n)->is_int = true;
    r->tok = xmalloc((size_t)(B * T) * sizeof *r->tok);
    r->tgt = xmalloc((size_t)(B * T) * sizeof *r->tgt);
    for (int i = 0; i < B * T; i++)
        r->tok[i] = r->tgt[i] = i;
}

static void rig_free(Rig *r)
{
    if (r->ran)
        interp_free(&r->it);
    for (int i = 0; i < r->g.params.n; i++)
        free(r->params[i]);
    free(r->tok);
    free(r->tgt);
    ir_free(&r->g);
}

static void rig_run(Rig *r)
{
    if (!ir_verify(&r->g, stdout))
        die("the test built an invalid graph");
    InterpInput in = {r->B, r->T, r->tok, r->tgt, r->mask, r->params};
    r->ran = true;
    if (!interp_run(&r->it, &r->g, &in))
        die("the interpreter failed on a test graph");
}

static const double *value(Rig *r, const IrNode *n)
{
    return interp_value(&r->it, n);
}

static IrNode *node(Rig *r, IrOp op, IrNode *a, IrNode *b, bool tok, int64_t rows, int64_t width)
{
    IrNode *n = ir_add(&r->g, op, (Loc){0});
    n->in[0] = a, n->in[1] = b;
    n->tok = tok, n->rows = rows, n->width = width;
    return n;
}

/* A [rows, width] parameter of random values. */
static IrNode *param(Rig *r, int64_t rows, int64_t width)
{
    IrParam *p = ir_add_param(&r->g, "p", (Loc){0});
    p->ndim = 2;
    p->dims[0] = rows, p->dims[1] = width;
    p->numel = rows * width;
    r->params[p->index] = xmalloc((size_t)p->numel * sizeof(double));
    for (int64_t i = 0; i < p->numel; i++)
        r->params[p->index][i] = rng_normal();
    IrNode *n = node(r, IR_PARAM, NULL, NULL, false, rows, width);
    n->param = p;
    return n;
}

/* A (B,T,width) activation: embed(ids, table) with ids[r] = r (the caller
 * keeps those ids), so its value is the table's. */
static IrNode *activation(Rig *r, IrNode *ids, int64_t width)
{
    IrNode *table = param(r, (int64_t)r->B * r->T, width);
    return node(r, IR_EMBED, ids, table, true, 1, width);
}

static double *data_of(Rig *r, const IrNode *n)
{
    return r->params[(n->op == IR_EMBED ? n->in[1] : n)->param->index];
}

/* ---- the kernels ---- */

/* rope and rope_grad of one activation; also rope in place (must equal the
 * out-of-place result exactly). */
static void test_rope(int B, int T, int W, int H, const char *shape)
{
    Rig r;
    rig_init(&r, B, T);
    IrNode *x = activation(&r, r.tokens, W);
    IrNode *y = node(&r, IR_ROPE, x, NULL, true, 1, W), *dx = node(&r, IR_ROPE_GRAD, x, NULL, true, 1, W);
    y->heads = dx->heads = H, y->num = dx->num = ROPE_BASE;
    rig_run(&r);
    int64_t rows = (int64_t)B * T, n = rows * W, hd = W / H, mid = rows / 2;
    const double *xv = data_of(&r, x);
    double *tab64 = xmalloc((size_t)(T * hd) * sizeof *tab64), *y64 = xmalloc((size_t)n * sizeof *y64);
    float *tab32 = xmalloc((size_t)(T * hd) * sizeof *tab32), *y32 = xmalloc((size_t)n * sizeof *y32);
    float *x32 = to_f32(xv, n);
    rt_rope_table_f64(tab64, 0, T, hd, ROPE_BASE);
    rt_rope_table_f32(tab32, 0, T, hd, ROPE_BASE);
    /* A table from position t0 holds the rows t0.. of the table from 0, bit for bit. */
    int64_t t0 = T / 2;
    double *late64 = xmalloc((size_t)(T * hd) * sizeof *late64);
    float *late32 = xmalloc((size_t)(T * hd) * sizeof *late32);
    rt_rope_table_f64(late64, t0, T - t0, hd, ROPE_BASE);
    rt_rope_table_f32(late32, t0, T - t0, hd, ROPE_BASE);
    check("rope table from t0 (exact)", shape, memcmp(late64, tab64 + t0 * hd, (size_t)((T - t0) * hd) * sizeof *late64) != 0,
          memcmp(late32, tab32 + t0 * hd, (size_t)((T - t0) * hd) * sizeof *late32) != 0);
    free(late64), free(late32);
    for (int inverse = 0; inverse <= 1; inverse++) {
        rt_rope_f64(y64, xv, tab64, 0, rows, T, W, H, inverse);
        rt_rope_f32(y32, x32, tab32, 0, mid, T, W, H, inverse);
        rt_rope_f32(y32, x32, tab32, mid, rows, T, W, H, inverse);
        const double *ref = value(&r, inverse ? dx : y);
        check(inverse ? "rope_grad" : "rope", shape, err_f64(y64, ref, n), err_f32(y32, ref, n));
    }
    double *in_place = xmalloc((size_t)n * sizeof *in_place);
    memcpy(in_place, xv, (size_t)n * sizeof *in_place);
    rt_rope_f64(in_place, in_place, tab64, 0, rows, T, W, H, 1);
    float *in_place32 = to_f32(xv, n);
    rt_rope_f32(in_place32, in_place32, tab32, 0, rows, T, W, H, 1);
    check("rope in place (exact)", shape, memcmp(in_place, y64, (size_t)n * sizeof *y64) != 0,
          memcmp(in_place32, y32, (size_t)n * sizeof *y32) != 0);
    free(in_place), free(in_place32);
    free(tab64), free(y64), free(tab32), free(y32), free(x32);
    rig_free(&r);
}

/* lse (B, heads, T) of the scaled causal scores, computed here in fp64. */
static double *attention_lse(const double *q, const double *k, int B, int T, int W, int H)
{
    int hd = W / H;
    double *lse = xmalloc((size_t)(B * H * T) * sizeof *lse), *s = xmalloc((size_t)T * sizeof *s);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < T; t++) {
                double m = -INFINITY, z = 0;
                for (int u = 0; u <= t; u++) {
                    s[u] = 0;
                    for (int d = 0; d < hd; d++)
                        s[u] += q[(b * T + t) * W + h * hd + d] * k[(b * T + u) * W + h * hd + d];
                    s[u] /= sqrt(hd);
                    m = fmax(m, s[u]);
                }
                for (int u = 0; u <= t; u++)
                    z += exp(s[u] - m);
                lse[(b * H + h) * T + t] = m + log(z);
            }
    free(s);
    return lse;
}

/* rt_attention_cached against rt_attention: a cache of max_T = T + 3 rows
 * per sequence (NaN where nothing was appended), filled by rt_kv_append
 * with the keys and values of each call's new positions, and the outputs
 * of a prompt of P = T / 3 positions in one call, the next positions one
 * per call and the last two (when there are) in one; each row's largest
 * difference from the whole-sequence output, relative to its largest
 * magnitude, and whether all bytes are equal. */
#define CACHED_VS_FULL(REAL, S)                                                                              \
    static double cached_vs_full##S(const REAL *q, const REAL *k, const REAL *v, const REAL *full, int B,       \
                                    int T, int W, int H, bool *same)                                           \
    {                                                                                                        \
        int64_t maxT = T + 3, hd = W / H;                                                                    \
        REAL *kc = xmalloc((size_t)(B * maxT * W) * sizeof *kc), *vc = xmalloc((size_t)(B * maxT * W) * sizeof *vc); \
        REAL *qs = xmalloc((size_t)(B * T * W) * sizeof *qs), *os = xmalloc((size_t)(B * T * W) * sizeof *os);  \
        REAL *out = xmalloc((size_t)(B * T * W) * sizeof *out);                                              \
        REAL *work = xmalloc((size_t)rt_attention_work_numel(hd) * sizeof *work);                            \
        REAL *ks = xmalloc((size_t)(B * T * W) * sizeof *ks), *vs = xmalloc((size_t)(B * T * W) * sizeof *vs);  \
        for (int64_t i = 0; i < B * maxT * W; i++) /* positions not appended yet must not be read */         \
            kc[i] = vc[i] = NAN;                                                                             \
        for (int pos = 0, n; pos < T; pos += n) {                                                            \
            n = pos == 0 ? (T / 3 > 0 ? T / 3 : 1) : T - pos == 2 ? 2 : 1;                                   \
            for (int b = 0; b < B; b++) {                                                                    \
                int64_t at = ((int64_t)b * T + pos) * W, nw = (int64_t)n * W;                                \
                memcpy(qs + (int64_t)b * nw, q + at, (size_t)nw * sizeof *qs);                               \
                memcpy(ks + (int64_t)b * nw, k + at, (size_t)nw * sizeof *ks);                               \
                memcpy(vs + (int64_t)b * nw, v + at, (size_t)nw * sizeof *vs);                               \
            }                                                                                                \
            rt_kv_append##S(kc, vc, ks, vs, 0, (int64_t)B * n / 2, n, pos, maxT, W); /* in two pieces */     \
            rt_kv_append##S(kc, vc, ks, vs, (int64_t)B * n / 2, (int64_t)B * n, n, pos, maxT, W);            \
            rt_attention_cached##S(os, qs, kc, vc, work, 0, (int64_t)B * H, n, pos, maxT, W, H);             \
            for (int b = 0; b < B; b++)                                                                      \
                memcpy(out + ((int64_t)b * T + pos) * W, os + (int64_t)b * n * W, (size_t)(n * W) * sizeof *os); \
        }                                                                                                    \
        double diff = 0, scale = 0;                                                                          \
        for (int64_t i = 0; i < (int64_t)B * T * W; i++) {                                                   \
            diff = fmax(diff, fabs((double)out[i] - full[i]));                                               \
            scale = fmax(scale, fabs((double)full[i]));                                                      \
        }                                                                                                    \
        *same = !memcmp(out, full, (size_t)(B * T * W) * sizeof *out);                                       \
        free(kc), free(vc), free(qs), free(os), free(out), free(work), free(ks), free(vs);                   \
        return scale > 0 ? diff / scale : diff;                                                              \
    }
CACHED_VS_FULL(double, _f64)
CACHED_VS_FULL(float, _f32)

/* attention forward (out, lse) and backward (dq, dk, dv from one call). */
static void test_attention(int B, int T, int W, int H, const char *shape)
{
    static const char *dnames[3] = {"attention_grad dq", "attention_grad dk", "attention_grad dv"};
    Rig r;
    rig_init(&r, B, T);
    IrNode *in[4]; /* q, k, v, g */
    for (int i = 0; i < 4; i++)
        in[i] = activation(&r, r.tokens, W);
    IrNode *y = node(&r, IR_ATTENTION, in[0], in[1], true, 1, W), *d[3];
    y->in[2] = in[2], y->heads = H;
    for (int w = 0; w < 3; w++) {
        d[w] = node(&r, IR_ATTENTION_GRAD, in[0], in[1], true, 1, W);
        d[w]->in[2] = in[2], d[w]->in[3] = in[3], d[w]->heads = H, d[w]->which = w;
    }
    rig_run(&r);
    int64_t n = (int64_t)B * T * W, nl = (int64_t)B * H * T, units = (int64_t)B * H, mid = units / 2;
    int64_t hd = W / H;
    const double *x64[4];
    float *x32[4];
    for (int i = 0; i < 4; i++)
        x64[i] = data_of(&r, in[i]), x32[i] = to_f32(x64[i], n);
    double *o64 = xmalloc((size_t)n * sizeof *o64), *l64 = xmalloc((size_t)nl * sizeof *l64), *d64[3];
    float *o32 = xmalloc((size_t)n * sizeof *o32), *l32 = xmalloc((size_t)nl * sizeof *l32), *d32[3];
    double *w64 = xmalloc((size_t)rt_attention_grad_work_numel(hd) * sizeof *w64);
    float *w32 = xmalloc((size_t)rt_attention_grad_work_numel(hd) * sizeof *w32);
    double *fw64 = xmalloc((size_t)rt_attention_work_numel(hd) * sizeof *fw64);
    float *fw32 = xmalloc((size_t)rt_attention_work_numel(hd) * sizeof *fw32);
    for (int w = 0; w < 3; w++) {
        d64[w] = xmalloc((size_t)n * sizeof *d64[w]), d32[w] = xmalloc((size_t)n * sizeof *d32[w]);
        for (int64_t i = 0; i < n; i++) /* garbage: the kernel must overwrite, not accumulate */
            d64[w][i] = d32[w][i] = NAN;
    }
    rt_attention_f64(o64, l64, x64[0], x64[1], x64[2], fw64, 0, units, T, W, H);
    rt_attention_f32(o32, l32, x32[0], x32[1], x32[2], fw32, 0, mid, T, W, H);
    rt_attention_f32(o32, l32, x32[0], x32[1], x32[2], fw32, mid, units, T, W, H);
    double *lref = attention_lse(x64[0], x64[1], B, T, W, H);
    check("attention out", shape, err_f64(o64, value(&r, y), n), err_f32(o32, value(&r, y), n));
    check("attention lse", shape, err_f64(l64, lref, nl), err_f32(l32, lref, nl));
    bool same64, same32;
    double c64 = cached_vs_full_f64(x64[0], x64[1], x64[2], o64, B, T, W, H, &same64);
    double c32 = cached_vs_full_f32(x32[0], x32[1], x32[2], o32, B, T, W, H, &same32);
    check("attention_cached = attention", shape, c64, c32);
    if (T == 130)
        printf("     attention_cached %s: the same bytes as attention: f64 %s, f32 %s\n", shape, same64 ? "yes" : "no",
               same32 ? "yes" : "no");
    rt_attention_grad_f64(d64[0], d64[1], d64[2], x64[0], x64[1], x64[2], o64, l64, x64[3], w64, 0, units, T, W, H);
    rt_attention_grad_f32(d32[0], d32[1], d32[2], x32[0], x32[1], x32[2], o32, l32, x32[3], w32, 0, mid, T, W, H);
    rt_attention_grad_f32(d32[0], d32[1], d32[2], x32[0], x32[1], x32[2], o32, l32, x32[3], w32, mid, units, T, W,
                          H);
    for (int w = 0; w < 3; w++)
        check(dnames[w], shape, err_f64(d64[w], value(&r, d[w]), n), err_f32(d32[w], value(&r, d[w]), n));
    for (int i = 0; i < 4; i++)
        free(x32[i]);
    for (int w = 0; w < 3; w++)
        free(d64[w]), free(d32[w]);
    free(o64), free(l64), free(o32), free(l32), free(w64), free(w32), free(fw64), free(fw32), free(lref);
    rig_free(&r);
}

/* embed of random token ids, and embed_grad of a random g (B,T,d) (which
 * uses the targets as identity ids, the tokens being taken). */
static void test_embed(int B, int T, int d, const char *shape)
{
    Rig r;
    rig_init(&r, B, T);
    int64_t rows = (int64_t)B * T, nt = (int64_t)VOCAB * d;
    for (int64_t i = 0; i < rows; i++)
        r.tok[i] = (int32_t)(rng_next() % (i % 2 ? VOCAB : 3)); /* repeats, so the scatter adds */
    IrNode *table = param(&r, VOCAB, d), *y = node(&r, IR_EMBED, r.tokens, table, true, 1, d);
    IrNode *g = activation(&r, r.targets, d), *dt = node(&r, IR_EMBED_GRAD, r.tokens, g, false, VOCAB, d);
    rig_run(&r);
    const double *t64 = data_of(&r, table), *g64 = data_of(&r, g);
    float *t32 = to_f32(t64, nt), *g32 = to_f32(g64, rows * d);
    double *y64 = xmalloc((size_t)(rows * d) * sizeof *y64), *dt64 = xcalloc((size_t)nt, sizeof *dt64);
    float *y32 = xmalloc((size_t)(rows * d) * sizeof *y32), *dt32 = xcalloc((size_t)nt, sizeof *dt32);
    rt_embed_f64(y64, r.tok, t64, 0, rows, VOCAB, d);
    rt_embed_f32(y32, r.tok, t32, 0, rows / 2, VOCAB, d);
    rt_embed_f32(y32, r.tok, t32, rows / 2, rows, VOCAB, d);
    check("embed", shape, err_f64(y64, value(&r, y), rows * d), err_f32(y32, value(&r, y), rows * d));
    rt_embed_grad_f64(dt64, r.tok, g64, 0, d, rows, VOCAB, d);
    rt_embed_grad_f32(dt32, r.tok, g32, 0, d / 3, rows, VOCAB, d);
    rt_embed_grad_f32(dt32, r.tok, g32, d / 3, d, rows, VOCAB, d);
    check("embed_grad", shape, err_f64(dt64, value(&r, dt), nt), err_f32(dt32, value(&r, dt), nt));
    free(t32), free(g32), free(y64), free(dt64), free(y32), free(dt32);
    rig_free(&r);
}

/* cross_entropy and its gradient (g = 0.7).  mode 0: no mask; 1: a mask
 * with zeros (target -100 and NaN logits on those rows: neither may be
 * read) and a weight 0.5; 2: everything masked (loss and gradient 0). */
static void test_cross_entropy(int B, int T, int mode, const char *shape)
{
    static const char *names[3][2] = {{"cross_entropy", "cross_entropy_grad"},
                                      {"ce masked (-100)", "ce_grad masked (-100)"},
                                      {"ce all masked", "ce_grad all masked"}};
    Rig r;
    rig_init(&r, B, T);
    int64_t rows = (int64_t)B * T, n = rows * VOCAB;
    IrNode *lg = activation(&r, r.tokens, VOCAB), *g = node(&r, IR_CONST, NULL, NULL, false, 1, 1);
    g->num = 0.7;
    IrNode *ce = node(&r, IR_CROSS_ENTROPY, lg, r.targets, false, 1, 1);
    IrNode *d = node(&r, IR_CE_GRAD, lg, r.targets, true, 1, VOCAB);
    d->in[2] = g;
    double *l64 = data_of(&r, lg);
    for (int64_t i = 0; i < n; i++)
        l64[i] *= 3;
    int32_t *ktgt = xmalloc((size_t)rows * sizeof *ktgt); /* the kernels' targets */
    if (mode)
        r.mask = xmalloc((size_t)rows * sizeof *r.mask);
    for (int64_t i = 0; i < rows; i++) {
        ktgt[i] = r.tgt[i] = (int32_t)(rng_next() % VOCAB);
        if (!mode)
            continue;
        r.mask[i] = mode == 2 || i % 3 == 1 ? 0 : i % 5 == 2 ? 0.5 : 1;
        if (r.mask[i] == 0) {
            ktgt[i] = -100; /* the oracle checks every id, masked or not */
            for (int64_t j = 0; j < VOCAB; j++)
                l64[i * VOCAB + j] = NAN;
        }
    }
    rig_run(&r);
    float *l32 = to_f32(l64, n), *m32 = r.mask ? to_f32(r.mask, rows) : NULL, g32 = 0.7f;
    double g64 = 0.7;
    double loss64, *rl64 = xmalloc((size_t)rows * sizeof *rl64), *lse64 = xmalloc((size_t)rows * sizeof *lse64);
    float loss32, *rl32 = xmalloc((size_t)rows * sizeof *rl32), *lse32 = xmalloc((size_t)rows * sizeof *lse32);
    double *d64 = xmalloc((size_t)n * sizeof *d64);
    float *d32 = xmalloc((size_t)n * sizeof *d32);
    rt_cross_entropy_f64(&loss64, rl64, lse64, l64, ktgt, r.mask, rows, VOCAB);
    rt_cross_entropy_rows_f32(rl32, lse32, l32, ktgt, m32, 0, rows / 2, VOCAB);
    rt_cross_entropy_rows_f32(rl32, lse32, l32, ktgt, m32, rows / 2, rows, VOCAB);
    rt_cross_entropy_mean_f32(&loss32, rl32, m32, rows);
    check(names[mode][0], shape, err_f64(&loss64, value(&r, ce), 1), err_f32(&loss32, value(&r, ce), 1));
    rt_cross_entropy_grad_f64(d64, l64, ktgt, r.mask, lse64, &g64, 0, 0, rows, rows, VOCAB);
    rt_cross_entropy_grad_f32(d32, l32, ktgt, m32, lse32, &g32, 0, 0, rows / 2, rows, VOCAB);
    /* the second half as a chunk of rows starting at row rows / 2 (c0) */
    int64_t c0 = rows / 2;
    rt_cross_entropy_grad_f32(d32 + c0 * VOCAB, l32 + c0 * VOCAB, ktgt, m32, lse32, &g32, c0, c0, rows, rows, VOCAB);
    check(names[mode][1], shape, err_f64(d64, value(&r, d), n), err_f32(d32, value(&r, d), n));
    free(ktgt), free(l32), free(m32), free(rl64), free(lse64), free(rl32), free(lse32), free(d64), free(d32);
    free(r.mask);
    rig_free(&r);
}

/* The float exp of the kernels against exp in double, in ulps of the
 * float result: every 97th float in [-104, 89] (both signs of the
 * exponent, the subnormal results near -104), and the special values. */
static void test_expf(void)
{
    enum { N = 1 << 16 };
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    double worst = 0, worst_at = 0;
    int64_t count = 0;
    uint32_t hi;
    float f;
    for (int sign = 0; sign < 2; sign++) {
        f = sign ? -104.0f : 89.0f;
        memcpy(&hi, &f, 4);
        for (uint32_t u = sign ? 0x80000000u : 0; u <= hi;) {
            int n = 0;
            for (; n < N && u <= hi; n++, u += 97) {
                memcpy(&x[n], &u, 4);
                y[n] = x[n];
            }
            rt_expf_array(y, n);
            for (int i = 0; i < n; i++) {
                double ref = exp((double)x[i]);
                float r = (float)ref;
                double ulp = nextafterf(fabsf(r), INFINITY) - fabsf(r);
                double e = fabs((double)y[i] - ref) / ulp;
                if (e > worst)
                    worst = e, worst_at = x[i];
            }
            count += n;
        }
    }
    static const float special[] = {0.0f, -0.0f, INFINITY, -INFINITY, 89.0f, 89.5f, 1000.0f, -1000.0f, -87.5f};
    float sx[10];
    memcpy(sx, special, sizeof special);
    sx[9] = NAN;
    rt_expf_array(sx, 10);
    bool specials = sx[0] == 1.0f && sx[1] == 1.0f && sx[2] == INFINITY && sx[3] == 0.0f &&
                    sx[4] == (float)exp(89.0) && sx[5] == INFINITY && sx[6] == INFINITY && sx[7] == 0.0f &&
                    fabs(sx[8] - exp(-87.5)) <= 2 * (nextafterf((float)exp(-87.5), 1) - (float)exp(-87.5)) &&
                    isnan(sx[9]);
    bool ok = worst <= 1.5 && specials;
    printf("%s expf (rt_expf_array): %lld values, worst %.3f ulp at %.9g (limit 1.5); specials %s\n",
           ok ? "ok  " : "FAIL", (long long)count, worst, worst_at, specials ? "ok" : "WRONG");
    failures += !ok;
    free(x), free(y);
}

/* ---- the AVX-512 build against the base build: the same bytes ---- */

static float *rand_f32(int64_t n, double scale)
{
    float *x = malloc((size_t)n * sizeof *x);
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)(scale * rng_normal());
    return x;
}

#ifdef STRATA_KERNELS_X512
static void same_bytes(const char *what, const char *shape, const float *a, const float *b, int64_t n)
{
    int64_t at = -1;
    for (int64_t i = 0; i < n && at < 0; i++)
        if (memcmp(a + i, b + i, sizeof *a))
            at = i;
    printf("%-32s %-28s %s", what, shape, at < 0 ? "same bytes\n" : "");
    if (at >= 0) {
        printf("DIFFER at %lld: %.9g vs %.9g  FAIL\n", (long long)at, a[at], b[at]);
        failures++;
    }
}

static void wide_attention(int B, int T, int W, int H)
{
    char shape[64];
    snprintf(shape, sizeof shape, "B=%d T=%d W=%d H=%d", B, T, W, H);
    int64_t n = (int64_t)B * T * W, nl = (int64_t)B * H * T, hd = W / H;
    float *q = rand_f32(n, 1.5), *k = rand_f32(n, 1.5), *v = rand_f32(n, 1), *g = rand_f32(n, 1);
    float *o[2], *l[2], *dq[2], *dk[2], *dv[2], *oc[2];
    int64_t wn = rt_attention_grad_work_numel(hd) > rt_attention_work_numel(hd) ? rt_attention_grad_work_numel(hd)
                                                                                 : rt_attention_work_numel(hd);
    float *work = malloc((size_t)wn * sizeof *work);
    for (int x = 0; x < 2; x++) {
        o[x] = calloc((size_t)n, 4), l[x] = calloc((size_t)nl, 4), oc[x] = calloc((size_t)n, 4);
        dq[x] = calloc((size_t)n, 4), dk[x] = calloc((size_t)n, 4), dv[x] = calloc((size_t)n, 4);
        (x ? rt_attention_f32_x512 : rt_attention_f32_base)(o[x], l[x], q, k, v, work, 0, (int64_t)B * H, T, W, H);
        /* the last T - T/2 queries over a cache of the whole sequence */
        (x ? rt_attention_cached_f32_x512 : rt_attention_cached_f32_base)(oc[x], q, k, v, work, 0, (int64_t)B * H,
                                                                          T - T / 2, T / 2, T, W, H);
        (x ? rt_attention_grad_f32_x512 : rt_attention_grad_f32_base)(dq[x], dk[x], dv[x], q, k, v, o[x], l[x], g,
                                                                      work, 0, (int64_t)B * H, T, W, H);
    }
    same_bytes("attention out (x512 vs base)", shape, o[0], o[1], n);
    same_bytes("attention lse (x512 vs base)", shape, l[0], l[1], nl);
    same_bytes("attention cached (x512 vs base)", shape, oc[0], oc[1], (int64_t)B * (T - T / 2) * W);
    same_bytes("attention dq (x512 vs base)", shape, dq[0], dq[1], n);
    same_bytes("attention dk (x512 vs base)", shape, dk[0], dk[1], n);
    same_bytes("attention dv (x512 vs base)", shape, dv[0], dv[1], n);
    for (int x = 0; x < 2; x++)
        free(o[x]), free(l[x]), free(oc[x]), free(dq[x]), free(dk[x]), free(dv[x]);
    free(q), free(k), free(v), free(g), free(work);
}

static void wide_cross_entropy(int64_t rows, int64_t V, bool masked)
{
    char shape[64];
    snprintf(shape, sizeof shape, "rows=%lld V=%lld%s", (long long)rows, (long long)V, masked ? " masked" : "");
    float *logits = rand_f32(rows * V, 3), *mask = NULL, g = 0.75f;
    int32_t *tg = malloc((size_t)rows * sizeof *tg);
    for (int64_t r = 0; r < rows; r++)
        tg[r] = (int32_t)(rng_next() % (uint64_t)V);
    if (masked) {
        mask = malloc((size_t)rows * sizeof *mask);
        for (int64_t r = 0; r < rows; r++)
            mask[r] = r % 3 == 1 ? 0.0f : 1.0f;
    }
    float *loss[2], *lse[2], *d[2];
    for (int x = 0; x < 2; x++) {
        loss[x] = calloc((size_t)rows, 4), lse[x] = calloc((size_t)rows, 4), d[x] = calloc((size_t)(rows * V), 4);
        (x ? rt_cross_entropy_rows_f32_x512 : rt_cross_entropy_rows_f32_base)(loss[x], lse[x], logits, tg, mask, 0,
                                                                              rows, V);
        (x ? rt_cross_entropy_grad_f32_x512 : rt_cross_entropy_grad_f32_base)(d[x], logits, tg, mask, lse[x], &g, 0,
                                                                              0, rows, rows, V);
    }
    same_bytes("cross-entropy rows (x512 vs base)", shape, loss[0], loss[1], rows);
    same_bytes("cross-entropy lse (x512 vs base)", shape, lse[0], lse[1], rows);
    same_bytes("cross-entropy grad (x512 vs base)", shape, d[0], d[1], rows * V);
    for (int x = 0; x < 2; x++)
        free(loss[x]), free(lse[x]), free(d[x]);
    free(logits), free(mask), free(tg);
}
#endif

static void test_wide(void)
{
#ifdef STRATA_KERNELS_X512
    if (!rt_kernels_wide()) {
        printf("AVX-512 build of the float kernels: not run, this CPU has no AVX-512 (%s)\n",
               rt_cpu_isa_name(rt_cpu()));
        return;
    }
    static const int shapes[][4] = {{2, 1, 32, 4}, {2, 7, 64, 2}, {1, 64, 128, 2}, {2, 130, 96, 1},
                                    {1, 257, 40, 2}, {1, 200, 512, 8}};
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
        wide_attention(shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][3]);
    wide_cross_entropy(5, 50, false);
    wide_cross_entropy(9, 1003, true);
    wide_cross_entropy(3, 32000, false);
#else
    (void)rand_f32;
    printf("AVX-512 build of the float kernels: not in this build (configure: AVX-512 kernels: no)\n");
#endif
}

int main(void)
{
    test_expf();
    static const int Ts[] = {1, 7, 64, 130}, Ws[][2] = {{32, 4}, {64, 2}};
    enum { B = 2 };
    printf("error = max |kernel - interp| / max |interp|; tolerances f64 %.0e, f32 %.0e\n", TOL_F64, TOL_F32);
    for (int ti = 0; ti < 4; ti++) {
        int T = Ts[ti];
        char shape[64];
        for (int wi = 0; wi < 2; wi++) {
            int W = Ws[wi][0], H = Ws[wi][1];
            snprintf(shape, sizeof shape, "B=%d T=%d W=%d H=%d", B, T, W, H);
            test_rope(B, T, W, H, shape);
            test_attention(B, T, W, H, shape);
            snprintf(shape, sizeof shape, "B=%d T=%d d=%d V=%d", B, T, W, VOCAB);
            test_embed(B, T, W, shape);
        }
        snprintf(shape, sizeof shape, "B=%d T=%d V=%d", B, T, VOCAB);
        for (int mode = 0; mode < 3; mode++)
            test_cross_entropy(B, T, mode, shape);
    }
    test_wide();
    if (failures)
        printf("kernels_test: %d check(s) FAILED\n", failures);
    else
        printf("kernels_test: all checks passed\n");
    return failures ? 1 : 0;
}
