/* trainer.c - rt_trainer_main (trainer.h): the command line of a trainer,
 * one command per file of runtime/cmd (commands.h): train, eval, sample,
 * analyze, sft, evaltask.  `train` and `sft` start the job's communicator
 * (collective.h: MPI under mpirun, else one process) and finalize it; the
 * other commands run in one process and refuse a multi-rank launch. */
#include "trainer.h"

#include "cmd/commands.h"
#include "train/collective.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %s COMMAND [options]   (%s COMMAND --help for its options)\n"
            "commands:\n"
            "  train    train the model on token shards, checkpointing to OUT/checkpoint.safetensors\n"
            "  eval     loss and perplexity of a checkpoint on token shards\n"
            "  sample   generate text from a checkpoint\n"
            "  analyze  depth diagnostics of a checkpoint: variance, angular distance, layer removal\n"
            "  sft      fine-tune a checkpoint on prompt/response JSONL records (response-only loss)\n"
            "  evaltask multiple-choice or exact-match accuracy of a checkpoint on a JSONL task\n"
            "  grads    loss and gradients of one batch, on the CPU or a GPU, as safetensors\n",
            prog, prog);
}

int rt_trainer_main(const RtModel *m, int argc, char **argv)
{
    const char *prog = argc > 0 && argv[0] ? argv[0] : "trainer";
    const char *slash = strrchr(prog, '/');
    if (slash)
        prog = slash + 1;
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout, prog);
        return argc < 2 ? 2 : 0;
    }
    if (!m || !m->desc || m->desc->magic != STRATA_MODEL_MAGIC || m->desc->abi_version != STRATA_ABI_VERSION) {
        fprintf(stderr, "%s: internal error: no model, or not model ABI v%d\n", prog, STRATA_ABI_VERSION);
        return 3;
    }
    if (!strcmp(argv[1], "train") || !strcmp(argv[1], "sft")) { /* data-parallel under mpirun */
        RtComm *c = rt_comm_init(&argc, &argv);
        int rc = !strcmp(argv[1], "train") ? rt_cmd_train(m, prog, argc, argv) : rt_sft_main(m, prog, argc, argv);
        rt_comm_finalize(c);
        return rc;
    }
    int ranks = 0;
    if (rt_comm_launched(&ranks) && ranks > 1) {
        fprintf(stderr, "%s: %s runs in one process, not under an MPI launcher with %d ranks (only train and sft "
                "are data-parallel)\n", prog, argv[1], ranks);
        return 2;
    }
    if (!strcmp(argv[1], "eval"))
        return rt_cmd_eval(m, prog, argc, argv);
    if (!strcmp(argv[1], "sample"))
        return rt_cmd_sample(m, prog, argc, argv);
    if (!strcmp(argv[1], "analyze"))
        return rt_analyze_main(m, prog, argc, argv);
    if (!strcmp(argv[1], "evaltask"))
        return rt_evaltask_main(m, prog, argc, argv);
    if (!strcmp(argv[1], "grads"))
        return rt_cmd_grads(m, prog, argc, argv);
    fprintf(stderr, "%s: unknown command '%s' (train, eval, sample, sft, evaltask, grads; %s --help)\n", prog, argv[1],
            prog);
    return 2;
}
