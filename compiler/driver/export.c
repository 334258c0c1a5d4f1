/* export.c - `strata export`: a Strata checkpoint as a Hugging Face
 * LlamaForCausalLM directory (config.json + model.safetensors, and the
 * tokenizer as tokenizer.json + tokenizer_config.json).
 * Entry point export_main (export.h).  The model is resolved to IR (no
 * autodiff) and its LLaMA structure is recognised in the graph, op by op
 * (recognise): the token embedding; per block x = x + attn(norm1(x)) and
 * x = x + swiglu(norm2(x)) with RMSNorm (one eps), RoPE (half-split pairs,
 * as HF's rotate_half, so q/k rows need no permutation), q/k/v/o and
 * gate/up/down projections; a final RMSNorm and a linear head.  Scales
 * fold into weights, exactly in real arithmetic:
 *   - a product of constants, learned scalars and per-channel vectors on a
 *     norm's output folds into that norm's gain (LNS's 1/sqrt(l), a learned
 *     depth scale: its trained value is a constant of the checkpoint);
 *   - the same on a branch's output folds into the rows of o_proj or
 *     down_proj, diag(s) W (LayerScale), and on the logits into lm_head.
 * Anything else is refused with the block and what differs (Post-LN,
 * DeepNorm's residual scale, Peri-LN's output norms, DyT, ...).  A head
 * that is the embedding table (linear(..., tied = tok_embeddings)) is
 * written once, with tie_word_embeddings.  The tokenizer: --tokenizer,
 * --gpt2 or --bytes, else the one the checkpoint's training recorded.
 * Memory: the IR lives in its arena; parameter values read from the
 * checkpoint and the exported tensors are malloc'd here and freed here. */
#define _GNU_SOURCE /* asprintf */
#include "driver/export.h"

#include "cmd/commands.h"

#include "front/ast.h"
#include "ir/ir.h"
#include "store/safetensors.h"
#include "store/atomic_file.h"
#include "core/util.h"
#include "resolve/sema.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_FACTORS 8

/* A product of scales: c times every parameter in p (a learned scalar, or
 * a per-channel vector as wide as what it scales). */
typedef struct Factors {
    double c;
    const IrParam *p[MAX_FACTORS];
    int n;
} Factors;

typedef struct Linear {
    const IrParam *w;  /* [out, in] when trans_b (HF's Linear layout), else [in, out] */
    bool trans_b;
} Linear;

typedef struct Norm {
    double eps;
    Factors gain;      /* the norm's gain times every scale on its output */
} Norm;

typedef struct Layer {
    double l;                      /* the block's loop value, for messages */
    Norm attn_norm, mlp_norm;      /* input_layernorm, post_attention_layernorm */
    Linear q, k, v, o, gate, up, down;
    Factors o_scale, down_scale;   /* per output channel of o_proj / down_proj */
    int heads;
    double theta;                  /* RoPE base */
} Layer;

typedef struct Llama {
    const IrParam *embed;          /* [vocab, d] */
    Layer *layers;                 /* (L) */
    int L;
    Norm norm;                     /* model.norm */
    Linear head;
    Factors head_scale;            /* per logit */
    int64_t d, ffn, vocab;
    int heads;
    double theta, eps;
} Llama;

/* The recogniser's state: the graph, the block being matched and the
 * first reason the model is not LLaMA. */
typedef struct Rec {
    const IrGraph *g;
    double l;
    char why[512];
} Rec;

__attribute__((format(printf, 2, 3))) static bool fail(Rec *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->why, sizeof r->why, fmt, ap);
    va_end(ap);
    return false;
}

/* --- recognising the structure --------------------------------------------- */

/* Splits the product n into constants (f->c), parameters (scalars or
 * `width`-wide vectors, f->p) and token-valued factors (tok, at most 4):
 * walks MUL, NEG and division by a constant; `stop` and every other op are
 * leaves.  False when a leaf is none of those (a matrix, a vector of
 * another width, too many factors). */
static bool split_product(const IrNode *n, const IrNode *stop, int64_t width, Factors *f, const IrNode **tok,
                          int *ntok)
{
    if (n != stop) {
        if (n->op == IR_MUL)
            return split_product(n->in[0], stop, width, f, tok, ntok) &&
                   split_product(n->in[1], stop, width, f, tok, ntok);
        if (n->op == IR_NEG) {
            f->c = -f->c;
            return split_product(n->in[0], stop, width, f, tok, ntok);
        }
        if (n->op == IR_DIV && n->in[1]->op == IR_CONST && n->in[1]->num != 0) {
            f->c /= n->in[1]->num;
            return split_product(n->in[0], stop, width, f, tok, ntok);
        }
        if (n->op == IR_CONST) {
            f->c *= n->num;
            return true;
        }
        if (n->op == IR_PARAM) {
            const IrParam *p = n->param;
            if (f->n >= MAX_FACTORS || !(p->ndim == 0 || (p->ndim == 1 && p->dims[0] == width)))
                return false;
            f->p[f->n++] = p;
            return true;
        }
    }
    if (!n->tok || *ntok >= 4)
        return false;
    tok[(*ntok)++] = n;
    return true;
}

