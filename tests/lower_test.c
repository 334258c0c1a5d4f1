/* lower_test.c - the LLVM-compiled model against the fp64 interpreter.
 * For every model file (argv, else the .strata files in $srcdir/models) at gradcheck's
 * tiny sizes: random parameters, tokens, targets and a mask with zeros; the
 * JIT-compiled strata_run (lower.h, jit.h) in f64 and in f32 must give the
 * loss, the logits and every parameter gradient of compiler/interp.c, for
 * two batch shapes from one compilation.  A model written here, ops_zoo,
 * adds every elementwise op and reduction the language has (the model
 * files use only some).  Also writes the first model as .ll, .s and .o
 * (lower_emit).  Exit 0 pass, 1 fail, 77 skip (no JIT). */
#define _POSIX_C_SOURCE 200809L /* glob, getpid, unlink */
#include "ad.h"
#include "ast.h"
#include "interp.h"
#include "jit.h"
#include "lower.h"
#include "sema.h"

#include <glob.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Error of a tensor: max |got - ref| / max |ref| (max |got - ref| if ref is
 * all zeros), i.e. relative to the tensor's scale, not per element, since
 * elements near zero carry only the absolute rounding of the larger ones.
 *
 * f64: the compiled code differs from the interpreter only in the order of
 * roundings (BLAS blocking, vectorised and reassociated reductions, FMA
 * contraction, online softmax in attention), ~1e-16 per operation; through
 * 4 blocks forward and backward that grows by the conditioning of the
 * model, observed ~1e-14.  1e-10 is far above that and far below any real
 * mistake (a wrong index or formula gives errors of order 1).
 * f32: unit roundoff 6e-8, the same growth gives ~1e-6 .. 1e-5 (sums of
 * hundreds of terms, exp/log of logits); 2e-4 leaves a margin of 10-100
 * while still catching an op that is only approximately right. */
#define TOL_F64 1e-10
#define TOL_F32 2e-4

static const char *tiny_sizes[] = {"vocab=11", "d=16", "heads=2", "ffn=24", "L=4", "ctx=5"};
static const int shapes[][2] = {{2, 5}, {3, 8}}; /* (B, T) */

/* Every op the model files leave out: sigmoid, tanh, gelu, abs, exp, log,
 * sqrt, rsqrt, division, x^1.5, x^3, max (and so sign, eq_mask and
 * gelu_grad in the backward), layernorm, a scalar parameter, and matmul
 * with W [in, out] (not transposed).  Powers act on tanh(x): x^3 of the
 * residual stream would overflow float within the 4 blocks. */
static const char ops_zoo[] =
    "import \"std\"\n"
    "config {\n vocab = 11\n d = 16\n heads = 2\n ffn = 24\n L = 2\n}\n"
    "fn zoo(x) {\n"
    "    param s = constant(0.7)\n"
    "    param v[dim(x)] = ones\n"
    "    a = sigmoid(x) * tanh(x) - gelu(x) / (2 + abs(x)) + silu(x) * v\n"
    "    b = exp(-square(x) * 0.5) + log(1 + square(x)) + sqrt(1 + abs(x)) * s + rsqrt(2 + x * x)\n"
    "    t = tanh(x)\n"
    "    c = (1 + square(t)) ^ 1.5 + t ^ 3 - (x - max(x)) + sum(x) / dim(x) * v - mean(x) * s\n"
    "    return a + b + c * 0.1\n"
    "}\n"
    "model {\n"
    "    x = embed(tokens, vocab, d) as tok_embeddings\n"
    "    for l in 1..L {\n"
    "        x = x + attention(layernorm(x) as attn_norm, heads) as attn\n"
    "        x = x + gelu_mlp(zoo(x) as zoo, ffn) as mlp\n"
    "    }\n"
    "    param w[d, vocab] = normal(0.3)\n"
    "    logits = matmul(layernorm(x) as norm, w)\n"
    "}\n";

typedef struct Rng {
    uint64_t s;
} Rng;

static uint64_t rng_next(Rng *r) /* splitmix64, as gradcheck.c */
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double rng_normal(Rng *r)
{
    double u = (double)(rng_next(r) >> 11) * 0x1.0p-53, v = (double)(rng_next(r) >> 11) * 0x1.0p-53;
    return sqrt(-2 * log(u + 1e-300)) * cos(2 * acos(-1.0) * v);
}

