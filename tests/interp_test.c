/* interp_test.c - unit test of the fp64 reference interpreter (interp.h).
 * Builds small IR graphs by hand and checks (a) forward values against
 * formulas computed here independently, (b) every gradient op against
 * central finite differences of its forward op as run by the interpreter,
 * plus adjoint identities.  Inputs come from a fixed-seed splitmix64.
 * Exit status 0 = pass, 1 = fail; one line per check. */
#define _POSIX_C_SOURCE 200809L
#include "ir/interp.h"

#include <complex.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAXROWS 64     /* B*T of every test batch */
#define FD_H 1e-6      /* central difference step */
#define FD_TOL 1e-6    /* largest relative error of a gradient */
#define EXACT_TOL 1e-13 /* forward values computed two ways */
#define ADJ_TOL 1e-14  /* adjoint identities (see adjoint_error) */

static int failures;

/* ---- random numbers: splitmix64, as gradcheck.c ---- */

static uint64_t rng_state = 20240601;

static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double rng_normal(void) /* Box-Muller */
{
    double u = (double)(rng_next() >> 11) * 0x1.0p-53, v = (double)(rng_next() >> 11) * 0x1.0p-53;
    return sqrt(-2 * log(u + 1e-300)) * cos(2 * acos(-1.0) * v);
}

/* ---- checks ---- */

static void check(const char *what, double err, double tol)
{
    bool ok = err <= tol; /* NaN fails */
    printf("%s %-52s %.3e (tol %.0e)\n", ok ? "ok  " : "FAIL", what, err, tol);
    failures += !ok;
}

/* gradcheck.c's measure: max_i |a - b| / max(|a|, |b|, 1e-3 max_j |a_j|). */
static double rel_error(const double *a, const double *b, int64_t n)
{
    double amax = 0, err = 0;
    for (int64_t i = 0; i < n; i++)
        amax = fmax(amax, fabs(a[i]));
    for (int64_t i = 0; i < n; i++) {
        double e = fabs(a[i] - b[i]) / fmax(fmax(fabs(a[i]), fabs(b[i])), fmax(1e-3 * amax, 1e-300));
        err = isnan(e) ? INFINITY : fmax(err, e);
    }
    return err;
}

/* ---- a graph, its inputs and its last run ---- */

typedef struct Rig {
    IrGraph g;
    int B, T;
    IrNode *tokens, *targets; /* (B,T,1) ids; identity (r) unless a test sets them */
    int32_t tok[MAXROWS], tgt[MAXROWS];
    double mask[MAXROWS];
    bool masked;              /* pass mask[]; else NULL (all ones) */
    double *params[16];       /* params[p->index] */
    Interp it;
    bool ran;
} Rig;

static void rig_init(Rig *r, int B, int T)
{
    memset(r, 0, sizeof *r);
    ir_init(&r->g);
    r->B = B, r->T = T;
    if (B * T > MAXROWS)
        die("test batch too large");
    r->tokens = ir_add(&r->g, IR_INPUT_TOKENS, (Loc){0});
    r->targets = ir_add(&r->g, IR_INPUT_TARGETS, (Loc){0});
    for (IrNode **n = (IrNode *[]){r->tokens, r->targets, NULL}; *n; n++)
        (*n)->tok = (*n)->is_int = true;
    for (int i = 0; i < B * T; i++)
        r->tok[i] = r->tgt[i] = i, r->mask[i] = 1;
}

static void rig_free(Rig *r)
{
    if (r->ran)
        interp_free(&r->it);
    for (int i = 0; i < r->g.params.n; i++)
        free(r->params[i]);
    ir_free(&r->g);
}

/* Runs the graph (after verifying it); returns interp_run's result. */
static bool rig_run(Rig *r)
{
    if (r->ran)
        interp_free(&r->it);
    if (!ir_verify(&r->g, stdout))
        die("the test built an invalid graph");
    InterpInput in = {r->B, r->T, r->tok, r->tgt, r->masked ? r->mask : NULL, r->params};
    r->ran = true;
    return interp_run(&r->it, &r->g, &in);
}

static const double *value(Rig *r, const IrNode *n)
{
    return interp_value(&r->it, n);
}

/* A copy of n's value (the next run frees the interpreter's). */
static double *copy_value(Rig *r, const IrNode *n)
{
    int64_t k = interp_numel(&r->it, n);
    double *c = xmalloc((size_t)k * sizeof *c);
    memcpy(c, value(r, n), (size_t)k * sizeof *c);
    return c;
}

