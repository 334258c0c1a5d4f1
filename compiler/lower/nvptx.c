/* nvptx.c - the driver of the GPU lowering (lower.h: lower_gpu_program):
 * the NVPTX target machine (nvptx64-nvidia-cuda, sm_80 or sm_90), then
 * memory plan -> kinds of blocks -> the schedule walked kernel by kernel
 * (nvptx_kern.c builds each distinct kernel once and adds a launch per
 * node or row group, with the gradient copies of the CPU's step.c and the
 * zeroing of gradients nothing writes) -> the optimizer's kernels -> verify
 * -> default<O2> -> PTX text, returned with the plan (runtime/gpu/plan.h).
 * lower_gpu_plan_dump prints a program (--emit=plan).  Memory: a program
 * owns its arrays and strings; lower_gpu_program_free releases them. */
#include "lower/nvptx.h"

#include "config.h"

#include <llvm-c/Analysis.h>
#include <llvm-c/Transforms/PassBuilder.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#ifdef HAVE_LLVM_NVPTX
static pthread_once_t nvptx_once = PTHREAD_ONCE_INIT;

static void init_nvptx(void)
{
    LLVMInitializeNVPTXTargetInfo();
    LLVMInitializeNVPTXTarget();
    LLVMInitializeNVPTXTargetMC();
    LLVMInitializeNVPTXAsmPrinter();
}
#endif

static char *fmt_err(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 1;
    char *s = xmalloc(n);
    snprintf(s, n, "%s%s", a, b);
    return s;
}

static LLVMTargetMachineRef nvptx_machine(const char *sm, char **err)
{
#ifdef HAVE_LLVM_NVPTX
    if (strcmp(sm, "sm_80") && strcmp(sm, "sm_90")) {
        *err = fmt_err("unknown GPU architecture (sm_80 or sm_90): ", sm);
        return NULL;
    }
    pthread_once(&nvptx_once, init_nvptx);
    const char *triple = "nvptx64-nvidia-cuda";
    LLVMTargetRef target;
    char *msg = NULL;
    if (LLVMGetTargetFromTriple(triple, &target, &msg)) {
        *err = fmt_err("NVPTX target: ", msg ? msg : "not found");
        LLVMDisposeMessage(msg);
        return NULL;
    }
    LLVMTargetMachineRef tm = LLVMCreateTargetMachine(target, triple, sm, "+ptx78", LLVMCodeGenLevelDefault,
                                                      LLVMRelocDefault, LLVMCodeModelDefault);
    if (!tm)
        *err = xstrdup("cannot create the NVPTX target machine");
    return tm;
#else
    (void)sm;
    *err = xstrdup("this strata was built with an LLVM without the NVPTX target");
    return NULL;
#endif
}

static bool is_call_op(IrOp op)
{
    switch (op) {
    case IR_MATMUL:
    case IR_MATMUL_GRAD_W:
    case IR_EMBED:
    case IR_EMBED_GRAD:
    case IR_ROPE:
    case IR_ROPE_GRAD:
    case IR_ATTENTION:
    case IR_ATTENTION_GRAD:
    case IR_CROSS_ENTROPY:
    case IR_CE_GRAD: return true;
    default: return false;
    }
}

/* A node that is not a row kernel or a loop, to its emitter. */
static void call_node(Gpu *x, const IrNode *n)
{
    switch (n->op) {
    case IR_MATMUL: gpu_matmul(x, n); break;
    case IR_MATMUL_GRAD_W: gpu_matmul_grad_w(x, n); break;
    case IR_EMBED: gpu_embed(x, n); break;
    case IR_EMBED_GRAD: gpu_embed_grad(x, n); break;
    case IR_ROPE:
    case IR_ROPE_GRAD: gpu_rope(x, n); break;
    case IR_ATTENTION: gpu_attention(x, n); break;
    case IR_ATTENTION_GRAD: gpu_attention_grad(x, n); break;
    case IR_CROSS_ENTROPY: gpu_cross_entropy(x, n); break;
    case IR_CE_GRAD: gpu_ce_grad(x, n); break;
    default: die("lower: no GPU rule for op %s", ir_op_info[n->op].text);
    }
}

