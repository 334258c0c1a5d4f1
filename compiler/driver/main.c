/* main.c - the `strata` command: argument parsing and the pass pipeline
 * (load -> parse -> resolve -> [autodiff] -> report or check); train, eval,
 * sample and building a trainer executable are in driver/train.c.
 * Exit codes: 0 success, 1 bad input (model file, -D, preset), 2 usage,
 * 3 out of memory or an internal error. */
#include "ir/pipeline.h"
#include "front/ast.h"
#include "cmd/commands.h"
#include "driver/train.h"
#include "driver/export.h"
#include "driver/import.h"
#include "ir/fuse.h"
#include "ir/memplan.h"
#include "train/metrics.h"
#include "ir/gradcheck.h"
#include "ir/ir.h"
#include "lower/lower.h"
#include "gpu/plan.h"
#include "driver/check.h"
#include "resolve/sema.h"
#include "driver/sweep.h"
#include "driver/tune.h"
#include "core/pool.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "dev"
#endif

static void usage(FILE *out)
{
    fprintf(out,
            "usage: strata COMMAND MODEL.strata [options]\n"
            "\n"
            "commands:\n"
            "  check       parse, check and resolve a model; print its per-layer plan,\n"
            "              parameter table, parameter count, FLOPs per token and memory\n"
            "  gradcheck   compare every parameter's autodiff gradient with central finite\n"
            "              differences, in fp64, on a tiny configuration of the model\n"
            "  export      write a checkpoint as a Hugging Face LLaMA directory:\n"
            "              strata export MODEL.strata --ckpt CKPT -o DIR [-D ...] [--preset NAME]\n"
            "              [--tokenizer FILE | --gpt2 DIR | --bytes] (also writes tokenizer.json)\n"
            "  import      read a Hugging Face LLaMA directory into a checkpoint of a model:\n"
            "              strata import HF_DIR -o CKPT MODEL.strata [-D ...] [--preset NAME]\n"
            "              (strata train|sft MODEL --init HF_DIR does it on the fly)\n"
            "  plot        draw the loss curves of one or several runs:\n"
            "              strata plot -o loss.png|loss.svg RUN/metrics.jsonl...\n"
            "  data        tokenize text or JSONL files into train/validation token shards:\n"
            "              strata data --tokenizer FILE|--bytes -o PREFIX FILE...\n"
            "  tokenizer   train|encode|decode|info|export (strata tokenizer --help):\n"
            "              strata tokenizer train --vocab N -o tok.json CORPUS...\n"
            "  build       compile the model into a standalone trainer executable that\n"
            "              needs no LLVM: strata build MODEL -o TRAINER [--cpu NAME]\n"
            "              (then TRAINER train|eval|sample ...); with --emit=llvm|asm|obj\n"
            "              [--f64] write the compiled training step alone; --device cuda\n"
            "              adds the model's GPU program (PTX and launch plan) to the trainer\n"
            "  train, eval, sample\n"
            "              JIT-compile the model (fp32) and run the trainer in process:\n"
            "              strata train MODEL.strata [-D ...] [--preset NAME] --data GLOB ...\n"
            "              (every option after the model but -D and --preset goes to the\n"
            "              trainer; strata train MODEL --help lists them; --quiet also\n"
            "              hides the compile-time line)\n"
            "  sft, evaltask\n"
            "              the same for fine-tuning on JSONL records (sft --init CKPT --data\n"
            "              FILE.jsonl) and task accuracy (evaltask --ckpt CKPT --task FILE\n"
            "              --kind mc|gen)\n"
            "  analyze     depth diagnostics of a checkpoint (variance, angular distance,\n"
            "              layer removal): strata analyze MODEL [-D ...] --ckpt CKPT --data GLOB\n"
            "  sweep       train several models or -D variants alike and report on them:\n"
            "              strata sweep --out DIR --models A,B [--vary L=12,24] [--seeds 1,2,3]\n"
            "              -- TRAIN_OPTS (--seeds: mean, spread and seed-noise verdicts)\n"
            "  tune        time every matrix-product backend on the model's products\n"
            "              (--batch, --seq) and cache the fastest for this CPU model:\n"
            "              strata tune MODEL [-D ...] [--batch B] [--seq T] [--precision P]\n"
            "              [--threads N]\n"
            "\n"
            "options:\n"
            "  -D NAME=VALUE    override a config constant (repeatable)\n"
            "  --preset NAME    set vocab, d, ffn, heads, L, rope to a published size:\n"
            "                  ");
    for (const char *const *p = sema_preset_names(); *p; p++)
        fprintf(out, " %s", *p);
    fprintf(out,
            "\n"
            "  --batch N        batch size (check: memory estimate, default 8;\n"
            "                   gradcheck: default 2)\n"
            "  --seq T          sequence length (check: default the config's ctx, else 256;\n"
            "                   gradcheck: default 5)\n"
            "  --dump=STAGE     print a stage instead: ast, ir, grad (IR with backward\n"
            "                   pass), fused (the kernels after fusion), memory (the\n"
            "                   buffer plan of a training step, fp32)\n"
            "  --samples K      gradcheck: elements checked per tensor (default 6)\n"
            "  --tol X          gradcheck: largest relative error accepted (default 1e-6)\n"
            "  --seed N         gradcheck: random parameters and batch (default 1)\n"
            "  --export FILE    gradcheck: write the point, loss and gradients as JSON\n"
            "  --emit=KIND      build: llvm (text IR), asm or obj (an object exporting\n"
            "                   strata_train_step, strata_forward, strata_decode and\n"
            "                   strata_model: model ABI v4, runtime/model_abi.h)\n"
            "  -o FILE          build: where to write it (the trainer, or with --emit the\n"
            "                   compiled step); the trainer is linked by the C compiler\n"
            "                   configure found ($STRATA_CC overrides) with libstrata_rt.a\n"
            "                   ($STRATA_RUNTIME_DIR overrides where it is looked for)\n"
            "  --cpu NAME       build: target CPU, e.g. x86-64-v3 (default: this host)\n"
            "  --remat[=MODE]   check, gradcheck, build (and train, sft): what the backward\n"
            "                   pass recomputes instead of keeping (activation\n"
            "                   checkpointing): pointwise (the default: norms' outputs,\n"
            "                   activations and gates), blocks (each block's forward values;\n"
            "                   plain --remat) or none; the same numbers whichever\n"
            "  --f64            build: double precision (default float)\n"
            "  --precision P    tune: fp32, bf16 or both (default both); build --device\n"
            "                   cuda: the GPU program's matrix products, fp32 or bf16\n"
            "  --device D       build: cpu (default) or cuda: the trainer also carries the\n"
            "                   model's GPU program (TRAINER train --device cuda); with\n"
            "                   --emit=ptx or --emit=plan: its kernels as PTX, or their\n"
            "                   launch plan as text\n"
            "  --cuda-arch A    build --device cuda: the GPU, sm_80 or sm_90 (default sm_90)\n"
            "  --threads N      tune: the pool to time the products on (default 0: all\n"
            "                   CPUs, as train's)\n"
            "  -h, --help       this text;  --version  the version\n"
            "\n"
            "gradcheck sets vocab=11 d=16 heads=2 ffn=24 L=4 ctx=5 where the config has\n"
            "them, before -D.  Exit status: 0 ok, 1 bad input or failed check, 2 usage,\n"
            "3 internal error.\n");
}

