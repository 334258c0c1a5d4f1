/* nvptx_gemm.c - the GPU's matrix products (nvptx.h): MATMUL and
 * MATMUL_GRAD_W as C (M, N) (+)= op(A) op(B), one kernel per pair of
 * transposes, in fp32 (64 x 64 tiles of C per CTA, 4 x 4 per thread in
 * registers) or, for a bf16 program, on tensor cores (mma.sync m16n8k16,
 * bf16 inputs rounded as the CPU's bf16 products, fp32 accumulation; in
 * the emulation through the hook strata_emu_mma). */
#include "lower/nvptx.h"

#include <string.h>

/* ---- matrix products ---- */

/* C (M, N) (+)= op(A) op(B) in fp32: a CTA of GPU_TILE x GPU_TILE threads
 * computes a GEMM_TILE x GEMM_TILE tile of C, each thread 4 x 4 elements
 * (rows ty + 16 i, columns tx + 16 j) in registers, over K in steps of 16
 * staged through shared memory ([k][m] and [k][n], loaded along the
 * operand's contiguous dimension); each element sums k in order.
 * (C, A, B, M, N, K, lda, ldb, ldc) */
#define GEMM_TILE 64
#define GEMM_K 16
static int gemm_kernel(Gpu *x, bool ta, bool tb)
{
    Cg *cg = &x->cg;
    char key[32];
    snprintf(key, sizeof key, "gemm_%c%c", ta ? 't' : 'n', tb ? 't' : 'n');
    int ki = gpu_find(x, key);
    if (ki >= 0)
        return ki;
    LLVMTypeRef t[] = {cg->ptr, cg->ptr, cg->ptr, cg->i64, cg->i64, cg->i64, cg->i64, cg->i64, cg->i64};
    ki = gpu_begin(x, key, t, 9);
    LLVMValueRef C = gpu_param(x, 0), A = gpu_param(x, 1), Bm = gpu_param(x, 2), M = gpu_param(x, 3),
                 N = gpu_param(x, 4), K = gpu_param(x, 5), lda = gpu_param(x, 6), ldb = gpu_param(x, 7),
                 ldc = gpu_param(x, 8);
    LLVMValueRef As = gpu_shared(x, cg->real, GEMM_TILE * GEMM_K, "As");
    LLVMValueRef Bs = gpu_shared(x, cg->real, GEMM_TILE * GEMM_K, "Bs");
    LLVMValueRef tx = gpu_sreg(x, "tid.x"), ty = gpu_sreg(x, "tid.y"), zero = cg_i64(cg, 0);
    LLVMValueRef lid = ADD(MUL(ty, cg_i64(cg, GPU_TILE)), tx);
    LLVMValueRef m0 = MUL(gpu_sreg(x, "ctaid.x"), cg_i64(cg, GEMM_TILE)), n0 = MUL(gpu_sreg(x, "ctaid.y"), cg_i64(cg, GEMM_TILE));
    LLVMValueRef acc = cg_alloca(cg, LLVMArrayType2(cg->real, 16), "acc");
    for (int i = 0; i < 16; i++)
        ST(cg_real(cg, 0), cg_elem(cg, acc, cg_i64(cg, i)));
    Loop l = gpu_loop_begin(x, zero, K, cg_i64(cg, GEMM_K), "k0");
    int per = GEMM_TILE * GEMM_K / (GPU_TILE * GPU_TILE);
    for (int e = 0; e < per; e++) {
        LLVMValueRef idx = ADD(lid, cg_i64(cg, e * GPU_TILE * GPU_TILE));
        /* A: (m, k), contiguous along k unless transposed */
        LLVMValueRef m = ta ? LLVMBuildURem(cg->b, idx, cg_i64(cg, GEMM_TILE), "") : LLVMBuildUDiv(cg->b, idx, cg_i64(cg, GEMM_K), "");
        LLVMValueRef k = ta ? LLVMBuildUDiv(cg->b, idx, cg_i64(cg, GEMM_TILE), "") : LLVMBuildURem(cg->b, idx, cg_i64(cg, GEMM_K), "");
        LLVMValueRef gm = ADD(m0, m), gk = ADD(l.i, k);
        LLVMValueRef in = LLVMBuildAnd(cg->b, LT(gm, M), LT(gk, K), "");
        LLVMValueRef ia = ta ? ADD(MUL(gk, lda), gm) : ADD(MUL(gm, lda), gk);
        LLVMValueRef va = LD(cg_elem(cg, A, LLVMBuildSelect(cg->b, in, ia, zero, "")));
        ST(LLVMBuildSelect(cg->b, in, va, cg_real(cg, 0), ""), cg_elem(cg, As, ADD(MUL(k, cg_i64(cg, GEMM_TILE)), m)));
        /* B: (k, n), contiguous along n unless transposed */
        LLVMValueRef n = tb ? LLVMBuildUDiv(cg->b, idx, cg_i64(cg, GEMM_K), "") : LLVMBuildURem(cg->b, idx, cg_i64(cg, GEMM_TILE), "");
        LLVMValueRef kb = tb ? LLVMBuildURem(cg->b, idx, cg_i64(cg, GEMM_K), "") : LLVMBuildUDiv(cg->b, idx, cg_i64(cg, GEMM_TILE), "");
        LLVMValueRef gn = ADD(n0, n), gkb = ADD(l.i, kb);
        LLVMValueRef inb = LLVMBuildAnd(cg->b, LT(gn, N), LT(gkb, K), "");
        LLVMValueRef ib = tb ? ADD(MUL(gn, ldb), gkb) : ADD(MUL(gkb, ldb), gn);
        LLVMValueRef vb = LD(cg_elem(cg, Bm, LLVMBuildSelect(cg->b, inb, ib, zero, "")));
        ST(LLVMBuildSelect(cg->b, inb, vb, cg_real(cg, 0), ""), cg_elem(cg, Bs, ADD(MUL(kb, cg_i64(cg, GEMM_TILE)), n)));
    }
    gpu_barrier(x);
    LLVMValueRef c[16];
    for (int i = 0; i < 16; i++)
        c[i] = LD(cg_elem(cg, acc, cg_i64(cg, i)));
    for (int kk = 0; kk < GEMM_K; kk++) {
        LLVMValueRef av[4], bv[4];
        for (int i = 0; i < 4; i++) {
            av[i] = LD(cg_elem(cg, As, ADD(ty, cg_i64(cg, kk * GEMM_TILE + 16 * i))));
            bv[i] = LD(cg_elem(cg, Bs, ADD(tx, cg_i64(cg, kk * GEMM_TILE + 16 * i))));
        }
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++)
                c[i * 4 + j] = FADD(c[i * 4 + j], FMUL(av[i], bv[j]));
    }
    for (int i = 0; i < 16; i++)
        ST(c[i], cg_elem(cg, acc, cg_i64(cg, i)));
    gpu_barrier(x);
    gpu_loop_end(x, &l, cg_i64(cg, GEMM_K));
    LLVMValueRef keep = LLVMBuildICmp(cg->b, LLVMIntNE, x->kacc, cg_i32(cg, 0), "");
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            LLVMValueRef row = ADD(ADD(m0, ty), cg_i64(cg, 16 * i)), col = ADD(ADD(n0, tx), cg_i64(cg, 16 * j));
            LLVMBasicBlockRef join = cg_if(cg, LLVMBuildAnd(cg->b, LT(row, M), LT(col, N), ""), "out");
            LLVMValueRef cp = cg_elem(cg, C, ADD(MUL(row, ldc), col));
            LLVMValueRef prev = LLVMBuildSelect(cg->b, keep, LD(cp), cg_real(cg, 0), "");
            ST(FADD(prev, LD(cg_elem(cg, acc, cg_i64(cg, i * 4 + j)))), cp);
            cg_endif(cg, join);
        }
    gpu_end(x);
    return ki;
}

