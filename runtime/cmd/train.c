/* train.c - `TRAINER train`: its options (RT_TRAIN_OPTIONS, train.h)
 * parsed, then the training loop of runtime/train/train.c.  Entry point:
 * rt_cmd_train (commands.h). */
#include "cmd/commands.h"
#include "train/train.h"

int rt_cmd_train(const RtModel *m, const char *prog, int argc, char **argv)
{
    RtTrainOptions o;
    rt_train_defaults(&o);
    int rc = rt_parse_opts(prog, "train", rt_train_specs, RT_N_TRAIN_OPTS, &o, o.given, argc, argv);
    if (rc)
        return rc == 1 ? 0 : rc;
    return rt_train(m, &o, prog);
}
