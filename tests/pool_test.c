/* pool_test.c - the thread pool (pool.h): sums over the range, every index
 * visited exactly once, chunks as rt_pool_chunk says and the same on every
 * dispatch, 100k small dispatches in a row, n = 0, n < threads, a NULL
 * pool, a pool of one; prints the dispatch latency (an empty job: the time
 * to wake the workers and wait for them).  Exit 0 pass, 1 fail. */
#define _POSIX_C_SOURCE 200809L
#include "pool.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
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

/* One dispatch's record: what each thread got. */
typedef struct Record {
    _Atomic int *visits;        /* (n) times each index was visited */
    int64_t sum[MAXT];          /* per thread: sum of its indices */
    int64_t begin[MAXT], end[MAXT];
    int calls[MAXT];            /* times fn ran on each thread */
} Record;

static void record_fn(void *ctx, int64_t begin, int64_t end, int thread)
{
    Record *r = ctx;
    int64_t s = 0;
    for (int64_t i = begin; i < end; i++) {
        s += i;
        atomic_fetch_add_explicit(&r->visits[i], 1, memory_order_relaxed);
    }
    r->sum[thread] = s;
    r->begin[thread] = begin;
    r->end[thread] = end;
    r->calls[thread]++;
}

/* Dispatches [0, n) and checks the sum, the visits and the chunks. */
static void check_run(RtPool *p, int64_t n, const char *what)
{
    int size = rt_pool_size(p);
    Record *r = calloc(1, sizeof *r);
    r->visits = calloc((size_t)(n > 0 ? n : 1), sizeof *r->visits);
    for (int t = 0; t < MAXT; t++)
        r->begin[t] = r->end[t] = -1;
    rt_pool_run(p, n, record_fn, r);
    int64_t total = 0;
    for (int t = 0; t < size; t++) {
        int64_t b, e;
        rt_pool_chunk(n, size, t, &b, &e);
        if (b < e) {
            CHECK(r->calls[t] == 1, "%s n=%lld: thread %d called %d times", what, (long long)n, t, r->calls[t]);
            CHECK(r->begin[t] == b && r->end[t] == e, "%s n=%lld: thread %d got [%lld,%lld), want [%lld,%lld)",
                  what, (long long)n, t, (long long)r->begin[t], (long long)r->end[t], (long long)b,
                  (long long)e);
            total += r->sum[t];
        } else {
            CHECK(r->calls[t] == 0, "%s n=%lld: fn called for empty chunk %d", what, (long long)n, t);
        }
    }
    CHECK(total == n * (n - 1) / 2 || n <= 0, "%s n=%lld: sum %lld", what, (long long)n, (long long)total);
    for (int64_t i = 0; i < n; i++)
        if (r->visits[i] != 1) {
            CHECK(0, "%s n=%lld: index %lld visited %d times", what, (long long)n, (long long)i, r->visits[i]);
            break;
        }
    free(r->visits);
    free(r);
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
        rt_pool_run(p, n, count_fn, &count);
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
            rt_pool_run(p, 1024, empty_fn, NULL);
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
        rt_pool_run(p, 1024, empty_fn, NULL);
        t[i] = now_s() - t0;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_double);
    double med = t[reps / 2];
    free(t);
    return med;
}

int main(void)
{
    test_chunks();
    RtPool *probe = rt_pool_create(0);
    int cpus = rt_pool_size(probe);
    rt_pool_free(probe);

    /* NULL pool: one inline call with the whole range. */
    check_run(NULL, 1000, "NULL pool");
    check_run(NULL, 0, "NULL pool");
    CHECK(rt_pool_size(NULL) == 1, "rt_pool_size(NULL) = %d", rt_pool_size(NULL));
    rt_pool_free(NULL);

    RtPool *dflt = rt_pool_create(0);
    CHECK(rt_pool_size(dflt) >= 1 && rt_pool_size(dflt) <= MAXT, "default size %d", rt_pool_size(dflt));
    check_run(dflt, 12345, "default pool");
    printf("default pool: %d threads\n", rt_pool_size(dflt));
    rt_pool_free(dflt);

    int sizes[] = {1, 2, 3, 4, 7};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        RtPool *p = rt_pool_create(sizes[s]);
        char what[32];
        snprintf(what, sizeof what, "pool of %d", sizes[s]);
        CHECK(rt_pool_size(p) == sizes[s], "%s: size %d", what, rt_pool_size(p));
        int64_t ns[] = {0, 1, 2, 3, 5, 6, 7, 8, 100, 1001, 1 << 20};
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
