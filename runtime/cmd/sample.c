/* sample.c - `TRAINER sample --ckpt CKPT [--prompt TEXT]`: text generated
 * token by token from a checkpoint (rt_sample, train/sample.h), decoded
 * with the checkpoint's tokenizer (else raw bytes) as it comes.  Entry
 * point: rt_cmd_sample (commands.h).
 *
 * The model sees the last --seq tokens at positions 0 .. seq-1.  With the
 * KV cache (strata_decode) the prompt is one call and each new token one
 * more over the cache, while the text fits in the window; once it is
 * longer, every token is a whole-window strata_forward (the window slides,
 * so every position, and every rotated key, changes).  --no-kv-cache runs
 * strata_forward on the window for every token.  With --device cuda each
 * token's forward pass runs on the device, without a cache (rt_gpu_forward
 * over a window of T tokens: the last w real ones first, padding after,
 * which a causal model's logits at w-1 do not see). */
#include "cmd/commands.h"
#include "core/util.h"
#include "data/tokenizer.h"
#include "core/pool.h"
#include "train/device.h"
#include "train/sample.h"

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct SampleOptions {
    const char *ckpt, *tokenizer, *prompt, *device;
    int64_t tokens, top_k, seed, seq, threads;
    double temperature, top_p;
    int no_kv_cache;
    bool given[12];
} SampleOptions;

static const RtOptSpec sample_specs[] = {
    {"ckpt", "--ckpt", RT_OPT_STR, 0, offsetof(SampleOptions, ckpt), "CKPT", "checkpoint (required)"},
    {"tokenizer", "--tokenizer", RT_OPT_STR, 0, offsetof(SampleOptions, tokenizer), "FILE",
     "tokenizer (the checkpoint's, else raw bytes)"},
    {"prompt", "--prompt", RT_OPT_STR, 0, offsetof(SampleOptions, prompt), "TEXT", "start of the text"},
    {"tokens", "--tokens", RT_OPT_INT, 0, offsetof(SampleOptions, tokens), "N", "tokens to generate (100)"},
    {"temperature", "--temperature", RT_OPT_REAL, 0, offsetof(SampleOptions, temperature), "X",
     "softmax temperature, 0 = greedy (0.8)"},
    {"top_k", "--top-k", RT_OPT_INT, 0, offsetof(SampleOptions, top_k), "K", "keep the K likeliest, 0 = all (0)"},
    {"top_p", "--top-p", RT_OPT_REAL, 0, offsetof(SampleOptions, top_p), "P", "nucleus: keep mass P (1.0)"},
    {"seed", "--seed", RT_OPT_INT, 0, offsetof(SampleOptions, seed), "N", "sampling seed (1)"},
    {"seq", "--seq", RT_OPT_INT, 0, offsetof(SampleOptions, seq), "T", "window (the checkpoint's --seq)"},
    {"threads", "--threads", RT_OPT_INT, 0, offsetof(SampleOptions, threads), "N", "pool threads (all CPUs)"},
    {"no_kv_cache", "--no-kv-cache", RT_OPT_FLAG, 0, offsetof(SampleOptions, no_kv_cache), NULL,
     "recompute the whole window for every token"},
    {"device", "--device", RT_OPT_STR, 0, offsetof(SampleOptions, device), "D", "cpu|cuda|cuda:N (cpu)"},
};