/* Whether op occurs in the token-valued subgraph of n above stop (a few levels). */
static bool contains_op(const IrNode *n, const IrNode *stop, IrOp op, int depth)
{
    if (!n || n == stop || depth > 8 || !n->tok)
        return false;
    if (n->op == op)
        return true;
    for (int i = 0; i < ir_op_info[n->op].arity; i++)
        if (contains_op(n->in[i], stop, op, depth + 1))
            return true;
    return false;
}

/* The RSQRT factor of n if n is a product with one (an RMSNorm's shape). */
static const IrNode *rsqrt_factor(const IrNode *n, int64_t width, const IrNode **other)
{
    Factors f = {.c = 1};
    const IrNode *tok[4];
    int nt = 0;
    if (!split_product(n, NULL, width, &f, tok, &nt) || nt != 2)
        return NULL;
    for (int i = 0; i < 2; i++)
        if (tok[i]->op == IR_RSQRT) {
            *other = tok[1 - i];
            return tok[i];
        }
    return NULL;
}

/* n = x * rsqrt(mean(square(x)) + eps) * factors, x the residual stream;
 * `what` names n in messages ("block 2's attention input"). */
static bool match_norm(Rec *r, const IrNode *n, const IrNode *x, int64_t width, Norm *out, const char *what)
{
    if (n == x)
        return fail(r, "%s is not normalised (LLaMA puts an RMSNorm before each branch)", what);
    Factors f = {.c = 1};
    const IrNode *tok[4], *rs = NULL;
    int nt = 0, nx = 0;
    bool ok = split_product(n, x, width, &f, tok, &nt);
    for (int i = 0; ok && i < nt; i++) {
        if (tok[i] == x)
            nx++;
        else if (tok[i]->op == IR_RSQRT && !rs)
            rs = tok[i];
    }
    if (ok && nt == 2 && nx == 1 && rs && rs->in[0]->op == IR_ADD) {
        const IrNode *m = rs->in[0]->in[0], *e = rs->in[0]->in[1];
        if (m->op == IR_CONST)
            m = rs->in[0]->in[1], e = rs->in[0]->in[0];
        const IrNode *sq = m->op == IR_MEAN ? m->in[0] : NULL;
        bool square = sq && ((sq->op == IR_SQUARE && sq->in[0] == x) ||
                             (sq->op == IR_POWC && sq->num == 2 && sq->in[0] == x) ||
                             (sq->op == IR_MUL && sq->in[0] == x && sq->in[1] == x));
        if (e->op == IR_CONST && e->num > 0 && square) {
            out->eps = e->num;
            out->gain = f;
            return true;
        }
    }
    if (contains_op(n, x, IR_TANH, 0))
        return fail(r, "%s is a tanh, not an RMSNorm (DyT)", what);
    if (contains_op(n, x, IR_SUB, 0))
        return fail(r, "%s subtracts something (a LayerNorm or a bias?), not an RMSNorm", what);
    return fail(r, "%s is not an RMSNorm of the residual stream, x * rsqrt(mean(square(x)) + eps) * g times "
                   "constant or per-channel scales",
                what);
}

/* A MATMUL node's weight as a Linear; false if the weight is computed. */
static bool as_linear(const IrNode *mm, Linear *out)
{
    if (mm->op != IR_MATMUL || mm->in[1]->op != IR_PARAM || mm->in[1]->param->ndim != 2)
        return false;
    out->w = mm->in[1]->param;
    out->trans_b = mm->trans_b;
    return true;
}

/* h = silu(gate(n)) * up(n); sets *n to the shared input. */
static bool match_swiglu(const IrNode *h, Layer *ly, const IrNode **n)
{
    if (h->op != IR_MUL)
        return false;
    const IrNode *a = h->in[0], *b = h->in[1];
    if (b->op == IR_SILU)
        a = h->in[1], b = h->in[0];
    if (a->op != IR_SILU || !as_linear(a->in[0], &ly->gate) || !as_linear(b, &ly->up) ||
        a->in[0]->in[0] != b->in[0])
        return false;
    *n = b->in[0];
    return true;
}

/* Whether n is the stream times a constant (DeepNorm's alpha x); *c the constant. */
static bool scaled_stream(const IrNode *n, double *c)
{
    if (n->op != IR_MUL)
        return false;
    for (int i = 0; i < 2; i++)
        if (n->in[i]->op == IR_CONST && n->in[1 - i]->tok && n->in[1 - i]->op != IR_MATMUL) {
            *c = n->in[i]->num;
            return true;
        }
    return false;
}

/* Whether n looks like the residual stream of block b: its input, a
 * residual add or the embedding. */
static bool stream_like(const IrNode *n, const IrNode *in)
{
    return n == in || n->op == IR_ADD || n->op == IR_EMBED;
}

