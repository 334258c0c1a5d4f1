/* interp.c - fp64 reference interpreter of the tensor IR (interp.h).
 * interp_run evaluates the nodes in graph order with plain loops; each op's
 * loop sits under the formula it computes (ir.h has the semantics).  Node
 * shapes are taken from the graph; one that contradicts its operands is an
 * internal bug (die).  Bad run-time input (a token or target id outside the
 * vocabulary) is reported at the op's source line and makes interp_run
 * return false.  Memory: one malloc'd buffer per node, freed by interp_free. */
#include "ir/interp.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* One run: the interpreter being filled, its inputs, and where errors go. */
typedef struct Run {
    Interp *it;
    const InterpInput *in;
    Diag diag;
} Run;

/* An internal inconsistency at node x: abort with this C file and line. */
#define CHECK(cond, x, what)                                                                              \
    do {                                                                                                  \
        if (!(cond))                                                                                      \
            die("interp: %%%d (%s): %s", (x)->id, ir_op_info[(x)->op].text, what);                        \
    } while (0)

static const double GELU_C = 0.79788456080286535588; /* sqrt(2 / pi) */

/* Rows of a node's value: B*T for an activation, else its own row count. */
static int64_t nrows(const Interp *it, const IrNode *n)
{
    return n->tok ? (int64_t)it->B * it->T : n->rows;
}

static const double *val(const Run *R, const IrNode *n)
{
    const double *v = R->it->val[n->id];
    if (!v)
        die("interp: %%%d used before it was computed", n->id);
    return v;
}

/* ---- elementwise ops (ops.h elementwise = 1) ---- */

static double sigmoid(double v)
{
    if (v >= 0)
        return 1 / (1 + exp(-v));
    double e = exp(v);
    return e / (1 + e);
}

/* Unary elementwise ops, and EXPAND (whose loop does the broadcast). */
static double unary(const IrNode *x, double v)
{
    switch (x->op) {
    case IR_NEG: return -v;
    case IR_POWC: return pow(v, x->num);
    case IR_EXP: return exp(v);
    case IR_LOG: return log(v);
    case IR_TANH: return tanh(v);
    case IR_SIGMOID: return sigmoid(v);
    case IR_SILU: return v * sigmoid(v);
    case IR_GELU: return 0.5 * v * (1 + tanh(GELU_C * (v + 0.044715 * v * v * v)));
    case IR_SQRT: return sqrt(v);
    case IR_RSQRT: return 1 / sqrt(v);
    case IR_ABS: return fabs(v);
    case IR_SQUARE: return v * v;
    case IR_EXPAND: return v;
    case IR_SIGN: return (double)((v > 0) - (v < 0));
    case IR_SILU_GRAD: { /* d/dv v s(v) = s (1 + v (1 - s)) */
        double s = sigmoid(v);
        return s * (1 + v * (1 - s));
    }
    case IR_GELU_GRAD: { /* u = c (v + k v^3): 0.5 (1 + tanh u) + 0.5 v (1 - tanh^2 u) c (1 + 3k v^2) */
        double th = tanh(GELU_C * (v + 0.044715 * v * v * v));
        return 0.5 * (1 + th) + 0.5 * v * (1 - th * th) * GELU_C * (1 + 3 * 0.044715 * v * v);
    }
    default: die("interp: %s is not a unary elementwise op", ir_op_info[x->op].text);
    }
}

static double binary(const IrNode *x, double a, double b)
{
    switch (x->op) {
    case IR_ADD: return a + b;
    case IR_SUB: return a - b;
    case IR_MUL: return a * b;
    case IR_DIV: return a / b;
    case IR_EQ_MASK: return a == b ? 1.0 : 0.0;
    default: die("interp: %s is not a binary elementwise op", ir_op_info[x->op].text);
    }
}

/* An operand as seen from the result: element (r, c) is v[r * rs + c * cs].
 * rs = 0 broadcasts a one-row non-token operand over the rows, cs = 0 a
 * width-1 operand over the columns. */
typedef struct Operand {
    const double *v;
    int64_t rs, cs;
} Operand;

static Operand operand(const Run *R, const IrNode *x, const IrNode *a)
{
    CHECK(a->width == x->width || a->width == 1, x, "operand width does not broadcast to the result");
    bool row_bcast = !a->tok && a->rows == 1;
    CHECK(row_bcast || (a->tok == x->tok && nrows(R->it, a) == nrows(R->it, x)), x,
          "operand rows do not broadcast to the result");
    return (Operand){val(R, a), row_bcast ? 0 : a->width, a->width == 1 ? 0 : 1};
}

