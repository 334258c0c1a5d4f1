/* gemm_test.c - the matrix-product layer (runtime/core/gemm.h) and Strata's
 * own kernels (gemm_kernels.c), against an fp64 reference computed here:
 *   plan      the strips: at most 16, covering C, sizes fixed by the shape;
 *   accuracy  every backend of this build, fp32 and (where it has one) bf16,
 *             four transposition cases, shapes with ragged edges, beta 0
 *             and 1: each element within the rounding bound of an fp32
 *             sum of K products, |err| <= 1.2 K 2^-24 sum_k |a b| (bf16: of
 *             the bf16-rounded operands; and against the exact operands
 *             within the bf16 rounding of each factor, 2^-7 sum_k |a b|);
 *   threads   the same bits with no pool and pools of 1, 2, 3 and 7;
 *   kernels   every kernel of this build that this CPU runs (the host's ISA
 *             is printed), each against the reference; the bf16 kernels
 *             agree bitwise with each other (VDPBF16PS and the widening
 *             fallbacks add odd then even products alike);
 *   bf16      rounding to nearest even, ties, NaN, infinities, overflow;
 *   tuning    rt_gemm_tune writes a table that rt_gemm_tuned then reads;
 *   clock     rt_gemm_clock counts and times calls by shape only while on.
 * Exit 0 pass, 1 fail. */
#define _GNU_SOURCE /* setenv, mkdtemp */
#include "core/cpu.h"
#include "core/gemm.h"
#include "core/gemm_kernels.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures, checks;

#define CHECK(cond, ...)                                   \
    do {                                                   \
        checks++;                                          \
        if (!(cond)) {                                     \
            printf("FAIL (line %d): ", __LINE__);          \
            printf(__VA_ARGS__);                           \
            printf("\n");                                  \
            failures++;                                    \
        }                                                  \
    } while (0)

static uint64_t rng = 88172645463325252ull;

static float urand(void) /* in [-1, 1), with small and large values mixed */
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    float x = (float)((double)(rng >> 11) / 9007199254740992.0 * 2 - 1);
    return (rng & 15) == 0 ? x * 1e-3f : x;
}

typedef struct Prob {
    int flags;
    int64_t M, N, K, lda, ldb, ldc;
    float *A, *B, *C0;          /* C0: C before the product (beta 1) */
} Prob;

static Prob make(int flags, int64_t M, int64_t N, int64_t K)
{
    Prob p = {.flags = flags, .M = M, .N = N, .K = K};
    p.lda = (flags & RT_GEMM_TA ? M : K) + 3; /* padded strides */
    p.ldb = (flags & RT_GEMM_TB ? K : N) + 1;
    p.ldc = N + 2;
    int64_t na = (flags & RT_GEMM_TA ? K : M) * p.lda, nb = (flags & RT_GEMM_TB ? N : K) * p.ldb;
    p.A = malloc(sizeof(float) * (size_t)(na + 1));
    p.B = malloc(sizeof(float) * (size_t)(nb + 1));
    p.C0 = malloc(sizeof(float) * (size_t)(M * p.ldc + 1));
    for (int64_t i = 0; i < na; i++)
        p.A[i] = urand();
    for (int64_t i = 0; i < nb; i++)
        p.B[i] = urand();
    for (int64_t i = 0; i < M * p.ldc; i++)
        p.C0[i] = urand();
    return p;
}

static void unmake(Prob *p)
{
    free(p->A), free(p->B), free(p->C0);
}

static float a_at(const Prob *p, int64_t i, int64_t k)
{
    return p->flags & RT_GEMM_TA ? p->A[k * p->lda + i] : p->A[i * p->lda + k];
}

static float b_at(const Prob *p, int64_t k, int64_t j)
{
    return p->flags & RT_GEMM_TB ? p->B[j * p->ldb + k] : p->B[k * p->ldb + j];
}

