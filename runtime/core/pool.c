/* pool.c - the persistent thread pool (pool.h).
 * A dispatch publishes (fn, ctx, n, grain) and bumps a generation counter;
 * each worker notices the new generation (spinning briefly, then asleep on
 * a condition variable), runs its chunk of tiles and decrements `pending`;
 * the last one wakes the caller, which ran chunk 0 itself meanwhile.  Ordering: the
 * job fields are written before the generation's release store and read
 * after its acquire load; a worker reads them before it decrements, and
 * the next dispatch starts only after pending reaches 0. */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include "core/pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* How long a waiting thread polls before it blocks, in nanoseconds: long
 * enough to catch the next of back-to-back dispatches (kernels of one
 * training step), short enough not to hold a CPU that OpenBLAS's threads
 * want for a matrix product.  0 when the pool has more threads than CPUs
 * (spinning would only delay the others). */
#define POOL_SPIN_NS 50000

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() ((void)0)
#endif

typedef struct RtPoolWorker {
    RtPool *pool;
    int index;                  /* thread number, 1..size-1 */
} RtPoolWorker;

struct RtPool {
    int size;                   /* threads, caller included */
    int64_t spin_ns;            /* polling time before blocking */
    pthread_t *threads;         /* (size-1) workers */
    RtPoolWorker *workers;      /* (size-1) their arguments */
    pthread_mutex_t mu;         /* guards the sleeps and wake-ups below */
    pthread_cond_t wake;        /* workers: a new generation */
    pthread_cond_t done;        /* caller: pending reached 0 */
    _Atomic uint64_t gen;       /* dispatches so far (+1 for stop) */
    _Atomic int pending;        /* workers not done with this dispatch */
    _Atomic int busy;           /* a dispatch is in progress (misuse check) */
    int stop;                   /* set with the last generation: exit */
    /* The current job, published by gen. */
    void (*fn)(void *ctx, int64_t begin, int64_t end, int thread);
    void *ctx;
    int64_t n, grain;
};

_Noreturn static void pool_die(int line, const char *what)
{
    fprintf(stderr, "strata: internal error at %s:%d: %s\n", __FILE__, line, what);
    abort();
}