/* Every elementwise op: y[r][c] = f(a[r][c]) or f(a[r][c], b[r][c]), with
 * the broadcasting of operand(). */
static void run_elementwise(const Run *R, const IrNode *x, double *y)
{
    const IrNode *a = x->in[0], *b = x->in[1];
    bool two = ir_op_info[x->op].arity == 2;
    if (two) {
        CHECK(x->tok == (a->tok || b->tok), x, "result is a token value iff an operand is");
        CHECK(x->width == (a->width > b->width ? a->width : b->width), x, "result width is not the operands'");
    } else if (x->op == IR_EXPAND) {
        CHECK(a->width == 1 && a->tok == x->tok && nrows(R->it, a) == nrows(R->it, x), x,
              "expand needs a width-1 operand with the result's rows");
    } else {
        CHECK(a->width == x->width && a->tok == x->tok && nrows(R->it, a) == nrows(R->it, x), x,
              "unary op changes the shape");
    }
    Operand A = operand(R, x, a), B = two ? operand(R, x, b) : A;
    int64_t rows = nrows(R->it, x), W = x->width;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < W; c++) {
            double av = A.v[r * A.rs + c * A.cs];
            y[r * W + c] = two ? binary(x, av, B.v[r * B.rs + c * B.cs]) : unary(x, av);
        }
}

/* ---- reductions ---- */

/* max(a, b) that keeps a NaN from either side (fmax drops it), so that a
 * NaN reaching MAX shows in the result as it does for every other op. */
static double max_nan(double a, double b)
{
    return isnan(a) || b <= a ? a : b;
}

/* MEAN SUM MAX over the last dimension: y[r] = f(a[r][0..w)). */
static void run_reduce(const Run *R, const IrNode *x, double *y)
{
    const IrNode *a = x->in[0];
    CHECK(x->width == 1 && a->tok == x->tok && nrows(R->it, a) == nrows(R->it, x), x,
          "reduction shape is not (rows of the operand, 1)");
    const double *av = val(R, a);
    int64_t rows = nrows(R->it, x), W = a->width;
    for (int64_t r = 0; r < rows; r++) {
        const double *row = av + r * W;
        double acc = x->op == IR_MAX ? -INFINITY : 0;
        for (int64_t c = 0; c < W; c++)
            acc = x->op == IR_MAX ? max_nan(acc, row[c]) : acc + row[c];
        y[r] = x->op == IR_MEAN ? acc / (double)W : acc;
    }
}

/* SUM_ROWS: y[c] = sum over all rows r of a[r][c]. */
static void run_sum_rows(const Run *R, const IrNode *x, double *y)
{
    const IrNode *a = x->in[0];
    CHECK(!x->tok && x->rows == 1 && x->width == a->width, x, "sum_rows result is not [width]");
    const double *av = val(R, a);
    int64_t rows = nrows(R->it, a), W = a->width;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < W; c++)
            y[c] += av[r * W + c];
}

/* ---- matrix products ---- */

/* MATMUL: x (rows, in), y (rows, out).
 *   trans_b: W [out, in], y[r][o] = sum_i x[r][i] W[o][i]
 *   else:    W [in, out], y[r][o] = sum_i x[r][i] W[i][o] */
static void run_matmul(const Run *R, const IrNode *x, double *y)
{
    const IrNode *a = x->in[0], *w = x->in[1];
    int64_t in = x->trans_b ? w->width : w->rows, out = x->trans_b ? w->rows : w->width;
    CHECK(!w->tok, x, "matmul weight is a token value");
    CHECK(a->width == in && x->width == out, x, "matmul shapes do not agree");
    CHECK(a->tok == x->tok && nrows(R->it, a) == nrows(R->it, x), x, "matmul changes the rows");
    const double *av = val(R, a), *wv = val(R, w);
    int64_t rows = nrows(R->it, x);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t o = 0; o < out; o++) {
            double s = 0;
            for (int64_t i = 0; i < in; i++)
                s += av[r * in + i] * (x->trans_b ? wv[o * in + i] : wv[i * out + o]);
            y[r * out + o] = s;
        }
}

