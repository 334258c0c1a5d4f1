/* lower_test.c - the LLVM-compiled model against the fp64 interpreter.
 * For every model file (argv, else the .strata files in $srcdir/models) at gradcheck's
 * tiny sizes: random parameters, tokens, targets and a mask with zeros; the
 * JIT-compiled strata_train_step (model ABI v1, runtime/model_abi.h) in f64
 * and in f32 must give the loss, the logits and every parameter gradient of
 * compiler/ir/interp.c, for two batch shapes from one compilation, with a
 * two-thread pool.  A model written here, ops_zoo, adds every elementwise op
 * and reduction the language has (the model files use only some), and
 * kinds_zoo (lower_case.c) blocks of four kinds, all with strata's default
 * rematerialisation (pointwise, remat.h).  All of it again with block
 * rematerialisation (strata --remat), and the two zoos with none.  The
 * models and kinds_zoo again with the head in chunks of at most 7 rows, a
 * model and kinds_zoo at vocab 300 in chunks of one row, and the zoos with
 * the whole logits (lower/calls.c, ir/memplan.h MemHead).  Also
 * writes the first model as .ll, .s and .o (lower_emit), and checks the
 * inline exp against libm in ulps, and that LLVM still compiles after
 * jit_drop_code_pages gave its code pages back.  The ABI's other
 * features (skip, capture, threads, accumulate, errors) are abi_test.c's.
 * Exit 0 pass, 1 fail, 77 skip (no JIT). */
#define _POSIX_C_SOURCE 200809L /* glob, getpid, unlink */
#include "lower_case.h"
#include "ir/memplan.h"

#include <glob.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Error of a tensor: max |got - ref| / max |ref| (tensor_error), i.e.
 * relative to the tensor's scale, not per element, since elements near
 * zero carry only the absolute rounding of the larger ones.
 *
 * f64: the compiled code differs from the interpreter only in the order of
 * roundings (BLAS blocking, vectorised and reassociated reductions, FMA
 * contraction, online softmax in attention, the inline exp), ~1e-16 per
 * operation; through 4 blocks forward and backward that grows by the
 * conditioning of the model, observed ~1e-14.  1e-10 is far above that and
 * far below any real mistake (a wrong index or formula gives errors of
 * order 1).
 * f32: unit roundoff 6e-8, the same growth gives ~1e-6 .. 1e-5 (sums of
 * hundreds of terms, exp/log of logits); 2e-4 leaves a margin of 10-100
 * while still catching an op that is only approximately right. */
#define TOL_F64 1e-10
#define TOL_F32 2e-4

static const int shapes[][2] = {{2, 5}, {3, 8}}; /* (B, T) */

typedef struct Errors {
    double loss, logits, grads; /* the worst gradient */
    const char *worst_grad;     /* its parameter */
} Errors;

static double node_error(const Case *c, const double *got, const IrNode *x)
{
    return tensor_error(got, interp_value(&c->ref, x), interp_numel(&c->ref, x));
}

static Errors compare(const Case *c, const Result *r)
{
    const IrGraph *g = &c->g;
    double ref = interp_value(&c->ref, g->loss)[0];
    Errors e = {fabs(r->loss - ref) / fmax(fabs(ref), 1e-300), node_error(c, r->logits, g->logits), 0, "-"};
    if (isnan(e.loss))
        e.loss = INFINITY;
    for (int i = 0; i < g->params.n; i++) {
        const IrNode *gn = g->grads.v[i];
        const IrParam *p = g->params.v[i];
        double err = 0;
        if (gn)
            err = node_error(c, r->grads[i], gn);
        else
            for (int64_t k = 0; k < p->numel; k++)
                err = fmax(err, r->grads[i][k] == 0 ? 0 : INFINITY);
        if (!(err <= e.grads)) {
            e.grads = err;
            e.worst_grad = p->name;
        }
    }
    return e;
}

static double worst(Errors e)
{
    double w = fmax(e.loss, fmax(e.logits, e.grads));
    return isnan(w) ? INFINITY : w;
}

