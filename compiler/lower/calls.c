/* calls.c - the ops lowered to calls out of the module
 * (lower/cg.h): MATMUL and MATMUL_GRAD_W to rt_matmul_f32/_f64, the
 * matrix-product layer (runtime/core/gemm.h: row-major, transposes instead
 * of copies; it picks the backend and cuts C into strips fixed by the
 * shape, shared over the pool),
 * EMBED ...
 * CE_GRAD to the rt_*_f32/_f64 kernels of runtime/core/kernels.h (in
 * strata_decode ATTENTION to rt_kv_append and rt_attention_cached), each as a
 * task that rt_pool_run splits over the pool's threads in tiles of the
 * kernel's work unit, a fixed number of units per tile: token rows
 * (embed, rope, cross-entropy), columns (the embedding gradient, which
 * scatters rows) or (sequence, head) pairs (attention, with one work area
 * per thread in the arena's MEM_THREAD region).  No split changes the
 * order of a sum, and no tile depends on the thread count (pool.h). */
#include "lower/cg.h"

#include "core/gemm.h"
#include "core/kernels.h"

#include <string.h>


static int64_t head_size(const IrNode *n)
{
    if (n->heads < 1 || n->width % n->heads)
        die("lower: %%%d (%s): width %lld is not a multiple of %d heads", n->id, ir_op_info[n->op].text,
            (long long)n->width, n->heads);
    return n->width / n->heads;
}

/* ---- declarations ---- */

/* The signature strings in the calls below spell out kernels.h by hand;
 * these fail to compile when a prototype there changes. */
#define SAME_TYPE(fn, type) _Static_assert(_Generic(&fn, type: 1, default: 0), #fn " changed: update lower/calls.c")
typedef double R;
typedef const double CR;
typedef const int32_t Ids;
SAME_TYPE(rt_embed_f64, void (*)(R *, Ids *, CR *, int64_t, int64_t, int64_t, int64_t));
SAME_TYPE(rt_embed_grad_f64, void (*)(R *, Ids *, CR *, int64_t, int64_t, int64_t, int64_t, int64_t));
SAME_TYPE(rt_rope_table_f64, void (*)(R *, int64_t, int64_t, int64_t, double));
SAME_TYPE(rt_rope_f64, void (*)(R *, CR *, CR *, int64_t, int64_t, int64_t, int64_t, int64_t, int));
SAME_TYPE(rt_attention_f64, void (*)(R *, R *, CR *, CR *, CR *, R *, int64_t, int64_t, int64_t, int64_t, int64_t));
SAME_TYPE(rt_attention_cached_f64, void (*)(R *, CR *, CR *, CR *, R *, int64_t, int64_t, int64_t, int64_t, int64_t,
                                            int64_t, int64_t));
SAME_TYPE(rt_kv_append_f64, void (*)(R *, R *, CR *, CR *, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t));
SAME_TYPE(rt_attention_grad_f64, void (*)(R *, R *, R *, CR *, CR *, CR *, CR *, CR *, CR *, R *, int64_t, int64_t,
                                          int64_t, int64_t, int64_t));
SAME_TYPE(rt_cross_entropy_rows_f64, void (*)(R *, R *, CR *, Ids *, CR *, int64_t, int64_t, int64_t));
SAME_TYPE(rt_cross_entropy_mean_f64, void (*)(R *, CR *, CR *, int64_t));
SAME_TYPE(rt_cross_entropy_grad_f64,
          void (*)(R *, CR *, Ids *, CR *, CR *, CR *, int64_t, int64_t, int64_t, int64_t, int64_t));

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
        params[k] = sig[k] == 'p' ? cg->ptr : sig[k] == 'I' ? cg->i64 : sig[k] == 'i' ? cg->i32
                  : sig[k] == 'd' ? cg->f64 : cg->real;
    cg_call(cg, cg_extern(cg, full, cg->voidt, params, n), args, n);
}

