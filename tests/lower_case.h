/* lower_case.h - what the tests of compiled models share (lower_test.c,
 * abi_test.c): a model at a tiny size with random parameters and batches,
 * its fp64 interpreter run (compiler/ir/interp.c, the reference), and one
 * call of a JIT-compiled entry point through model ABI v4 with the
 * results converted to double.  Memory: case_* and result_free pair up. */
#ifndef STRATA_LOWER_CASE_H
#define STRATA_LOWER_CASE_H
#include "ir/ad.h"
#include "front/ast.h"
#include "ir/fuse.h"
#include "ir/interp.h"
#include "ir/pipeline.h"
#include "ir/remat.h"
#include "lower/jit.h"
#include "core/pool.h"
#include "resolve/sema.h"

typedef struct Case {
    IrGraph g;
    Program prog;
    double **params;         /* params[p->index], values exact in float */
    int B, T;
    int32_t *tokens, *targets;
    double *mask;            /* (B*T), a third zeros */
    Interp ref;              /* the interpreter's run of this batch */
} Case;

/* A model whose blocks are of several kinds (ir/kinds.h): attention blocks
 * for l <= 3, feed-forward blocks after them, a parameter shared by every
 * block (whose gradient sums over them, so the first and last blocks
 * differ from the rest), the embedding read by every block, numbers that
 * differ per block (1/sqrt(l), 1 + l), and a value the logits do not need. */
extern const char kinds_zoo[];
/* Every elementwise op and reduction the model files leave out, a scalar
 * parameter used twice, matmul with W [in, out] (tests/lower_test.c). */
extern const char ops_zoo[];

/* The file `path`, or the source `text` under that name, at the sizes
 * `sizes` (NULL: gradcheck's tiny ones, "L=4" included), through
 * autodiff, the rematerialisation case_remat names (remat.h: pointwise,
 * the default of strata, unless a test sets IR_REMAT_BLOCKS, plain
 * strata --remat, or IR_REMAT_NONE) and fusion. */
extern IrRemat case_remat;
/* LowerOptions.head_div and head_cap of case_compile: 0, the default
 * chunks (ir/memplan.h MemHead: one chunk at the tiny sizes), else a test's. */
extern int64_t case_head_div, case_head_cap;
bool case_load(Case *c, const char *path, const char *text, const char *const *sizes, int nsizes);
void case_params(Case *c, uint64_t seed);
/* A random batch (token ids within every embedding, targets within the
 * logits, a third of the positions masked) and the interpreter's run. */
bool case_batch(Case *c, uint64_t seed, int B, int T);
void case_free_batch(Case *c);
void case_free(Case *c);

/* Compiles c in one precision; false with a message on stderr. */
bool case_compile(Jit *jit, const Case *c, LowerPrecision prec, JitModel *m);
bool case_compile_with(Jit *jit, const Case *c, const LowerOptions *o, JitModel *m);

typedef struct RunOpts {
    RtPool *pool;
    const uint8_t *skip;
    bool capture;            /* pass a capture buffer */
    bool logits_out;         /* forward: logits to a buffer of the caller, not the arena */
    bool arena_logits;       /* train step: leave the logits in the arena, where their gradient
                                overwrites them (memplan.c), so r->logits is that gradient;
                                without it a train step writes them to a buffer of the caller */
    bool forward;            /* strata_forward instead of strata_train_step */
    bool no_mask;            /* mask NULL */
    int accumulate;
    int precision;           /* StrataStep.precision */
    const struct Result *grads_from; /* preload the gradient buffer (accumulate) */
    bool norm;               /* a train step of a float model: pass grad_sumsq (NaN-filled) and
                                fill Result's norm fields */
} RunOpts;

typedef struct Result {
    int status;              /* the entry point's StrataStatus */
    double loss;
    double *logits;          /* (B*T, vocab) */
    double **grads;          /* per parameter */
    double *capture;         /* (nblocks + 1, B*T, width) */
    int64_t arena_bytes;
    /* RunOpts.norm: rt_grad_norm_finish of the step's block sums and
     * rt_grad_norm_pool of its gradient buffer (runtime/train/optim.h), the
     * block sums the step wrote and those it should have (the blocks wholly
     * inside one parameter). */
    double norm_fused, norm_pass;
    int64_t sums_written, sums_inside;
} Result;

/* One call; buffers the code must write start as NaN. */
int case_run(const Case *c, const JitModel *m, const RunOpts *o, Result *r);
void result_free(const Case *c, Result *r);

/* strata_decode over c's batch: positions [0, prompt) in one call, then
 * `step` per call, with a KV cache of kv_len >= T positions that starts as
 * NaN; the logits of every position into *logits ((B*T, vocab), malloc'd).
 * Returns the first status that is not STRATA_OK, else STRATA_OK. */
int case_decode(const Case *c, const JitModel *m, RtPool *pool, int prompt, int step, int64_t kv_len,
                double **logits);

/* max |got - ref| / max |ref| (max |got - ref| if ref is all zeros); NaN
 * counts as Inf. */
double tensor_error(const double *got, const double *ref, int64_t n);
#endif