/* C with backend b (NULL: the layer's own choice) and pool threads t (0:
 * no pool), beta 0 or 1; a new buffer. */
static float *product(const Prob *p, const RtGemmBackend *b, int threads, float beta, int bf16)
{
    float *C = malloc(sizeof(float) * (size_t)(p->M * p->ldc + 1));
    memcpy(C, p->C0, sizeof(float) * (size_t)(p->M * p->ldc));
    RtPool *pool = threads ? rt_pool_create(threads) : NULL;
    const RtGemmBackend *old = rt_gemm_set_backend(b);
    rt_matmul_f32(pool, p->flags | (bf16 ? RT_GEMM_BF16 : 0), p->M, p->N, p->K, p->A, p->lda, p->B, p->ldb, beta, C,
                  p->ldc);
    rt_gemm_set_backend(old);
    rt_pool_free(pool);
    return C;
}

/* Worst ratio err / bound over C (1 = at the bound), against the fp64 sum
 * of the (bf16-rounded when round) operands; with round, also the ratio
 * against the exact operands (*exact). */
static double check_c(const Prob *p, const float *C, float beta, bool round, double *exact)
{
    double worst = 0, worst_exact = 0;
    for (int64_t i = 0; i < p->M; i++)
        for (int64_t j = 0; j < p->N; j++) {
            double s = 0, s_exact = 0, mag = 0;
            for (int64_t k = 0; k < p->K; k++) {
                float a = a_at(p, i, k), b = b_at(p, k, j);
                s_exact += (double)a * b;
                if (round)
                    a = rt_bf16_round(a), b = rt_bf16_round(b);
                s += (double)a * b;
                mag += fabs((double)a * b);
            }
            double c0 = beta != 0 ? (double)p->C0[i * p->ldc + j] : 0;
            double got = C[i * p->ldc + j];
            double bound = 1.2 * ((double)p->K + 2) * ldexp(1, -24) * (mag + fabs(c0)) + 1e-30;
            double r = fabs(got - (s + c0)) / bound;
            worst = r > worst || isnan(r) ? r : worst;
            if (round) {
                double be = ldexp(1, -7) * mag + bound;
                double re = fabs(got - (s_exact + c0)) / be;
                worst_exact = re > worst_exact || isnan(re) ? re : worst_exact;
            }
        }
    if (exact)
        *exact = worst_exact;
    return worst;
}

static const int64_t shapes[][3] = {{1, 1, 1}, {7, 33, 5}, {100, 70, 300}, {257, 129, 513}, {48, 700, 40}};
enum { NSHAPES = sizeof shapes / sizeof *shapes };

static void test_plan(void)
{
    int64_t dims[] = {1, 5, 63, 64, 65, 96, 97, 1000, 1024, 1368, 4096, 32000};
    for (size_t a = 0; a < sizeof dims / sizeof *dims; a++)
        for (size_t b = 0; b < sizeof dims / sizeof *dims; b++) {
            int64_t M = dims[a], N = dims[b];
            RtGemmSplit s = rt_gemm_plan(M, N);
            int64_t len = s.rows ? M : N, unit = s.rows ? 48 : 32;
            CHECK(s.count >= 1 && s.count <= 16 && s.size * s.count >= len && s.size * (s.count - 1) < len &&
                      (s.size % unit == 0 || s.size == len) && s.rows == (M > N),
                  "plan %lld x %lld: %s strips of %lld, %lld of them", (long long)M, (long long)N,
                  s.rows ? "row" : "column", (long long)s.size, (long long)s.count);
        }
}

