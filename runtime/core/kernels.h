/* kernels.h - C kernels that generated code calls for the ops that are not
 * simple loops: EMBED, EMBED_GRAD, ROPE, ROPE_GRAD, ATTENTION,
 * ATTENTION_GRAD, CROSS_ENTROPY, CE_GRAD (semantics in compiler/ir/ir.h; the
 * fp64 oracle is compiler/ir/interp.c).  Every kernel exists twice, NAME_f32
 * (REAL = float) and NAME_f64 (REAL = double), generated from one body in
 * kernels_impl.h.  The kernels allocate nothing and keep no global state;
 * the caller owns every buffer, including the attention scratch.
 *
 * Conventions (as llm.c): outputs, then inputs, then weights/tables, then
 * scratch, then sizes; a shape comment on every pointer; all sizes int64_t;
 * tensors row-major, one row per token (rows = B*T).  Where the work splits
 * without races a kernel takes a half-open range [r0, r1) (rows, columns or
 * (sequence, head) units, as each comment says) so a thread pool can give
 * each thread a piece; calling with the full range is the single-threaded
 * use.  Pieces of one call must not overlap and must together cover the
 * full range.
 *
 * Precision: arithmetic is in REAL, except the softmax normalizers (sum of
 * exponentials in attention and cross-entropy), the attention backward's
 * D = rowsum(g * out), and the cross-entropy mean and count, which are
 * accumulated in double.  exp is libm's exp in double and an inline
 * polynomial in float (about 1 ulp, see kernels.c), so that loops around
 * it vectorise.  No -ffast-math needed:
 * the attention tile products use GNU C vectors (see kernels.c), the other
 * loops are plain restrict-qualified loops.  -O2 works; -mavx2 -mfma (or
 * -march=native) about doubles the attention speed. */
#ifndef STRATA_KERNELS_H
#define STRATA_KERNELS_H
#include <stdint.h>

/* Attention tile sizes: queries and keys per tile.  A call holds at most a
 * RT_ATTN_TILE_Q x RT_ATTN_TILE_K tile of scores (two in the backward:
 * probabilities and their gradient), never T x T. */
#define RT_ATTN_TILE_Q 64
#define RT_ATTN_TILE_K 64

/* Scratch for one concurrent call of rt_attention_* / rt_attention_grad_*,
 * in REAL elements (the same count for _f32 and _f64), for head size hd.
 * Each thread needs its own.  Inline, so that the compiler's memory plan
 * (compiler/ir/memplan.c) sizes it without linking the runtime. */
static inline int64_t rt_attention_work_numel(int64_t hd)
{
    /* qst (hd, BQ); acc (BQ, hd); st (BK, BQ) */
    return 2 * RT_ATTN_TILE_Q * hd + RT_ATTN_TILE_K * RT_ATTN_TILE_Q;
}

static inline int64_t rt_attention_grad_work_numel(int64_t hd)
{
    /* kt, vt (hd, BK); dka, dva (BK, hd); p, ds (BQ, BK) */
    return 4 * hd * RT_ATTN_TILE_K + 2 * RT_ATTN_TILE_Q * RT_ATTN_TILE_K;
}