/* ---- a model and its inputs ---- */

typedef struct Case {
    IrGraph g;
    Program prog;
    double **params;         /* params[p->index], values exact in float */
    int B, T;
    int32_t *tokens, *targets;
    double *mask;            /* (B*T), some zeros */
    Interp ref;
} Case;

/* Loads the file `path`, or the source `text` under that name. */
static bool load_model(Case *c, const char *path, const char *text)
{
    Diag d;
    diag_init(&d, stderr);
    const char *why = NULL;
    SrcFile *src = text ? src_from_memory(path, text, strlen(text)) : src_read(path, &why);
    if (!src) {
        fprintf(stderr, "lower_test: cannot read %s: %s\n", path, why);
        return false;
    }
    SemaOptions opt = {.soft = tiny_sizes, .nsoft = (int)(sizeof tiny_sizes / sizeof *tiny_sizes)};
    ir_init(&c->g);
    c->g.model_name = path;
    bool ok = ast_load(&c->prog, &d, src) && sema_resolve(&c->prog, &opt, &d, &c->g);
    diag_finish(&d);
    if (!ok)
        return false;
    ad_build(&c->g);
    return ir_verify(&c->g, stderr);
}

/* gradcheck.c's random point: init base value + N(0, 0.3^2), rounded to
 * float so that f32 and f64 runs start from the same numbers. */
static void make_params(Case *c, Rng *rng)
{
    int np = c->g.params.n;
    c->params = calloc((size_t)np, sizeof *c->params);
    for (int i = 0; i < np; i++) {
        const IrParam *p = c->g.params.v[i];
        double base = p->init.kind == INIT_ONES ? 1 : p->init.kind == INIT_CONSTANT ? p->init.a : 0;
        c->params[i] = malloc((size_t)p->numel * sizeof(double));
        for (int64_t k = 0; k < p->numel; k++)
            c->params[i][k] = (float)(base + 0.3 * rng_normal(rng));
    }
}

/* Token ids within every embedding table, targets within the logits; a
 * third of the positions masked out of the loss. */
static bool make_batch(Case *c, Rng *rng, int B, int T)
{
    const IrGraph *g = &c->g;
    int BT = B * T;
    int64_t nlogits = g->logits ? g->logits->width : 1, vocab = g->logits ? nlogits : INT32_MAX;
    for (int i = 0; i < g->nodes.n; i++) {
        const IrNode *x = g->nodes.v[i];
        if (x->op == IR_EMBED && x->in[1]->rows < vocab)
            vocab = x->in[1]->rows;
    }
    c->B = B;
    c->T = T;
    c->tokens = malloc((size_t)BT * sizeof *c->tokens);
    c->targets = malloc((size_t)BT * sizeof *c->targets);
    c->mask = malloc((size_t)BT * sizeof *c->mask);
    for (int r = 0; r < BT; r++) {
        c->tokens[r] = (int32_t)(rng_next(rng) % (uint64_t)vocab);
        c->targets[r] = (int32_t)(rng_next(rng) % (uint64_t)nlogits);
        c->mask[r] = r % 3 == 1 ? 0 : 1;
    }
    InterpInput in = {B, T, c->tokens, c->targets, c->mask, c->params};
    return interp_run(&c->ref, g, &in);
}

static void free_batch(Case *c)
{
    interp_free(&c->ref);
    free(c->tokens);
    free(c->targets);
    free(c->mask);
}

/* ---- one compiled run ---- */

/* Every node's value after strata_run, converted to double. */
typedef struct Result {
    double **val;            /* val[id], NULL for inputs */
} Result;

