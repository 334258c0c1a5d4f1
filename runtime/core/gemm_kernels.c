/* gemm_kernels.c - Strata's own blocked matrix products (gemm.h's "strata"
 * backend): one tile C[i0:i1, j0:j1] (+)= op(A) op(B) on the calling
 * thread, in BLIS's loop order: for each KC slice of the sum, pack a
 * KC x NC block of op(B) into NR-wide strips, then for each MC rows pack
 * op(A) into MR-tall strips and run the MR x NR micro-kernel over them.
 *
 * Kernels, picked by cpuid (cpu.h), never by the environment:
 *   fp32  AVX-512 12x32, AVX2+FMA 6x16, and a portable 4x8 one;
 *   bf16  operands rounded to bf16 (round to nearest even) as they are
 *         packed, pairs of k interleaved; AVX-512 BF16 (VDPBF16PS) 12x32,
 *         else the same pairs widened to fp32 and added odd then even, as
 *         VDPBF16PS does, with FMA (the products of two bf16 are exact in
 *         fp32), so both give the same sums but for denormals (VDPBF16PS
 *         flushes them).  fp32 accumulation throughout.
 * An element of C is beta C plus the KC slices' sums added in order, each
 * slice summed in k order: where it sits in the tile changes nothing, so
 * the bits depend on K and the kernel alone (issue #13).
 * Work buffers are per thread (thread-local, freed when the thread ends). */
#include "core/gemm_kernels.h"
#include "core/util.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define STRATA_X86 1
#endif

enum { KC = 512, MC = 96, NC = 1024 };

/* ---- per-thread work buffers ---- */

typedef struct Work {
    void *ap, *bp;          /* packed A (MC x KC) and B (KC x NC) blocks */
    float *edge;            /* one MR x NR tile for the edges */
} Work;

static pthread_key_t work_key;
static pthread_once_t work_once = PTHREAD_ONCE_INIT;

static void work_free(void *p)
{
    Work *w = p;
    free(w->ap), free(w->bp), free(w->edge), free(w);
}

static void work_init(void)
{
    pthread_key_create(&work_key, work_free);
}

/* Big enough for every kernel: MR <= 12, NR <= 32, 4-byte elements (bf16
 * pairs take the space of one float per k). */
static Work *work(void)
{
    pthread_once(&work_once, work_init);
    Work *w = pthread_getspecific(work_key);
    if (!w) {
        w = calloc(1, sizeof *w);
        if (!w) {
            fprintf(stderr, "strata: out of memory\n");
            exit(3);
        }
        w->ap = rt_alloc64((size_t)(MC + 12) * (KC + 2) * 4);
        w->bp = rt_alloc64((size_t)(NC + 32) * (KC + 2) * 4);
        w->edge = rt_alloc64(12 * 32 * 4);
        pthread_setspecific(work_key, w);
    }
    return w;
}

/* ---- operands ---- */

/* fp32 -> bf16, round to nearest even; NaN stays a (quiet) NaN.  Without
 * branches, so that the packing loops vectorise. */
static inline uint32_t bf16_bits(uint32_t u)
{
    uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1)) >> 16, quiet = (u >> 16) | 0x40;
    return (u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded;
}

static inline uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)bf16_bits(u);
}

/* Two floats as one bf16 pair: a in the low half, b in the high. */
static inline uint32_t bf16_pair(float a, float b)
{
    uint32_t ua, ub;
    memcpy(&ua, &a, 4);
    memcpy(&ub, &b, 4);
    return bf16_bits(ua) | bf16_bits(ub) << 16;
}

float rt_bf16_round(float f)
{
    uint32_t u = (uint32_t)to_bf16(f) << 16;
    float r;
    memcpy(&r, &u, 4);
    return r;
}

/* A strip of a block of rows of X whose rows are contiguous in k (A as
 * stored, B^T; panel_f32 and panel_bf16 take the operands read across
 * their rows): X[r][k] = p[r rs + k], `rows` valid rows of the strip's R,
 * kc values of k: out[k R + r] = X[r][k], zero for r >= rows. */
static void strip_f32(float *out, const float *p, int64_t rs, int64_t rows, int R, int64_t kc)
{
    for (int r = 0; r < R; r++) {
        const float *row = p + r * rs;
        if (r < rows)
            for (int64_t k = 0; k < kc; k++)
                out[k * R + r] = row[k];
        else
            for (int64_t k = 0; k < kc; k++)
                out[k * R + r] = 0.0f;
    }
}

/* The same for bf16 pairs: out[(k/2) 2R + 2r + (k%2)] = bf16(X[r][k]),
 * zero for r >= rows and for an odd kc's last k + 1. */
static void strip_bf16(uint16_t *out16, const float *p, int64_t rs, int64_t rows, int R, int64_t kc)
{
    uint32_t *out = (uint32_t *)out16; /* pair q of row r at out[q R + r] */
    int64_t full = kc / 2;             /* pairs with both halves */
    for (int r = 0; r < R; r++) {
        const float *row = p + r * rs;
        if (r >= rows) {
            for (int64_t q = 0; q < (kc + 1) / 2; q++)
                out[q * R + r] = 0;
            continue;
        }
        for (int64_t q = 0; q < full; q++)
            out[q * R + r] = bf16_pair(row[2 * q], row[2 * q + 1]);
        if (kc & 1)
            out[full * R + r] = bf16_pair(row[kc - 1], 0.0f);
    }
}

#ifdef STRATA_X86
static void strip_bf16_rows512(uint32_t *out, const float *p, int64_t rs, int64_t rows, int R, int64_t kc);
static void strip_f32_rows512(float *out, const float *p, int64_t rs, int64_t rows, int R, int64_t kc);
static void panel_f32_512(float *out, int64_t stride, const float *p, int64_t ks, int64_t n, int64_t kc);
static void panel_bf16_512(uint32_t *out, int64_t stride, const float *p, int64_t ks, int64_t n, int R, int64_t kc);
#endif

