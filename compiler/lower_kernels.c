/* lower_kernels.c - the ops lowered to calls out of the module
 * (lower_internal.h): MATMUL and MATMUL_GRAD_W to cblas_?gemm (row-major,
 * transposes instead of copies), EMBED ... CE_GRAD to the rt_*_f32/_f64
 * kernels of runtime/kernels.h, with the per-node scratch (aux) those need.
 * Every call covers the full range [0, n) of its work units; splitting the
 * ranges over threads is the thread pool's job later. */
#include "lower_internal.h"

#include "kernels.h"

#include <string.h>

/* CBLAS enum values (cblas.h), passed as int. */
enum { CBLAS_ROW_MAJOR = 101, CBLAS_NO_TRANS = 111, CBLAS_TRANS = 112 };

/* ---- scratch sizes (the ABI's aux) ---- */

static int64_t head_size(const IrNode *n)
{
    if (n->heads < 1 || n->width % n->heads)
        die("lower: %%%d (%s): width %lld is not a multiple of %d heads", n->id, ir_op_info[n->op].text,
            (long long)n->width, n->heads);
    return n->width / n->heads;
}

/* ATTENTION: lse (B, heads, T), then one work area that the forward kernel
 *   uses and, later in the same run, the backward kernel (ATTENTION_GRAD
 *   needs the forward's out and lse anyway, so it borrows this aux).
 * ROPE, ROPE_GRAD: the cos/sin table (T, 2, hd/2), refilled every run.
 * CROSS_ENTROPY: lse (B*T), then the per-row losses (B*T). */
int64_t lower_kernel_aux_numel(const IrNode *n, int64_t B, int64_t T)
{
    switch (n->op) {
    case IR_ATTENTION: {
        int64_t hd = head_size(n), fw = rt_attention_work_numel(hd), bw = rt_attention_grad_work_numel(hd);
        return B * n->heads * T + (fw > bw ? fw : bw);
    }
    case IR_ROPE:
    case IR_ROPE_GRAD: return T * head_size(n);
    case IR_CROSS_ENTROPY: return 2 * B * T;
    default: return 0;
    }
}

/* ---- declarations ---- */

/* The signature strings in the calls below spell out kernels.h by hand;
 * these fail to compile when a prototype there changes. */
#define SAME_TYPE(fn, type) _Static_assert(_Generic(&fn, type: 1, default: 0), #fn " changed: update lower_kernels.c")
typedef double R;
typedef const double CR;
typedef const int32_t Ids;
SAME_TYPE(rt_embed_f64, void (*)(R *, Ids *, CR *, int64_t, int64_t, int64_t, int64_t));
SAME_TYPE(rt_embed_grad_f64, void (*)(R *, Ids *, CR *, int64_t, int64_t, int64_t, int64_t, int64_t));
SAME_TYPE(rt_rope_table_f64, void (*)(R *, int64_t, int64_t, double));
SAME_TYPE(rt_rope_f64, void (*)(R *, CR *, CR *, int64_t, int64_t, int64_t, int64_t, int64_t, int));
SAME_TYPE(rt_attention_f64, void (*)(R *, R *, CR *, CR *, CR *, R *, int64_t, int64_t, int64_t, int64_t, int64_t));
SAME_TYPE(rt_attention_grad_f64, void (*)(R *, R *, R *, CR *, CR *, CR *, CR *, CR *, CR *, R *, int64_t, int64_t,
                                          int64_t, int64_t, int64_t));
SAME_TYPE(rt_cross_entropy_f64, void (*)(R *, R *, R *, CR *, Ids *, CR *, int64_t, int64_t));
SAME_TYPE(rt_cross_entropy_grad_f64, void (*)(R *, CR *, Ids *, CR *, CR *, CR *, int64_t, int64_t, int64_t, int64_t));

/* Declares (once) and calls NAME, or NAME_f32 / NAME_f64 when `suffix`.
 * sig has one letter per parameter: p pointer, I int64_t, i int, d double,
 * R the REAL type. */
static void call(Cg *cg, const char *name, bool suffix, const char *sig, LLVMValueRef *args)
{
    char full[64];
    snprintf(full, sizeof full, "%s%s", name, !suffix ? "" : cg->prec == LOWER_F32 ? "_f32" : "_f64");
    LLVMTypeRef params[16];
    unsigned n = (unsigned)strlen(sig);
    for (unsigned k = 0; k < n; k++)
        params[k] = sig[k] == 'p' ? cg->ptr
                  : sig[k] == 'I' ? cg->i64
                  : sig[k] == 'i' ? cg->i32
                  : sig[k] == 'd' ? LLVMDoubleTypeInContext(cg->ctx)
                  : cg->real;
    cg_call(cg, cg_extern(cg, full, cg->voidt, params, n), args, n);
}