/* The prototypes, for one precision: REAL is the element type, S the name
 * suffix.  Instantiated for float/_f32 and double/_f64 below.
 *
 * rt_embed: y[r] = table[tokens[r]] for rows r in [r0, r1).  Token ids are
 *   trusted: the caller checks 0 <= id < vocab (an assert catches a bad one
 *   in builds without NDEBUG).
 *
 * rt_embed_grad: dtable[tokens[r]][c] += g[r][c] for every row r < rows
 *   and the columns c in [c0, c1).  ACCUMULATES: the caller zeroes dtable
 *   first (or keeps it to add, e.g. a tied output projection's gradient).
 *   Split by columns, not rows: two rows may carry the same token, two
 *   column ranges never touch the same element.  Ids trusted as rt_embed.
 *
 * rt_rope_table: fills cos_sin (T, 2, hd/2) for the positions t0 .. t0 + T
 *   - 1: row t holds, for position p = t0 + t, cos_sin[t][0][i] = cos(theta)
 *   and cos_sin[t][1][i] = sin(theta), theta = p base^(-2i/hd), computed in
 *   double (so a position's row is the same whatever t0).  Fill it once per
 *   (t0, T, hd, base); rt_rope reads it (t0 > 0: a decode step's new tokens).
 *   (cos and sin in separate runs, not interleaved, so the rope loop loads
 *   them contiguously.)
 *
 * rt_rope: rows r in [r0, r1) of (rows, W), W = heads * hd, hd even; the
 *   token's position is t = r % T.  Within each head, the pair (a, b) =
 *   (x[i], x[i + hd/2]), i < hd/2, becomes (a cos - b sin, a sin + b cos).
 *   inverse = 1 rotates by -theta: that is ROPE_GRAD (rotation transposed).
 *   y may equal x (in place); otherwise they must not overlap.
 *
 * rt_attention: causal multi-head attention, FlashAttention-style (online
 *   softmax over key tiles; no T x T matrix).  q, k, v, out are (B, T, W)
 *   with head h in columns [h hd, (h+1) hd), hd = W / heads; per head
 *   out[t] = sum_{u <= t} softmax_u(q[t].k[u] / sqrt(hd)) v[u].  lse
 *   (B, heads, T) gets log sum_{u <= t} exp(q[t].k[u] / sqrt(hd)), which
 *   the backward needs.  Work units are (sequence b, head h) pairs, numbered
 *   bh = b * heads + h; the call does bh in [bh0, bh1): the full range is
 *   [0, B * heads).  work: rt_attention_work_numel(hd) REALs.
 *
 * rt_attention_cached: the same for T new queries per sequence at
 *   positions pos .. pos + T - 1 over a cache: kc, vc (B, max_T, W) hold
 *   the keys and values of positions 0 .. pos + T - 1 (the new ones
 *   included; pos + T <= max_T), q and out are (B, T, W); no lse.  The
 *   attention of incremental decoding with a KV cache (one new token per
 *   step after a prompt).  The key tiles are those of rt_attention, so
 *   each output row is computed as rt_attention computes the row of the
 *   same position over the whole sequence.  Units and work as rt_attention.
 *
 * rt_kv_append: for rows r in [r0, r1) of k and v (B, T, W), b = r / T,
 *   t = r % T: row r goes to position pos + t of sequence b in the caches
 *   kc, vc (B, max_T, W) (pos + T <= max_T).  What a decode step does with
 *   its new keys and values before rt_attention_cached.
 *
 * rt_attention_grad: dq, dk, dv (B, T, W) of the attention above given g =
 *   d loss / d out, for the units bh in [bh0, bh1) (full: [0, B * heads)).
 *   Needs the forward's out and lse; recomputes probabilities from lse
 *   (FlashAttention-2: D = rowsum(g * out), dS = P (dP - D)).  The kernel
 *   OVERWRITES the head columns of its units in dq, dk and dv (no zeroing
 *   needed; contributions over queries are summed in scratch).  work:
 *   rt_attention_grad_work_numel(hd) REALs.
 *
 * rt_cross_entropy_rows: for rows r in [r0, r1) of logits (rows, V), with
 *   m = mask[r] (mask NULL = all ones):
 *     lse[r] = log sum_j exp(logits[r][j]),
 *     row_loss[r] = m (lse[r] - logits[r][targets[r]]).
 *   Rows with m == 0 do not read their target (fine-tuning marks prompt
 *   tokens with -1 or -100) nor their logits: row_loss = lse = 0 there.
 *   Targets of the other rows are trusted to be in [0, V), as token ids.
 * rt_cross_entropy_mean: loss[0] = sum_r row_loss[r] / count, count =
 *   sum_r mask[r] (rows if mask is NULL); 0 if count == 0.  Sums in double.
 * rt_cross_entropy: both of the above over all rows (single-threaded use).
 *
 * rt_cross_entropy_grad: for rows r in [r0, r1):
 *     dlogits[r][j] = g[0] mask[r] (exp(logits[r][j] - lse[r]) - [j == targets[r]]) / count
 *   with lse from rt_cross_entropy_rows and count over all rows (each call
 *   recomputes it from mask: rows additions).  Rows with mask 0 (and all
 *   rows when count == 0) are written as zeros without reading the target.
 *   dlogits may be logits (the gradient written over the logits).  dlogits
 *   and logits start at row c0 (c0 <= r0): row r is at (r - c0) V, so a
 *   step can hold a chunk of rows of them (ir/memplan.h MemHead); targets,
 *   mask and lse are whole. */
