/* data.c - token shards, the batch loader, the train/val split (data.h).
 * Shards are mmap'd read-only for the checks, and their windows read with
 * pread (shard_drop says why); the shuffle is xoshiro256** + Fisher-Yates
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

#include <jansson.h>
#include <zlib.h>

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
    if (s->map) {
        munmap(s->map, s->map_len);
        close(s->fd);
    }
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
    if (le32(p + 12) == RT_SHARD_MARK) { /* a shard of a set strata data wrote */
        s->set_id = (uint64_t)(uint32_t)le32(p + 16) | (uint64_t)(uint32_t)le32(p + 20) << 32;
        s->set_role = le32(p + 24);
        s->set_index = le32(p + 28);
        s->set_count = le32(p + 32);
        s->set_crc = (uint32_t)le32(p + 36);
        if (!s->set_id || (s->set_role != RT_SHARD_TRAIN && s->set_role != RT_SHARD_VAL) || s->set_count < 1 ||
            s->set_index < 0 || s->set_index >= s->set_count) {
            *err = rt_fmt("%s: the header's shard-set mark is damaged (role %d, shard %d of %d)", path, s->set_role,
                          s->set_index, s->set_count);
            return -1;
        }
    }
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
    if (map == MAP_FAILED) {
        *err = rt_fmt("%s: cannot map: %s", path, strerror(errno));
        close(fd);
        rt_shard_close(s);
        return -1;
    }
    s->map = map;
    s->fd = fd;
    s->map_len = len;
    if (shard_check(s, map, len, err) != 0) {
        rt_shard_close(s);
        return -1;
    }
    s->tok = (const uint8_t *)map + RT_SHARD_HEADER_BYTES;
    madvise(map, len, MADV_RANDOM);
    return 0;
}

/* Drops this process's pages of tokens [from, from + n) of the map: they
 * stay in the page cache and come back on the next read, since the map is
 * never written.  Whole scans (rt_loader_check_vocab) drop what they have
 * read, and the loader reads its windows with pread, so a run's resident
 * memory does not grow with the data it has seen (a long run would
 * otherwise count every shard it read in its RSS). */
static void shard_drop(const RtShard *s, int64_t from, int64_t n)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t base = (uintptr_t)s->map, end = base + s->map_len;
    uintptr_t a = (uintptr_t)s->tok + (uintptr_t)from * (uintptr_t)s->width, b = a + (uintptr_t)n * (uintptr_t)s->width;
    a &= ~(page - 1);
    b = ((b < end ? b : end) + page - 1) & ~(page - 1);
    if (a >= base && b > a)
        madvise((void *)a, b - a, MADV_DONTNEED);
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

/* The mark of a set's shard in a header (data.h); set_id 0: none. */
typedef struct ShardMark {
    uint64_t set_id;
    int role, index, count;
    uint32_t crc;
} ShardMark;

/* Checks ids for a shard of the given width (0: the ids' own); the width,
 * or -1 with *err. */
static int shard_width_for(const char *path, const int32_t *ids, int64_t n, int width, char **err)
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
    return width;
}

enum { CHUNK = 1 << 16 };

/* ids[0..m) as little-endian tokens of the width into buf; the bytes. */
static size_t pack(uint8_t *buf, const int32_t *ids, int64_t m, int width)
{
    for (int64_t k = 0; k < m; k++) {
        uint32_t v = (uint32_t)ids[k];
        uint8_t *p = buf + k * width;
        p[0] = (uint8_t)v;
        p[1] = (uint8_t)(v >> 8);
        if (width == 4) {
            p[2] = (uint8_t)(v >> 16);
            p[3] = (uint8_t)(v >> 24);
        }
    }
    return (size_t)(m * width);
}

/* CRC-32 of the tokens' bytes as a shard of that width holds them. */
static uint32_t ids_crc(const int32_t *ids, int64_t n, int width, uint8_t *buf)
{
    uLong crc = crc32(0L, Z_NULL, 0);
    for (int64_t i = 0; i < n; i += CHUNK)
        crc = crc32_z(crc, buf, pack(buf, ids + i, n - i < CHUNK ? n - i : CHUNK, width));
    return (uint32_t)crc;
}

