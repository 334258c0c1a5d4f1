/* export_helper.c - the C side of tests/export.test (not a test itself).
 *   export_helper ckpt MODEL.strata OUT.safetensors SEED [-D NAME=VALUE]...
 *       JIT-compiles the model and writes a checkpoint in the layout of
 *       runtime/store/checkpoint.h: every parameter of strata_model's table
 *       under its name and shape ([rows, cols], [n], [] for a scalar), F32,
 *       random (matrices U(-a, a) with a = sqrt(3 / cols), embeddings
 *       U(-1, 1), gains and scales U(0.5, 1.5), so that a scale that is
 *       folded wrongly shows), random optim.m.* and optim.v.* tensors
 *       (an exporter must ignore them) and the strata.* metadata.
 *   export_helper logits MODEL.strata CKPT TOKENS LOGITS B T SEED [-D ...]
 *       reads every parameter from CKPT by its StrataParam name, runs
 *       strata_forward (fp32) on B x T random tokens and writes the tokens
 *       (int32) and the logits ((B, T, vocab) float32), raw little-endian.
 *   export_helper compare A B TOL
 *       two raw float32 files: max |a - b| / max |a| <= TOL (TOL 0: the
 *       same bytes); prints the numbers.
 *   export_helper shard SRC.safetensors DIR N [bf16|round]
 *       writes SRC's tensors as N shards DIR/model-0000K-of-0000N.safetensors
 *       with DIR/model.safetensors.index.json (tensors dealt out in name
 *       order), as Hugging Face's save_pretrained does for large models;
 *       bf16: each tensor in BF16 (round to nearest even); round: one
 *       DIR/model.safetensors in F32 holding those BF16 values exactly.
 * Exit status: 0 done, 1 a failure (message on stderr), 2 usage. */
#include "ir/ad.h"
#include "store/checkpoint.h"
#include "front/ast.h"
#include "ir/fuse.h"
#include "lower/jit.h"
#include "store/safetensors.h"
#include "resolve/sema.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_next(uint64_t *s) /* splitmix64 */
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double rng_unit(uint64_t *s) /* U[0, 1) */
{
    return (double)(rng_next(s) >> 11) * 0x1.0p-53;
}

typedef struct Model {
    IrGraph g;
    Program prog;
    const char *source;
    Jit *jit;
    JitModel m;
} Model;

static bool load(Model *mo, const char *path, const char **defines, int ndefines)
{
    memset(mo, 0, sizeof *mo);
    ir_init(&mo->g);
    Diag d;
    diag_init(&d, stderr);
    const char *why = NULL;
    SrcFile *src = src_read(path, &why);
    if (!src) {
        fprintf(stderr, "export_helper: cannot read %s: %s\n", path, why);
        return false;
    }
    mo->source = src->text;
    SemaOptions opt = {.defines = defines, .ndefines = ndefines};
    mo->g.model_name = path;
    bool ok = ast_load(&mo->prog, &d, src) && sema_resolve(&mo->prog, &opt, &d, &mo->g);
    diag_finish(&d);
    if (!ok)
        return false;
    ad_build(&mo->g);
    fuse_graph(&mo->g);
    char *err = NULL;
    LowerOptions o = {.precision = LOWER_F32, .opt_level = 2};
    mo->jit = jit_create(&err);
    if (!mo->jit || !jit_compile(mo->jit, &mo->g, &o, &mo->m, &err)) {
        fprintf(stderr, "export_helper: %s\n", err ? err : "cannot compile");
        free(err);
        return false;
    }
    return true;
}

static void unload(Model *mo)
{
    if (mo->jit) {
        jit_release(mo->jit, &mo->m);
        jit_free(mo->jit);
    }
    ir_free(&mo->g);
    ast_program_free(&mo->prog);
}

static int shape_of(const StrataParam *p, int64_t shape[2])
{
    shape[0] = p->dims[0];
    shape[1] = p->dims[1];
    return p->ndim;
}

