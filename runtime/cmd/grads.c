/* grads.c - `TRAINER grads --data GLOB -o OUT`: the loss and every
 * parameter's gradient of one batch (the first B windows of the shards,
 * in order) at a checkpoint's weights or at the init of --seed, written
 * as safetensors: one F32 tensor per parameter under its name, the loss
 * in the metadata (strata.loss, %.17g) with the device and the batch.  On
 * --device cpu through the model's train step, on cuda through the
 * device's (runtime/gpu/exec.h), so the two files compare the devices
 * (bench/gpu-check, issue #18).  Entry point: rt_cmd_grads (commands.h). */
#include "cmd/commands.h"
#include "core/util.h"
#include "store/checkpoint.h"
#include "store/safetensors.h"
#include "train/device.h"
#include "train/init.h"
#include "train/train.h"

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct GradsOptions {
    const char *ckpt, *data, *out, *precision, *device;
    int64_t batch, seq, seed, threads;
    bool given[9];
} GradsOptions;

static const RtOptSpec grads_specs[] = {
    {"data", "--data", RT_OPT_STR, 0, offsetof(GradsOptions, data), "GLOB", "token shards: the first batch (required)"},
    {"out", "-o", RT_OPT_STR, 0, offsetof(GradsOptions, out), "FILE", "the gradients, safetensors (required)"},
    {"ckpt", "--ckpt", RT_OPT_STR, 0, offsetof(GradsOptions, ckpt), "CKPT", "weights (else the init of --seed)"},
    {"seed", "--seed", RT_OPT_INT, 0, offsetof(GradsOptions, seed), "N", "init seed without --ckpt (1)"},
    {"batch", "--batch", RT_OPT_INT, 0, offsetof(GradsOptions, batch), "B", "windows in the batch (4)"},
    {"seq", "--seq", RT_OPT_INT, 0, offsetof(GradsOptions, seq), "T", "tokens per window (the config's ctx, else 256)"},
    {"threads", "--threads", RT_OPT_INT, 0, offsetof(GradsOptions, threads), "N", "pool threads (all CPUs)"},
    {"precision", "--precision", RT_OPT_STR, 0, offsetof(GradsOptions, precision), "P",
     "matrix products: fp32|bf16 (fp32)"},
    {"device", "--device", RT_OPT_STR, 0, offsetof(GradsOptions, device), "D", "cpu|cuda|cuda:N (cpu)"},
};

/* The loss and gradients of one batch into grads; an exit status. */
static int compute(const RtModel *m, RtDevice *dev, const GradsOptions *o, const float *params, const int32_t *tok,
                   const int32_t *tgt, float *grads, double *loss, const char *prog)
{
    if (dev->cuda) {
        RtGpuModel *g = NULL;
        int rc = rt_device_model(dev, m, m->precision, o->batch, o->seq, prog, &g);
        if (rc)
            return rc;
        if (rt_gpu_set_params(g, params) || rt_gpu_train_step(g, tok, tgt, NULL, 0, loss) ||
            rt_gpu_get_grads(g, grads)) {
            fprintf(stderr, "%s: --device %s: %s\n", prog, dev->name, rt_gpu_error(g));
            rc = 3;
        }
        rt_gpu_model_close(g);
        return rc;
    }
    RtPool *pool = rt_pool_create((int)o->threads);
    int64_t abytes = strata_arena_bytes(m->desc, o->batch, o->seq, rt_pool_size(pool));
    void *arena = rt_zalloc64((size_t)abytes);
    StrataStep s = {.params = (void *)params, .grads = grads, .arena = arena, .arena_bytes = abytes, .tokens = tok,
                    .targets = tgt, .B = o->batch, .T = o->seq, .loss = loss, .pool = pool,
                    .precision = m->precision};
    int st = m->train_step(&s);
    rt_pool_free(pool);
    free(arena);
    if (st != STRATA_OK) {
        fprintf(stderr, "%s: the model's train step failed (status %d)\n", prog, st);
        return 3;
    }
    return 0;
}