static void test_backends(void)
{
    const RtGemmBackend *const *bs = rt_gemm_backends();
    for (int bi = 0; bs[bi]; bi++)
        for (int bf16 = 0; bf16 < 2; bf16++) {
            if (bf16 && !bs[bi]->bf16)
                continue;
            double worst = 0, worst_exact = 0;
            for (int s = 0; s < NSHAPES; s++)
                for (int flags = 0; flags < 4; flags++)
                    for (int beta = 0; beta < 2; beta++) {
                        Prob p = make(flags, shapes[s][0], shapes[s][1], shapes[s][2]);
                        float *C = product(&p, bs[bi], 2, (float)beta, bf16);
                        double ex = 0, r = check_c(&p, C, (float)beta, bf16, &ex);
                        CHECK(r <= 1, "%s %s %lldx%lldx%lld flags %d beta %d: error %.3g of the fp32 bound",
                              bs[bi]->name, bf16 ? "bf16" : "fp32", (long long)p.M, (long long)p.N, (long long)p.K,
                              flags, beta, r);
                        if (bf16)
                            CHECK(ex <= 1, "%s bf16 %lldx%lldx%lld: error %.3g of the bf16 rounding bound",
                                  bs[bi]->name, (long long)p.M, (long long)p.N, (long long)p.K, ex);
                        worst = fmax(worst, r), worst_exact = fmax(worst_exact, ex);
                        free(C);
                        unmake(&p);
                    }
            printf("ok   %-9s %s: worst error %.3f of the fp32 sum bound%s", bs[bi]->name, bf16 ? "bf16" : "fp32",
                   worst, bf16 ? "" : "\n");
            if (bf16)
                printf(", %.3f of the bound against the unrounded operands\n", worst_exact);
        }
}

static void test_threads(void)
{
    const RtGemmBackend *const *bs = rt_gemm_backends();
    static const int ts[] = {1, 2, 3, 7};
    for (int bi = 0; bs[bi]; bi++)
        for (int bf16 = 0; bf16 < 2; bf16++) {
            if (bf16 && !bs[bi]->bf16)
                continue;
            Prob p = make(RT_GEMM_TB, 1100, 300, 200); /* row strips */
            Prob q = make(0, 90, 2100, 150);           /* column strips */
            for (int w = 0; w < 2; w++) {
                Prob *x = w ? &q : &p;
                float *c0 = product(x, bs[bi], 0, 1, bf16);
                for (size_t t = 0; t < sizeof ts / sizeof *ts; t++) {
                    float *c = product(x, bs[bi], ts[t], 1, bf16);
                    CHECK(!memcmp(c, c0, sizeof(float) * (size_t)(x->M * x->ldc)),
                          "%s %s %lldx%lld: %d threads differ from no pool", bs[bi]->name, bf16 ? "bf16" : "fp32",
                          (long long)x->M, (long long)x->N, ts[t]);
                    free(c);
                }
                free(c0);
            }
            unmake(&p), unmake(&q);
        }
    printf("ok   threads: every backend, no pool and 1, 2, 3, 7 threads, row and column strips: the same bits\n");
}

/* The strata backend's products (one operand packed once for every strip)
 * against the same strips computed one by one with its strip function:
 * packing moves values, so the bits must agree. */