/* One residual step out = x + branch(norm(x)), the branch attention
 * (attn) or SwiGLU.  Sets *x_in to the stream entering the step. */
static bool match_step_as(Rec *r, const IrNode *x, const IrNode *br, bool attn, int64_t d, Layer *ly,
                          const IrNode *in)
{
    const char *kind = attn ? "attention" : "MLP";
    Factors f = {.c = 1};
    const IrNode *tok[4], *other = NULL;
    int nt = 0;
    double alpha;
    if (scaled_stream(x, &alpha))
        return fail(r, "block %g scales the residual stream by %g before adding the %s branch (DeepNorm-style)",
                    r->l, alpha, kind);
    if (rsqrt_factor(br, d, &other))
        return fail(r, "block %g normalises the output of its %s branch before the residual add (Peri-LN)", r->l,
                    kind);
    Linear out;
    if (!split_product(br, NULL, d, &f, tok, &nt) || nt != 1 || !as_linear(tok[0], &out))
        return fail(r, "block %g's %s branch is not a linear projection times constant or per-channel scales",
                    r->l, kind);
    const IrNode *h = tok[0]->in[0], *n = NULL;
    char what[96];
    snprintf(what, sizeof what, "block %g's %s input", r->l, kind);
    if (attn) {
        if (h->op != IR_ATTENTION)
            return fail(r, h->op == IR_MUL ? "block %g's sublayers are not attention then MLP"
                                           : "block %g's first sublayer is not attention",
                        r->l);
        const IrNode *q = h->in[0], *k = h->in[1], *v = h->in[2];
        if (q->op != IR_ROPE || k->op != IR_ROPE)
            return fail(r, "block %g's attention does not apply RoPE to q and k", r->l);
        if (q->heads != h->heads || k->heads != h->heads || q->num != k->num)
            return fail(r, "block %g's RoPE heads or base differ between q, k and the attention", r->l);
        if (!as_linear(q->in[0], &ly->q) || !as_linear(k->in[0], &ly->k) || !as_linear(v, &ly->v))
            return fail(r, "block %g's q, k and v are not linear projections (with RoPE on q and k)", r->l);
        n = v->in[0];
        if (q->in[0]->in[0] != n || k->in[0]->in[0] != n)
            return fail(r, "block %g's q, k and v are not projections of the same input", r->l);
        ly->o = out;
        ly->o_scale = f;
        ly->heads = h->heads;
        ly->theta = q->num;
        return match_norm(r, n, x, d, &ly->attn_norm, what);
    }
    if (!match_swiglu(h, ly, &n))
        return fail(r, h->op == IR_ATTENTION ? "block %g's sublayers are not attention then MLP"
                                             : "block %g's MLP is not SwiGLU, down(silu(gate(x)) * up(x))",
                    r->l);
    ly->down = out;
    ly->down_scale = f;
    return match_norm(r, n, x, d, &ly->mlp_norm, what);
}

static bool match_step(Rec *r, const IrNode *out, bool attn, int64_t d, Layer *ly, const IrNode *in,
                       const IrNode **x_in)
{
    const IrNode *inner = NULL;
    if (out->op != IR_ADD) {
        if (rsqrt_factor(out, d, &inner) && inner->op == IR_ADD) {
            double alpha;
            for (int i = 0; i < 2; i++)
                if (scaled_stream(inner->in[i], &alpha))
                    return fail(r, "block %g scales the residual stream by %g and normalises after the residual "
                                   "add (DeepNorm)",
                                r->l, alpha);
            return fail(r, "block %g normalises after the residual add (Post-LN)", r->l);
        }
        return fail(r, "block %g's output is not the residual stream plus a branch (it ends in '%s')", r->l,
                    ir_op_info[out->op].text);
    }
    /* Try both operand orders; report the failure of the likelier one. */
    const IrNode *a = out->in[0], *b = out->in[1];
    if (!stream_like(a, in) && stream_like(b, in))
        a = out->in[1], b = out->in[0];
    Layer save = *ly;
    if (match_step_as(r, a, b, attn, d, ly, in)) {
        *x_in = a;
        return true;
    }
    Rec r2 = *r;
    *ly = save;
    if (match_step_as(&r2, b, a, attn, d, ly, in)) {
        *x_in = b;
        return true;
    }
    return false;
}

static const char *hf_in_out(const Linear *lin, int64_t *out, int64_t *in)
{
    *out = lin->trans_b ? lin->w->dims[0] : lin->w->dims[1];
    *in = lin->trans_b ? lin->w->dims[1] : lin->w->dims[0];
    return lin->w->name;
}

/* Checks one projection's HF shape [out, in]. */
static bool check_shape(Rec *r, const Linear *lin, int64_t out, int64_t in, const char *what)
{
    int64_t o, i;
    const char *name = hf_in_out(lin, &o, &i);
    if (o != out || i != in)
        return fail(r, "block %g's %s '%s' maps %lld to %lld features, LLaMA needs %lld to %lld", r->l, what, name,
                    (long long)i, (long long)o, (long long)in, (long long)out);
    return true;
}

