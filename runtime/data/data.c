/* data.c - token shards, the batch loader, the train/val split (data.h).
 * Shards are mmap'd read-only; the shuffle is xoshiro256** + Fisher-Yates
 * exactly as data.h documents, so a state (epoch, pos) resumes exactly. */
#define _GNU_SOURCE /* vasprintf */
#include "data/data.h"
#include "core/util.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/atomic_file.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "data.c reads mapped tokens in host order, which must be little-endian"
#endif

static int32_t le32(const uint8_t *p)
{
    return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
}

static void put_le32(uint8_t *p, int32_t v)
{
    uint32_t u = (uint32_t)v;
    p[0] = (uint8_t)u;
    p[1] = (uint8_t)(u >> 8);
    p[2] = (uint8_t)(u >> 16);
    p[3] = (uint8_t)(u >> 24);
}

/* --- one shard ------------------------------------------------------------ */

void rt_shard_close(RtShard *s)
{
    if (s->map)
        munmap(s->map, s->map_len);
    free(s->path);
    memset(s, 0, sizeof *s);
}

/* Checks the header against the file size; 0 or -1 with *err. */
static int shard_check(RtShard *s, const uint8_t *p, size_t len, char **err)
{
    const char *path = s->path;
    if (len < RT_SHARD_HEADER_BYTES) {
        *err = rt_fmt("%s: %zu bytes, too short for the %d-byte header of a token shard", path, len,
                   RT_SHARD_HEADER_BYTES);
        return -1;
    }
    int32_t magic = le32(p), version = le32(p + 4), count = le32(p + 8);
    if (magic == RT_SHARD_MAGIC_U16) {
        s->width = 2;
        if (version != RT_SHARD_VERSION_U16) {
            *err = rt_fmt("%s: token shard version %d is not supported (magic %d goes with version %d, uint16 tokens)",
                       path, version, magic, RT_SHARD_VERSION_U16);
            return -1;
        }
    } else if (magic == RT_SHARD_MAGIC_U32) {
        s->width = 4;
        if (version != RT_SHARD_VERSION_U32) {
            *err = rt_fmt("%s: token shard version %d is not supported (magic %d goes with version %d, uint32 tokens)",
                       path, version, magic, RT_SHARD_VERSION_U32);
            return -1;
        }
    } else {
        *err = rt_fmt("%s: not a token shard (magic %d; expected %d or %d)", path, magic, RT_SHARD_MAGIC_U16,
                   RT_SHARD_MAGIC_U32);
        return -1;
    }
    if (count < 0) {
        *err = rt_fmt("%s: header says %d tokens", path, count);
        return -1;
    }
    size_t body = len - RT_SHARD_HEADER_BYTES;
    if (body % (size_t)s->width) {
        *err = rt_fmt("%s: header says %d tokens (%d bytes each) but the file holds %zu bytes of tokens, not a whole "
                   "number", path, count, s->width, body);
        return -1;
    }
    if ((uint64_t)(body / (size_t)s->width) != (uint64_t)count) {
        *err = rt_fmt("%s: header says %d tokens but the file holds %zu", path, count, body / (size_t)s->width);
        return -1;
    }
    s->ntok = count;
    return 0;
}

int rt_shard_open(RtShard *s, const char *path, char **err)
{
    memset(s, 0, sizeof *s);
    s->path = strdup(path);
    if (!s->path) {
        *err = rt_fmt("%s: out of memory", path);
        return -1;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *err = rt_fmt("%s: %s", path, strerror(errno));
        rt_shard_close(s);
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        *err = rt_fmt("%s: %s", path, strerror(errno));
        close(fd);
        rt_shard_close(s);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        *err = S_ISDIR(st.st_mode) ? rt_fmt("%s: is a directory, not a token shard", path)
                                   : rt_fmt("%s: not a regular file", path);
        close(fd);
        rt_shard_close(s);
        return -1;
    }
    size_t len = (size_t)st.st_size;
    if (len < RT_SHARD_HEADER_BYTES) {
        close(fd);
        shard_check(s, NULL, len, err); /* reports the size before reading */
        rt_shard_close(s);
        return -1;
    }
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        *err = rt_fmt("%s: cannot map: %s", path, strerror(errno));
        rt_shard_close(s);
        return -1;
    }
    s->map = map;
    s->map_len = len;
    if (shard_check(s, map, len, err) != 0) {
        rt_shard_close(s);
        return -1;
    }
    s->tok = (const uint8_t *)map + RT_SHARD_HEADER_BYTES;
    madvise(map, len, MADV_RANDOM);
    return 0;
}