static void test_shared_packing(void)
{
    const RtGemmBackend *st = rt_gemm_backend_named("strata");
    const size_t cap = rt_gemm_shared_cap;
    /* the default cap (one group), then groups of one K slice, then of two
     * (fp32) or four (bf16) slices of the third shape's 4 */
    const size_t caps[] = {cap, 1, 700000};
    for (int k = 0; k < 6; k++) /* beta 1, then 0 (which a group after the first must not apply) */
        for (int bf16 = 0; bf16 < 2; bf16++)
            for (int w = 0; w < 3; w++) {
                Prob p = w == 1   ? make(RT_GEMM_TA | RT_GEMM_TB, 1100, 300, 600)
                         : w == 2 ? make(RT_GEMM_TB, 200, 150, 1700)
                                  : make(0, 90, 2100, 530);
                float beta = k < 3 ? 1 : 0;
                rt_gemm_shared_cap = caps[k % 3];
                float *c = product(&p, st, 2, beta, bf16), *r = malloc(sizeof(float) * (size_t)(p.M * p.ldc + 1));
                rt_gemm_shared_cap = cap;
                memcpy(r, p.C0, sizeof(float) * (size_t)(p.M * p.ldc));
                RtGemmSplit sp = rt_gemm_plan(p.M, p.N);
                int ta = p.flags & RT_GEMM_TA ? 1 : 0, tb = p.flags & RT_GEMM_TB ? 1 : 0;
                for (int64_t s = 0; s < sp.count; s++) {
                    int64_t lo = s * sp.size, len = sp.rows ? p.M : p.N, hi = lo + sp.size < len ? lo + sp.size : len;
                    int64_t i0 = sp.rows ? lo : 0, m = sp.rows ? hi - lo : p.M, j0 = sp.rows ? 0 : lo;
                    int64_t n = sp.rows ? p.N : hi - lo;
                    (bf16 ? st->bf16 : st->f32)(ta, tb, m, n, p.K, p.A + (ta ? i0 : i0 * p.lda), p.lda,
                                                p.B + (tb ? j0 * p.ldb : j0), p.ldb, beta, r + i0 * p.ldc + j0, p.ldc);
                }
                CHECK(!memcmp(c, r, sizeof(float) * (size_t)(p.M * p.ldc)),
                      "strata %s %lldx%lldx%lld, beta %g, shared side in groups under %zu bytes: the shared packing "
                      "changed the bits", bf16 ? "bf16" : "fp32", (long long)p.M, (long long)p.N, (long long)p.K,
                      (double)beta, caps[k % 3]);
                free(c), free(r);
                unmake(&p);
            }
    printf("ok   strata: one operand packed once for all strips = strip by strip, bitwise (fp32, bf16), whole "
           "and in groups of K slices\n");
}

static void test_kernels(void)
{
    static const char *names[] = {"generic",       "avx2",          "avx512",       "generic-bf16",
                                  "avx2-bf16emul", "avx512-bf16emul", "avx512_bf16"};
    const RtCpu *cpu = rt_cpu();
    printf("host ISA: %s (avx2 %d, fma %d, avx512 %d, avx512_bf16 %d)\n", rt_cpu_isa_name(cpu), cpu->avx2, cpu->fma,
           cpu->avx512, cpu->avx512_bf16);
    /* odd K: the last pair half empty; two KC slices.  A^T and B read
     * across rows (strided packing), A and B^T along them (the AVX-512
     * kernels' vector packing): the bf16 kernels must agree bitwise, and
     * so must the FMA kernels avx2 and avx512 (the same sums in k order;
     * avx2 packs with the scalar loops, avx512 through its transpose). */
    static const int flag_sets[] = {RT_GEMM_TA, RT_GEMM_TB};
    for (int fs = 0; fs < 2; fs++) {
    float *ref_bf16 = NULL, *ref_fma = NULL;
    const char *ref_name = NULL;
    Prob p = make(flag_sets[fs], 37, 75, 301);
    printf("%s:\n", fs ? "A, B^T" : "A^T, B");
    for (size_t n = 0; n < sizeof names / sizeof *names; n++) {
        bool bf16 = strstr(names[n], "bf16") != NULL;
        float *C = malloc(sizeof(float) * (size_t)(p.M * p.ldc));
        memcpy(C, p.C0, sizeof(float) * (size_t)(p.M * p.ldc));
        RtGemmTile g = {.ta = !fs, .tb = fs, .K = p.K, .A = p.A, .B = p.B, .lda = p.lda, .ldb = p.ldb, .beta = 1,
                        .C = C, .ldc = p.ldc, .i0 = 0, .i1 = p.M, .j0 = 0, .j1 = p.N};
        int rc = rt_gemm_tile_named(names[n], &g);
        CHECK(rc >= 0, "kernel %s is not in this build", names[n]);
        if (rc == 1) {
            double r = check_c(&p, C, 1, bf16, NULL);
            CHECK(r <= 1, "kernel %s: error %.3g of the bound", names[n], r);
            const float *ref = bf16 ? ref_bf16 : !strcmp(names[n], "avx512") ? ref_fma : NULL;
            const char *rname = bf16 ? ref_name : "avx2";
            bool same = ref && !memcmp(C, ref, sizeof(float) * (size_t)(p.M * p.ldc));
            if (ref)
                CHECK(same, "kernel %s and %s: not the same bits", names[n], rname);
            printf("%s kernel %-16s error %.3f of the bound%s%s\n", r <= 1 ? "ok  " : "FAIL", names[n], r,
                   same ? ", bitwise equal to " : "", same ? rname : "");
            if (bf16 && !ref_bf16)
                ref_bf16 = C, ref_name = names[n], C = NULL;
            else if (!strcmp(names[n], "avx2"))
                ref_fma = C, C = NULL;
        } else if (rc == 0) {
            printf("--   kernel %-16s not run: this CPU lacks its ISA\n", names[n]);
        }
        free(C);
    }
    unmake(&p);
    free(ref_bf16);
    free(ref_fma);
    }
}

