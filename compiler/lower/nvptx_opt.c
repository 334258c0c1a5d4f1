/* nvptx_opt.c - the optimizer's GPU kernels (runtime/gpu/plan.h lists
 * them): the gradient norm as a two-stage sum of squares in double with a
 * fixed order (so the same on every run), and AdamW element by element
 * with the FMAs of runtime/train/optim.c. */
#include "lower/nvptx.h"

#include <string.h>

static LLVMValueRef intrinsic_f(Cg *cg, const char *name, LLVMTypeRef t, LLVMValueRef *args, unsigned n)
{
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    if (!id)
        die("lower: no intrinsic %s", name);
    LLVMValueRef fn = LLVMGetIntrinsicDeclaration(cg->mod, id, &t, 1);
    return LLVMBuildCall2(cg->b, LLVMIntrinsicGetType(cg->ctx, id, &t, 1), fn, args, n, "");
}

static LLVMValueRef fma3(Cg *cg, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c)
{
    return intrinsic_f(cg, "llvm.fma", cg->real, (LLVMValueRef[]){a, b, c}, 3);
}

static LLVMValueRef gid(Gpu *x)
{
    Cg *cg = &x->cg;
    return LLVMBuildAdd(cg->b, LLVMBuildMul(cg->b, gpu_sreg(x, "ctaid.x"), gpu_sreg(x, "ntid.x"), ""),
                        gpu_sreg(x, "tid.x"), "");
}

static void sumsq(Gpu *x)
{
    Cg *cg = &x->cg;
    LLVMTypeRef t[] = {cg->ptr, cg->i64, cg->ptr};
    gpu_begin(x, "strata_sumsq", t, 3);
    LLVMValueRef g = gpu_param(x, 0), n = gpu_param(x, 1), part = gpu_param(x, 2);
    LLVMValueRef scratch = gpu_shared(x, cg->f64, GPU_ROW_THREADS, "red64");
    LLVMValueRef s = cg_alloca(cg, cg->f64, "s");
    LLVMBuildStore(cg->b, LLVMConstReal(cg->f64, 0), s);
    LLVMValueRef step = cg_i64(cg, (int64_t)STRATA_GPU_NORM_BLOCKS * STRATA_GPU_NORM_THREADS);
    Loop l = gpu_loop_begin(x, gid(x), n, step, "i");
    LLVMValueRef v = LLVMBuildFPExt(cg->b, cg_load(cg, cg_elem(cg, g, l.i)), cg->f64, "");
    LLVMBuildStore(cg->b, LLVMBuildFAdd(cg->b, LLVMBuildLoad2(cg->b, cg->f64, s, ""), LLVMBuildFMul(cg->b, v, v, ""), ""),
                   s);
    gpu_loop_end(x, &l, step);
    LLVMValueRef tot = gpu_block_reduce(x, LLVMBuildLoad2(cg->b, cg->f64, s, ""), NULL, scratch);
    LLVMValueRef blk = gpu_sreg(x, "ctaid.x");
    LLVMBasicBlockRef join = cg_if(cg, LLVMBuildICmp(cg->b, LLVMIntEQ, gpu_sreg(x, "tid.x"), cg_i64(cg, 0), ""), "st");
    LLVMBuildStore(cg->b, tot, LLVMBuildGEP2(cg->b, cg->f64, part, &blk, 1, ""));
    cg_endif(cg, join);
    gpu_end(x);

    LLVMTypeRef t2[] = {cg->ptr, cg->ptr};
    gpu_begin(x, "strata_sumsq_final", t2, 2);
    LLVMValueRef acc = cg_alloca(cg, cg->f64, "s");
    LLVMBuildStore(cg->b, LLVMConstReal(cg->f64, 0), acc);
    Loop lp = cg_loop_begin(cg, cg_i64(cg, 0), cg_i64(cg, STRATA_GPU_NORM_BLOCKS), NULL, "b");
    LLVMValueRef pv = LLVMBuildLoad2(cg->b, cg->f64, LLVMBuildGEP2(cg->b, cg->f64, gpu_param(x, 0), &lp.i, 1, ""), "");
    LLVMBuildStore(cg->b, LLVMBuildFAdd(cg->b, LLVMBuildLoad2(cg->b, cg->f64, acc, ""), pv, ""), acc);
    cg_loop_end(cg, &lp, NULL);
    LLVMValueRef sum = LLVMBuildLoad2(cg->b, cg->f64, acc, "");
    LLVMBuildStore(cg->b, intrinsic_f(cg, "llvm.sqrt", cg->f64, &sum, 1), gpu_param(x, 1));
    gpu_end(x);
}

static void adamw(Gpu *x)
{
    Cg *cg = &x->cg;
    LLVMTypeRef t[14] = {cg->ptr, cg->ptr, cg->ptr, cg->ptr, cg->i64};
    for (int i = 5; i < 14; i++)
        t[i] = cg->real;
    gpu_begin(x, "strata_adamw", t, 14);
    LLVMValueRef p = gpu_param(x, 0), g = gpu_param(x, 1), m = gpu_param(x, 2), v = gpu_param(x, 3),
                 n = gpu_param(x, 4), gs = gpu_param(x, 5), b1 = gpu_param(x, 6), omb1 = gpu_param(x, 7),
                 b2 = gpu_param(x, 8), omb2 = gpu_param(x, 9), eps = gpu_param(x, 10), bc2 = gpu_param(x, 11),
                 nss = gpu_param(x, 12), factor = gpu_param(x, 13);
    LLVMValueRef i = gid(x);
    LLVMBasicBlockRef join = cg_if(cg, LLVMBuildICmp(cg->b, LLVMIntSLT, i, n, ""), "in");
    LLVMValueRef pp = cg_elem(cg, p, i), mp = cg_elem(cg, m, i), vp = cg_elem(cg, v, i);
    LLVMBuilderRef b = cg->b;
    LLVMValueRef pi = LLVMBuildFMul(b, cg_load(cg, pp), factor, "");
    LLVMValueRef gi = LLVMBuildFMul(b, cg_load(cg, cg_elem(cg, g, i)), gs, "");
    LLVMValueRef mi = fma3(cg, gi, omb1, LLVMBuildFMul(b, cg_load(cg, mp), b1, ""));
    LLVMValueRef vi = fma3(cg, LLVMBuildFMul(b, omb2, gi, ""), gi, LLVMBuildFMul(b, cg_load(cg, vp), b2, ""));
    LLVMValueRef denom = LLVMBuildFAdd(b, LLVMBuildFDiv(b, intrinsic_f(cg, "llvm.sqrt", cg->real, &vi, 1), bc2, ""),
                                       eps, "");
    LLVMBuildStore(b, LLVMBuildFAdd(b, pi, LLVMBuildFDiv(b, LLVMBuildFMul(b, nss, mi, ""), denom, ""), ""), pp);
    LLVMBuildStore(b, mi, mp);
    LLVMBuildStore(b, vi, vp);
    cg_endif(cg, join);
    gpu_end(x);
}

void gpu_optimizer_kernels(Gpu *x)
{
    sumsq(x);
    adamw(x);
}