/* `strata COMMAND --help` for the commands whose own parsers have none
 * (data, tokenizer and sweep print theirs; `strata train MODEL --help`
 * prints the trainer's options).  docs/cli.md is generated from these. */
static const struct CommandHelp {
    const char *cmd;
    bool anywhere;     /* --help anywhere after the command, else first only */
    const char *text;
} command_help[] = {
    {"check", true,
     "usage: strata check MODEL.strata [-D NAME=VALUE]... [--preset NAME] [--batch N] [--seq T]\n"
     "                    [--remat[=MODE]] [--dump=ast|ir|grad|fused|memory]\n"
     "Parses, checks and resolves the model and prints its config, the per-block\n"
     "plan with every compile-time value substituted, the parameter table, the\n"
     "parameter count, FLOPs per token, a memory estimate for --batch N (default\n"
     "8) sequences of --seq T tokens (default the config's ctx, else 256), and the\n"
     "matrix products with the backend each gets on this host (runtime/core/gemm.h).\n"
     "  --dump=ast      the syntax tree\n"
     "  --dump=ir       the tensor IR of the forward pass\n"
     "  --dump=grad     the IR with the backward pass autodiff appends\n"
     "  --dump=fused    the kernels after fusion (* = written to memory)\n"
     "  --dump=memory   the buffer plan of a training step (fp32)\n"
     "  --remat[=MODE]  the memory estimate, fusion and plan of a step with that\n"
     "                  rematerialisation (strata train --remat[=MODE]): pointwise\n"
     "                  (the default), blocks (plain --remat) or none\n"
     "Exit status: 0 ok, 1 bad input (model file, -D, preset), 2 usage, 3 internal error.\n"},
    {"gradcheck", true,
     "usage: strata gradcheck MODEL.strata [-D NAME=VALUE]... [--batch N] [--seq T] [--samples K]\n"
     "                        [--tol X] [--seed N] [--export FILE] [--remat[=MODE]]\n"
     "Compares every parameter's autodiff gradient with central finite differences,\n"
     "in fp64 on the reference interpreter, at a tiny size: vocab=11 d=16 heads=2\n"
     "ffn=24 L=4 ctx=5 where the config has them (-D still wins).\n"
     "  --batch N       sequences in the random batch (2)\n"
     "  --seq T         tokens per sequence (5)\n"
     "  --samples K     elements checked per parameter tensor (6)\n"
     "  --tol X         largest relative error accepted (1e-6)\n"
     "  --seed N        random parameters and batch (1)\n"
     "  --export FILE   write the point, the loss and the gradients as JSON\n"
     "  --remat[=MODE]  check the graph of that rematerialisation: pointwise (the\n"
     "                  default), blocks (plain --remat) or none\n"
     "Exit status: 0 every gradient within --tol, 1 bad input or a failed check, 2 usage.\n"},
    {"build", true,
     "usage: strata build MODEL.strata -o TRAINER [-D NAME=VALUE]... [--preset NAME] [--cpu NAME]\n"
     "                    [--remat[=MODE]] [--device cuda [--cuda-arch sm_NN] [--precision fp32|bf16]]\n"
     "       strata build MODEL.strata --emit=llvm|asm|obj -o FILE [--f64] [-D NAME=VALUE]...\n"
     "                    [--preset NAME] [--cpu NAME]\n"
     "       strata build MODEL.strata --device cuda --emit=ptx|plan -o FILE\n"
     "                    [--cuda-arch sm_80|sm_90] [--precision fp32|bf16] [-D NAME=VALUE]...\n"
     "                    [--preset NAME]\n"
     "Compiles the model's training step (forward and backward) through LLVM.\n"
     "Without --emit: a standalone trainer executable that needs no LLVM (fp32),\n"
     "linked by the C compiler configure found ($STRATA_CC overrides) with\n"
     "libstrata_rt.a ($STRATA_RUNTIME_DIR overrides where it is looked for); then\n"
     "TRAINER train|eval|sample|sft|evaltask|analyze (TRAINER --help).\n"
     "  --emit=KIND     llvm (text IR), asm or obj: the compiled step alone, an\n"
     "                  object exporting strata_train_step, strata_forward,\n"
     "                  strata_decode and strata_model (model ABI v4,\n"
     "                  runtime/model_abi.h)\n"
     "  --f64           double precision (with --emit only; default float)\n"
     "  --cpu NAME      target CPU, e.g. x86-64-v3 (default: this host)\n"
     "  --remat[=MODE]  what the backward pass recomputes instead of keeping\n"
     "                  (activation checkpointing), the same numbers whichever:\n"
     "                  pointwise (the default) the elementwise values it reads\n"
     "                  (norms' outputs, activations, gates); blocks (plain --remat)\n"
     "                  each block's forward values, a fraction of the activation\n"
     "                  memory for about one more forward pass of the blocks; none\n"
     "  --emit=ptx|plan with --device cuda: the GPU program's kernels as PTX, or\n"
     "                  their launch plan as text (docs/gpu-lowering.md)\n"
     "  --device D      cpu (default) or cuda: with cuda the trainer also carries\n"
     "                  the model's GPU program, for TRAINER train|sft|eval|sample\n"
     "                  --device cuda on a machine with an NVIDIA GPU and driver\n"
     "                  (none is needed to build)\n"
     "  --cuda-arch A   with --device cuda: sm_80 or sm_90, the GPU (default sm_90)\n"
     "  --precision P   with --device cuda: fp32 (default) or bf16 matrix products\n"
     "                  of the GPU program (the trainer's --precision must match)\n"},
    {"export", true,
     "usage: strata export MODEL.strata --ckpt CKPT -o DIR [-D NAME=VALUE]... [--preset NAME]\n"
     "                     [--tokenizer FILE | --gpt2 DIR | --bytes]\n"
     "Writes the checkpoint as a Hugging Face LlamaForCausalLM directory\n"
     "(DIR/config.json, DIR/model.safetensors) with its tokenizer\n"
     "(DIR/tokenizer.json, DIR/tokenizer_config.json): --tokenizer FILE, --gpt2\n"
     "DIR or --bytes, else the one the checkpoint's run recorded, else raw bytes\n"
     "for a 256-token vocabulary.  Give the -D and --preset of the training run.\n"
     "The model must be LLaMA up to scales that fold into weights (pre_ln, lns,\n"
     "scaled_init, learned_depth_scale, layerscale, pre_ln_tied); others are\n"
     "refused with the first block that differs.\n"},
    {"import", true,
     "usage: strata import HF_DIR -o CKPT MODEL.strata [-D NAME=VALUE]... [--preset NAME]\n"
     "Reads a Hugging Face LLaMA directory (config.json, model.safetensors or the\n"
     "shards of model.safetensors.index.json; F32, BF16, F16 or F64) into a Strata\n"
     "checkpoint of the model, whose IR must be LLaMA up to scales (the structure\n"
     "strata export writes).  Every difference between config.json and the\n"
     "resolved model is listed with the -D that fixes it; grouped-query attention,\n"
     "rope scaling, biases, another activation or eps are refused.  Scales that\n"
     "export folds into weights are unfolded.  The directory's tokenizer.json is\n"
     "recorded in the checkpoint.  strata train|sft MODEL --init HF_DIR does the\n"
     "same on the fly.\n"},
    {"tune", true,
     "usage: strata tune MODEL.strata [-D NAME=VALUE]... [--preset NAME] [--batch N] [--seq T]\n"
     "                   [--precision fp32|bf16|both] [--threads N]\n"
     "Times every matrix-product backend of this build (strata's own kernels,\n"
     "OpenBLAS, oneDNN when configure found it) on each product of the model's\n"
     "training step for --batch N (8) x --seq T tokens, as the step runs them\n"
     "(split over a pool of --threads N, default all CPUs as train's; the\n"
     "backends in turn, best of 3 each), and caches the fastest per product\n"
     "for this CPU model in $XDG_CACHE_HOME/strata (~/.cache/strata;\n"
     "$STRATA_CACHE_DIR overrides); every later run on this host uses them\n"
     "(strata check shows which).  Tune with the thread count you train with.\n"
     "$STRATA_GEMM=NAME forces one backend instead.  --precision: which\n"
     "products to time (both).\n"},
    {"plot", true,
     "usage: strata plot -o IMAGE.png|IMAGE.svg [--title TEXT] METRICS.jsonl...\n"
     "Draws the training and validation loss curves of one or several runs\n"
     "(RUN/metrics.jsonl) with gnuplot, in one picture.\n"},
};

