/* optim.h - Adam and AdamW over one flat fp32 parameter buffer, as PyTorch's
 * torch.optim.Adam / torch.optim.AdamW (the single-tensor, non-amsgrad,
 * non-fused path), plus global gradient-norm clipping.
 *
 * One step, t = 1, 2, ... (RtAdamW.step after the increment), lr the rate
 * given to this step, wd the weight decay of the element's segment:
 *   AdamW: p = p (1 - lr wd)        decoupled, before the moments
 *   Adam:  g = g + wd p             L2, folded into the gradient
 *   m = b1 m + (1 - b1) g
 *   v = b2 v + (1 - b2) g^2
 *   p = p - (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 * Arithmetic per element is in float, operation by operation as torch
 * 1.13's CPU kernels (the scalars computed in double and rounded once):
 * built with FMA the results are bit-identical to torch's (1.13).  Without
 * FMA they differ by rounding (measured: about 1e-7 of each tensor's scale
 * after 10 steps), as they would from a torch that computes m with lerp.
 *
 * Weight-decay mask: the caller lists segments (offset, numel, decay) of
 * the parameter buffer (one per tensor, usually) and says which decay; the
 * rest (norm gains, biases, embeddings, scalars...) gets wd = 0 but is still
 * updated.  Segments must lie in [0, n) and not overlap; elements in no
 * segment are updated without decay.  segs = NULL: everything decays.
 *
 * State: m and v are n floats each, one contiguous buffer each, zero at
 * init; `step` counts the steps taken.  The optimizer owns them (init/free);
 * a checkpoint saves and restores m, v and step directly.
 *
 * Threads: the step and the norm take an optional RtPool (NULL: the calling
 * thread).  Both are cut into tiles fixed by n alone (pool.h): the update
 * into RT_STEP_TILE elements (each element computed at the same place in
 * the same loop, whatever the pool), the norm into blocks of RT_NORM_BLOCK
 * elements summed in block order, so both are the same with or without a
 * pool, for any pool size. */
#ifndef STRATA_OPTIM_H
#define STRATA_OPTIM_H
#include <stdint.h>

#include "core/pool.h"

/* Elements per block of the gradient-norm sum (see rt_grad_norm). */
#define RT_NORM_BLOCK 4096
/* Elements per pool tile of the update. */
#define RT_STEP_TILE 32768

typedef enum RtOptimKind {
    RT_OPTIM_ADAMW,             /* decoupled weight decay (torch.optim.AdamW) */
    RT_OPTIM_ADAM,              /* L2 penalty in the gradient (torch.optim.Adam) */
} RtOptimKind;

typedef struct RtSegment {
    int64_t offset;             /* first element, in floats from the buffer start */
    int64_t numel;              /* elements */
    int decay;                  /* nonzero: weight decay applies */
} RtSegment;

typedef struct RtAdamWConfig {
    RtOptimKind kind;
    double beta1;               /* first-moment decay, e.g. 0.9 */
    double beta2;               /* second-moment decay, e.g. 0.999 (0.95 for LLMs) */
    double eps;                 /* added to sqrt(v_hat), e.g. 1e-8 */
    double weight_decay;        /* for decaying segments, e.g. 0.01 (AdamW) or 0.1 */
} RtAdamWConfig;

typedef struct RtAdamW {
    RtAdamWConfig cfg;
    int64_t n;                  /* parameters (floats) */
    int64_t step;               /* steps taken; the next step uses t = step + 1 */
    float *m;                   /* (n) first moment */
    float *v;                   /* (n) second moment */
    RtSegment *decay;           /* (ndecay) the decaying ranges, sorted, merged */
    int ndecay;
} RtAdamW;

/* PyTorch's defaults for kind: betas (0.9, 0.999), eps 1e-8, weight decay
 * 0.01 for AdamW and 0 for Adam. */
RtAdamWConfig rt_adamw_defaults(RtOptimKind kind);
/* Zeroed state for n parameters with the decay mask segs[0..nsegs) (NULL:
 * all decay).  Returns 0, or -1 with a message on stderr (and nothing to
 * free) if a segment is out of [0, n) or overlaps another or a
 * hyperparameter is out of range (betas in [0, 1), eps and wd >= 0).
 * Out of memory exits (3). */
