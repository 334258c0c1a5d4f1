/* train_case.c - the trainer tests' shared harness (see train_case.h). */
#include "train_case.h"

#include "ir/ad.h"
#include "front/ast.h"
#include "store/checkpoint.h"
#include "data/data.h"
#include "ir/fuse.h"
#include "lower/jit.h"
#include "resolve/sema.h"

#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

RtModel tc_model;
bool tc_echo_stderr;

static Jit *jit;
static IrGraph graph;
static Program prog;
static JitModel jm;
static char *source; /* the model file's text, tc_model.source */

/* --- the model ------------------------------------------------------------ */

static bool compile_model(const char **defines, int ndefines, const char *config_json)
{
    char path[512];
    snprintf(path, sizeof path, "%s/models/pre_ln.strata", getenv("srcdir") ? getenv("srcdir") : ".");
    const char *why = NULL;
    SrcFile *src = src_read(path, &why);
    if (!src) {
        printf("cannot read %s: %s\n", path, why);
        return false;
    }
    Diag d;
    diag_init(&d, stderr);
    SemaOptions opt = {.defines = defines, .ndefines = ndefines};
    ir_init(&graph);
    graph.model_name = "pre_ln.strata";
    bool ok = ast_load(&prog, &d, src) && sema_resolve(&prog, &opt, &d, &graph);
    diag_finish(&d);
    if (!ok)
        return false;
    ad_build(&graph);
    fuse_graph(&graph);
    char *err = NULL;
    LowerOptions lo = {.precision = LOWER_F32, .opt_level = 2};
    if (!jit_compile(jit, &graph, &lo, &jm, &err)) {
        printf("jit: %s\n", err);
        free(err);
        return false;
    }
    source = tu_slurp(path, NULL);
    tc_model = (RtModel){.desc = jm.desc, .train_step = jm.train_step, .forward = jm.forward, .source = source,
                         .path = "models/pre_ln.strata", .config_json = config_json};
    return true;
}

int tc_open(const char *name, const char **defines, int ndefines, const char *config_json)
{
    char *err = NULL;
    jit = jit_create(&err);
    if (!jit) {
        printf("SKIP: no JIT: %s\n", err);
        free(err);
        return 77;
    }
    if (!compile_model(defines, ndefines, config_json))
        return 1;
    char tmpl[128];
    snprintf(tmpl, sizeof tmpl, "%s.XXXXXX", name);
    return tu_mkdtemp(tmpl) ? 0 : 1;
}

int tc_close(const char *name)
{
    int rc = tu_finish(name);
    jit_release(jit, &jm);
    jit_free(jit);
    ir_free(&graph);
    ast_program_free(&prog);
    free(source);
    return rc;
}

/* --- running commands ----------------------------------------------------- */