/* strata train|eval|... --help without a model: the trainer's options need
 * one, so say how to get them. */
static const char *const trainer_commands[] = {"train", "eval", "sample", "sft", "evaltask", "analyze", NULL};

static bool print_command_help(int argc, char **argv)
{
    for (size_t i = 0; i < sizeof command_help / sizeof *command_help; i++) {
        if (strcmp(argv[1], command_help[i].cmd))
            continue;
        for (int k = 2; k < argc && (k == 2 || command_help[i].anywhere); k++)
            if (!strcmp(argv[k], "--help") || !strcmp(argv[k], "-h")) {
                fputs(command_help[i].text, stdout);
                return true;
            }
    }
    for (int i = 0; trainer_commands[i]; i++)
        if (!strcmp(argv[1], trainer_commands[i]) && argc > 2 &&
            (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h"))) {
            bool trains = !strcmp(argv[1], "train") || !strcmp(argv[1], "sft");
            printf("usage: strata %s MODEL.strata [-D NAME=VALUE]... [--preset NAME]%s [--quiet] [OPTIONS]\n"
                   "JIT-compiles the model (fp32) and runs the trainer's `%s` in process;\n"
                   "every option after the model but -D%s goes to the trainer.\n"
                   "strata %s MODEL.strata --help lists OPTIONS, the same as a built\n"
                   "trainer's (strata build MODEL -o TRAINER; TRAINER %s --help).\n%s",
                   argv[1], trains ? " [--remat[=MODE]]" : "", argv[1],
                   trains ? ", --preset and --remat" : " and --preset", argv[1], argv[1],
                   trains ? "  --remat[=MODE]  what the backward pass recomputes instead of keeping\n"
                            "                  (activation checkpointing), the same numbers bit for\n"
                            "                  bit: pointwise (the default) the elementwise values it\n"
                            "                  reads (norms' outputs, activations, gates); blocks\n"
                            "                  (plain --remat) each block's forward values, a fraction\n"
                            "                  of the activation memory for about one more forward pass\n"
                            "                  of the blocks; none\n"
                          : "");
            return true;
        }
    return false;
}

typedef struct Args {
    const char *model, *dump;
    SemaOptions opt;
    int64_t batch, seq, samples, seed, threads;
    double tol;
    const char *export_path;
    const char *emit, *output, *cpu, *precision;
    const char *device, *cuda_arch; /* build --device cuda [--cuda-arch sm_NN] */
    bool f64;
    IrRemat remat;
} Args;

static bool parse_count(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < 1 || v > (1LL << 32))
        return false;
    *out = v;
    return true;
}