int rt_shard_width(const int32_t *ids, int64_t n)
{
    int32_t max = 0;
    for (int64_t i = 0; i < n; i++) {
        if (ids[i] < 0)
            return -1;
        if (ids[i] > max)
            max = ids[i];
    }
    return max <= 65535 ? 2 : 4;
}

int rt_shard_write(const char *path, const int32_t *ids, int64_t n, int width, char **err)
{
    if (n < 0 || n > RT_SHARD_MAX_TOKENS) {
        *err = rt_fmt("%s: %lld tokens do not fit one shard (at most %lld)", path, (long long)n,
                   RT_SHARD_MAX_TOKENS);
        return -1;
    }
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || (width == 2 && ids[i] > 65535)) {
            *err = rt_fmt("%s: token %lld is %d, %s", path, (long long)i, ids[i],
                       ids[i] < 0 ? "negative" : "too large for a uint16 shard");
            return -1;
        }
    if (width == 0)
        width = rt_shard_width(ids, n);
    if (width != 2 && width != 4) {
        *err = rt_fmt("%s: token width %d (must be 2 or 4)", path, width);
        return -1;
    }
    uint8_t header[RT_SHARD_HEADER_BYTES] = {0};
    put_le32(header, width == 2 ? RT_SHARD_MAGIC_U16 : RT_SHARD_MAGIC_U32);
    put_le32(header + 4, width == 2 ? RT_SHARD_VERSION_U16 : RT_SHARD_VERSION_U32);
    put_le32(header + 8, (int32_t)n);
    enum { CHUNK = 1 << 16 };
    uint8_t *buf = malloc(CHUNK * 4);
    RtAtomicFile a;
    if (!buf) {
        *err = rt_fmt("%s: out of memory", path);
        return -1;
    }
    if (rt_atomic_open(&a, path, err) != 0) {
        free(buf);
        return -1;
    }
    rt_atomic_write(&a, header, sizeof header);
    for (int64_t i = 0; i < n; i += CHUNK) {
        int64_t m = n - i < CHUNK ? n - i : CHUNK;
        for (int64_t k = 0; k < m; k++) {
            uint32_t v = (uint32_t)ids[i + k];
            uint8_t *p = buf + k * width;
            p[0] = (uint8_t)v;
            p[1] = (uint8_t)(v >> 8);
            if (width == 4) {
                p[2] = (uint8_t)(v >> 16);
                p[3] = (uint8_t)(v >> 24);
            }
        }
        rt_atomic_write(&a, buf, (size_t)(m * width));
    }
    free(buf);
    return rt_atomic_commit(&a, err);
}

int rt_glob(const char *pattern, char ***paths, int *n, char **err)
{
    *paths = NULL;
    *n = 0;
    glob_t g;
    int rc = glob(pattern, GLOB_ERR, NULL, &g);
    if (rc == GLOB_NOMATCH) {
        *err = rt_fmt("%s: no such file", pattern);
        return -1;
    }
    if (rc != 0) {
        *err = rt_fmt("%s: %s", pattern, rc == GLOB_NOSPACE ? "out of memory" : "cannot read a directory");
        if (rc != GLOB_NOSPACE)
            globfree(&g);
        return -1;
    }
    char **p = calloc(g.gl_pathc, sizeof *p);
    for (size_t i = 0; p && i < g.gl_pathc; i++)
        if (!(p[i] = strdup(g.gl_pathv[i]))) {
            rt_glob_free(p, (int)i);
            p = NULL;
        }
    if (!p) {
        globfree(&g);
        *err = rt_fmt("%s: out of memory", pattern);
        return -1;
    }
    *paths = p;
    *n = (int)g.gl_pathc;
    globfree(&g);
    return 0;
}

