/* safetensors.c - read (mmap, validate) and write (atomically) safetensors
 * files; the format and the checks are in safetensors.h.  The header is
 * JSON through jansson. */
#define _GNU_SOURCE /* vasprintf */
#include "store/safetensors.h"
#include "core/util.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/atomic_file.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c reads and writes tensors in host order, which must be little-endian"
#endif

static const struct {
    const char *name;
    size_t size;
} dtypes[] = {
#define X(e, s, n) {s, n},
    RT_DTYPES(X)
#undef X
};

const char *rt_dtype_name(RtDtype d)
{
    return (unsigned)d < RT_NDTYPES ? dtypes[d].name : "?";
}

size_t rt_dtype_size(RtDtype d)
{
    return (unsigned)d < RT_NDTYPES ? dtypes[d].size : 0;
}

int rt_dtype_parse(const char *s)
{
    for (int i = 0; i < RT_NDTYPES; i++)
        if (!strcmp(s, dtypes[i].name))
            return i;
    return -1;
}

/* "[2, 3]" into buf. */
static const char *shape_str(char *buf, size_t cap, const int64_t *shape, int ndim)
{
    size_t k = 0;
    k += (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < cap)
        snprintf(buf + k, cap - k, "]");
    return buf;
}

/* --- reader --------------------------------------------------------------- */

void rt_st_close(RtSafetensors *st)
{
    if (st->map)
        munmap(st->map, st->map_len);
    if (st->header)
        json_decref(st->header);
    free(st->path);
    free(st->t);
    free(st->meta_key);
    free(st->meta_val);
    memset(st, 0, sizeof *st);
}

/* A non-negative JSON integer, or -1. */
static long long json_count(json_t *v)
{
    if (!json_is_integer(v))
        return -1;
    long long x = json_integer_value(v);
    return x < 0 ? -1 : x;
}

/* Fills t from the header entry of one tensor; 0 or -1 with *err. */
static int parse_tensor(const char *file, const char *name, json_t *o, RtStTensor *t, char **err)
{
    t->name = name;
    if (!json_is_object(o)) {
        *err = rt_fmt("%s: tensor '%s': its header entry is not a JSON object", file, name);
        return -1;
    }
    json_t *dt = json_object_get(o, "dtype"), *sh = json_object_get(o, "shape"),
           *off = json_object_get(o, "data_offsets");
    if (!dt || !sh || !off) {
        *err = rt_fmt("%s: tensor '%s': no \"%s\" in its header entry", file, name,
                   !dt ? "dtype" : !sh ? "shape" : "data_offsets");
        return -1;
    }
    int d = json_is_string(dt) ? rt_dtype_parse(json_string_value(dt)) : -1;
    if (d < 0) {
        *err = json_is_string(dt) ? rt_fmt("%s: tensor '%s': unknown dtype \"%s\"", file, name, json_string_value(dt))
                                  : rt_fmt("%s: tensor '%s': dtype is not a string", file, name);
        return -1;
    }
    t->dtype = (RtDtype)d;
    if (!json_is_array(sh)) {
        *err = rt_fmt("%s: tensor '%s': shape is not an array", file, name);
        return -1;
    }
    if (json_array_size(sh) > RT_ST_MAX_DIMS) {
        *err = rt_fmt("%s: tensor '%s': %zu dimensions, more than the %d supported", file, name, json_array_size(sh),
                   RT_ST_MAX_DIMS);
        return -1;
    }
    t->ndim = (int)json_array_size(sh);
    uint64_t numel = 1;
    int overflow = 0;
    for (int i = 0; i < t->ndim; i++) {
        long long x = json_count(json_array_get(sh, (size_t)i));
        if (x < 0) {
            *err = rt_fmt("%s: tensor '%s': shape entry %d is not a non-negative integer", file, name, i);
            return -1;
        }
        t->shape[i] = x;
        if (x && numel > UINT64_MAX / (uint64_t)x)
            overflow = 1;
        numel *= (uint64_t)x;
    }
    if (!json_is_array(off) || json_array_size(off) != 2 || json_count(json_array_get(off, 0)) < 0 ||
        json_count(json_array_get(off, 1)) < 0) {
        *err = rt_fmt("%s: tensor '%s': data_offsets is not [BEGIN, END] with non-negative integers", file, name);
        return -1;
    }
    t->begin = (uint64_t)json_count(json_array_get(off, 0));
    t->end = (uint64_t)json_count(json_array_get(off, 1));
    if (t->begin > t->end) {
        *err = rt_fmt("%s: tensor '%s': data_offsets [%llu, %llu] end before they begin", file, name,
                   (unsigned long long)t->begin, (unsigned long long)t->end);
        return -1;
    }
    size_t es = rt_dtype_size(t->dtype);
    char sb[256];
    if (overflow || numel > INT64_MAX / es || numel * es != t->end - t->begin) {
        *err = rt_fmt("%s: tensor '%s': data_offsets [%llu, %llu] hold %llu bytes but %s %s needs %s%llu", file, name,
                   (unsigned long long)t->begin, (unsigned long long)t->end,
                   (unsigned long long)(t->end - t->begin), rt_dtype_name(t->dtype),
                   shape_str(sb, sizeof sb, t->shape, t->ndim), overflow || numel > INT64_MAX / es ? "more than " : "",
                   overflow || numel > INT64_MAX / es ? (unsigned long long)INT64_MAX
                                                      : (unsigned long long)(numel * es));
        return -1;
    }
    t->numel = (int64_t)numel;
    return 0;
}