/* Compiles `c` in one precision and checks it on every batch shape. */
static bool check_precision(Jit *jit, RtPool *pool, Case *c, LowerPrecision prec, char *line, size_t linesz)
{
    double tol = prec == LOWER_F32 ? TOL_F32 : TOL_F64;
    JitModel m;
    if (!case_compile(jit, c, prec, &m))
        return false;
    Errors all = {0, 0, 0, "-"};
    bool ok = true;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        if (!case_batch(c, 7 + s, shapes[s][0], shapes[s][1])) {
            ok = false;
            break;
        }
        Result r;
        /* the first shape asks for the logits, the others leave them in the
         * arena, where their gradient overwrites them (memplan.c) */
        RunOpts o = {.pool = pool, .arena_logits = s > 0};
        int st = case_run(c, &m, &o, &r);
        Errors e = compare(c, &r);
        if (s > 0)
            e.logits = 0;
        if (st != STRATA_OK || !(worst(e) <= tol)) {
            ok = false;
            fprintf(stderr, "  %s B=%d T=%d: status %d, loss %.3e logits %.3e grads %.3e (%s)\n",
                    prec == LOWER_F32 ? "f32" : "f64", c->B, c->T, st, e.loss, e.logits, e.grads, e.worst_grad);
        }
        all.loss = fmax(all.loss, e.loss);
        all.logits = fmax(all.logits, e.logits);
        if (!(e.grads <= all.grads))
            all.grads = e.grads, all.worst_grad = e.worst_grad;
        result_free(c, &r);
        case_free_batch(c);
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
 * of lower/calls.c).  No model file makes one (every operand of an
 * attention needs its gradient there), so the graph is built here:
 * q, k, v, g = embed(tokens, table_i); out = attention(q, k, v);
 * loss = cross_entropy(out, targets) (the ABI needs logits and a loss);
 * dk = attention_grad(q, k, v, g), last, so its buffer (from the memory
 * plan) still holds it when the step returns. */
static bool check_attention_grad_alone(Jit *jit, RtPool *pool)
{
    Case c = {0};
    IrGraph *g = &c.g;
    ir_init(g);
    g->model_name = "attention_grad_alone";
    IrNode *tokens = hand_node(g, IR_INPUT_TOKENS, NULL, NULL, true, 1, 1), *in[4];
    IrNode *targets = hand_node(g, IR_INPUT_TARGETS, NULL, NULL, true, 1, 1);
    tokens->is_int = targets->is_int = true;
    for (int k = 0; k < 4; k++) {
        IrParam *p = ir_add_param(g, (const char *[]){"q", "k", "v", "g"}[k], (Loc){0});
        p->ndim = 2, p->dims[0] = 11, p->dims[1] = 16, p->numel = 11 * 16;
        IrNode *table = hand_node(g, IR_PARAM, NULL, NULL, false, 11, 16);
        table->param = p;
        in[k] = hand_node(g, IR_EMBED, tokens, table, true, 1, 16);
    }
    IrNode *out = hand_node(g, IR_ATTENTION, in[0], in[1], true, 1, 16);
    out->in[2] = in[2];
    out->heads = 2;
    g->logits = out;
    g->loss = hand_node(g, IR_CROSS_ENTROPY, out, targets, false, 1, 1);
    IrNode *dk = hand_node(g, IR_ATTENTION_GRAD, in[0], in[1], true, 1, 16);
    dk->in[2] = in[2];
    dk->in[3] = in[3];
    dk->heads = 2;
    dk->which = 1;
    dk->saved = out;
    for (int i = 0; i < g->params.n; i++)
        vec_push(&g->grads, NULL);
    fuse_graph(g);
    case_params(&c, 5);
    bool ok = true;
    for (int prec = 0; prec < 2 && ok; prec++) {
        JitModel m;
        if (!case_compile(jit, &c, prec ? LOWER_F32 : LOWER_F64, &m) || !case_batch(&c, 3, 3, 7))
            return false;
        /* dk in the arena, where the memory plan put it */
        MemLayout ly;
        memplan_layout(&ly, g, m.desc->real_bytes, MEMPLAN_HEAD_DIV);
        int64_t at = memplan_slot_offset(&ly, ly.value[dk->id], c.B, c.T), n = (int64_t)c.B * c.T * 16;
        memplan_layout_free(&ly);
        bool f32 = prec == 1;
        void *arena = calloc(1, (size_t)strata_arena_bytes(m.desc, c.B, c.T, rt_pool_size(pool)));
        void *params = calloc((size_t)m.desc->params_numel, (size_t)m.desc->real_bytes), *mask = NULL;
        for (int p = 0; p < 4; p++)
            for (int64_t k = 0; k < 11 * 16; k++) {
                int64_t i = m.desc->params[p].offset + k;
                if (f32)
                    ((float *)params)[i] = (float)c.params[p][k];
                else
                    ((double *)params)[i] = c.params[p][k];
            }
        void *grads = calloc((size_t)m.desc->params_numel, (size_t)m.desc->real_bytes);
        StrataStep s = {.params = params, .grads = grads, .arena = arena,
                        .arena_bytes = strata_arena_bytes(m.desc, c.B, c.T, rt_pool_size(pool)),
                        .tokens = c.tokens, .targets = c.targets, .mask = mask, .B = c.B, .T = c.T, .pool = pool};
        int st = m.train_step(&s);
        double *got = malloc((size_t)n * sizeof *got);
        for (int64_t i = 0; i < n; i++)
            got[i] = f32 ? ((float *)((char *)arena + at))[i] : ((double *)((char *)arena + at))[i];
        double e = node_error(&c, got, dk), tol = prec ? TOL_F32 : TOL_F64;
        printf("%s %-26s %s dk %.1e\n", st == 0 && e <= tol ? "ok  " : "FAIL", g->model_name, prec ? "f32" : "f64", e);
        ok &= st == 0 && e <= tol;
        free(got), free(arena), free(params), free(grads);
        case_free_batch(&c);
        jit_release(jit, &m);
    }
    case_free(&c);
    return ok;
}