static LLVMValueRef i32c(Cg *cg, int64_t v)
{
    return LLVMConstInt(cg->i32, (unsigned long long)v, true);
}

/* A row count for BLAS, whose dimensions are int (OpenBLAS without
 * INTERFACE64); B*T beyond 2^31 rows is out of reach of this ABI anyway. */
static LLVMValueRef i32v(Cg *cg, LLVMValueRef v64)
{
    return LLVMBuildTrunc(cg->b, v64, cg->i32, "");
}

/* C (M,N) = op(A) op(B), alpha 1, beta 0 (overwrites C); M, K are i32 values. */
static void gemm(Cg *cg, bool ta, bool tb, LLVMValueRef M, int64_t N, LLVMValueRef K, LLVMValueRef A, int64_t lda,
                 LLVMValueRef Bm, int64_t ldb, LLVMValueRef C, int64_t ldc)
{
    LLVMValueRef args[] = {i32c(cg, CBLAS_ROW_MAJOR), i32c(cg, ta ? CBLAS_TRANS : CBLAS_NO_TRANS),
                           i32c(cg, tb ? CBLAS_TRANS : CBLAS_NO_TRANS), M, i32c(cg, N), K, cg_real(cg, 1), A,
                           i32c(cg, lda), Bm, i32c(cg, ldb), cg_real(cg, 0), C, i32c(cg, ldc)};
    call(cg, cg->prec == LOWER_F32 ? "cblas_sgemm" : "cblas_dgemm", false, "iiiiiiRpipiRpi", args);
}

/* ---- matrix products ---- */

/* MATMUL: x (M, K) and
 *   trans_b: W [N, K], y = x W^T  -> gemm(N, T): lda K, ldb K
 *   else:    W [K, N], y = x W    -> gemm(N, N): lda K, ldb N */
static void lower_matmul(Cg *cg, const IrNode *x)
{
    const IrNode *a = x->in[0], *w = x->in[1];
    int64_t K = a->width, N = x->width;
    if (w->tok || (x->trans_b ? w->width != K || w->rows != N : w->rows != K || w->width != N) ||
        a->tok != x->tok || (!a->tok && a->rows != x->rows))
        die("lower: %%%d: matmul shapes do not agree", x->id);
    gemm(cg, false, x->trans_b, i32v(cg, cg_rows(cg, x)), N, i32c(cg, K), cg_buf(cg, a), K, cg_buf(cg, w),
         x->trans_b ? K : N, cg_buf(cg, x), N);
}

/* MATMUL_GRAD_W: y [wa, wb] = a^T b over the R rows of a (R, wa), b (R, wb). */
static void lower_matmul_grad_w(Cg *cg, const IrNode *x)
{
    const IrNode *a = x->in[0], *b = x->in[1];
    if (x->tok || x->rows != a->width || x->width != b->width || a->tok != b->tok ||
        (!a->tok && a->rows != b->rows))
        die("lower: %%%d: matmul_grad_w result is not [wa, wb]", x->id);
    gemm(cg, true, false, i32c(cg, a->width), b->width, i32v(cg, cg_rows(cg, a)), cg_buf(cg, a), a->width,
         cg_buf(cg, b), b->width, cg_buf(cg, x), b->width);
}

/* ---- embedding and rotary embedding ---- */

static LLVMValueRef ids(Cg *cg, const IrNode *n)
{
    return n->op == IR_INPUT_TOKENS ? cg->tokens : cg->targets;
}

/* EMBED: y[r] = table[ids[r]] */
static void lower_embed(Cg *cg, const IrNode *x)
{
    const IrNode *table = x->in[1];
    LLVMValueRef args[] = {cg_buf(cg, x), ids(cg, x->in[0]), cg_buf(cg, table), cg_i64(cg, 0), cg_rows(cg, x),
                           cg_i64(cg, table->rows), cg_i64(cg, x->width)};
    call(cg, "rt_embed", true, "pppIIII", args);
}

/* EMBED_GRAD: dtable[ids[r]] += g[r]; the kernel accumulates, so zero first. */
static void lower_embed_grad(Cg *cg, const IrNode *x)
{
    const IrNode *g = x->in[1];
    LLVMValueRef y = cg_buf(cg, x);
    cg_zero(cg, y, cg_i64(cg, x->rows * x->width));
    LLVMValueRef args[] = {y,          ids(cg, x->in[0]),       cg_buf(cg, g),          cg_i64(cg, 0),
                           cg_i64(cg, x->width), cg_rows(cg, g), cg_i64(cg, x->rows), cg_i64(cg, x->width)};
    call(cg, "rt_embed_grad", true, "pppIIIII", args);
}