/* The LLVM types of a ctx from the same letters. */
static unsigned ctx_types(Cg *cg, const char *sig, LLVMTypeRef *t)
{
    unsigned n = (unsigned)strlen(sig);
    for (unsigned k = 0; k < n; k++)
        t[k] = sig[k] == 'p' ? cg->ptr : sig[k] == 'I' ? cg->i64 : sig[k] == 'b' ? cg->i1 : cg->real;
    return n;
}

/* Runs `body` over [0, n) on the pool in tiles of `grain` units (fixed by
 * the shape: pool.h) with the ctx values v (types: sig). */
static void run(Cg *cg, const char *kernel, const char *sig, CgTaskBody *body, LLVMValueRef *v, LLVMValueRef n,
                LLVMValueRef grain)
{
    char key[96];
    snprintf(key, sizeof key, "task.%s.%s", kernel, cg->prec == LOWER_F32 ? "f32" : "f64");
    LLVMTypeRef t[16];
    unsigned nt = ctx_types(cg, sig, t);
    cg_run_task(cg, cg_task(cg, key, NULL, t, nt, body, NULL), v, n, grain);
}

/* ---- matrix products ---- */

SAME_TYPE(rt_matmul_f64, void (*)(struct RtPool *, int, int64_t, int64_t, int64_t, CR *, int64_t, CR *, int64_t, double,
                                  R *, int64_t));

/* C (M,N) = op(A) op(B) + beta C, alpha 1; M, K are i64 values < 2^31: one
 * call of the matrix-product layer (runtime/core/gemm.h), which picks the
 * backend and cuts C into strips fixed by the shape over the pool.  bf16
 * steps set RT_GEMM_BF16 (cg->gemm_flags). */
static void gemm(Cg *cg, bool ta, bool tb, LLVMValueRef M, int64_t N, LLVMValueRef K, LLVMValueRef A, int64_t lda,
                 LLVMValueRef Bm, int64_t ldb, LLVMValueRef C, int64_t ldc, LLVMValueRef accumulate)
{
    LLVMValueRef beta = LLVMBuildSelect(cg->b, accumulate, cg_real(cg, 1), cg_real(cg, 0), "beta");
    LLVMValueRef flags = LLVMBuildOr(cg->b, cg->gemm_flags, cg_i32(cg, (ta ? RT_GEMM_TA : 0) | (tb ? RT_GEMM_TB : 0)), "");
    LLVMValueRef args[] = {cg->pool, flags, M, cg_i64(cg, N), K, A, cg_i64(cg, lda), Bm, cg_i64(cg, ldb), beta, C,
                           cg_i64(cg, ldc)};
    call(cg, "rt_matmul", true, "piIIIpIpIRpI", args);
}

static LLVMValueRef rows_of(Cg *cg, const IrNode *n)
{
    return n->tok ? cg->BT : cg_i64(cg, n->rows);
}

/* MATMUL: x (M, K) and
 *   trans_b: W [N, K], y = x W^T  -> gemm(N, T): lda K, ldb K
 *   else:    W [K, N], y = x W    -> gemm(N, N): lda K, ldb N */
static void check_matmul(const IrNode *x)
{
    const IrNode *a = x->in[0], *w = x->in[1];
    int64_t K = a->width, N = x->width;
    if (w->tok || (x->trans_b ? w->width != K || w->rows != N : w->rows != K || w->width != N) ||
        a->tok != x->tok || (!a->tok && a->rows != x->rows))
        die("lower: %%%d: matmul shapes do not agree", x->id);
}

/* M rows of a MATMUL: C = A op(W) (+ C when accumulating). */
static void matmul_rows(Cg *cg, const IrNode *x, LLVMValueRef M, LLVMValueRef A, LLVMValueRef C)
{
    int64_t K = x->in[0]->width, N = x->width;
    gemm(cg, false, x->trans_b, M, N, cg_i64(cg, K), A, K, cg_home(cg, x->in[1]), x->trans_b ? K : N, C, N,
         cg_accumulates(cg, x));
}