static IrNode *node(Rig *r, IrOp op, IrNode *a, IrNode *b, bool tok, int64_t rows, int64_t width)
{
    IrNode *n = ir_add(&r->g, op, (Loc){0});
    n->in[0] = a, n->in[1] = b;
    n->tok = tok, n->rows = rows, n->width = width;
    return n;
}

static IrNode *unary(Rig *r, IrOp op, IrNode *a)
{
    return node(r, op, a, NULL, a->tok, a->rows, a->width);
}

static IrNode *binary(Rig *r, IrOp op, IrNode *a, IrNode *b)
{
    return node(r, op, a, b, a->tok || b->tok, a->rows > b->rows ? a->rows : b->rows,
                a->width > b->width ? a->width : b->width);
}

static IrNode *cnst(Rig *r, double v)
{
    IrNode *n = node(r, IR_CONST, NULL, NULL, false, 1, 1);
    n->num = v;
    return n;
}

/* A [rows, width] parameter of N(0, scale^2) values. */
static IrNode *param(Rig *r, int64_t rows, int64_t width, double scale)
{
    IrParam *p = ir_add_param(&r->g, "p", (Loc){0});
    p->ndim = rows > 1 ? 2 : 1;
    p->dims[0] = rows, p->dims[1] = width;
    p->numel = rows * width;
    r->params[p->index] = xmalloc((size_t)p->numel * sizeof(double));
    for (int64_t i = 0; i < p->numel; i++)
        r->params[p->index][i] = scale * rng_normal();
    IrNode *n = node(r, IR_PARAM, NULL, NULL, false, rows, width);
    n->param = p;
    return n;
}

/* A (B,T,width) activation whose row r is row r of a parameter table:
 * embed(ids, table) with ids[r] = r (the caller keeps those ids). */
static IrNode *activation(Rig *r, IrNode *ids, int64_t width, double scale)
{
    IrNode *table = param(r, (int64_t)r->B * r->T, width, scale);
    return node(r, IR_EMBED, ids, table, true, 1, width);
}

/* The values that can be perturbed behind n: a parameter or activation(). */
static double *data_of(Rig *r, const IrNode *n)
{
    const IrNode *p = n->op == IR_EMBED ? n->in[1] : n;
    if (p->op != IR_PARAM)
        die("data_of: not a parameter or an activation()");
    return r->params[p->param->index];
}

static int64_t numel_of(const IrNode *n)
{
    return (n->op == IR_EMBED ? n->in[1] : n)->param->numel;
}

/* Runs r and returns a copy of out's value. */
static double *run_copy(Rig *r, const IrNode *out)
{
    if (!rig_run(r))
        die("the interpreter failed on a test graph");
    return copy_value(r, out);
}

/* Relative error of `ana` against central differences of f = sum_k w[k]
 * out[k] with respect to every element behind `wrt`.  The two outputs are
 * subtracted element by element before the sum, so elements that do not
 * depend on the perturbed input add no rounding noise.  Reruns r at the
 * end, so values read after it are those of the unperturbed point. */
static double fd_error(Rig *r, const IrNode *out, const double *w, const IrNode *wrt, const double *ana)
{
    double *x = data_of(r, wrt);
    int64_t n = numel_of(wrt), m = interp_numel(&r->it, out);
    double *num = xmalloc((size_t)n * sizeof *num);
    for (int64_t i = 0; i < n; i++) {
        double save = x[i];
        x[i] = save + FD_H;
        double *yp = run_copy(r, out);
        x[i] = save - FD_H;
        double *ym = run_copy(r, out);
        x[i] = save;
        double d = 0;
        for (int64_t k = 0; k < m; k++)
            d += w[k] * (yp[k] - ym[k]);
        num[i] = d / (2 * FD_H);
        free(yp);
        free(ym);
    }
    rig_run(r);
    double err = rel_error(ana, num, n);
    free(num);
    return err;
}