/* ROPE / ROPE_GRAD (inverse rotation): the cos/sin table into aux, then
 * the rotation of every row. */
static void lower_rope(Cg *cg, const IrNode *x)
{
    int64_t hd = head_size(x);
    if (hd % 2 || !x->tok || !x->in[0]->tok || x->in[0]->width != x->width)
        die("lower: %%%d: rope needs (B,T,heads x even head size)", x->id);
    LLVMValueRef table = cg_aux(cg, x);
    call(cg, "rt_rope_table", true, "pIId",
         (LLVMValueRef[]){table, cg->T, cg_i64(cg, hd), LLVMConstReal(LLVMDoubleTypeInContext(cg->ctx), x->num)});
    LLVMValueRef args[] = {cg_buf(cg, x), cg_buf(cg, x->in[0]), table, cg_i64(cg, 0), cg->BT, cg->T,
                           cg_i64(cg, x->width), cg_i64(cg, x->heads), i32c(cg, x->op == IR_ROPE_GRAD)};
    call(cg, "rt_rope", true, "pppIIIIIi", args);
}

/* ---- attention ---- */

static void check_attention(const IrNode *x, int nin)
{
    head_size(x);
    for (int k = 0; k < nin; k++)
        if (!x->tok || !x->in[k]->tok || x->in[k]->width != x->width)
            die("lower: %%%d (%s): operand %d is not (B,T,width)", x->id, ir_op_info[x->op].text, k);
}

/* ATTENTION: out, lse = aux[0 .. B*heads*T), work after it. */
static void lower_attention(Cg *cg, const IrNode *x)
{
    check_attention(x, 3);
    LLVMValueRef aux = cg_aux(cg, x);
    LLVMValueRef nlse = LLVMBuildMul(cg->b, cg->BT, cg_i64(cg, x->heads), "");
    LLVMValueRef args[] = {cg_buf(cg, x),        aux,
                           cg_buf(cg, x->in[0]), cg_buf(cg, x->in[1]),
                           cg_buf(cg, x->in[2]), cg_elem(cg, aux, nlse),
                           cg_i64(cg, 0),        LLVMBuildMul(cg->b, cg->B, cg_i64(cg, x->heads), ""),
                           cg->T,                cg_i64(cg, x->width),
                           cg_i64(cg, x->heads)};
    call(cg, "rt_attention", true, "ppppppIIIII", args);
}

/* The forward ATTENTION node of an ATTENTION_GRAD: same q, k, v and heads. */
static const IrNode *attention_of(const Cg *cg, const IrNode *x)
{
    for (int i = 0; i < cg->g->nodes.n; i++) {
        const IrNode *f = cg->g->nodes.v[i];
        if (f->op == IR_ATTENTION && f->heads == x->heads && f->in[0] == x->in[0] && f->in[1] == x->in[1] &&
            f->in[2] == x->in[2])
            return f;
    }
    die("lower: %%%d: attention_grad without its forward attention", x->id);
}

/* ATTENTION_GRAD: the kernel computes dq, dk and dv together, so the first
 * node of a group with the same (q, k, v, g) makes the one call and its
 * siblings (the other `which`) get their values from it.  A gradient no
 * node asks for (an operand that needs none) goes to a malloc'd spare: a
 * rare case that no model in models/ has. */
