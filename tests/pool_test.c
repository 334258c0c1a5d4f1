/* pool_test.c - the thread pool (pool.h): every index visited exactly
 * once, fn called once per tile of `grain` indices and with the same tiles
 * for a NULL pool and pools of 1 to 16 threads (the split follows the
 * shape, never the thread count: issue #13), tiles on the threads as
 * rt_pool_chunk says, 100k small dispatches in a row, n = 0, n < threads;
 * prints the dispatch latency (an empty job: the time
 * to wake the workers and wait for them).  Also rt_alloc64 (util.h), which
 * the pool's users allocate their big buffers with: a buffer a little over
 * two 2 MiB pages keeps its tail on 4 KiB pages (where transparent huge
 * pages are on or "madvise", this fails if the tail gets a huge page: 2 MiB
 * resident for a few bytes).  Exit 0 pass, 1 fail. */
#define _POSIX_C_SOURCE 200809L
#include "core/pool.h"
#include "core/util.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { MAXT = 64 };

static int failures;

#define CHECK(cond, ...)                                   \
    do {                                                   \
        if (!(cond)) {                                     \
            printf("FAIL (line %d): ", __LINE__);          \
            printf(__VA_ARGS__);                           \
            printf("\n");                                  \
            failures++;                                    \
        }                                                  \
    } while (0)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* One dispatch's record: every call fn got, and on which thread. */
enum { MAXCALLS = 1 << 16 };
typedef struct Record {
    _Atomic int *visits;        /* (n) times each index was visited */
    _Atomic int ncalls;
    int64_t begin[MAXCALLS], end[MAXCALLS];
    int thread[MAXCALLS];
} Record;

static void record_fn(void *ctx, int64_t begin, int64_t end, int thread)
{
    Record *r = ctx;
    for (int64_t i = begin; i < end; i++)
        atomic_fetch_add_explicit(&r->visits[i], 1, memory_order_relaxed);
    int k = atomic_fetch_add_explicit(&r->ncalls, 1, memory_order_relaxed);
    if (k < MAXCALLS) {
        r->begin[k] = begin;
        r->end[k] = end;
        r->thread[k] = thread;
    }
}

/* Dispatches [0, n) in tiles of grain and checks that fn got exactly the
 * tiles [t g, min(n, (t+1) g)), each once, whatever the pool (issue #13:
 * the split may not follow the thread count), and that thread i ran the
 * tiles of rt_pool_chunk(tiles, size, i). */
static void check_run_grain(RtPool *p, int64_t n, int64_t grain, const char *what)
{
    int size = rt_pool_size(p);
    int64_t g = grain < 1 ? 1 : grain, tiles = rt_pool_tiles(n, grain);
    CHECK(tiles == (n <= 0 ? 0 : (n + g - 1) / g), "%s: rt_pool_tiles(%lld, %lld) = %lld", what, (long long)n,
          (long long)grain, (long long)tiles);
    Record *r = calloc(1, sizeof *r);
    r->visits = calloc((size_t)(n > 0 ? n : 1), sizeof *r->visits);
    rt_pool_run(p, n, grain, record_fn, r);
    int nc = atomic_load(&r->ncalls);
    CHECK(nc == tiles, "%s n=%lld grain=%lld: %d calls for %lld tiles", what, (long long)n, (long long)grain, nc,
          (long long)tiles);
    char *seen = calloc((size_t)(tiles > 0 ? tiles : 1), 1);
    for (int k = 0; k < nc && k < MAXCALLS && tiles > 0; k++) {
        int64_t t = r->begin[k] / g;
        bool exact = r->begin[k] == t * g && r->end[k] == (t * g + g < n ? t * g + g : n);
        CHECK(exact && !seen[t], "%s n=%lld grain=%lld: call [%lld,%lld) is not tile %lld (or repeats it)", what,
              (long long)n, (long long)grain, (long long)r->begin[k], (long long)r->end[k], (long long)t);
        if (!exact || seen[t])
            break;
        seen[t] = 1;
        int64_t b, e;
        int owner = -1;
        for (int i = 0; i < size && owner < 0; i++) {
            rt_pool_chunk(tiles, size, i, &b, &e);
            owner = t >= b && t < e ? i : -1;
        }
        CHECK(r->thread[k] == owner, "%s n=%lld: tile %lld on thread %d, chunk of thread %d", what, (long long)n,
              (long long)t, r->thread[k], owner);
    }
    for (int64_t i = 0; i < n; i++)
        if (r->visits[i] != 1) {
            CHECK(0, "%s n=%lld: index %lld visited %d times", what, (long long)n, (long long)i, r->visits[i]);
            break;
        }
    free(seen);
    free(r->visits);
    free(r);
}

