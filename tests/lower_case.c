/* lower_case.c - the shared harness of lower_test.c and abi_test.c
 * (lower_case.h): tiny models, random points, the interpreter's reference
 * and one call of a compiled entry point through model ABI v4. */
#include "lower_case.h"

#include "train/optim.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const tiny_sizes[] = {"vocab=11", "d=16", "heads=2", "ffn=24", "L=4", "ctx=5"};

static uint64_t rng_next(uint64_t *s) /* splitmix64, as gradcheck.c */
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double rng_normal(uint64_t *s)
{
    double u = (double)(rng_next(s) >> 11) * 0x1.0p-53, v = (double)(rng_next(s) >> 11) * 0x1.0p-53;
    return sqrt(-2 * log(u + 1e-300)) * cos(2 * acos(-1.0) * v);
}

/* Every op the model files leave out: sigmoid, tanh, gelu, abs, exp, log,
 * sqrt, rsqrt, division, x^1.5, x^3, max (and so sign, eq_mask and
 * gelu_grad in the backward), layernorm, a scalar parameter used twice (its
 * gradient is a sum, copied out of the arena), and matmul with W [in, out]
 * (not transposed).  Powers act on tanh(x): x^3 of the residual stream
 * would overflow float within the 4 blocks. */
const char ops_zoo[] =
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

const char kinds_zoo[] =
    "import \"std\"\n"
    "config {\n vocab = 11\n d = 16\n heads = 2\n ffn = 24\n L = 7\n}\n"
    "model {\n"
    "    x = embed(tokens, vocab, d) as tok_embeddings\n"
    "    x0 = x\n"
    "    param mix = constant(0.1)\n"
    "    for l in 1..L {\n"
    "        s = 1 / sqrt(l)\n"
    "        if l <= 3 {\n"
    "            x = x + attention(rmsnorm(x) as attn_norm * s, heads) as attn\n"
    "        } else {\n"
    "            waste = silu(x) * s\n"
    "            x = x + gelu_mlp(rmsnorm(x) as mlp_norm, ffn) as mlp * s\n"
    "        }\n"
    "        x = x + mix * x0 * (1 + l)\n"
    "    }\n"
    "    logits = linear(rmsnorm(x) as norm, vocab) as output\n"
    "}\n";

IrRemat case_remat; /* IR_REMAT_POINTWISE (0): the pipeline's default */
int64_t case_head_div, case_head_cap;

bool case_load(Case *c, const char *path, const char *text, const char *const *sizes, int nsizes)
{
    memset(c, 0, sizeof *c);
    ir_init(&c->g);
    Diag d;
    diag_init(&d, stderr);
    const char *why = NULL;
    SrcFile *src = text ? src_from_memory(path, text, strlen(text)) : src_read(path, &why);
    if (!src) {
        fprintf(stderr, "cannot read %s: %s\n", path, why);
        return false;
    }
    if (!sizes)
        sizes = tiny_sizes, nsizes = (int)(sizeof tiny_sizes / sizeof *tiny_sizes);
    SemaOptions opt = {.soft = (const char **)sizes, .nsoft = nsizes};
    c->g.model_name = path;
    bool ok = ast_load(&c->prog, &d, src) && sema_resolve(&c->prog, &opt, &d, &c->g);
    diag_finish(&d);
    if (!ok)
        return false;
    ad_build(&c->g);
    if (!ir_verify(&c->g, stderr))
        return false;
    if (case_remat == IR_REMAT_BLOCKS) {
        if (remat_blocks(&c->g) == 0 && c->g.blocks.n > 0) {
            fprintf(stderr, "%s: remat_blocks recomputed nothing\n", path);
            return false;
        }
        if (!ir_verify(&c->g, stderr))
            return false;
    } else if (case_remat == IR_REMAT_POINTWISE && remat_pointwise(&c->g) && !ir_verify(&c->g, stderr)) {
        return false;
    }
    fuse_graph(&c->g);
    return true;
}

/* gradcheck.c's random point: init base value + N(0, 0.3^2), rounded to
 * float so that f32 and f64 runs start from the same numbers. */
void case_params(Case *c, uint64_t seed)
{
    int np = c->g.params.n;
    c->params = calloc((size_t)np + 1, sizeof *c->params);
    for (int i = 0; i < np; i++) {
        const IrParam *p = c->g.params.v[i];
        double base = p->init.kind == INIT_ONES ? 1 : p->init.kind == INIT_CONSTANT ? p->init.a : 0;
        c->params[i] = malloc((size_t)p->numel * sizeof(double));
        for (int64_t k = 0; k < p->numel; k++)
            c->params[i][k] = (float)(base + 0.3 * rng_normal(&seed));
    }
}