/* ---- bf16 tensor cores: mma.sync m16n8k16, fp32 accumulation ---- */

#define BF_TILE 128  /* the CTA's tile of C: 128 x 128, eight warps (2 x 4) of 64 x 32 */
#define BF_K 32      /* K staged per step: two mma k-steps of 16 */
#define BF_THREADS 256
#define BF_MI 4      /* a warp's mma tiles: BF_MI (m16) x BF_NI (n8) */
#define BF_NI 4

/* fp32 -> bf16 bits (i32, low 16), nearest even, NaN kept quiet: the
 * rounding of runtime/core/gemm_kernels.c's bf16_bits. */
static LLVMValueRef to_bf16(Gpu *x, LLVMValueRef f)
{
    Cg *cg = &x->cg;
    LLVMValueRef u = LLVMBuildBitCast(cg->b, f, cg->i32, "");
    LLVMValueRef lsb = LLVMBuildAnd(cg->b, LLVMBuildLShr(cg->b, u, cg_i32(cg, 16), ""), cg_i32(cg, 1), "");
    LLVMValueRef r = LLVMBuildLShr(cg->b, ADD(ADD(u, cg_i32(cg, 0x7fff)), lsb), cg_i32(cg, 16), "");
    LLVMValueRef q = LLVMBuildOr(cg->b, LLVMBuildLShr(cg->b, u, cg_i32(cg, 16), ""), cg_i32(cg, 0x40), "");
    LLVMValueRef nan = LLVMBuildICmp(cg->b, LLVMIntUGT, LLVMBuildAnd(cg->b, u, cg_i32(cg, 0x7fffffff), ""),
                                     cg_i32(cg, 0x7f800000), "");
    return LLVMBuildSelect(cg->b, nan, q, r, "");
}