static void check_run(RtPool *p, int64_t n, const char *what)
{
    int64_t grains[] = {1, 3, 64, 1000};
    for (size_t k = 0; k < sizeof grains / sizeof *grains; k++)
        check_run_grain(p, n, grains[k], what);
    check_run_grain(p, n, 0, what); /* taken as 1 */
}

/* rt_pool_chunk: contiguous, covering, sizes differ by at most one,
 * larger first. */
static void test_chunks(void)
{
    for (int size = 1; size <= 9; size++)
        for (int64_t n = 0; n <= 40; n++) {
            int64_t prev_end = 0, prev_len = -1;
            for (int i = 0; i < size; i++) {
                int64_t b, e;
                rt_pool_chunk(n, size, i, &b, &e);
                CHECK(b == prev_end && e >= b, "chunk %d of %lld/%d: [%lld,%lld)", i, (long long)n, size,
                      (long long)b, (long long)e);
                if (prev_len >= 0)
                    CHECK(e - b == prev_len || e - b == prev_len - 1, "chunk sizes of %lld/%d", (long long)n, size);
                prev_len = e - b;
                prev_end = e;
            }
            CHECK(prev_end == n, "chunks of %lld/%d end at %lld", (long long)n, size, (long long)prev_end);
        }
}

static void count_fn(void *ctx, int64_t begin, int64_t end, int thread)
{
    atomic_fetch_add_explicit((_Atomic int64_t *)ctx, end - begin, memory_order_relaxed);
}

static void empty_fn(void *ctx, int64_t begin, int64_t end, int thread) {}

/* Many small dispatches in a row (workers must not miss or repeat one). */
static void test_many(RtPool *p, int dispatches, int64_t n)
{
    _Atomic int64_t count;
    atomic_init(&count, 0);
    for (int i = 0; i < dispatches; i++)
        rt_pool_run(p, n, 1, count_fn, &count);
    CHECK(atomic_load(&count) == (int64_t)dispatches * n, "%d dispatches of %lld: counted %lld", dispatches,
          (long long)n, (long long)atomic_load(&count));
}

/* Seconds per dispatch of an empty job, best of 3 runs of reps. */
static double latency(RtPool *p, int reps)
{
    double best = 1e9;
    for (int k = 0; k < 3; k++) {
        double t0 = now_s();
        for (int i = 0; i < reps; i++)
            rt_pool_run(p, 1024, 128, empty_fn, NULL);
        double dt = (now_s() - t0) / reps;
        best = dt < best ? dt : best;
    }
    return best;
}

/* Seconds per dispatch after a 1 ms pause (the workers have stopped
 * spinning and sleep): the cost of waking them; median of reps. */
static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double cold_latency(RtPool *p, int reps)
{
    double *t = malloc(sizeof *t * (size_t)reps);
    struct timespec pause = {0, 1000000};
    for (int i = 0; i < reps; i++) {
        nanosleep(&pause, NULL);
        double t0 = now_s();
        rt_pool_run(p, 1024, 128, empty_fn, NULL);
        t[i] = now_s() - t0;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_double);
    double med = t[reps / 2];
    free(t);
    return med;
}

/* Resident kB of the mappings that overlap [addr, addr + n) (smaps: the
 * madvise of part of a mapping splits it), -1 if unreadable. */