/* Writes a shard into a, opened by rt_atomic_open; the caller commits or
 * aborts it.  buf: CHUNK * 4 bytes. */
static void shard_put(RtAtomicFile *a, const int32_t *ids, int64_t n, int width, const ShardMark *mark,
                      uint8_t *buf)
{
    uint8_t header[RT_SHARD_HEADER_BYTES] = {0};
    put_le32(header, width == 2 ? RT_SHARD_MAGIC_U16 : RT_SHARD_MAGIC_U32);
    put_le32(header + 4, width == 2 ? RT_SHARD_VERSION_U16 : RT_SHARD_VERSION_U32);
    put_le32(header + 8, (int32_t)n);
    if (mark && mark->set_id) {
        put_le32(header + 12, RT_SHARD_MARK);
        put_le32(header + 16, (int32_t)(uint32_t)mark->set_id);
        put_le32(header + 20, (int32_t)(uint32_t)(mark->set_id >> 32));
        put_le32(header + 24, mark->role);
        put_le32(header + 28, mark->index);
        put_le32(header + 32, mark->count);
        put_le32(header + 36, (int32_t)mark->crc);
    }
    rt_atomic_write(a, header, sizeof header);
    for (int64_t i = 0; i < n; i += CHUNK)
        rt_atomic_write(a, buf, pack(buf, ids + i, n - i < CHUNK ? n - i : CHUNK, width));
}

int rt_shard_write(const char *path, const int32_t *ids, int64_t n, int width, char **err)
{
    width = shard_width_for(path, ids, n, width, err);
    if (width < 0)
        return -1;
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
    shard_put(&a, ids, n, width, NULL, buf);
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
    free(l->win);
    memset(l, 0, sizeof *l);
}

/* PREFIX.manifest.json of a set's shard PREFIX_train_NNNNNN.bin or
 * PREFIX_val.bin (malloc'd), or NULL for another name. */
static char *manifest_of(const char *path)
{
    size_t n = strlen(path), k = strlen("_train_000000.bin");
    if (n > 8 && !strcmp(path + n - 8, "_val.bin"))
        return rt_fmt("%.*s.manifest.json", (int)(n - 8), path);
    if (n > k && !strncmp(path + n - k, "_train_", 7) && !strcmp(path + n - 4, ".bin") &&
        strspn(path + n - k + 7, "0123456789") == 6)
        return rt_fmt("%.*s.manifest.json", (int)(n - k), path);
    return NULL;
}

/* The "id" of a manifest, 0 when unreadable (*why says so). */
static uint64_t manifest_id(const char *mpath, const char **why)
{
    json_error_t je;
    json_t *j = json_load_file(mpath, 0, &je);
    json_t *id = json_object_get(j, "id");
    uint64_t v = 0;
    if (json_is_string(id))
        v = strtoull(json_string_value(id), NULL, 16);
    *why = !j ? (access(mpath, F_OK) ? "is missing" : "is not valid JSON") : !v ? "has no \"id\"" : NULL;
    json_decref(j);
    return v;
}

/* Every shard of a set that strata data wrote needs its set's manifest
 * beside it, naming the same set: otherwise it is left from an earlier
 * set under the same prefix, or from a `strata data` that was killed. */