/* The rotary tables: one per distinct slot. */
static StrataGpuTable *tables(Gpu *x, int *n)
{
    const IrGraph *g = x->g;
    StrataGpuTable *t = xcalloc((size_t)g->nodes.n + 1, sizeof *t);
    *n = 0;
    for (int i = 0; i < g->nodes.n; i++) {
        const IrNode *v = g->nodes.v[i];
        MemSlot s = x->ly->table[i];
        bool first = s.region != MEM_NONE;
        for (int j = 0; j < i && first; j++)
            first = !(x->ly->table[j].region == s.region && x->ly->table[j].off == s.off);
        if (first)
            t[(*n)++] = (StrataGpuTable){gpu_slot_off(x, s), v->width / v->heads, v->num};
    }
    return t;
}

/* The schedule as launches. */
static void walk(Gpu *x, const Kinds *kinds)
{
    const IrGraph *g = x->g;
    Cg *cg = &x->cg;
    x->phase = STRATA_GPU_ZERO_GRADS;
    x->block_index = -1;
    for (int p = 0; p < g->grads.n; p++)
        if (!g->grads.v[p])
            gpu_zero(x, STRATA_GPU_GRADS, gpu_aff(x->param_off[p] * 4, 0, 0), ((IrParam *)g->params.v[p])->numel);
    for (int k = 0; k < g->kernels.n; k++) {
        const IrKernel *kr = g->kernels.v[k];
        const IrNode *first = kr->nodes.v[0];
        bool fwd = first->id < g->nforward;
        x->phase = !fwd ? STRATA_GPU_BACKWARD : kinds->logits_need[k] ? STRATA_GPU_FORWARD : STRATA_GPU_LOSS;
        x->block_index = kinds->kernel_block[k];
        if (kr->rowwise)
            gpu_rows_kernel(x, kr);
        else if (is_call_op(first->op))
            call_node(x, first);
        else
            gpu_loop_node(x, first);
        for (int p = cg->grad_first[k]; p >= 0; p = cg->grad_next[p]) {
            const IrNode *gx = g->grads.v[p];
            if (!x->ly->home[gx->id])
                gpu_grad_store(x, gpu_aff(x->param_off[p] * 4, 0, 0), gx, ((IrParam *)g->params.v[p])->numel);
        }
    }
}

static void dispose_cg(Cg *cg)
{
    free(cg->param_off);
    free(cg->grad_first);
    free(cg->grad_next);
    free(cg->out_first);
    free(cg->out_next);
    if (cg->b)
        LLVMDisposeBuilder(cg->b);
    if (cg->td)
        LLVMDisposeTargetData(cg->td);
}

static pthread_once_t host_once = PTHREAD_ONCE_INIT;

static void init_host(void)
{
    LLVMInitializeNativeTarget();
    LLVMInitializeNativeAsmPrinter();
}

/* The emulation's machine: this host, position-independent (a shared object). */
static LLVMTargetMachineRef host_machine(char **err)
{
    pthread_once(&host_once, init_host);
    char *triple = LLVMGetDefaultTargetTriple(), *msg = NULL;
    LLVMTargetRef target;
    LLVMTargetMachineRef tm = NULL;
    if (LLVMGetTargetFromTriple(triple, &target, &msg)) {
        *err = fmt_err("host target: ", msg ? msg : "not found");
        LLVMDisposeMessage(msg);
    } else {
        tm = LLVMCreateTargetMachine(target, triple, "", "", LLVMCodeGenLevelDefault, LLVMRelocPIC,
                                     LLVMCodeModelDefault);
        if (!tm)
            *err = xstrdup("cannot create the host target machine");
    }
    LLVMDisposeMessage(triple);
    return tm;
}