/* <a, b> over n values. */
static double dot(const double *a, const double *b, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

static double rel(double a, double b)
{
    return fabs(a - b) / fmax(fmax(fabs(a), fabs(b)), 1e-300);
}

/* Error of an adjoint identity <y, g> = <x, dx>, relative to the
 * Cauchy-Schwarz bound max(|y| |g|, |x| |dx|), so that inner products that
 * cancel to near 0 are not judged against their own rounding. */
static double adjoint_error(const double *y, const double *g, int64_t ny, const double *x, const double *dx,
                            int64_t nx)
{
    double scale = fmax(sqrt(dot(y, y, ny) * dot(g, g, ny)), sqrt(dot(x, x, nx) * dot(dx, dx, nx)));
    return fabs(dot(y, g, ny) - dot(x, dx, nx)) / fmax(scale, 1e-300);
}

/* ---- (a) forward values ---- */

static double ref_sigmoid(double x) { return 1 / (1 + exp(-x)); }

static double ref_gelu(double x)
{
    return 0.5 * x * (1 + tanh(sqrt(2 / acos(-1.0)) * (x + 0.044715 * pow(x, 3))));
}

/* Every unary elementwise op on a [1, 9] vector against libm formulas. */
static void test_unary_forward(void)
{
    static const double xs[9] = {-3.1, -1.5, -0.4, -1e-3, 0.25, 0.7, 1.3, 2.2, 4.0};
    static const IrOp ops[] = {IR_NEG, IR_POWC, IR_EXP, IR_TANH, IR_SIGMOID, IR_SILU, IR_GELU,
                               IR_ABS, IR_SQUARE, IR_SIGN, IR_LOG, IR_SQRT, IR_RSQRT};
    Rig r;
    rig_init(&r, 1, 1);
    IrNode *x = param(&r, 1, 9, 1), *ax = unary(&r, IR_ABS, x), *out[13];
    memcpy(r.params[0], xs, sizeof xs);
    for (int k = 0; k < 13; k++) {
        out[k] = unary(&r, ops[k], k < 10 ? x : ax); /* log and roots of |x| */
        out[k]->num = 3;                             /* POWC exponent */
    }
    rig_run(&r);
    double err = 0;
    for (int k = 0; k < 13; k++)
        for (int i = 0; i < 9; i++) {
            double v = xs[i], a = fabs(v), want = 0;
            switch (ops[k]) {
            case IR_NEG: want = -v; break;
            case IR_POWC: want = v * v * v; break;
            case IR_EXP: want = exp(v); break;
            case IR_TANH: want = (exp(v) - exp(-v)) / (exp(v) + exp(-v)); break;
            case IR_SIGMOID: want = ref_sigmoid(v); break;
            case IR_SILU: want = v * ref_sigmoid(v); break;
            case IR_GELU: want = ref_gelu(v); break;
            case IR_ABS: want = a; break;
            case IR_SQUARE: want = v * v; break;
            case IR_SIGN: want = v > 0 ? 1 : -1; break;
            case IR_LOG: want = log(a); break;
            case IR_SQRT: want = sqrt(a); break;
            default: want = 1 / sqrt(a); break;
            }
            err = fmax(err, rel(value(&r, out[k])[i], want));
        }
    check("forward: 13 unary ops vs libm formulas", err, EXACT_TOL);
    rig_free(&r);
}

/* Broadcasting of width-1 and non-token operands; reductions; expand. */
static void test_broadcast_forward(void)
{
    enum { B = 2, T = 3, W = 4, R = B * T };
    Rig r;
    rig_init(&r, B, T);
    IrNode *x = activation(&r, r.tokens, W, 1), *gain = param(&r, 1, W, 1), *two = cnst(&r, 2);
    IrNode *mean = node(&r, IR_MEAN, x, NULL, true, 1, 1), *sum = node(&r, IR_SUM, x, NULL, true, 1, 1);
    IrNode *max = node(&r, IR_MAX, x, NULL, true, 1, 1);
    IrNode *add = binary(&r, IR_ADD, x, gain), *mul = binary(&r, IR_MUL, two, x);
    IrNode *div = binary(&r, IR_DIV, x, mean), *sub = binary(&r, IR_SUB, sum, gain);
    IrNode *eq = binary(&r, IR_EQ_MASK, x, max), *ex = node(&r, IR_EXPAND, max, NULL, true, 1, W);
    IrNode *rows = node(&r, IR_SUM_ROWS, x, NULL, false, 1, W);
    rig_run(&r);
    const double *xv = r.params[0], *gv = r.params[1];
    double err = 0, col[W] = {0};
    for (int i = 0; i < R; i++) {
        double s = 0, m = -INFINITY;
        for (int c = 0; c < W; c++)
            s += xv[i * W + c], m = fmax(m, xv[i * W + c]);
        err = fmax(err, rel(value(&r, sum)[i], s) + rel(value(&r, mean)[i], s / W) + rel(value(&r, max)[i], m));
        for (int c = 0; c < W; c++) {
            double v = xv[i * W + c];
            col[c] += v;
            err = fmax(err, rel(value(&r, add)[i * W + c], v + gv[c]) + rel(value(&r, mul)[i * W + c], 2 * v));
            err = fmax(err, rel(value(&r, div)[i * W + c], v / (s / W)) + rel(value(&r, sub)[i * W + c], s - gv[c]));
            err = fmax(err, rel(value(&r, eq)[i * W + c], v == m) + rel(value(&r, ex)[i * W + c], m));
        }
    }
    for (int c = 0; c < W; c++)
        err = fmax(err, rel(value(&r, rows)[c], col[c]));
    check("forward: add/sub/mul/div/eq_mask broadcasting, reductions", err, EXACT_TOL);
    rig_free(&r);
}

/* A NaN input gives a NaN output (max included), never an error. */
static void test_nan_forward(void)
{
    Rig r;
    rig_init(&r, 1, 1);
    IrNode *x = param(&r, 1, 3, 1), *max = node(&r, IR_MAX, x, NULL, false, 1, 1);
    IrNode *lg = unary(&r, IR_LOG, unary(&r, IR_NEG, unary(&r, IR_ABS, x)));
    memcpy(r.params[0], (double[]){1, NAN, 2}, sizeof(double[3]));
    bool ok = rig_run(&r) && isnan(value(&r, max)[0]) && isnan(value(&r, lg)[0]);
    check("forward: max of [1, nan, 2] and log(-1) are NaN", ok ? 0 : 1, 0);
    rig_free(&r);
}

/* RMSNorm as a chain: x * rsqrt(mean(x^2) + eps) * gain. */
static void test_rmsnorm_forward(void)
{
    enum { B = 2, T = 2, W = 6 };
    Rig r;
    rig_init(&r, B, T);
    IrNode *x = activation(&r, r.tokens, W, 1), *gain = param(&r, 1, W, 1);
    IrNode *ms = node(&r, IR_MEAN, unary(&r, IR_SQUARE, x), NULL, true, 1, 1);
    IrNode *inv = unary(&r, IR_RSQRT, binary(&r, IR_ADD, ms, cnst(&r, 1e-5)));
    IrNode *y = binary(&r, IR_MUL, binary(&r, IR_MUL, x, inv), gain);
    rig_run(&r);
    double err = 0;
    for (int i = 0; i < B * T; i++) {
        const double *row = r.params[0] + i * W;
        double norm = sqrt(dot(row, row, W) / W + 1e-5);
        for (int c = 0; c < W; c++)
            err = fmax(err, rel(value(&r, y)[i * W + c], row[c] / norm * r.params[1][c]));
    }
    check("forward: rmsnorm chain", err, EXACT_TOL);
    rig_free(&r);
}

/* matmul both ways and embed, against direct loops. */
static void test_matmul_embed_forward(void)
{
    enum { B = 2, T = 2, R = B * T, IN = 3, OUT = 5, V = 7 };
    Rig r;
    rig_init(&r, B, T);
    IrNode *x = activation(&r, r.tokens, IN, 1), *wt = param(&r, OUT, IN, 1), *w = param(&r, IN, OUT, 1);
    IrNode *yt = node(&r, IR_MATMUL, x, wt, true, 1, OUT), *y = node(&r, IR_MATMUL, x, w, true, 1, OUT);
    yt->trans_b = true;
    IrNode *table = param(&r, V, IN, 1), *e = node(&r, IR_EMBED, r.targets, table, true, 1, IN);
    int32_t ids[R] = {6, 0, 6, 3};
    memcpy(r.tgt, ids, sizeof ids);
    rig_run(&r);
    double err = 0;
    for (int i = 0; i < R; i++) {
        for (int o = 0; o < OUT; o++) {
            double st = 0, s = 0;
            for (int k = 0; k < IN; k++) {
                st += r.params[0][i * IN + k] * r.params[1][o * IN + k];
                s += r.params[0][i * IN + k] * r.params[2][k * OUT + o];
            }
            err = fmax(err, rel(value(&r, yt)[i * OUT + o], st) + rel(value(&r, y)[i * OUT + o], s));
        }
        for (int k = 0; k < IN; k++)
            err = fmax(err, rel(value(&r, e)[i * IN + k], r.params[3][ids[i] * IN + k]));
    }
    check("forward: matmul (W and W^T), embed", err, EXACT_TOL);
    rig_free(&r);
}

/* rope against complex rotation z * e^(i theta); identity at t = 0. */
static void test_rope_forward(void)
{
    enum { B = 2, T = 3, W = 8, H = 2, HD = W / H };
    Rig r;
    rig_init(&r, B, T);
    IrNode *x = activation(&r, r.tokens, W, 1), *y = unary(&r, IR_ROPE, x);
    y->heads = H, y->num = 100;
    rig_run(&r);
    double err = 0, err0 = 0;
    for (int i = 0; i < B * T; i++)
        for (int h = 0; h < H; h++)
            for (int k = 0; k < HD / 2; k++) {
                int lo = i * W + h * HD + k, hi = lo + HD / 2;
                double complex z = r.params[0][lo] + I * r.params[0][hi];
                z *= cexp(I * (i % T) * pow(100.0, -2.0 * k / HD));
                err = fmax(err, rel(value(&r, y)[lo], creal(z)) + rel(value(&r, y)[hi], cimag(z)));
                if (i % T == 0)
                    err0 = fmax(err0, fabs(value(&r, y)[lo] - r.params[0][lo]) +
                                          fabs(value(&r, y)[hi] - r.params[0][hi]));
            }
    check("forward: rope vs complex rotation", err, EXACT_TOL);
    check("forward: rope at t = 0 is the identity (exactly)", err0, 0);
    rig_free(&r);
}

/* attention against a naive softmax; out[t=0] = v[0]; rows of p sum to 1. */
static void test_attention_forward(void)
{
    enum { B = 2, T = 4, W = 8, H = 2, HD = W / H };
    Rig r;
    rig_init(&r, B, T);
    IrNode *q = activation(&r, r.tokens, W, 1), *k = activation(&r, r.tokens, W, 1);
    IrNode *v = activation(&r, r.tokens, W, 1), *ones = activation(&r, r.tokens, W, 0);
    IrNode *y = node(&r, IR_ATTENTION, q, k, true, 1, W), *y1 = node(&r, IR_ATTENTION, q, k, true, 1, W);
    y->in[2] = v, y1->in[2] = ones, y->heads = y1->heads = H;
    for (int i = 0; i < B * T * W; i++)
        r.params[3][i] = 1;
    rig_run(&r);
    const double *qv = r.params[0], *kv = r.params[1], *vv = r.params[2];
    double err = 0, err0 = 0, err1 = 0;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < T; t++) {
                double e[T], z = 0;
                for (int u = 0; u <= t; u++) {
                    int qo = (b * T + t) * W + h * HD, ko = (b * T + u) * W + h * HD;
                    z += e[u] = exp(dot(qv + qo, kv + ko, HD) / sqrt(HD));
                }
                for (int i = 0; i < HD; i++) {
                    int o = (b * T + t) * W + h * HD + i;
                    double s = 0;
                    for (int u = 0; u <= t; u++)
                        s += e[u] / z * vv[(b * T + u) * W + h * HD + i];
                    err = fmax(err, rel(value(&r, y)[o], s));
                    err1 = fmax(err1, fabs(value(&r, y1)[o] - 1));
                    if (t == 0)
                        err0 = fmax(err0, fabs(value(&r, y)[o] - vv[o]));
                }
            }
    check("forward: attention vs naive causal softmax", err, EXACT_TOL);
    check("forward: attention at t = 0 returns v[0] (exactly)", err0, 0);
    check("forward: attention of v = 1 is 1 (softmax sums to 1)", err1, 1e-15);
    rig_free(&r);
}