/* strip_f32 with the kernel's packer: rows contiguous in k (A as stored,
 * B^T) through an AVX-512 transpose for the AVX-512 kernels; the same
 * bytes either way. */
static void strip_f32_k(bool wide, float *out, const float *p, int64_t rs, int64_t rows, int R, int64_t kc)
{
#ifdef STRATA_X86
    if (wide) {
        strip_f32_rows512(out, p, rs, rows, R, kc);
        return;
    }
#endif
    (void)wide;
    strip_f32(out, p, rs, rows, R, kc);
}

/* strip_bf16 with the kernel's packer: the AVX-512 kernels pack sixteen
 * pairs of sixteen rows at a time through a transpose in registers, the
 * others by the scalar loops.  The same bytes either way. */
static void strip_bf16_k(bool wide, uint16_t *out, const float *p, int64_t rs, int64_t rows, int R, int64_t kc)
{
#ifdef STRATA_X86
    if (wide) {
        strip_bf16_rows512((uint32_t *)out, p, rs, rows, R, kc);
        return;
    }
#endif
    (void)wide;
    strip_bf16(out, p, rs, rows, R, kc);
}

/* Rows c0 and c0 + ks, n values each, ahead of the hardware's stride
 * prefetch. */
static void prefetch_rows(const float *c0, int64_t ks, int64_t n)
{
    for (int64_t off = 0; off < n; off += 16) {
        __builtin_prefetch(c0 + off);
        __builtin_prefetch(c0 + ks + off);
    }
}

/* Several strips at once when the operand's R values of each k are
 * contiguous (rs == 1, k ks apart: A^T, and B as stored): `n` values of
 * each k from p, strip s of R of them at out + s stride (elements), the
 * last one zero-filled, laid out as strip_f32's.  k outermost, so that
 * each of the kc rows is read once, start to end, for all the strips
 * (strip by strip, a narrow strip read two lines of a row and the next
 * strip the same row again, out of cache by then: the head's backward
 * product, k = 32000, spent more time waiting on these reads than in the
 * micro-kernel). */
static void panel_f32(float *out, int64_t stride, const float *p, int64_t ks, int64_t n, int R, int64_t kc)
{
    for (int64_t k = 0; k < kc; k++) {
        const float *row = p + k * ks;
        if (k % 2 == 0 && k + 16 < kc)
            prefetch_rows(row + 16 * ks, ks, n);
        for (int64_t s = 0, j = 0; j < n; s++, j += R) {
            float *o = out + s * stride + k * R;
            int64_t w = n - j < R ? n - j : R;
            memcpy(o, row + j, (size_t)w * 4);
            if (w < R)
                memset(o + w, 0, (size_t)(R - w) * 4);
        }
    }
}

/* The same in bf16 pairs, laid out as strip_bf16's: strip s's pair q of
 * row r at out + s stride + q R + r (uint32 elements). */
static void panel_bf16(uint32_t *out, int64_t stride, const float *p, int64_t ks, int64_t n, int R, int64_t kc)
{
    for (int64_t q = 0; q < (kc + 1) / 2; q++) {
        const float *c0 = p + 2 * q * ks, *c1 = c0 + ks;
        bool two = 2 * q + 1 < kc;
        if (2 * q + 17 < kc)
            prefetch_rows(c0 + 16 * ks, ks, n);
        for (int64_t s = 0, j = 0; j < n; s++, j += R) {
            uint32_t *o = out + s * stride + q * R;
            int64_t w = n - j < R ? n - j : R;
            if (w == R && two) {
                for (int r = 0; r < R; r++)
                    o[r] = bf16_pair(c0[j + r], c1[j + r]);
            } else {
                for (int r = 0; r < R; r++)
                    o[r] = r < w ? bf16_pair(c0[j + r], two ? c1[j + r] : 0.0f) : 0;
            }
        }
    }
}

/* n rows (or columns) of an operand into strips of R, kc values of the
 * sum each: element (k, c) at p[c rs + k ks]; strip s at s kp R elements
 * of dst (kp: kc, rounded up to pairs in bf16). */
static void pack_block(void *dst, bool bf16, bool wide, const float *p, int64_t rs, int64_t ks, int64_t n, int64_t kc,
                       int R)
{
    int64_t kp = bf16 ? (kc + 1) / 2 * 2 : kc;
    if (rs == 1 && ks != 1) {
#ifdef STRATA_X86
        if (wide && (bf16 ? R <= 32 : R == 12)) {
            if (bf16)
                panel_bf16_512(dst, kp / 2 * R, p, ks, n, R, kc);
            else
                panel_f32_512(dst, kp * R, p, ks, n, kc);
            return;
        }
#endif
        if (bf16)
            panel_bf16(dst, kp / 2 * R, p, ks, n, R, kc);
        else
            panel_f32(dst, kp * R, p, ks, n, R, kc);
        return;
    }
    for (int64_t s = 0; s < n; s += R) { /* ks == 1: one of the strides is 1 */
        int64_t w = n - s < R ? n - s : R;
        if (bf16)
            strip_bf16_k(wide, (uint16_t *)dst + s / R * kp * R, p + s * rs, rs, w, R, kc);
        else
            strip_f32_k(wide, (float *)dst + s / R * kp * R, p + s * rs, rs, w, R, kc);
    }
}

/* Block op(A)[i0.., k0..] (mc x kc) into MR-row strips; op(B)[k0.., j0..]
 * (kc x nc) into NR-column strips (op(B)^T's rows are B's columns). */
static void pack_a(void *ap, bool bf16, bool wide, const RtGemmTile *g, int64_t i0, int64_t mc, int64_t k0, int64_t kc,
                   int MR)
{
    int64_t rs = g->ta ? 1 : g->lda, ks = g->ta ? g->lda : 1;
    pack_block(ap, bf16, wide, g->A + i0 * rs + k0 * ks, rs, ks, mc, kc, MR);
}

static void pack_b(void *bp, bool bf16, bool wide, const RtGemmTile *g, int64_t k0, int64_t kc, int64_t j0, int64_t nc,
                   int NR)
{
    int64_t rs = g->tb ? g->ldb : 1, ks = g->tb ? 1 : g->ldb;
    pack_block(bp, bf16, wide, g->B + j0 * rs + k0 * ks, rs, ks, nc, kc, NR);
}

