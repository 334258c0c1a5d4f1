/* gpu_loop_test.c - the device side of train, eval and sample (--device
 * cuda, issue #18) without a GPU: the fake driver tests/fake/libcuda.so.1
 * stands in for the driver ($STRATA_CUDA_DRIVER), and this file defines
 * the executor of runtime/gpu/exec.h itself, as an emulated device that
 * keeps its own parameters, gradients and AdamW moments and computes with
 * the model's CPU entry points and runtime/train/optim.c (these
 * definitions take the place of the library's; the real executor's
 * numbers are bench/gpu-check's to prove on a GPU).  So what is tested is
 * the loop around the device: weights and moments uploaded at the start,
 * a batch per step, the step number, rate, clip and decay handed to the
 * optimizer, weights and moments downloaded for checkpoints, validation
 * and resume, and `grads` (its gradients against a train step called
 * here).  Expected: exactly what the CPU path writes (same checkpoint
 * bytes, same eval line, same greedy text, same gradient tensors), as the
 * emulated device does the CPU's arithmetic; a run resumes across device
 * kinds.
 * Exit 0 pass, 1 fail, 77 skip. */
#include "gpu/exec.h"
#include "store/checkpoint.h"
#include "store/safetensors.h"
#include "train/init.h"
#include "train/optim.h"
#include "train_case.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* --- the emulated device -------------------------------------------------- */

typedef struct EmuProgram {
    const RtModel *m; /* the CPU model it computes with */
} EmuProgram;

struct RtGpuModel {
    const RtModel *m;
    int64_t B, T, n;
    float *params, *grads;
    void *arena;
    int64_t arena_bytes;
    RtAdamW opt;            /* the device's moments */
    int64_t next_t;         /* the step number the next optim step must get */
    char err[256];
};

static int emu_opens, emu_steps, emu_optims, emu_forwards, emu_bad_order;
static int64_t emu_B, emu_T;