static long rss_kb_over(const void *addr, size_t n)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        return -1;
    char line[512];
    long rss = 0;
    int in = 0;
    uintptr_t a = (uintptr_t)addr, b = a + n;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi, kb;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
            in = lo < b && hi > a;
        else if (in && sscanf(line, "Rss: %lu kB", &kb) == 1)
            rss += (long)kb;
    }
    fclose(f);
    return rss;
}

static void test_alloc_tail(void)
{
    const size_t n = RT_HUGE_MIN + 4096 + 100; /* two 2 MiB pages and 4196 bytes */
    char *p = rt_zalloc64(n);                   /* zeroed: every byte touched */
    CHECK((uintptr_t)p % (2u << 20) == 0, "rt_alloc64 of %zu bytes is not 2 MiB aligned", n);
    long kb = rss_kb_over(p, n);
    /* the two huge pages (or their 4 KiB pages), two pages of tail and a
     * few of the allocator's own (its header before p): not a third huge
     * page */
    long most = (long)(RT_HUGE_MIN / 1024) + 32;
    CHECK(kb < 0 || kb <= most, "a %zu-byte buffer holds %ld kB resident (at most %ld: its tail on a huge page?)", n,
          kb, most);
    printf("rt_zalloc64 of %zu bytes: %ld kB resident (at most %ld)\n", n, kb, most);
    free(p);
}

int main(void)
{
    test_alloc_tail();
    test_chunks();
    RtPool *probe = rt_pool_create(0);
    int cpus = rt_pool_size(probe);
    rt_pool_free(probe);

    /* NULL pool: the same tiles, inline. */
    check_run(NULL, 1000, "NULL pool");
    check_run(NULL, 0, "NULL pool");
    CHECK(rt_pool_size(NULL) == 1, "rt_pool_size(NULL) = %d", rt_pool_size(NULL));
    rt_pool_free(NULL);

    RtPool *dflt = rt_pool_create(0);
    CHECK(rt_pool_size(dflt) >= 1 && rt_pool_size(dflt) <= MAXT, "default size %d", rt_pool_size(dflt));
    check_run(dflt, 12345, "default pool");
    printf("default pool: %d threads\n", rt_pool_size(dflt));
    rt_pool_free(dflt);

    int sizes[] = {1, 2, 3, 4, 7, 16};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        RtPool *p = rt_pool_create(sizes[s]);
        char what[32];
        snprintf(what, sizeof what, "pool of %d", sizes[s]);
        CHECK(rt_pool_size(p) == sizes[s], "%s: size %d", what, rt_pool_size(p));
        int64_t ns[] = {0, 1, 2, 3, 5, 6, 7, 8, 100, 1001, 12345};
        for (int rep = 0; rep < 2; rep++) /* twice: the same chunks again */
            for (size_t i = 0; i < sizeof ns / sizeof *ns; i++)
                check_run(p, ns[i], what);
        /* 100k where a worker has its own CPU; oversubscribed pools block on
         * every dispatch (tens of us each), so fewer there. */
        test_many(p, sizes[s] <= cpus ? 100000 : 10000, 3);
        test_many(p, 1000, 64);
        rt_pool_free(p);
    }

    /* A pool freed right after creation (workers may not have started). */
    for (int i = 0; i < 50; i++)
        rt_pool_free(rt_pool_create(3));

    /* Latency: the pool as the runtime makes it (one thread per CPU), and
     * oversubscribed (more threads than CPUs: no spinning). */
    RtPool *p = rt_pool_create(0);
    double lat = latency(p, 20000);
    printf("dispatch latency, %d threads (one per CPU), back to back: %.2f us\n", cpus, lat * 1e6);
    lat = cold_latency(p, 200);
    printf("dispatch latency, %d threads (one per CPU), workers asleep: %.2f us\n", cpus, lat * 1e6);
    rt_pool_free(p);
    p = rt_pool_create(2 * cpus + 1);
    lat = latency(p, 2000);
    printf("dispatch latency, %d threads (oversubscribed, blocking): %.2f us\n", 2 * cpus + 1, lat * 1e6);
    rt_pool_free(p);

    if (failures)
        printf("%d failures\n", failures);
    else
        printf("pool_test: all passed\n");
    return failures ? 1 : 0;
}