int tc_run(const char *first, ...)
{
    char *argv[64] = {"trainer"};
    int argc = 1;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a && argc < 63; a = va_arg(ap, const char *))
        argv[argc++] = (char *)a;
    va_end(ap);
    fflush(stdout), fflush(stderr);
    int so = dup(1), se = dup(2);
    int fo = open(tu_path("out.txt"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int fe = open(tu_path("err.txt"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fo, 1), dup2(fe, 2), close(fo), close(fe);
    int rc = rt_trainer_main(&tc_model, argc, argv);
    fflush(stdout), fflush(stderr);
    dup2(so, 1), dup2(se, 2), close(so), close(se);
    if (rc && tc_echo_stderr) {
        char *e = tu_slurp(tu_path("err.txt"), NULL);
        fputs(e ? e : "(no stderr)\n", stdout);
        free(e);
    }
    return rc;
}

bool tc_file_has(const char *name, const char *text)
{
    char *e = tu_slurp(tu_path(name), NULL);
    bool ok = e && strstr(e, text);
    if (!ok)
        printf("  %s was: %s\n", name, e ? e : "(none)");
    free(e);
    return ok;
}

void tc_write_shard(const char *name, int64_t n, int32_t (*tok)(int64_t i, void *ctx), void *ctx)
{
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    for (int64_t i = 0; i < n; i++)
        ids[i] = tok(i, ctx);
    char *err = NULL;
    if (rt_shard_write(tu_path(name), ids, n, 0, &err)) {
        printf("FAIL %s\n", err);
        free(err);
        tu_fails++;
    }
    free(ids);
}

/* --- checkpoints and metrics ---------------------------------------------- */

float *tc_weights(const char *ckpt)
{
    RtSafetensors st;
    char *err = NULL;
    float *p = calloc((size_t)tc_model.desc->params_numel, sizeof *p);
    if (rt_st_open(&st, ckpt, &err) || rt_ckpt_read_params(&st, tc_model.desc, p, &err)) {
        printf("FAIL reading %s: %s\n", ckpt, err);
        tu_fails++;
        free(err);
        return p;
    }
    rt_st_close(&st);
    return p;
}

double tc_tensor_diff(const char *fa, const char *fb, const char *prefix, double *scale, bool *bytes_equal)
{
    RtSafetensors a, b;
    char *err = NULL;
    *scale = 0;
    *bytes_equal = false;
    if (rt_st_open(&a, fa, &err))
        goto fail;
    if (rt_st_open(&b, fb, &err)) {
        rt_st_close(&a);
        goto fail;
    }
    double d = 0;
    *bytes_equal = true;
    for (int64_t i = 0; i < tc_model.desc->nparams; i++) {
        char name[256];
        snprintf(name, sizeof name, "%s%s", prefix, tc_model.desc->params[i].name);
        const RtStTensor *x = rt_st_find(&a, name), *y = rt_st_find(&b, name);
        if (!x || !y || x->numel != y->numel) {
            d = -1, *bytes_equal = false;
            break;
        }
        if (memcmp(x->data, y->data, (size_t)x->numel * 4))
            *bytes_equal = false;
        for (int64_t k = 0; k < x->numel; k++) {
            float u, v;
            memcpy(&u, (const char *)x->data + 4 * k, 4);
            memcpy(&v, (const char *)y->data + 4 * k, 4);
            d = fmax(d, fabs((double)u - v));
            *scale = fmax(*scale, fabs((double)u));
        }
    }
    rt_st_close(&a), rt_st_close(&b);
    return d;
fail:
    printf("  %s\n", err);
    free(err);
    return -1;
}

bool tc_same_tensors(const char *fa, const char *fb, const char *prefix)
{
    double scale;
    bool same;
    return tc_tensor_diff(fa, fb, prefix, &scale, &same) >= 0 && same;
}

double tc_first_loss(const char *metrics)
{
    char *t = tu_slurp(metrics, NULL), *p = t ? strstr(t, "\"loss\": ") : NULL;
    double l = p ? strtod(p + 8, NULL) : NAN;
    free(t);
    return l;
}

double tc_last_val_loss(const char *metrics)
{
    char *t = tu_slurp(metrics, NULL), *p = t, *q, *last = NULL;
    while (p && (q = strstr(p, "\"val_loss\": ")))
        last = q, p = q + 1;
    double l = last ? strtod(last + 12, NULL) : NAN;
    free(t);
    return l;
}

int tc_count_lines(const char *path)
{
    size_t n;
    char *t = tu_slurp(path, &n);
    if (!t)
        return -1;
    int lines = 0;
    for (size_t i = 0; i < n; i++)
        lines += t[i] == '\n';
    free(t);
    return lines;
}

/* --- steps and definitions ------------------------------------------------ */

void *tc_arena(int64_t B, int64_t T, int64_t *bytes)
{
    *bytes = strata_arena_bytes(tc_model.desc, B, T, 1);
    return aligned_alloc(64, (size_t)(*bytes + 63) / 64 * 64);
}

double tc_logp(const float *row, int nv, int target)
{
    double mx = row[0], s = 0;
    for (int i = 1; i < nv; i++)
        mx = fmax(mx, row[i]);
    for (int i = 0; i < nv; i++)
        s += exp((double)row[i] - mx);
    return (double)row[target] - mx - log(s);
}

int tc_argmax(const float *row, int nv)
{
    int b = 0;
    for (int i = 1; i < nv; i++)
        if (row[i] > row[b])
            b = i;
    return b;
}
