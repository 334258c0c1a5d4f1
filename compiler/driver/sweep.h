/* sweep.h - `strata sweep`: train several models or -D variants on the same
 * data, seed and schedule, analyze each final checkpoint, and write one
 * report (issue #6).
 *
 *   strata sweep --out DIR --models A.strata[,B.strata...] [-D NAME=VALUE]...
 *                [--preset NAME] [--vary NAME=V1,V2,...]... [--seeds S1,S2,...]
 *                [--batches N] [--task FILE.jsonl] [--title TEXT] -- TRAIN_OPTIONS...
 *
 * Variants: every model times every combination of the --vary values, run
 * one after the other, each JIT-compiled and trained in process with the
 * same TRAIN_OPTIONS (drv_run_trainer, driver/train.h) into DIR/RUN, where
 * RUN is the model's file name without .strata plus "_NAMEVALUE" per --vary
 * (pre_ln_L24); then `analyze` of DIR/RUN/checkpoint.safetensors on the
 * --val shards (else --data) into DIR/RUN/analyze.  DIR/report.md has the
 * table (parameters, training time, final validation loss and perplexity,
 * variance growth, the largest layer-removal drop), and the pictures of all
 * runs together: loss.png, variance_growth.png, angular_next.png,
 * removal_drop.png; DIR/summary.csv the table.  A run that fails is marked
 * in the report and the sweep goes on; the exit status is then 1.
 *
 * Seeds: --seeds trains every variant once per seed (train's --seed, so
 * the init and the data order change) into DIR/RUN_seedS.  The report then
 * adds, per variant, the mean, sample standard deviation and [min, max]
 * over the seeds of every figure (also DIR/variants.csv), and for every
 * pair of variants each figure's difference of means with 2 standard
 * errors, SE = sqrt(sd_a^2/n_a + sd_b^2/n_b): a difference within 2 SE is
 * reported as within the seed noise. */
#ifndef STRATA_SWEEP_H
#define STRATA_SWEEP_H

/* argv: the arguments after "sweep".  Returns the exit status (0 ok, 1 a
 * run failed or a file could not be written, 2 usage). */
int sweep_main(int argc, char **argv);
#endif