int rt_cmd_sample(const RtModel *m, const char *prog, int argc, char **argv)
{
    SampleOptions o = {.tokens = 100, .temperature = 0.8, .top_p = 1.0, .seed = 1, .seq = -1};
    int rc = rt_parse_opts(prog, "sample", sample_specs, RT_NSPECS(sample_specs), &o, o.given, argc, argv);
    if (rc)
        return rc == 1 ? 0 : rc;
    if (!o.ckpt) {
        fprintf(stderr, "%s sample: --ckpt CKPT is required\n", prog);
        return 2;
    }
    if (o.tokens < 0 || !(o.temperature >= 0) || o.top_k < 0 || !(o.top_p > 0 && o.top_p <= 1)) {
        fprintf(stderr, "%s sample: --tokens, --temperature and --top-k must be >= 0, --top-p in (0, 1]\n", prog);
        return 2;
    }
    RtDevice dev; /* before the checkpoint is read */
    if ((rc = rt_device_open(&dev, o.device, prog, "sample", 0)))
        return rc;
    json_t *state;
    float *params = rt_load_weights(m, prog, o.ckpt, &state);
    if (!params) {
        rt_device_close(&dev);
        return 1;
    }
    if (o.seq < 0)
        o.seq = rt_state_int(state, "seq", rt_default_seq(m));
    json_t *tj = json_object_get(state, "tokenizer");
    char *tok_path = o.tokenizer ? strdup(o.tokenizer) : json_is_string(tj) && *json_string_value(tj)
                                                             ? strdup(json_string_value(tj))
                                                             : NULL;
    json_decref(state);
    char *err = NULL;
    RtTokenizer *tok = tok_path ? rt_tok_load(tok_path, &err) : rt_tok_bytes();
    if (!tok) {
        fprintf(stderr, "%s: %s\n", prog, err ? err : "out of memory");
        free(err), free(tok_path), free(params);
        rt_device_close(&dev);
        return 1;
    }
    const int64_t V = m->desc->vocab, T = o.seq;
    int32_t *ids = NULL;
    int64_t n = o.prompt ? rt_tok_encode(tok, o.prompt, strlen(o.prompt), &ids) : 0;
    if (n < 0) {
        fprintf(stderr, "%s: out of memory\n", prog);
        exit(3);
    }
    int32_t *seq = rt_zalloc64((size_t)(n + o.tokens + 1) * sizeof *seq);
    for (int64_t i = 0; i < n; i++) {
        if (ids[i] >= V) {
            fprintf(stderr, "%s: the prompt's token %lld is id %d, outside the model's vocabulary of %lld (%s)\n",
                    prog, (long long)i, ids[i], (long long)V, tok_path ? tok_path : "raw-byte tokenizer");
            rc = 1;
        }
        seq[i] = ids[i];
    }
    free(ids);
    if (n == 0) { /* an empty prompt starts from <|endoftext|> when there is one */
        int32_t eot = rt_tok_eot(tok);
        seq[n++] = eot >= 0 && eot < V ? eot : 0;
    } else if (!rc && o.prompt)
        fwrite(o.prompt, 1, strlen(o.prompt), stdout);
    RtPool *pool = rt_pool_create((int)o.threads);
    RtGpuModel *g = NULL;
    int32_t *window = dev.cuda ? rt_zalloc64((size_t)T * sizeof *window) : NULL; /* (1,T) device input */
    if (!rc && dev.cuda && !(rc = rt_device_model(&dev, m, m->precision, 1, T, prog, &g)) &&
        rt_gpu_set_params(g, params)) {
        fprintf(stderr, "%s: --device %s: cannot copy the weights to the device: %s\n", prog, dev.name,
                rt_gpu_error(g));
        rc = 1;
    }
    int64_t abytes = dev.cuda ? 64 : strata_arena_bytes(m->desc, 1, T, rt_pool_size(pool));
    void *arena = rt_zalloc64((size_t)abytes);
    float *logits = rt_zalloc64((size_t)(T * V) * sizeof(float)); /* (1,T,V) */
    double *probs = rt_zalloc64((size_t)V * sizeof(double));
    /* The KV cache holds the keys and values of seq[0 .. cached) while the
     * text fits in the window (n <= T). */
    bool use_cache = !dev.cuda && m->decode && !o.no_kv_cache;
    void *kv = use_cache ? rt_zalloc64((size_t)strata_kv_bytes(m->desc, 1, T) + 64) : NULL;
    int64_t cached = 0;
    int32_t *work = rt_zalloc64((size_t)V * sizeof(int32_t));
    RtSampleOptions so = {.temperature = o.temperature, .top_k = o.top_k, .top_p = o.top_p};
    uint64_t rng = (uint64_t)o.seed;
    for (int64_t k = 0; !rc && k < o.tokens; k++) {
        int64_t w = n < T ? n : T;
        StrataStep s = {.params = params, .arena = arena, .arena_bytes = abytes, .tokens = seq + n - w, .B = 1,
                        .T = w, .logits = logits, .pool = pool, .precision = m->precision};
        bool decode = use_cache && n <= T;
        if (decode) { /* the tokens after the cached ones, at their positions */
            s.tokens = seq + cached, s.T = w = n - cached;
            s.kv = kv, s.kv_pos = cached, s.kv_len = T;
            cached = n;
        }
        if (g) {
            memcpy(window, seq + n - w, (size_t)w * sizeof *window);
            if (rt_gpu_forward(g, window, logits)) {
                fprintf(stderr, "%s: --device %s: the forward pass failed: %s\n", prog, dev.name, rt_gpu_error(g));
                rc = 3;
                break;
            }
        } else if ((decode ? m->decode : m->forward)(&s) != STRATA_OK) {
            fprintf(stderr, "%s: the model's forward pass failed\n", prog);
            rc = 3;
            break;
        }
        int32_t next = rt_sample(logits + (w - 1) * V, V, &so, &rng, probs, work);
        size_t len = 0;
        const char *bytes = rt_tok_token(tok, next, &len);
        if (!bytes) {
            fprintf(stderr, "\n%s: the model chose id %d, which the tokenizer (%s) cannot decode\n", prog, next,
                    tok_path ? tok_path : "raw bytes");
            rc = 1;
            break;
        }
        fwrite(bytes, 1, len, stdout);
        fflush(stdout);
        seq[n++] = next;
    }
    if (!rc)
        putchar('\n');
    fflush(stdout);
    rt_pool_free(pool);
    rt_tok_free(tok);
    if (g)
        rt_gpu_model_close(g);
    rt_device_close(&dev);
    free(tok_path), free(seq), free(arena), free(logits), free(probs), free(work), free(params), free(window), free(kv);
    return rc;
}