/* MATMUL_GRAD_W: y [wa, wb], y[i][j] = sum over rows r of a[r][i] b[r][j]. */
static void run_matmul_grad_w(const Run *R, const IrNode *x, double *y)
{
    const IrNode *a = x->in[0], *b = x->in[1];
    CHECK(nrows(R->it, a) == nrows(R->it, b), x, "operands differ in rows");
    CHECK(!x->tok && x->rows == a->width && x->width == b->width, x, "result is not [wa, wb]");
    const double *av = val(R, a), *bv = val(R, b);
    int64_t rows = nrows(R->it, a), WA = a->width, WB = b->width;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < WA; i++)
            for (int64_t j = 0; j < WB; j++)
                y[i * WB + j] += av[r * WA + i] * bv[r * WB + j];
}

/* ---- token ids ---- */

/* Checks that every id in `ids` (B*T rows of width 1) is in [0, n); reports
 * the first one that is not at x's source line. */
static bool ids_in_range(Run *R, const IrNode *x, const IrNode *ids, int64_t n)
{
    CHECK(ids->tok && ids->width == 1, x, "ids are not (B,T,1)");
    const double *v = val(R, ids);
    int64_t rows = nrows(R->it, ids);
    for (int64_t r = 0; r < rows; r++)
        if (!(v[r] >= 0 && v[r] < (double)n)) { /* NaN fails too */
            diag_error(&R->diag, x->loc,
                       "%s id %.17g at batch %lld, position %lld is out of range for a vocabulary of %lld",
                       ids->op == IR_INPUT_TARGETS ? "target" : "token", v[r], (long long)(r / R->it->T),
                       (long long)(r % R->it->T), (long long)n);
            return false;
        }
    return true;
}

/* EMBED: table [vocab, d], y[r] = table[ids[r]]. */
static bool run_embed(Run *R, const IrNode *x, double *y)
{
    const IrNode *ids = x->in[0], *table = x->in[1];
    CHECK(!table->tok && x->tok && x->width == table->width, x, "embed result is not (B,T,d)");
    if (!ids_in_range(R, x, ids, table->rows))
        return false;
    const double *iv = val(R, ids), *tv = val(R, table);
    int64_t rows = nrows(R->it, x), W = x->width;
    for (int64_t r = 0; r < rows; r++)
        memcpy(y + r * W, tv + (int64_t)iv[r] * W, (size_t)W * sizeof *y);
    return true;
}

/* EMBED_GRAD: y [vocab, d], y[v] = sum of g[r] over the rows with ids[r] = v. */
static bool run_embed_grad(Run *R, const IrNode *x, double *y)
{
    const IrNode *ids = x->in[0], *g = x->in[1];
    CHECK(g->tok && !x->tok && x->width == g->width, x, "embed_grad result is not [vocab, d]");
    if (!ids_in_range(R, x, ids, x->rows))
        return false;
    const double *iv = val(R, ids), *gv = val(R, g);
    int64_t rows = nrows(R->it, g), W = x->width;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < W; c++)
            y[(int64_t)iv[r] * W + c] += gv[r * W + c];
    return true;
}

/* ---- rotary embedding ---- */

/* ROPE (sign +1) and ROPE_GRAD (sign -1): per head h of size hd and pair
 * (i, i + hd/2), i < hd/2, of the token at position t = r % T, with
 * theta = sign * t * base^(-2i/hd):
 *   y[i] = a cos theta - b sin theta,  y[i + hd/2] = a sin theta + b cos theta
 * where a = x[i], b = x[i + hd/2] (offsets within the head). */
static void run_rope(const Run *R, const IrNode *x, double *y, double sign)
{
    const IrNode *a = x->in[0];
    CHECK(x->heads >= 1 && x->width % x->heads == 0 && (x->width / x->heads) % 2 == 0, x,
          "width is not heads x an even head size");
    CHECK(a->tok && x->tok && a->width == x->width, x, "rope changes the shape");
    const double *xv = val(R, a);
    int64_t rows = nrows(R->it, x), W = x->width, hd = W / x->heads, half = hd / 2;
    for (int64_t r = 0; r < rows; r++) {
        double t = (double)(r % R->it->T);
        for (int64_t h = 0; h < x->heads; h++)
            for (int64_t i = 0; i < half; i++) {
                double theta = sign * t * pow(x->num, -2.0 * (double)i / (double)hd);
                double c = cos(theta), s = sin(theta);
                int64_t lo = r * W + h * hd + i, hi = lo + half;
                y[lo] = xv[lo] * c - xv[hi] * s;
                y[hi] = xv[lo] * s + xv[hi] * c;
            }
    }
}