/* |got - ref| in units in the last place of ref (the spacing of the
 * precision's numbers at |ref|, denormals included); 0 when both are the
 * same NaN-ness and equal, Inf when one is NaN and the other not. */
static double ulps(double got, double ref, bool f32)
{
    if (isnan(got) || isnan(ref))
        return isnan(got) && isnan(ref) ? 0 : INFINITY;
    if (got == ref)
        return 0;
    if (isinf(ref) || isinf(got))
        return INFINITY;
    double a = fabs(ref), u = f32 ? (double)nextafterf((float)a, INFINITY) - a : nextafter(a, INFINITY) - a;
    return fabs(got - ref) / u;
}

/* The inline exp of lower/arith.c against libm, element by element:
 * logits = exp(table[token]) for a table [R, W] sweeping [-110, 90] (past
 * both ends of float's range, through the denormals) plus 0, -0, +-Inf and
 * NaN, in float and double.  Errors in units in the last place of libm's
 * result (itself within 1 ulp of e^x): Cephes' expf polynomial and the
 * Taylor polynomial for double are within 1 ulp on the reduced range and
 * the rounding of range reduction and scaling adds about 1, so more than 4
 * means a wrong constant or a bad reduction.  Specials must be exact. */
static bool check_exp(Jit *jit)
{
    enum { R = 40, W = 256, N = R * W };
    Case c = {0};
    IrGraph *g = &c.g;
    ir_init(g);
    g->model_name = "exp_accuracy";
    IrNode *tokens = hand_node(g, IR_INPUT_TOKENS, NULL, NULL, true, 1, 1);
    IrNode *targets = hand_node(g, IR_INPUT_TARGETS, NULL, NULL, true, 1, 1);
    tokens->is_int = targets->is_int = true;
    IrParam *p = ir_add_param(g, "table", (Loc){0});
    p->ndim = 2, p->dims[0] = R, p->dims[1] = W, p->numel = N;
    IrNode *table = hand_node(g, IR_PARAM, NULL, NULL, false, R, W);
    table->param = p;
    IrNode *x = hand_node(g, IR_EMBED, tokens, table, true, 1, W);
    g->logits = hand_node(g, IR_EXP, x, NULL, true, 1, W);
    g->loss = hand_node(g, IR_CROSS_ENTROPY, g->logits, targets, false, 1, 1);
    vec_push(&g->grads, NULL);
    fuse_graph(g);
    double vals[N];
    static const double special[] = {0.0, -0.0, INFINITY, -INFINITY, NAN, 88.72, 88.73, -87.3, -103.9, 709.7, 709.8,
                                     -745.1, -745.2, 1e-30, -1e-30};
    int ns = (int)(sizeof special / sizeof *special);
    for (int i = 0; i < N; i++)
        vals[i] = i < ns ? special[i] : -110 + 200.0 * (i - ns) / (N - ns - 1) + 1e-3 * sin(i);
    int32_t ids[R], zeros[R] = {0};
    for (int r = 0; r < R; r++)
        ids[r] = r;
    bool ok = true;
    for (int prec = 0; prec < 2; prec++) {
        bool f32 = prec == 1;
        JitModel m;
        if (!case_compile(jit, &c, f32 ? LOWER_F32 : LOWER_F64, &m))
            return false;
        size_t e = f32 ? 4 : 8;
        int64_t bytes = strata_arena_bytes(m.desc, 1, R, 1);
        char *arena = malloc((size_t)bytes), *params = calloc((size_t)m.desc->params_numel, e);
        for (int i = 0; i < N; i++)
            if (f32)
                ((float *)params)[i] = (float)vals[i];
            else
                ((double *)params)[i] = vals[i];
        StrataStep s = {.params = params, .arena = arena, .arena_bytes = bytes, .tokens = ids, .targets = zeros,
                        .B = 1, .T = R};
        int st = m.forward(&s);
        const char *lg = strata_logits_in_arena(m.desc, arena, 1, R);
        double worst = 0;
        for (int i = 0; i < N; i++) {
            double in = f32 ? ((float *)params)[i] : vals[i];
            double got = f32 ? ((const float *)lg)[i] : ((const double *)lg)[i];
            worst = fmax(worst, ulps(got, f32 ? (double)expf((float)in) : exp(in), f32));
        }
        printf("%s %-26s %s worst %.2f ulp over %d values\n", st == 0 && worst <= 4 ? "ok  " : "FAIL",
               g->model_name, f32 ? "f32" : "f64", worst, N);
        ok &= st == 0 && worst <= 4;
        free(arena), free(params);
        jit_release(jit, &m);
    }
    ir_free(g);
    return ok;
}

