/* gpu_plan_test.c - the host side of the GPU launch plan (runtime/gpu/plan.h,
 * made by lower_gpu_program) for every model of models/ at gradcheck's
 * tiny sizes, evaluated for several B x T:
 *   - grids cover each op's work (a CTA per token row for row kernels and
 *     the other row ops, C's rows and columns in tiles for a product, every
 *     (sequence, head, position) of attention, every column of the column
 *     ops) and stay within CUDA's limits;
 *   - every pointer argument lies inside its buffer, 4-byte aligned, and
 *     64-byte aligned in the arena; arena offsets of values and aux state
 *     are the CPU memory plan's (memplan_layout, compiler/ir/memplan.h);
 *   - replaying a training step's launches, every value a launch reads was
 *     written by its producer and not overwritten since (an interval map of
 *     the arena, independent of the memory plan's own check), and no launch
 *     writes over another of its own operands; scratch reads (the token
 *     count, partial sums) find what a launch for the same node wrote;
 *   - parameter offsets and the parameter count equal the CPU descriptor's
 *     (the JIT-compiled model's strata_model);
 *   - lower_gpu_program_c's C source (what a built trainer links), compiled
 *     by the C compiler and loaded, holds the same program field by field
 *     (skipped, saying so, without a C compiler). */
#include "gpu/plan.h"
#include "ir/memplan.h"
#include "lower/lower.h"
#include "lower_case.h"

#include <dlfcn.h>
#include <glob.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;
static bool have_cc;

#define CHECK(cond, ...)                                                                                       \
    do {                                                                                                       \
        if (!(cond)) {                                                                                         \
            if (failures++ < 30) {                                                                             \
                fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                           \
                fprintf(stderr, __VA_ARGS__);                                                                  \
                fprintf(stderr, "\n");                                                                         \
            }                                                                                                  \
        }                                                                                                      \
    } while (0)