bool case_batch(Case *c, uint64_t seed, int B, int T)
{
    const IrGraph *g = &c->g;
    int BT = B * T;
    int64_t nlogits = g->logits ? g->logits->width : 1, vocab = INT32_MAX;
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
        c->tokens[r] = (int32_t)(rng_next(&seed) % (uint64_t)vocab);
        c->targets[r] = (int32_t)(rng_next(&seed) % (uint64_t)nlogits);
        c->mask[r] = r % 3 == 1 ? 0 : 1;
    }
    InterpInput in = {B, T, c->tokens, c->targets, c->mask, c->params};
    return interp_run(&c->ref, g, &in);
}

void case_free_batch(Case *c)
{
    interp_free(&c->ref);
    free(c->tokens);
    free(c->targets);
    free(c->mask);
    c->tokens = c->targets = NULL;
    c->mask = NULL;
}

void case_free(Case *c)
{
    if (c->params)
        for (int i = 0; i < c->g.params.n; i++)
            free(c->params[i]);
    free(c->params);
    ir_free(&c->g);
    ast_program_free(&c->prog);
}

bool case_compile(Jit *jit, const Case *c, LowerPrecision prec, JitModel *m)
{
    LowerOptions o = {.precision = prec, .opt_level = 2, .head_div = case_head_div, .head_cap = case_head_cap};
    return case_compile_with(jit, c, &o, m);
}

bool case_compile_with(Jit *jit, const Case *c, const LowerOptions *o, JitModel *m)
{
    char *err = NULL;
    if (jit_compile(jit, &c->g, o, m, &err))
        return true;
    fprintf(stderr, "%s: JIT: %s\n", c->g.model_name, err);
    free(err);
    return false;
}

/* ---- one call ---- */

/* Buffers as REAL (float or double) in and out of double. */
static void *to_real(const double *x, int64_t n, bool f32)
{
    void *p = malloc((size_t)(n + 1) * (f32 ? 4 : 8));
    for (int64_t i = 0; i < n; i++)
        if (f32)
            ((float *)p)[i] = (float)x[i];
        else
            ((double *)p)[i] = x[i];
    return p;
}

static double *from_real(const void *p, int64_t n, bool f32)
{
    double *x = malloc((size_t)(n + 1) * sizeof *x);
    for (int64_t i = 0; i < n; i++)
        x[i] = f32 ? ((const float *)p)[i] : ((const double *)p)[i];
    return x;
}

static void *poisoned(int64_t n, bool f32)
{
    void *p = malloc((size_t)(n + 1) * (f32 ? 4 : 8));
    for (int64_t i = 0; i < n; i++)
        if (f32)
            ((float *)p)[i] = NAN;
        else
            ((double *)p)[i] = NAN;
    return p;
}

/* The parameter (or gradient) buffer from per-parameter arrays; padding NaN. */
static void *pack(const JitModel *m, double *const *t, bool f32)
{
    const StrataModelDesc *d = m->desc;
    void *buf = poisoned(d->params_numel, f32);
    for (int p = 0; p < d->nparams; p++) {
        void *part = to_real(t[p], d->params[p].numel, f32);
        memcpy((char *)buf + d->params[p].offset * d->real_bytes, part, (size_t)(d->params[p].numel * d->real_bytes));
        free(part);
    }
    return buf;
}