void rt_glob_free(char **paths, int n)
{
    for (int i = 0; paths && i < n; i++)
        free(paths[i]);
    free(paths);
}

/* --- the shuffle ---------------------------------------------------------- */

/* Uniform in [0, n), n >= 1, by rejection (no modulo bias). */
static uint64_t uniform(uint64_t s[4], uint64_t n)
{
    uint64_t limit = UINT64_MAX - (UINT64_MAX % n + 1) % n; /* largest multiple of n, minus 1 */
    uint64_t r;
    do
        r = rt_xoshiro256ss(s);
    while (r > limit);
    return r % n;
}

static void draw_perm(RtLoader *l, int64_t epoch)
{
    uint64_t x = l->seed + 0x9E3779B97F4A7C15ull * (uint64_t)(epoch + 1), s[4];
    for (int i = 0; i < 4; i++)
        s[i] = rt_splitmix64(&x);
    for (int64_t i = 0; i < l->nwin; i++)
        l->perm[i] = (uint32_t)i;
    for (int64_t i = l->nwin - 1; i > 0; i--) {
        int64_t j = (int64_t)uniform(s, (uint64_t)i + 1);
        uint32_t t = l->perm[i];
        l->perm[i] = l->perm[j];
        l->perm[j] = t;
    }
    l->perm_epoch = epoch;
}

/* --- the loader ----------------------------------------------------------- */

void rt_loader_free(RtLoader *l)
{
    for (int i = 0; l->shard && i < l->nshard; i++)
        rt_shard_close(&l->shard[i]);
    free(l->shard);
    free(l->first);
    free(l->perm);
    memset(l, 0, sizeof *l);
}

int rt_loader_init(RtLoader *l, const char *const *paths, int n, int B, int T, RtLoaderMode mode,
                   uint64_t seed, char **err)
{
    memset(l, 0, sizeof *l);
    if (n < 1) {
        *err = rt_fmt("no token shard given");
        return -1;
    }
    if (B < 1 || T < 1) {
        *err = rt_fmt("%s: batch size %d and context length %d must be positive", paths[0], B, T);
        return -1;
    }
    l->B = B;
    l->T = T;
    l->mode = mode;
    l->seed = seed;
    l->perm_epoch = -1;
    l->shard = calloc((size_t)n, sizeof *l->shard);
    l->first = calloc((size_t)n + 1, sizeof *l->first);
    if (!l->shard || !l->first) {
        rt_loader_free(l);
        *err = rt_fmt("%s: out of memory", paths[0]);
        return -1;
    }
    int longest = 0;
    for (int i = 0; i < n; i++) {
        if (rt_shard_open(&l->shard[i], paths[i], err) != 0) {
            rt_loader_free(l);
            return -1;
        }
        l->nshard = i + 1;
        int64_t N = l->shard[i].ntok;
        l->first[i + 1] = l->first[i] + (N > 0 ? (N - 1) / T : 0);
        l->ntok += N;
        if (N > l->shard[longest].ntok)
            longest = i;
    }
    l->nwin = l->first[n];
    if (l->nwin == 0) {
        *err = rt_fmt("%s: %lld tokens; a window needs T + 1 = %lld%s", paths[longest],
                   (long long)l->shard[longest].ntok, (long long)T + 1,
                   n > 1 ? " (and this is the longest shard)" : "");
        rt_loader_free(l);
        return -1;
    }
    if (mode == RT_LOADER_RANDOM) {
        if (l->nwin > (int64_t)UINT32_MAX) {
            *err = rt_fmt("%s...: %lld windows, more than the shuffle holds (2^32 - 1); use a longer context",
                       paths[0], (long long)l->nwin);
            rt_loader_free(l);
            return -1;
        }
        l->perm = malloc((size_t)l->nwin * sizeof *l->perm);
        if (!l->perm) {
            *err = rt_fmt("%s...: out of memory for the shuffle of %lld windows", paths[0], (long long)l->nwin);
            rt_loader_free(l);
            return -1;
        }
    }
    return 0;
}

