/* gemm_table.c - the tuning table of the matrix-product layer (gemm.h): per
 * CPU model, the name of the backend that won each product shape when
 * rt_gemm_tune (gemm_tune.c) timed them all on this host.  The file, $STRATA_CACHE_DIR (else
 * $XDG_CACHE_HOME/strata, else ~/.cache/strata) / gemm-VENDOR-FAMILY-MODEL.json:
 *   {"cpu": "...", "isa": "avx512_bf16",
 *    "products": [{"flags": 2, "M": 1024, "N": 1368, "K": 512,
 *                  "backend": "strata", "gflops": {"strata": 93.1, ...}}, ...]}
 * is read once per process; a product uses the entry with its flags, N and
 * K and the M nearest its own.  Written atomically (temporary + rename). */
#define _GNU_SOURCE /* asprintf */
#include "core/gemm.h"

#include "core/cpu.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct Entry {
    int64_t flags, M, N, K;
    char name[16];          /* the backend's */
} Entry;

static Entry *table;
static int ntable;
static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t table_mu = PTHREAD_MUTEX_INITIALIZER;

static char *cache_dir(void)
{
    const char *s = getenv("STRATA_CACHE_DIR"), *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
    char *d = NULL;
    int n = s && *s ? asprintf(&d, "%s", s) : x && *x ? asprintf(&d, "%s/strata", x)
          : asprintf(&d, "%s/.cache/strata", h && *h ? h : ".");
    return n < 0 ? NULL : d;
}

char *rt_gemm_table_path(void)
{
    char key[64], *d = cache_dir(), *p = NULL;
    rt_cpu_key(rt_cpu(), key, sizeof key);
    if (!d || asprintf(&p, "%s/gemm-%s.json", d, key) < 0)
        p = NULL;
    free(d);
    return p;
}

static void add_entry(int64_t flags, int64_t M, int64_t N, int64_t K, const char *name)
{
    Entry e = {flags, M, N, K, ""};
    snprintf(e.name, sizeof e.name, "%s", name);
    for (int i = 0; i < ntable; i++)
        if (table[i].flags == flags && table[i].M == M && table[i].N == N && table[i].K == K) {
            table[i] = e;
            return;
        }
    Entry *t = realloc(table, sizeof *t * (size_t)(ntable + 1));
    if (!t)
        return; /* a table without this entry: the default choice */
    table = t;
    table[ntable++] = e;
}

/* A bad or foreign file is ignored with a note: the defaults then apply. */
static void load(void)
{
    char *path = rt_gemm_table_path();
    json_error_t e;
    json_t *j = path ? json_load_file(path, 0, &e) : NULL;
    if (!j) {
        if (path && access(path, F_OK) == 0)
            fprintf(stderr, "strata: note: ignoring the matrix-product tuning table %s: %s (line %d)\n", path,
                    e.text, e.line);
        free(path);
        return;
    }
    json_t *ps = json_object_get(j, "products"), *p;
    size_t i;
    json_array_foreach(ps, i, p) {
        json_t *f = json_object_get(p, "flags"), *m = json_object_get(p, "M"), *n = json_object_get(p, "N");
        json_t *k = json_object_get(p, "K"), *b = json_object_get(p, "backend");
        if (json_is_integer(f) && json_is_integer(m) && json_is_integer(n) && json_is_integer(k) && json_is_string(b))
            add_entry(json_integer_value(f), json_integer_value(m), json_integer_value(n), json_integer_value(k),
                      json_string_value(b));
    }
    json_decref(j);
    free(path);
}

const char *rt_gemm_table_lookup(int flags, int64_t M, int64_t N, int64_t K)
{
    pthread_once(&load_once, load);
    pthread_mutex_lock(&table_mu);
    const char *best = NULL;
    double dist = INFINITY;
    for (int i = 0; i < ntable; i++) {
        const Entry *e = &table[i];
        if (e->flags != flags || e->N != N || e->K != K)
            continue;
        double d = fabs(log((double)(e->M > 0 ? e->M : 1)) - log((double)(M > 0 ? M : 1)));
        if (d < dist)
            dist = d, best = e->name;
    }
    pthread_mutex_unlock(&table_mu);
    return best;
}

static int mkdirs(const char *path)
{
    char *p = strdup(path);
    if (!p)
        return -1;
    for (char *s = p + 1; *s; s++)
        if (*s == '/') {
            *s = 0;
            if (mkdir(p, 0777) && errno != EEXIST) {
                free(p);
                return -1;
            }
            *s = '/';
        }
    free(p);
    return 0;
}

void rt_gemm_table_set(int flags, int64_t M, int64_t N, int64_t K, const char *backend)
{
    pthread_once(&load_once, load);
    pthread_mutex_lock(&table_mu);
    add_entry(flags, M, N, K, backend);
    pthread_mutex_unlock(&table_mu);
}

static int write_table(const char *path, char **err)
{
    const RtCpu *cpu = rt_cpu();
    json_t *j = json_object(), *ps = json_array();
    json_object_set_new(j, "cpu", json_string(cpu->brand[0] ? cpu->brand : cpu->vendor));
    json_object_set_new(j, "isa", json_string(rt_cpu_isa_name(cpu)));
    for (int i = 0; i < ntable; i++) {
        json_t *p = json_object();
        json_object_set_new(p, "flags", json_integer(table[i].flags));
        json_object_set_new(p, "M", json_integer(table[i].M));
        json_object_set_new(p, "N", json_integer(table[i].N));
        json_object_set_new(p, "K", json_integer(table[i].K));
        json_object_set_new(p, "backend", json_string(table[i].name));
        json_array_append_new(ps, p);
    }
    json_object_set_new(j, "products", ps);
    char *tmp = NULL;
    int rc = -1;
    if (mkdirs(path) == 0 && asprintf(&tmp, "%s.tmp.%ld", path, (long)getpid()) >= 0 &&
        json_dump_file(j, tmp, JSON_INDENT(1)) == 0 && rename(tmp, path) == 0)
        rc = 0;
    else if (asprintf(err, "cannot write the tuning table %s: %s", path, strerror(errno)) < 0)
        *err = NULL;
    if (rc && tmp)
        unlink(tmp);
    free(tmp);
    json_decref(j);
    return rc;
}

int rt_gemm_table_save(char **err)
{
    *err = NULL;
    char *path = rt_gemm_table_path();
    pthread_mutex_lock(&table_mu);
    int rc = path ? write_table(path, err) : -1;
    pthread_mutex_unlock(&table_mu);
    if (!path && !*err && asprintf(err, "no cache directory for the tuning table") < 0)
        *err = NULL;
    free(path);
    return rc;
}
