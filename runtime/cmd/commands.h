/* commands.h - the commands of the runtime, one file each in runtime/cmd,
 * on top of the library (runtime/core, store, data, train), which never
 * calls them:
 *   a trainer's (rt_trainer_main, trainer.c, dispatches; argv[1] is the
 *   command, options follow): train.c, eval.c, sample.c, analyze.c, sft.c
 *   (fine-tuning on JSONL records through train's loop), evaltask.c
 *   (multiple-choice and exact-match task accuracy);
 *   strata's data preparation (called by compiler/driver/main.c; argv[0] is
 *   the command word): data.c (`strata data`: text or JSONL files -> llm.c
 *   token shards with a train/validation split), tokenizer.c (`strata
 *   tokenizer train|encode|decode|info|export`).
 * Each returns the process exit status: 0 ok, 1 bad input (data,
 * checkpoint, config, a NaN loss), 2 usage, 3 out of memory or an internal
 * error; and frees everything it made. */
#ifndef STRATA_COMMANDS_H
#define STRATA_COMMANDS_H
#include "data/tokenizer.h"
#include "model.h"
#include "train/options.h"

int rt_cmd_train(const RtModel *m, const char *prog, int argc, char **argv);
int rt_cmd_eval(const RtModel *m, const char *prog, int argc, char **argv);
int rt_cmd_sample(const RtModel *m, const char *prog, int argc, char **argv);
int rt_analyze_main(const RtModel *m, const char *prog, int argc, char **argv);
int rt_sft_main(const RtModel *m, const char *prog, int argc, char **argv);
int rt_evaltask_main(const RtModel *m, const char *prog, int argc, char **argv);
int rt_cmd_grads(const RtModel *m, const char *prog, int argc, char **argv);

int rt_data_main(int argc, char **argv);
int rt_tokenizer_main(int argc, char **argv);

/* The tokenizer chosen by --tokenizer FILE, --bytes or --gpt2 DIR (DIR
 * holds encoder.json and vocab.bpe); exactly one of the three must be
 * given (bytes nonzero counts as given).  NULL with *err (malloc'd). */
RtTokenizer *rt_cli_tokenizer(const char *file, int bytes, const char *gpt2_dir, char **err);
#endif