int rt_gpu_model_open(RtGpuModel **out, RtCuda *cu, const StrataGpuProgram *prog, int64_t B, int64_t T,
                      char *err, size_t errlen)
{
    const EmuProgram *ep = (const EmuProgram *)(const void *)prog;
    if (!cu || !ep || !ep->m) {
        snprintf(err, errlen, "emulator: no device or program");
        return -1;
    }
    const StrataModelDesc *d = ep->m->desc;
    RtGpuModel *g = calloc(1, sizeof *g);
    g->m = ep->m, g->B = B, g->T = T, g->n = d->params_numel;
    g->params = tc_arena(1, 1, &(int64_t){0}); /* replaced below: keeps the helpers' alignment */
    free(g->params);
    g->params = calloc((size_t)g->n, sizeof(float));
    g->grads = calloc((size_t)g->n, sizeof(float));
    g->arena = tc_arena(B, T, &g->arena_bytes);
    RtSegment *segs = calloc((size_t)d->nparams, sizeof *segs);
    for (int64_t i = 0; i < d->nparams; i++) /* the decay mask the plan carries: matrices */
        segs[i] = (RtSegment){d->params[i].offset, d->params[i].numel, d->params[i].role == STRATA_ROLE_MATRIX};
    RtAdamWConfig cfg = {.kind = RT_OPTIM_ADAMW, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
    if (rt_adamw_init(&g->opt, g->n, segs, (int)d->nparams, cfg)) {
        snprintf(err, errlen, "emulator: optimizer init failed");
        return -1;
    }
    free(segs);
    g->next_t = -1; /* set by the first optim step: a resumed run starts past 1 */
    emu_opens++, emu_B = B, emu_T = T;
    *out = g;
    return 0;
}

void rt_gpu_model_close(RtGpuModel *g)
{
    if (!g)
        return;
    rt_adamw_free(&g->opt);
    free(g->params), free(g->grads), free(g->arena), free(g);
}

int rt_gpu_set_params(RtGpuModel *g, const float *h) { memcpy(g->params, h, (size_t)g->n * 4); return 0; }
int rt_gpu_get_params(RtGpuModel *g, float *h) { memcpy(h, g->params, (size_t)g->n * 4); return 0; }
int rt_gpu_get_grads(RtGpuModel *g, float *h) { memcpy(h, g->grads, (size_t)g->n * 4); return 0; }
int rt_gpu_set_moments(RtGpuModel *g, const float *m, const float *v)
{
    memcpy(g->opt.m, m, (size_t)g->n * 4), memcpy(g->opt.v, v, (size_t)g->n * 4);
    return 0;
}
int rt_gpu_get_moments(RtGpuModel *g, float *m, float *v)
{
    memcpy(m, g->opt.m, (size_t)g->n * 4), memcpy(v, g->opt.v, (size_t)g->n * 4);
    return 0;
}

int rt_gpu_train_step(RtGpuModel *g, const int32_t *tokens, const int32_t *targets, const float *mask,
                      int accumulate, double *loss)
{
    StrataStep s = {.params = g->params, .grads = g->grads, .arena = g->arena, .arena_bytes = g->arena_bytes,
                    .tokens = tokens, .targets = targets, .mask = mask, .B = g->B, .T = g->T, .loss = loss,
                    .accumulate = accumulate, .precision = g->m->precision};
    emu_steps++;
    if (g->m->train_step(&s) != STRATA_OK) {
        snprintf(g->err, sizeof g->err, "emulator: train step failed");
        return -1;
    }
    return 0;
}

int rt_gpu_optim_step(RtGpuModel *g, const RtGpuAdamW *hp, double *grad_norm)
{
    if (g->next_t >= 0 && hp->step != g->next_t)
        emu_bad_order++;
    g->next_t = hp->step + 1;
    emu_optims++;
    g->opt.cfg.beta1 = hp->beta1, g->opt.cfg.beta2 = hp->beta2, g->opt.cfg.eps = hp->eps;
    g->opt.cfg.weight_decay = hp->weight_decay;
    g->opt.step = hp->step - 1; /* the update uses t = step + 1 = hp->step */
    *grad_norm = rt_grad_norm_pool(g->grads, g->n, NULL);
    float clip = hp->clip > 0 ? rt_clip_factor(hp->clip, *grad_norm) : 1.0f;
    rt_adamw_step_scaled(&g->opt, g->params, g->grads, clip, hp->lr, NULL);
    return 0;
}

int rt_gpu_forward(RtGpuModel *g, const int32_t *tokens, float *logits)
{
    StrataStep s = {.params = g->params, .arena = g->arena, .arena_bytes = g->arena_bytes, .tokens = tokens,
                    .B = g->B, .T = g->T, .logits = logits, .precision = g->m->precision};
    emu_forwards++;
    return g->m->forward(&s) == STRATA_OK ? 0 : -1;
}

const char *rt_gpu_error(const RtGpuModel *g) { return g ? g->err : "emulator"; }

/* --- the tests ------------------------------------------------------------ */

#define NV 32
#define COMMON "--threads", "1", "--quiet", "--batch", "4", "--seq", "16", "--seed", "3", "--lr", "3e-3"

static int32_t pattern(int64_t i, void *ctx)
{
    (void)ctx;
    return (int32_t)((i * 7 + i / 3) % 10);
}

static bool same_file(const char *a, const char *b)
{
    size_t na = 0, nb = 0;
    char *x = tu_slurp(a, &na), *y = tu_slurp(b, &nb);
    bool same = x && y && na == nb && !memcmp(x, y, na);
    free(x), free(y);
    return same;
}

static char *slurp_out(size_t *len)
{
    char *t = tu_slurp(tu_path("out.txt"), len);
    if (!t)
        *len = 0;
    return t ? t : calloc(1, 1);
}

static void test_loop(void)
{
    char data[512], val[512], cpu[512], dev[512], mix1[512], mix2[512], ck_cpu[600], ck[600];
    snprintf(data, sizeof data, "%s/train_*.bin", tu_dir);
    snprintf(val, sizeof val, "%s/val.bin", tu_dir);
    snprintf(cpu, sizeof cpu, "%s/cpu", tu_dir), snprintf(dev, sizeof dev, "%s/dev", tu_dir);
    snprintf(mix1, sizeof mix1, "%s/mix1", tu_dir), snprintf(mix2, sizeof mix2, "%s/mix2", tu_dir);
    snprintf(ck_cpu, sizeof ck_cpu, "%s/checkpoint.safetensors", cpu);
    tc_write_shard("train_000.bin", 4000, pattern, NULL);
    tc_write_shard("val.bin", 800, pattern, NULL);

    /* 6 steps on the CPU and on the device: the same checkpoint. */
    CHECK(tc_run("train", "--data", data, "--val", val, "--val-every", "3", "--out", cpu, "--steps", "6", COMMON,
                 NULL) == 0, "CPU run");
    CHECK(tc_run("train", "--data", data, "--val", val, "--val-every", "3", "--out", dev, "--steps", "6", COMMON,
                 "--device", "cuda", NULL) == 0, "device run");
    snprintf(ck, sizeof ck, "%s/checkpoint.safetensors", dev);
    CHECK(same_file(ck_cpu, ck), "the device run's checkpoint differs from the CPU run's");
    CHECK(emu_opens == 1 && emu_B == 4 && emu_T == 16, "opened %d times at %lld x %lld", emu_opens,
          (long long)emu_B, (long long)emu_T);
    CHECK(emu_steps == 6 && emu_optims == 6 && emu_bad_order == 0, "%d steps, %d optimizer steps, %d out of order",
          emu_steps, emu_optims, emu_bad_order);
    char mpath[600];
    snprintf(mpath, sizeof mpath, "%s/metrics.jsonl", dev);
    CHECK(tc_count_lines(mpath) == 8, "metrics rows: %d (6 train, 2 val)", tc_count_lines(mpath));
    CHECK(tc_file_has("dev/metrics.jsonl", "{\"step\": 1, \"device\": \"cuda:0\", \"loss\": "), "device in metrics");
    double lc = tc_last_val_loss(tu_path("cpu/metrics.jsonl")), ld = tc_last_val_loss(mpath);
    CHECK(lc == ld && isfinite(lc), "validation loss %.9g on the CPU, %.9g on the device", lc, ld);

    /* Resume across kinds: CPU 3 steps then the device, and the device 3
     * steps then the CPU, both equal to the run that never stopped. */
    CHECK(tc_run("train", "--data", data, "--val", val, "--val-every", "3", "--out", mix1, "--steps", "6",
                 "--exit-after", "3", COMMON, NULL) == 0 &&
          tc_run("train", "--out", mix1, "--resume", "--device", "cuda", "--quiet", NULL) == 0, "CPU then device");
    snprintf(ck, sizeof ck, "%s/checkpoint.safetensors", mix1);
    CHECK(same_file(ck_cpu, ck), "CPU -> device resume differs from the run that never stopped");
    CHECK(emu_bad_order == 0, "a resumed device run got step numbers out of order");
    CHECK(tc_run("train", "--data", data, "--val", val, "--val-every", "3", "--out", mix2, "--steps", "6",
                 "--exit-after", "3", COMMON, "--device", "cuda", NULL) == 0 &&
          tc_run("train", "--out", mix2, "--resume", "--quiet", NULL) == 0, "device then CPU");
    snprintf(ck, sizeof ck, "%s/checkpoint.safetensors", mix2);
    CHECK(same_file(ck_cpu, ck), "device -> CPU resume differs from the run that never stopped");

    /* Without validation the host keeps no activations: still the CPU's checkpoint. */
    char nv_cpu[520], nv_dev[520];
    snprintf(nv_cpu, sizeof nv_cpu, "%s/nv_cpu", tu_dir), snprintf(nv_dev, sizeof nv_dev, "%s/nv_dev", tu_dir);
    CHECK(tc_run("train", "--data", data, "--out", nv_cpu, "--steps", "2", COMMON, NULL) == 0 &&
          tc_run("train", "--data", data, "--out", nv_dev, "--steps", "2", COMMON, "--device", "cuda", NULL) == 0,
          "runs without validation");
    snprintf(ck, sizeof ck, "%s/checkpoint.safetensors", nv_cpu);
    char ck2[600];
    snprintf(ck2, sizeof ck2, "%s/checkpoint.safetensors", nv_dev);
    CHECK(same_file(ck, ck2), "without validation the device run's checkpoint differs");

    /* eval: the same line; the device's forward pass ran. */
    int before = emu_forwards;
    CHECK(tc_run("eval", "--ckpt", ck_cpu, "--data", val, "--threads", "1", NULL) == 0, "CPU eval");
    size_t nc = 0, nd = 0;
    char *e_cpu = slurp_out(&nc);
    CHECK(tc_run("eval", "--ckpt", ck_cpu, "--data", val, "--threads", "1", "--device", "cuda", NULL) == 0,
          "device eval");
    char *e_dev = slurp_out(&nd);
    CHECK(!strcmp(e_cpu, e_dev) && strstr(e_cpu, "loss"), "eval: '%s' on the CPU, '%s' on the device", e_cpu, e_dev);
    CHECK(emu_forwards > before, "eval --device cuda did not use the device");
    free(e_cpu), free(e_dev);

    /* sample, greedy: the same text (the device's window is padded to T). */
    before = emu_forwards;
    CHECK(tc_run("sample", "--ckpt", ck_cpu, "--prompt", "\001\002", "--tokens", "20", "--temperature", "0",
                 "--threads", "1", NULL) == 0, "CPU sample");
    char *s_cpu = slurp_out(&nc);
    CHECK(tc_run("sample", "--ckpt", ck_cpu, "--prompt", "\001\002", "--tokens", "20", "--temperature", "0",
                 "--threads", "1", "--device", "cuda", NULL) == 0, "device sample");
    char *s_dev = slurp_out(&nd); /* token bytes, NULs among them */
    CHECK(nc == 2 + 20 + 1 && nc == nd && !memcmp(s_cpu, s_dev, nc),
          "greedy sample differs between the CPU and the device (%zu and %zu bytes)", nc, nd);
    CHECK(emu_forwards == before + 20, "sample made %d device forward passes, not 20", emu_forwards - before);
    free(s_cpu), free(s_dev);
}

/* `grads` on both kinds against one train step called here on the same
 * batch (the shard's first B windows: tokens 0..T-1 and targets 1..T of
 * each window of T, windows back to back, as the sequential loader cuts
 * them). */
static void test_grads(void)
{
    char data[512], gc[512], gd[512];
    snprintf(data, sizeof data, "%s/train_000.bin", tu_dir);
    snprintf(gc, sizeof gc, "%s/grads_cpu.safetensors", tu_dir);
    snprintf(gd, sizeof gd, "%s/grads_dev.safetensors", tu_dir);
    CHECK(tc_run("grads", "--data", data, "-o", gc, "--batch", "3", "--seq", "16", "--seed", "5", "--threads", "1",
                 NULL) == 0, "grads on the CPU");
    CHECK(tc_run("grads", "--data", data, "-o", gd, "--batch", "3", "--seq", "16", "--seed", "5", "--threads", "1",
                 "--device", "cuda", NULL) == 0, "grads on the device");
    double scale = 0;
    bool same = false;
    double diff = tc_tensor_diff(gc, gd, "", &scale, &same);
    CHECK(diff == 0 && same && scale > 0, "CPU and device gradients differ by %g (scale %g)", diff, scale);
    /* The reference: the init of seed 5 and one train step, here. */
    const StrataModelDesc *d = tc_model.desc;
    float *p = calloc((size_t)d->params_numel, 4), *g = calloc((size_t)d->params_numel, 4);
    rt_init_params(d, p, 5);
    int32_t tok[3 * 16], tgt[3 * 16];
    for (int w = 0; w < 3; w++)
        for (int t = 0; t < 16; t++)
            tok[w * 16 + t] = pattern(w * 16 + t, NULL), tgt[w * 16 + t] = pattern(w * 16 + t + 1, NULL);
    int64_t ab = 0;
    void *arena = tc_arena(3, 16, &ab);
    double loss = 0;
    StrataStep st = {.params = p, .grads = g, .arena = arena, .arena_bytes = ab, .tokens = tok, .targets = tgt,
                     .B = 3, .T = 16, .loss = &loss};
    CHECK(tc_model.train_step(&st) == STRATA_OK, "train step");
    RtSafetensors f;
    char *err = NULL;
    if (rt_st_open(&f, gd, &err) == 0) {
        const char *ls = rt_st_meta(&f, "strata.loss");
        CHECK(ls && strtod(ls, NULL) == loss, "grads' loss %s, the train step's %.17g", ls ? ls : "none", loss);
        CHECK(rt_st_meta(&f, "strata.device") && !strcmp(rt_st_meta(&f, "strata.device"), "cuda:0"), "device");
        float *x = calloc((size_t)d->params_numel, 4);
        int bad = 0;
        for (int64_t i = 0; i < d->nparams; i++) {
            int64_t sh[2];
            int nd = rt_ckpt_shape(&d->params[i], sh);
            if (rt_st_read(&f, d->params[i].name, RT_F32, sh, nd, x + d->params[i].offset, &err)) {
                bad++;
                free(err), err = NULL;
            }
        }
        CHECK(bad == 0 && !memcmp(x, g, (size_t)d->params_numel * 4), "the device's gradients are not the step's");
        free(x);
        rt_st_close(&f);
    } else {
        CHECK(0, "%s", err);
        free(err);
    }
    free(p), free(g), free(arena);
}

int main(void)
{
    char self[4096], drv[4300];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        printf("FAIL: cannot find this program's path\n");
        return 1;
    }
    self[n] = 0;
    snprintf(drv, sizeof drv, "%.*s/fake/libcuda.so.1", (int)(strrchr(self, '/') - self), self);
    if (access(drv, R_OK)) {
        printf("FAIL: no fake driver %s (make check builds it)\n", drv);
        return 1;
    }
    setenv("STRATA_CUDA_DRIVER", drv, 1);
    static const char *defs[] = {"vocab=32", "d=16", "L=2", "heads=2", "ffn=24", "ctx=16"};
    int rc = tc_open("gpu_loop_test", defs, 6,
                     "{\"vocab\": 32, \"d\": 16, \"L\": 2, \"heads\": 2, \"ffn\": 24, \"rope\": 10000, \"ctx\": 16}");
    if (rc)
        return rc;
    static EmuProgram prog;
    prog.m = &tc_model;
    tc_model.gpu = (const struct StrataGpuProgram *)(const void *)&prog;
    tc_model.gpu_precision = STRATA_PRECISION_FP32;
    test_loop();
    test_grads();
    return tc_close("gpu_loop_test");
}
