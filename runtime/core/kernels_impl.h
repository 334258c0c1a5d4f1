/* kernels_impl.h - the one body of every kernel in kernels.h.  kernels.c
 * includes it twice, once per precision, after defining
 *   REAL      float or double
 *   VEC       a GNU C vector of REAL (see kernels.c)
 *   FN(name)  name with the precision's suffix (rt_embed -> rt_embed_f32)
 *   EXP       e^x of one REAL (see kernels.c)
 *   EXPN      x[i] = e^x[i] over an array, vectorised in float: the hot
 *             loops compute the arguments, call it, then use the results
 * No include guard on purpose.  Static helpers get suffixed names too, so
 * the two inclusions do not collide. */

#define BQ RT_ATTN_TILE_Q
#define BK RT_ATTN_TILE_K
#define VL ((int64_t)(sizeof(VEC) / sizeof(REAL))) /* REALs per vector */
#define NR (2 * VL)                                 /* columns of a gemm block */
#define FREE ((int64_t)1 << 40)                     /* no bound, in gemm */

/* s + a b as the vector blocks compute it: one fused multiply-add where
 * the build has FMA (the compiler contracts the blocks' vector `+=`), so
 * that a column gets the same bits in a vector block or in the scalar
 * tail, whatever the vector width (kernels_x512.c). */
#ifndef MADD
#ifdef __FMA__
#define MADD(a, b, s) _Generic((s), float: __builtin_fmaf, double: __builtin_fma)(a, b, s)
#else
#define MADD(a, b, s) ((s) + (a) * (b))
#endif
#endif

/* y[0..n) += a x[0..n). */
static inline void FN(axpy)(REAL *restrict y, REAL a, const REAL *restrict x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] += a * x[i];
}

/* Unaligned vector load and store (memcpy: no alignment or aliasing
 * assumptions; compilers emit one move). */