/* ---- attention ---- */

/* Shape of one attention op: heads of size hd within rows of width W. */
typedef struct Heads {
    int64_t W, hd;
    double scale; /* 1 / sqrt(hd) */
} Heads;

static Heads attention_shape(const IrNode *x, int nin)
{
    CHECK(x->heads >= 1 && x->width % x->heads == 0, x, "width is not a multiple of heads");
    CHECK(x->tok, x, "attention result is not a token value");
    for (int k = 0; k < nin; k++)
        CHECK(x->in[k]->tok && x->in[k]->width == x->width, x, "operand is not (B,T,width)");
    int64_t hd = x->width / x->heads;
    return (Heads){x->width, hd, 1 / sqrt((double)hd)};
}

/* Causal softmax of one head of one sequence: p[t][u] = softmax over u <= t
 * of q[t].k[u] * scale (max subtracted first), 0 for u > t.  q and k point at
 * the head's first column in row 0 of the sequence. */
static void attention_probs(double *p, const double *q, const double *k, int T, const Heads *H)
{
    for (int t = 0; t < T; t++) {
        double *pt = p + (int64_t)t * T, m = -INFINITY, z = 0;
        for (int u = 0; u <= t; u++) {
            double s = 0;
            for (int64_t i = 0; i < H->hd; i++)
                s += q[t * H->W + i] * k[u * H->W + i];
            pt[u] = s * H->scale;
            m = fmax(m, pt[u]);
        }
        for (int u = 0; u <= t; u++)
            z += pt[u] = exp(pt[u] - m);
        for (int u = 0; u < T; u++)
            pt[u] = u <= t ? pt[u] / z : 0;
    }
}

/* ATTENTION: per sequence b and head h, out[t] = sum_{u <= t} p[t][u] v[u]. */
static void run_attention(const Run *R, const IrNode *x, double *y)
{
    Heads H = attention_shape(x, 3);
    const double *q = val(R, x->in[0]), *k = val(R, x->in[1]), *v = val(R, x->in[2]);
    int T = R->it->T;
    double *p = xmalloc((size_t)T * (size_t)T * sizeof *p);
    for (int64_t b = 0; b < R->it->B; b++)
        for (int64_t h = 0; h < x->heads; h++) {
            int64_t base = b * T * H.W + h * H.hd;
            attention_probs(p, q + base, k + base, T, &H);
            for (int t = 0; t < T; t++)
                for (int64_t i = 0; i < H.hd; i++) {
                    double s = 0;
                    for (int u = 0; u <= t; u++)
                        s += p[t * T + u] * v[base + u * H.W + i];
                    y[base + t * H.W + i] = s;
                }
        }
    free(p);
}

/* Gradient of the scores of one head: with dp[t][u] = g[t].v[u],
 * ds[t][u] = p[t][u] (dp[t][u] - sum_u' p[t][u'] dp[t][u']). */
static void attention_dscores(double *ds, const double *p, const double *g, const double *v, int T,
                              const Heads *H)
{
    for (int t = 0; t < T; t++) {
        double dot = 0;
        for (int u = 0; u <= t; u++) {
            double dp = 0;
            for (int64_t i = 0; i < H->hd; i++)
                dp += g[t * H->W + i] * v[u * H->W + i];
            ds[t * T + u] = dp;
            dot += p[t * T + u] * dp;
        }
        for (int u = 0; u < T; u++)
            ds[t * T + u] = u <= t ? p[t * T + u] * (ds[t * T + u] - dot) : 0;
    }
}

/* ATTENTION_GRAD(q, k, v, g), per sequence and head:
 *   which 0: dq[t] = scale sum_u ds[t][u] k[u]
 *   which 1: dk[u] = scale sum_t ds[t][u] q[t]
 *   which 2: dv[u] = sum_t p[t][u] g[t] */