static void lower_matmul(Cg *cg, const IrNode *x)
{
    check_matmul(x);
    matmul_rows(cg, x, rows_of(cg, x), cg_home(cg, x->in[0]), cg_home(cg, x));
}

static void check_matmul_grad_w(const IrNode *x)
{
    const IrNode *a = x->in[0], *b = x->in[1];
    if (x->tok || x->rows != a->width || x->width != b->width || a->tok != b->tok ||
        (!a->tok && a->rows != b->rows))
        die("lower: %%%d: matmul_grad_w result is not [wa, wb]", x->id);
}

/* MATMUL_GRAD_W over R rows: y [wa, wb] = a^T b (+ y when `acc`), a (R, wa) at A, b (R, wb) at Bm. */
static void matmul_grad_w_rows(Cg *cg, const IrNode *x, LLVMValueRef R, LLVMValueRef A, LLVMValueRef Bm,
                               LLVMValueRef acc)
{
    int64_t wa = x->in[0]->width, wb = x->in[1]->width;
    gemm(cg, true, false, cg_i64(cg, wa), wb, R, A, wa, Bm, wb, cg_home(cg, x), wb, acc);
}

/* MATMUL_GRAD_W: y [wa, wb] (+)= a^T b over the R rows of a (R, wa), b (R, wb). */
static void lower_matmul_grad_w(Cg *cg, const IrNode *x)
{
    check_matmul_grad_w(x);
    matmul_grad_w_rows(cg, x, rows_of(cg, x->in[0]), cg_home(cg, x->in[0]), cg_home(cg, x->in[1]),
                       cg_accumulates(cg, x));
}

/* ---- embedding and rotary embedding ---- */

/* EMBED rows [r0, r1): y[r] = table[ids[r]].  ctx: y, ids, table, vocab, d */
static void embed_task(Cg *cg, const void *info, LLVMValueRef *v, LLVMValueRef r0, LLVMValueRef r1, LLVMValueRef t)
{
    call(cg, "rt_embed", true, "pppIIII", (LLVMValueRef[]){v[0], v[1], v[2], r0, r1, v[3], v[4]});
}

static void lower_embed(Cg *cg, const IrNode *x)
{
    const IrNode *table = x->in[1];
    LLVMValueRef v[] = {cg_home(cg, x), cg_home(cg, x->in[0]), cg_home(cg, table), cg_i64(cg, table->rows),
                        cg_i64(cg, x->width)};
    run(cg, "embed", "pppII", embed_task, v, cg->BT, cg_i64(cg, 64));
}

/* EMBED_GRAD columns [c0, c1): dtable[ids[r]][c] += g[r][c], the columns
 * zeroed first unless accumulating.  ctx: dtable, ids, g, rows, vocab, d, acc */
static void embed_grad_task(Cg *cg, const void *info, LLVMValueRef *v, LLVMValueRef c0, LLVMValueRef c1,
                            LLVMValueRef t)
{
    LLVMBasicBlockRef join = cg_if(cg, LLVMBuildNot(cg->b, v[6], ""), "zero");
    Loop l = cg_loop_begin(cg, cg_i64(cg, 0), v[4], NULL, "row");
    LLVMValueRef at = LLVMBuildAdd(cg->b, LLVMBuildMul(cg->b, l.i, v[5], ""), c0, "");
    cg_zero(cg, cg_elem(cg, v[0], at), LLVMBuildSub(cg->b, c1, c0, ""));
    cg_loop_end(cg, &l, NULL);
    cg_endif(cg, join);
    call(cg, "rt_embed_grad", true, "pppIIIII", (LLVMValueRef[]){v[0], v[1], v[2], c0, c1, v[3], v[4], v[5]});
}