static float bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_bf16_round(void)
{
    CHECK(rt_bf16_round(1.0f) == 1.0f, "1");
    CHECK(rt_bf16_round(bits(0x3f808000u)) == 1.0f, "a tie rounds to even (down)");
    CHECK(rt_bf16_round(bits(0x3f818000u)) == bits(0x3f820000u), "a tie rounds to even (up)");
    CHECK(rt_bf16_round(bits(0x3f808001u)) == bits(0x3f810000u), "above a tie rounds up");
    CHECK(isinf(rt_bf16_round(INFINITY)) && rt_bf16_round(-INFINITY) < 0, "infinities");
    CHECK(isnan(rt_bf16_round(NAN)) && isnan(rt_bf16_round(bits(0x7f800001u))), "NaN, signalling NaN");
    CHECK(isinf(rt_bf16_round(bits(0x7f7fffffu))), "the largest float overflows to infinity");
    CHECK(rt_bf16_round(-0.0f) == 0 && signbit(rt_bf16_round(-0.0f)), "-0");
}

static void test_tuning(void)
{
    char dir[] = "/tmp/strata-gemm-test.XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0, "mkdtemp");
        return;
    }
    setenv("STRATA_CACHE_DIR", dir, 1);
    const int64_t shp[][4] = {{RT_GEMM_TB, 96, 64, 32}, {RT_GEMM_BF16, 50, 40, 30}};
    char *err = NULL;
    int rc = rt_gemm_tune(shp, 2, 1, NULL, NULL, &err);
    CHECK(rc == 0, "rt_gemm_tune: %s", err ? err : "?");
    free(err);
    char *path = rt_gemm_table_path();
    CHECK(path && !strncmp(path, dir, strlen(dir)) && access(path, R_OK) == 0, "no table at %s", path ? path : "?");
    const RtGemmBackend *b = rt_gemm_tuned(RT_GEMM_TB, 100, 64, 32), *c = rt_gemm_tuned(RT_GEMM_BF16, 50, 40, 30);
    CHECK(b != NULL && c != NULL && c->bf16 != NULL, "the tuned choices are not read back");
    CHECK(rt_gemm_tuned(0, 100, 64, 32) == NULL, "an untuned shape has a tuned choice");
    /* the default of an untuned shape, from cpuid alone: Strata's kernels
     * for bf16, and for fp32 on AVX-512 CPUs; OpenBLAS for fp32 elsewhere */
    if (!getenv("STRATA_GEMM")) {
        const char *why = NULL;
        const RtGemmBackend *d32 = rt_gemm_choose(0, 100, 64, 32, &why);
        const char *want = rt_cpu()->avx512 ? "strata" : "openblas";
        CHECK(d32 && !strcmp(d32->name, want) && why && !strcmp(why, "default"),
              "untuned fp32 default: %s (%s), want %s (default) on a CPU %s AVX-512", d32 ? d32->name : "-",
              why ? why : "-", want, rt_cpu()->avx512 ? "with" : "without");
        const RtGemmBackend *d16 = rt_gemm_choose(RT_GEMM_BF16, 100, 64, 32, NULL);
        CHECK(d16 && !strcmp(d16->name, "strata"), "untuned bf16 default: %s, want strata", d16 ? d16->name : "-");
        printf("ok   untuned defaults: fp32 %s, bf16 %s (avx512 %d)\n", d32 ? d32->name : "-", d16 ? d16->name : "-",
               rt_cpu()->avx512);
    }
    printf("ok   tuning: table %s, %s and %s chosen\n", path ? path : "?", b ? b->name : "-", c ? c->name : "-");
    if (path)
        unlink(path);
    free(path);
    rmdir(dir);
}