/* Adds an MR x NR result (row stride NR) into C's m x n corner:
 * C = acc + beta C (first slice) or C += acc. */
static void store_edge(float *C, int64_t ldc, const float *acc, int NR, int64_t m, int64_t n, float beta, bool first)
{
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            float *c = &C[i * ldc + j];
            float v = acc[i * NR + j];
            *c = first ? (beta != 0 ? v + beta * *c : v) : *c + v;
        }
}

/* ---- micro-kernels: acc (MR x NR) = sum over kc of Ap strip x Bp strip;
 * then C (m x n valid) = acc + beta C or C += acc.  C == NULL: write the
 * full MR x NR to `edge` (row stride NR) instead. ---- */

typedef void Ukr(int64_t kc, const void *ap, const void *bp, float *C, int64_t ldc, float beta, bool first);

/* portable 4 x 8 */
static void ukr_generic(int64_t kc, const void *apv, const void *bpv, float *C, int64_t ldc, float beta, bool first)
{
    const float *ap = apv, *bp = bpv;
    float acc[4][8] = {{0}};
    for (int64_t k = 0; k < kc; k++, ap += 4, bp += 8)
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 8; j++)
                acc[i][j] += ap[i] * bp[j];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 8; j++) {
            float *c = &C[i * ldc + j];
            *c = first ? (beta != 0 ? acc[i][j] + beta * *c : acc[i][j]) : *c + acc[i][j];
        }
}

/* portable bf16 4 x 8: widen, odd then even */
static inline float bf_lo(uint32_t p)
{
    uint32_t u = p << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline float bf_hi(uint32_t p)
{
    uint32_t u = p & 0xffff0000u;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void ukr_generic_bf16(int64_t kc, const void *apv, const void *bpv, float *C, int64_t ldc, float beta,
                             bool first)
{
    const uint32_t *ap = apv, *bp = bpv;
    float acc[4][8] = {{0}};
    for (int64_t p = 0; p < (kc + 1) / 2; p++, ap += 4, bp += 8)
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 8; j++) {
                acc[i][j] = __builtin_fmaf(bf_hi(ap[i]), bf_hi(bp[j]), acc[i][j]);
                acc[i][j] = __builtin_fmaf(bf_lo(ap[i]), bf_lo(bp[j]), acc[i][j]);
            }
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 8; j++) {
            float *c = &C[i * ldc + j];
            *c = first ? (beta != 0 ? acc[i][j] + beta * *c : acc[i][j]) : *c + acc[i][j];
        }
}

#ifdef STRATA_X86
#define T_AVX2 __attribute__((target("avx2,fma")))
#define T_512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,fma")))
#define T_BF16 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx512bf16,fma")))

/* AVX2 6 x 16: 12 accumulators */
T_AVX2 static void ukr_avx2(int64_t kc, const void *apv, const void *bpv, float *C, int64_t ldc, float beta,
                            bool first)
{
    const float *ap = apv, *bp = bpv;
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
           c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int64_t k = 0; k < kc; k++, ap += 6, bp += 16) {
        __m256 b0 = _mm256_load_ps(bp), b1 = _mm256_load_ps(bp + 8), a;
#define ROW(i, x0, x1)                         \
    a = _mm256_broadcast_ss(ap + i);           \
    x0 = _mm256_fmadd_ps(a, b0, x0);           \
    x1 = _mm256_fmadd_ps(a, b1, x1);
        ROW(0, c00, c01) ROW(1, c10, c11) ROW(2, c20, c21) ROW(3, c30, c31) ROW(4, c40, c41) ROW(5, c50, c51)
#undef ROW
    }
    __m256 acc[12] = {c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51};
    __m256 vb = _mm256_set1_ps(beta);
    for (int i = 0; i < 6; i++)
        for (int h = 0; h < 2; h++) {
            float *c = C + i * ldc + 8 * h;
            __m256 v = acc[2 * i + h];
            if (first)
                v = beta != 0 ? _mm256_fmadd_ps(vb, _mm256_loadu_ps(c), v) : v;
            else
                v = _mm256_add_ps(_mm256_loadu_ps(c), v);
            _mm256_storeu_ps(c, v);
        }
}

/* AVX-512: 12 x 32, 24 accumulators (acc[2 i + h]: row i, columns 16 h..);
 * the store of an AVX-512 micro-kernel's result. */
T_512 static inline void store512(const __m512 *acc, float *C, int64_t ldc, float beta, bool first)
{
    __m512 vb = _mm512_set1_ps(beta);
    for (int i = 0; i < 12; i++)
        for (int h = 0; h < 2; h++) {
            float *c = C + i * ldc + 16 * h;
            __m512 v = acc[2 * i + h];
            if (first)
                v = beta != 0 ? _mm512_fmadd_ps(vb, _mm512_loadu_ps(c), v) : v;
            else
                v = _mm512_add_ps(_mm512_loadu_ps(c), v);
            _mm512_storeu_ps(c, v);
        }
}

T_512 static void ukr_avx512(int64_t kc, const void *apv, const void *bpv, float *C, int64_t ldc, float beta,
                             bool first)
{
    const float *ap = apv, *bp = bpv;
    __m512 acc[24];
    for (int q = 0; q < 24; q++)
        acc[q] = _mm512_setzero_ps();
    for (int64_t k = 0; k < kc; k++, ap += 12, bp += 32) {
        __m512 b0 = _mm512_load_ps(bp), b1 = _mm512_load_ps(bp + 16);
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) {
            __m512 a = _mm512_set1_ps(ap[i]);
            acc[2 * i] = _mm512_fmadd_ps(a, b0, acc[2 * i]);
            acc[2 * i + 1] = _mm512_fmadd_ps(a, b1, acc[2 * i + 1]);
        }
    }
    store512(acc, C, ldc, beta, first);
}