static int by_offset(const void *a, const void *b)
{
    const RtStTensor *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return strcmp(x->name, y->name); /* a stable order for messages */
}

/* Validates buf (len bytes) into st, whose path (and map, if any) are set
 * and the rest zero; on failure closes st (the map included). */
static int st_parse(RtSafetensors *st, const void *buf, size_t len, char **err)
{
    const char *file = st->path;
    const uint8_t *p = buf;
    if (len < 8) {
        *err = rt_fmt("%s: %zu bytes, too short for a safetensors file (it starts with an 8-byte header length)",
                   file, len);
        goto fail;
    }
    uint64_t N = 0;
    for (int i = 7; i >= 0; i--)
        N = N << 8 | p[i];
    if (N > RT_ST_MAX_HEADER) {
        *err = rt_fmt("%s: header length %llu is over the limit of %llu bytes (not a safetensors file?)", file,
                   (unsigned long long)N, RT_ST_MAX_HEADER);
        goto fail;
    }
    if (N > len - 8) {
        *err = rt_fmt("%s: header length %llu runs past the end of the file (%zu bytes; truncated?)", file,
                   (unsigned long long)N, len);
        goto fail;
    }
    if (N < 2 || p[8] != '{') {
        *err = rt_fmt("%s: the header does not start with '{' (not a safetensors file?)", file);
        goto fail;
    }
    json_error_t je;
    st->header = json_loadb((const char *)p + 8, (size_t)N, JSON_REJECT_DUPLICATES, &je);
    if (!st->header) {
        *err = rt_fmt("%s: bad header JSON at byte %d of the header: %s", file, je.position, je.text);
        goto fail;
    }
    if (!json_is_object(st->header)) {
        *err = rt_fmt("%s: the header is not a JSON object", file);
        goto fail;
    }
    size_t cap = json_object_size(st->header);
    st->t = calloc(cap ? cap : 1, sizeof *st->t);
    if (!st->t) {
        *err = rt_fmt("%s: out of memory", file);
        goto fail;
    }
    const char *key;
    json_t *v;
    json_object_foreach(st->header, key, v) {
        if (strcmp(key, "__metadata__") != 0) {
            if (parse_tensor(file, key, v, &st->t[st->n], err) != 0)
                goto fail;
            st->n++;
            continue;
        }
        if (!json_is_object(v)) {
            *err = rt_fmt("%s: __metadata__ is not a JSON object", file);
            goto fail;
        }
        size_t m = json_object_size(v);
        st->meta_key = calloc(m ? m : 1, sizeof *st->meta_key);
        st->meta_val = calloc(m ? m : 1, sizeof *st->meta_val);
        if (!st->meta_key || !st->meta_val) {
            *err = rt_fmt("%s: out of memory", file);
            goto fail;
        }
        const char *mk;
        json_t *mv;
        json_object_foreach(v, mk, mv) {
            if (!json_is_string(mv)) {
                *err = rt_fmt("%s: __metadata__ '%s' is not a string", file, mk);
                goto fail;
            }
            st->meta_key[st->nmeta] = mk;
            st->meta_val[st->nmeta++] = json_string_value(mv);
        }
    }
    /* In offset order the tensors must tile the data exactly. */
    uint64_t data_len = len - 8 - N;
    for (int i = 0; i < st->n; i++)
        if (st->t[i].end > data_len) {
            *err = rt_fmt("%s: tensor '%s': data_offsets [%llu, %llu] run past the end of the data (%llu bytes; "
                       "truncated?)", file, st->t[i].name, (unsigned long long)st->t[i].begin,
                       (unsigned long long)st->t[i].end, (unsigned long long)data_len);
            goto fail;
        }
    qsort(st->t, (size_t)st->n, sizeof *st->t, by_offset);
    uint64_t at = 0;
    for (int i = 0; i < st->n; i++) {
        const RtStTensor *t = &st->t[i];
        if (t->begin < at) {
            *err = rt_fmt("%s: tensors '%s' [%llu, %llu] and '%s' [%llu, %llu] overlap", file, st->t[i - 1].name,
                       (unsigned long long)st->t[i - 1].begin, (unsigned long long)st->t[i - 1].end, t->name,
                       (unsigned long long)t->begin, (unsigned long long)t->end);
            goto fail;
        }
        if (t->begin > at) {
            *err = rt_fmt("%s: data bytes [%llu, %llu) belong to no tensor (before '%s')", file,
                       (unsigned long long)at, (unsigned long long)t->begin, t->name);
            goto fail;
        }
        at = t->end;
    }
    if (at != data_len) {
        *err = rt_fmt("%s: the last %llu bytes of the data belong to no tensor", file,
                   (unsigned long long)(data_len - at));
        goto fail;
    }
    for (int i = 0; i < st->n; i++)
        st->t[i].data = p + 8 + N + st->t[i].begin;
    return 0;
fail:
    rt_st_close(st);
    return -1;
}