int case_run(const Case *c, const JitModel *m, const RunOpts *o, Result *r)
{
    const StrataModelDesc *d = m->desc;
    bool f32 = d->real_bytes == 4;
    int64_t BT = (int64_t)c->B * c->T, V = d->vocab, ncap = (d->nblocks + 1) * BT * d->width;
    memset(r, 0, sizeof *r);
    r->arena_bytes = strata_arena_bytes(d, c->B, c->T, rt_pool_size(o->pool));
    void *arena = poisoned(r->arena_bytes / d->real_bytes, f32), *mask = to_real(c->mask, BT, f32);
    void *params = pack(m, c->params, f32);
    void *grads = o->grads_from ? pack(m, o->grads_from->grads, f32) : poisoned(d->params_numel, f32);
    bool redirect = o->forward ? o->logits_out : !o->arena_logits;
    void *logits = redirect ? poisoned(BT * V, f32) : NULL, *cap = o->capture ? poisoned(ncap, f32) : NULL;
    int64_t nblocks = rt_grad_norm_blocks(d->params_numel);
    double *sums = o->norm ? poisoned(nblocks, false) : NULL;
    if (sums) { /* the padding between parameters is 0, as in a trainer's buffer, not NaN */
        char *in = calloc((size_t)d->params_numel + 1, 1);
        for (int p = 0; p < d->nparams; p++)
            memset(in + d->params[p].offset, 1, (size_t)d->params[p].numel);
        for (int64_t i = 0; i < d->params_numel; i++)
            if (!in[i])
                ((float *)grads)[i] = 0;
        free(in);
    }
    StrataStep s = {.params = params, .grads = grads, .arena = arena, .arena_bytes = r->arena_bytes,
                    .tokens = c->tokens, .targets = c->targets, .mask = o->no_mask ? NULL : mask,
                    .B = c->B, .T = c->T, .loss = &r->loss, .logits = logits, .capture = cap, .skip = o->skip,
                    .pool = o->pool, .accumulate = o->accumulate,
                    .precision = o->precision, .grad_sumsq = sums};
    r->loss = NAN;
    r->status = (o->forward ? m->forward : m->train_step)(&s);
    if (sums) {
        RtSegment *spans = calloc((size_t)d->nparams + 1, sizeof *spans);
        for (int p = 0; p < d->nparams; p++) {
            spans[p] = (RtSegment){d->params[p].offset, d->params[p].numel, 0};
            int64_t end = d->params[p].offset + d->params[p].numel;
            int64_t b1 = end / RT_NORM_BLOCK, b0 = (d->params[p].offset + RT_NORM_BLOCK - 1) / RT_NORM_BLOCK;
            r->sums_inside += b1 > b0 ? b1 - b0 : 0;
        }
        for (int64_t b = 0; b < nblocks; b++)
            r->sums_written += !isnan(sums[b]);
        r->norm_fused = rt_grad_norm_finish(grads, d->params_numel, spans, (int)d->nparams, sums);
        r->norm_pass = rt_grad_norm_pool(grads, d->params_numel, NULL);
        free(spans);
        free(sums);
    }
    r->logits = from_real(logits ? logits : strata_logits_in_arena(d, arena, c->B, c->T), BT * V, f32);
    r->grads = calloc((size_t)d->nparams + 1, sizeof *r->grads);
    for (int p = 0; p < d->nparams; p++)
        r->grads[p] = from_real((char *)grads + d->params[p].offset * d->real_bytes, d->params[p].numel, f32);
    r->capture = cap ? from_real(cap, ncap, f32) : NULL;
    free(arena), free(mask), free(params), free(grads), free(logits), free(cap);
    return r->status;
}

int case_decode(const Case *c, const JitModel *m, RtPool *pool, int prompt, int step, int64_t kv_len,
                double **logits_out)
{
    const StrataModelDesc *d = m->desc;
    bool f32 = d->real_bytes == 4;
    int B = c->B, T = c->T;
    int64_t V = d->vocab;
    int64_t abytes = strata_arena_bytes(d, B, T, rt_pool_size(pool));
    void *arena = poisoned(abytes / d->real_bytes, f32), *params = pack(m, c->params, f32);
    void *kv = poisoned(strata_kv_bytes(d, B, kv_len) / d->real_bytes, f32); /* unwritten positions are NaN */
    void *logits = poisoned((int64_t)B * T * V, f32);
    int32_t *ids = malloc((size_t)B * (size_t)T * sizeof *ids);
    double *out = malloc(((size_t)B * (size_t)T * (size_t)V + 1) * sizeof *out);
    int status = STRATA_OK;
    for (int pos = 0, n; pos < T && status == STRATA_OK; pos += n) {
        n = pos == 0 ? prompt : step;
        n = n < T - pos ? n : T - pos;
        for (int b = 0; b < B; b++)
            memcpy(ids + (size_t)b * (size_t)n, c->tokens + (size_t)b * (size_t)T + (size_t)pos,
                   (size_t)n * sizeof *ids);
        StrataStep s = {.params = params, .arena = arena, .arena_bytes = abytes, .tokens = ids, .B = B, .T = n,
                        .logits = logits, .pool = pool, .kv = kv, .kv_pos = pos, .kv_len = kv_len};
        status = m->decode(&s);
        double *got = from_real(logits, (int64_t)B * n * V, f32);
        for (int b = 0; b < B; b++)
            memcpy(out + ((size_t)b * (size_t)T + (size_t)pos) * (size_t)V, got + (size_t)b * (size_t)n * (size_t)V,
                   (size_t)n * (size_t)V * sizeof *out);
        free(got);
    }
    free(arena), free(params), free(kv), free(logits), free(ids);
    *logits_out = out;
    return status;
}

void result_free(const Case *c, Result *r)
{
    for (int p = 0; r->grads && p < c->g.params.n; p++)
        free(r->grads[p]);
    free(r->grads);
    free(r->logits);
    free(r->capture);
    memset(r, 0, sizeof *r);
}

double tensor_error(const double *got, const double *ref, int64_t n)
{
    double scale = 0, diff = 0;
    for (int64_t k = 0; k < n; k++) {
        scale = fmax(scale, fabs(ref[k]));
        double e = fabs(got[k] - ref[k]);
        diff = isnan(e) ? INFINITY : fmax(diff, e);
    }
    return scale > 0 ? diff / scale : diff;
}