/* sm: the NVPTX target; or, emu_obj set, the host's object file at that path. */
static int build_program(const IrGraph *g, const char *sm, const char *emu_obj, bool bf16, StrataGpuProgram **out,
                         char **err)
{
    *out = NULL;
    *err = NULL;
    if (!g->logits || !g->loss || g->kernels.n == 0 || g->nforward == 0)
        die("lower_gpu_program: the graph needs autodiff, logits, a loss and fuse_graph");
    LLVMTargetMachineRef tm = emu_obj ? host_machine(err) : nvptx_machine(sm, err);
    if (!tm)
        return -1;
    Gpu x = {0};
    x.emulate = emu_obj != NULL;
    x.bf16 = bf16;
    Cg *cg = &x.cg;
    cg->g = g;
    cg->prec = LOWER_F32;
    cg->nvptx = true;
    cg->gpu_emulate = x.emulate;
    cg->tm = tm;
    cg->ctx = LLVMContextCreate();
    cg->mod = LLVMModuleCreateWithNameInContext(g->model_name ? g->model_name : "strata", cg->ctx);
    char *triple = LLVMGetTargetMachineTriple(tm);
    LLVMSetTarget(cg->mod, triple);
    LLVMDisposeMessage(triple);
    cg->td = LLVMCreateTargetDataLayout(tm);
    LLVMSetModuleDataLayout(cg->mod, cg->td);
    cg->b = LLVMCreateBuilderInContext(cg->ctx);
    LLVMContextRef c = cg->ctx;
    cg->real = LLVMFloatTypeInContext(c);
    cg->elem = 4;
    cg->i1 = LLVMInt1TypeInContext(c);
    cg->i8 = LLVMInt8TypeInContext(c);
    cg->i32 = LLVMInt32TypeInContext(c);
    cg->i64 = LLVMInt64TypeInContext(c);
    cg->f64 = LLVMDoubleTypeInContext(c);
    cg->ptr = LLVMPointerTypeInContext(c, 0);
    cg->voidt = LLVMVoidTypeInContext(c);

    MemLayout ly;
    memplan_layout(&ly, g, 4, 0); /* the whole logits: no head chunks on the GPU */
    Kinds kinds;
    kinds_find(&kinds, g, &ly);
    cg->ly = &ly;
    cg->kinds = &kinds;
    lower_abi_plan(cg);
    x.g = g;
    x.ly = &ly;
    x.param_off = cg->param_off;
    x.attn_done = xcalloc((size_t)g->nodes.n + 1, sizeof *x.attn_done);
    walk(&x, &kinds);
    gpu_optimizer_kernels(&x);
    if (x.emulate)
        gpu_emu_wrappers(&x);

    char *msg = NULL;
    if (LLVMVerifyModule(cg->mod, LLVMReturnStatusAction, &msg)) {
        fprintf(stderr, "%s\n", msg);
        die("lower: the generated NVPTX module does not verify");
    }
    LLVMDisposeMessage(msg);
    LLVMPassBuilderOptionsRef po = LLVMCreatePassBuilderOptions();
    LLVMErrorRef e = LLVMRunPasses(cg->mod, "default<O2>", tm, po);
    LLVMDisposePassBuilderOptions(po);
    LLVMMemoryBufferRef buf = NULL;
    int rc = 0;
    if (e) {
        char *m = LLVMGetErrorMessage(e); /* consumes e */
        *err = fmt_err("NVPTX passes: ", m);
        LLVMDisposeErrorMessage(m);
        rc = -1;
    } else if (emu_obj) {
        if (LLVMTargetMachineEmitToFile(tm, cg->mod, emu_obj, LLVMObjectFile, &msg)) {
            *err = fmt_err("host backend: ", msg ? msg : "failed");
            LLVMDisposeMessage(msg);
            rc = -1;
        }
    } else if (LLVMTargetMachineEmitToMemoryBuffer(tm, cg->mod, LLVMAssemblyFile, &msg, &buf)) {
        *err = fmt_err("NVPTX backend: ", msg ? msg : "failed");
        LLVMDisposeMessage(msg);
        rc = -1;
    }

    if (rc == 0) {
        StrataGpuProgram *p = xcalloc(1, sizeof *p);
        size_t n = buf ? LLVMGetBufferSize(buf) : 0;
        char *ptx = xmalloc(n + 1);
        if (n)
            memcpy(ptx, LLVMGetBufferStart(buf), n);
        ptx[n] = 0;
        StrataGpuKernel *ks = xcalloc((size_t)x.nkeys + 1, sizeof *ks);
        for (int i = 0; i < x.nkeys; i++)
            ks[i].name = x.names[i];
        StrataGpuParam *ps = xcalloc((size_t)g->params.n + 1, sizeof *ps);
        for (int i = 0; i < g->params.n; i++) {
            const IrParam *ip = g->params.v[i];
            ps[i] = (StrataGpuParam){cg->param_off[i], ip->numel, ip->role == PARAM_MATRIX};
        }
        int ntab;
        StrataGpuTable *tab = tables(&x, &ntab);
        MemSlot lslot = ly.value[g->loss->id], gslot = ly.value[g->logits->id];
        if (lslot.region == MEM_NONE || gslot.region == MEM_NONE)
            die("lower: the loss and the logits need places in the arena");
        *p = (StrataGpuProgram){
            .magic = STRATA_GPU_MAGIC,
            .version = STRATA_GPU_VERSION,
            .target = xstrdup(emu_obj ? "host" : sm),
            .precision = bf16 ? STRATA_PRECISION_BF16 : STRATA_PRECISION_FP32,
            .ptx = ptx,
            .ptx_len = (int64_t)n,
            .kernels = ks,
            .nkernels = x.nkeys,
            .launches = x.launches,
            .nlaunches = x.nlaunches,
            .args = x.args,
            .nargs = x.nargs,
            .params = ps,
            .nparams = g->params.n,
            .params_numel = cg->params_numel,
            .vocab = g->logits->width,
            .arena_bytes = gpu_aff(ly.unit_bytes[MEM_FIXED] + ly.unit_bytes[MEM_THREAD], ly.unit_bytes[MEM_ROWS],
                                   ly.unit_bytes[MEM_SEQ]),
            .loss_off = gpu_slot_off(&x, lslot),
            .logits_off = gpu_slot_off(&x, gslot),
            .tables = tab,
            .ntables = ntab,
            .consts = x.consts,
            .nconsts = x.nconsts,
            .index_rows = x.index_rows,
            .scratch_bytes = gpu_aff(x.scratch_bytes > GPU_SCRATCH_PARTIALS ? x.scratch_bytes : GPU_SCRATCH_PARTIALS, 0, 0),
        };
        x.consts = NULL;
        x.names = NULL;
        x.launches = NULL;
        x.args = NULL;
        *out = p;
    }
    if (buf)
        LLVMDisposeMemoryBuffer(buf);
    for (int i = 0; i < x.nkeys; i++)
        free(x.keys[i].key);
    free(x.keys);
    if (x.names)
        for (int i = 0; i < x.nkeys; i++)
            free(x.names[i]);
    free(x.names);
    free(x.launches);
    free(x.args);
    free(x.attn_done);
    free(x.consts);
    kinds_free(&kinds);
    memplan_layout_free(&ly);
    dispose_cg(cg);
    LLVMDisposeModule(cg->mod);
    LLVMContextDispose(cg->ctx);
    LLVMDisposeTargetMachine(tm);
    return rc;
}

