/* exec.c - runs a StrataGpuProgram (plan.h) through the CUDA driver layer
 * (cuda.h): exec.h's API.  At open the plan is evaluated for B x T once:
 * every launch's grid and argument values are fixed (device pointers are
 * the buffers' bases plus the plan's affine offsets), so a step only
 * uploads the batch, walks the launches of the phases it needs and
 * downloads the loss.  The rotary tables are filled on the host with the
 * CPU's rt_rope_table_f32 and uploaded once.  The optimizer runs the
 * program's strata_sumsq, strata_sumsq_final and strata_adamw kernels.
 * Memory: the RtGpuModel owns its device buffers and argument arrays. */
#include "gpu/exec.h"

#include "core/kernels.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One argument's value, as cuLaunchKernel reads it through a pointer. */
typedef union ArgVal {
    uint64_t p;
    int64_t i;
    int32_t i32;
    float f;
} ArgVal;

typedef struct Launch {
    RtCudaKernel *k;
    unsigned grid[3], block[3], shared;
    int phase, acc;
    ArgVal *vals;              /* (3 + nargs): B, T, acc, the plan's arguments */
    void **argv;               /* pointers into vals */
} Launch;

struct RtGpuModel {
    RtCuda *cu;
    const StrataGpuProgram *prog;
    int64_t B, T;
    uint64_t buf[STRATA_GPU_NBUFS];
    size_t bytes[STRATA_GPU_NBUFS];
    uint64_t m, v, partial;    /* AdamW moments; the norm's partial sums (+1 for the total), doubles */
    Launch *launches;
    RtCudaKernel *sumsq, *sumsq_final, *adamw;
    float *ones;               /* (B*T) the mask when the caller gives none */
    int32_t *index;            /* (B*T + index_rows + 1) the token index (plan.h), host side */
    char err[1024];
};

static int fail(RtGpuModel *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(RtGpuModel *g, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->err, sizeof g->err, fmt, ap);
    va_end(ap);
    return -1;
}

const char *rt_gpu_error(const RtGpuModel *g)
{
    return g ? g->err : "no GPU model";
}