/* Returns 0 on success, else the exit status for a usage error. */
static int parse_args(int argc, char **argv, Args *a, const char **defines)
{
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        const char *val = NULL;
        static const char *const with_value[] = {"-D", "--preset", "--batch", "--seq", "--samples", "--tol",
                                                 "--seed", "--export", "-o", "--cpu", "--precision", "--device",
                                                 "--cuda-arch", "--threads", NULL};
        for (int k = 0; with_value[k]; k++)
            if (!strcmp(s, with_value[k])) {
                if (i + 1 >= argc) {
                    fprintf(stderr, "strata: error: %s needs a value\n", s);
                    return 2;
                }
                val = argv[++i];
            }
        if (!strcmp(s, "-D")) {
            defines[a->opt.ndefines++] = val;
        } else if (!strncmp(s, "-D", 2)) {
            defines[a->opt.ndefines++] = s + 2;
        } else if (!strcmp(s, "--preset")) {
            a->opt.preset = val;
        } else if (!strcmp(s, "--batch") || !strcmp(s, "--seq") || !strcmp(s, "--samples") ||
                   !strcmp(s, "--seed")) {
            int64_t *dst = !strcmp(s, "--batch") ? &a->batch : !strcmp(s, "--seq") ? &a->seq
                         : !strcmp(s, "--samples") ? &a->samples : &a->seed;
            if (!parse_count(val, dst)) {
                fprintf(stderr, "strata: error: %s expects a positive whole number, got '%s'\n", s, val);
                return 2;
            }
        } else if (!strcmp(s, "--threads")) {
            char *end;
            long long x = strtoll(val, &end, 10);
            if (end == val || *end || x < 0 || x > RT_POOL_MAX_THREADS) {
                fprintf(stderr, "strata: error: --threads: give 0 (all CPUs) up to %d, got '%s'\n",
                        RT_POOL_MAX_THREADS, val);
                return 2;
            }
            a->threads = x;
        } else if (!strcmp(s, "--export")) {
            a->export_path = val;
        } else if (!strcmp(s, "-o")) {
            a->output = val;
        } else if (!strcmp(s, "--cpu")) {
            a->cpu = val;
        } else if (!strcmp(s, "--device")) {
            a->device = val;
            if (strcmp(val, "cpu") && strcmp(val, "cuda")) {
                fprintf(stderr, "strata: error: --device expects cpu or cuda, got '%s'\n", val);
                return 2;
            }
        } else if (!strcmp(s, "--cuda-arch")) {
            a->cuda_arch = val;
            char *end;
            long sm = strncmp(val, "sm_", 3) ? 0 : strtol(val + 3, &end, 10);
            if (sm != 80 && sm != 90) {
                fprintf(stderr, "strata: error: --cuda-arch expects sm_80 or sm_90, got '%s'\n", val);
                return 2;
            }
        } else if (!strcmp(s, "--precision")) {
            a->precision = val;
            if (strcmp(val, "fp32") && strcmp(val, "bf16") && strcmp(val, "both")) {
                fprintf(stderr, "strata: error: --precision expects fp32, bf16 or both, got '%s'\n", val);
                return 2;
            }
        } else if (!strcmp(s, "--remat")) {
            a->remat = IR_REMAT_BLOCKS;
        } else if (!strncmp(s, "--remat=", 8)) {
            if (!ir_remat_parse(s + 8, &a->remat)) {
                fprintf(stderr, "strata: error: --remat expects none, pointwise or blocks, got '%s'\n", s + 8);
                return 2;
            }
        } else if (!strcmp(s, "--f64")) {
            a->f64 = true;
        } else if (!strncmp(s, "--emit=", 7)) {
            a->emit = s + 7;
            if (strcmp(a->emit, "llvm") && strcmp(a->emit, "asm") && strcmp(a->emit, "obj") &&
                strcmp(a->emit, "ptx") && strcmp(a->emit, "plan")) {
                fprintf(stderr, "strata: error: --emit expects llvm, asm, obj, ptx or plan, got '%s'\n", a->emit);
                return 2;
            }
        } else if (!strcmp(s, "--tol")) {
            char *end;
            a->tol = strtod(val, &end);
            if (*end || !(a->tol > 0)) {
                fprintf(stderr, "strata: error: --tol expects a positive number, got '%s'\n", val);
                return 2;
            }
        } else if (!strncmp(s, "--dump=", 7)) {
            a->dump = s + 7;
            if (strcmp(a->dump, "ast") && strcmp(a->dump, "ir") && strcmp(a->dump, "grad") &&
                strcmp(a->dump, "fused") && strcmp(a->dump, "memory")) {
                fprintf(stderr, "strata: error: --dump expects ast, ir, grad, fused or memory, got '%s'\n",
                        a->dump);
                return 2;
            }
        } else if (s[0] == '-' && s[1]) {
            fprintf(stderr, "strata: error: unknown option '%s' (see strata --help)\n", s);
            return 2;
        } else if (a->model) {
            fprintf(stderr, "strata: error: more than one model file given ('%s' and '%s')\n", a->model, s);
            return 2;
        } else {
            a->model = s;
        }
    }
    if (!a->model) {
        fprintf(stderr, "strata: error: no model file given\n");
        usage(stderr);
        return 2;
    }
    a->opt.defines = defines;
    return 0;
}