/* AVX-512 BF16: 12 x 32 over pairs of k (VDPBF16PS). */
T_BF16 static void ukr_avx512_bf16(int64_t kc, const void *apv, const void *bpv, float *C, int64_t ldc, float beta,
                                   bool first)
{
    const uint32_t *ap = apv;
    const uint16_t *bp = bpv;
    __m512 acc[24];
    for (int q = 0; q < 24; q++)
        acc[q] = _mm512_setzero_ps();
    for (int64_t p = 0; p < (kc + 1) / 2; p++, ap += 12, bp += 64) {
        __m512bh b0 = (__m512bh)_mm512_load_si512((const void *)bp);
        __m512bh b1 = (__m512bh)_mm512_load_si512((const void *)(bp + 32));
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) {
            __m512bh a = (__m512bh)_mm512_set1_epi32((int)ap[i]);
            acc[2 * i] = _mm512_dpbf16_ps(acc[2 * i], a, b0);
            acc[2 * i + 1] = _mm512_dpbf16_ps(acc[2 * i + 1], a, b1);
        }
    }
    store512(acc, C, ldc, beta, first);
}

/* AVX-512 without BF16: the pairs widened (odd then even, as VDPBF16PS). */
T_512 static void ukr_avx512_bf16_emul(int64_t kc, const void *apv, const void *bpv, float *C, int64_t ldc,
                                       float beta, bool first)
{
    const uint32_t *ap = apv;
    const uint16_t *bp = bpv;
    const __m512i hi = _mm512_set1_epi32((int)0xffff0000u);
    __m512 acc[24];
    for (int q = 0; q < 24; q++)
        acc[q] = _mm512_setzero_ps();
    for (int64_t p = 0; p < (kc + 1) / 2; p++, ap += 12, bp += 64) {
        __m512i b0 = _mm512_load_si512((const void *)bp), b1 = _mm512_load_si512((const void *)(bp + 32));
        __m512 b0o = _mm512_castsi512_ps(_mm512_and_si512(b0, hi)), b0e = _mm512_castsi512_ps(_mm512_slli_epi32(b0, 16));
        __m512 b1o = _mm512_castsi512_ps(_mm512_and_si512(b1, hi)), b1e = _mm512_castsi512_ps(_mm512_slli_epi32(b1, 16));
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) {
            __m512i a = _mm512_set1_epi32((int)ap[i]);
            __m512 ao = _mm512_castsi512_ps(_mm512_and_si512(a, hi)), ae = _mm512_castsi512_ps(_mm512_slli_epi32(a, 16));
            acc[2 * i] = _mm512_fmadd_ps(ae, b0e, _mm512_fmadd_ps(ao, b0o, acc[2 * i]));
            acc[2 * i + 1] = _mm512_fmadd_ps(ae, b1e, _mm512_fmadd_ps(ao, b1o, acc[2 * i + 1]));
        }
    }
    store512(acc, C, ldc, beta, first);
}

/* AVX2 without AVX-512: bf16 pairs widened, 6 x 16. */
T_AVX2 static void ukr_avx2_bf16_emul(int64_t kc, const void *apv, const void *bpv, float *C, int64_t ldc,
                                      float beta, bool first)
{
    const uint32_t *ap = apv;
    const uint16_t *bp = bpv;
    const __m256i hi = _mm256_set1_epi32((int)0xffff0000u);
    __m256 acc[12];
    for (int q = 0; q < 12; q++)
        acc[q] = _mm256_setzero_ps();
    for (int64_t p = 0; p < (kc + 1) / 2; p++, ap += 6, bp += 32) {
        __m256i b0 = _mm256_load_si256((const void *)bp), b1 = _mm256_load_si256((const void *)(bp + 16));
        __m256 b0o = _mm256_castsi256_ps(_mm256_and_si256(b0, hi)), b0e = _mm256_castsi256_ps(_mm256_slli_epi32(b0, 16));
        __m256 b1o = _mm256_castsi256_ps(_mm256_and_si256(b1, hi)), b1e = _mm256_castsi256_ps(_mm256_slli_epi32(b1, 16));
#pragma GCC unroll 6
        for (int i = 0; i < 6; i++) {
            __m256i a = _mm256_set1_epi32((int)ap[i]);
            __m256 ao = _mm256_castsi256_ps(_mm256_and_si256(a, hi)), ae = _mm256_castsi256_ps(_mm256_slli_epi32(a, 16));
            acc[2 * i] = _mm256_fmadd_ps(ae, b0e, _mm256_fmadd_ps(ao, b0o, acc[2 * i]));
            acc[2 * i + 1] = _mm256_fmadd_ps(ae, b1e, _mm256_fmadd_ps(ao, b1o, acc[2 * i + 1]));
        }
    }
    __m256 vb = _mm256_set1_ps(beta);
    for (int i = 0; i < 6; i++)
        for (int h = 0; h < 2; h++) {
            float *c = C + i * ldc + 8 * h;
            __m256 v = acc[2 * i + h];
            if (first)
                v = beta != 0 ? _mm256_fmadd_ps(vb, _mm256_loadu_ps(c), v) : v;
            else
                v = _mm256_add_ps(_mm256_loadu_ps(c), v);
            _mm256_storeu_ps(c, v);
        }
}

/* fp32 -> bf16 bits as bf16_bits, sixteen at a time. */
T_512 static inline __m512i bf16_bits512(__m512i u)
{
    __m512i rounded = _mm512_srli_epi32(
        _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)),
                         _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1))),
        16);
    __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
    __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                            _mm512_set1_epi32(0x7f800000));
    return _mm512_mask_blend_epi32(nan, rounded, quiet);
}

/* Sixteen vectors of sixteen 32-bit elements, v[i] = row r0 + i's
 * elements e0..e0 + 15, transposed (unpack by 32 and 64 bits, then
 * 128-bit lanes twice): element e's vector is one store of the block's nr
 * (<= 16) rows at out + (e0 + e) R + r0. */