/* The whole model: embedding -> blocks -> final norm -> head. */
static bool recognise(Rec *r, Llama *m)
{
    const IrGraph *g = r->g;
    if (g->blocks.n == 0)
        return fail(r, "the model has no block loop (LLaMA's layers are the iterations of a model-level for loop)");
    const IrBlock *b0 = g->blocks.v[0];
    const IrNode *e = b0->in;
    r->l = b0->l;
    if (!e || e->op != IR_EMBED || e->in[0] != g->tokens || e->in[1]->op != IR_PARAM)
        return fail(r, "the residual stream entering block %g is not the token embedding (found '%s')", b0->l,
                    e ? ir_op_info[e->op].text : "nothing");
    m->embed = e->in[1]->param;
    m->vocab = m->embed->dims[0];
    m->d = m->embed->dims[1];
    m->L = g->blocks.n;
    m->layers = xcalloc((size_t)m->L, sizeof *m->layers);
    for (int i = 0; i < m->L; i++) {
        const IrBlock *b = g->blocks.v[i];
        Layer *ly = &m->layers[i];
        const IrNode *mid, *in;
        r->l = ly->l = b->l;
        if (i > 0 && b->in != ((const IrBlock *)g->blocks.v[i - 1])->out)
            return fail(r, "block %g does not start from the previous block's output", b->l);
        if (!b->out || b->out->width != m->d)
            return fail(r, "block %g's residual stream is not %lld wide", b->l, (long long)m->d);
        if (!match_step(r, b->out, false, m->d, ly, b->in, &mid)) {
            /* Report the attention sublayer's problem first if it has one. */
            Rec r2 = *r;
            Layer tmp = *ly;
            const IrNode *o = b->out, *cand = NULL;
            if (o->op == IR_ADD)
                cand = stream_like(o->in[0], b->in) ? o->in[0] : o->in[1];
            if (cand && !match_step(&r2, cand, true, m->d, &tmp, b->in, &in))
                *r = r2;
            return false;
        }
        if (!match_step(r, mid, true, m->d, ly, b->in, &in))
            return false;
        if (in != b->in)
            return fail(r, "block %g has more sublayers than attention and MLP", b->l);
    }
    const IrBlock *last = g->blocks.v[m->L - 1];
    Factors f = {.c = 1};
    const IrNode *tok[4];
    int nt = 0;
    if (!split_product(g->logits, NULL, g->logits->width, &f, tok, &nt) || nt != 1 || !as_linear(tok[0], &m->head))
        return fail(r, "the logits are not a linear head times constant or per-channel scales");
    m->head_scale = f;
    if (!match_norm(r, tok[0]->in[0], last->out, m->d, &m->norm, "the head's input"))
        return false;

    /* One size for every layer: HF's config has one of each. */
    m->ffn = m->layers[0].gate.w->dims[m->layers[0].gate.trans_b ? 0 : 1];
    m->heads = m->layers[0].heads;
    m->theta = m->layers[0].theta;
    m->eps = m->norm.eps;
    for (int i = 0; i < m->L; i++) {
        const Layer *ly = &m->layers[i];
        r->l = ly->l;
        if (!check_shape(r, &ly->q, m->d, m->d, "q projection") ||
            !check_shape(r, &ly->k, m->d, m->d, "k projection") ||
            !check_shape(r, &ly->v, m->d, m->d, "v projection") ||
            !check_shape(r, &ly->o, m->d, m->d, "o projection") ||
            !check_shape(r, &ly->gate, m->ffn, m->d, "gate projection") ||
            !check_shape(r, &ly->up, m->ffn, m->d, "up projection") ||
            !check_shape(r, &ly->down, m->d, m->ffn, "down projection"))
            return false;
        if (ly->heads != m->heads)
            return fail(r, "block %g has %d heads, block %g %d (one num_attention_heads in HF)", ly->l, ly->heads,
                        m->layers[0].l, m->heads);
        if (ly->theta != m->theta)
            return fail(r, "block %g's RoPE base is %g, block %g's %g (one rope_theta in HF)", ly->l, ly->theta,
                        m->layers[0].l, m->theta);
        if (ly->attn_norm.eps != m->eps || ly->mlp_norm.eps != m->eps)
            return fail(r, "block %g's RMSNorm eps is %g, the final norm's %g (one rms_norm_eps in HF)", ly->l,
                        ly->attn_norm.eps != m->eps ? ly->attn_norm.eps : ly->mlp_norm.eps, m->eps);
    }
    int64_t o, in;
    hf_in_out(&m->head, &o, &in);
    if (o != m->vocab || in != m->d)
        return fail(r, "the head maps %lld to %lld features, LLaMA needs %lld to %lld (the embedding's)",
                    (long long)in, (long long)o, (long long)m->d, (long long)m->vocab);
    if (m->heads < 1 || m->d % m->heads || (m->d / m->heads) % 2)
        return fail(r, "%lld features in %d heads do not make an even head size", (long long)m->d, m->heads);
    return true;
}