/* The sizes check_model loads models at (NULL: case_load's tiny ones). */
/* Resident kB of the executable mappings of libLLVM (smaps). */
static long llvm_code_kb(void)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        return -1;
    char line[4096];
    long kb = 0, v;
    bool in = false;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char perms[8];
        if (sscanf(line, "%lx-%lx %7s ", &lo, &hi, perms) == 3)
            in = !strcmp(perms, "r-xp") && strstr(line, "/libLLVM");
        else if (in && sscanf(line, "Rss: %ld kB", &v) == 1)
            kb += v;
    }
    fclose(f);
    return kb;
}

/* jit_drop_code_pages after the models compiled: libLLVM's code is no
 * longer resident (where it is a shared library), and the JIT compiles
 * the checks that follow from the pages the kernel reads back. */
static bool check_drop_code_pages(void)
{
    long before = llvm_code_kb();
    size_t dropped = jit_drop_code_pages();
    long after = llvm_code_kb();
    if (!dropped && before == 0) {
        printf("ok   jit_drop_code_pages: LLVM is linked into this program, nothing to drop\n");
        return true;
    }
    bool ok = dropped > 0 && before > 1024 && after >= 0 && after < 256;
    printf("%s jit_drop_code_pages: libLLVM's code %ld kB resident before, %ld kB after (%zu kB of mappings)\n",
           ok ? "ok  " : "FAIL", before, after, dropped >> 10);
    return ok;
}

static const char *const *model_sizes;
static int model_nsizes;