static void run_attention_grad(const Run *R, const IrNode *x, double *y)
{
    Heads H = attention_shape(x, 4);
    CHECK(x->which >= 0 && x->which <= 2, x, "which is not 0, 1 or 2");
    const double *q = val(R, x->in[0]), *k = val(R, x->in[1]), *v = val(R, x->in[2]), *g = val(R, x->in[3]);
    int T = R->it->T;
    double *p = xmalloc((size_t)T * (size_t)T * sizeof *p), *ds = xmalloc((size_t)T * (size_t)T * sizeof *ds);
    for (int64_t b = 0; b < R->it->B; b++)
        for (int64_t h = 0; h < x->heads; h++) {
            int64_t base = b * T * H.W + h * H.hd;
            attention_probs(p, q + base, k + base, T, &H);
            attention_dscores(ds, p, g + base, v + base, T, &H);
            /* which 2 weighs g by p; which 0 and 1 weigh k or q by ds (transposed for dk). */
            const double *wt = x->which == 2 ? p : ds, *src = x->which == 0 ? k : x->which == 1 ? q : g;
            double scale = x->which == 2 ? 1 : H.scale;
            for (int o = 0; o < T; o++) /* output row: t for dq, u for dk and dv */
                for (int64_t i = 0; i < H.hd; i++) {
                    double s = 0;
                    for (int j = 0; j < T; j++)
                        s += (x->which == 0 ? wt[o * T + j] : wt[j * T + o]) * src[base + j * H.W + i];
                    y[base + o * H.W + i] = s * scale;
                }
        }
    free(p);
    free(ds);
}

/* ---- cross-entropy ---- */

static double mask_at(const Run *R, int64_t r)
{
    return R->in->mask ? R->in->mask[r] : 1.0;
}

/* log sum_j exp(l[j]), with the maximum subtracted first. */
static double logsumexp(const double *l, int64_t n)
{
    double m = -INFINITY, z = 0;
    for (int64_t j = 0; j < n; j++)
        m = fmax(m, l[j]);
    for (int64_t j = 0; j < n; j++)
        z += exp(l[j] - m);
    return m + log(z);
}

/* CROSS_ENTROPY: with count = sum_r mask[r] (0 gives a loss of 0),
 *   y = sum_r mask[r] (logsumexp(logits[r]) - logits[r][target[r]]) / count.
 * Rows with mask 0 are skipped, so their logits cannot turn the sum into NaN. */
static bool run_cross_entropy(Run *R, const IrNode *x, double *y)
{
    const IrNode *lg = x->in[0], *tg = x->in[1];
    CHECK(lg->tok && !x->tok && x->rows == 1 && x->width == 1, x, "cross_entropy is not logits -> scalar");
    if (!ids_in_range(R, x, tg, lg->width))
        return false;
    const double *l = val(R, lg), *t = val(R, tg);
    int64_t rows = nrows(R->it, lg), V = lg->width;
    double sum = 0, count = 0;
    for (int64_t r = 0; r < rows; r++) {
        double m = mask_at(R, r);
        count += m;
        if (m != 0)
            sum += m * (logsumexp(l + r * V, V) - l[r * V + (int64_t)t[r]]);
    }
    y[0] = count != 0 ? sum / count : 0;
    return true;
}

/* CE_GRAD(logits, targets, g), g a scalar:
 *   y[r][j] = g mask[r] (softmax(logits[r])[j] - [j == target[r]]) / count. */
static bool run_ce_grad(Run *R, const IrNode *x, double *y)
{
    const IrNode *lg = x->in[0], *tg = x->in[1], *gn = x->in[2];
    CHECK(x->tok && x->width == lg->width && lg->tok, x, "cross_entropy_grad is not (B,T,V)");
    CHECK(!gn->tok && gn->rows == 1 && gn->width == 1, x, "incoming gradient is not a scalar");
    if (!ids_in_range(R, x, tg, lg->width))
        return false;
    const double *l = val(R, lg), *t = val(R, tg);
    int64_t rows = nrows(R->it, lg), V = lg->width;
    double count = 0, gv = val(R, gn)[0];
    for (int64_t r = 0; r < rows; r++)
        count += mask_at(R, r);
    if (count == 0)
        return true; /* no token in the loss: y stays 0 */
    for (int64_t r = 0; r < rows; r++) {
        double w = gv * mask_at(R, r) / count;
        if (w == 0)
            continue;
        double lse = logsumexp(l + r * V, V);
        for (int64_t j = 0; j < V; j++)
            y[r * V + j] = w * exp(l[r * V + j] - lse);
        y[r * V + (int64_t)t[r]] -= w;
    }
    return true;
}

/* ---- driver ---- */