#define RUN_BODY(REAL, runfn)                                                                               \
    do {                                                                                                    \
        REAL **bufs = calloc((size_t)n, sizeof *bufs), **aux = calloc((size_t)n, sizeof *aux);              \
        REAL *mask = calloc((size_t)BT, sizeof *mask);                                                      \
        for (int i = 0; i < n; i++) {                                                                       \
            const IrNode *x = g->nodes.v[i];                                                                \
            int64_t ne = lower_numel(x, c->B, c->T), na = lower_aux_numel(x, c->B, c->T);                   \
            bufs[i] = malloc((size_t)ne * sizeof(REAL));                                                    \
            for (int64_t k = 0; k < ne; k++) /* poison: a value never written shows up as NaN */             \
                bufs[i][k] = (REAL)NAN;                                                                     \
            if (x->op == IR_PARAM)                                                                          \
                for (int64_t k = 0; k < ne; k++)                                                            \
                    bufs[i][k] = (REAL)c->params[x->param->index][k];                                       \
            aux[i] = na ? malloc((size_t)na * sizeof(REAL)) : NULL;                                         \
        }                                                                                                   \
        for (int r = 0; r < BT; r++)                                                                        \
            mask[r] = (REAL)c->mask[r];                                                                     \
        runfn(bufs, aux, c->tokens, c->targets, mask, c->B, c->T);                                          \
        for (int i = 0; i < n; i++) {                                                                       \
            const IrNode *x = g->nodes.v[i];                                                                \
            int64_t ne = lower_numel(x, c->B, c->T);                                                        \
            if (x->op != IR_INPUT_TOKENS && x->op != IR_INPUT_TARGETS) {                                    \
                res->val[i] = malloc((size_t)ne * sizeof(double));                                          \
                for (int64_t k = 0; k < ne; k++)                                                            \
                    res->val[i][k] = bufs[i][k];                                                            \
            }                                                                                               \
            free(bufs[i]);                                                                                  \
            free(aux[i]);                                                                                   \
        }                                                                                                   \
        free(bufs);                                                                                         \
        free(aux);                                                                                          \
        free(mask);                                                                                         \
    } while (0)

static void run_compiled(const Case *c, const JitModel *m, Result *res)
{
    const IrGraph *g = &c->g;
    int n = g->nodes.n, BT = c->B * c->T;
    res->val = calloc((size_t)n, sizeof *res->val);
    if (m->precision == LOWER_F32)
        RUN_BODY(float, m->run_f32);
    else
        RUN_BODY(double, m->run_f64);
}

static void free_result(const Case *c, Result *res)
{
    for (int i = 0; i < c->g.nodes.n; i++)
        free(res->val[i]);
    free(res->val);
}

/* ---- comparison ---- */

static double tensor_error(const double *got, const double *ref, int64_t n)
{
    double scale = 0, diff = 0;
    for (int64_t k = 0; k < n; k++) {
        scale = fmax(scale, fabs(ref[k]));
        double d = fabs(got[k] - ref[k]);
        diff = isnan(d) ? INFINITY : fmax(diff, d);
    }
    return scale > 0 ? diff / scale : diff;
}

static double node_error(const Case *c, const Result *res, const IrNode *x)
{
    return tensor_error(res->val[x->id], interp_value(&c->ref, x), interp_numel(&c->ref, x));
}

typedef struct Errors {
    double loss, logits, grads; /* the worst gradient */
    const char *worst_grad;     /* its parameter */
} Errors;

static Errors compare(const Case *c, const Result *res)
{
    const IrGraph *g = &c->g;
    Errors e = {node_error(c, res, g->loss), node_error(c, res, g->logits), 0, "-"};
    for (int i = 0; i < g->params.n; i++) {
        const IrNode *gn = g->grads.v[i];
        double err = gn ? node_error(c, res, gn) : 0;
        if (!(err <= e.grads)) {
            e.grads = err;
            e.worst_grad = ((IrParam *)g->params.v[i])->name;
        }
    }
    return e;
}

/* On failure: the first node (in graph order) off by more than tol. */
static void report_first_bad_node(const Case *c, const Result *res, double tol)
{
    for (int i = 0; i < c->g.nodes.n; i++) {
        const IrNode *x = c->g.nodes.v[i];
        if (!res->val[i])
            continue;
        double err = node_error(c, res, x);
        if (!(err <= tol)) {
            fprintf(stderr, "  first bad node: %%%d %s, error %.3e\n", x->id, ir_op_info[x->op].text, err);
            return;
        }
    }
}

/* ---- driver ---- */

static double worst(Errors e)
{
    double w = fmax(e.loss, fmax(e.logits, e.grads));
    return isnan(w) ? INFINITY : w;
}