int rt_st_parse(RtSafetensors *st, const char *name, const void *buf, size_t len, char **err)
{
    memset(st, 0, sizeof *st);
    if (!(st->path = strdup(name))) {
        *err = rt_fmt("%s: out of memory", name);
        return -1;
    }
    return st_parse(st, buf, len, err);
}

int rt_st_open(RtSafetensors *st, const char *path, char **err)
{
    memset(st, 0, sizeof *st);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *err = rt_fmt("%s: %s", path, strerror(errno));
        return -1;
    }
    struct stat sb;
    int got = fstat(fd, &sb);
    if (got != 0 || !S_ISREG(sb.st_mode)) {
        /* a directory is most likely a Hugging Face model given as a checkpoint */
        if (got == 0 && S_ISDIR(sb.st_mode))
            *err = rt_fmt("%s: a directory, not a safetensors file (a Hugging Face model directory is read by "
                          "`strata import` or `strata train|sft MODEL --init DIR`)",
                          path);
        else
            *err = rt_fmt("%s: not a regular file", path);
        close(fd);
        return -1;
    }
    size_t len = (size_t)sb.st_size;
    void *map = NULL;
    if (len > 0) {
        map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            *err = rt_fmt("%s: cannot map: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
    }
    close(fd);
    st->map = map;
    st->map_len = len;
    if (!(st->path = strdup(path))) {
        *err = rt_fmt("%s: out of memory", path);
        rt_st_close(st);
        return -1;
    }
    return st_parse(st, map ? map : "", len, err);
}

const RtStTensor *rt_st_find(const RtSafetensors *st, const char *name)
{
    for (int i = 0; i < st->n; i++)
        if (!strcmp(st->t[i].name, name))
            return &st->t[i];
    return NULL;
}

const char *rt_st_meta(const RtSafetensors *st, const char *key)
{
    for (int i = 0; i < st->nmeta; i++)
        if (!strcmp(st->meta_key[i], key))
            return st->meta_val[i];
    return NULL;
}