/* --- the checkpoint -------------------------------------------------------- */

/* Compares the checkpoint's strata.config (when present) with the resolved
 * config, so that a forgotten -D is named rather than a tensor shape. */
static bool check_config(const RtSafetensors *st, const IrGraph *g, char **err)
{
    const char *text = rt_st_meta(st, "strata.config");
    if (!text)
        return true;
    json_error_t je;
    json_t *cfg = json_loads(text, 0, &je);
    if (!json_is_object(cfg)) {
        json_decref(cfg);
        if (asprintf(err, "%s: metadata strata.config is not a JSON object", st->path) < 0)
            *err = NULL;
        return false;
    }
    bool ok = true;
    for (int i = 0; ok && i < g->config.n; i++) {
        const IrConfig *c = g->config.v[i];
        json_t *v = json_object_get(cfg, c->name);
        if (v && json_is_number(v) && json_number_value(v) != c->value) {
            if (asprintf(err, "%s was written for %s=%g, the model resolves to %s=%g (pass -D %s=%g)", st->path,
                         c->name, json_number_value(v), c->name, c->value, c->name, json_number_value(v)) < 0)
                *err = NULL;
            ok = false;
        }
    }
    json_decref(cfg);
    return ok;
}

/* Every parameter of g from the checkpoint, F32 with its shape: vals[index]. */
static float **read_params(const RtSafetensors *st, const IrGraph *g, char **err)
{
    float **vals = xcalloc((size_t)g->params.n + 1, sizeof *vals);
    for (int i = 0; i < g->params.n; i++) {
        const IrParam *p = g->params.v[i];
        int64_t shape[2] = {p->dims[0], p->dims[1]};
        vals[i] = xmalloc((size_t)(p->numel > 0 ? p->numel : 1) * sizeof(float));
        if (rt_st_read(st, p->name, RT_F32, shape, p->ndim, vals[i], err)) {
            for (int k = 0; k <= i; k++)
                free(vals[k]);
            free(vals);
            return NULL;
        }
    }
    return vals;
}

/* f's value at channel i: c times each scalar and each vector's element i. */
static double factor_at(const Factors *f, float **vals, int64_t i)
{
    double s = f->c;
    for (int k = 0; k < f->n; k++)
        s *= vals[f->p[k]->index][f->p[k]->ndim == 0 ? 0 : i];
    return s;
}

static bool identity(const Factors *f)
{
    return f->c == 1 && f->n == 0;
}

/* The exported tensors: names, shapes and data (owned). */
typedef struct Out {
    RtStWriter w;
    PtrVec bufs;
    int64_t numel;
} Out;

static bool out_add(Out *o, const char *name, float *data, int64_t rows, int64_t cols, char **err)
{
    vec_push(&o->bufs, data);
    int64_t shape[2] = {rows, cols};
    o->numel += rows * (cols ? cols : 1);
    return rt_st_add(&o->w, name, RT_F32, shape, cols ? 2 : 1, data, err) == 0;
}

/* HF's [out, in] weight of lin, row i times the scale f(i). */
static float *linear_rows(const Linear *lin, const Factors *f, float **vals)
{
    int64_t out, in;
    hf_in_out(lin, &out, &in);
    const float *w = vals[lin->w->index];
    float *y = xmalloc((size_t)(out * in) * sizeof *y);
    for (int64_t i = 0; i < out; i++) {
        double s = factor_at(f, vals, i);
        for (int64_t j = 0; j < in; j++)
            y[i * in + j] = (float)((double)(lin->trans_b ? w[i * in + j] : w[j * out + i]) * s);
    }
    return y;
}

static float *gain(const Norm *n, int64_t d, float **vals)
{
    float *y = xmalloc((size_t)d * sizeof *y);
    for (int64_t i = 0; i < d; i++)
        y[i] = (float)factor_at(&n->gain, vals, i);
    return y;
}

/* Prints what folded into a tensor when it is more than a plain gain or weight. */
static void print_fold(const char *target, const Factors *f, bool norm)
{
    if (identity(f) || (norm && f->c == 1 && f->n == 1 && f->p[0]->ndim == 1))
        return;
    printf("  %s = ", target);
    const char *sep = "";
    for (int k = 0; k < f->n; k++, sep = " * ")
        printf("%s%s", sep, f->p[k]->name);
    if (f->c != 1 || !f->n)
        printf("%s%.6g", sep, f->c);
    printf("%s\n", norm ? "" : " (per output row)");
}

/* The shortest decimal that reads back as v, as a JSON number with a
 * fraction or exponent (Python's json then reads a float). */