static const char *tiny_defaults[] = {"vocab=11", "d=16", "heads=2", "ffn=24", "L=4", "ctx=5"};

/* strata build: lower the training step and write it out, or link a
 * trainer executable around it. */
/* strata build --device cuda --emit=ptx|plan: the GPU lowering's PTX or
 * its launch plan as text (compiler/lower/nvptx.c). */
static bool build_gpu(const IrGraph *g, const Args *a)
{
    StrataGpuProgram *p = NULL;
    char err[1024];
    LowerGpuOptions go = {.sm = a->cuda_arch && !strcmp(a->cuda_arch, "sm_80") ? 80 : 90,
                          .precision = a->precision && !strcmp(a->precision, "bf16") ? STRATA_PRECISION_BF16
                                                                                      : STRATA_PRECISION_FP32};
    if (lower_gpu_program(g, &go, &p, err, sizeof err) != 0) {
        fprintf(stderr, "strata: error: --device cuda: %s\n", err);
        return false;
    }
    FILE *f = fopen(a->output, "w");
    bool ok = f != NULL;
    if (f) {
        if (!strcmp(a->emit, "ptx"))
            fwrite(p->ptx, 1, (size_t)p->ptx_len, f);
        else
            lower_gpu_plan_dump(f, p);
        ok = !ferror(f);
        ok = fclose(f) == 0 && ok;
    }
    if (!ok)
        fprintf(stderr, "strata: error: cannot write %s: %s\n", a->output, strerror(errno));
    lower_gpu_program_free(p);
    return ok;
}

