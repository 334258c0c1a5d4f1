/* metrics.h - the per-step metrics file of a training run and loss-curve
 * plots of one or several runs.
 *
 * Format: JSON Lines, one object per line, append-only (a resumed run keeps
 * appending to the same file).  Training rows:
 *   {"step": S, "loss": L, "lr": X, "grad_norm": G, "tokens": N, "tokens_per_s": R, "elapsed_s": E}
 * Validation rows (every N steps and at the end):
 *   {"step": S, "val_loss": L, "val_ppl": P}
 * Other keys may appear; readers ignore what they do not know.
 *
 * Plots go through gnuplot (Debian gnuplot-nox): .png (pngcairo) or .svg by
 * the output's extension; one training curve and one validation curve per
 * run, labelled with the run's name (the metrics file's directory name, or
 * its file name when that is just "."). */
#ifndef STRATA_METRICS_H
#define STRATA_METRICS_H
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef struct RtMetrics {
    FILE *f;
    char *path;
} RtMetrics;

/* Opens path for appending; -1 with a malloc'd message in *err. */
int rt_metrics_open(RtMetrics *m, const char *path, char **err);
void rt_metrics_train(RtMetrics *m, int64_t step, double loss, double lr, double grad_norm, int64_t tokens,
                      double tokens_per_s, double elapsed_s);
void rt_metrics_val(RtMetrics *m, int64_t step, double val_loss);
/* Flushes; -1 with a message if a write failed (disk full...). */
int rt_metrics_close(RtMetrics *m, char **err);

typedef struct RtCurve {
    char *name;
    int64_t *step, *val_step;
    double *loss, *val_loss;
    int64_t n, nval;
} RtCurve;

/* Reads a metrics file; -1 with "FILE:LINE: what" in *err. */
int rt_curve_load(RtCurve *c, const char *path, char **err);
void rt_curve_free(RtCurve *c);
/* Draws the curves to `image` with gnuplot; -1 with a message in *err. */
int rt_plot_curves(const RtCurve *c, int n, const char *image, const char *title, char **err);
#endif