static void json_number_text(char *buf, size_t n, double v)
{
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(buf, n, "%.1f", v);
        return;
    }
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, n, "%.*g", p, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    if (!strpbrk(buf, ".eEn"))
        strncat(buf, ".0", n - strlen(buf) - 1);
}

static bool write_config(const char *path, const Llama *m, int64_t ctx, bool tied, char **err)
{
    char eps[40], theta[40], *text = NULL;
    json_number_text(eps, sizeof eps, m->eps);
    json_number_text(theta, sizeof theta, m->theta);
    int len = asprintf(&text,
                       "{\n"
                       "  \"architectures\": [\"LlamaForCausalLM\"],\n"
                       "  \"model_type\": \"llama\",\n"
                       "  \"hidden_size\": %lld,\n"
                       "  \"intermediate_size\": %lld,\n"
                       "  \"num_attention_heads\": %d,\n"
                       "  \"num_key_value_heads\": %d,\n"
                       "  \"head_dim\": %lld,\n"
                       "  \"num_hidden_layers\": %d,\n"
                       "  \"vocab_size\": %lld,\n"
                       "  \"rms_norm_eps\": %s,\n"
                       "  \"rope_theta\": %s,\n"
                       "  \"rope_scaling\": null,\n"
                       "  \"max_position_embeddings\": %lld,\n"
                       "  \"tie_word_embeddings\": %s,\n"
                       "  \"hidden_act\": \"silu\",\n"
                       "  \"attention_bias\": false,\n"
                       "  \"attention_dropout\": 0.0,\n"
                       "  \"mlp_bias\": false,\n"
                       "  \"torch_dtype\": \"float32\"\n"
                       "}\n",
                       (long long)m->d, (long long)m->ffn, m->heads, m->heads, (long long)(m->d / m->heads), m->L,
                       (long long)m->vocab, eps, theta, (long long)ctx, tied ? "true" : "false");
    if (len < 0)
        die("out of memory");
    bool ok = rt_atomic_write_file(path, text, (size_t)len, err) == 0;
    free(text);
    return ok;
}

/* The context length: the config's ctx, else 2048. */
static int64_t config_ctx(const IrGraph *g)
{
    int64_t ctx = 2048;
    for (int i = 0; i < g->config.n; i++) {
        const IrConfig *c = g->config.v[i];
        if (!strcmp(c->name, "ctx") && c->value >= 1 && c->value < 1e9)
            ctx = (int64_t)c->value;
    }
    return ctx;
}

/* Writes DIR/config.json and DIR/model.safetensors. */
static bool write_hf(const char *dir, const Llama *m, const IrGraph *g, float **vals, const char *source,
                     char **err)
{
    Out o = {0};
    rt_st_writer_init(&o.w);
    char name[160];
    bool ok = out_add(&o, "model.embed_tokens.weight", linear_rows(&(Linear){m->embed, true}, &(Factors){.c = 1}, vals),
                      m->vocab, m->d, err);
    for (int i = 0; ok && i < m->L; i++) {
        const Layer *ly = &m->layers[i];
        static const Factors one = {.c = 1};
        struct {
            const char *hf;
            const Linear *lin;
            const Factors *f;
        } proj[] = {{"self_attn.q_proj", &ly->q, &one}, {"self_attn.k_proj", &ly->k, &one},
                    {"self_attn.v_proj", &ly->v, &one}, {"self_attn.o_proj", &ly->o, &ly->o_scale},
                    {"mlp.gate_proj", &ly->gate, &one}, {"mlp.up_proj", &ly->up, &one},
                    {"mlp.down_proj", &ly->down, &ly->down_scale}};
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", i);
        ok = out_add(&o, name, gain(&ly->attn_norm, m->d, vals), m->d, 0, err);
        snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", i);
        ok = ok && out_add(&o, name, gain(&ly->mlp_norm, m->d, vals), m->d, 0, err);
        for (size_t k = 0; ok && k < sizeof proj / sizeof *proj; k++) {
            int64_t rows, cols;
            hf_in_out(proj[k].lin, &rows, &cols);
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", i, proj[k].hf);
            ok = out_add(&o, name, linear_rows(proj[k].lin, proj[k].f, vals), rows, cols, err);
        }
    }
    ok = ok && out_add(&o, "model.norm.weight", gain(&m->norm, m->d, vals), m->d, 0, err);
    bool tied = m->head.w == m->embed && m->head.trans_b && identity(&m->head_scale);
    if (ok && !tied)
        ok = out_add(&o, "lm_head.weight", linear_rows(&m->head, &m->head_scale, vals), m->vocab, m->d, err);
    ok = ok && rt_st_add_meta(&o.w, "format", "pt", err) == 0 &&
         rt_st_add_meta(&o.w, "strata.model_path", g->model_name, err) == 0 &&
         rt_st_add_meta(&o.w, "strata.model", source, err) == 0;
    char *path = NULL;
    if (ok) {
        if (asprintf(&path, "%s/model.safetensors", dir) < 0)
            die("out of memory");
        ok = rt_st_write(&o.w, path, err) == 0;
        free(path);
    }
    int64_t ctx = config_ctx(g);
    if (ok) {
        if (asprintf(&path, "%s/config.json", dir) < 0)
            die("out of memory");
        ok = write_config(path, m, ctx, tied, err);
        free(path);
    }
    if (ok) {
        printf("exported %s as LlamaForCausalLM to %s: %d layers, hidden %lld, intermediate %lld, %d heads, "
               "vocab %lld, %lld parameters%s\n",
               g->model_name, dir, m->L, (long long)m->d, (long long)m->ffn, m->heads, (long long)m->vocab,
               (long long)o.numel, tied ? " (tied head)" : "");
        for (int i = 0; i < m->L; i++) {
            char t[120];
            snprintf(t, sizeof t, "model.layers.%d.input_layernorm.weight", i);
            print_fold(t, &m->layers[i].attn_norm.gain, true);
            snprintf(t, sizeof t, "model.layers.%d.post_attention_layernorm.weight", i);
            print_fold(t, &m->layers[i].mlp_norm.gain, true);
            snprintf(t, sizeof t, "model.layers.%d.self_attn.o_proj.weight", i);
            print_fold(t, &m->layers[i].o_scale, false);
            snprintf(t, sizeof t, "model.layers.%d.mlp.down_proj.weight", i);
            print_fold(t, &m->layers[i].down_scale, false);
        }
        print_fold("model.norm.weight", &m->norm.gain, true);
        print_fold("lm_head.weight", &m->head_scale, false);
    }
    for (int i = 0; i < o.bufs.n; i++)
        free(o.bufs.v[i]);
    vec_free(&o.bufs);
    rt_st_writer_free(&o.w);
    return ok;
}