static void lower_embed_grad(Cg *cg, const IrNode *x)
{
    const IrNode *g = x->in[1];
    LLVMValueRef v[] = {cg_home(cg, x),        cg_home(cg, x->in[0]), cg_home(cg, g),         rows_of(cg, g),
                        cg_i64(cg, x->rows),   cg_i64(cg, x->width),  cg_accumulates(cg, x)};
    run(cg, "embed_grad", "pppIIIb", embed_grad_task, v, cg_i64(cg, x->width), cg_i64(cg, 64));
}

void lower_rope_tables(Cg *cg)
{
    const IrGraph *g = cg->g;
    for (int i = 0; i < g->nodes.n; i++) {
        const IrNode *x = g->nodes.v[i];
        MemSlot s = cg->ly->table[i];
        bool first = s.region != MEM_NONE;
        for (int j = 0; j < i && first; j++)
            first = !(cg->ly->table[j].region == s.region && cg->ly->table[j].off == s.off);
        if (!first)
            continue;
        LLVMValueRef args[] = {cg_table_home(cg, x), cg->kv_pos, cg->T, cg_i64(cg, head_size(x)),
                               LLVMConstReal(cg->f64, x->num)};
        call(cg, "rt_rope_table", true, "pIIId", args);
    }
}

/* ROPE / ROPE_GRAD rows [r0, r1).  ctx: y, x, table, T, W, heads, inverse */
static void rope_task(Cg *cg, const void *info, LLVMValueRef *v, LLVMValueRef r0, LLVMValueRef r1, LLVMValueRef t)
{
    LLVMValueRef inv = LLVMBuildTrunc(cg->b, v[6], cg->i32, "");
    call(cg, "rt_rope", true, "pppIIIIIi", (LLVMValueRef[]){v[0], v[1], v[2], r0, r1, v[3], v[4], v[5], inv});
}

static void lower_rope(Cg *cg, const IrNode *x)
{
    int64_t hd = head_size(x);
    if (hd % 2 || !x->tok || !x->in[0]->tok || x->in[0]->width != x->width)
        die("lower: %%%d: rope needs (B,T,heads x even head size)", x->id);
    LLVMValueRef v[] = {cg_home(cg, x),       cg_home(cg, x->in[0]), cg_table_home(cg, x),
                        cg->T,                cg_i64(cg, x->width),  cg_i64(cg, x->heads),
                        cg_i64(cg, x->op == IR_ROPE_GRAD)};
    run(cg, "rope", "pppIIII", rope_task, v, cg->BT, cg_i64(cg, 64));
}

/* ---- attention ---- */

static void check_attention(const IrNode *x, int nin)
{
    head_size(x);
    for (int k = 0; k < nin; k++)
        if (!x->tok || !x->in[k]->tok || x->in[k]->width != x->width)
            die("lower: %%%d (%s): operand %d is not (B,T,width)", x->id, ir_op_info[x->op].text, k);
}

/* This thread's work area: work + thread * stride bytes. */
static LLVMValueRef thread_work(Cg *cg, LLVMValueRef work, LLVMValueRef stride, LLVMValueRef thread)
{
    return cg_byte(cg, work, LLVMBuildMul(cg->b, LLVMBuildSExt(cg->b, thread, cg->i64, ""), stride, ""));
}

/* ATTENTION units [u0, u1).  ctx: out, lse, q, k, v, work, stride, T, W, heads */
static void attention_task(Cg *cg, const void *info, LLVMValueRef *v, LLVMValueRef u0, LLVMValueRef u1,
                           LLVMValueRef t)
{
    LLVMValueRef args[] = {v[0], v[1], v[2], v[3], v[4], thread_work(cg, v[5], v[6], t), u0, u1, v[7], v[8], v[9]};
    call(cg, "rt_attention", true, "ppppppIIIII", args);
}

static LLVMValueRef work_stride(Cg *cg)
{
    return cg_i64(cg, cg->ly->unit_bytes[MEM_THREAD]);
}