/* Copies window w into one row of tokens and targets. */
static void copy_window(const RtLoader *l, int64_t w, int32_t *tok, int32_t *tgt)
{
    int lo = 0, hi = l->nshard - 1; /* the shard with first[s] <= w < first[s + 1] */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (l->first[mid] <= w)
            lo = mid;
        else
            hi = mid - 1;
    }
    const RtShard *s = &l->shard[lo];
    int64_t at = (w - l->first[lo]) * l->T;
    int32_t prev = rt_shard_token(s, at);
    for (int t = 0; t < l->T; t++) {
        int32_t next = rt_shard_token(s, at + t + 1);
        tok[t] = prev;
        tgt[t] = next;
        prev = next;
    }
}

int rt_loader_next(RtLoader *l, int32_t *tokens, int32_t *targets)
{
    int T = l->T;
    if (l->mode == RT_LOADER_SEQUENTIAL) {
        int rows = 0;
        for (; rows < l->B && l->pos < l->nwin; rows++, l->pos++)
            copy_window(l, l->pos, tokens + (size_t)rows * T, targets + (size_t)rows * T);
        for (int b = rows; rows > 0 && b < l->B; b++) {
            memcpy(tokens + (size_t)b * T, tokens + (size_t)(rows - 1) * T, (size_t)T * sizeof *tokens);
            memcpy(targets + (size_t)b * T, targets + (size_t)(rows - 1) * T, (size_t)T * sizeof *targets);
        }
        return rows;
    }
    for (int b = 0; b < l->B; b++) {
        if (l->pos >= l->nwin) {
            l->epoch++;
            l->pos = 0;
        }
        if (l->perm_epoch != l->epoch)
            draw_perm(l, l->epoch);
        copy_window(l, l->perm[l->pos++], tokens + (size_t)b * T, targets + (size_t)b * T);
    }
    return l->B;
}

void rt_loader_reset(RtLoader *l)
{
    l->epoch = 0;
    l->pos = 0;
}

RtLoaderState rt_loader_state(const RtLoader *l)
{
    return (RtLoaderState){l->epoch, l->pos};
}

int rt_loader_set_state(RtLoader *l, RtLoaderState s, char **err)
{
    if (s.epoch < 0 || s.pos < 0 || s.pos > l->nwin || (l->mode == RT_LOADER_SEQUENTIAL && s.epoch != 0)) {
        *err = rt_fmt("%s: loader state (epoch %lld, window %lld) does not fit these shards (%lld windows of %d "
                   "tokens)", l->shard[0].path, (long long)s.epoch, (long long)s.pos, (long long)l->nwin,
                   l->T + 1);
        return -1;
    }
    l->epoch = s.epoch;
    l->pos = s.pos;
    return 0;
}

int64_t rt_loader_batches(const RtLoader *l)
{
    return (l->nwin + l->B - 1) / l->B;
}

int rt_loader_check_vocab(const RtLoader *l, int64_t vocab, char **err)
{
    for (int i = 0; i < l->nshard; i++) {
        const RtShard *s = &l->shard[i];
        if (s->width == 2 && vocab > 65535)
            continue;
        for (int64_t k = 0; k < s->ntok; k++) {
            int64_t v = s->width == 2 ? ((const uint16_t *)s->tok)[k] : ((const uint32_t *)s->tok)[k];
            if (v >= vocab) {
                *err = rt_fmt("%s: token %lld is %lld, outside the vocabulary (size %lld)", s->path, (long long)k,
                           (long long)v, (long long)vocab);
                return -1;
            }
        }
    }
    return 0;
}