/* --- the command ----------------------------------------------------------- */

typedef struct ExportArgs {
    const char *model, *ckpt, *dir;
    const char *tokenizer, *gpt2; /* --tokenizer FILE, --gpt2 DIR */
    int bytes;                    /* --bytes */
    SemaOptions opt;
} ExportArgs;

static int parse_export_args(int argc, char **argv, ExportArgs *a, const char **defines)
{
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        bool takes = !strcmp(s, "-D") || !strcmp(s, "--preset") || !strcmp(s, "--ckpt") || !strcmp(s, "-o") ||
                     !strcmp(s, "--tokenizer") || !strcmp(s, "--gpt2");
        if (takes && i + 1 >= argc) {
            fprintf(stderr, "strata: error: %s needs a value\n", s);
            return 2;
        }
        if (!strcmp(s, "-D"))
            defines[a->opt.ndefines++] = argv[++i];
        else if (!strncmp(s, "-D", 2))
            defines[a->opt.ndefines++] = s + 2;
        else if (!strcmp(s, "--preset"))
            a->opt.preset = argv[++i];
        else if (!strcmp(s, "--ckpt"))
            a->ckpt = argv[++i];
        else if (!strcmp(s, "-o"))
            a->dir = argv[++i];
        else if (!strcmp(s, "--tokenizer"))
            a->tokenizer = argv[++i];
        else if (!strcmp(s, "--gpt2"))
            a->gpt2 = argv[++i];
        else if (!strcmp(s, "--bytes"))
            a->bytes = 1;
        else if (s[0] == '-' && s[1]) {
            fprintf(stderr, "strata: error: export: unknown option '%s' (see strata --help)\n", s);
            return 2;
        } else if (a->model) {
            fprintf(stderr, "strata: error: more than one model file given ('%s' and '%s')\n", a->model, s);
            return 2;
        } else
            a->model = s;
    }
    if (!a->model || !a->ckpt || !a->dir) {
        fprintf(stderr, "strata: error: usage: strata export MODEL.strata --ckpt CHECKPOINT.safetensors -o DIR "
                        "[-D NAME=VALUE]... [--preset NAME] [--tokenizer FILE | --gpt2 DIR | --bytes]\n");
        return 2;
    }
    if ((a->tokenizer != NULL) + (a->gpt2 != NULL) + a->bytes > 1) {
        fprintf(stderr, "strata: error: export: give only one of --tokenizer FILE, --gpt2 DIR and --bytes\n");
        return 2;
    }
    a->opt.defines = defines;
    return 0;
}

/* The tokenizer "tokenizer" that the checkpoint's training state recorded
 * (malloc'd), or NULL. */
static char *recorded_tokenizer(const RtSafetensors *st)
{
    const char *text = rt_st_meta(st, "strata.state");
    json_t *j = text ? json_loads(text, 0, NULL) : NULL, *t = json_object_get(j, "tokenizer");
    char *path = json_is_string(t) && *json_string_value(t) ? strdup(json_string_value(t)) : NULL;
    json_decref(j);
    return path;
}