/* Compiles `c` in one precision and checks it on every batch shape. */
static bool check_precision(Jit *jit, Case *c, LowerPrecision prec, char *line, size_t linesz)
{
    double tol = prec == LOWER_F32 ? TOL_F32 : TOL_F64;
    LowerOptions o = {.precision = prec, .opt_level = 2};
    JitModel m;
    char *err = NULL;
    if (!jit_compile(jit, &c->g, &o, &m, &err)) {
        fprintf(stderr, "lower_test: %s: JIT: %s\n", c->g.model_name, err);
        free(err);
        return false;
    }
    Errors all = {0, 0, 0, "-"};
    bool ok = true;
    Rng rng = {7};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        if (!make_batch(c, &rng, shapes[s][0], shapes[s][1])) {
            ok = false;
            break;
        }
        Result res;
        run_compiled(c, &m, &res);
        Errors e = compare(c, &res);
        if (!(worst(e) <= tol)) {
            ok = false;
            fprintf(stderr, "  %s B=%d T=%d: loss %.3e logits %.3e grads %.3e (%s)\n",
                    prec == LOWER_F32 ? "f32" : "f64", c->B, c->T, e.loss, e.logits, e.grads, e.worst_grad);
            report_first_bad_node(c, &res, tol);
        }
        all.loss = fmax(all.loss, e.loss);
        all.logits = fmax(all.logits, e.logits);
        if (!(e.grads <= all.grads))
            all.grads = e.grads, all.worst_grad = e.worst_grad;
        free_result(c, &res);
        free_batch(c);
    }
    snprintf(line, linesz, "%s loss %.1e logits %.1e grads %.1e, jit %.2fs", prec == LOWER_F32 ? "f32" : "f64",
             all.loss, all.logits, all.grads, m.stats.total_s);
    jit_release(jit, &m);
    return ok;
}

/* lower_emit: text IR, assembly and an object file, each non-empty. */
static bool check_emit(const Case *c)
{
    LowerOptions o = {.precision = LOWER_F32, .cpu = "x86-64-v3", .opt_level = 2};
    char *err = NULL;
    LowerModule *m = lower_module(&c->g, &o, &err);
    if (!m) {
        fprintf(stderr, "lower_test: lower_module: %s\n", err);
        free(err);
        return false;
    }
    static const char *const ext[] = {"ll", "s", "o"};
    bool ok = true;
    for (int k = 0; k < 3 && ok; k++) {
        char path[128];
        snprintf(path, sizeof path, "/tmp/lower_test.%ld.%s", (long)getpid(), ext[k]);
        struct stat st;
        ok = lower_emit(m, (LowerEmitKind)k, path, &err) && stat(path, &st) == 0 && st.st_size > 0;
        if (!ok)
            fprintf(stderr, "lower_test: emit %s: %s\n", path, err ? err : "empty file");
        free(err);
        err = NULL;
        unlink(path);
    }
    lower_module_free(m);
    printf("%s lower_emit .ll .s .o (x86-64-v3)\n", ok ? "ok  " : "FAIL");
    return ok;
}

/* A node built by hand (check_attention_grad_alone). */
static IrNode *hand_node(IrGraph *g, IrOp op, IrNode *a, IrNode *b, bool tok, int64_t rows, int64_t width)
{
    IrNode *x = ir_add(g, op, (Loc){0});
    *x = (IrNode){.op = op, .in = {a, b}, .tok = tok, .rows = rows, .width = width, .block = -1, .id = x->id};
    return x;
}

/* An ATTENTION_GRAD whose siblings are missing: only dk is asked for, so
 * the compiled code must put dq and dv somewhere else (the spare buffers
 * of lower_kernels.c).  No model file makes one (every operand of an
 * attention needs its gradient there), so the graph is built here:
 * q, k, v, g = embed(tokens, table_i); out = attention(q, k, v);
 * dk = attention_grad(q, k, v, g). */
