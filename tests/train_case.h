/* train_case.h - what the trainer tests share (train_test.c,
 * sft_train_test.c, analyze_test.c): models/pre_ln.strata JIT-compiled at
 * tiny sizes into tc_model, rt_trainer_main run with its stdout and stderr
 * in files of the temporary directory, token shards, checkpoint tensors
 * compared, metrics read back, and the definitions of log-softmax and
 * argmax.  Entry points: tc_open at the start, tc_close at the end.
 * Memory: tc_open/tc_close own the JIT, the IR and tc_model; buffers the
 * other functions return are the caller's to free. */
#ifndef STRATA_TRAIN_CASE_H
#define STRATA_TRAIN_CASE_H
#include "test_util.h"
#include "trainer.h"

#include <stdbool.h>
#include <stdint.h>

extern RtModel tc_model;    /* the compiled model, after tc_open */
extern bool tc_echo_stderr; /* tc_run prints err.txt when a command fails */

/* Creates the JIT, compiles models/pre_ln.strata (under $srcdir) with the
 * `defines` into tc_model (its source the file's text, its config
 * config_json) and makes the directory $TMPDIR/NAME.XXXXXX.  0 on
 * success; 77 (after "SKIP: no JIT: ...") when there is no JIT; 1 when
 * compiling or the directory fails, with the reason printed. */
int tc_open(const char *name, const char **defines, int ndefines, const char *config_json);

/* tu_finish(name), then frees what tc_open made; the exit status. */
int tc_close(const char *name);

/* rt_trainer_main(&tc_model, "trainer", args...) with args ending in NULL,
 * stdout and stderr sent to tu_dir/out.txt and err.txt; the exit status. */
int tc_run(const char *first, ...);

/* Whether the file tu_dir/name contains text; if not, prints the file. */
bool tc_file_has(const char *name, const char *text);

/* Writes the shard tu_dir/name of n tokens tok(i, ctx), i = 0, 1, ... in
 * order; a failure is printed and counted. */
void tc_write_shard(const char *name, int64_t n, int32_t (*tok)(int64_t i, void *ctx), void *ctx);

/* The weights (params_numel floats) of checkpoint ckpt; zeros after a
 * counted failure when it cannot be read. */
float *tc_weights(const char *ckpt);

/* Largest |a - b| over the tensors PREFIX+NAME for the model's parameters
 * in checkpoints fa and fb (prefix "" for the weights, "optim.m." and
 * "optim.v." for the moments), the largest |a| in *scale, and whether all
 * bytes are equal; -1 when a file or tensor is missing. */
double tc_tensor_diff(const char *fa, const char *fb, const char *prefix, double *scale, bool *bytes_equal);

/* Whether those tensors of fa and fb hold the same bytes. */
bool tc_same_tensors(const char *fa, const char *fb, const char *prefix);

/* The "loss" of the first row and the last "val_loss" of a metrics file;
 * NAN when absent.  The number of lines of a file, -1 when unreadable. */
double tc_first_loss(const char *metrics);
double tc_last_val_loss(const char *metrics);
int tc_count_lines(const char *path);

/* An arena for a B x T step of tc_model, 64-byte aligned; its size in
 * *bytes. */
void *tc_arena(int64_t B, int64_t T, int64_t *bytes);

/* log softmax(row)[target] over nv logits, in double: the definition.
 * The first index of the largest logit. */
double tc_logp(const float *row, int nv, int target);
int tc_argmax(const float *row, int nv);
#endif