static int write_ckpt(Model *mo, const char *out, uint64_t seed)
{
    const StrataModelDesc *d = mo->m.desc;
    float *vals[3];
    for (int k = 0; k < 3; k++)
        vals[k] = calloc((size_t)d->params_numel, sizeof(float));
    for (int i = 0; i < d->nparams; i++) {
        const StrataParam *p = &d->params[i];
        double a = p->role == STRATA_ROLE_MATRIX ? sqrt(3.0 / (double)p->dims[1]) : 1;
        for (int64_t k = 0; k < p->numel; k++) {
            double u = rng_unit(&seed);
            vals[0][p->offset + k] = (float)(p->role == STRATA_ROLE_VECTOR || p->role == STRATA_ROLE_SCALAR
                                                 ? 0.5 + u
                                                 : a * (2 * u - 1));
            vals[1][p->offset + k] = (float)(rng_unit(&seed) - 0.5);
            vals[2][p->offset + k] = (float)rng_unit(&seed);
        }
    }
    RtStWriter w;
    rt_st_writer_init(&w);
    char *err = NULL, name[300], *config = NULL;
    size_t clen = 0;
    FILE *cf = open_memstream(&config, &clen);
    for (int i = 0; i < mo->g.config.n; i++) {
        const IrConfig *c = mo->g.config.v[i];
        fprintf(cf, "%s\"%s\": %.17g", i ? ", " : "{", c->name, c->value);
    }
    fprintf(cf, "}");
    fclose(cf);
    int rc = rt_st_add_meta(&w, "format", "pt", &err) || rt_st_add_meta(&w, "strata.abi", RT_ABI_STRING, &err) ||
             rt_st_add_meta(&w, "strata.model", mo->source, &err) ||
             rt_st_add_meta(&w, "strata.model_path", mo->g.model_name, &err) ||
             rt_st_add_meta(&w, "strata.config", config, &err);
    static const char *const prefix[3] = {"", "optim.m.", "optim.v."};
    for (int i = 0; !rc && i < d->nparams; i++)
        for (int k = 0; !rc && k < 3; k++) {
            const StrataParam *p = &d->params[i];
            int64_t shape[2];
            int nd = shape_of(p, shape);
            snprintf(name, sizeof name, "%s%s", prefix[k], p->name);
            rc = rt_st_add(&w, name, RT_F32, shape, nd, vals[k] + p->offset, &err);
        }
    if (!rc)
        rc = rt_st_write(&w, out, &err);
    if (rc)
        fprintf(stderr, "export_helper: %s\n", err ? err : "cannot write the checkpoint");
    rt_st_writer_free(&w);
    free(err);
    free(config);
    for (int k = 0; k < 3; k++)
        free(vals[k]);
    return rc ? 1 : 0;
}

static bool write_raw(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    bool ok = f && fwrite(p, 1, n, f) == n;
    if (f && fclose(f))
        ok = false;
    if (!ok)
        fprintf(stderr, "export_helper: cannot write %s\n", path);
    return ok;
}

static int forward(Model *mo, const char *ckpt, const char *tok_path, const char *logits_path, int64_t B, int64_t T,
                   uint64_t seed)
{
    const StrataModelDesc *d = mo->m.desc;
    RtSafetensors st;
    char *err = NULL;
    if (rt_st_open(&st, ckpt, &err)) {
        fprintf(stderr, "export_helper: %s\n", err);
        free(err);
        return 1;
    }
    float *params = calloc((size_t)d->params_numel, sizeof *params);
    int rc = 0;
    for (int i = 0; !rc && i < d->nparams; i++) {
        int64_t shape[2];
        int nd = shape_of(&d->params[i], shape);
        rc = rt_st_read(&st, d->params[i].name, RT_F32, shape, nd, params + d->params[i].offset, &err);
    }
    rt_st_close(&st);
    if (rc) {
        fprintf(stderr, "export_helper: %s\n", err);
        free(err);
        free(params);
        return 1;
    }
    int64_t bytes = strata_arena_bytes(d, B, T, 1);
    void *arena = aligned_alloc(64, ((size_t)bytes + 63) / 64 * 64);
    int32_t *tokens = malloc((size_t)(B * T) * sizeof *tokens);
    float *logits = malloc((size_t)(B * T * d->vocab) * sizeof *logits);
    for (int64_t r = 0; r < B * T; r++)
        tokens[r] = (int32_t)(rng_next(&seed) % (uint64_t)d->vocab);
    StrataStep s = {.params = params, .arena = arena, .arena_bytes = bytes, .tokens = tokens, .B = B, .T = T,
                    .logits = logits};
    int status = mo->m.forward(&s);
    if (status)
        fprintf(stderr, "export_helper: strata_forward returned %d\n", status);
    else if (!write_raw(tok_path, tokens, (size_t)(B * T) * sizeof *tokens) ||
             !write_raw(logits_path, logits, (size_t)(B * T * d->vocab) * sizeof *logits))
        status = 1;
    free(arena), free(tokens), free(logits), free(params);
    return status ? 1 : 0;
}

/* The float nearest to x among those with a BF16 mantissa (ties to even). */
static float bf16_round(float x, uint16_t *bits)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    u += 0x7FFF + ((u >> 16) & 1);
    *bits = (uint16_t)(u >> 16);
    u &= 0xFFFF0000u;
    memcpy(&x, &u, 4);
    return x;
}