int rt_st_read(const RtSafetensors *st, const char *name, RtDtype dtype, const int64_t *shape, int ndim, void *out,
               char **err)
{
    const RtStTensor *t = rt_st_find(st, name);
    if (!t) {
        *err = rt_fmt("%s: no tensor '%s'", st->path, name);
        return -1;
    }
    if (t->dtype != dtype) {
        *err = rt_fmt("%s: tensor '%s' is %s, expected %s", st->path, name, rt_dtype_name(t->dtype),
                   rt_dtype_name(dtype));
        return -1;
    }
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = t->shape[i] == shape[i];
    if (!same) {
        char a[256], b[256];
        *err = rt_fmt("%s: tensor '%s' has shape %s, expected %s", st->path, name, shape_str(a, sizeof a, t->shape, t->ndim),
                   shape_str(b, sizeof b, shape, ndim < 0 ? 0 : ndim > RT_ST_MAX_DIMS ? RT_ST_MAX_DIMS : ndim));
        return -1;
    }
    if (t->end > t->begin)
        memcpy(out, t->data, (size_t)(t->end - t->begin));
    return 0;
}

/* --- writer --------------------------------------------------------------- */

void rt_st_writer_init(RtStWriter *w)
{
    memset(w, 0, sizeof *w);
}

void rt_st_writer_free(RtStWriter *w)
{
    for (int i = 0; i < w->n; i++)
        free(w->e[i].name);
    for (int i = 0; i < w->nmeta; i++) {
        free(w->meta_key[i]);
        free(w->meta_val[i]);
    }
    free(w->e);
    free(w->meta_key);
    free(w->meta_val);
    memset(w, 0, sizeof *w);
}

/* Valid UTF-8 (jansson refuses anything else in a string). */
static int utf8_ok(const char *s)
{
    json_t *j = json_string(s);
    json_decref(j);
    return j != NULL;
}

int rt_st_add(RtStWriter *w, const char *name, RtDtype dtype, const int64_t *shape, int ndim, const void *data,
              char **err)
{
    if (!*name || !strcmp(name, "__metadata__") || !utf8_ok(name)) {
        *err = rt_fmt("tensor name '%s' is %s", name, *name ? (utf8_ok(name) ? "reserved" : "not UTF-8") : "empty");
        return -1;
    }
    for (int i = 0; i < w->n; i++)
        if (!strcmp(w->e[i].name, name)) {
            *err = rt_fmt("tensor '%s' is added twice", name);
            return -1;
        }
    if ((unsigned)dtype >= RT_NDTYPES) {
        *err = rt_fmt("tensor '%s': bad dtype %d", name, (int)dtype);
        return -1;
    }
    if (ndim < 0 || ndim > RT_ST_MAX_DIMS) {
        *err = rt_fmt("tensor '%s': %d dimensions (at most %d)", name, ndim, RT_ST_MAX_DIMS);
        return -1;
    }
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (shape[i] && numel > INT64_MAX / 8 / shape[i])) {
            *err = rt_fmt("tensor '%s': bad shape entry %lld", name, (long long)shape[i]);
            return -1;
        }
        numel *= shape[i];
    }
    if (numel && !data) {
        *err = rt_fmt("tensor '%s': no data", name);
        return -1;
    }
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 16;
        RtStEntry *e = realloc(w->e, (size_t)cap * sizeof *e);
        if (!e) {
            *err = rt_fmt("tensor '%s': out of memory", name);
            return -1;
        }
        w->e = e;
        w->cap = cap;
    }
    RtStEntry *e = &w->e[w->n];
    memset(e, 0, sizeof *e);
    if (!(e->name = strdup(name))) {
        *err = rt_fmt("tensor '%s': out of memory", name);
        return -1;
    }
    e->dtype = dtype;
    e->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        e->shape[i] = shape[i];
    e->data = data;
    w->n++;
    return 0;
}

