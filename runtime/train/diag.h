/* diag.h - depth diagnostics during training (issue #6): the tracking of
 * `train --diag-every N`, and the plots of its file (which `analyze --diag`
 * draws too; the `analyze` command of a checkpoint is runtime/cmd/analyze.c,
 * the definitions are train/depth.h).
 *
 * Tracking (train.c calls these; all are no-ops when --diag-every is 0):
 *   every N steps, after the update of step s (s % N == 0), one JSON line in
 *   OUT/diagnostics.jsonl:
 *     {"step": s, "variance": [L+1], "angular_next": [L],
 *      "grad_norm": [L], "grad_norm_other": g, "update_ratio": [L],
 *      "update_ratio_other": u}
 *   variance: of the residual stream of one forward with capture on a fixed
 *   held-out batch (the first batch of --val, else of --data, in order);
 *   angular_next[l-1]: angular distance between the inputs of layers l and
 *   l+1 over all tokens of that batch; grad_norm: the L2 norm of the
 *   gradient (before clipping) of each block's parameters (StrataParam.block),
 *   "_other" the parameters outside blocks; update_ratio: ||w' - w|| / ||w||
 *   of the step's update per block.  At the end of the run the plots of
 *   rt_diag_plot go to OUT/diag_*.png.
 * Memory: RtDiag owns its buffers; rt_diag_free releases them. */
#ifndef STRATA_DIAG_H
#define STRATA_DIAG_H
#include <stdint.h>
#include <stdio.h>

#include "core/pool.h"
#include "model.h"

struct RtTrainOptions;

typedef struct RtDiag {
    int64_t every;        /* 0: off */
    const RtModel *m;
    const char *prog;
    FILE *f;              /* OUT/diagnostics.jsonl */
    char *path, *dir;     /* the file, OUT */
    int32_t *tok;         /* (B, T) the held-out batch */
    int64_t B, T;
    float *capture;       /* (L+1, B, T, width); NULL when width is 0 */
    float *before;        /* (params_numel) weights before the update of a diag step */
    double *gnorm;        /* (L+1) gradient norm per block, [L] outside blocks */
    int64_t grads_step;   /* the step gnorm and before belong to, -1 none */
} RtDiag;

/* Reads the held-out batch and opens the file (appending when o->resume).
 * Call after the options are resolved (seq, out).  0, or an exit status
 * after a message. */
int rt_diag_init(RtDiag *g, const RtModel *m, const struct RtTrainOptions *o, const char *prog);
/* Before the update of step `step` (1-based: the step count after it); the
 * gradient is scale * grads (the trainer folds --accum's scale into the
 * update). */
void rt_diag_grads(RtDiag *g, int64_t step, const float *params, const float *grads, double scale);
/* After that update: the forward with capture and the JSON line.  0, or -1
 * if the forward failed (message printed). */
int rt_diag_update(RtDiag *g, int64_t step, const float *params, RtPool *pool, void *arena, int64_t arena_bytes);
/* Closes the file, draws the plots (a warning if gnuplot fails), frees. */
void rt_diag_free(RtDiag *g);

/* Plots of a diagnostics file into DIR/diag_variance.png, diag_grad_norm.png
 * and diag_update_ratio.png (with their CSVs): one line per recorded step,
 * up to 8 steps spread over the run.  -1 with a malloc'd message in *err. */
int rt_diag_plot(const char *jsonl, const char *dir, char **err);
#endif
