/* trainer.h - the trainer command line, shared by every way a model runs:
 * a standalone trainer executable (`strata build MODEL -o TRAINER`, whose
 * generated main calls rt_trainer_main with the linked-in model) and the
 * JIT (`strata train MODEL ...`, which compiles the model in process and
 * calls rt_trainer_main with the JIT's entry points).  Same code, same
 * flags, same checkpoints either way.
 *
 * argv[0] is the program name for messages, argv[1] the command (train,
 * eval, sample, ...), the rest its options; `rt_trainer_main(m, 2,
 * {"x", "--help"})` lists them.  Returns the process exit status:
 * 0 ok, 1 bad input (data, checkpoint, config, a NaN loss), 2 usage,
 * 3 out of memory or an internal error. */
#ifndef STRATA_TRAINER_H
#define STRATA_TRAINER_H
#include "model.h"

int rt_trainer_main(const RtModel *m, int argc, char **argv);
#endif