/* KV_APPEND rows [r0, r1).  ctx: kc, vc, k, v, T, pos, max_T, W */
static void kv_append_task(Cg *cg, const void *info, LLVMValueRef *v, LLVMValueRef r0, LLVMValueRef r1,
                           LLVMValueRef t)
{
    LLVMValueRef args[] = {v[0], v[1], v[2], v[3], r0, r1, v[4], v[5], v[6], v[7]};
    call(cg, "rt_kv_append", true, "ppppIIIIII", args);
}

/* ATTENTION over the KV cache units [u0, u1).  ctx: out, q, kc, vc, work, stride, T, pos, max_T, W, heads */
static void attention_cached_task(Cg *cg, const void *info, LLVMValueRef *v, LLVMValueRef u0, LLVMValueRef u1,
                                  LLVMValueRef t)
{
    LLVMValueRef args[] = {v[0], v[1], v[2], v[3], thread_work(cg, v[4], v[5], t), u0, u1, v[6], v[7], v[8], v[9],
                           v[10]};
    call(cg, "rt_attention_cached", true, "pppppIIIIIII", args);
}

/* ATTENTION in strata_decode: the new keys and values into the cache at
 * kv_pos, then the new queries over positions 0 .. kv_pos + T - 1 (no lse:
 * nothing goes backward). */
static void lower_attention_decode(Cg *cg, const IrNode *x)
{
    LLVMValueRef kc = cg_kv_home(cg, x);
    LLVMValueRef vc = cg_elem(cg, kc, LLVMBuildMul(cg->b, LLVMBuildMul(cg->b, cg->B, cg->kv_len, ""),
                                                   cg_i64(cg, x->width), ""));
    LLVMValueRef a[] = {kc, vc, cg_home(cg, x->in[1]), cg_home(cg, x->in[2]), cg->T, cg->kv_pos, cg->kv_len,
                        cg_i64(cg, x->width)};
    run(cg, "kv_append", "ppppIIII", kv_append_task, a, cg->BT, cg_i64(cg, 64));
    LLVMValueRef v[] = {cg_home(cg, x), cg_home(cg, x->in[0]), kc, vc, cg->region[MEM_THREAD], work_stride(cg),
                        cg->T, cg->kv_pos, cg->kv_len, cg_i64(cg, x->width), cg_i64(cg, x->heads)};
    run(cg, "attention_cached", "pppppIIIIII", attention_cached_task, v,
        LLVMBuildMul(cg->b, cg->B, cg_i64(cg, x->heads), ""), cg_i64(cg, 1));
}

static void lower_attention(Cg *cg, const IrNode *x)
{
    check_attention(x, 3);
    if (cg->decode) {
        lower_attention_decode(cg, x);
        return;
    }
    LLVMValueRef v[] = {cg_home(cg, x),        cg_aux_home(cg, x),    cg_home(cg, x->in[0]), cg_home(cg, x->in[1]),
                        cg_home(cg, x->in[2]), cg->region[MEM_THREAD], work_stride(cg),     cg->T,
                        cg_i64(cg, x->width),  cg_i64(cg, x->heads)};
    run(cg, "attention", "ppppppIIII", attention_task, v, LLVMBuildMul(cg->b, cg->B, cg_i64(cg, x->heads), ""),
        cg_i64(cg, 1));
}

/* ATTENTION_GRAD units.  ctx: dq, dk, dv, q, k, v, out, lse, g, work, stride, T, W, heads */
static void attention_grad_task(Cg *cg, const void *info, LLVMValueRef *v, LLVMValueRef u0, LLVMValueRef u1,
                                LLVMValueRef t)
{
    LLVMValueRef args[] = {v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], thread_work(cg, v[9], v[10], t),
                           u0,   u1,   v[11], v[12], v[13]};
    call(cg, "rt_attention_grad", true, "ppppppppppIIIII", args);
}