T_512 static inline void transpose_store512(uint32_t *out, __m512i v[16], int64_t e0, int R, int r0, int nr)
{
    __m512i a[16], b[16];
    for (int i = 0; i < 16; i += 2) {
        a[i] = _mm512_unpacklo_epi32(v[i], v[i + 1]);
        a[i + 1] = _mm512_unpackhi_epi32(v[i], v[i + 1]);
    }
    /* b[4g + c], 128-bit lane l: rows 4g..4g+3 of element 4l + c */
    for (int g = 0; g < 16; g += 4) {
        b[g] = _mm512_unpacklo_epi64(a[g], a[g + 2]);
        b[g + 1] = _mm512_unpackhi_epi64(a[g], a[g + 2]);
        b[g + 2] = _mm512_unpacklo_epi64(a[g + 1], a[g + 3]);
        b[g + 3] = _mm512_unpackhi_epi64(a[g + 1], a[g + 3]);
    }
    __mmask16 m = (__mmask16)((1u << nr) - 1);
    for (int c = 0; c < 4; c++) {
        __m512i x = _mm512_shuffle_i32x4(b[c], b[4 + c], 0x88), y = _mm512_shuffle_i32x4(b[c], b[4 + c], 0xdd);
        __m512i z = _mm512_shuffle_i32x4(b[8 + c], b[12 + c], 0x88);
        __m512i w = _mm512_shuffle_i32x4(b[8 + c], b[12 + c], 0xdd);
        __m512i col[4] = {_mm512_shuffle_i32x4(x, z, 0x88), _mm512_shuffle_i32x4(y, w, 0x88),
                          _mm512_shuffle_i32x4(x, z, 0xdd), _mm512_shuffle_i32x4(y, w, 0xdd)};
        for (int l = 0; l < 4; l++)
            _mm512_mask_storeu_epi32(out + (e0 + 4 * l + c) * R + r0, m, col[l]);
    }
}

/* strip_bf16's case ks == 1 (row r at p + r rs, contiguous in k): for each
 * block of 16 pairs and 16 rows, each row's 32 floats become one vector
 * of 16 pairs, transposed into one store per pair index.  The last pairs
 * (fewer than 16, or an odd kc's half pair) as strip_bf16. */
T_512 static void strip_bf16_rows512(uint32_t *out, const float *p, int64_t rs, int64_t rows, int R, int64_t kc)
{
    int64_t full = kc / 2, q0 = 0;
    for (; q0 + 16 <= full; q0 += 16)
        for (int r0 = 0; r0 < R; r0 += 16) {
            int nr = R - r0 < 16 ? R - r0 : 16;
            __m512i v[16];
            for (int i = 0; i < 16; i++) {
                if (r0 + i >= rows || i >= nr) {
                    v[i] = _mm512_setzero_si512();
                    continue;
                }
                const float *src = p + (r0 + i) * rs + 2 * q0;
                __m256i lo = _mm512_cvtepi32_epi16(bf16_bits512(_mm512_loadu_si512((const void *)src)));
                __m256i hi = _mm512_cvtepi32_epi16(bf16_bits512(_mm512_loadu_si512((const void *)(src + 16))));
                v[i] = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1); /* pairs q0.. of row r0 + i */
            }
            transpose_store512(out, v, q0, R, r0, nr);
        }
    if (q0 < (kc + 1) / 2) /* the rest: pairs q0.. as strip_bf16 over k from 2 q0 */
        strip_bf16((uint16_t *)(out + q0 * R), p + 2 * q0, rs, rows, R, kc - 2 * q0);
}

/* strip_f32's case ks == 1, sixteen k of sixteen rows at a time through
 * the same transpose (the scalar loop stored one float R apart at a time:
 * a tenth of the head's backward product); the last k as strip_f32. */
T_512 static void strip_f32_rows512(float *out, const float *p, int64_t rs, int64_t rows, int R, int64_t kc)
{
    int64_t k0 = 0;
    for (; k0 + 16 <= kc; k0 += 16)
        for (int r0 = 0; r0 < R; r0 += 16) {
            int nr = R - r0 < 16 ? R - r0 : 16;
            __m512i v[16];
            for (int i = 0; i < 16; i++)
                v[i] = r0 + i < rows && i < nr ? _mm512_loadu_si512((const void *)(p + (r0 + i) * rs + k0))
                                               : _mm512_setzero_si512();
            transpose_store512((uint32_t *)out, v, k0, R, r0, nr);
        }
    if (k0 < kc)
        strip_f32(out + k0 * R, p + k0, rs, rows, R, kc - k0);
}

/* Lanes [c, c + 16) of a strip of R (<= 32) whose first w values are
 * valid: the lanes to load (the rest read as zero) and to store. */
static inline __mmask16 lanes(int64_t w, int c)
{
    int64_t v = w - c < 16 ? w - c : 16;
    return v <= 0 ? 0 : (__mmask16)((1u << v) - 1);
}

/* Four strips' rows of 12 (lanes 0..11 of x0..x3) as the 48 contiguous
 * values at o, in three stores. */
T_512 static inline void store12x4(float *o, __m512 x0, __m512 x1, __m512 x2, __m512 x3)
{
    const __m512i i0 = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 16, 17, 18, 19);
    const __m512i i1 = _mm512_setr_epi32(4, 5, 6, 7, 8, 9, 10, 11, 16, 17, 18, 19, 20, 21, 22, 23);
    const __m512i i2 = _mm512_setr_epi32(8, 9, 10, 11, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27);
    _mm512_storeu_ps(o, _mm512_permutex2var_ps(x0, i0, x1));
    _mm512_storeu_ps(o + 16, _mm512_permutex2var_ps(x1, i1, x2));
    _mm512_storeu_ps(o + 32, _mm512_permutex2var_ps(x2, i2, x3));
}

/* panel_f32 for strips of 12 (op(A) = A^T of the AVX-512 kernel), the
 * same bytes: in blocks of 16 k, strip by strip, four k's 48 values in
 * three stores.  k by k, a strip's row of 48 bytes straddled lines, and
 * a panel's strips, kc 48 bytes apart (24 KiB at kc = KC, a multiple of
 * 4 KiB), all fell in one set of the L1 cache: panel_f32 was a sixth of
 * a weight gradient's product (512 x 512 x 1024, A^T), now 284 -> 318
 * GFLOP/s.  (Strips of 32, whole lines, stay with panel_f32's memcpy: as
 * fast.) */
