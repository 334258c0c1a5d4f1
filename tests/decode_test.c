/* decode_test.c - strata_decode (model ABI v4, runtime/model_abi.h): for
 * every model in $srcdir/models and kinds_zoo (blocks of several kinds,
 * attention without RoPE) at tiny sizes, B = 2 sequences of T = 9 and of
 * T = 70 positions (past the 64-query attention tile), the logits of a
 * prompt in one call and the rest token by token (or two at a time) over
 * a KV cache that starts as NaN, against strata_forward's logits of the
 * whole sequence (the reference; lower_test checks it against the fp64
 * interpreter):
 *   exact     f32 with every product on Strata's kernels (whose bits do
 *             not depend on the number of rows) and f64: the same bits;
 *   default   f32 with the host's products (OpenBLAS may sum a one-row
 *             product in another order than a many-row one): within
 *             TOL_F32 of the largest logit (observed: the same bits with
 *             OpenBLAS 0.3 on AVX-512, where the test prints 0);
 *   threads   no pool and two threads: the same bits;
 *   inline    every block's kernels inline in the entry point instead of
 *             in its kind's function (LowerOptions.inline_blocks, where
 *             each attention finds its cache without the kv_base table):
 *             the same bits;
 *   desc      kv_width = 2 x the width of every attention.
 * Then the error codes (a missing cache, kv_pos < 0, kv_pos + T > kv_len).
 * Exit 0 pass, 1 fail, 77 skip. */
#define _POSIX_C_SOURCE 200809L /* glob */
#include "core/gemm.h"
#include "lower_case.h"

#include <glob.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TOL_F32 1e-5 /* relative to the largest logit: a few roundings of fp32 sums in another order */

static int failures;

static void report(bool ok, const char *model, const char *what, const char *detail)
{
    printf("%s %-26s %-12s %s\n", ok ? "ok  " : "FAIL", model, what, detail);
    failures += !ok;
}

static const char *base_name(const char *path)
{
    const char *b = strrchr(path, '/');
    return b ? b + 1 : path;
}

static bool same_bits(const double *a, const double *b, int64_t n)
{
    return !memcmp(a, b, (size_t)n * sizeof *a);
}

/* The cache the descriptor asks for: keys and values of every forward attention. */
static int64_t kv_width_of(const IrGraph *g)
{
    int64_t w = 0;
    for (int i = 0; i < g->nforward; i++) {
        const IrNode *x = g->nodes.v[i];
        if (x->op == IR_ATTENTION && x->kernel >= 0)
            w += 2 * x->width;
    }
    return w;
}

/* The ways a sequence is fed: {prompt, step}. */
static const int feeds[][2] = {{1, 1}, {3, 1}, {4, 2}, {1000, 1}};
#define NFEEDS (int)(sizeof feeds / sizeof *feeds)

/* Every feed against the whole-sequence forward of m (the current
 * products' backend): the largest error, and whether all were the same bits. */
static double decode_error(const Case *c, const JitModel *m, RtPool *pool, bool *same, char *why, size_t nwhy)
{
    Result full;
    int64_t n = (int64_t)c->B * c->T * m->desc->vocab;
    *same = true;
    if (case_run(c, m, &(RunOpts){.pool = pool, .forward = true}, &full) != STRATA_OK) {
        snprintf(why, nwhy, "strata_forward failed");
        result_free(c, &full);
        return INFINITY;
    }
    double worst = 0;
    for (int f = 0; f < NFEEDS; f++) {
        double *got;
        int st = case_decode(c, m, pool, feeds[f][0], feeds[f][1], c->T + 3, &got);
        double e = st == STRATA_OK ? tensor_error(got, full.logits, n) : INFINITY;
        *same &= st == STRATA_OK && same_bits(got, full.logits, n);
        if (!(e <= worst))
            worst = e;
        free(got);
    }
    result_free(c, &full);
    snprintf(why, nwhy, "B %d T %d: max error %.2e over %d feeds, same bits: %s", c->B, c->T, worst, NFEEDS,
             *same ? "yes" : "no");
    return worst;
}

static void check_case(Case *c, const JitModel *f32, const JitModel *f64, RtPool *pool, const char *name)
{
    char why[160];
    bool same;
    /* f32, every product on Strata's kernels: the same bits */
    const RtGemmBackend *strata = rt_gemm_backend_named("strata");
    const RtGemmBackend *old = rt_gemm_set_backend(strata);
    decode_error(c, f32, pool, &same, why, sizeof why);
    rt_gemm_set_backend(old);
    report(strata && same, name, "exact f32", why);
    /* f64 (OpenBLAS): the same bits */
    decode_error(c, f64, pool, &same, why, sizeof why);
    report(same, name, "exact f64", why);
    /* f32, the host's products */
    double e = decode_error(c, f32, pool, &same, why, sizeof why);
    report(e <= TOL_F32, name, "default f32", why);
    /* threads: no pool and two threads */
    double *a, *b;
    int sa = case_decode(c, f32, NULL, 3, 1, c->T, &a), sb = case_decode(c, f32, pool, 3, 1, c->T, &b);
    int64_t n = (int64_t)c->B * c->T * f32->desc->vocab;
    report(sa == STRATA_OK && sb == STRATA_OK && same_bits(a, b, n), name, "threads", "no pool = 2 threads, bitwise");
    free(a), free(b);
}