/* Leaves: token ids as doubles, a copy of a parameter, a constant. */
static void run_leaf(const Run *R, const IrNode *x, double *y)
{
    const InterpInput *in = R->in;
    int64_t n = nrows(R->it, x) * x->width;
    switch (x->op) {
    case IR_INPUT_TOKENS:
    case IR_INPUT_TARGETS: {
        const int32_t *ids = x->op == IR_INPUT_TOKENS ? in->tokens : in->targets;
        CHECK(x->tok && x->width == 1, x, "ids are not (B,T,1)");
        if (!ids)
            die("interp_run: the graph reads %s but none were given", ir_op_info[x->op].text);
        for (int64_t r = 0; r < n; r++)
            y[r] = ids[r];
        break;
    }
    case IR_PARAM:
        CHECK(x->param && !x->tok && x->param->numel == n, x, "parameter size is not rows x width");
        if (!in->params || !in->params[x->param->index])
            die("interp_run: no values for parameter %s", x->param->name);
        memcpy(y, in->params[x->param->index], (size_t)n * sizeof *y);
        break;
    case IR_CONST:
        CHECK(!x->tok && n == 1, x, "constant is not a scalar");
        y[0] = x->num;
        break;
    default: die("interp: %s is not a leaf", ir_op_info[x->op].text);
    }
}

/* Computes node x into y (zeroed, interp_numel(x) doubles). */
static bool run_node(Run *R, const IrNode *x, double *y)
{
    for (int k = 0; k < ir_op_info[x->op].arity; k++)
        CHECK(x->in[k] && x->in[k]->id < x->id, x, "operand missing or not before its use");
    if (ir_op_info[x->op].elementwise) {
        run_elementwise(R, x, y);
        return true;
    }
    if (ir_op_info[x->op].reduction) {
        run_reduce(R, x, y);
        return true;
    }
    switch (x->op) {
    case IR_INPUT_TOKENS: case IR_INPUT_TARGETS: case IR_PARAM: case IR_CONST: run_leaf(R, x, y); break;
    case IR_MATMUL: run_matmul(R, x, y); break;
    case IR_EMBED: return run_embed(R, x, y);
    case IR_ROPE: run_rope(R, x, y, +1); break;
    case IR_ATTENTION: run_attention(R, x, y); break;
    case IR_CROSS_ENTROPY: return run_cross_entropy(R, x, y);
    case IR_SUM_ROWS: run_sum_rows(R, x, y); break;
    case IR_MATMUL_GRAD_W: run_matmul_grad_w(R, x, y); break;
    case IR_EMBED_GRAD: return run_embed_grad(R, x, y);
    case IR_ROPE_GRAD: run_rope(R, x, y, -1); break;
    case IR_ATTENTION_GRAD: run_attention_grad(R, x, y); break;
    case IR_CE_GRAD: return run_ce_grad(R, x, y);
    default: die("interp: no rule for op %s", ir_op_info[x->op].text);
    }
    return true;
}

bool interp_run(Interp *it, const IrGraph *g, const InterpInput *in)
{
    if (in->B < 1 || in->T < 1)
        die("interp_run: empty batch %d x %d", in->B, in->T);
    *it = (Interp){.g = g, .B = in->B, .T = in->T, .val = xcalloc((size_t)g->nodes.n + 1, sizeof(double *))};
    Run R = {.it = it, .in = in};
    diag_init(&R.diag, stderr);
    for (int i = 0; i < g->nodes.n; i++) {
        const IrNode *x = g->nodes.v[i];
        CHECK(x->id == i && x->rows >= 1 && x->width >= 1, x, "bad id or empty shape");
        it->val[i] = xcalloc((size_t)interp_numel(it, x), sizeof(double));
        if (!run_node(&R, x, it->val[i]))
            return false;
    }
    return true;
}

const double *interp_value(const Interp *it, const IrNode *n)
{
    if (n->id < 0 || n->id >= it->g->nodes.n || !it->val[n->id])
        die("interp_value: %%%d has no value", n->id);
    return it->val[n->id];
}

int64_t interp_numel(const Interp *it, const IrNode *n)
{
    return nrows(it, n) * n->width;
}

void interp_free(Interp *it)
{
    if (it->val && it->g)
        for (int i = 0; i < it->g->nodes.n; i++)
            free(it->val[i]);
    free(it->val);
    it->val = NULL;
}