/* cross_entropy: log V for uniform logits; masked mean vs a direct sum;
 * the rows of its gradient sum to 0; an all-zero mask gives 0. */
static void test_cross_entropy_forward(void)
{
    enum { B = 2, T = 3, R = B * T, V = 5 };
    Rig r;
    rig_init(&r, B, T);
    IrNode *flat = activation(&r, r.tokens, V, 0), *lg = activation(&r, r.tokens, V, 1.5);
    IrNode *ce0 = node(&r, IR_CROSS_ENTROPY, flat, r.targets, false, 1, 1);
    IrNode *ce = node(&r, IR_CROSS_ENTROPY, lg, r.targets, false, 1, 1);
    IrNode *one = cnst(&r, 1), *d = node(&r, IR_CE_GRAD, lg, r.targets, true, 1, V);
    d->in[2] = one;
    r.masked = true;
    for (int i = 0; i < R; i++)
        r.tgt[i] = (int32_t)(rng_next() % V), r.mask[i] = i % 3 != 1;
    rig_run(&r);
    double sum = 0, count = 0, rowsum = 0, masked = 0;
    for (int i = 0; i < R; i++) {
        const double *l = r.params[1] + i * V, *di = value(&r, d) + i * V;
        double z = 0, dsum = 0;
        for (int j = 0; j < V; j++)
            z += exp(l[j]), dsum += di[j];
        sum += r.mask[i] * (log(z) - l[r.tgt[i]]), count += r.mask[i];
        rowsum = fmax(rowsum, fabs(dsum));
        for (int j = 0; j < V && !r.mask[i]; j++)
            masked = fmax(masked, fabs(di[j]));
    }
    check("forward: cross_entropy of uniform logits = log V", rel(value(&r, ce0)[0], log(V)), EXACT_TOL);
    check("forward: masked cross_entropy vs direct formula", rel(value(&r, ce)[0], sum / count), EXACT_TOL);
    check("forward: cross_entropy_grad rows sum to 0", rowsum, 1e-15);
    check("forward: cross_entropy_grad of masked rows is 0", masked, 0);
    for (int i = 0; i < R; i++)
        r.mask[i] = 0;
    rig_run(&r);
    check("forward: cross_entropy with no token in the mask = 0",
          fabs(value(&r, ce)[0]) + fabs(value(&r, d)[0]), 0);
    rig_free(&r);
}