/* The blocks inline (no kinds' functions): the same decode bits as m. */
static void check_inline(Jit *jit, const Case *c, const JitModel *m, RtPool *pool, const char *name)
{
    JitModel mi = {0};
    LowerOptions o = {.precision = LOWER_F32, .opt_level = 2, .inline_blocks = true};
    if (!case_compile_with(jit, c, &o, &mi)) {
        report(false, name, "inline", "does not compile");
        return;
    }
    double *a, *b;
    int sa = case_decode(c, m, pool, 3, 1, c->T, &a), sb = case_decode(c, &mi, pool, 3, 1, c->T, &b);
    int64_t n = (int64_t)c->B * c->T * m->desc->vocab;
    report(sa == STRATA_OK && sb == STRATA_OK && same_bits(a, b, n), name, "inline",
           "blocks inline = kinds' functions, bitwise");
    free(a), free(b);
    jit_release(jit, &mi);
}

static void check_model(Jit *jit, RtPool *pool, const char *path, const char *text, const char *const *sizes,
                        int nsizes)
{
    const char *name = base_name(path);
    Case c;
    JitModel m32 = {0}, m64 = {0};
    if (!case_load(&c, path, text, sizes, nsizes) || !case_compile(jit, &c, LOWER_F32, &m32) ||
        !case_compile(jit, &c, LOWER_F64, &m64)) {
        report(false, name, "load", "does not load or compile");
        if (m32.tracker)
            jit_release(jit, &m32);
        case_free(&c);
        return;
    }
    case_params(&c, 3);
    char why[96];
    int64_t want = kv_width_of(&c.g);
    snprintf(why, sizeof why, "kv_width %lld (want %lld)", (long long)m32.desc->kv_width, (long long)want);
    report(m32.desc->kv_width == want && m64.desc->kv_width == want && m32.decode, name, "desc", why);
    static const int T[] = {9, 70};
    for (int i = 0; i < 2; i++)
        if (case_batch(&c, 17 + (uint64_t)i, 2, T[i])) {
            check_case(&c, &m32, &m64, pool, name);
            if (i == 0)
                check_inline(jit, &c, &m32, pool, name);
            case_free_batch(&c);
        } else
            report(false, name, "batch", "the interpreter failed");
    jit_release(jit, &m32);
    jit_release(jit, &m64);
    case_free(&c);
}

/* The status of one decode call of 4 tokens at kv_pos into a cache of kv_len (kv NULL when !cache). */
static int decode_status(const JitModel *m, bool cache, int64_t kv_pos, int64_t kv_len)
{
    const StrataModelDesc *d = m->desc;
    int64_t abytes = strata_arena_bytes(d, 1, 4, 1);
    void *params = calloc((size_t)d->params_numel, (size_t)d->real_bytes), *arena = calloc((size_t)abytes, 1);
    void *kv = cache ? calloc((size_t)strata_kv_bytes(d, 1, 16), 1) : NULL;
    int32_t ids[4] = {1, 2, 3, 4};
    StrataStep s = {.params = params, .arena = arena, .arena_bytes = abytes, .tokens = ids, .B = 1, .T = 4,
                    .kv = kv, .kv_pos = kv_pos, .kv_len = kv_len};
    int st = m->decode(&s);
    free(params), free(arena), free(kv);
    return st;
}

static void check_errors(Jit *jit, const char *path)
{
    Case c;
    JitModel m = {0};
    if (!case_load(&c, path, NULL, NULL, 0) || !case_compile(jit, &c, LOWER_F32, &m)) {
        report(false, "errors", "load", path);
        case_free(&c);
        return;
    }
    report(decode_status(&m, true, 0, 16) == STRATA_OK, "errors", "ok", "kv_pos 0, 4 tokens, kv_len 16");
    report(decode_status(&m, true, 12, 16) == STRATA_OK, "errors", "ok", "kv_pos 12 + 4 tokens = kv_len 16");
    report(decode_status(&m, false, 0, 16) == STRATA_ERR_CACHE, "errors", "no cache", "kv NULL");
    report(decode_status(&m, true, -1, 16) == STRATA_ERR_CACHE, "errors", "kv_pos < 0", "kv_pos -1");
    report(decode_status(&m, true, 13, 16) == STRATA_ERR_CACHE, "errors", "cache full", "kv_pos 13 + 4 > 16");
    jit_release(jit, &m);
    case_free(&c);
}

int main(void)
{
    char *err = NULL;
    Jit *jit = jit_create(&err);
    if (!jit) {
        fprintf(stderr, "decode_test: no JIT for this host (%s): skipped\n", err);
        free(err);
        return 77;
    }
    const char *srcdir = getenv("srcdir");
    char pattern[4096], pre_ln[4096];
    snprintf(pattern, sizeof pattern, "%s/models/*.strata", srcdir ? srcdir : ".");
    snprintf(pre_ln, sizeof pre_ln, "%s/models/pre_ln.strata", srcdir ? srcdir : ".");
    glob_t gl = {0};
    if (glob(pattern, 0, NULL, &gl) != 0 || gl.gl_pathc == 0) {
        fprintf(stderr, "decode_test: no model files match %s\n", pattern);
        jit_free(jit);
        return 1;
    }
    RtPool *pool = rt_pool_create(2);
    for (size_t i = 0; i < gl.gl_pathc; i++)
        check_model(jit, pool, gl.gl_pathv[i], NULL, NULL, 0);
    static const char *const zoo_sizes[] = {"vocab=11", "d=16", "heads=2", "ffn=24", "L=7", "ctx=5"};
    check_model(jit, pool, "kinds_zoo", kinds_zoo, zoo_sizes, 6);
    check_errors(jit, pre_ln);
    rt_pool_free(pool);
    globfree(&gl);
    jit_free(jit);
    printf("%d failures\n", failures);
    return failures ? 1 : 0;
}
