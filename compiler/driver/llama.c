/* llama.c - llama_recognise (llama.h): the LLaMA structure of a resolved
 * model found in its IR, op by op, and the first reason when it is not:
 * the residual stream and each block's two residual steps are matched
 * from the block outputs backwards (operands in either order), norms as
 * products of x, rsqrt(mean(square(x)) + eps) and constant or parameter
 * factors, branches as a projection times such factors.  Post-LN,
 * DeepNorm's residual scale, Peri-LN's output norms, DyT and the like are
 * named.  No memory but Llama.layers. */
#include "driver/llama.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
            if (f->n >= LLAMA_MAX_FACTORS || !(p->ndim == 0 || (p->ndim == 1 && p->dims[0] == width)))
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

const char *llama_hf_shape(const Linear *lin, int64_t *out, int64_t *in)
{
    *out = lin->trans_b ? lin->w->dims[0] : lin->w->dims[1];
    *in = lin->trans_b ? lin->w->dims[1] : lin->w->dims[0];
    return lin->w->name;
}

/* Checks one projection's HF shape [out, in]. */
static bool check_shape(Rec *r, const Linear *lin, int64_t out, int64_t in, const char *what)
{
    int64_t o, i;
    const char *name = llama_hf_shape(lin, &o, &i);
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
    llama_hf_shape(&m->head, &o, &in);
    if (o != m->vocab || in != m->d)
        return fail(r, "the head maps %lld to %lld features, LLaMA needs %lld to %lld (the embedding's)",
                    (long long)in, (long long)o, (long long)m->d, (long long)m->vocab);
    if (m->heads < 1 || m->d % m->heads || (m->d / m->heads) % 2)
        return fail(r, "%lld features in %d heads do not make an even head size", (long long)m->d, m->heads);
    return true;
}

bool llama_recognise(const IrGraph *g, Llama *m, char *why, size_t nwhy)
{
    Rec r = {.g = g};
    memset(m, 0, sizeof *m);
    if (recognise(&r, m))
        return true;
    snprintf(why, nwhy, "%s", r.why);
    return false;
}

void llama_free(Llama *m)
{
    free(m->layers);
    m->layers = NULL;
}

bool llama_identity(const Factors *f)
{
    return f->c == 1 && f->n == 0;
}