static int check_sets(const RtLoader *l, char **err)
{
    char *last = NULL; /* the manifest read last and its id: shards of one set come together */
    uint64_t last_id = 0;
    const char *why = NULL;
    int rc = 0;
    for (int i = 0; i < l->nshard && !rc; i++) {
        const RtShard *s = &l->shard[i];
        char *mpath = s->set_id ? manifest_of(s->path) : NULL;
        if (!mpath)
            continue;
        if (!last || strcmp(last, mpath)) {
            free(last);
            last = rt_fmt("%s", mpath);
            last_id = manifest_id(mpath, &why);
        }
        if (!last_id) {
            *err = rt_fmt("%s: belongs to shard set %016llx, but its manifest %s %s: a `strata data` that was "
                          "interrupted? (run it again)", s->path, (unsigned long long)s->set_id, mpath, why);
            rc = -1;
        } else if (last_id != s->set_id) {
            *err = rt_fmt("%s: belongs to shard set %016llx, but %s describes set %016llx: the file is left from "
                          "another `strata data` with that prefix, and a glob would mix two corpora (delete it, "
                          "or run strata data again)", s->path, (unsigned long long)s->set_id, mpath,
                          (unsigned long long)last_id);
            rc = -1;
        }
        free(mpath);
    }
    free(last);
    return rc;
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
    l->win = malloc(((size_t)T + 1) * 4);
    if (!l->shard || !l->first || !l->win) {
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
    if (check_sets(l, err) != 0) {
        rt_loader_free(l);
        return -1;
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

/* Copies window w into one row of tokens and targets, read with pread
 * (through the map, the pages read would stay in the process). */
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
    size_t want = (size_t)(l->T + 1) * (size_t)s->width, got = 0;
    off_t off = (off_t)RT_SHARD_HEADER_BYTES + (off_t)at * s->width;
    while (got < want) {
        ssize_t r = pread(s->fd, l->win + got, want - got, off + (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            fprintf(stderr, "strata: error: %s: cannot read tokens %lld..%lld: %s\n", s->path, (long long)at,
                    (long long)(at + l->T), r < 0 ? strerror(errno) : "the file is shorter than when it was opened");
            exit(1);
        }
        got += (size_t)r;
    }
    for (int t = 0; t <= l->T; t++) {
        const uint8_t *p = l->win + (size_t)t * (size_t)s->width;
        int32_t v = s->width == 2 ? (int32_t)(p[0] | p[1] << 8) : le32(p);
        if (t < l->T)
            tok[t] = v;
        if (t > 0)
            tgt[t - 1] = v;
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

int rt_loader_check_vocab(RtLoader *l, int64_t vocab, char **err)
{
    enum { CHUNK = 1 << 20 }; /* tokens read, then dropped (shard_drop) */
    uint64_t id = RT_FNV64_INIT;
    for (int i = 0; i < l->nshard; i++) {
        const RtShard *s = &l->shard[i];
        int scan = !(s->width == 2 && vocab > 65535);
        int64_t bad = -1, badv = 0;
        uint32_t crc = (uint32_t)crc32(0L, Z_NULL, 0);
        for (int64_t k0 = 0; k0 < s->ntok; k0 += CHUNK) {
            int64_t k1 = k0 + CHUNK < s->ntok ? k0 + CHUNK : s->ntok;
            crc = (uint32_t)crc32_z(crc, (const uint8_t *)s->tok + k0 * s->width, (size_t)((k1 - k0) * s->width));
            for (int64_t k = k0; scan && bad < 0 && k < k1; k++) {
                int64_t v = s->width == 2 ? ((const uint16_t *)s->tok)[k] : ((const uint32_t *)s->tok)[k];
                if (v >= vocab)
                    bad = k, badv = v;
            }
            shard_drop(s, k0, k1 - k0);
        }
        if (s->set_id && crc != s->set_crc) {
            *err = rt_fmt("%s: the tokens' CRC-32 is %08x but strata data wrote %08x in the header: the file was "
                          "damaged or edited since", s->path, crc, s->set_crc);
            return -1;
        }
        if (bad >= 0) {
            *err = rt_fmt("%s: token %lld is %lld, outside the vocabulary (size %lld)", s->path, (long long)bad,
                          (long long)badv, (long long)vocab);
            return -1;
        }
        int64_t what[3] = {s->ntok, s->width, crc};
        id = rt_fnv64(id, what, sizeof what);
    }
    l->id = id ? id : 1;
    return 0;
}

/* --- corpus -> shards ----------------------------------------------------- */

void rt_split_result_free(RtSplitResult *r)
{
    free(r->val_path);
    free(r->manifest_path);
    rt_glob_free(r->train_paths, r->ntrain);
    memset(r, 0, sizeof *r);
}

/* The file name without its directory. */
static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* PREFIX.manifest.json's text (malloc'd): see data.h.  marks and tokens:
 * the train shards', then the val shard's. */
static char *manifest_text(const RtSplitResult *r, const RtSplitOptions *o, const ShardMark *marks,
                           const int64_t *tokens)
{
    json_t *j = json_object(), *train = json_array();
    char hex[24];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)r->id);
    json_object_set_new(j, "format", json_string("strata shard set"));
    json_object_set_new(j, "version", json_integer(1));
    json_object_set_new(j, "id", json_string(hex));
    json_object_set_new(j, "tokenizer", o->tokenizer ? json_string(o->tokenizer) : json_null());
    json_object_set_new(j, "vocab", o->vocab > 0 ? json_integer(o->vocab) : json_null());
    json_object_set_new(j, "width", json_integer(r->width));
    json_object_set_new(j, "train_tokens", json_integer(r->train_tokens));
    json_object_set_new(j, "val_tokens", json_integer(r->val_tokens));
    for (int k = 0; k <= r->ntrain; k++) {
        json_t *f = json_object();
        snprintf(hex, sizeof hex, "%08x", marks[k].crc);
        json_object_set_new(f, "file", json_string(base_name(k < r->ntrain ? r->train_paths[k] : r->val_path)));
        json_object_set_new(f, "tokens", json_integer(tokens[k]));
        json_object_set_new(f, "crc32", json_string(hex));
        if (k < r->ntrain)
            json_array_append_new(train, f);
        else
            json_object_set_new(j, "val", f);
    }
    json_object_set_new(j, "train", train);
    json_t *in = json_array();
    for (int i = 0; i < o->ninputs; i++)
        json_array_append_new(in, json_string(o->inputs[i]));
    json_object_set_new(j, "inputs", in);
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(j);
    return text;
}

/* Deletes PREFIX_train_NNNNNN.bin for NNNNNN >= keep: the train shards of
 * an earlier, larger set.  The number deleted, or -1 with *err. */
static int remove_old_train(const char *prefix, int64_t keep, char **err)
{
    char *pattern = rt_fmt("%s_train_[0-9][0-9][0-9][0-9][0-9][0-9].bin", prefix);
    glob_t g;
    int n = 0, rc = glob(pattern, 0, NULL, &g);
    free(pattern);
    if (rc == GLOB_NOMATCH)
        return 0;
    if (rc != 0) {
        *err = rt_fmt("%s_train_*.bin: cannot list the directory", prefix);
        return -1;
    }
    for (size_t i = 0; i < g.gl_pathc && n >= 0; i++) {
        const char *f = g.gl_pathv[i];
        if (strtoll(f + strlen(prefix) + 7, NULL, 10) < keep)
            continue; /* replaced by rename */
        if (unlink(f) != 0) {
            *err = rt_fmt("%s: cannot remove this train shard of an earlier set: %s", f, strerror(errno));
            n = -1;
        } else
            n++;
    }
    globfree(&g);
    return n;
}

/* Deletes the temporary files that killed runs of strata data left under
 * PREFIX (PREFIX_train_NNNNNN.bin.tmp.PID, ...; dead PIDs only). */
static void clean_stale_set(const char *prefix)
{
    char *pattern = rt_fmt("%s_*.bin.tmp.*", prefix);
    glob_t g;
    if (glob(pattern, GLOB_NOSORT, NULL, &g) == 0) {
        for (size_t i = 0; i < g.gl_pathc; i++) {
            char *stem = rt_fmt("%s", g.gl_pathv[i]);
            *strstr(stem + strlen(prefix), ".tmp.") = 0;
            rt_atomic_clean_stale(stem, NULL);
            free(stem);
        }
        globfree(&g);
    }
    free(pattern);
    char *manifest = rt_fmt("%s.manifest.json", prefix);
    rt_atomic_clean_stale(manifest, NULL);
    free(manifest);
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
    /* (nshards + 1) each: the train shards, then val */
    ShardMark *marks = calloc((size_t)nshards + 1, sizeof *marks);
    int64_t *at = calloc((size_t)nshards + 1, sizeof *at), *len = calloc((size_t)nshards + 1, sizeof *len);
    RtAtomicFile *files = calloc((size_t)nshards + 1, sizeof *files);
    uint8_t *buf = malloc(CHUNK * 4);
    if (!r->train_paths || !marks || !at || !len || !files || !buf) {
        free(marks), free(at), free(len), free(files), free(buf);
        rt_split_result_free(r);
        *err = rt_fmt("%s: out of memory", prefix);
        return -1;
    }
    r->val_path = rt_fmt("%s_val.bin", prefix);
    r->manifest_path = rt_fmt("%s.manifest.json", prefix);
    for (int64_t k = 0; k < nshards; k++)
        r->train_paths[k] = rt_fmt("%s_train_%06lld.bin", prefix, (long long)k);
    r->ntrain = (int)nshards;
    r->train_tokens = ntrain_tok;
    r->val_tokens = nval;
    /* The set's id: its layout and every shard's CRC-32. */
    uint64_t id = rt_fnv64(RT_FNV64_INIT, "strata shard set 1", 18);
    for (int64_t k = 0; k <= nshards; k++) {
        at[k] = k < nshards ? k * per : ntrain_tok;
        len[k] = k < nshards ? (ntrain_tok - at[k] < per ? ntrain_tok - at[k] : per) : nval;
        marks[k].crc = ids_crc(ids + at[k], len[k], width, buf);
        int64_t what[4] = {k < nshards ? RT_SHARD_TRAIN : RT_SHARD_VAL, len[k], width, marks[k].crc};
        id = rt_fnv64(id, what, sizeof what);
    }
    r->id = id ? id : 1;
    /* 1. Every shard under its temporary name (a kill leaves only those). */
    clean_stale_set(prefix);
    int64_t staged = 0;
    int rc = 0;
    for (int64_t k = 0; k <= nshards && !rc; k++) {
        const char *path = k < nshards ? r->train_paths[k] : r->val_path;
        marks[k] = (ShardMark){.set_id = r->id, .role = k < nshards ? RT_SHARD_TRAIN : RT_SHARD_VAL,
                               .index = k < nshards ? (int)k : 0, .count = k < nshards ? (int)nshards : 1,
                               .crc = marks[k].crc};
        rc = rt_atomic_open(&files[k], path, err);
        if (!rc) {
            staged = k + 1;
            shard_put(&files[k], ids + at[k], len[k], width, &marks[k], buf);
            rc = rt_atomic_close(&files[k], err);
            if (rc)
                staged = k; /* rt_atomic_close freed it */
        }
    }
    /* 2. The old set goes: its manifest first (a shard without its manifest
     * is refused), then its surplus train shards; 3. the new shards in. */
    int removed = 0;
    if (!rc && unlink(r->manifest_path) != 0 && errno != ENOENT) {
        *err = rt_fmt("%s: cannot remove the manifest of the earlier set: %s", r->manifest_path, strerror(errno));
        rc = -1;
    }
    if (!rc && (removed = remove_old_train(prefix, nshards, err)) < 0)
        rc = -1;
    for (int64_t k = 0; k < staged; k++) {
        if (rc)
            rt_atomic_abort(&files[k]);
        else
            rc = rt_atomic_commit(&files[k], err);
    }
    /* 4. The manifest: now the set is whole. */
    char *text = rc ? NULL : manifest_text(r, o, marks, len);
    if (!rc && !text) {
        *err = rt_fmt("%s: out of memory", r->manifest_path);
        rc = -1;
    }
    if (!rc)
        rc = rt_atomic_write_file(r->manifest_path, text, strlen(text), err);
    free(text), free(marks), free(at), free(len), free(files), free(buf);
    if (rc) {
        rt_split_result_free(r);
        return -1;
    }
    r->removed = removed;
    return 0;
}