/* --- corpus -> shards ----------------------------------------------------- */

void rt_split_result_free(RtSplitResult *r)
{
    free(r->val_path);
    rt_glob_free(r->train_paths, r->ntrain);
    memset(r, 0, sizeof *r);
}

int rt_data_split(const char *prefix, const int32_t *ids, int64_t n, const RtSplitOptions *o, RtSplitResult *r,
                  char **err)
{
    memset(r, 0, sizeof *r);
    int64_t nval;
    if (o->val_tokens > 0) {
        nval = o->val_tokens;
    } else {
        if (!(o->val_fraction > 0 && o->val_fraction < 1)) {
            *err = rt_fmt("%s: validation fraction %g must lie strictly between 0 and 1", prefix, o->val_fraction);
            return -1;
        }
        nval = (int64_t)((double)n * o->val_fraction);
    }
    if (nval < 2 || n - nval < 2) {
        *err = rt_fmt("%s: a corpus of %lld tokens cannot give %lld to validation (each part needs at least 2)",
                   prefix, (long long)n, (long long)nval);
        return -1;
    }
    int64_t per = o->shard_tokens > 0 ? o->shard_tokens : RT_SHARD_TOKENS_DEFAULT;
    if (per > RT_SHARD_MAX_TOKENS)
        per = RT_SHARD_MAX_TOKENS;
    if (nval > RT_SHARD_MAX_TOKENS) {
        *err = rt_fmt("%s: %lld validation tokens do not fit one shard (at most %lld)", prefix, (long long)nval,
                   RT_SHARD_MAX_TOKENS);
        return -1;
    }
    int width = rt_shard_width(ids, n);
    if (width < 0) {
        for (int64_t i = 0; i < n; i++)
            if (ids[i] < 0) {
                *err = rt_fmt("%s: token %lld of the corpus is %d, negative", prefix, (long long)i, ids[i]);
                break;
            }
        return -1;
    }
    int64_t ntrain_tok = n - nval;
    int64_t nshards = (ntrain_tok + per - 1) / per;
    if (nshards > 999999) {
        *err = rt_fmt("%s: %lld train shards are too many; make them larger", prefix, (long long)nshards);
        return -1;
    }
    r->width = width;
    r->train_paths = calloc((size_t)nshards, sizeof *r->train_paths);
    if (!r->train_paths || asprintf(&r->val_path, "%s_val.bin", prefix) < 0) {
        r->val_path = NULL;
        rt_split_result_free(r);
        *err = rt_fmt("%s: out of memory", prefix);
        return -1;
    }
    for (int64_t k = 0; k < nshards; k++) {
        char *p;
        if (asprintf(&p, "%s_train_%06lld.bin", prefix, (long long)k) < 0) {
            rt_split_result_free(r);
            *err = rt_fmt("%s: out of memory", prefix);
            return -1;
        }
        r->train_paths[k] = p;
        r->ntrain = (int)k + 1;
        int64_t at = k * per, m = ntrain_tok - at < per ? ntrain_tok - at : per;
        if (rt_shard_write(p, ids + at, m, width, err) != 0) {
            rt_split_result_free(r);
            return -1;
        }
        r->train_tokens += m;
    }
    if (rt_shard_write(r->val_path, ids + ntrain_tok, nval, width, err) != 0) {
        rt_split_result_free(r);
        return -1;
    }
    r->val_tokens = nval;
    char *next;
    if (asprintf(&next, "%s_train_%06lld.bin", prefix, (long long)nshards) >= 0) {
        r->stale = access(next, F_OK) == 0;
        free(next);
    }
    return 0;
}