static void lower_attention_grad(Cg *cg, const IrNode *x)
{
    if (cg->attn_grad_done[x->id])
        return;
    check_attention(x, 4);
    const IrNode *fwd = attention_of(cg, x), *sib[3] = {NULL, NULL, NULL};
    for (int i = x->id; i < cg->g->nodes.n; i++) {
        const IrNode *s = cg->g->nodes.v[i];
        if (s->op == IR_ATTENTION_GRAD && s->heads == x->heads && !memcmp(s->in, x->in, sizeof s->in) &&
            s->which >= 0 && s->which <= 2 && !sib[s->which]) {
            sib[s->which] = s;
            cg->attn_grad_done[s->id] = true;
        }
    }
    LLVMValueRef numel = LLVMBuildMul(cg->b, cg->BT, cg_i64(cg, x->width), "");
    LLVMValueRef bytes = LLVMBuildMul(cg->b, numel, cg_i64(cg, cg->prec == LOWER_F32 ? 4 : 8), "");
    LLVMValueRef d[3], spare[3] = {NULL, NULL, NULL};
    for (int w = 0; w < 3; w++) {
        if (sib[w]) {
            d[w] = cg_buf(cg, sib[w]);
        } else {
            LLVMTypeRef i64 = cg->i64;
            d[w] = spare[w] = cg_call(cg, cg_extern(cg, "malloc", cg->ptr, &i64, 1), &bytes, 1);
        }
    }
    LLVMValueRef aux = cg_aux(cg, fwd);
    LLVMValueRef nlse = LLVMBuildMul(cg->b, cg->BT, cg_i64(cg, x->heads), "");
    LLVMValueRef args[] = {d[0], d[1], d[2], cg_buf(cg, x->in[0]), cg_buf(cg, x->in[1]), cg_buf(cg, x->in[2]),
                           cg_buf(cg, fwd), aux, cg_buf(cg, x->in[3]), cg_elem(cg, aux, nlse), cg_i64(cg, 0),
                           LLVMBuildMul(cg->b, cg->B, cg_i64(cg, x->heads), ""), cg->T, cg_i64(cg, x->width),
                           cg_i64(cg, x->heads)};
    call(cg, "rt_attention_grad", true, "ppppppppppIIIII", args);
    for (int w = 0; w < 3; w++)
        if (spare[w]) {
            LLVMTypeRef p = cg->ptr;
            cg_call(cg, cg_extern(cg, "free", cg->voidt, &p, 1), &spare[w], 1);
        }
}

/* ---- cross-entropy ---- */

/* CROSS_ENTROPY: loss, with aux = lse (B*T) then row losses (B*T). */
static void lower_cross_entropy(Cg *cg, const IrNode *x)
{
    const IrNode *lg = x->in[0];
    if (!lg->tok || x->tok || x->width != 1)
        die("lower: %%%d: cross_entropy is not logits -> scalar", x->id);
    LLVMValueRef aux = cg_aux(cg, x);
    LLVMValueRef args[] = {cg_buf(cg, x), cg_elem(cg, aux, cg->BT), aux, cg_buf(cg, lg), ids(cg, x->in[1]),
                           cg->mask, cg->BT, cg_i64(cg, lg->width)};
    call(cg, "rt_cross_entropy", true, "ppppppII", args);
}

/* The CROSS_ENTROPY whose lse a CE_GRAD reads: same logits and targets. */
static const IrNode *cross_entropy_of(const Cg *cg, const IrNode *x)
{
    for (int i = 0; i < cg->g->nodes.n; i++) {
        const IrNode *f = cg->g->nodes.v[i];
        if (f->op == IR_CROSS_ENTROPY && f->in[0] == x->in[0] && f->in[1] == x->in[1])
            return f;
    }
    die("lower: %%%d: cross_entropy_grad without its cross_entropy", x->id);
}

/* CE_GRAD: every row written (masked rows as zeros). */
static void lower_ce_grad(Cg *cg, const IrNode *x)
{
    const IrNode *lg = x->in[0], *gn = x->in[2];
    if (!x->tok || x->width != lg->width || gn->tok || gn->width != 1)
        die("lower: %%%d: cross_entropy_grad is not (B,T,V) with a scalar gradient", x->id);
    LLVMValueRef args[] = {cg_buf(cg, x), cg_buf(cg, lg), ids(cg, x->in[1]), cg->mask,
                           cg_aux(cg, cross_entropy_of(cg, x)), cg_buf(cg, gn), cg_i64(cg, 0), cg->BT, cg->BT,
                           cg_i64(cg, lg->width)};
    call(cg, "rt_cross_entropy_grad", true, "ppppppIIII", args);
}

void lower_call_node(Cg *cg, const IrNode *x)
{
    switch (x->op) {
    case IR_MATMUL: lower_matmul(cg, x); break;
    case IR_MATMUL_GRAD_W: lower_matmul_grad_w(cg, x); break;
    case IR_EMBED: lower_embed(cg, x); break;
    case IR_EMBED_GRAD: lower_embed_grad(cg, x); break;
    case IR_ROPE:
    case IR_ROPE_GRAD: lower_rope(cg, x); break;
    case IR_ATTENTION: lower_attention(cg, x); break;
    case IR_ATTENTION_GRAD: lower_attention_grad(cg, x); break;
    case IR_CROSS_ENTROPY: lower_cross_entropy(cg, x); break;
    case IR_CE_GRAD: lower_ce_grad(cg, x); break;
    default: die("lower: no rule for op %s", ir_op_info[x->op].text);
    }
}