/* d[0..4) = mma(a[0..4), b[0..2), c[0..4)) of one lane (values). */
static void mma(Gpu *x, LLVMValueRef *a, LLVMValueRef *b, LLVMValueRef *c, LLVMValueRef *d)
{
    Cg *cg = &x->cg;
    if (x->emulate) { /* through the hook strata_emu_mma(a, b, c, d) */
        LLVMValueRef pa = cg_alloca(cg, LLVMArrayType2(cg->i32, 4), "ma"), pb = cg_alloca(cg, LLVMArrayType2(cg->i32, 2), "mb");
        LLVMValueRef pc = cg_alloca(cg, LLVMArrayType2(cg->real, 4), "mc"), pd = cg_alloca(cg, LLVMArrayType2(cg->real, 4), "md");
        for (int i = 0; i < 4; i++) {
            LLVMValueRef ix = cg_i64(cg, i);
            ST(a[i], LLVMBuildGEP2(cg->b, cg->i32, pa, &ix, 1, ""));
            ST(c[i], cg_elem(cg, pc, ix));
            if (i < 2)
                ST(b[i], LLVMBuildGEP2(cg->b, cg->i32, pb, &ix, 1, ""));
        }
        LLVMValueRef gv = LLVMGetNamedGlobal(cg->mod, "strata_emu_mma");
        if (!gv) {
            gv = LLVMAddGlobal(cg->mod, cg->ptr, "strata_emu_mma");
            LLVMSetInitializer(gv, LLVMConstNull(cg->ptr));
        }
        LLVMTypeRef pt[] = {cg->ptr, cg->ptr, cg->ptr, cg->ptr};
        LLVMValueRef args[] = {pa, pb, pc, pd};
        LLVMBuildCall2(cg->b, LLVMFunctionType(cg->voidt, pt, 4, false), LLVMBuildLoad2(cg->b, cg->ptr, gv, ""), args,
                       4, "");
        for (int i = 0; i < 4; i++)
            d[i] = LD(cg_elem(cg, pd, cg_i64(cg, i)));
        return;
    }
    const char *name = "llvm.nvvm.mma.m16n8k16.row.col.bf16";
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    if (!id)
        die("lower: no intrinsic %s", name);
    LLVMValueRef fn = LLVMGetIntrinsicDeclaration(cg->mod, id, NULL, 0);
    LLVMValueRef args[] = {a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], c[2], c[3]};
    LLVMValueRef r = LLVMBuildCall2(cg->b, LLVMIntrinsicGetType(cg->ctx, id, NULL, 0), fn, args, 10, "");
    for (int i = 0; i < 4; i++)
        d[i] = LLVMBuildExtractValue(cg->b, r, (unsigned)i, "");
}