static bool check_attention_grad_alone(Jit *jit)
{
    Case c = {0};
    IrGraph *g = &c.g;
    ir_init(g);
    g->model_name = "attention_grad_alone";
    IrNode *tokens = hand_node(g, IR_INPUT_TOKENS, NULL, NULL, true, 1, 1), *in[4];
    for (int k = 0; k < 4; k++) {
        IrParam *p = ir_add_param(g, (const char *[]){"q", "k", "v", "g"}[k], (Loc){0});
        p->ndim = 2, p->dims[0] = 11, p->dims[1] = 16, p->numel = 11 * 16;
        IrNode *table = hand_node(g, IR_PARAM, NULL, NULL, false, 11, 16);
        table->param = p;
        in[k] = hand_node(g, IR_EMBED, tokens, table, true, 1, 16);
    }
    IrNode *out = hand_node(g, IR_ATTENTION, in[0], in[1], true, 1, 16);
    IrNode *dk = hand_node(g, IR_ATTENTION_GRAD, in[0], in[1], true, 1, 16);
    out->in[2] = dk->in[2] = in[2];
    dk->in[3] = in[3];
    out->heads = dk->heads = 2;
    dk->which = 1;
    Rng rng = {5};
    make_params(&c, &rng);
    bool ok = true;
    for (int prec = 0; prec < 2; prec++) {
        LowerOptions o = {.precision = prec ? LOWER_F32 : LOWER_F64, .opt_level = 2};
        JitModel m;
        char *err = NULL;
        if (!jit_compile(jit, g, &o, &m, &err) || !make_batch(&c, &rng, 3, 7)) {
            fprintf(stderr, "lower_test: %s: %s\n", g->model_name, err ? err : "interpreter failed");
            free(err);
            return false;
        }
        Result res;
        run_compiled(&c, &m, &res);
        double e = fmax(node_error(&c, &res, out), node_error(&c, &res, dk)), tol = prec ? TOL_F32 : TOL_F64;
        printf("%s %-26s %s out, dk %.1e\n", e <= tol ? "ok  " : "FAIL", g->model_name, prec ? "f32" : "f64", e);
        ok &= e <= tol;
        free_result(&c, &res);
        free_batch(&c);
        jit_release(jit, &m);
    }
    for (int i = 0; i < g->params.n; i++)
        free(c.params[i]);
    free(c.params);
    ir_free(g);
    return ok;
}

static bool check_model(Jit *jit, const char *path, const char *text, bool emit)
{
    Case c = {0};
    bool ok = load_model(&c, path, text);
    if (ok) {
        Rng rng = {1};
        make_params(&c, &rng);
        char l64[160], l32[160];
        ok = check_precision(jit, &c, LOWER_F64, l64, sizeof l64);
        ok &= check_precision(jit, &c, LOWER_F32, l32, sizeof l32);
        const char *base = strrchr(path, '/');
        printf("%s %-26s %s | %s\n", ok ? "ok  " : "FAIL", base ? base + 1 : path, l64, l32);
        if (emit)
            ok &= check_emit(&c);
        for (int i = 0; i < c.g.params.n; i++)
            free(c.params[i]);
        free(c.params);
    } else {
        printf("FAIL %s: does not load\n", path);
    }
    ir_free(&c.g);
    ast_program_free(&c.prog);
    return ok;
}

int main(int argc, char **argv)
{
    char *err = NULL;
    Jit *jit = jit_create(&err);
    if (!jit) {
        fprintf(stderr, "lower_test: no JIT for this host (%s): skipped\n", err);
        free(err);
        return 77;
    }
    glob_t gl = {0};
    if (argc < 2) {
        const char *srcdir = getenv("srcdir");
        char pattern[4096];
        snprintf(pattern, sizeof pattern, "%s/models/*.strata", srcdir ? srcdir : ".");
        if (glob(pattern, 0, NULL, &gl) != 0 || gl.gl_pathc == 0) {
            fprintf(stderr, "lower_test: no model files match %s\n", pattern);
            jit_free(jit);
            return 1;
        }
    }
    int n = argc < 2 ? (int)gl.gl_pathc : argc - 1, failures = 0;
    printf("tolerances: f64 %.0e, f32 %.0e (max |diff| / max |ref| per tensor); batches", TOL_F64, TOL_F32);
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        printf(" %dx%d", shapes[s][0], shapes[s][1]);
    printf("\n");
    for (int i = 0; i < n; i++)
        failures += !check_model(jit, argc < 2 ? gl.gl_pathv[i] : argv[i + 1], NULL, i == 0);
    failures += !check_model(jit, "ops_zoo", ops_zoo, false);
    failures += !check_attention_grad_alone(jit);
    globfree(&gl);
    jit_free(jit);
    printf("%d of %d checks passed\n", n + 2 - failures, n + 2);
    return failures ? 1 : 0;
}