int rt_cmd_grads(const RtModel *m, const char *prog, int argc, char **argv)
{
    GradsOptions o = {.batch = 4, .seq = -1, .seed = 1};
    int rc = rt_parse_opts(prog, "grads", grads_specs, RT_NSPECS(grads_specs), &o, o.given, argc, argv);
    if (rc)
        return rc == 1 ? 0 : rc;
    if (!o.data || !o.out) {
        fprintf(stderr, "%s grads: --data GLOB and -o FILE are required\n", prog);
        return 2;
    }
    if (o.seq < 0)
        o.seq = rt_default_seq(m);
    RtModel mp = *m;
    if ((mp.precision = rt_precision_parse(o.precision ? o.precision : "fp32")) < 0 || o.batch < 1 || o.seq < 1 ||
        o.batch > INT32_MAX || o.seq > INT32_MAX) {
        fprintf(stderr, "%s grads: --precision must be fp32 or bf16, --batch and --seq at least 1\n", prog);
        return 2;
    }
    m = &mp;
    RtDevice dev; /* before the data and the checkpoint are read */
    if ((rc = rt_device_open(&dev, o.device, prog, "grads", 0)))
        return rc;
    const StrataModelDesc *d = m->desc;
    float *params = NULL;
    if (o.ckpt) {
        json_t *state = NULL;
        params = rt_load_weights(m, prog, o.ckpt, &state);
        json_decref(state);
    } else {
        params = rt_zalloc64((size_t)d->params_numel * sizeof(float));
        rt_init_params(d, params, (uint64_t)o.seed);
    }
    char **paths = NULL, *err = NULL;
    int npaths = 0;
    RtLoader l;
    bool have_l = false;
    int32_t *tok = rt_zalloc64((size_t)(o.batch * o.seq) * sizeof *tok); /* (B,T) */
    int32_t *tgt = rt_zalloc64((size_t)(o.batch * o.seq) * sizeof *tgt);
    float *grads = rt_zalloc64((size_t)d->params_numel * sizeof(float));
    rc = params ? 0 : 1;
    if (!rc && (rt_glob(o.data, &paths, &npaths, &err) ||
                rt_loader_init(&l, (const char *const *)paths, npaths, (int)o.batch, (int)o.seq, RT_LOADER_SEQUENTIAL,
                               0, &err) ||
                (have_l = true, rt_loader_check_vocab(&l, d->vocab, &err)))) {
        fprintf(stderr, "%s: %s\n", prog, err);
        rc = 1;
    }
    if (!rc && rt_loader_next(&l, tok, tgt) < o.batch) {
        fprintf(stderr, "%s: %s: fewer than %lld windows of %lld tokens\n", prog, o.data, (long long)o.batch,
                (long long)o.seq);
        rc = 1;
    }
    double loss = 0;
    if (!rc)
        rc = compute(m, &dev, &o, params, tok, tgt, grads, &loss, prog);
    if (!rc) {
        RtStWriter w;
        rt_st_writer_init(&w);
        char num[64], shape[64];
        snprintf(num, sizeof num, "%.17g", loss);
        snprintf(shape, sizeof shape, "%lld %lld", (long long)o.batch, (long long)o.seq);
        int wr = rt_st_add_meta(&w, "strata.loss", num, &err) || rt_st_add_meta(&w, "strata.device", dev.name, &err) ||
                 rt_st_add_meta(&w, "strata.batch", shape, &err) ||
                 rt_st_add_meta(&w, "strata.precision", rt_precision_name(m->precision), &err);
        for (int64_t i = 0; !wr && i < d->nparams; i++) {
            int64_t sh[2];
            int nd = rt_ckpt_shape(&d->params[i], sh);
            wr = rt_st_add(&w, d->params[i].name, RT_F32, sh, nd, grads + d->params[i].offset, &err);
        }
        if (wr || rt_st_write(&w, o.out, &err)) {
            fprintf(stderr, "%s: %s\n", prog, err ? err : "cannot write the gradients");
            rc = 1;
        } else
            printf("loss %.9g | %lld gradient tensors written to %s (%s)\n", loss, (long long)d->nparams, o.out,
                   dev.name);
        rt_st_writer_free(&w);
    }
    free(err);
    if (have_l)
        rt_loader_free(&l);
    if (paths)
        rt_glob_free(paths, npaths);
    rt_device_close(&dev);
    free(params), free(tok), free(tgt), free(grads);
    return rc;
}