/* C (M, N) (+)= op(A) op(B) with A and B rounded to bf16, on tensor cores.
 * A CTA of 8 warps computes a 128 x 128 tile of C, a warp 64 x 32 of it as
 * 4 x 4 mma tiles (m16 n8), over K in steps of 32 staged through shared
 * memory as bf16 (A as [m][k], B as [n][k], so each fragment register is
 * one 32-bit load; the global loads run along the operand's contiguous
 * dimension).  Fragment layouts: PTX ISA, "mma.m16n8k16" (.bf16):
 * with g = lane / 4, t = lane % 4, A regs {(g, 2t), (g+8, 2t), (g, 2t+8),
 * (g+8, 2t+8)} (two columns each), B regs {k 2t, k 2t+8} of column g, C
 * {(g, 2t..2t+1), (g+8, 2t..2t+1)}.  (C, A, B, M, N, K, lda, ldb, ldc) */
static int gemm_bf16_kernel(Gpu *x, bool ta, bool tb)
{
    Cg *cg = &x->cg;
    char key[32];
    snprintf(key, sizeof key, "gemm_bf16_%c%c", ta ? 't' : 'n', tb ? 't' : 'n');
    int ki = gpu_find(x, key);
    if (ki >= 0)
        return ki;
    LLVMTypeRef t[] = {cg->ptr, cg->ptr, cg->ptr, cg->i64, cg->i64, cg->i64, cg->i64, cg->i64, cg->i64};
    ki = gpu_begin(x, key, t, 9);
    LLVMValueRef C = gpu_param(x, 0), A = gpu_param(x, 1), Bm = gpu_param(x, 2), M = gpu_param(x, 3),
                 N = gpu_param(x, 4), K = gpu_param(x, 5), lda = gpu_param(x, 6), ldb = gpu_param(x, 7),
                 ldc = gpu_param(x, 8);
    LLVMTypeRef i16 = LLVMInt16TypeInContext(cg->ctx);
    LLVMValueRef As = gpu_shared(x, i16, BF_TILE * BF_K, "Ab"), Bs = gpu_shared(x, i16, BF_TILE * BF_K, "Bb");
    LLVMValueRef tid = gpu_sreg(x, "tid.x"), zero = cg_i64(cg, 0);
    LLVMValueRef m0 = MUL(gpu_sreg(x, "ctaid.x"), cg_i64(cg, BF_TILE)), n0 = MUL(gpu_sreg(x, "ctaid.y"), cg_i64(cg, BF_TILE));
    LLVMValueRef warp = LLVMBuildUDiv(cg->b, tid, cg_i64(cg, 32), ""), lane = LLVMBuildURem(cg->b, tid, cg_i64(cg, 32), "");
    LLVMValueRef wm = MUL(LLVMBuildUDiv(cg->b, warp, cg_i64(cg, 4), ""), cg_i64(cg, 16 * BF_MI));
    LLVMValueRef wn = MUL(LLVMBuildURem(cg->b, warp, cg_i64(cg, 4), ""), cg_i64(cg, 8 * BF_NI));
    LLVMValueRef g = LLVMBuildUDiv(cg->b, lane, cg_i64(cg, 4), ""), tq = LLVMBuildURem(cg->b, lane, cg_i64(cg, 4), "");
    LLVMValueRef t2 = MUL(tq, cg_i64(cg, 2));
    enum { NACC = BF_MI * BF_NI * 4 };
    LLVMValueRef acc = cg_alloca(cg, LLVMArrayType2(cg->real, NACC), "acc");
    for (int i = 0; i < NACC; i++)
        ST(cg_real(cg, 0), cg_elem(cg, acc, cg_i64(cg, i)));
    Loop l = gpu_loop_begin(x, zero, K, cg_i64(cg, BF_K), "k0");
    for (int j = 0; j < BF_TILE * BF_K / BF_THREADS; j++) { /* stage the tiles */
        LLVMValueRef idx = ADD(tid, cg_i64(cg, BF_THREADS * j));
        LLVMValueRef kq = cg_i64(cg, BF_K), tq2 = cg_i64(cg, BF_TILE);
        /* A (m, k): consecutive threads along k, or along m when transposed */
        LLVMValueRef r = ta ? LLVMBuildURem(cg->b, idx, tq2, "") : LLVMBuildUDiv(cg->b, idx, kq, "");
        LLVMValueRef kk = ta ? LLVMBuildUDiv(cg->b, idx, tq2, "") : LLVMBuildURem(cg->b, idx, kq, "");
        LLVMValueRef gk = ADD(l.i, kk), gm = ADD(m0, r);
        LLVMValueRef ina = LLVMBuildAnd(cg->b, LT(gm, M), LT(gk, K), "");
        LLVMValueRef ia = ta ? ADD(MUL(gk, lda), gm) : ADD(MUL(gm, lda), gk);
        LLVMValueRef va = LD(cg_elem(cg, A, LLVMBuildSelect(cg->b, ina, ia, zero, "")));
        va = LLVMBuildSelect(cg->b, ina, va, cg_real(cg, 0), "");
        LLVMValueRef ea = ADD(MUL(r, kq), kk);
        ST(LLVMBuildTrunc(cg->b, to_bf16(x, va), i16, ""), LLVMBuildGEP2(cg->b, i16, As, &ea, 1, ""));
        /* B (k, n): consecutive threads along n, or along k when transposed */
        LLVMValueRef nn = tb ? LLVMBuildUDiv(cg->b, idx, kq, "") : LLVMBuildURem(cg->b, idx, tq2, "");
        LLVMValueRef kb = tb ? LLVMBuildURem(cg->b, idx, kq, "") : LLVMBuildUDiv(cg->b, idx, tq2, "");
        LLVMValueRef gkb = ADD(l.i, kb), gn = ADD(n0, nn);
        LLVMValueRef inb = LLVMBuildAnd(cg->b, LT(gn, N), LT(gkb, K), "");
        LLVMValueRef ib = tb ? ADD(MUL(gn, ldb), gkb) : ADD(MUL(gkb, ldb), gn);
        LLVMValueRef vb = LD(cg_elem(cg, Bm, LLVMBuildSelect(cg->b, inb, ib, zero, "")));
        vb = LLVMBuildSelect(cg->b, inb, vb, cg_real(cg, 0), "");
        LLVMValueRef eb = ADD(MUL(nn, kq), kb);
        ST(LLVMBuildTrunc(cg->b, to_bf16(x, vb), i16, ""), LLVMBuildGEP2(cg->b, i16, Bs, &eb, 1, ""));
    }
    gpu_barrier(x);
    /* 32-bit loads of bf16 pairs: element e of a [BF_TILE][BF_K] i16 tile */
#define PAIR(base, e) LLVMBuildLoad2(cg->b, cg->i32, LLVMBuildGEP2(cg->b, i16, (base), (LLVMValueRef[]){(e)}, 1, ""), "")
    for (int ks = 0; ks < BF_K; ks += 16) {
        LLVMValueRef bfrag[BF_NI][2];
        for (int ni = 0; ni < BF_NI; ni++) {
            LLVMValueRef n = ADD(ADD(wn, cg_i64(cg, ni * 8)), g);
            LLVMValueRef e = ADD(ADD(MUL(n, cg_i64(cg, BF_K)), t2), cg_i64(cg, ks));
            bfrag[ni][0] = PAIR(Bs, e);
            bfrag[ni][1] = PAIR(Bs, ADD(e, cg_i64(cg, 8)));
        }
        for (int mi = 0; mi < BF_MI; mi++) {
            LLVMValueRef r0 = ADD(ADD(wm, cg_i64(cg, mi * 16)), g), r1 = ADD(r0, cg_i64(cg, 8));
            LLVMValueRef e0 = ADD(ADD(MUL(r0, cg_i64(cg, BF_K)), t2), cg_i64(cg, ks));
            LLVMValueRef e1 = ADD(ADD(MUL(r1, cg_i64(cg, BF_K)), t2), cg_i64(cg, ks));
            LLVMValueRef a[4] = {PAIR(As, e0), PAIR(As, e1), PAIR(As, ADD(e0, cg_i64(cg, 8))),
                                 PAIR(As, ADD(e1, cg_i64(cg, 8)))};
            for (int ni = 0; ni < BF_NI; ni++) {
                LLVMValueRef c[4], d[4];
                for (int i = 0; i < 4; i++)
                    c[i] = LD(cg_elem(cg, acc, cg_i64(cg, (mi * BF_NI + ni) * 4 + i)));
                mma(x, a, bfrag[ni], c, d);
                for (int i = 0; i < 4; i++)
                    ST(d[i], cg_elem(cg, acc, cg_i64(cg, (mi * BF_NI + ni) * 4 + i)));
            }
        }
    }
#undef PAIR
    gpu_barrier(x);
    gpu_loop_end(x, &l, cg_i64(cg, BF_K));
    LLVMValueRef keep = LLVMBuildICmp(cg->b, LLVMIntNE, x->kacc, cg_i32(cg, 0), "");
    for (int mi = 0; mi < BF_MI; mi++)
        for (int ni = 0; ni < BF_NI; ni++)
            for (int i = 0; i < 4; i++) {
                LLVMValueRef row = ADD(ADD(ADD(m0, wm), cg_i64(cg, mi * 16 + (i >= 2 ? 8 : 0))), g);
                LLVMValueRef col = ADD(ADD(ADD(n0, wn), cg_i64(cg, ni * 8 + (i & 1))), t2);
                LLVMBasicBlockRef join = cg_if(cg, LLVMBuildAnd(cg->b, LT(row, M), LT(col, N), ""), "out");
                LLVMValueRef cp = cg_elem(cg, C, ADD(MUL(row, ldc), col));
                LLVMValueRef prev = LLVMBuildSelect(cg->b, keep, LD(cp), cg_real(cg, 0), "");
                ST(FADD(prev, LD(cg_elem(cg, acc, cg_i64(cg, (mi * BF_NI + ni) * 4 + i)))), cp);
                cg_endif(cg, join);
            }
    gpu_end(x);
    return ki;
}

