/* metrics.h - the per-step metrics file of a training run and loss-curve
 * plots of one or several runs.
 *
 * Format: JSON Lines, one object per line, append-only (a resumed run keeps
 * appending to the same file, after rt_metrics_trim cut it back to the
 * checkpoint's step).  Each row is one write(2), checked at once, so a
 * full disk stops the run at the row that did not fit, and a killed run
 * leaves at most a partial last line (which trim and the reader drop).
 * Training rows:
 *   {"step": S, "loss": L, "lr": X, "grad_norm": G, "tokens": N, "tokens_per_s": R, "elapsed_s": E}
 * (a run with --device cuda adds "device": "cuda:0" after "step")
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
    int fd;      /* opened O_APPEND */
    char *path;
    int error;   /* errno of the first failed write, 0 none */
    const char *device; /* "cuda:0": written in training rows; NULL (a CPU run): not written */
} RtMetrics;

/* Opens path for appending; -1 with a malloc'd message in *err. */
int rt_metrics_open(RtMetrics *m, const char *path, char **err);
/* Append a row; 0, or -1 with *err ("PATH: cannot write: No space left on
 * device") when it was not written whole (the first failure is kept in
 * m->error; later rows are not attempted). */
int rt_metrics_train(RtMetrics *m, int64_t step, double loss, double lr, double grad_norm, int64_t tokens,
                     double tokens_per_s, double elapsed_s, char **err);
int rt_metrics_val(RtMetrics *m, int64_t step, double val_loss, char **err);
/* Closes; -1 with a message if a write failed (disk full...). */
int rt_metrics_close(RtMetrics *m, char **err);
/* Cuts a JSON Lines log with "step" keys (metrics.jsonl,
 * diagnostics.jsonl) back to the rows of steps <= step, for a run resumed
 * from that step: later rows (logged after the checkpoint, before a kill),
 * a partial last line and lines that are not JSON (a row cut short and
 * glued to the next by an older resume) go; other lines stay.  Rewrites
 * the file atomically, only when something goes; a missing file is fine.
 * *dropped (if not NULL) gets the number of lines removed.  0, or -1 with
 * *err. */
int rt_metrics_trim(const char *path, int64_t step, int64_t *dropped, char **err);

typedef struct RtCurve {
    char *name;
    int64_t *step, *val_step;
    double *loss, *val_loss;
    int64_t n, nval;
} RtCurve;

/* Reads a metrics file; -1 with "FILE:LINE: what" in *err.  A last line
 * without its newline (a run killed while writing it) is skipped with a
 * note on stderr. */
int rt_curve_load(RtCurve *c, const char *path, char **err);
void rt_curve_free(RtCurve *c);
/* Draws the curves to `image` with gnuplot; -1 with a message in *err. */
int rt_plot_curves(const RtCurve *c, int n, const char *image, const char *title, char **err);
#endif