int rt_st_add_meta(RtStWriter *w, const char *key, const char *value, char **err)
{
    if (!utf8_ok(key) || !utf8_ok(value)) {
        *err = rt_fmt("metadata '%s': not valid UTF-8", key);
        return -1;
    }
    char *v = strdup(value);
    if (!v) {
        *err = rt_fmt("metadata '%s': out of memory", key);
        return -1;
    }
    for (int i = 0; i < w->nmeta; i++)
        if (!strcmp(w->meta_key[i], key)) {
            free(w->meta_val[i]);
            w->meta_val[i] = v;
            return 0;
        }
    if (w->nmeta == w->meta_cap) {
        int cap = w->meta_cap ? 2 * w->meta_cap : 8;
        char **k = realloc(w->meta_key, (size_t)cap * sizeof *k);
        if (k)
            w->meta_key = k;
        char **vv = k ? realloc(w->meta_val, (size_t)cap * sizeof *vv) : NULL;
        if (!vv) {
            free(v);
            *err = rt_fmt("metadata '%s': out of memory", key);
            return -1;
        }
        w->meta_val = vv;
        w->meta_cap = cap;
    }
    if (!(w->meta_key[w->nmeta] = strdup(key))) {
        free(v);
        *err = rt_fmt("metadata '%s': out of memory", key);
        return -1;
    }
    w->meta_val[w->nmeta++] = v;
    return 0;
}

static int64_t entry_bytes(const RtStEntry *e)
{
    int64_t n = (int64_t)rt_dtype_size(e->dtype);
    for (int i = 0; i < e->ndim; i++)
        n *= e->shape[i];
    return n;
}

static int by_layout(const void *a, const void *b)
{
    const RtStEntry *x = *(const RtStEntry *const *)a, *y = *(const RtStEntry *const *)b;
    size_t sx = rt_dtype_size(x->dtype), sy = rt_dtype_size(y->dtype);
    if (sx != sy)
        return sx > sy ? -1 : 1;
    return strcmp(x->name, y->name);
}

int rt_st_write(const RtStWriter *w, const char *path, char **err)
{
    const RtStEntry **order = calloc(w->n ? (size_t)w->n : 1, sizeof *order);
    json_t *h = json_object(), *meta = json_object();
    char *text = NULL;
    int rc = -1;
    if (!order || !h || !meta) {
        *err = rt_fmt("%s: out of memory", path);
        goto done;
    }
    for (int i = 0; i < w->n; i++)
        order[i] = &w->e[i];
    qsort(order, (size_t)w->n, sizeof *order, by_layout);
    int bad = 0;
    if (w->nmeta) {
        for (int i = 0; i < w->nmeta; i++)
            bad |= json_object_set_new(meta, w->meta_key[i], json_string(w->meta_val[i]));
        bad |= json_object_set(h, "__metadata__", meta);
    }
    uint64_t at = 0;
    for (int i = 0; i < w->n; i++) {
        const RtStEntry *e = order[i];
        json_t *shape = json_array(), *t = json_object();
        for (int d = 0; d < e->ndim; d++)
            bad |= json_array_append_new(shape, json_integer(e->shape[d]));
        uint64_t end = at + (uint64_t)entry_bytes(e);
        bad |= json_object_set_new(t, "dtype", json_string(rt_dtype_name(e->dtype)));
        bad |= json_object_set_new(t, "shape", shape);
        bad |= json_object_set_new(t, "data_offsets", json_pack("[II]", (json_int_t)at, (json_int_t)end));
        bad |= json_object_set_new(h, e->name, t);
        at = end;
    }
    text = bad ? NULL : json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!text) {
        *err = rt_fmt("%s: cannot build the header (out of memory)", path);
        goto done;
    }
    size_t N = strlen(text), padded = (N + 7) / 8 * 8;
    uint8_t len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    RtAtomicFile a;
    if (rt_atomic_open(&a, path, err) != 0)
        goto done;
    rt_atomic_write(&a, len8, 8);
    rt_atomic_write(&a, text, N);
    rt_atomic_write(&a, "        ", padded - N);
    for (int i = 0; i < w->n; i++)
        rt_atomic_write(&a, order[i]->data, (size_t)entry_bytes(order[i]));
    rc = rt_atomic_commit(&a, err);
done:
    free(order);
    free(text);
    json_decref(h);
    json_decref(meta);
    return rc;
}