/* The launch: M rows (affine), N, K columns. */
static void gemm_launch(Gpu *x, const IrNode *n, bool ta, bool tb, StrataGpuAffine M, int64_t N, StrataGpuAffine K,
                        const IrNode *a, int64_t lda, const IrNode *b, int64_t ldb, int64_t ldc)
{
    int ki = x->bf16 ? gemm_bf16_kernel(x, ta, tb) : gemm_kernel(x, ta, tb);
    int64_t tile = x->bf16 ? BF_TILE : GEMM_TILE;
    StrataGpuLaunch *l = gpu_launch(x, ki, n->id, M, tile, x->bf16 ? BF_THREADS : GPU_TILE, x->bf16 ? 1 : GPU_TILE,
                                    x->ly->home[n->id]);
    l->grid[1] = gpu_aff(N, 0, 0);
    l->grid_div[1] = tile;
    gpu_arg_value(x, n, true);
    gpu_arg_value(x, a, false);
    gpu_arg_value(x, b, false);
    gpu_arg_i64(x, M);
    gpu_arg_i64(x, gpu_aff(N, 0, 0));
    gpu_arg_i64(x, K);
    gpu_arg_i64(x, gpu_aff(lda, 0, 0));
    gpu_arg_i64(x, gpu_aff(ldb, 0, 0));
    gpu_arg_i64(x, gpu_aff(ldc, 0, 0));
}

void gpu_matmul(Gpu *x, const IrNode *n)
{
    const IrNode *a = n->in[0], *w = n->in[1];
    int64_t K = a->width, N = n->width;
    if (w->tok || (n->trans_b ? w->width != K || w->rows != N : w->rows != K || w->width != N) ||
        a->tok != n->tok || (!a->tok && a->rows != n->rows))
        die("lower: %%%d: matmul shapes do not agree", n->id);
    gemm_launch(x, n, false, n->trans_b, gpu_rows_of(n), N, gpu_aff(K, 0, 0), a, K, w, n->trans_b ? K : N, N);
}

void gpu_matmul_grad_w(Gpu *x, const IrNode *n)
{
    const IrNode *a = n->in[0], *b = n->in[1];
    if (n->tok || n->rows != a->width || n->width != b->width || a->tok != b->tok || (!a->tok && a->rows != b->rows))
        die("lower: %%%d: matmul_grad_w result is not [wa, wb]", n->id);
    gemm_launch(x, n, true, false, gpu_aff(a->width, 0, 0), b->width, gpu_rows_of(a), a, a->width, b, b->width,
                b->width);
}