/* err as the caller's buffer. */
static int run_build(const IrGraph *g, const LowerGpuOptions *o, const char *emu_obj, StrataGpuProgram **out,
                     char *err, size_t errlen)
{
    char sm[16], *msg = NULL;
    snprintf(sm, sizeof sm, "sm_%d", o->sm);
    if (o->precision != STRATA_PRECISION_FP32 && o->precision != STRATA_PRECISION_BF16) {
        snprintf(err, errlen, "unknown precision %d (fp32 or bf16)", o->precision);
        return -1;
    }
    int rc = build_program(g, emu_obj ? NULL : sm, emu_obj, o->precision == STRATA_PRECISION_BF16, out, &msg);
    if (rc)
        snprintf(err, errlen, "%s", msg ? msg : "the GPU lowering failed");
    free(msg);
    return rc;
}

int lower_gpu_program(const IrGraph *g, const LowerGpuOptions *o, StrataGpuProgram **out, char *err, size_t errlen)
{
    return run_build(g, o, NULL, out, err, errlen);
}

int lower_gpu_emulation(const IrGraph *g, const LowerGpuOptions *o, const char *obj_path, StrataGpuProgram **out,
                        char *err, size_t errlen)
{
    return run_build(g, o, obj_path, out, err, errlen);
}

void lower_gpu_program_free(StrataGpuProgram *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->nkernels; i++)
        free((char *)p->kernels[i].name);
    free((void *)p->kernels);
    free((void *)p->launches);
    free((void *)p->args);
    free((void *)p->params);
    free((void *)p->tables);
    free((void *)p->consts);
    free((char *)p->ptx);
    free((char *)p->target);
    free(p);
}

/* ---- --emit=plan ---- */

static void print_aff(FILE *out, StrataGpuAffine a)
{
    int n = 0;
    if (a.c || (!a.bt && !a.t && !a.b))
        n += fprintf(out, "%lld", (long long)a.c);
    if (a.bt)
        n += fprintf(out, "%s%lld*BT", n ? " + " : "", (long long)a.bt);
    if (a.t)
        n += fprintf(out, "%s%lld*T", n ? " + " : "", (long long)a.t);
    if (a.b)
        fprintf(out, "%s%lld*B", n ? " + " : "", (long long)a.b);
}