T_512 static void panel_f32_512(float *out, int64_t stride, const float *p, int64_t ks, int64_t n, int64_t kc)
{
    enum { R = 12 };
    for (int64_t k0 = 0; k0 < kc; k0 += 16) {
        int64_t k1 = k0 + 16 < kc ? k0 + 16 : kc;
        for (int64_t k = k0; k < k1 && k1 + 16 <= kc; k += 2)
            prefetch_rows(p + (k + 16) * ks, ks, n);
        for (int64_t s = 0, j = 0; j < n; s++, j += R) {
            __mmask16 m = lanes(n - j, 0);
            int64_t k = k0;
            for (; k + 4 <= k1; k += 4) {
                const float *row = p + k * ks + j;
                store12x4(out + s * stride + k * R, _mm512_maskz_loadu_ps(m, row), _mm512_maskz_loadu_ps(m, row + ks),
                          _mm512_maskz_loadu_ps(m, row + 2 * ks), _mm512_maskz_loadu_ps(m, row + 3 * ks));
            }
            for (; k < k1; k++)
                _mm512_mask_storeu_ps(out + s * stride + k * R, lanes(R, 0), _mm512_maskz_loadu_ps(m, p + k * ks + j));
        }
    }
}

/* Sixteen bf16 pairs: the values at c0 and c0 + ks (zero where `two` is
 * false) of the lanes in m, rounded (bf16_bits512), c0's in the low half;
 * zero in the other lanes. */