static bool build(const IrGraph *g, const Args *a, const char *source, const DrvIdent *id)
{
    const bool cuda = a->device && !strcmp(a->device, "cuda");
    if (a->emit && (!strcmp(a->emit, "ptx") || !strcmp(a->emit, "plan")))
        return build_gpu(g, a);
    if (!a->emit)
        return drv_build_trainer(g, &(DrvBuild){.model = a->model, .source = source, .ident = id, .cpu = a->cpu,
                                                .output = a->output, .cuda = cuda,
                                                .cuda_sm = a->cuda_arch ? atoi(a->cuda_arch + 3) : 90,
                                                .gpu_bf16 = a->precision && !strcmp(a->precision, "bf16")});
    LowerOptions lo = {.precision = a->f64 ? LOWER_F64 : LOWER_F32, .cpu = a->cpu, .opt_level = 2};
    char *err = NULL;
    LowerModule *m = lower_module(g, &lo, &err);
    if (!m) {
        fprintf(stderr, "strata: error: %s\n", err ? err : "cannot set up the LLVM target");
        free(err);
        return false;
    }
    LowerEmitKind kind = !strcmp(a->emit, "llvm") ? LOWER_EMIT_LLVM : !strcmp(a->emit, "asm") ? LOWER_EMIT_ASM
                                                                                         : LOWER_EMIT_OBJ;
    bool ok = lower_emit(m, kind, a->output, &err);
    if (!ok) {
        fprintf(stderr, "strata: error: cannot write %s: %s\n", a->output, err ? err : "?");
        free(err);
    }
    lower_module_free(m);
    return ok;
}