/* ATTENTION_GRAD: the kernel computes dq, dk and dv together, so the first
 * node of a group (memplan_attention_group) makes the one call and its
 * siblings (the other `which`) get their values from it; the memory plan
 * places all three from that kernel on.  A gradient no node asks for (an
 * operand that needs none) goes to a malloc'd spare: a rare case that no
 * model in models/ has. */
static void lower_attention_grad(Cg *cg, const IrNode *x)
{
    if (cg->attn_grad_done[x->id])
        return;
    check_attention(x, 4);
    const IrNode *fwd = x->saved, *sib[3];
    if (!fwd || fwd->op != IR_ATTENTION)
        die("lower: %%%d: attention_grad without its forward attention", x->id);
    memplan_attention_group(cg->g, x, sib);
    LLVMValueRef bytes = LLVMBuildMul(cg->b, LLVMBuildMul(cg->b, cg->BT, cg_i64(cg, x->width), ""),
                                      cg_i64(cg, cg->elem), "");
    LLVMValueRef d[3], spare[3] = {NULL, NULL, NULL};
    for (int w = 0; w < 3; w++) {
        if (sib[w]) {
            d[w] = cg_home(cg, sib[w]);
            cg->attn_grad_done[sib[w]->id] = true;
        } else {
            d[w] = spare[w] = cg_call(cg, cg_extern(cg, "malloc", cg->ptr, &cg->i64, 1), &bytes, 1);
        }
    }
    LLVMValueRef v[] = {d[0],  d[1], d[2], cg_home(cg, x->in[0]), cg_home(cg, x->in[1]), cg_home(cg, x->in[2]),
                        cg_home(cg, fwd), cg_aux_home(cg, fwd), cg_home(cg, x->in[3]), cg->region[MEM_THREAD],
                        work_stride(cg), cg->T, cg_i64(cg, x->width), cg_i64(cg, x->heads)};
    run(cg, "attention_grad", "ppppppppppIIII", attention_grad_task, v,
        LLVMBuildMul(cg->b, cg->B, cg_i64(cg, x->heads), ""), cg_i64(cg, 1));
    for (int w = 0; w < 3; w++)
        if (spare[w])
            cg_call(cg, cg_extern(cg, "free", cg->voidt, &cg->ptr, 1), &spare[w], 1);
}

/* ---- cross-entropy ---- */

/* CROSS_ENTROPY rows.  ctx: row_loss, lse, logits, targets, mask, V */
static void ce_task(Cg *cg, const void *info, LLVMValueRef *v, LLVMValueRef r0, LLVMValueRef r1, LLVMValueRef t)
{
    call(cg, "rt_cross_entropy_rows", true, "pppppIII", (LLVMValueRef[]){v[0], v[1], v[2], v[3], v[4], r0, r1, v[5]});
}

/* CROSS_ENTROPY: aux = lse (B*T) then row losses (B*T); the mean serially
 * (in double, in row order). */
static void lower_cross_entropy(Cg *cg, const IrNode *x)
{
    const IrNode *lg = x->in[0];
    if (!lg->tok || x->tok || x->width != 1)
        die("lower: %%%d: cross_entropy is not logits -> scalar", x->id);
    LLVMValueRef aux = cg_aux_home(cg, x), row_loss = cg_elem(cg, aux, cg->BT);
    LLVMValueRef v[] = {row_loss, aux, cg_home(cg, lg), cg_home(cg, x->in[1]), cg->mask, cg_i64(cg, lg->width)};
    run(cg, "cross_entropy", "pppppI", ce_task, v, cg->BT, cg_i64(cg, 16));
    call(cg, "rt_cross_entropy_mean", true, "pppI", (LLVMValueRef[]){cg_home(cg, x), row_loss, cg->mask, cg->BT});
}

/* CE_GRAD rows c0 + [r0, r1), dlogits and logits from row c0.
 * ctx: dlogits, logits, targets, mask, lse, g, c0, rows, V */
