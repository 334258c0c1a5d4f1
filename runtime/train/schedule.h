/* schedule.h - learning-rate schedules: rt_lr(s, step) is a pure function
 * of the schedule and the step, so a resumed run recomputes the same rate.
 *
 * Conventions.  Steps count from 0: step k is the (k+1)-th optimizer update,
 * and a run of `total` steps uses steps 0 .. total-1.  With W = warmup,
 * M = max_lr, m = min_ratio * M (the floor), T = total:
 *
 *   warmup, every kind, k < W:   lr = M (k + 1) / W
 *       (the first update already moves, step W-1 reaches M; as llm.c)
 *   after warmup, W <= k, with p = (k - W) / (T - W), clamped to [0, 1]
 *   (p = 1 if T <= W):
 *     RT_LR_CONSTANT  lr = M
 *     RT_LR_COSINE    lr = m + (M - m) (1 + cos(pi p)) / 2
 *     RT_LR_LINEAR    lr = m + (M - m) (1 - p)
 *     RT_LR_WSD       warmup-stable-decay: D = round(decay_frac T) decay
 *                     steps starting at S = max(W, T - D); for k < S lr = M;
 *                     for k >= S, q = (k - S) / (T - S) clamped to [0, 1]
 *                     (q = 1 if T <= S):
 *                       RT_WSD_LINEAR  lr = m + (M - m) (1 - q)
 *                       RT_WSD_SQRT    lr = m + (M - m) (1 - sqrt(q))
 *
 * So the decay starts at M on the first step after warmup and would reach
 * the floor m at step T, one past the last step (the last step, T-1, is
 * one decay step above it); any step >= T gets exactly m (except
 * CONSTANT, which stays at M).  W = 0 means no warmup. */
#ifndef STRATA_SCHEDULE_H
#define STRATA_SCHEDULE_H
#include <stdint.h>

typedef enum RtLrKind {
    RT_LR_CONSTANT,             /* warmup, then max_lr */
    RT_LR_COSINE,               /* warmup, then cosine to the floor */
    RT_LR_LINEAR,               /* warmup, then a straight line to the floor */
    RT_LR_WSD,                  /* warmup, constant, then decay in the last steps */
} RtLrKind;

typedef enum RtWsdShape {
    RT_WSD_LINEAR,              /* 1 - q */
    RT_WSD_SQRT,                /* 1 - sqrt(q) (Hagele et al. 2024) */
} RtWsdShape;

typedef struct RtLrSchedule {
    RtLrKind kind;
    double max_lr;              /* peak rate, M */
    double min_ratio;           /* floor m = min_ratio * max_lr, in [0, 1] */
    int64_t warmup;             /* warmup steps, W >= 0 */
    int64_t total;              /* steps in the run, T >= 1 */
    double decay_frac;          /* WSD: fraction of T spent decaying, in [0, 1] */
    RtWsdShape wsd_shape;       /* WSD: shape of the decay */
} RtLrSchedule;

/* The rate for step `step` (from 0); steps < 0 are treated as 0. */
double rt_lr(const RtLrSchedule *s, int64_t step);
/* NULL if the schedule is valid, else a message naming the bad field. */
const char *rt_lr_check(const RtLrSchedule *s);
/* "constant", "cosine", "linear", "wsd"; rt_lr_kind_parse returns 0 and
 * sets *kind for one of those names, -1 otherwise. */
const char *rt_lr_kind_name(RtLrKind kind);
int rt_lr_kind_parse(const char *name, RtLrKind *kind);
#endif
