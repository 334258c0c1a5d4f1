/* schedule.c - learning-rate schedules (schedule.h has the formulas). */
#include "train/schedule.h"

#include <math.h>
#include <string.h>

/* Kind names, in RtLrKind order. */
static const char *const kind_names[] = {"constant", "cosine", "linear", "wsd"};

static double clamp01(double x)
{
    return x < 0 ? 0 : x > 1 ? 1 : x;
}

/* Decay steps of WSD: round(decay_frac T). */
static int64_t wsd_decay_steps(const RtLrSchedule *s)
{
    return (int64_t)floor(s->decay_frac * (double)s->total + 0.5);
}

double rt_lr(const RtLrSchedule *s, int64_t step)
{
    double M = s->max_lr, m = s->min_ratio * s->max_lr;
    int64_t W = s->warmup, T = s->total, k = step < 0 ? 0 : step;
    if (k < W)
        return M * (double)(k + 1) / (double)W;
    double p = T > W ? clamp01((double)(k - W) / (double)(T - W)) : 1;
    switch (s->kind) {
    case RT_LR_CONSTANT:
        return M;
    case RT_LR_COSINE:
        return m + (M - m) * 0.5 * (1 + cos(M_PI * p));
    case RT_LR_LINEAR:
        return m + (M - m) * (1 - p);
    case RT_LR_WSD: {
        int64_t S = T - wsd_decay_steps(s);
        S = S < W ? W : S;
        if (k < S)
            return M;
        double q = T > S ? clamp01((double)(k - S) / (double)(T - S)) : 1;
        return m + (M - m) * (s->wsd_shape == RT_WSD_SQRT ? 1 - sqrt(q) : 1 - q);
    }
    }
    return M; /* not reached: every kind returns above */
}

const char *rt_lr_check(const RtLrSchedule *s)
{
    if ((unsigned)s->kind > RT_LR_WSD)
        return "unknown schedule kind";
    if (!(s->max_lr >= 0) || !isfinite(s->max_lr))
        return "max_lr must be a finite number >= 0";
    if (!(s->min_ratio >= 0 && s->min_ratio <= 1))
        return "min_ratio must be in [0, 1]";
    if (s->warmup < 0)
        return "warmup must be >= 0";
    if (s->total < 1)
        return "total steps must be >= 1";
    if (s->kind == RT_LR_WSD && !(s->decay_frac >= 0 && s->decay_frac <= 1))
        return "decay_frac must be in [0, 1]";
    if (s->kind == RT_LR_WSD && s->wsd_shape != RT_WSD_LINEAR && s->wsd_shape != RT_WSD_SQRT)
        return "unknown WSD decay shape";
    return NULL;
}

const char *rt_lr_kind_name(RtLrKind kind)
{
    return (unsigned)kind <= RT_LR_WSD ? kind_names[kind] : "?";
}

int rt_lr_kind_parse(const char *name, RtLrKind *kind)
{
    for (unsigned i = 0; i < sizeof kind_names / sizeof *kind_names; i++)
        if (strcmp(name, kind_names[i]) == 0) {
            *kind = (RtLrKind)i;
            return 0;
        }
    return -1;
}