/* The tokenizer to write beside the weights: --tokenizer, --gpt2 or
 * --bytes, else the checkpoint's recorded one, else raw bytes for a
 * 256-token vocabulary; with none of these, a note and *t NULL.  It may
 * have fewer ids than the model (the rest are never made), not more.
 * Chosen before anything is written, so that a bad one writes nothing. */
static bool choose_tokenizer(const ExportArgs *a, const RtSafetensors *st, const Llama *m, RtTokenizer **t,
                             char **err)
{
    char *rec = a->tokenizer || a->gpt2 || a->bytes ? NULL : recorded_tokenizer(st);
    int bytes = a->bytes || (!a->tokenizer && !a->gpt2 && !rec && m->vocab == 256);
    const char *file = a->tokenizer ? a->tokenizer : rec;
    *t = NULL;
    if (!file && !a->gpt2 && !bytes) {
        printf("no tokenizer: %s records none and none was given (--tokenizer FILE, --gpt2 DIR or --bytes), so "
               "no tokenizer.json is written\n",
               a->ckpt);
        return true;
    }
    char *e = NULL;
    *t = rt_cli_tokenizer(file, bytes, a->gpt2, &e);
    bool ok = *t != NULL;
    if (ok && rt_tok_vocab_size(*t) > m->vocab) {
        e = rt_fmt("the tokenizer %s has %d ids, more than the model's vocabulary of %lld",
                   file ? file : a->gpt2 ? a->gpt2 : "raw bytes", rt_tok_vocab_size(*t), (long long)m->vocab);
        ok = false;
    }
    if (!ok) {
        *err = rec ? rt_fmt("%s (the tokenizer recorded in %s; give --tokenizer FILE to use another)", e, a->ckpt)
                   : rt_fmt("%s", e);
        free(e);
        rt_tok_free(*t);
        *t = NULL;
    } else if (rec)
        printf("tokenizer: %s (recorded in %s)\n", rec, a->ckpt);
    free(rec);
    return ok;
}

/* DIR/tokenizer.json and tokenizer_config.json, when there is a tokenizer. */
static bool write_tokenizer(const char *dir, const RtTokenizer *t, const Llama *m, int64_t ctx, char **err)
{
    if (!t)
        return true;
    if (rt_tok_save_hf_dir(t, dir, ctx, err))
        return false;
    printf("wrote %s/tokenizer.json and tokenizer_config.json: %d ids%s\n", dir, rt_tok_vocab_size(t),
           rt_tok_vocab_size(t) < m->vocab ? " (fewer than the model's vocabulary)" : "");
    return true;
}

static bool make_dir(const char *dir, char **err)
{
    struct stat sb;
    if (mkdir(dir, 0777) == 0 || (errno == EEXIST && stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode)))
        return true;
    if (asprintf(err, "cannot create the directory %s: %s", dir, errno == EEXIST ? "a file is in the way"
                                                                                : strerror(errno)) < 0)
        *err = NULL;
    return false;
}

int export_main(int argc, char **argv)
{
    ExportArgs a = {0};
    const char **defines = xcalloc((size_t)argc + 1, sizeof *defines);
    int rc = parse_export_args(argc, argv, &a, defines);
    if (rc) {
        free(defines);
        return rc;
    }
    Diag d;
    diag_init(&d, stderr);
    const char *why = NULL;
    SrcFile *src = src_read(a.model, &why);
    if (!src) {
        fprintf(stderr, "strata: error: cannot read %s: %s\n", a.model, why);
        free(defines);
        return 1;
    }
    const char *source = src->text;
    Program prog = {0};
    IrGraph g;
    ir_init(&g);
    g.model_name = a.model;
    bool ok = ast_load(&prog, &d, src) && sema_resolve(&prog, &a.opt, &d, &g);
    diag_finish(&d);
    Llama m = {0};
    Rec r = {.g = &g};
    RtSafetensors st = {0};
    bool st_open = false;
    float **vals = NULL;
    char *err = NULL;
    if (ok && !recognise(&r, &m)) {
        fprintf(stderr, "strata: error: cannot export %s as LLaMA: %s\n", a.model, r.why);
        ok = false;
    }
    if (ok && !(st_open = rt_st_open(&st, a.ckpt, &err) == 0))
        ok = false;
    RtTokenizer *tok = NULL;
    ok = ok && check_config(&st, &g, &err) && (vals = read_params(&st, &g, &err)) &&
         choose_tokenizer(&a, &st, &m, &tok, &err) && make_dir(a.dir, &err) &&
         write_hf(a.dir, &m, &g, vals, source, &err) && write_tokenizer(a.dir, tok, &m, config_ctx(&g), &err);
    rt_tok_free(tok);
    if (!ok && err)
        fprintf(stderr, "strata: error: %s\n", err);
    if (vals)
        for (int i = 0; i < g.params.n; i++)
            free(vals[i]);
    free(vals);
    free(err);
    if (st_open)
        rt_st_close(&st);
    free(m.layers);
    ir_free(&g);
    ast_program_free(&prog);
    free(defines);
    return ok ? 0 : 1;
}