static const char *phase_name(int p)
{
    static const char *names[] = {"forward", "loss", "backward", "zero-grads"};
    return p >= 0 && p < 4 ? names[p] : "?";
}

void lower_gpu_plan_dump(FILE *out, const StrataGpuProgram *p)
{
    static const char *bufs[] = {"params", "grads", "arena", "tokens", "targets", "mask", "consts", "token-index",
                                 "scratch"};
    fprintf(out, "gpu plan v%u: %s, %s, %d kernels, %d launches, %d parameters (%lld floats), vocab %lld\n",
            p->version, p->target, p->precision == STRATA_PRECISION_BF16 ? "bf16" : "fp32", p->nkernels, p->nlaunches, p->nparams, (long long)p->params_numel, (long long)p->vocab);
    fprintf(out, "arena bytes: ");
    print_aff(out, p->arena_bytes);
    fprintf(out, "\nloss: arena @ ");
    print_aff(out, p->loss_off);
    fprintf(out, "\nlogits: arena @ ");
    print_aff(out, p->logits_off);
    fprintf(out, "\nscratch bytes: ");
    print_aff(out, p->scratch_bytes);
    fprintf(out, "\n");
    for (int i = 0; i < p->ntables; i++) {
        fprintf(out, "rope table %d: arena @ ", i);
        print_aff(out, p->tables[i].off);
        fprintf(out, ", head size %lld, base %g\n", (long long)p->tables[i].hd, p->tables[i].base);
    }
    for (int i = 0; i < p->nconsts; i++)
        fprintf(out, "const %d: %.9g\n", i, p->consts[i]);
    if (p->index_rows)
        fprintf(out, "token index: ids in [0, %lld)\n", (long long)p->index_rows);
    for (int i = 0; i < p->nparams; i++)
        fprintf(out, "param %d: @ %lld, %lld floats%s\n", i, (long long)p->params[i].offset,
                (long long)p->params[i].numel, p->params[i].decay ? ", decay" : "");
    for (int i = 0; i < p->nkernels; i++)
        fprintf(out, "kernel %d: %s\n", i, p->kernels[i].name);
    for (int i = 0; i < p->nlaunches; i++) {
        const StrataGpuLaunch *l = &p->launches[i];
        fprintf(out, "launch %d: %s %s", i, phase_name(l->phase), p->kernels[l->kernel].name);
        if (l->node >= 0)
            fprintf(out, " %%%d", l->node);
        if (l->block_index >= 0)
            fprintf(out, " block %d", l->block_index);
        fprintf(out, " grid");
        for (int d = 0; d < 2; d++) {
            fprintf(out, d ? " x (" : " (");
            print_aff(out, l->grid[d]);
            fprintf(out, ")/%lld", (long long)l->grid_div[d]);
        }
        fprintf(out, " block %ux%u%s\n", l->block[0], l->block[1], l->acc ? " acc" : "");
        for (int a = 0; a < l->nargs; a++) {
            const StrataGpuArg *g = &p->args[l->arg0 + a];
            fprintf(out, "  ");
            if (g->kind == STRATA_GPU_ARG_PTR) {
                fprintf(out, "%s%s @ ", g->writes ? "out " : "in  ", bufs[g->buf]);
                print_aff(out, g->off);
                fprintf(out, " [");
                print_aff(out, g->size);
                fprintf(out, "]");
                if (g->node >= 0)
                    fprintf(out, " %%%d", g->node);
            } else if (g->kind == STRATA_GPU_ARG_I64) {
                fprintf(out, "i64 ");
                print_aff(out, g->off);
            } else {
                fprintf(out, "f32 %.9g", g->f);
            }
            fprintf(out, "\n");
        }
    }
}

/* ---- the program as C source (a built trainer links it) ---- */

static void c_aff(FILE *f, StrataGpuAffine a)
{
    fprintf(f, "{%lldLL, %lldLL, %lldLL, %lldLL}", (long long)a.c, (long long)a.bt, (long long)a.t, (long long)a.b);
}

/* A string as a C array initializer (no limit on literal length). */
static void c_bytes(FILE *f, const char *s, size_t n)
{
    fprintf(f, "{");
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%s%d,", i % 24 ? "" : "\n", (unsigned char)s[i]);
    fprintf(f, "0}");
}