static int64_t ceil_div(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

static int alloc_buf(RtGpuModel *g, uint64_t *d, size_t bytes, const char *what)
{
    char e[512];
    if (rt_cuda_alloc(g->cu, d, bytes ? bytes : 4, e, sizeof e) || rt_cuda_memset0(g->cu, *d, bytes ? bytes : 4, e, sizeof e))
        return fail(g, "cannot allocate %zu bytes of device memory for the %s: %s", bytes, what, e);
    return 0;
}

static int upload(RtGpuModel *g, uint64_t dst, const void *src, size_t bytes, const char *what)
{
    char e[512];
    if (bytes && rt_cuda_upload(g->cu, dst, src, bytes, e, sizeof e))
        return fail(g, "cannot upload the %s: %s", what, e);
    return 0;
}

static int download(RtGpuModel *g, void *dst, uint64_t src, size_t bytes, const char *what)
{
    char e[512];
    if (bytes && rt_cuda_download(g->cu, dst, src, bytes, e, sizeof e))
        return fail(g, "cannot download the %s: %s", what, e);
    return 0;
}

/* Every launch's values for this B x T, checked against the buffers. */
static int plan_launches(RtGpuModel *g)
{
    const StrataGpuProgram *p = g->prog;
    char e[512];
    g->launches = calloc((size_t)p->nlaunches + 1, sizeof *g->launches);
    if (!g->launches)
        return fail(g, "out of memory");
    for (int i = 0; i < p->nlaunches; i++) {
        const StrataGpuLaunch *pl = &p->launches[i];
        Launch *l = &g->launches[i];
        if (pl->kernel < 0 || pl->kernel >= p->nkernels || pl->arg0 < 0 || pl->nargs < 0 ||
            pl->arg0 + pl->nargs > p->nargs)
            return fail(g, "launch %d of the GPU plan is malformed", i);
        if (rt_cuda_kernel(g->cu, p->kernels[pl->kernel].name, &l->k, e, sizeof e))
            return fail(g, "kernel %s: %s", p->kernels[pl->kernel].name, e);
        for (int d = 0; d < 3; d++) {
            int64_t n = ceil_div(strata_gpu_eval(pl->grid[d], g->B, g->T), pl->grid_div[d] > 0 ? pl->grid_div[d] : 1);
            if (n < 1 || n > (d ? 65535 : 0x7fffffff))
                return fail(g, "launch %d (%s): a grid of %lld blocks in dimension %d for B=%lld, T=%lld", i,
                            p->kernels[pl->kernel].name, (long long)n, d, (long long)g->B, (long long)g->T);
            l->grid[d] = (unsigned)n;
            l->block[d] = pl->block[d] ? pl->block[d] : 1;
        }
        l->shared = pl->shared_bytes;
        l->phase = pl->phase;
        l->acc = pl->acc;
        l->vals = calloc((size_t)pl->nargs + 3, sizeof *l->vals);
        l->argv = calloc((size_t)pl->nargs + 3, sizeof *l->argv);
        if (!l->vals || !l->argv)
            return fail(g, "out of memory");
        l->vals[0].i = g->B;
        l->vals[1].i = g->T;
        for (int a = 0; a < pl->nargs; a++) {
            const StrataGpuArg *pa = &p->args[pl->arg0 + a];
            ArgVal *v = &l->vals[3 + a];
            if (pa->kind == STRATA_GPU_ARG_PTR) {
                int64_t off = strata_gpu_eval(pa->off, g->B, g->T), size = strata_gpu_eval(pa->size, g->B, g->T);
                if (pa->buf < 0 || pa->buf >= STRATA_GPU_NBUFS || off < 0 || size < 0 ||
                    (size_t)(off + size) > g->bytes[pa->buf])
                    return fail(g, "launch %d (%s) argument %d: [%lld, %lld) outside its buffer of %zu bytes", i,
                                p->kernels[pl->kernel].name, a, (long long)off, (long long)(off + size),
                                pa->buf >= 0 && pa->buf < STRATA_GPU_NBUFS ? g->bytes[pa->buf] : 0);
                v->p = g->buf[pa->buf] + (uint64_t)off;
            } else if (pa->kind == STRATA_GPU_ARG_I64) {
                v->i = strata_gpu_eval(pa->off, g->B, g->T);
            } else {
                v->f = (float)pa->f;
            }
        }
        for (int a = 0; a < pl->nargs + 3; a++)
            l->argv[a] = &l->vals[a];
    }
    return 0;
}

/* The rotary tables, filled on the host as the CPU fills them. */
static int fill_tables(RtGpuModel *g)
{
    const StrataGpuProgram *p = g->prog;
    for (int i = 0; i < p->ntables; i++) {
        const StrataGpuTable *t = &p->tables[i];
        int64_t n = g->T * t->hd, off = strata_gpu_eval(t->off, g->B, g->T);
        if (off < 0 || (size_t)(off + 4 * n) > g->bytes[STRATA_GPU_ARENA])
            return fail(g, "rotary table %d lies outside the arena", i);
        float *h = malloc((size_t)n * sizeof *h);
        if (!h)
            return fail(g, "out of memory");
        rt_rope_table_f32(h, 0, g->T, t->hd, t->base);
        int rc = upload(g, g->buf[STRATA_GPU_ARENA] + (uint64_t)off, h, (size_t)n * 4, "rotary table");
        free(h);
        if (rc)
            return rc;
    }
    return 0;
}

int rt_gpu_model_open(RtGpuModel **out, RtCuda *cu, const StrataGpuProgram *prog, int64_t B, int64_t T, char *err,
                      size_t errlen)
{
    *out = NULL;
    if (!prog || prog->magic != STRATA_GPU_MAGIC || prog->version != STRATA_GPU_VERSION) {
        snprintf(err, errlen, "not a GPU program of version %d", STRATA_GPU_VERSION);
        return -1;
    }
    if (B < 1 || T < 1 || B * T > ((int64_t)1 << 31) - 1) {
        snprintf(err, errlen, "batch %lld x %lld is out of range", (long long)B, (long long)T);
        return -1;
    }
    RtGpuModel *g = calloc(1, sizeof *g);
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    g->cu = cu;
    g->prog = prog;
    g->B = B;
    g->T = T;
    char e[4096];
    int rc = 0;
    if (rt_cuda_load_ptx(cu, prog->ptx, e, sizeof e))
        rc = fail(g, "cannot load the PTX (%s): %s", prog->target, e);
    size_t pbytes = (size_t)prog->params_numel * 4, bt = (size_t)(B * T);
    size_t nindex = prog->index_rows > 0 ? bt + (size_t)prog->index_rows + 1 : 0;
    size_t sizes[STRATA_GPU_NBUFS] = {pbytes, pbytes, (size_t)strata_gpu_eval(prog->arena_bytes, B, T),
                                      bt * 4, bt * 4, bt * 4, (size_t)prog->nconsts * 4, nindex * 4,
                                      (size_t)strata_gpu_eval(prog->scratch_bytes, B, T)};
    static const char *names[STRATA_GPU_NBUFS] = {"parameters", "gradients", "arena", "tokens", "targets", "mask",
                                                  "constants", "token index", "scratch"};
    for (int b = 0; b < STRATA_GPU_NBUFS && !rc; b++) {
        g->bytes[b] = sizes[b];
        rc = alloc_buf(g, &g->buf[b], sizes[b], names[b]);
    }
    rc = rc ? rc : alloc_buf(g, &g->m, pbytes, "first moments");
    rc = rc ? rc : alloc_buf(g, &g->v, pbytes, "second moments");
    rc = rc ? rc : alloc_buf(g, &g->partial, 8 * (STRATA_GPU_NORM_BLOCKS + 1), "norm partial sums");
    rc = rc ? rc : upload(g, g->buf[STRATA_GPU_CONSTS], prog->consts, (size_t)prog->nconsts * 4, "constants");
    if (!rc && (!(g->ones = malloc(bt * sizeof *g->ones)) || (nindex && !(g->index = malloc(nindex * 4)))))
        rc = fail(g, "out of memory");
    for (size_t i = 0; !rc && i < bt; i++)
        g->ones[i] = 1;
    rc = rc ? rc : fill_tables(g);
    rc = rc ? rc : plan_launches(g);
    static const char *opt[] = {"strata_sumsq", "strata_sumsq_final", "strata_adamw"};
    RtCudaKernel **ok[] = {&g->sumsq, &g->sumsq_final, &g->adamw};
    for (int i = 0; i < 3 && !rc; i++)
        if (rt_cuda_kernel(cu, opt[i], ok[i], e, sizeof e))
            rc = fail(g, "kernel %s: %s", opt[i], e);
    if (rc) {
        snprintf(err, errlen, "%s", g->err);
        rt_gpu_model_close(g);
        return -1;
    }
    *out = g;
    return 0;
}

void rt_gpu_model_close(RtGpuModel *g)
{
    if (!g)
        return;
    for (int b = 0; b < STRATA_GPU_NBUFS; b++)
        if (g->buf[b])
            rt_cuda_free(g->cu, g->buf[b]);
    if (g->m)
        rt_cuda_free(g->cu, g->m);
    if (g->v)
        rt_cuda_free(g->cu, g->v);
    if (g->partial)
        rt_cuda_free(g->cu, g->partial);
    if (g->launches)
        for (int i = 0; i < g->prog->nlaunches; i++) {
            free(g->launches[i].vals);
            free(g->launches[i].argv);
        }
    free(g->launches);
    free(g->ones);
    free(g->index);
    free(g);
}

int rt_gpu_set_params(RtGpuModel *g, const float *host)
{
    return upload(g, g->buf[STRATA_GPU_PARAMS], host, g->bytes[STRATA_GPU_PARAMS], "parameters");
}

int rt_gpu_get_params(RtGpuModel *g, float *host)
{
    return download(g, host, g->buf[STRATA_GPU_PARAMS], g->bytes[STRATA_GPU_PARAMS], "parameters");
}

int rt_gpu_set_moments(RtGpuModel *g, const float *m, const float *v)
{
    size_t n = g->bytes[STRATA_GPU_PARAMS];
    return upload(g, g->m, m, n, "first moments") || upload(g, g->v, v, n, "second moments") ? -1 : 0;
}

int rt_gpu_get_moments(RtGpuModel *g, float *m, float *v)
{
    size_t n = g->bytes[STRATA_GPU_PARAMS];
    return download(g, m, g->m, n, "first moments") || download(g, v, g->v, n, "second moments") ? -1 : 0;
}

int rt_gpu_get_grads(RtGpuModel *g, float *host)
{
    return download(g, host, g->buf[STRATA_GPU_GRADS], g->bytes[STRATA_GPU_GRADS], "gradients");
}

static int launch(RtGpuModel *g, RtCudaKernel *k, const unsigned grid[3], const unsigned block[3], unsigned shared,
                  void **argv, const char *what)
{
    char e[512];
    if (rt_cuda_launch(g->cu, k, grid, block, shared, argv, e, sizeof e))
        return fail(g, "launch of %s: %s", what, e);
    return 0;
}

/* The launches of the phases in `mask` (bit per StrataGpuPhase), in order. */
static int run_phases(RtGpuModel *g, unsigned mask, int accumulate)
{
    const StrataGpuProgram *p = g->prog;
    for (int i = 0; i < p->nlaunches; i++) {
        Launch *l = &g->launches[i];
        if (!(mask >> l->phase & 1))
            continue;
        l->vals[2].i32 = l->acc ? accumulate : 0;
        if (launch(g, l->k, l->grid, l->block, l->shared, l->argv, p->kernels[p->launches[i].kernel].name))
            return -1;
    }
    return 0;
}

static int sync(RtGpuModel *g)
{
    char e[512];
    if (rt_cuda_sync(g->cu, e, sizeof e))
        return fail(g, "the device failed: %s", e);
    return 0;
}

/* Token ids (and targets where the mask is not 0) within the vocabulary,
 * as the CPU's entry points check them: a bad id would read out of bounds. */
static int check_ids(RtGpuModel *g, const int32_t *ids, const float *mask, const char *what)
{
    int64_t n = g->B * g->T, V = g->prog->vocab;
    for (int64_t i = 0; i < n; i++)
        if ((!mask || mask[i] != 0) && (ids[i] < 0 || ids[i] >= V))
            return fail(g, "%s[%lld] = %d is outside the vocabulary [0, %lld)", what, (long long)i, ids[i],
                        (long long)V);
    return 0;
}

/* The token index of plan.h: positions sorted by id (a stable counting
 * sort), then the start of each id's run. */
static int upload_index(RtGpuModel *g, const int32_t *tokens)
{
    int64_t bt = g->B * g->T, V = g->prog->index_rows;
    if (V <= 0)
        return 0;
    int32_t *order = g->index, *start = g->index + bt;
    for (int64_t v = 0; v <= V; v++)
        start[v] = 0;
    for (int64_t i = 0; i < bt; i++) {
        if (tokens[i] < 0 || tokens[i] >= V)
            return fail(g, "tokens[%lld] = %d is outside the embedding's %lld rows", (long long)i, tokens[i],
                        (long long)V);
        start[tokens[i] + 1]++;
    }
    for (int64_t v = 0; v < V; v++)
        start[v + 1] += start[v];
    for (int64_t i = 0; i < bt; i++) /* start[v] walks through v's run, then is put back */
        order[start[tokens[i]]++] = (int32_t)i;
    for (int64_t v = V; v > 0; v--)
        start[v] = start[v - 1];
    start[0] = 0;
    return upload(g, g->buf[STRATA_GPU_TOKEN_INDEX], g->index, (size_t)(bt + V + 1) * 4, "token index");
}

int rt_gpu_train_step(RtGpuModel *g, const int32_t *tokens, const int32_t *targets, const float *mask,
                      int accumulate, double *loss)
{
    size_t bt4 = (size_t)(g->B * g->T) * 4;
    const float *mk = mask ? mask : g->ones;
    if (check_ids(g, tokens, NULL, "tokens") || check_ids(g, targets, mk, "targets"))
        return -1;
    if (upload(g, g->buf[STRATA_GPU_TOKENS], tokens, bt4, "tokens") ||
        upload(g, g->buf[STRATA_GPU_TARGETS], targets, bt4, "targets") ||
        upload(g, g->buf[STRATA_GPU_MASK], mk, bt4, "mask") || upload_index(g, tokens))
        return -1;
    unsigned phases = 1u << STRATA_GPU_FORWARD | 1u << STRATA_GPU_LOSS | 1u << STRATA_GPU_BACKWARD;
    if (!accumulate)
        phases |= 1u << STRATA_GPU_ZERO_GRADS;
    if (run_phases(g, phases, accumulate != 0))
        return -1;
    float l;
    int64_t off = strata_gpu_eval(g->prog->loss_off, g->B, g->T);
    if (download(g, &l, g->buf[STRATA_GPU_ARENA] + (uint64_t)off, 4, "loss") || sync(g))
        return -1;
    if (loss)
        *loss = l;
    return 0;
}

int rt_gpu_forward(RtGpuModel *g, const int32_t *tokens, float *logits)
{
    size_t bt = (size_t)(g->B * g->T);
    if (check_ids(g, tokens, NULL, "tokens") || upload(g, g->buf[STRATA_GPU_TOKENS], tokens, bt * 4, "tokens") ||
        run_phases(g, 1u << STRATA_GPU_FORWARD, 0))
        return -1;
    int64_t off = strata_gpu_eval(g->prog->logits_off, g->B, g->T);
    if (download(g, logits, g->buf[STRATA_GPU_ARENA] + (uint64_t)off, bt * (size_t)g->prog->vocab * 4, "logits"))
        return -1;
    return sync(g);
}

/* runtime/train/optim.c's rt_clip_factor (this layer is below it): in
 * float, as torch's max_norm / (total_norm + 1e-6), 1 when nothing clips. */
static float clip_factor(double max_norm, double norm)
{
    if (!isfinite(norm))
        return 1;
    float c = 1.0f / ((float)norm + 1e-6f) * (float)max_norm;
    return c < 1 ? c : 1;
}

int rt_gpu_optim_step(RtGpuModel *g, const RtGpuAdamW *hp, double *grad_norm)
{
    const StrataGpuProgram *p = g->prog;
    if (hp->step < 1)
        return fail(g, "AdamW step %lld: steps count from 1", (long long)hp->step);
    /* the norm: partial sums per block, then their total, in double */
    int64_t n = p->params_numel;
    uint64_t grads = g->buf[STRATA_GPU_GRADS], total = g->partial + 8 * STRATA_GPU_NORM_BLOCKS;
    ArgVal v1[6] = {{.i = g->B}, {.i = g->T}, {.i32 = 0}, {.p = grads}, {.i = n}, {.p = g->partial}};
    void *a1[6] = {&v1[0], &v1[1], &v1[2], &v1[3], &v1[4], &v1[5]};
    unsigned grid[3] = {STRATA_GPU_NORM_BLOCKS, 1, 1}, block[3] = {STRATA_GPU_NORM_THREADS, 1, 1};
    unsigned one[3] = {1, 1, 1};
    if (launch(g, g->sumsq, grid, block, 0, a1, "strata_sumsq"))
        return -1;
    ArgVal v2[5] = {{.i = g->B}, {.i = g->T}, {.i32 = 0}, {.p = g->partial}, {.p = total}};
    void *a2[5] = {&v2[0], &v2[1], &v2[2], &v2[3], &v2[4]};
    double norm;
    if (launch(g, g->sumsq_final, one, one, 0, a2, "strata_sumsq_final") ||
        download(g, &norm, total, 8, "gradient norm"))
        return -1;
    if (grad_norm)
        *grad_norm = norm;
    double t = (double)hp->step;
    float gscale = hp->clip > 0 ? clip_factor(hp->clip, norm) : 1.0f;
    float sc[9] = {gscale,
                   (float)hp->beta1,
                   (float)(1 - hp->beta1),
                   (float)hp->beta2,
                   (float)(1 - hp->beta2),
                   (float)hp->eps,
                   (float)sqrt(1 - pow(hp->beta2, t)),
                   (float)(-hp->lr / (1 - pow(hp->beta1, t))),
                   1.0f};
    float decay = (float)(1 - hp->lr * hp->weight_decay);
    for (int i = 0; i < p->nparams; i++) {
        const StrataGpuParam *pp = &p->params[i];
        if (pp->numel == 0)
            continue;
        uint64_t off = (uint64_t)pp->offset * 4;
        ArgVal v[17] = {{.i = g->B}, {.i = g->T}, {.i32 = 0}, {.p = g->buf[STRATA_GPU_PARAMS] + off},
                        {.p = grads + off}, {.p = g->m + off}, {.p = g->v + off}, {.i = pp->numel}};
        for (int k = 0; k < 9; k++)
            v[8 + k].f = sc[k];
        v[16].f = pp->decay ? decay : 1.0f;
        void *a[17];
        for (int k = 0; k < 17; k++)
            a[k] = &v[k];
        unsigned gr[3] = {(unsigned)ceil_div(pp->numel, 256), 1, 1}, bl[3] = {256, 1, 1};
        if (launch(g, g->adamw, gr, bl, 0, a, "strata_adamw"))
            return -1;
    }
    return sync(g);
}