#define RT_KERNELS_DECLARE(REAL, S)                                                                          \
    void rt_embed##S(REAL *y /* (rows, d) */, const int32_t *tokens /* (rows) */,                            \
                     const REAL *table /* (vocab, d) */, int64_t r0, int64_t r1, int64_t vocab, int64_t d);  \
    void rt_embed_grad##S(REAL *dtable /* (vocab, d), accumulated */, const int32_t *tokens /* (rows) */,    \
                          const REAL *g /* (rows, d) */, int64_t c0, int64_t c1, int64_t rows, int64_t vocab, \
                          int64_t d);                                                                        \
    void rt_rope_table##S(REAL *cos_sin /* (T, 2, hd/2) */, int64_t t0, int64_t T, int64_t hd, double base); \
    void rt_rope##S(REAL *y /* (rows, W) */, const REAL *x /* (rows, W) */,                                  \
                    const REAL *cos_sin /* (T, 2, hd/2) */, int64_t r0, int64_t r1, int64_t T, int64_t W,    \
                    int64_t heads, int inverse);                                                             \
    void rt_attention##S(REAL *out /* (B, T, W) */, REAL *lse /* (B, heads, T) */,                           \
                         const REAL *q /* (B, T, W) */, const REAL *k /* (B, T, W) */,                       \
                         const REAL *v /* (B, T, W) */, REAL *work /* (rt_attention_work_numel(hd)) */,      \
                         int64_t bh0, int64_t bh1, int64_t T, int64_t W, int64_t heads);                     \
    void rt_attention_cached##S(REAL *out /* (B, T, W) */, const REAL *q /* (B, T, W) */,                    \
                                const REAL *kc /* (B, max_T, W) */, const REAL *vc /* (B, max_T, W) */,     \
                                REAL *work /* (rt_attention_work_numel(hd)) */, int64_t bh0, int64_t bh1,   \
                                int64_t T, int64_t pos, int64_t max_T, int64_t W, int64_t heads);           \
    void rt_kv_append##S(REAL *kc /* (B, max_T, W) */, REAL *vc /* (B, max_T, W) */,                          \
                         const REAL *k /* (B, T, W) */, const REAL *v /* (B, T, W) */, int64_t r0, int64_t r1,   \
                         int64_t T, int64_t pos, int64_t max_T, int64_t W);                                      \
    void rt_attention_grad##S(REAL *dq /* (B, T, W) */, REAL *dk /* (B, T, W) */, REAL *dv /* (B, T, W) */,  \
                              const REAL *q /* (B, T, W) */, const REAL *k /* (B, T, W) */,                  \
                              const REAL *v /* (B, T, W) */, const REAL *out /* (B, T, W) */,                \
                              const REAL *lse /* (B, heads, T) */, const REAL *g /* (B, T, W) */,            \
                              REAL *work /* (rt_attention_grad_work_numel(hd)) */, int64_t bh0, int64_t bh1, \
                              int64_t T, int64_t W, int64_t heads);                                          \
    void rt_cross_entropy_rows##S(REAL *row_loss /* (rows) */, REAL *lse /* (rows) */,                       \
                                  const REAL *logits /* (rows, V) */, const int32_t *targets /* (rows) */,   \
                                  const REAL *mask /* (rows) or NULL */, int64_t r0, int64_t r1, int64_t V); \
    void rt_cross_entropy_mean##S(REAL *loss /* (1) */, const REAL *row_loss /* (rows) */,                   \
                                  const REAL *mask /* (rows) or NULL */, int64_t rows);                      \
    void rt_cross_entropy##S(REAL *loss /* (1) */, REAL *row_loss /* (rows) */, REAL *lse /* (rows) */,      \
                             const REAL *logits /* (rows, V) */, const int32_t *targets /* (rows) */,        \
                             const REAL *mask /* (rows) or NULL */, int64_t rows, int64_t V);                \
    void rt_cross_entropy_grad##S(REAL *dlogits /* (rows, V) */, const REAL *logits /* (rows, V) */,         \
                                  const int32_t *targets /* (rows) */, const REAL *mask /* (rows) or NULL */, \
                                  const REAL *lse /* (rows) */, const REAL *g /* (1) */, int64_t c0,         \
                                  int64_t r0, int64_t r1, int64_t rows, int64_t V);

RT_KERNELS_DECLARE(float, _f32)
RT_KERNELS_DECLARE(double, _f64)
/* x[i] = e^x[i] in float with the kernels' inline polynomial (about 1 ulp
 * of the exact value; NaN, infinities, overflow and underflow as libm), the
 * same bits wherever an element sits in the array. */
void rt_expf_array(float *x, int64_t n);
#endif