static void ce_grad_task(Cg *cg, const void *info, LLVMValueRef *v, LLVMValueRef r0, LLVMValueRef r1,
                         LLVMValueRef t)
{
    LLVMValueRef args[] = {v[0], v[1], v[2], v[3], v[4], v[5], v[6], LLVMBuildAdd(cg->b, v[6], r0, ""),
                           LLVMBuildAdd(cg->b, v[6], r1, ""), v[7], v[8]};
    call(cg, "rt_cross_entropy_grad", true, "ppppppIIIII", args);
}

/* CE_GRAD: every row written (masked rows as zeros). */
static void lower_ce_grad(Cg *cg, const IrNode *x)
{
    const IrNode *lg = x->in[0], *gn = x->in[2], *ce = x->saved;
    if (!x->tok || x->width != lg->width || gn->tok || gn->width != 1 || !ce || ce->op != IR_CROSS_ENTROPY)
        die("lower: %%%d: cross_entropy_grad is not (B,T,V) with a scalar gradient", x->id);
    LLVMValueRef v[] = {cg_home(cg, x),      cg_home(cg, lg), cg_home(cg, x->in[1]), cg->mask,    cg_aux_home(cg, ce),
                        cg_home(cg, gn),     cg_i64(cg, 0),   cg->BT,                cg_i64(cg, lg->width)};
    run(cg, "cross_entropy_grad", "ppppppIII", ce_grad_task, v, cg->BT, cg_i64(cg, 16));
}

/* ---- the head in chunks of rows (ir/memplan.h MemHead) ---- */

/* Row c0 of token value n: the chunk itself when n is the logits or their
 * gradient (it holds rows c0 .. c0 + n - 1), else home + c0 width. */
static LLVMValueRef head_rows_ptr(Cg *cg, const IrNode *n, LLVMValueRef chunk, LLVMValueRef c0)
{
    const MemHead *h = &cg->ly->head;
    if (n == h->logits || n == h->grad)
        return chunk;
    return cg_elem(cg, cg_home(cg, n), LLVMBuildMul(cg->b, c0, cg_i64(cg, n->width), ""));
}

/* rows = memplan_head_rows (B T / 4 by default; at most cg->head_cap), the
 * chunk the logits' MEM_ROWS buffer or their spare row (memplan.h), and
 * for (c0 = 0; c0 < B T; c0 += rows), n = min(rows, B T - c0):
 *   chunk = logits of rows c0 .. c0+n (copied to StrataStep.logits if given)
 *   the cross-entropy's lse and row losses of those rows
 *   chunk = their gradient (over the logits, rt_cross_entropy_grad)
 *   the input's gradient of those rows, and the weight's gradient
 *   (+)= chunk^T input rows (added from the second chunk on)
 * then the loss, the mean of the row losses, as the whole kernels do.  Each
 * row's logits, loss and gradients are those of the whole product (rows
 * are independent); only the weight's gradient is summed over the chunks
 * in turn. */