static int64_t ceil_div(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

/* An interval of the arena and who wrote it: node * 2 + aux. */
typedef struct Iv {
    int64_t a, b;
    int owner;
} Iv;

typedef struct Map {
    Iv *v;
    int n, cap;
} Map;

static void map_write(Map *m, int64_t a, int64_t b, int owner)
{
    Map out = {0};
    out.cap = m->n * 2 + 2;
    out.v = malloc((size_t)out.cap * sizeof *out.v);
    for (int i = 0; i < m->n; i++) {
        Iv x = m->v[i];
        if (x.b <= a || x.a >= b) {
            out.v[out.n++] = x;
            continue;
        }
        if (x.a < a)
            out.v[out.n++] = (Iv){x.a, a, x.owner};
        if (x.b > b)
            out.v[out.n++] = (Iv){b, x.b, x.owner};
    }
    out.v[out.n++] = (Iv){a, b, owner};
    free(m->v);
    *m = out;
}

/* [a, b) entirely written by owner (and nothing else since). */
static bool map_owned(const Map *m, int64_t a, int64_t b, int owner)
{
    int64_t covered = 0;
    for (int i = 0; i < m->n; i++) {
        const Iv *x = &m->v[i];
        int64_t lo = x->a > a ? x->a : a, hi = x->b < b ? x->b : b;
        if (lo >= hi)
            continue;
        if (x->owner != owner)
            return false;
        covered += hi - lo;
    }
    return covered == b - a;
}

static int64_t buf_bytes(const StrataGpuProgram *p, int buf, int64_t B, int64_t T)
{
    switch (buf) {
    case STRATA_GPU_PARAMS:
    case STRATA_GPU_GRADS: return p->params_numel * 4;
    case STRATA_GPU_ARENA: return strata_gpu_eval(p->arena_bytes, B, T);
    case STRATA_GPU_TOKENS:
    case STRATA_GPU_TARGETS:
    case STRATA_GPU_MASK: return B * T * 4;
    case STRATA_GPU_CONSTS: return p->nconsts * 4;
    case STRATA_GPU_TOKEN_INDEX: return p->index_rows > 0 ? (B * T + p->index_rows + 1) * 4 : 0;
    case STRATA_GPU_SCRATCH: return strata_gpu_eval(p->scratch_bytes, B, T);
    default: return -1;
    }
}

static void check_grid(const IrGraph *g, const StrataGpuProgram *p, const StrataGpuLaunch *l, int64_t B, int64_t T)
{
    int64_t gx = ceil_div(strata_gpu_eval(l->grid[0], B, T), l->grid_div[0]);
    int64_t gy = ceil_div(strata_gpu_eval(l->grid[1], B, T), l->grid_div[1]);
    const char *kn = p->kernels[l->kernel].name;
    CHECK(gx >= 1 && gx < ((int64_t)1 << 31) && gy >= 1 && gy <= 65535, "%s: grid %lld x %lld", kn, (long long)gx,
          (long long)gy);
    CHECK(l->block[0] * l->block[1] * l->block[2] <= 1024 && l->block[0] >= 1, "%s: block too large", kn);
    int64_t BT = B * T, threads = gx * l->block[0];
    if (strstr(kn, "grad_store") || strstr(kn, "_zero")) { /* (dst, n, ...): a thread per element */
        int64_t numel = strata_gpu_eval(p->args[l->arg0 + 1].off, B, T);
        CHECK(threads >= numel, "%s: %lld threads for %lld elements", kn, (long long)threads, (long long)numel);
        return;
    }
    if (l->node < 0)
        return;
    const IrNode *n = g->nodes.v[l->node];
    switch (n->op) {
    case IR_MATMUL:
    case IR_MATMUL_GRAD_W: {
        int64_t M = n->tok ? BT : n->rows;
        /* a CTA per tile of C: the grid counts C's rows and columns in tiles */
        CHECK(strata_gpu_eval(l->grid[0], B, T) == M && strata_gpu_eval(l->grid[1], B, T) == n->width &&
                  gx * l->grid_div[0] >= M && gy * l->grid_div[1] >= n->width,
              "%s %%%d: the tiles do not cover (%lld, %lld)", kn, n->id, (long long)M, (long long)n->width);
        break;
    }
    case IR_ATTENTION:
    case IR_ATTENTION_GRAD:
        CHECK(threads >= T && gy >= B * n->heads, "%s %%%d: %lld x %lld threads for %lld positions of %lld heads",
              kn, n->id, (long long)threads, (long long)gy, (long long)T, (long long)(B * n->heads));
        break;
    case IR_EMBED_GRAD:
    case IR_SUM_ROWS:
        CHECK(threads >= n->width, "%s %%%d: %lld threads for %lld columns", kn, n->id, (long long)threads,
              (long long)n->width);
        break;
    case IR_CROSS_ENTROPY:
        if (strstr(kn, "ce_rows"))
            CHECK(gx == BT, "%s: %lld CTAs for %lld rows", kn, (long long)gx, (long long)BT);
        break;
    default:
        if (n->tok)
            CHECK(gx == BT, "%s %%%d: %lld CTAs for %lld token rows", kn, n->id, (long long)gx, (long long)BT);
        break;
    }
}

static void check_shape(const IrGraph *g, const MemLayout *ly, const StrataGpuProgram *p, int64_t B, int64_t T)
{
    Map live = {0}, scratch = {0}; /* scratch: owner = the launch that wrote it */
    for (int i = 0; i < p->ntables; i++) { /* filled by the host before the step */
        int64_t o = strata_gpu_eval(p->tables[i].off, B, T);
        map_write(&live, o, o + T * p->tables[i].hd * 4, -2);
    }
    for (int li = 0; li < p->nlaunches; li++) {
        const StrataGpuLaunch *l = &p->launches[li];
        const char *kn = p->kernels[l->kernel].name;
        check_grid(g, p, l, B, T);
        CHECK(l->arg0 >= 0 && l->arg0 + l->nargs <= p->nargs, "launch %d: arguments out of range", li);
        for (int ai = 0; ai < l->nargs; ai++) {
            const StrataGpuArg *a = &p->args[l->arg0 + ai];
            if (a->kind != STRATA_GPU_ARG_PTR)
                continue;
            int64_t off = strata_gpu_eval(a->off, B, T), size = strata_gpu_eval(a->size, B, T);
            int64_t cap = buf_bytes(p, a->buf, B, T);
            CHECK(off >= 0 && size >= 0 && off + size <= cap, "launch %d (%s) arg %d: [%lld, %lld) outside %lld bytes",
                  li, kn, ai, (long long)off, (long long)(off + size), (long long)cap);
            CHECK(off % 4 == 0, "launch %d arg %d: offset %lld not aligned", li, ai, (long long)off);
            if (a->buf == STRATA_GPU_SCRATCH && !a->writes) {
                /* read what a launch for the same node (or the forward node it reuses) wrote, unclobbered */
                int owner = -1;
                for (int k = 0; k < scratch.n && owner != -3; k++)
                    if (scratch.v[k].a < off + size && scratch.v[k].b > off)
                        owner = owner == -1 || owner == scratch.v[k].owner ? scratch.v[k].owner : -3;
                const IrNode *me = l->node >= 0 ? g->nodes.v[l->node] : NULL;
                int pn = owner >= 0 ? p->launches[owner].node : -1;
                CHECK(owner >= 0 && map_owned(&scratch, off, off + size, owner) && me &&
                          (pn == me->id || (me->saved && pn == me->saved->id)),
                      "launch %d (%s): scratch [%lld, %lld) not written for it", li, kn, (long long)off,
                      (long long)(off + size));
            }
            if (a->buf != STRATA_GPU_ARENA || a->node < 0)
                continue;
            CHECK(off % 64 == 0, "launch %d (%s) arg %d: arena offset %lld not 64-byte aligned", li, kn, ai,
                  (long long)off);
            const IrNode *n = g->nodes.v[a->node];
            int64_t voff = memplan_slot_offset(ly, ly->value[n->id], B, T);
            int64_t aoff = memplan_slot_offset(ly, ly->aux[n->id], B, T);
            int64_t toff = memplan_slot_offset(ly, ly->table[n->id], B, T);
            bool is_val = off == voff, is_aux = off == aoff && aoff >= 0, is_tab = off == toff && toff >= 0;
            CHECK(is_val || is_aux || is_tab, "launch %d (%s) arg %d: %%%d at %lld, the CPU plan has %lld/%lld/%lld",
                  li, kn, ai, n->id, (long long)off, (long long)voff, (long long)aoff, (long long)toff);
            if (is_tab && !a->writes && !is_val && !is_aux)
                CHECK(map_owned(&live, off, off + size, -2), "launch %d (%s): rotary table overwritten", li, kn);
            else if (!a->writes)
                CHECK(map_owned(&live, off, off + size, n->id * 2 + is_aux),
                      "launch %d (%s) arg %d: %%%d read but not live there", li, kn, ai, n->id);
            /* no other operand of this launch overlaps what it writes, but the
             * logits' gradient, written over the logits exactly (memplan.c:
             * each element is read before it is written) */
            for (int bi = 0; bi < l->nargs && a->writes; bi++) {
                const StrataGpuArg *b = &p->args[l->arg0 + bi];
                if (bi == ai || b->kind != STRATA_GPU_ARG_PTR || b->buf != STRATA_GPU_ARENA || b->node == a->node)
                    continue;
                int64_t bo = strata_gpu_eval(b->off, B, T), bs = strata_gpu_eval(b->size, B, T);
                bool in_place = n->op == IR_CE_GRAD && b->node >= 0 && b->node == n->in[0]->id &&
                                n->in[0] == g->logits && bo == off && bs == size;
                CHECK(in_place || bo + bs <= off || bo >= off + size, "launch %d (%s): args %d and %d overlap", li, kn,
                      ai, bi);
            }
        }
        for (int ai = 0; ai < l->nargs; ai++) { /* then its writes land */
            const StrataGpuArg *a = &p->args[l->arg0 + ai];
            if (a->kind == STRATA_GPU_ARG_PTR && a->buf == STRATA_GPU_SCRATCH && a->writes) {
                int64_t o = strata_gpu_eval(a->off, B, T);
                map_write(&scratch, o, o + strata_gpu_eval(a->size, B, T), li);
            }
            if (a->kind != STRATA_GPU_ARG_PTR || a->buf != STRATA_GPU_ARENA || !a->writes || a->node < 0)
                continue;
            const IrNode *n = g->nodes.v[a->node];
            int64_t off = strata_gpu_eval(a->off, B, T);
            bool is_aux = off == memplan_slot_offset(ly, ly->aux[n->id], B, T);
            map_write(&live, off, off + strata_gpu_eval(a->size, B, T), n->id * 2 + is_aux);
        }
    }
    free(live.v);
    free(scratch.v);
}

#define SAME(field) CHECK(a->field == b->field, "C source: %s differs", #field)
#define SAME_AFF(x) CHECK(!memcmp(&a->x, &b->x, sizeof a->x), "C source: %s differs", #x)

/* The program through lower_gpu_program_c, cc and dlopen equals p. */
static void check_c_source(const StrataGpuProgram *a, const char *path)
{
    static int seq;
    char dir[] = "/tmp/strata-gpu-c-XXXXXX", src[128], so[128], cmd[2048], err[256];
    if (!mkdtemp(dir))
        return;
    snprintf(src, sizeof src, "%s/p.c", dir);
    snprintf(so, sizeof so, "%s/p%d.so", dir, seq++);
    FILE *f = fopen(src, "w");
    CHECK(f && lower_gpu_program_c(a, "strata_gpu_program", f, err, sizeof err) == 0, "%s: C source", path);
    if (f)
        fclose(f);
    const char *srcdir = getenv("srcdir") ? getenv("srcdir") : ".", *cc = getenv("CC") ? getenv("CC") : "cc";
    snprintf(cmd, sizeof cmd, "%s -shared -fPIC -I'%s/runtime' -o '%s' '%s'", cc, srcdir, so, src);
    void *h = system(cmd) == 0 ? dlopen(so, RTLD_NOW | RTLD_LOCAL) : NULL;
    CHECK(h, "%s: the C source does not compile or load (%s)", path, cmd);
    const StrataGpuProgram *b = h ? dlsym(h, "strata_gpu_program") : NULL;
    if (b) {
        SAME(magic);
        SAME(version);
        SAME(precision);
        SAME(ptx_len);
        SAME(params_numel);
        SAME(vocab);
        SAME(index_rows);
        SAME_AFF(arena_bytes);
        SAME_AFF(loss_off);
        SAME_AFF(logits_off);
        SAME_AFF(scratch_bytes);
        CHECK(!strcmp(a->target, b->target) && !strcmp(a->ptx, b->ptx), "C source: target or PTX differs");
        for (int i = 0; i < a->nkernels && i < b->nkernels; i++)
            CHECK(!strcmp(a->kernels[i].name, b->kernels[i].name), "C source: kernel %d", i);
        for (int i = 0; i < a->nlaunches && a->nlaunches == b->nlaunches; i++) { /* field by field: padding */
            const StrataGpuLaunch *x = &a->launches[i], *y = &b->launches[i];
            CHECK(x->kernel == y->kernel && x->phase == y->phase && !memcmp(x->grid, y->grid, sizeof x->grid) &&
                      !memcmp(x->grid_div, y->grid_div, sizeof x->grid_div) &&
                      !memcmp(x->block, y->block, sizeof x->block) && x->shared_bytes == y->shared_bytes &&
                      x->arg0 == y->arg0 && x->nargs == y->nargs && x->acc == y->acc && x->node == y->node &&
                      x->block_index == y->block_index,
                  "C source: launch %d differs", i);
        }
        SAME(nlaunches);
        CHECK(a->nargs == b->nargs && !memcmp(a->args, b->args, (size_t)a->nargs * sizeof *a->args),
              "C source: arguments differ");
        for (int i = 0; i < a->nparams && a->nparams == b->nparams; i++)
            CHECK(a->params[i].offset == b->params[i].offset && a->params[i].numel == b->params[i].numel &&
                      a->params[i].decay == b->params[i].decay,
                  "C source: parameter %d differs", i);
        SAME(nparams);
        CHECK(a->ntables == b->ntables && !memcmp(a->tables, b->tables, (size_t)a->ntables * sizeof *a->tables),
              "C source: tables differ");
        CHECK(a->nconsts == b->nconsts && !memcmp(a->consts, b->consts, (size_t)a->nconsts * sizeof *a->consts),
              "C source: constants differ");
    }
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
}

static void check_model(Jit *jit, const char *path)
{
    Case c;
    if (!case_load(&c, path, NULL, NULL, 0)) {
        CHECK(0, "%s does not load", path);
        return;
    }
    StrataGpuProgram *p = NULL;
    char err[1024];
    LowerGpuOptions go = {.sm = 80, .precision = STRATA_PRECISION_FP32};
    if (lower_gpu_program(&c.g, &go, &p, err, sizeof err) != 0) {
        CHECK(0, "%s: %s", path, err);
        case_free(&c);
        return;
    }
    int before = failures;
    MemLayout ly;
    memplan_layout(&ly, &c.g, 4, 0);
    static const int64_t shapes[][2] = {{1, 1}, {2, 7}, {3, 16}, {64, 256}};
    for (int s = 0; s < 4; s++)
        check_shape(&c.g, &ly, p, shapes[s][0], shapes[s][1]);
    JitModel m;
    if (case_compile(jit, &c, LOWER_F32, &m)) {
        const StrataModelDesc *d = m.desc;
        CHECK(d->nparams == p->nparams && d->params_numel == p->params_numel, "%s: %d/%lld parameters, the CPU %d/%lld",
              path, p->nparams, (long long)p->params_numel, (int)d->nparams, (long long)d->params_numel);
        for (int i = 0; i < p->nparams && i < d->nparams; i++)
            CHECK(d->params[i].offset == p->params[i].offset && d->params[i].numel == p->params[i].numel &&
                      p->params[i].decay == (d->params[i].role == STRATA_ROLE_MATRIX),
                  "%s: parameter %s differs from the CPU descriptor", path, d->params[i].name);
        CHECK(d->vocab == p->vocab, "%s: vocab", path);
        jit_release(jit, &m);
    } else {
        CHECK(0, "%s: the CPU path does not compile", path);
    }
    if (have_cc)
        check_c_source(p, path);
    printf("%s %s: %d kernels, %d launches checked at 4 shapes\n", failures == before ? "ok" : "FAIL", path,
           p->nkernels, p->nlaunches);
    memplan_layout_free(&ly);
    lower_gpu_program_free(p);
    case_free(&c);
}

int main(int argc, char **argv)
{
    glob_t gl = {0};
    char pattern[4096];
    if (argc < 2) {
        const char *srcdir = getenv("srcdir");
        snprintf(pattern, sizeof pattern, "%s/models/*.strata", srcdir ? srcdir : ".");
        if (glob(pattern, 0, NULL, &gl) != 0 || gl.gl_pathc == 0) {
            fprintf(stderr, "no models at %s\n", pattern);
            return 1;
        }
    }
    have_cc = system("${CC:-cc} --version > /dev/null 2>&1") == 0;
    if (!have_cc)
        printf("SKIPPED: the C source check (no C compiler)\n");
    char *err = NULL;
    Jit *jit = jit_create(&err);
    if (!jit) {
        fprintf(stderr, "jit: %s\n", err);
        return 1;
    }
    int n = argc < 2 ? (int)gl.gl_pathc : argc - 1;
    for (int i = 0; i < n; i++)
        check_model(jit, argc < 2 ? gl.gl_pathv[i] : argv[i + 1]);
    jit_free(jit);
    globfree(&gl);
    printf("%d models, %d failures\n", n, failures);
    return failures ? 1 : 0;
}