static bool check_model(Jit *jit, RtPool *pool, const char *path, const char *text, bool emit)
{
    Case c;
    bool ok = case_load(&c, path, text, model_sizes, model_nsizes);
    if (ok) {
        case_params(&c, 1);
        char l64[160], l32[160];
        ok = check_precision(jit, pool, &c, LOWER_F64, l64, sizeof l64);
        ok &= check_precision(jit, pool, &c, LOWER_F32, l32, sizeof l32);
        const char *base = strrchr(path, '/');
        printf("%s %-26s %s | %s\n", ok ? "ok  " : "FAIL", base ? base + 1 : path, l64, l32);
        if (emit)
            ok &= check_emit(&c);
    } else {
        printf("FAIL %s: does not load\n", path);
    }
    case_free(&c);
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
    RtPool *pool = rt_pool_create(2);
    int n = argc < 2 ? (int)gl.gl_pathc : argc - 1, failures = 0;
    printf("tolerances: f64 %.0e, f32 %.0e (max |diff| / max |ref| per tensor); %d threads; batches", TOL_F64,
           TOL_F32, rt_pool_size(pool));
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        printf(" %dx%d", shapes[s][0], shapes[s][1]);
    printf("\n");
    for (int i = 0; i < n; i++)
        failures += !check_model(jit, pool, argc < 2 ? gl.gl_pathv[i] : argv[i + 1], NULL, i == 0);
    failures += !check_model(jit, pool, "ops_zoo", ops_zoo, false);
    failures += !check_model(jit, pool, "kinds_zoo", kinds_zoo, false);
    failures += !check_attention_grad_alone(jit, pool);
    failures += !check_exp(jit);
    failures += !check_drop_code_pages();
    printf("with --remat (compiler/ir/remat.c):\n");
    case_remat = IR_REMAT_BLOCKS;
    for (int i = 0; i < n; i++)
        failures += !check_model(jit, pool, argc < 2 ? gl.gl_pathv[i] : argv[i + 1], NULL, false);
    failures += !check_model(jit, pool, "ops_zoo", ops_zoo, false);
    failures += !check_model(jit, pool, "kinds_zoo", kinds_zoo, false);
    printf("with --remat=none (every forward value the backward pass reads kept; the models above ran with "
           "the default, pointwise):\n");
    case_remat = IR_REMAT_NONE;
    failures += !check_model(jit, pool, "ops_zoo", ops_zoo, false);
    failures += !check_model(jit, pool, "kinds_zoo", kinds_zoo, false);
    case_remat = IR_REMAT_POINTWISE;
    /* The head (logits, cross-entropy, their gradients) in chunks (memplan.h
     * MemHead; at vocab 11 the default is one chunk): of at most 7 rows, so
     * 10 and 24 rows are chunks of 7 and a remainder, the weight's gradient
     * summed over them; at vocab 300 a 1/64 of a row per token, which is
     * under a row for 10 tokens (chunks of one row in the spare row) and one
     * row for 24; and the whole logits at once, as when a graph has no such
     * head. */
    printf("with the head in chunks of at most 7 rows:\n");
    case_head_cap = 7;
    for (int i = 0; i < n; i++)
        failures += !check_model(jit, pool, argc < 2 ? gl.gl_pathv[i] : argv[i + 1], NULL, false);
    failures += !check_model(jit, pool, "kinds_zoo", kinds_zoo, false);
    case_head_cap = 0;
    printf("at vocab 300 with the head in chunks of a 1/64 of a row per token (rows of one):\n");
    static const char *const v300[] = {"vocab=300", "d=16", "heads=2", "ffn=24", "L=4", "ctx=5"};
    model_sizes = v300, model_nsizes = 6, case_head_div = 64;
    failures += !check_model(jit, pool, argc < 2 ? gl.gl_pathv[0] : argv[1], NULL, false);
    failures += !check_model(jit, pool, "kinds_zoo", kinds_zoo, false);
    model_sizes = NULL, model_nsizes = 0;
    printf("with the whole logits at once (no head chunks):\n");
    case_head_div = -1;
    failures += !check_model(jit, pool, "ops_zoo", ops_zoo, false);
    failures += !check_model(jit, pool, "kinds_zoo", kinds_zoo, false);
    case_head_div = 0;
    globfree(&gl);
    rt_pool_free(pool);
    jit_free(jit);
    printf("%d of %d checks passed\n", 3 * n + 12 - failures, 3 * n + 12);
    return failures ? 1 : 0;
}