static int shard(const char *src, const char *dir, int n, const char *mode)
{
    RtSafetensors st;
    char *err = NULL;
    if (rt_st_open(&st, src, &err)) {
        fprintf(stderr, "export_helper: %s\n", err);
        free(err);
        return 1;
    }
    bool bf16 = mode && !strcmp(mode, "bf16"), round = mode && !strcmp(mode, "round");
    if (round)
        n = 1;
    /* names in order, dealt out to the shards */
    const char **names = calloc((size_t)st.n, sizeof *names);
    for (int i = 0; i < st.n; i++)
        names[i] = st.t[i].name;
    for (int i = 1; i < st.n; i++)
        for (int j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            const char *t = names[j];
            names[j] = names[j - 1], names[j - 1] = t;
        }
    void **bufs = calloc((size_t)st.n, sizeof *bufs);
    char path[4096];
    FILE *idx = NULL;
    if (!round) {
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
        idx = fopen(path, "w");
        fprintf(idx, "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {");
    }
    int rc = 0;
    for (int k = 0; !rc && k < n; k++) {
        RtStWriter w;
        rt_st_writer_init(&w);
        char file[64];
        if (round)
            snprintf(file, sizeof file, "model.safetensors");
        else
            snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", k + 1, n);
        rc = rt_st_add_meta(&w, "format", "pt", &err);
        for (int i = k; !rc && i < st.n; i += n) {
            const RtStTensor *t = rt_st_find(&st, names[i]);
            float *x = malloc((size_t)(t->numel ? t->numel : 1) * 4);
            memcpy(x, t->data, (size_t)t->numel * 4);
            uint16_t *h = malloc((size_t)(t->numel ? t->numel : 1) * 2);
            for (int64_t e = 0; e < t->numel; e++)
                x[e] = bf16_round(x[e], &h[e]);
            if (bf16)
                free(x), bufs[i] = h;
            else
                free(h), bufs[i] = x;
            rc = rt_st_add(&w, names[i], bf16 ? RT_BF16 : RT_F32, t->shape, t->ndim, bufs[i], &err);
            if (idx)
                fprintf(idx, "%s\"%s\": \"%s\"", i ? ", " : "", names[i], file);
            if (!bf16 && !round) /* plain shards keep the values as they are */
                memcpy(bufs[i], t->data, (size_t)t->numel * 4);
        }
        snprintf(path, sizeof path, "%s/%s", dir, file);
        rc = rc || rt_st_write(&w, path, &err);
        rt_st_writer_free(&w);
    }
    if (idx) {
        fprintf(idx, "}}\n");
        fclose(idx);
    }
    if (rc)
        fprintf(stderr, "export_helper: %s\n", err ? err : "cannot write the shards");
    for (int i = 0; i < st.n; i++)
        free(bufs[i]);
    free(bufs), free(names), free(err);
    rt_st_close(&st);
    return rc ? 1 : 0;
}

static float *read_raw(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    float *p = malloc((size_t)len + 4);
    *n = fread(p, 1, (size_t)len, f) / 4;
    fclose(f);
    return p;
}

static int compare(const char *a, const char *b, double tol)
{
    size_t na = 0, nb = 0;
    float *x = read_raw(a, &na), *y = read_raw(b, &nb);
    if (!x || !y || na != nb || !na) {
        fprintf(stderr, "export_helper: %s and %s are not two raw float32 files of one size\n", a, b);
        free(x), free(y);
        return 1;
    }
    double diff = 0, scale = 0;
    for (size_t i = 0; i < na; i++) {
        diff = fmax(diff, fabs((double)x[i] - y[i]));
        scale = fmax(scale, fabs((double)x[i]));
    }
    bool same = !memcmp(x, y, na * 4);
    bool ok = tol == 0 ? same : diff <= tol * scale;
    printf("%zu logits: max |a - b| %.3e, max |a| %.4g, relative %.3e%s; tolerance %s\n", na, diff, scale,
           diff / scale, same ? " (the same bytes)" : "", tol == 0 ? "bitwise" : "relative");
    free(x), free(y);
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc == 5 && !strcmp(argv[1], "compare"))
        return compare(argv[2], argv[3], atof(argv[4]));
    if ((argc == 5 || argc == 6) && !strcmp(argv[1], "shard"))
        return shard(argv[2], argv[3], atoi(argv[4]), argc == 6 ? argv[5] : NULL);
    bool ck = argc >= 5 && !strcmp(argv[1], "ckpt"), lg = argc >= 9 && !strcmp(argv[1], "logits");
    int first = ck ? 5 : 9;
    const char **defines = calloc((size_t)argc + 1, sizeof *defines);
    int nd = 0;
    for (int i = first; (ck || lg) && i < argc; i++) {
        if (!strcmp(argv[i], "-D") && i + 1 < argc)
            defines[nd++] = argv[++i];
        else
            ck = lg = false;
    }
    if (!ck && !lg) {
        fprintf(stderr, "usage: export_helper ckpt MODEL OUT.safetensors SEED [-D NAME=VALUE]...\n"
                        "       export_helper logits MODEL CKPT TOKENS LOGITS B T SEED [-D NAME=VALUE]...\n"
                        "       export_helper compare A B TOL\n"
                        "       export_helper shard SRC.safetensors DIR N [bf16|round]\n");
        free(defines);
        return 2;
    }
    Model mo;
    int rc = 1;
    if (load(&mo, argv[2], defines, nd)) {
        if (ck)
            rc = write_ckpt(&mo, argv[3], strtoull(argv[4], NULL, 10));
        else
            rc = forward(&mo, argv[3], argv[4], argv[5], atoll(argv[6]), atoll(argv[7]), strtoull(argv[8], NULL, 10));
    }
    unload(&mo);
    free(defines);
    return rc;
}
