/* commands.h - the commands of rt_trainer_main beyond train, eval and
 * sample: `sft` (sftcmd.c: fine-tuning on JSONL records through train's
 * loop) and `evaltask` (evalcmd.c: multiple-choice and exact-match task
 * accuracy); and the helpers of trainer.c they share.  Each command
 * returns the process exit status of trainer.h (0, 1 bad input, 2 usage,
 * 3 internal) and frees everything it made. */
#ifndef STRATA_COMMANDS_H
#define STRATA_COMMANDS_H
#include <jansson.h>
#include <stdbool.h>

#include "train.h"
#include "trainer.h"

/* argv[0] is the program, argv[1] the command, options follow. */
int rt_sft_main(const RtModel *m, const char *prog, int argc, char **argv);
int rt_evaltask_main(const RtModel *m, const char *prog, int argc, char **argv);

/* Parses argv[2..argc) into base by specs (given[i] marks what was set):
 * 0 ok, 1 --help shown, 2 usage error (message printed). */
int rt_parse_opts(const char *prog, const char *cmd, const RtOptSpec *specs, int n, void *base, bool *given,
                  int argc, char **argv);
/* A checkpoint's weights in a new 64-byte-aligned buffer (free it) and its
 * strata.state (NULL if none; json_decref it); NULL with a message. */
float *rt_load_weights(const RtModel *m, const char *prog, const char *path, json_t **state);
/* The config's "ctx", else 256. */
int64_t rt_default_seq(const RtModel *m);
#endif