/* Reads back what was written to tmp (at most n - 1 bytes) and closes it. */
static size_t read_back(FILE *tmp, char *msg, size_t n)
{
    rewind(tmp);
    size_t k = fread(msg, 1, n - 1, tmp);
    msg[k] = 0;
    fclose(tmp);
    return k;
}

/* Runs r with stderr captured; passes if interp_run fails and the message
 * holds `want`. */
static void expect_error(Rig *r, const char *what, const char *want)
{
    fflush(stderr);
    FILE *tmp = tmpfile();
    int saved = dup(2);
    if (!tmp || saved < 0 || dup2(fileno(tmp), 2) < 0)
        die("cannot capture stderr");
    bool ok = rig_run(r);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char msg[512];
    size_t n = read_back(tmp, msg, sizeof msg);
    bool pass = !ok && strstr(msg, want);
    printf("%s %-52s %s", pass ? "ok  " : "FAIL", what, n ? msg : "(no message)\n");
    failures += !pass;
}

/* Runs r in a child process; passes if it aborts with an internal error
 * raised in interp.c: a shape bug must never compute something quietly. */
static void expect_die(Rig *r, const char *what)
{
    fflush(stdout);
    fflush(stderr);
    FILE *tmp = tmpfile();
    pid_t pid = tmp ? fork() : -1;
    if (pid < 0)
        die("cannot fork");
    if (pid == 0) {
        dup2(fileno(tmp), 2);
        rig_run(r);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    char msg[512];
    size_t n = read_back(tmp, msg, sizeof msg);
    bool pass = WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT && strstr(msg, "interp.c");
    printf("%s %-52s %s", pass ? "ok  " : "FAIL", what, n ? msg : "(no message)\n");
    failures += !pass;
}

/* Shapes that contradict their operands are internal bugs (die), even
 * where ir_verify lets them through. */
static void test_shape_bugs(void)
{
    Rig r;
    rig_init(&r, 1, 2);
    node(&r, IR_NEG, param(&r, 3, 4, 1), NULL, false, 1, 4); /* a [3,4] matrix negated into [4] */
    expect_die(&r, "die: unary op on a matrix with a [width] result");
    rig_free(&r);

    rig_init(&r, 1, 2);
    IrNode *q = activation(&r, r.tokens, 8, 1);
    IrNode *y = node(&r, IR_ATTENTION, q, q, true, 1, 8);
    y->in[2] = q, y->heads = 3;
    expect_die(&r, "die: attention of width 8 with 3 heads");
    rig_free(&r);

    rig_init(&r, 1, 2);
    IrNode *lg = activation(&r, r.tokens, 5, 1), *g = activation(&r, r.tokens, 1, 1);
    node(&r, IR_CE_GRAD, lg, r.targets, true, 1, 5)->in[2] = g;
    expect_die(&r, "die: cross_entropy_grad of a (B,T,1) gradient");
    rig_free(&r);
}

/* Token and target ids outside the vocabulary are input errors. */
static void test_id_errors(void)
{
    enum { B = 2, T = 2, V = 5 };
    Rig r;
    rig_init(&r, B, T);
    IrNode *table = param(&r, V, 3, 1);
    node(&r, IR_EMBED, r.tokens, table, true, 1, 3);
    memcpy(r.tok, (int32_t[]){1, 4, 0, 9}, sizeof(int32_t[4]));
    expect_error(&r, "error: embed of token id 9",
                 "token id 9 at batch 1, position 1 is out of range for a vocabulary of 5");
    r.tok[3] = -1;
    expect_error(&r, "error: embed of token id -1", "token id -1 at batch 1, position 1");
    rig_free(&r);

    for (int grad = 0; grad < 2; grad++) { /* cross_entropy, then its gradient */
        rig_init(&r, B, T);
        IrNode *lg = activation(&r, r.tokens, V, 1), *one = cnst(&r, 1);
        IrNode *x = node(&r, grad ? IR_CE_GRAD : IR_CROSS_ENTROPY, lg, r.targets, grad, 1, grad ? V : 1);
        x->in[2] = grad ? one : NULL;
        memcpy(r.tgt, (int32_t[]){0, 5, 1, 2}, sizeof(int32_t[4]));
        expect_error(&r, grad ? "error: cross_entropy_grad of target id 5" : "error: cross_entropy of target id 5",
                     "target id 5 at batch 0, position 1 is out of range for a vocabulary of 5");
        rig_free(&r);
    }
}

/* ---- (b) gradient ops against finite differences ---- */

/* silu_grad, gelu_grad and sign as d/dx of sum(silu(x)), sum(gelu(x)) and
 * sum(|x|), at points away from 0. */
static void grad_unary(void)
{
    enum { N = 16 };
    static const IrOp pairs[3][2] = {{IR_SILU, IR_SILU_GRAD}, {IR_GELU, IR_GELU_GRAD}, {IR_ABS, IR_SIGN}};
    static const char *names[3] = {"grad: silu_grad vs d silu", "grad: gelu_grad vs d gelu", "grad: sign vs d abs"};
    double ones[N];
    for (int i = 0; i < N; i++)
        ones[i] = 1;
    for (int k = 0; k < 3; k++) {
        Rig r;
        rig_init(&r, 1, 1);
        IrNode *x = param(&r, 1, N, 1), *f = unary(&r, pairs[k][0], x), *df = unary(&r, pairs[k][1], x);
        for (int i = 0; i < N; i++)
            r.params[0][i] = -3.9 + 0.52 * i; /* -3.9 .. 3.9, none within 0.26 of 0 */
        rig_run(&r);
        double *ana = copy_value(&r, df);
        check(names[k], fd_error(&r, f, ones, x, ana), FD_TOL);
        free(ana);
        rig_free(&r);
    }
}

/* matmul with W [out, in] (trans_b) and W [in, out]: dW by matmul_grad_w and
 * dx by the opposite matmul, against d sum(g * matmul(x, W)); and the adjoint
 * identity <matmul(x, W), g> = <x, dx>. */
static void grad_matmul(void)
{
    enum { B = 2, T = 3, R = B * T, IN = 4, OUT = 5 };
    for (int trans = 1; trans >= 0; trans--) {
        Rig r;
        rig_init(&r, B, T);
        IrNode *x = activation(&r, r.tokens, IN, 1), *g = activation(&r, r.targets, OUT, 1);
        IrNode *w = trans ? param(&r, OUT, IN, 1) : param(&r, IN, OUT, 1);
        IrNode *y = node(&r, IR_MATMUL, x, w, true, 1, OUT), *dx = node(&r, IR_MATMUL, g, w, true, 1, IN);
        y->trans_b = trans, dx->trans_b = !trans;
        IrNode *dw = trans ? node(&r, IR_MATMUL_GRAD_W, g, x, false, OUT, IN)
                           : node(&r, IR_MATMUL_GRAD_W, x, g, false, IN, OUT);
        rig_run(&r);
        double adj = adjoint_error(value(&r, y), data_of(&r, g), R * OUT, data_of(&r, x), value(&r, dx), R * IN);
        double *ana_w = copy_value(&r, dw), *ana_x = copy_value(&r, dx);
        double ew = fd_error(&r, y, data_of(&r, g), w, ana_w), ex = fd_error(&r, y, data_of(&r, g), x, ana_x);
        check(trans ? "grad: matmul_grad_w, W [out,in]" : "grad: matmul_grad_w, W [in,out]", ew, FD_TOL);
        check(trans ? "grad: matmul dx = g W, W [out,in]" : "grad: matmul dx = g W^T, W [in,out]", ex, FD_TOL);
        check(trans ? "adjoint: <x W^T, g> = <x, g W>" : "adjoint: <x W, g> = <x, g W^T>", adj, ADJ_TOL);
        free(ana_w);
        free(ana_x);
        rig_free(&r);
    }
}

/* embed_grad against d sum(g * embed(tokens, table)), with repeated and
 * unused token ids; <embed(t, table), g> = <table, embed_grad(t, g)>. */
static void grad_embed(void)
{
    enum { B = 2, T = 4, R = B * T, V = 6, D = 3 };
    Rig r;
    rig_init(&r, B, T);
    IrNode *table = param(&r, V, D, 1), *g = activation(&r, r.targets, D, 1);
    IrNode *y = node(&r, IR_EMBED, r.tokens, table, true, 1, D);
    IrNode *dt = node(&r, IR_EMBED_GRAD, r.tokens, g, false, V, D);
    memcpy(r.tok, (int32_t[R]){2, 5, 2, 0, 5, 5, 1, 2}, sizeof(int32_t[R])); /* 3 and 4 unused */
    rig_run(&r);
    double adj = adjoint_error(value(&r, y), data_of(&r, g), R * D, r.params[0], value(&r, dt), V * D);
    double *ana = copy_value(&r, dt);
    check("grad: embed_grad", fd_error(&r, y, data_of(&r, g), table, ana), FD_TOL);
    check("adjoint: <embed(t, E), g> = <E, embed_grad(t, g)>", adj, ADJ_TOL);
    free(ana);
    rig_free(&r);
}

/* rope_grad against d sum(g * rope(x)); <rope(x), y> = <x, rope_grad(y)>. */
static void grad_rope(void)
{
    enum { B = 2, T = 5, R = B * T, W = 8, H = 2 };
    Rig r;
    rig_init(&r, B, T);
    IrNode *x = activation(&r, r.tokens, W, 1), *g = activation(&r, r.targets, W, 1);
    IrNode *y = unary(&r, IR_ROPE, x), *dx = unary(&r, IR_ROPE_GRAD, g);
    y->heads = dx->heads = H;
    y->num = dx->num = 100;
    rig_run(&r);
    double adj = adjoint_error(value(&r, y), data_of(&r, g), R * W, data_of(&r, x), value(&r, dx), R * W);
    double *ana = copy_value(&r, dx);
    check("grad: rope_grad", fd_error(&r, y, data_of(&r, g), x, ana), FD_TOL);
    check("adjoint: <rope(x), y> = <x, rope_grad(y)>", adj, ADJ_TOL);
    free(ana);
    rig_free(&r);
}

/* attention_grad for q, k and v against d sum(g * attention(q, k, v)). */
static void grad_attention(void)
{
    enum { B = 2, T = 4, W = 8, H = 2 };
    static const char *names[3] = {"grad: attention_grad dq", "grad: attention_grad dk", "grad: attention_grad dv"};
    Rig r;
    rig_init(&r, B, T);
    IrNode *in[4];
    for (int k = 0; k < 4; k++)
        in[k] = activation(&r, r.tokens, W, 1);
    IrNode *y = node(&r, IR_ATTENTION, in[0], in[1], true, 1, W), *d[3];
    y->in[2] = in[2], y->heads = H;
    for (int w = 0; w < 3; w++) {
        d[w] = node(&r, IR_ATTENTION_GRAD, in[0], in[1], true, 1, W);
        d[w]->in[2] = in[2], d[w]->in[3] = in[3], d[w]->heads = H, d[w]->which = w;
    }
    rig_run(&r);
    double *ana[3];
    for (int w = 0; w < 3; w++)
        ana[w] = copy_value(&r, d[w]);
    for (int w = 0; w < 3; w++) {
        check(names[w], fd_error(&r, y, data_of(&r, in[3]), in[w], ana[w]), FD_TOL);
        free(ana[w]);
    }
    rig_free(&r);
}

/* cross_entropy_grad with g = 0.7 against d (0.7 cross_entropy), with a
 * mask and without. */
static void grad_cross_entropy(void)
{
    enum { B = 2, T = 3, R = B * T, V = 5 };
    for (int masked = 1; masked >= 0; masked--) {
        Rig r;
        rig_init(&r, B, T);
        IrNode *lg = activation(&r, r.tokens, V, 1.5), *g = cnst(&r, 0.7);
        IrNode *ce = node(&r, IR_CROSS_ENTROPY, lg, r.targets, false, 1, 1);
        IrNode *d = node(&r, IR_CE_GRAD, lg, r.targets, true, 1, V);
        d->in[2] = g;
        r.masked = masked;
        for (int i = 0; i < R; i++)
            r.tgt[i] = (int32_t)(rng_next() % V), r.mask[i] = i % 3 != 1;
        rig_run(&r);
        double *ana = copy_value(&r, d);
        check(masked ? "grad: cross_entropy_grad, mask 1 0 1 1 0 1" : "grad: cross_entropy_grad, no mask",
              fd_error(&r, ce, (double[]){0.7}, lg, ana), FD_TOL);
        free(ana);
        rig_free(&r);
    }
}

int main(void)
{
    test_unary_forward();
    test_broadcast_forward();
    test_nan_forward();
    test_rmsnorm_forward();
    test_matmul_embed_forward();
    test_rope_forward();
    test_attention_forward();
    test_cross_entropy_forward();
    test_id_errors();
    test_shape_bugs();
    grad_unary();
    grad_matmul();
    grad_embed();
    grad_rope();
    grad_attention();
    grad_cross_entropy();
    if (failures)
        printf("interp_test: %d check(s) FAILED\n", failures);
    else
        printf("interp_test: all checks passed\n");
    return failures ? 1 : 0;
}