int rt_adamw_init(RtAdamW *o, int64_t n, const RtSegment *segs, int nsegs, RtAdamWConfig cfg);
void rt_adamw_free(RtAdamW *o);
/* One step: updates params (n) in place from grads (n) with rate lr;
 * increments o->step first.  pool may be NULL. */
void rt_adamw_step(RtAdamW *o, float *params, const float *grads, double lr, RtPool *pool);
/* The same step on the gradients times gscale, each product rounded to
 * float before the update uses it: with gscale = rt_clip_factor(...) the
 * result is bit for bit rt_clip_grads then rt_adamw_step, in one threaded
 * pass instead of two (gscale 1 is the plain step).  grads is not written
 * (the clipped values exist only in registers). */
void rt_adamw_step_scaled(RtAdamW *o, float *params, const float *grads, float gscale, double lr, RtPool *pool);

/* sqrt(sum g[i]^2) in double: squares summed within each block of
 * RT_NORM_BLOCK elements (8 interleaved partial sums, added in order), the
 * block sums added in block order.  NaN or inf if a gradient is. */
double rt_grad_norm(const float *g, int64_t n);
/* The same number, computed by the pool's threads. */
double rt_grad_norm_pool(const float *g, int64_t n, RtPool *pool);

/* The same number again, with most block sums taken while the train step
 * ran (model_abi.h StrataStep.grad_sumsq), so that the update is the one
 * pass over the moments and parameters that still reads the gradients:
 * each parameter's gradient is summed right after the kernel that
 * finishes it, while it is still in cache, instead of in a pass of its own
 * over 4 bytes a parameter from memory.  sums has rt_grad_norm_blocks(n)
 * entries, one per block of RT_NORM_BLOCK elements of the flat buffer.
 *   rt_grad_sumsq_blocks  (called by the generated train step) the sums of
 *                         the blocks that lie wholly inside g's parameter,
 *                         g[0..numel) at element g - grads of the buffer;
 *   rt_grad_norm_finish   after the step: computes the blocks that no one
 *                         parameter holds (those that straddle two, or hold
 *                         the buffer's short last block) from g, then adds
 *                         all block sums in order.
 * The result is bit for bit rt_grad_norm's.  params: the parameters' first
 * elements and sizes (nparams of them, any order; `decay` unread: the
 * segments rt_adamw_init takes), the same that the step saw, not
 * overlapping.  rt_grad_sumsq_blocks's pool may be NULL. */
int64_t rt_grad_norm_blocks(int64_t n);
void rt_grad_sumsq_blocks(RtPool *pool, const float *grads, const float *g, int64_t numel, double *sums);
double rt_grad_norm_finish(const float *grads, int64_t n, const RtSegment *params, int nparams, const double *sums);
/* The same number for a gradient summed piece by piece, as the all-reduce
 * of data-parallel training does (collective.h, rt_comm_allreduce_sum_f32_each):
 *   rt_grad_sumsq_piece  the sums of the blocks wholly inside
 *                        grads[at, at + len), each such block's done[b]
 *                        set to 1 (sums and done: rt_grad_norm_blocks(n)
 *                        entries, zeroed by the caller);
 *   rt_grad_norm_done    the blocks whose done[b] is 0 from grads, then all
 *                        block sums added in order: bit for bit rt_grad_norm.
 * done is a double so that the ranks' sums and marks travel in one fp64
 * all-reduce (each block is some one rank's: x + 0 is x). */
void rt_grad_sumsq_piece(RtPool *pool, const float *grads, int64_t at, int64_t len, double *sums, double *done);
double rt_grad_norm_done(const float *grads, int64_t n, const double *sums, const double *done);
/* Clips to a global norm as torch.nn.utils.clip_grad_norm_: with
 * c = max_norm / (norm + 1e-6), computed in float as torch does
 * ((1 / (norm + 1e-6)) max_norm, each operation rounded to float), multiplies
 * every g[i] by c if c < 1; otherwise leaves g alone.  norm is rt_grad_norm's result (the norm
 * before clipping, which the caller logs); a norm that is NaN or inf
 * leaves g alone too (the caller should skip the step).  Returns the
 * factor applied (1 when none). */
double rt_clip_grads(float *g, int64_t n, double max_norm, double norm);
/* The factor rt_clip_grads(g, n, max_norm, norm) multiplies by, without
 * touching any gradient: c < 1, or 1 when there is nothing to clip (or the
 * norm is NaN or inf).  For rt_adamw_step_scaled. */
float rt_clip_factor(double max_norm, double norm);
#endif