T_512 static inline __m512i pair512(const float *c0, int64_t ks, __mmask16 m, bool two)
{
    __m512i lo = bf16_bits512(_mm512_castps_si512(_mm512_maskz_loadu_ps(m, c0)));
    __m512i hi = two ? bf16_bits512(_mm512_castps_si512(_mm512_maskz_loadu_ps(m, c0 + ks))) : _mm512_setzero_si512();
    return _mm512_maskz_mov_epi32(m, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
}

/* panel_bf16 sixteen pairs at a time (pair512), blocked as panel_f32_512.
 * The same bytes. */
T_512 static void panel_bf16_512(uint32_t *out, int64_t stride, const float *p, int64_t ks, int64_t n, int R,
                                 int64_t kc)
{
    const int64_t pairs = (kc + 1) / 2;
    for (int64_t q0 = 0; q0 < pairs; q0 += 8) {
        int64_t q1 = q0 + 8 < pairs ? q0 + 8 : pairs;
        for (int64_t k = 2 * q0; k < 2 * q1 && 2 * q1 + 16 <= kc; k += 2)
            prefetch_rows(p + (k + 16) * ks, ks, n);
        for (int64_t s = 0, j = 0; j < n; s++, j += R) {
            uint32_t *o = out + s * stride;
            int64_t q = q0;
            if (R == 12) { /* four pairs at a time, as panel_f32_512 */
                __mmask16 m = lanes(n - j, 0);
                for (; q + 4 <= q1 && 2 * q + 8 <= kc; q += 4) {
                    __m512 v[4];
                    for (int t = 0; t < 4; t++)
                        v[t] = _mm512_castsi512_ps(pair512(p + 2 * (q + t) * ks + j, ks, m, true));
                    store12x4((float *)(o + q * R), v[0], v[1], v[2], v[3]);
                }
            }
            for (; q < q1; q++)
                for (int c = 0; c < R; c += 16)
                    _mm512_mask_storeu_epi32(o + q * R + c, lanes(R, c),
                                             pair512(p + 2 * q * ks + j + c, ks, lanes(n - j, c), 2 * q + 1 < kc));
        }
    }
}
#endif

/* ---- kernel table ---- */

typedef struct Kernel {
    const char *name;
    int MR, NR;
    bool bf16;              /* packs bf16 pairs */
    Ukr *ukr;
    bool wide;              /* packs with AVX-512 (strip_f32_k, strip_bf16_k) */
} Kernel;

static const Kernel k_generic = {"generic", 4, 8, false, ukr_generic, false};
static const Kernel k_generic_bf16 = {"generic-bf16", 4, 8, true, ukr_generic_bf16, false};
#ifdef STRATA_X86
static const Kernel k_avx2 = {"avx2", 6, 16, false, ukr_avx2, false};
static const Kernel k_avx512 = {"avx512", 12, 32, false, ukr_avx512, true};
static const Kernel k_avx512_bf16 = {"avx512_bf16", 12, 32, true, ukr_avx512_bf16, true};
static const Kernel k_avx512_bf16e = {"avx512-bf16emul", 12, 32, true, ukr_avx512_bf16_emul, true};
static const Kernel k_avx2_bf16e = {"avx2-bf16emul", 6, 16, true, ukr_avx2_bf16_emul, false};
#endif

/* Every kernel this build has, for tests; `needs` says what the CPU must have. */
typedef struct Named {
    const Kernel *k;
    bool (*runs)(const RtCpu *);
} Named;
static bool any_cpu(const RtCpu *c) { (void)c; return true; }
#ifdef STRATA_X86
static bool has_avx2(const RtCpu *c) { return c->avx2 && c->fma; }
static bool has_512(const RtCpu *c) { return c->avx512; }
static bool has_bf16(const RtCpu *c) { return c->avx512_bf16; }
#endif
static const Named all_kernels[] = {
    {&k_generic, any_cpu}, {&k_generic_bf16, any_cpu},
#ifdef STRATA_X86
    {&k_avx2, has_avx2}, {&k_avx2_bf16e, has_avx2}, {&k_avx512, has_512}, {&k_avx512_bf16e, has_512},
    {&k_avx512_bf16, has_bf16},
#endif
};

static const Kernel *kernel_for(const RtCpu *cpu, bool bf16)
{
#ifdef STRATA_X86
    if (bf16)
        return cpu->avx512_bf16 ? &k_avx512_bf16 : cpu->avx512 ? &k_avx512_bf16e
             : cpu->avx2 && cpu->fma ? &k_avx2_bf16e : &k_generic_bf16;
    return cpu->avx512 ? &k_avx512 : cpu->avx2 && cpu->fma ? &k_avx2 : &k_generic;
#else
    (void)cpu;
    return bf16 ? &k_generic_bf16 : &k_generic;
#endif
}

const char *rt_gemm_kernel_name(const RtCpu *cpu, bool bf16)
{
    return kernel_for(cpu, bf16)->name;
}

/* ---- the tile ---- */

/* A product's operand packed once for all its strips (rt_gemm_product):
 * slice t of KC sums starts at t Rpad KC elements, and within it strip q
 * of R rows (A) or columns (B) at q kstep R; Rpad = R-rounded rows. */
typedef struct Shared {
    const void *a, *b;     /* packed op(A) or op(B), NULL: packed per tile */
    int64_t apad, bpad;    /* M and N rounded up to MR and NR */
    bool more;             /* the tile's K goes on an earlier group's slices: add to C */
} Shared;

static void tile(const Kernel *kn, const RtGemmTile *g, const Shared *sh);

void rt_gemm_tile_strata(const RtCpu *cpu, bool bf16, const RtGemmTile *g)
{
    tile(kernel_for(cpu, bf16), g, NULL);
}

int rt_gemm_tile_named(const char *name, const RtGemmTile *g)
{
    for (size_t i = 0; i < sizeof all_kernels / sizeof *all_kernels; i++)
        if (!strcmp(all_kernels[i].k->name, name)) {
            if (!all_kernels[i].runs(rt_cpu()))
                return 0;
            tile(all_kernels[i].k, g, NULL);
            return 1;
        }
    return -1;
}

static void tile(const Kernel *kn, const RtGemmTile *g, const Shared *sh)
{
    const int MR = kn->MR, NR = kn->NR;
    const size_t esz = kn->bf16 ? 2 : 4; /* bytes per packed element */
    Work *w = work();
    int64_t M = g->i1 - g->i0, N = g->j1 - g->j0;
    if (M <= 0 || N <= 0)
        return;
    if (g->K == 0) { /* C = beta C */
        for (int64_t i = g->i0; i < g->i1; i++)
            for (int64_t j = g->j0; j < g->j1; j++)
                g->C[i * g->ldc + j] = g->beta != 0 ? g->beta * g->C[i * g->ldc + j] : 0.0f;
        return;
    }
    const char *sa = sh ? sh->a : NULL, *sb = sh ? sh->b : NULL;
    for (int64_t jc = 0; jc < N; jc += NC) {
        int64_t nc = N - jc < NC ? N - jc : NC, j0 = g->j0 + jc;
        for (int64_t k0 = 0; k0 < g->K; k0 += KC) {
            int64_t kc = g->K - k0 < KC ? g->K - k0 : KC, kstep = kn->bf16 ? (kc + 1) / 2 * 2 : kc;
            bool first = k0 == 0 && !(sh && sh->more);
            /* B's strips of this slice: shared (j0 is NR-aligned), or packed here */
            const char *bslice = sb ? sb + (size_t)(k0 * sh->bpad) * esz + (size_t)(j0 / NR) * (size_t)(kstep * NR) * esz
                                    : (const char *)w->bp;
            if (!sb)
                pack_b(w->bp, kn->bf16, kn->wide, g, k0, kc, j0, nc, NR);
            for (int64_t ic = 0; ic < M; ic += MC) {
                int64_t mc = M - ic < MC ? M - ic : MC, i0 = g->i0 + ic;
                const char *aslice = sa ? sa + (size_t)(k0 * sh->apad) * esz + (size_t)(i0 / MR) * (size_t)(kstep * MR) * esz
                                        : (const char *)w->ap;
                if (!sa)
                    pack_a(w->ap, kn->bf16, kn->wide, g, i0, mc, k0, kc, MR);
                for (int64_t jr = 0; jr < nc; jr += NR) {
                    /* a strip: kc rows of NR floats, or kc/2 pairs of NR bf16 pairs */
                    const char *bs = bslice + (size_t)(jr / NR) * (size_t)(kstep * NR) * esz;
                    for (int64_t ir = 0; ir < mc; ir += MR) {
                        const char *as = aslice + (size_t)(ir / MR) * (size_t)(kstep * MR) * esz;
                        int64_t m = mc - ir < MR ? mc - ir : MR, n = nc - jr < NR ? nc - jr : NR;
                        float *c = g->C + (i0 + ir) * g->ldc + j0 + jr;
                        if (m == MR && n == NR) {
                            kn->ukr(kc, as, bs, c, g->ldc, g->beta, first);
                        } else {
                            kn->ukr(kc, as, bs, w->edge, NR, 0.0f, true);
                            store_edge(c, g->ldc, w->edge, NR, m, n, g->beta, first);
                        }
                    }
                }
            }
        }
    }
}

/* ---- a whole product ---- */

size_t rt_gemm_shared_cap = (size_t)4 << 20;

/* The shared operand's buffer: the calling thread's, grown as needed. */
static pthread_key_t shared_key;
static pthread_once_t shared_once = PTHREAD_ONCE_INIT;

typedef struct SharedBuf {
    void *p;
    size_t bytes;
} SharedBuf;

static void shared_free(void *v)
{
    SharedBuf *b = v;
    free(b->p), free(b);
}

static void shared_init(void)
{
    pthread_key_create(&shared_key, shared_free);
}

static void *shared_buffer(size_t bytes)
{
    pthread_once(&shared_once, shared_init);
    SharedBuf *b = pthread_getspecific(shared_key);
    if (!b) {
        b = calloc(1, sizeof *b);
        if (!b) {
            fprintf(stderr, "strata: out of memory\n");
            exit(3);
        }
        pthread_setspecific(shared_key, b);
    }
    if (b->bytes < bytes) {
        free(b->p);
        b->p = rt_alloc64(bytes);
        b->bytes = (bytes + 63) / 64 * 64;
    }
    return b->p;
}

typedef struct Product {
    const Kernel *kn;
    RtGemmTile g;          /* the whole product */
    RtGemmSplit sp;
    Shared sh;
    void *packed;          /* sh.a or sh.b, writable */
    int64_t strips_per_slice; /* of the shared side */
} Product;

/* Packs units [u0, u1) of the shared side: unit u is strip u % n of slice
 * u / n (n = strips_per_slice); the units of one slice in one call, so one
 * panel when the operand's strips run across its rows (pack_block). */
static void pack_units(void *ctx, int64_t u0, int64_t u1, int thread)
{
    const Product *P = ctx;
    const Kernel *kn = P->kn;
    const RtGemmTile *g = &P->g;
    const size_t esz = kn->bf16 ? 2 : 4;
    const int R = P->sp.rows ? kn->NR : kn->MR;
    const int64_t pad = P->sp.rows ? P->sh.bpad : P->sh.apad, end = P->sp.rows ? g->j1 : g->i1;
    /* the shared operand: op(B) (rows of C cut) or op(A); element (k, c) at base[c rs + k ks] */
    const float *base = P->sp.rows ? g->B : g->A;
    const int64_t rs = P->sp.rows ? (g->tb ? g->ldb : 1) : (g->ta ? 1 : g->lda);
    const int64_t ks = P->sp.rows ? (g->tb ? 1 : g->ldb) : (g->ta ? g->lda : 1);
    for (int64_t u = u0; u < u1;) {
        int64_t t = u / P->strips_per_slice, q = u % P->strips_per_slice, k0 = t * KC;
        int64_t kc = g->K - k0 < KC ? g->K - k0 : KC, kstep = kn->bf16 ? (kc + 1) / 2 * 2 : kc;
        int64_t run = P->strips_per_slice - q < u1 - u ? P->strips_per_slice - q : u1 - u;
        int64_t c = q * R, n = end - c < run * R ? end - c : run * R;
        char *dst = (char *)P->packed + (size_t)(k0 * pad) * esz + (size_t)(q * kstep * R) * esz;
        pack_block(dst, kn->bf16, kn->wide, base + c * rs + k0 * ks, rs, ks, n, kc, R);
        u += run;
    }
}

/* Strips [s0, s1) of C, with the shared side packed. */
static void strip_units(void *ctx, int64_t s0, int64_t s1, int thread)
{
    const Product *P = ctx;
    int64_t len = P->sp.rows ? P->g.i1 : P->g.j1;
    for (int64_t s = s0; s < s1; s++) {
        RtGemmTile t = P->g;
        int64_t lo = s * P->sp.size, hi = lo + P->sp.size < len ? lo + P->sp.size : len;
        if (P->sp.rows)
            t.i0 = lo, t.i1 = hi;
        else
            t.j0 = lo, t.j1 = hi;
        tile(P->kn, &t, &P->sh);
    }
}

void rt_gemm_product_strata(RtPool *pool, const RtCpu *cpu, bool bf16, const RtGemmTile *g, RtGemmSplit sp)
{
    const Kernel *kn = kernel_for(cpu, bf16);
    Product P = {.kn = kn, .g = *g, .sp = sp};
    int64_t M = g->i1 - g->i0, N = g->j1 - g->j0;
    if (M <= 0 || N <= 0)
        return;
    if (sp.count <= 1 || g->K == 0 || g->i0 != 0 || g->j0 != 0) { /* one strip: nothing to share */
        strip_units(&P, 0, sp.count > 0 ? sp.count : 1, 0);
        return;
    }
    const size_t esz = kn->bf16 ? 2 : 4;
    int64_t slices = (g->K + KC - 1) / KC, klast = g->K - (slices - 1) * KC;
    int64_t kpad = (slices - 1) * KC + (kn->bf16 ? (klast + 1) / 2 * 2 : klast);
    int R = sp.rows ? kn->NR : kn->MR;
    int64_t side = sp.rows ? N : M;
    P.strips_per_slice = (side + R - 1) / R;
    int64_t pad = P.strips_per_slice * R;
    /* Groups of K slices, so that the packed shared side stays under
     * rt_gemm_shared_cap bytes (the head's backward product would pack all
     * of W); each group is packed, then multiplied and added to C, so every
     * element still gets the slices in order: the same bits. */
    int64_t group = slices;
    if ((size_t)(pad * kpad) * esz > rt_gemm_shared_cap) {
        group = (int64_t)(rt_gemm_shared_cap / ((size_t)(pad * KC) * esz));
        group = group < 1 ? 1 : group;
    }
    P.packed = shared_buffer((size_t)(pad * (group < slices ? group * KC : kpad)) * esz);
    if (sp.rows)
        P.sh.b = P.packed, P.sh.bpad = pad;
    else
        P.sh.a = P.packed, P.sh.apad = pad;
    /* units of about 16k packed elements, or panels of 256 columns when
     * the strips run across the operand's rows (pack_units): a fixed
     * split, as everything */
    int64_t grain = (16384 / ((int64_t)R * KC)) > 1 ? 16384 / ((int64_t)R * KC) : 1;
    bool across = sp.rows ? !g->tb : g->ta;
    if (across && grain < 256 / R)
        grain = 256 / R;
    for (int64_t s0 = 0; s0 < slices; s0 += group) {
        int64_t kb = s0 * KC, ke = (s0 + group) * KC < g->K ? (s0 + group) * KC : g->K;
        Product Q = P;
        Q.g.K = ke - kb;
        Q.g.A = g->A + kb * (g->ta ? g->lda : 1);
        Q.g.B = g->B + kb * (g->tb ? 1 : g->ldb);
        Q.sh.more = s0 > 0;
        rt_pool_run(pool, (Q.g.K + KC - 1) / KC * P.strips_per_slice, grain, pack_units, &Q);
        rt_pool_run(pool, sp.count, 1, strip_units, &Q);
    }
}