/* rt_gemm_clock: off, nothing is recorded; on, every call is counted under
 * its shape (flags, M, N, K), first seen first, the seconds summed. */
static void test_clock(void)
{
    enum { M = 40, N = 24, K = 56 };
    float *A = calloc(M * K, sizeof *A), *B = calloc(K * N, sizeof *B), *C = calloc(M * N, sizeof *C);
    RtGemmClock zero = {0};
    rt_gemm_clock = zero;
    rt_matmul_f32(NULL, 0, M, N, K, A, K, B, N, 0.0f, C, N);
    CHECK(rt_gemm_clock.calls == 0 && rt_gemm_clock.nshapes == 0 && rt_gemm_clock.seconds == 0,
          "clock off: %lld calls, %d shapes recorded", (long long)rt_gemm_clock.calls, rt_gemm_clock.nshapes);
    rt_gemm_clock.on = true;
    rt_matmul_f32(NULL, 0, M, N, K, A, K, B, N, 0.0f, C, N);
    rt_matmul_f32(NULL, RT_GEMM_TB, M, N, K, A, K, B, K, 0.0f, C, N);
    rt_matmul_f32(NULL, 0, M, N, K, A, K, B, N, 1.0f, C, N);
    rt_gemm_clock.on = false;
    rt_matmul_f32(NULL, 0, M, N, K, A, K, B, N, 0.0f, C, N);
    const RtGemmClock *c = &rt_gemm_clock;
    CHECK(c->calls == 3 && c->nshapes == 2, "clock on for 3 calls of 2 shapes: %lld calls, %d shapes",
          (long long)c->calls, c->nshapes);
    CHECK(c->shape[0].flags == 0 && c->shape[0].M == M && c->shape[0].N == N && c->shape[0].K == K &&
              c->shape[0].calls == 2 && c->shape[1].flags == RT_GEMM_TB && c->shape[1].calls == 1,
          "clock shapes: %d %lldx%lldx%lld x%lld, %d x%lld", c->shape[0].flags, (long long)c->shape[0].M,
          (long long)c->shape[0].N, (long long)c->shape[0].K, (long long)c->shape[0].calls, c->shape[1].flags,
          (long long)c->shape[1].calls);
    CHECK(c->seconds > 0 && fabs(c->shape[0].seconds + c->shape[1].seconds - c->seconds) <= 1e-9 * c->seconds,
          "clock seconds: total %g, by shape %g + %g", c->seconds, c->shape[0].seconds, c->shape[1].seconds);
    rt_gemm_clock = zero;
    free(A), free(B), free(C);
}

int main(void)
{
    test_plan();
    test_bf16_round();
    test_backends();
    test_threads();
    test_shared_packing();
    test_kernels();
    test_tuning();
    test_clock();
    printf("%d of %d checks passed\n", checks - failures, checks);
    return failures ? 1 : 0;
}
