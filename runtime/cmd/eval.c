/* eval.c - `TRAINER eval --ckpt CKPT --data GLOB`: the token-weighted mean
 * loss and perplexity of a checkpoint over sequential windows of the shards
 * (rt_eval_loss, train.h; with --device cuda rt_gpu_eval_loss, device.h).
 * Entry point: rt_cmd_eval (commands.h). */
#include "cmd/commands.h"
#include "core/util.h"
#include "train/device.h"
#include "train/train.h"

#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct EvalOptions {
    const char *ckpt, *data, *precision, *device;
    int64_t batch, seq, batches, threads;
    bool given[8];
} EvalOptions;

static const RtOptSpec eval_specs[] = {
    {"ckpt", "--ckpt", RT_OPT_STR, 0, offsetof(EvalOptions, ckpt), "CKPT", "checkpoint (required)"},
    {"data", "--data", RT_OPT_STR, 0, offsetof(EvalOptions, data), "GLOB", "token shards (required)"},
    {"batch", "--batch", RT_OPT_INT, 0, offsetof(EvalOptions, batch), "B", "windows per batch (the checkpoint's)"},
    {"seq", "--seq", RT_OPT_INT, 0, offsetof(EvalOptions, seq), "T", "tokens per window (the checkpoint's)"},
    {"batches", "--batches", RT_OPT_INT, 0, offsetof(EvalOptions, batches), "N", "batches, 0 = all (0)"},
    {"threads", "--threads", RT_OPT_INT, 0, offsetof(EvalOptions, threads), "N", "pool threads (all CPUs)"},
    {"precision", "--precision", RT_OPT_STR, 0, offsetof(EvalOptions, precision), "P",
     "matrix products: fp32|bf16 (fp32)"},
    {"device", "--device", RT_OPT_STR, 0, offsetof(EvalOptions, device), "D", "cpu|cuda|cuda:N (cpu)"},
};

int rt_cmd_eval(const RtModel *m, const char *prog, int argc, char **argv)
{
    EvalOptions o = {.batch = -1, .seq = -1};
    int rc = rt_parse_opts(prog, "eval", eval_specs, RT_NSPECS(eval_specs), &o, o.given, argc, argv);
    if (rc)
        return rc == 1 ? 0 : rc;
    if (!o.ckpt || !o.data) {
        fprintf(stderr, "%s eval: --ckpt CKPT and --data GLOB are required\n", prog);
        return 2;
    }
    RtModel mp = *m;
    if ((mp.precision = rt_precision_parse(o.precision ? o.precision : "fp32")) < 0) {
        fprintf(stderr, "%s eval: --precision must be fp32 or bf16\n", prog);
        return 2;
    }
    m = &mp;
    RtDevice dev; /* before the checkpoint and the data are read */
    if ((rc = rt_device_open(&dev, o.device, prog, "eval", 0)))
        return rc;
    json_t *state;
    float *params = rt_load_weights(m, prog, o.ckpt, &state);
    if (!params) {
        rt_device_close(&dev);
        return 1;
    }
    if (o.batch < 0)
        o.batch = rt_state_int(state, "batch", 16);
    if (o.seq < 0)
        o.seq = rt_state_int(state, "seq", rt_default_seq(m));
    json_decref(state);
    if (o.batch < 1 || o.seq < 1 || o.batch > INT32_MAX || o.seq > INT32_MAX || o.batches < 0) {
        fprintf(stderr, "%s eval: --batch and --seq must be at least 1, --batches at least 0\n", prog);
        free(params);
        rt_device_close(&dev);
        return 2;
    }
    char **paths = NULL, *err = NULL;
    int npaths = 0;
    RtLoader l;
    if (rt_glob(o.data, &paths, &npaths, &err) ||
        rt_loader_init(&l, (const char *const *)paths, npaths, (int)o.batch, (int)o.seq, RT_LOADER_SEQUENTIAL, 0,
                       &err)) {
        fprintf(stderr, "%s: %s\n", prog, err);
        free(err), free(params);
        if (paths)
            rt_glob_free(paths, npaths);
        rt_device_close(&dev);
        return 1;
    }
    rc = 0;
    if (rt_loader_check_vocab(&l, m->desc->vocab, &err)) {
        fprintf(stderr, "%s: %s\n", prog, err);
        free(err);
        rc = 1;
    }
    RtPool *pool = rt_pool_create((int)o.threads);
    int64_t abytes = dev.cuda ? 64 : strata_arena_bytes(m->desc, o.batch, o.seq, rt_pool_size(pool));
    void *arena = rt_zalloc64((size_t)abytes);
    float *logits = rt_zalloc64((size_t)(o.batch * o.seq * m->desc->vocab) * sizeof(float)); /* (B,T,V) */
    double loss = 0;
    int64_t ntok = 0;
    RtGpuModel *g = NULL;
    if (!rc && dev.cuda) {
        rc = rt_device_model(&dev, m, m->precision, o.batch, o.seq, prog, &g);
        if (!rc && rt_gpu_set_params(g, params)) {
            fprintf(stderr, "%s: --device %s: cannot copy the weights to the device: %s\n", prog, dev.name,
                    rt_gpu_error(g));
            rc = 1;
        }
        if (!rc && rt_gpu_eval_loss(g, m->desc->vocab, &l, o.batches, logits, &loss, &ntok)) {
            fprintf(stderr, "%s: --device %s: the forward pass failed: %s\n", prog, dev.name, rt_gpu_error(g));
            rc = 3;
        }
    } else if (!rc && rt_eval_loss(m, params, &l, o.batches, pool, arena, abytes, logits, &loss, &ntok)) {
        fprintf(stderr, "%s: the model's forward pass failed\n", prog);
        rc = 3;
    }
    if (g)
        rt_gpu_model_close(g);
    rt_device_close(&dev);
    if (!rc)
        printf("tokens %lld | loss %.6f | ppl %.4f\n", (long long)ntok, loss, exp(loss));
    rt_pool_free(pool);
    rt_loader_free(&l);
    rt_glob_free(paths, npaths);
    free(arena), free(logits), free(params);
    return rc;
}