static int run(const char *cmd, int argc, char **argv)
{
    bool grad = !strcmp(cmd, "gradcheck");
    bool is_build = !strcmp(cmd, "build");
    Args a = {.batch = grad ? 2 : 8, .samples = 6, .seed = 1, .tol = 1e-6, .threads = -1};
    const char **defines = xcalloc((size_t)argc + 1, sizeof *defines);
    int rc = parse_args(argc, argv, &a, defines);
    if (rc) {
        free(defines);
        return rc;
    }
    if (is_build && (!a.output || (a.f64 && !a.emit))) {
        fprintf(stderr, "strata: error: %s\n",
                a.output ? "--f64 needs --emit=llvm|asm|obj: a trainer executable is fp32"
                         : "build needs -o FILE: strata build MODEL -o TRAINER for a trainer executable, "
                           "or --emit=llvm|asm|obj -o FILE for the compiled training step alone");
        free(defines);
        return 2;
    }
    /* --device is build's; the GPU program's flags go with --device cuda. */
    const bool cuda = a.device && !strcmp(a.device, "cuda");
    char bad[160] = "";
    if (a.threads >= 0 && strcmp(cmd, "tune"))
        snprintf(bad, sizeof bad, "--threads goes with tune here (train, sft, eval... take their own)");
    else if (a.device && !is_build)
        snprintf(bad, sizeof bad, "--device goes with build here (for training: strata train|sft|eval|sample MODEL "
                                  "--device cuda ...)");
    else if (is_build && !cuda && (a.cuda_arch || a.precision))
        snprintf(bad, sizeof bad, "%s goes with --device cuda", a.cuda_arch ? "--cuda-arch" : "--precision");
    else if (cuda && a.precision && !strcmp(a.precision, "both"))
        snprintf(bad, sizeof bad, "build --device cuda: --precision expects fp32 or bf16");
    else if (is_build && !cuda && a.emit && (!strcmp(a.emit, "ptx") || !strcmp(a.emit, "plan")))
        snprintf(bad, sizeof bad, "--emit=ptx and --emit=plan need --device cuda");
    else if (cuda && a.f64)
        snprintf(bad, sizeof bad, "--device cuda is fp32 (or --precision bf16): drop --f64");
    else if (cuda && a.emit && (!strcmp(a.emit, "llvm") || !strcmp(a.emit, "asm") || !strcmp(a.emit, "obj")))
        snprintf(bad, sizeof bad, "--emit=%s writes the CPU's compiled step; it does not go with --device cuda",
                 a.emit);
    if (bad[0]) {
        fprintf(stderr, "strata: error: %s\n", bad);
        free(defines);
        return 2;
    }
    if (grad) {
        a.opt.soft = tiny_defaults;
        a.opt.nsoft = (int)(sizeof tiny_defaults / sizeof *tiny_defaults);
        if (!a.seq)
            a.seq = 5;
    }
    Diag d;
    diag_init(&d, stderr);
    const char *why = NULL;
    SrcFile *src = src_read(a.model, &why);
    if (!src) {
        fprintf(stderr, "strata: error: cannot read %s: %s\n", a.model, why);
        free(defines);
        return 1;
    }
    Program prog = {0};
    IrGraph g;
    ir_init(&g);
    g.model_name = a.model;
    const char *source = src->text; /* owned by prog after ast_load */
    bool ok = ast_load(&prog, &d, src);
    if (ok && a.dump && !strcmp(a.dump, "ast")) {
        ast_dump(stdout, prog.items);
        goto out;
    }
    if (ok)
        ok = sema_resolve(&prog, &a.opt, &d, &g);
    if (ok && !grad)
        ok = drv_check_ctx(&g);
    if (!ok)
        goto out;
    DrvIdent id = {0};
    if (is_build)
        drv_ident_make(&id, &prog, &a.opt, &g); /* of the forward graph, before autodiff */
    if (!a.seq) {
        a.seq = 256;
        for (int i = 0; i < g.config.n; i++) {
            IrConfig *c = g.config.v[i];
            if (!strcmp(c->name, "ctx") && c->value >= 1 && c->value < 1e9)
                a.seq = (int64_t)c->value;
        }
    }
    bool train_graph = !a.dump || strcmp(a.dump, "ir");
    MemPlan mp = {0};
    if (train_graph) {
        const char *what;
        if (!ir_train_graph(&g, a.remat, stderr, &what))
            die("%s built an invalid graph", what);
        memplan_build(&mp, &g, a.batch, a.seq, 4, MEMPLAN_HEAD_DIV);
    }
    if (is_build) {
        ok = build(&g, &a, source, &id);
    } else if (a.dump && !strcmp(a.dump, "fused")) {
        fuse_dump(stdout, &g);
    } else if (a.dump && !strcmp(a.dump, "memory")) {
        memplan_dump(stdout, &mp, &g);
    } else if (a.dump) {
        ir_dump(stdout, &g);
    } else if (!strcmp(cmd, "tune")) {
        const char *pr = a.precision ? a.precision : "both";
        ok = tune_run(stdout, &g, a.batch, a.seq, strcmp(pr, "bf16") != 0, strcmp(pr, "fp32") != 0, 3,
                      a.threads > 0 ? (int)a.threads : 0) == 0;
    } else if (grad) {
        printf("gradcheck %s: fp64 reference interpreter, batch %lld x %lld tokens\n", a.model,
               (long long)a.batch, (long long)a.seq);
        for (int i = 0; i < g.config.n; i++) {
            IrConfig *c = g.config.v[i];
            printf("%s%s=%g", i ? " " : "config: ", c->name, c->value);
        }
        printf("\n");
        GradcheckOptions go = {(int)a.batch, (int)a.seq, (int)a.samples, a.tol, (uint64_t)a.seed, a.export_path};
        ok = gradcheck_run(&g, &go, stdout);
    } else {
        report_print(stdout, &g, &mp, a.batch, a.seq);
        tune_report(stdout, &g, a.batch, a.seq);
    }
    memplan_free(&mp);
    drv_ident_free(&id);
out:
    diag_finish(&d);
    ir_free(&g);
    ast_program_free(&prog);
    free(defines);
    return ok ? 0 : 1;
}