void rt_pool_chunk(int64_t n, int size, int i, int64_t *begin, int64_t *end)
{
    int64_t q = n / size, r = n % size;
    *begin = i * q + (i < r ? i : r);
    *end = *begin + q + (i < r);
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Polls the generation until it differs from `old` or spin_ns have passed;
 * returns the last value read. */
static uint64_t spin_while_gen(const RtPool *p, uint64_t old)
{
    uint64_t x = atomic_load_explicit(&p->gen, memory_order_acquire);
    if (x != old || p->spin_ns == 0)
        return x;
    int64_t deadline = now_ns() + p->spin_ns;
    for (int i = 1; x == old; i++) {
        cpu_relax();
        x = atomic_load_explicit(&p->gen, memory_order_acquire);
        if (i % 64 == 0 && now_ns() > deadline)
            break;
    }
    return x;
}

/* The same for pending: polls until it is 0 or spin_ns have passed. */
static int spin_while_pending(const RtPool *p)
{
    int x = atomic_load_explicit(&p->pending, memory_order_acquire);
    if (x == 0 || p->spin_ns == 0)
        return x;
    int64_t deadline = now_ns() + p->spin_ns;
    for (int i = 1; x > 0; i++) {
        cpu_relax();
        x = atomic_load_explicit(&p->pending, memory_order_acquire);
        if (i % 64 == 0 && now_ns() > deadline)
            break;
    }
    return x;
}

int rt_pool_cpus(void)
{
#ifdef CPU_COUNT
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
#endif
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int64_t rt_pool_tiles(int64_t n, int64_t grain)
{
    if (grain < 1)
        grain = 1;
    return n <= 0 ? 0 : (n - 1) / grain + 1;
}

/* Tiles [t0, t1) of [0, n), one call each, on `thread`. */
static void run_tiles(void (*fn)(void *, int64_t, int64_t, int), void *ctx, int64_t n, int64_t grain, int64_t t0,
                      int64_t t1, int thread)
{
    for (int64_t t = t0; t < t1; t++) {
        int64_t b = t * grain, e = b + grain < n ? b + grain : n;
        fn(ctx, b, e, thread);
    }
}

/* Runs chunk `thread` of the current job's tiles. */
static void run_chunk(RtPool *p, void (*fn)(void *, int64_t, int64_t, int), void *ctx, int64_t n, int64_t grain,
                      int thread)
{
    int64_t b, e;
    rt_pool_chunk(rt_pool_tiles(n, grain), p->size, thread, &b, &e);
    run_tiles(fn, ctx, n, grain, b, e, thread);
}

static void *worker_main(void *arg)
{
    RtPoolWorker *w = arg;
    RtPool *p = w->pool;
    uint64_t seen = 0;
    for (;;) {
        uint64_t g = spin_while_gen(p, seen);
        if (g == seen) {
            pthread_mutex_lock(&p->mu);
            while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen)
                pthread_cond_wait(&p->wake, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        seen = g;
        if (p->stop)
            return NULL;
        run_chunk(p, p->fn, p->ctx, p->n, p->grain, w->index);
        if (atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&p->mu); /* the caller may be between its check and its wait */
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

RtPool *rt_pool_create(int nthreads)
{
    int cpus = rt_pool_cpus();
    if (nthreads <= 0)
        nthreads = cpus;
    if (nthreads > RT_POOL_MAX_THREADS)
        nthreads = RT_POOL_MAX_THREADS;
    RtPool *p = calloc(1, sizeof *p);
    if (p) {
        p->threads = calloc((size_t)nthreads, sizeof *p->threads);
        p->workers = calloc((size_t)nthreads, sizeof *p->workers);
    }
    if (!p || !p->threads || !p->workers) {
        fprintf(stderr, "strata: out of memory\n");
        exit(3);
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    atomic_init(&p->gen, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->busy, 0);
    p->spin_ns = nthreads <= cpus ? POOL_SPIN_NS : 0;
    p->size = 1;
    for (int i = 1; i < nthreads; i++) {
        p->workers[i - 1] = (RtPoolWorker){p, i};
        if (pthread_create(&p->threads[i - 1], NULL, worker_main, &p->workers[i - 1]) != 0)
            break; /* keep the threads we have; the split follows size */
        p->size = i + 1;
    }
    return p;
}

void rt_pool_free(RtPool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->size - 1; i++)
        pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->done);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->mu);
    free(p->workers);
    free(p->threads);
    free(p);
}

int rt_pool_size(const RtPool *p)
{
    return p ? p->size : 1;
}

void rt_pool_run(RtPool *p, int64_t n, int64_t grain, void (*fn)(void *ctx, int64_t begin, int64_t end, int thread),
                 void *ctx)
{
    if (n <= 0)
        return;
    if (grain < 1)
        grain = 1;
    int64_t tiles = rt_pool_tiles(n, grain);
    if (!p || p->size == 1 || tiles == 1) { /* the same tiles, on the caller */
        run_tiles(fn, ctx, n, grain, 0, tiles, 0);
        return;
    }
    if (atomic_exchange_explicit(&p->busy, 1, memory_order_acquire))
        pool_die(__LINE__, "rt_pool_run called inside a dispatch or from two threads at once");
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    p->grain = grain;
    atomic_store_explicit(&p->pending, p->size - 1, memory_order_relaxed);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    pthread_cond_broadcast(&p->wake); /* no system call when nobody sleeps */
    pthread_mutex_unlock(&p->mu);

    run_chunk(p, fn, ctx, n, grain, 0);

    if (spin_while_pending(p) > 0) {
        pthread_mutex_lock(&p->mu);
        while (atomic_load_explicit(&p->pending, memory_order_acquire) > 0)
            pthread_cond_wait(&p->done, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
    atomic_store_explicit(&p->busy, 0, memory_order_release);
}