int lower_gpu_program_c(const StrataGpuProgram *p, const char *name, FILE *f, char *err, size_t errlen)
{
    fprintf(f, "/* generated by strata (compiler/lower/nvptx.c): the GPU program of a model */\n"
               "#include \"gpu/plan.h\"\n\n");
    fprintf(f, "static const char %s_ptx[] = ", name);
    c_bytes(f, p->ptx, (size_t)p->ptx_len);
    fprintf(f, ";\n");
    for (int i = 0; i < p->nkernels; i++) {
        fprintf(f, "static const char %s_k%d[] = ", name, i);
        c_bytes(f, p->kernels[i].name, strlen(p->kernels[i].name));
        fprintf(f, ";\n");
    }
    fprintf(f, "static const StrataGpuKernel %s_kernels[] = {", name);
    for (int i = 0; i < p->nkernels; i++)
        fprintf(f, "%s{%s_k%d},", i % 8 ? "" : "\n", name, i);
    fprintf(f, "{0}};\nstatic const StrataGpuLaunch %s_launches[] = {", name);
    for (int i = 0; i < p->nlaunches; i++) {
        const StrataGpuLaunch *l = &p->launches[i];
        fprintf(f, "\n{%d, %d, {", l->kernel, l->phase);
        for (int d = 0; d < 3; d++) {
            c_aff(f, l->grid[d]);
            fprintf(f, d < 2 ? ", " : "}, {");
        }
        fprintf(f, "%lldLL, %lldLL, %lldLL}, {%uu, %uu, %uu}, %uu, %d, %d, %d, %d, %d},", (long long)l->grid_div[0],
                (long long)l->grid_div[1], (long long)l->grid_div[2], l->block[0], l->block[1], l->block[2],
                l->shared_bytes, l->arg0, l->nargs, l->acc, l->node, l->block_index);
    }
    fprintf(f, "{0}};\nstatic const StrataGpuArg %s_args[] = {", name);
    for (int i = 0; i < p->nargs; i++) {
        const StrataGpuArg *a = &p->args[i];
        fprintf(f, "\n{%d, %d, ", a->kind, a->buf);
        c_aff(f, a->off);
        fprintf(f, ", ");
        c_aff(f, a->size);
        fprintf(f, ", %a, %d, %d},", a->f, a->writes, a->node);
    }
    fprintf(f, "{0}};\nstatic const StrataGpuParam %s_params[] = {", name);
    for (int i = 0; i < p->nparams; i++)
        fprintf(f, "\n{%lldLL, %lldLL, %d},", (long long)p->params[i].offset, (long long)p->params[i].numel,
                p->params[i].decay);
    fprintf(f, "{0}};\nstatic const StrataGpuTable %s_tables[] = {", name);
    for (int i = 0; i < p->ntables; i++) {
        fprintf(f, "\n{");
        c_aff(f, p->tables[i].off);
        fprintf(f, ", %lldLL, %a},", (long long)p->tables[i].hd, p->tables[i].base);
    }
    fprintf(f, "{{0, 0, 0, 0}, 0, 0}};\nstatic const float %s_consts[] = {", name);
    for (int i = 0; i < p->nconsts; i++)
        fprintf(f, "%af,", (double)p->consts[i]);
    fprintf(f, "0};\nconst StrataGpuProgram %s = {\n    %uu, %uu, \"%s\", %d, %s_ptx, %lldLL,\n", name, p->magic,
            p->version, p->target, p->precision, name, (long long)p->ptx_len);
    fprintf(f, "    %s_kernels, %d, %s_launches, %d, %s_args, %d, %s_params, %d, %lldLL, %lldLL,\n    ", name,
            p->nkernels, name, p->nlaunches, name, p->nargs, name, p->nparams, (long long)p->params_numel,
            (long long)p->vocab);
    c_aff(f, p->arena_bytes);
    fprintf(f, ", ");
    c_aff(f, p->loss_off);
    fprintf(f, ", ");
    c_aff(f, p->logits_off);
    fprintf(f, ",\n    %s_tables, %d, %s_consts, %d, %lldLL, ", name, p->ntables, name, p->nconsts,
            (long long)p->index_rows);
    c_aff(f, p->scratch_bytes);
    fprintf(f, ",\n};\n");
    if (fflush(f) || ferror(f)) {
        snprintf(err, errlen, "cannot write the GPU program's C source");
        return -1;
    }
    return 0;
}