/* strata plot -o IMAGE [--title T] METRICS... */
static int cmd_plot(int argc, char **argv)
{
    const char *image = NULL, *title = "loss";
    const char **files = xcalloc((size_t)argc + 1, sizeof *files);
    int n = 0;
    for (int i = 0; i < argc; i++) {
        if ((!strcmp(argv[i], "-o") || !strcmp(argv[i], "--title")) && i + 1 < argc) {
            if (argv[i][1] == 'o')
                image = argv[++i];
            else
                title = argv[++i];
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "strata: error: plot: unknown option '%s'\n", argv[i]);
            free(files);
            return 2;
        } else {
            files[n++] = argv[i];
        }
    }
    if (!image || n == 0) {
        fprintf(stderr, "strata: error: usage: strata plot -o IMAGE.png|.svg [--title T] METRICS.jsonl...\n");
        free(files);
        return 2;
    }
    RtCurve *c = xcalloc((size_t)n, sizeof *c);
    char *err = NULL;
    int loaded = 0;
    while (loaded < n && rt_curve_load(&c[loaded], files[loaded], &err) == 0)
        loaded++;
    int rc = loaded < n;
    if (rc == 0 && rt_plot_curves(c, n, image, title, &err))
        rc = 1;
    if (rc)
        fprintf(stderr, "strata: error: %s\n", err ? err : "plot failed");
    else
        printf("wrote %s\n", image);
    for (int i = 0; i < loaded; i++)
        rt_curve_free(&c[i]);
    free(c);
    free(err);
    free(files);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("strata %s\n", PACKAGE_VERSION);
        return 0;
    }
    if (print_command_help(argc, argv))
        return 0;
    if (!strcmp(argv[1], "plot"))
        return cmd_plot(argc - 2, argv + 2);
    if (!strcmp(argv[1], "export"))
        return export_main(argc - 2, argv + 2);
    if (!strcmp(argv[1], "import"))
        return import_main(argc - 2, argv + 2);
    if (!strcmp(argv[1], "data"))
        return rt_data_main(argc - 1, argv + 1);
    if (!strcmp(argv[1], "tokenizer"))
        return rt_tokenizer_main(argc - 2, argv + 2);
    if (!strcmp(argv[1], "check") || !strcmp(argv[1], "gradcheck") || !strcmp(argv[1], "build") ||
        !strcmp(argv[1], "tune"))
        return run(argv[1], argc - 2, argv + 2);
    if (!strcmp(argv[1], "train") || !strcmp(argv[1], "eval") || !strcmp(argv[1], "sample"))
        return drv_run_trainer(argv[1], argc - 2, argv + 2);
    if (!strcmp(argv[1], "sft") || !strcmp(argv[1], "evaltask")) /* fine-tuning, task accuracy */
        return drv_run_trainer(argv[1], argc - 2, argv + 2);
    if (!strcmp(argv[1], "analyze")) /* depth diagnostics of a checkpoint */
        return drv_run_trainer(argv[1], argc - 2, argv + 2);
    if (!strcmp(argv[1], "sweep"))
        return sweep_main(argc - 2, argv + 2);
    fprintf(stderr, "strata: error: unknown command '%s' (see strata --help)\n", argv[1]);
    return 2;
}