void lower_head_chunks(Cg *cg)
{
    const MemHead *h = &cg->ly->head;
    const IrNode *L = h->logits, *ce = h->ce, *d = h->grad, *dx = h->dx, *dw = h->dw;
    check_matmul(L);
    check_matmul(dx);
    check_matmul_grad_w(dw);
    if (d->width != L->width || d->in[2]->tok || d->in[2]->width != 1)
        die("lower: %%%d: cross_entropy_grad is not (B,T,V) with a scalar gradient", d->id);
    int64_t V = L->width;
    LLVMValueRef rows = LLVMBuildSDiv(cg->b, LLVMBuildMul(cg->b, cg->BT, cg_i64(cg, h->unit), ""),
                                      cg_i64(cg, h->row_bytes), "");
    LLVMValueRef spare = LLVMBuildICmp(cg->b, LLVMIntSLT, rows, cg_i64(cg, 1), "spare");
    LLVMValueRef R = LLVMBuildSelect(cg->b, spare, cg_i64(cg, 1), rows, "rows");
    if (cg->head_cap > 0)
        R = LLVMBuildSelect(cg->b, LLVMBuildICmp(cg->b, LLVMIntSGT, R, cg_i64(cg, cg->head_cap), ""),
                            cg_i64(cg, cg->head_cap), R, "rows");
    LLVMValueRef chunk = LLVMBuildSelect(cg->b, spare, cg_aux_home(cg, L), cg_slot_ptr(cg, cg->ly->value[L->id], L),
                                         "chunk");
    LLVMValueRef aux = cg_aux_home(cg, ce), row_loss = cg_elem(cg, aux, cg->BT);
    LLVMValueRef nchunks = LLVMBuildSDiv(cg->b, LLVMBuildSub(cg->b, LLVMBuildAdd(cg->b, cg->BT, R, ""), cg_i64(cg, 1), ""),
                                         R, "");
    Loop lp = cg_loop_begin(cg, cg_i64(cg, 0), nchunks, NULL, "head_chunk");
    LLVMValueRef c0 = LLVMBuildMul(cg->b, lp.i, R, "c0"), left = LLVMBuildSub(cg->b, cg->BT, c0, "");
    LLVMValueRef n = LLVMBuildSelect(cg->b, LLVMBuildICmp(cg->b, LLVMIntSLT, left, R, ""), left, R, "n");
    matmul_rows(cg, L, n, head_rows_ptr(cg, L->in[0], chunk, c0), chunk);
    LLVMBasicBlockRef join = cg_if(cg, LLVMBuildIsNotNull(cg->b, cg->logits_out, ""), "logits_out");
    LLVMValueRef at = LLVMBuildMul(cg->b, c0, cg_i64(cg, V), "");
    cg_copy(cg, cg_elem(cg, cg->logits_out, at), chunk, LLVMBuildMul(cg->b, n, cg_i64(cg, V), ""), false);
    cg_endif(cg, join);
    LLVMValueRef mask = LLVMBuildSelect(cg->b, LLVMBuildIsNull(cg->b, cg->mask, ""), LLVMConstNull(cg->ptr),
                                        cg_elem(cg, cg->mask, c0), "mask");
    LLVMValueRef tg = LLVMBuildGEP2(cg->b, cg->i32, cg_home(cg, ce->in[1]), &c0, 1, "targets");
    LLVMValueRef v[] = {cg_elem(cg, row_loss, c0), cg_elem(cg, aux, c0), chunk, tg, mask, cg_i64(cg, V)};
    run(cg, "cross_entropy", "pppppI", ce_task, v, n, cg_i64(cg, 16));
    LLVMValueRef vg[] = {chunk, chunk, cg_home(cg, d->in[1]), cg->mask, aux, cg_home(cg, d->in[2]), c0, cg->BT,
                         cg_i64(cg, V)};
    run(cg, "cross_entropy_grad", "ppppppIII", ce_grad_task, vg, n, cg_i64(cg, 16));
    LLVMValueRef later = LLVMBuildICmp(cg->b, LLVMIntSGT, c0, cg_i64(cg, 0), "");
    for (int pass = 0; pass < 2; pass++) {
        bool x_first = dx->kernel < dw->kernel;
        if ((pass == 0) == x_first)
            matmul_rows(cg, dx, n, chunk, head_rows_ptr(cg, dx, chunk, c0));
        else
            matmul_grad_w_rows(cg, dw, n, head_rows_ptr(cg, dw->in[0], chunk, c0),
                               head_rows_ptr(cg, dw->in[1], chunk, c0),
                               LLVMBuildOr(cg->b, cg_accumulates(cg, dw), later, ""));
    }
    cg_loop_end(cg, &lp, NULL);
    call(cg, "rt_cross_entropy_mean", true, "pppI", (LLVMValueRef[]){cg_home(cg, ce), row_loss, cg->mask, cg->BT});
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