static inline VEC FN(vload)(const REAL *p)
{
    VEC v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void FN(vstore)(REAL *p, VEC v)
{
    memcpy(p, &v, sizeof v);
}

/* The register block of gemm: c rows i..i+3, columns n..n+NR, held in
 * eight vectors while k runs.  a points at A(i, 0). */
static inline void FN(block4)(REAL *restrict c, int64_t ldc, const REAL *restrict a, int64_t ai, int64_t ak,
                              const REAL *restrict b, int64_t ldb, int64_t K, bool add)
{
    const REAL *a0 = a, *a1 = a0 + ai, *a2 = a1 + ai, *a3 = a2 + ai;
    REAL *c0 = c, *c1 = c0 + ldc, *c2 = c1 + ldc, *c3 = c2 + ldc;
    VEC z = {0}, s00 = z, s01 = z, s10 = z, s11 = z, s20 = z, s21 = z, s30 = z, s31 = z;
    if (add) {
        s00 = FN(vload)(c0), s01 = FN(vload)(c0 + VL), s10 = FN(vload)(c1), s11 = FN(vload)(c1 + VL);
        s20 = FN(vload)(c2), s21 = FN(vload)(c2 + VL), s30 = FN(vload)(c3), s31 = FN(vload)(c3 + VL);
    }
    for (int64_t k = 0; k < K; k++) {
        VEC b0 = FN(vload)(b + k * ldb), b1 = FN(vload)(b + k * ldb + VL);
        REAL x0 = a0[k * ak], x1 = a1[k * ak], x2 = a2[k * ak], x3 = a3[k * ak];
        s00 += x0 * b0, s01 += x0 * b1, s10 += x1 * b0, s11 += x1 * b1;
        s20 += x2 * b0, s21 += x2 * b1, s30 += x3 * b0, s31 += x3 * b1;
    }
    FN(vstore)(c0, s00), FN(vstore)(c0 + VL, s01), FN(vstore)(c1, s10), FN(vstore)(c1 + VL, s11);
    FN(vstore)(c2, s20), FN(vstore)(c2 + VL, s21), FN(vstore)(c3, s30), FN(vstore)(c3 + VL, s31);
}

/* One row of the same: c[n..n+NR) (+)= sum_k A(i, k) b[k][n..n+NR). */
static inline void FN(block1)(REAL *restrict c, const REAL *restrict a, int64_t ak, const REAL *restrict b,
                              int64_t ldb, int64_t K, bool add)
{
    VEC s0 = {0}, s1 = {0};
    if (add)
        s0 = FN(vload)(c), s1 = FN(vload)(c + VL);
    for (int64_t k = 0; k < K; k++) {
        REAL x = a[k * ak];
        s0 += x * FN(vload)(b + k * ldb), s1 += x * FN(vload)(b + k * ldb + VL);
    }
    FN(vstore)(c, s0), FN(vstore)(c + VL, s1);
}

#if VBYTES == 64
/* block8's terms k in [k0, k1) of its rows r0..r1-1. */
static inline __attribute__((always_inline)) void FN(block8_terms)(VEC s[8][2], const REAL *restrict a, int64_t ai,
                                                                  int64_t ak, const REAL *restrict b, int64_t ldb,
                                                                  int64_t k0, int64_t k1, int r0, int r1)
{
    for (int64_t k = k0; k < k1; k++) {
        VEC b0 = FN(vload)(b + k * ldb), b1 = FN(vload)(b + k * ldb + VL);
#pragma GCC unroll 8
        for (int r = r0; r < r1; r++) {
            REAL x = a[r * ai + k * ak];
            s[r][0] += x * b0, s[r][1] += x * b1;
        }
    }
}

/* block4 for eight rows, where there are registers for them (AVX-512: 16
 * accumulators of the 32), as two blocks of four, rows 0..3 over the
 * terms k in [ka0, ka1) and rows 4..7 over [kb0, kb1) (ka0 <= kb0,
 * ka1 <= kb1: the causal band moves with the row): the terms only the
 * first block has, then the common ones with all eight rows, then the
 * second block's own.  Each row's terms in k order, as block4 adds them:
 * the same bits.  a points at A(i, 0), b at B(0, n). */
static inline void FN(block8)(REAL *restrict c, int64_t ldc, const REAL *restrict a, int64_t ai, int64_t ak,
                              const REAL *restrict b, int64_t ldb, int64_t ka0, int64_t ka1, int64_t kb0,
                              int64_t kb1, bool add)
{
    VEC z = {0}, s[8][2];
    for (int r = 0; r < 8; r++) {
        s[r][0] = add ? FN(vload)(c + r * ldc) : z;
        s[r][1] = add ? FN(vload)(c + r * ldc + VL) : z;
    }
    int64_t mid0 = kb0 < ka1 ? kb0 : ka1, mid1 = ka1 > kb0 ? ka1 : kb0;
    FN(block8_terms)(s, a, ai, ak, b, ldb, ka0, mid0, 0, 4); /* rows 0..3 only */
    FN(block8_terms)(s, a, ai, ak, b, ldb, kb0, ka1, 0, 8); /* all eight */
    FN(block8_terms)(s, a, ai, ak, b, ldb, mid1, kb1, 4, 8); /* rows 4..7 only */
    for (int r = 0; r < 8; r++)
        FN(vstore)(c + r * ldc, s[r][0]), FN(vstore)(c + r * ldc + VL, s[r][1]);
}
#endif

/* gemm's causal band for rows i..i+mr-1: the columns [*n0, *n1) they need
 * and their nonzero terms [*k0, *k1) (*k1 >= *k0). */
static inline __attribute__((always_inline)) void FN(band)(int64_t i, int64_t mr, int64_t N, int64_t K,
                                                          int64_t nlo, int64_t nhi, int64_t klo, int64_t khi,
                                                          int64_t *n0, int64_t *n1, int64_t *k0, int64_t *k1)
{
    int64_t last = i + mr - 1;
    *n0 = i + nlo > 0 ? i + nlo : 0, *n1 = last + nhi + 1 < N ? last + nhi + 1 : N;
    *k0 = i + klo > 0 ? i + klo : 0, *k1 = last + khi + 1 < K ? last + khi + 1 : K;
    *k1 = *k1 > *k0 ? *k1 : *k0;
}

/* gemm's columns [n0, n1) of rows r0..r1-1 past the vector blocks, the
 * terms [k0, k1) in k order. */
static inline __attribute__((always_inline)) void FN(edge)(REAL *restrict c, int64_t ldc, const REAL *restrict a,
                                                          int64_t ai, int64_t ak, const REAL *restrict b,
                                                          int64_t ldb, int64_t r0, int64_t r1, int64_t n0,
                                                          int64_t n1, int64_t k0, int64_t k1, bool add)
{
    for (int64_t r = r0; r < r1; r++)
        for (int64_t nn = n0; nn < n1; nn++) {
            REAL s = add ? c[r * ldc + nn] : 0;
            for (int64_t kk = k0; kk < k1; kk++)
                s = MADD(a[r * ai + kk * ak], b[kk * ldb + nn], s);
            c[r * ldc + nn] = s;
        }
}

/* c (M, N) = A B, or += if add.  A (M, K) is read as A(i, k) = a[i ai + k ak]
 * (ai = 1, ak = lda reads a stored matrix transposed); b (K, N) and c have
 * rows ldb and ldc apart.  The small matrix products of attention, on tiles
 * that sit in cache: 4 x NR blocks in registers (8 x NR with AVX-512,
 * block8), plain loops at the edges.
 * Causal band: only the elements (i, n) with i + nlo <= n <= i + nhi are
 * needed (others may be left unwritten), and only the terms with
 * i + klo <= k <= i + khi are nonzero (others are skipped); FREE = none.
 * Bounds are applied per 4-row block, so a few more are computed. */
static void FN(gemm)(REAL *restrict c, int64_t ldc, const REAL *restrict a, int64_t ai, int64_t ak,
                     const REAL *restrict b, int64_t ldb, int64_t M, int64_t N, int64_t K, bool add, int64_t nlo,
                     int64_t nhi, int64_t klo, int64_t khi)
{
    int64_t i = 0;
#if VBYTES == 64
    for (; i + 8 <= M; i += 8) { /* as the loop below on rows i..i+3 and i+4..i+7 */
        int64_t bn0[2], bn1[2], bk0[2], bk1[2];
        for (int h = 0; h < 2; h++)
            FN(band)(i + 4 * h, 4, N, K, nlo, nhi, klo, khi, &bn0[h], &bn1[h], &bk0[h], &bk1[h]);
        int64_t n = bn0[0] / NR * NR, nend = bn1[1] > bn1[0] ? bn1[1] : bn1[0];
        for (; n + NR <= N && n < nend; n += NR)
            FN(block8)(c + i * ldc + n, ldc, a + i * ai, ai, ak, b + n, ldb, bk0[0], bk1[0], bk0[1], bk1[1], add);
        for (int h = 0; h < 2; h++)
            FN(edge)(c, ldc, a, ai, ak, b, ldb, i + 4 * h, i + 4 * h + 4, n, bn1[h], bk0[h], bk1[h], add);
    }
#endif
    for (; i < M; i += 4) {
        int64_t mr = M - i < 4 ? M - i : 4, n0, n1, k0, k1;
        FN(band)(i, mr, N, K, nlo, nhi, klo, khi, &n0, &n1, &k0, &k1);
        int64_t nk = k1 - k0, n = n0 / NR * NR;
        const REAL *ak0 = a + k0 * ak, *bk0 = b + k0 * ldb;
        for (; n + NR <= N && n < n1; n += NR) {
            if (mr == 4)
                FN(block4)(c + i * ldc + n, ldc, ak0 + i * ai, ai, ak, bk0 + n, ldb, nk, add);
            else
                for (int64_t r = i; r < i + mr; r++)
                    FN(block1)(c + r * ldc + n, ak0 + r * ai, ak, bk0 + n, ldb, nk, add);
        }
        FN(edge)(c, ldc, a, ai, ak, b, ldb, i, i + mr, n, n1, k0, k1, add);
    }
}

/* sum_i a[i] b[i] in double, in four interleaved partial sums (so the
 * additions do not wait on each other and may be vectorized). */
static inline double FN(dot_wide)(const REAL *restrict a, const REAL *restrict b, int64_t n)
{
    double s[4] = {0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (int u = 0; u < 4; u++)
            s[u] += (double)a[i + u] * b[i + u];
    for (; i < n; i++)
        s[0] += (double)a[i] * b[i];
    return (s[0] + s[1]) + (s[2] + s[3]);
}

/* kt[d][j] = x[j][d] for j < n, d < hd: a tile of n rows (row stride W)
 * transposed into (hd, BK). */
static void FN(transpose_tile)(REAL *restrict kt, const REAL *restrict x, int64_t n, int64_t hd, int64_t W)
{
    for (int64_t j = 0; j < n; j++)
        for (int64_t d = 0; d < hd; d++)
            kt[d * BK + j] = x[j * W + d];
}

/* ---- embedding ---- */

void FN(rt_embed)(REAL *restrict y, const int32_t *restrict tokens, const REAL *restrict table, int64_t r0,
                  int64_t r1, int64_t vocab, int64_t d)
{
    (void)vocab; /* only for the assert */
    for (int64_t r = r0; r < r1; r++) {
        int64_t id = tokens[r];
        assert(id >= 0 && id < vocab);
        memcpy(y + r * d, table + id * d, (size_t)d * sizeof *y);
    }
}

void FN(rt_embed_grad)(REAL *restrict dtable, const int32_t *restrict tokens, const REAL *restrict g, int64_t c0,
                       int64_t c1, int64_t rows, int64_t vocab, int64_t d)
{
    (void)vocab;
    for (int64_t r = 0; r < rows; r++) {
        int64_t id = tokens[r];
        assert(id >= 0 && id < vocab);
        FN(axpy)(dtable + id * d + c0, 1, g + r * d + c0, c1 - c0);
    }
}

/* ---- rotary embedding ---- */

void FN(rt_rope_table)(REAL *cos_sin, int64_t t0, int64_t T, int64_t hd, double base)
{
    int64_t half = hd / 2;
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < half; i++) {
            double theta = (double)(t0 + t) * pow(base, -2.0 * (double)i / (double)hd);
            cos_sin[t * hd + i] = (REAL)cos(theta);
            cos_sin[t * hd + half + i] = (REAL)sin(theta);
        }
}

/* Not restrict: y may be x.  Each element is read before its own slot is
 * written, and by no other iteration. */
void FN(rt_rope)(REAL *y, const REAL *x, const REAL *cos_sin, int64_t r0, int64_t r1, int64_t T, int64_t W,
                 int64_t heads, int inverse)
{
    int64_t hd = W / heads, half = hd / 2;
    REAL sign = inverse ? -1 : 1;
    for (int64_t r = r0; r < r1; r++) {
        const REAL *c = cos_sin + (r % T) * hd, *s = c + half;
        for (int64_t h = 0; h < heads; h++) {
            const REAL *xa = x + r * W + h * hd, *xb = xa + half;
            REAL *ya = y + r * W + h * hd, *yb = ya + half;
            for (int64_t i = 0; i < half; i++) {
                REAL a = xa[i], b = xb[i], sn = sign * s[i];
                ya[i] = a * c[i] - b * sn;
                yb[i] = a * sn + b * c[i];
            }
        }
    }
}

/* ---- attention ---- */

/* Per unit (b, h) and query tile [i0, i0 + nq): the queries times scale,
 * transposed (qst (hd, BQ)), the running max m, normalizer l and
 * unnormalized output acc (nq, hd) of every query.  For each key tile
 * [j0, j0 + nk) up to the diagonal, st = k qst holds the scores transposed
 * (nk, BQ: one row per key), so the softmax bookkeeping runs along rows,
 * one lane per query: st becomes p (0 past the diagonal), acc and l are
 * rescaled by exp(m_old - m_new) where the max grew, then acc += p v. */
/* The body of rt_attention and rt_attention_cached: the T queries of q sit
 * at positions pos .. pos + T - 1 and see the keys and values 0 .. their
 * own position, rows of k and v with kT rows per sequence (rt_attention:
 * pos 0, kT = T).  The key tiles start at multiples of BK from position 0
 * either way, so a query's arithmetic does not depend on pos.  lse may be
 * NULL. */
static inline void FN(attention_body)(REAL *restrict out, REAL *restrict lse, const REAL *restrict q,
                                      const REAL *restrict k, const REAL *restrict v, REAL *restrict work,
                                      int64_t bh0, int64_t bh1, int64_t T, int64_t pos, int64_t kT, int64_t W,
                                      int64_t heads)
{
    int64_t hd = W / heads;
    REAL scale = (REAL)(1 / sqrt((double)hd));
    REAL *qst = work, *acc = qst + hd * BQ, *st = acc + BQ * hd;
    REAL m[BQ], mnew[BQ], alpha[BQ];
    double l[BQ], sum[BQ];
    for (int64_t bh = bh0; bh < bh1; bh++) {
        int64_t base = bh / heads * T * W + bh % heads * hd, kbase = bh / heads * kT * W + bh % heads * hd;
        const REAL *qb = q + base, *kb = k + kbase, *vb = v + kbase;
        for (int64_t q0 = 0; q0 < T; q0 += BQ) {
            int64_t nq = T - q0 < BQ ? T - q0 : BQ, i0 = pos + q0; /* i0: the tile's first position */
            for (int64_t ii = 0; ii < nq; ii++) {
                for (int64_t d = 0; d < hd; d++) {
                    qst[d * BQ + ii] = qb[(q0 + ii) * W + d] * scale;
                    acc[ii * hd + d] = 0;
                }
                m[ii] = -INFINITY;
                l[ii] = 0;
            }
            for (int64_t j0 = 0; j0 < i0 + nq; j0 += BK) { /* key tiles up to the last query */
                int64_t nk = i0 + nq - j0 < BK ? i0 + nq - j0 : BK;
                FN(gemm)(st, BQ, kb + j0 * W, W, 1, qst, BQ, nk, nq, hd, false, j0 - i0, FREE, -FREE, FREE);
                /* Key j0 + j is seen by the queries ii >= j0 + j - i0 (causal). */
                for (int64_t ii = 0; ii < nq; ii++)
                    mnew[ii] = m[ii], sum[ii] = 0;
                for (int64_t j = 0; j < nk; j++) {
                    const REAL *sj = st + j * BQ;
                    for (int64_t ii = j0 + j - i0 > 0 ? j0 + j - i0 : 0; ii < nq; ii++)
                        mnew[ii] = sj[ii] > mnew[ii] ? sj[ii] : mnew[ii];
                }
                for (int64_t j = 0; j < nk; j++) {
                    REAL *sj = st + j * BQ;
                    int64_t first = j0 + j - i0 > 0 ? j0 + j - i0 : 0;
                    for (int64_t ii = 0; ii < first && ii < nq; ii++)
                        sj[ii] = 0;
                    for (int64_t ii = first; ii < nq; ii++)
                        sj[ii] -= mnew[ii];
                    if (first < nq)
                        EXPN(sj + first, nq - first);
                    for (int64_t ii = first; ii < nq; ii++)
                        sum[ii] += sj[ii];
                }
                for (int64_t ii = 0; ii < nq; ii++) {
                    /* The max grew (from -inf on the first tile: alpha = 0). */
                    alpha[ii] = mnew[ii] != m[ii] ? EXP(m[ii] - mnew[ii]) : 1;
                    l[ii] = l[ii] * alpha[ii] + sum[ii];
                    m[ii] = mnew[ii];
                    if (alpha[ii] != 1)
                        for (int64_t d = 0; d < hd; d++)
                            acc[ii * hd + d] *= alpha[ii];
                }
                FN(gemm)(acc, hd, st, 1, BQ, vb + j0 * W, W, nq, hd, nk, true, -FREE, FREE, -FREE, i0 - j0);
            }
            for (int64_t ii = 0; ii < nq; ii++) {
                REAL inv = (REAL)(1 / l[ii]), *o = out + base + (q0 + ii) * W;
                for (int64_t d = 0; d < hd; d++)
                    o[d] = acc[ii * hd + d] * inv;
                if (lse)
                    lse[bh * T + q0 + ii] = (REAL)(m[ii] + log(l[ii]));
            }
        }
    }
}

void FN(rt_attention)(REAL *restrict out, REAL *restrict lse, const REAL *restrict q, const REAL *restrict k,
                      const REAL *restrict v, REAL *restrict work, int64_t bh0, int64_t bh1, int64_t T, int64_t W,
                      int64_t heads)
{
    FN(attention_body)(out, lse, q, k, v, work, bh0, bh1, T, 0, T, W, heads);
}

void FN(rt_attention_cached)(REAL *restrict out, const REAL *restrict q, const REAL *restrict kc,
                             const REAL *restrict vc, REAL *restrict work, int64_t bh0, int64_t bh1, int64_t T,
                             int64_t pos, int64_t max_T, int64_t W, int64_t heads)
{
    FN(attention_body)(out, NULL, q, kc, vc, work, bh0, bh1, T, pos, max_T, W, heads);
}

void FN(rt_kv_append)(REAL *restrict kc, REAL *restrict vc, const REAL *restrict k, const REAL *restrict v,
                      int64_t r0, int64_t r1, int64_t T, int64_t pos, int64_t max_T, int64_t W)
{
    for (int64_t r = r0; r < r1; r++) {
        int64_t at = (r / T * max_T + pos + r % T) * W;
        memcpy(kc + at, k + r * W, (size_t)W * sizeof *kc);
        memcpy(vc + at, v + r * W, (size_t)W * sizeof *vc);
    }
}

/* FlashAttention-2 backward, per unit (b, h): for each key tile [j0, j0+nk)
 * (k, v transposed into kt, vt; dk, dv summed in dka, dva (nk, hd)) and
 * each query tile [i0, i0 + nq) at or below it:
 *   p = exp(scale q kt - lse) (0 past the diagonal),  dp = g vt,
 *   ds = p (dp - D), D = rowsum(g * out),
 *   dva += p^T g,  dka += ds^T q,  dq += ds k,
 * and dk, dq are multiplied by scale once at the end. */
void FN(rt_attention_grad)(REAL *restrict dq, REAL *restrict dk, REAL *restrict dv, const REAL *restrict q,
                           const REAL *restrict k, const REAL *restrict v, const REAL *restrict out,
                           const REAL *restrict lse, const REAL *restrict g, REAL *restrict work, int64_t bh0,
                           int64_t bh1, int64_t T, int64_t W, int64_t heads)
{
    int64_t hd = W / heads;
    REAL scale = (REAL)(1 / sqrt((double)hd));
    REAL *kt = work, *vt = kt + hd * BK, *dka = vt + hd * BK, *dva = dka + BK * hd;
    REAL *p = dva + BK * hd, *ds = p + BQ * BK;
    REAL D[BQ];
    for (int64_t bh = bh0; bh < bh1; bh++) {
        int64_t base = bh / heads * T * W + bh % heads * hd;
        const REAL *qb = q + base, *kb = k + base, *vb = v + base, *ob = out + base, *gb = g + base;
        const REAL *lb = lse + bh * T;
        REAL *dqb = dq + base;
        for (int64_t i = 0; i < T; i++)
            for (int64_t d = 0; d < hd; d++)
                dqb[i * W + d] = 0;
        for (int64_t j0 = 0; j0 < T; j0 += BK) {
            int64_t nk = T - j0 < BK ? T - j0 : BK;
            FN(transpose_tile)(kt, kb + j0 * W, nk, hd, W);
            FN(transpose_tile)(vt, vb + j0 * W, nk, hd, W);
            for (int64_t x = 0; x < nk * hd; x++)
                dka[x] = dva[x] = 0;
            for (int64_t i0 = j0; i0 < T; i0 += BQ) {
                int64_t nq = T - i0 < BQ ? T - i0 : BQ;
                for (int64_t ii = 0; ii < nq; ii++)
                    D[ii] = (REAL)FN(dot_wide)(gb + (i0 + ii) * W, ob + (i0 + ii) * W, hd);
                FN(gemm)(p, BK, qb + i0 * W, W, 1, kt, BK, nq, nk, hd, false, -FREE, i0 - j0, -FREE, FREE);
                FN(gemm)(ds, BK, gb + i0 * W, W, 1, vt, BK, nq, nk, hd, false, -FREE, i0 - j0, -FREE, FREE); /* dp */
                for (int64_t ii = 0; ii < nq; ii++) {
                    REAL *pi = p + ii * BK, *dsi = ds + ii * BK, li = lb[i0 + ii];
                    int64_t jn = i0 + ii - j0 + 1;
                    jn = jn > nk ? nk : jn; /* >= 1: i0 >= j0 */
                    for (int64_t j = 0; j < jn; j++)
                        pi[j] = pi[j] * scale - li;
                    EXPN(pi, jn);
                    for (int64_t j = 0; j < jn; j++)
                        dsi[j] = pi[j] * (dsi[j] - D[ii]);
                    for (int64_t j = jn; j < nk; j++)
                        pi[j] = dsi[j] = 0;
                }
                FN(gemm)(dva, hd, p, 1, BK, gb + i0 * W, W, nk, hd, nq, true, -FREE, FREE, j0 - i0, FREE);
                FN(gemm)(dka, hd, ds, 1, BK, qb + i0 * W, W, nk, hd, nq, true, -FREE, FREE, j0 - i0, FREE);
                FN(gemm)(dqb + i0 * W, W, ds, BK, 1, kb + j0 * W, W, nq, hd, nk, true, -FREE, FREE, -FREE, i0 - j0);
            }
            for (int64_t j = 0; j < nk; j++)
                for (int64_t d = 0; d < hd; d++) {
                    dk[base + (j0 + j) * W + d] = dka[j * hd + d] * scale;
                    dv[base + (j0 + j) * W + d] = dva[j * hd + d];
                }
        }
        for (int64_t i = 0; i < T; i++)
            for (int64_t d = 0; d < hd; d++)
                dqb[i * W + d] *= scale;
    }
}

/* ---- cross-entropy ---- */

/* log sum_j exp(l[j]), the max subtracted first, the sum in double.  Both
 * loops keep 8 lanes (element j in lane j % 8, lanes combined in a fixed
 * order) so that they vectorise; the result depends only on the row. */
static double FN(logsumexp)(const REAL *restrict l, int64_t V)
{
    REAL mx[8] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    int64_t j = 0;
    for (; j + 8 <= V; j += 8)
        for (int u = 0; u < 8; u++)
            mx[u] = l[j + u] > mx[u] ? l[j + u] : mx[u];
    for (; j < V; j++)
        mx[j % 8] = l[j] > mx[j % 8] ? l[j] : mx[j % 8];
    REAL m = mx[0];
    for (int u = 1; u < 8; u++)
        m = mx[u] > m ? mx[u] : m;
    double z[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    REAL e[256]; /* a chunk of exponentials; 256 keeps j % 8 == k % 8 */
    for (j = 0; j < V; j += 256) {
        int64_t n = V - j < 256 ? V - j : 256, k = 0;
        for (int64_t x = 0; x < n; x++)
            e[x] = l[j + x] - m;
        EXPN(e, n);
        for (; k + 8 <= n; k += 8)
            for (int u = 0; u < 8; u++)
                z[u] += e[k + u];
        for (; k < n; k++)
            z[k % 8] += e[k];
    }
    return m + log(((z[0] + z[1]) + (z[2] + z[3])) + ((z[4] + z[5]) + (z[6] + z[7])));
}

void FN(rt_cross_entropy_rows)(REAL *restrict row_loss, REAL *restrict lse, const REAL *restrict logits,
                               const int32_t *restrict targets, const REAL *restrict mask, int64_t r0, int64_t r1,
                               int64_t V)
{
    for (int64_t r = r0; r < r1; r++) {
        REAL mr = mask ? mask[r] : 1;
        if (mr == 0) { /* the target may be -100: do not read it */
            row_loss[r] = lse[r] = 0;
            continue;
        }
        const REAL *l = logits + r * V;
        int64_t t = targets[r];
        assert(t >= 0 && t < V);
        double z = FN(logsumexp)(l, V);
        lse[r] = (REAL)z;
        row_loss[r] = (REAL)(mr * (z - l[t]));
    }
}

void FN(rt_cross_entropy_mean)(REAL *loss, const REAL *row_loss, const REAL *mask, int64_t rows)
{
    double sum = 0, count = mask ? 0 : (double)rows;
    for (int64_t r = 0; r < rows; r++) {
        sum += row_loss[r];
        if (mask)
            count += mask[r];
    }
    loss[0] = count != 0 ? (REAL)(sum / count) : 0;
}

void FN(rt_cross_entropy)(REAL *loss, REAL *row_loss, REAL *lse, const REAL *logits, const int32_t *targets,
                          const REAL *mask, int64_t rows, int64_t V)
{
    FN(rt_cross_entropy_rows)(row_loss, lse, logits, targets, mask, 0, rows, V);
    FN(rt_cross_entropy_mean)(loss, row_loss, mask, rows);
}

/* dlogits may be logits (remat's memory plan puts the gradient over the
 * logits): each element is read before it is written, so no restrict. */
void FN(rt_cross_entropy_grad)(REAL *dlogits, const REAL *logits, const int32_t *restrict targets,
                               const REAL *restrict mask, const REAL *restrict lse, const REAL *restrict g,
                               int64_t c0, int64_t r0, int64_t r1, int64_t rows, int64_t V)
{
    assert(c0 <= r0);
    double count = mask ? 0 : (double)rows;
    if (mask)
        for (int64_t r = 0; r < rows; r++)
            count += mask[r];
    for (int64_t r = r0; r < r1; r++) {
        REAL mr = mask ? mask[r] : 1, *d = dlogits + (r - c0) * V;
        if (mr == 0 || count == 0) {
            for (int64_t j = 0; j < V; j++)
                d[j] = 0;
            continue;
        }
        const REAL *l = logits + (r - c0) * V;
        REAL w = (REAL)((double)g[0] * mr / count), ls = lse[r];
        int64_t t = targets[r];
        assert(t >= 0 && t < V);
        for (int64_t j = 0; j < V; j++)
            d[j] = l[j] - ls;
        EXPN(d, V);
        for (int64_t j = 0; j < V; j++)
            d[j] *= w;
        d[t] -= w;
    }
}

#undef BQ
#undef BK
#undef VL
#undef NR
#undef FREE
