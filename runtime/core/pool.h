/* pool.h - a persistent thread pool for the runtime: rt_pool_run cuts the
 * index range [0, n) into tiles of `grain` indices and calls fn once per
 * tile, the tiles shared out over rt_pool_size threads (thread 0 is the
 * calling thread, 1..size-1 are workers that live as long as the pool),
 * returning when every tile is done.
 *
 * The tiles depend on n and grain alone, never on the number of threads
 * (issue #13): tile t is [t grain, min(n, (t + 1) grain)), and fn sees the
 * same tiles with any pool, a NULL one included.  So a kernel that computes
 * each tile independently (or keeps one partial per tile, combined in tile
 * order) gives the same bits for any thread count, even when the result of
 * an element depends on where it falls inside a call (as BLAS edge
 * kernels do).  Callers choose grain from the problem's shape.  Threads
 * take contiguous runs of tiles (rt_pool_chunk over the tile count): which
 * thread runs a tile changes nothing but the `thread` argument, which
 * names a per-thread work area.
 *
 * Idle workers spin for a few microseconds after a dispatch and then block
 * on a condition variable, so they do not fight OpenBLAS's own threads (or
 * anything else) for the CPUs between dispatches.
 *
 * One dispatch at a time: rt_pool_run is not reentrant (fn must not call
 * rt_pool_run on the same pool) and must not be called from two threads at
 * once.  A NULL pool runs every tile on the caller, in order.  The pool owns
 * its threads; rt_pool_free joins them. */
#ifndef STRATA_POOL_H
#define STRATA_POOL_H
#include <stdint.h>

typedef struct RtPool RtPool;

/* A pool of nthreads threads, the caller included (nthreads - 1 workers);
 * nthreads <= 0: the number of CPUs this process may run on.  Never NULL:
 * out of memory exits (3); if the system refuses to start a thread the
 * pool keeps the ones it has (rt_pool_size tells). */
RtPool *rt_pool_create(int nthreads);
/* The most threads a command accepts (--threads): past the hardware
 * threads of any machine today (768 on two 192-core CPUs with SMT), so a
 * larger count is a typo, not a wish.  rt_pool_create caps at it too. */
#define RT_POOL_MAX_THREADS 1024
/* Stops and joins the workers; NULL is a no-op. */
void rt_pool_free(RtPool *p);
/* Threads, caller included; 1 for a NULL pool. */
int rt_pool_size(const RtPool *p);
/* The CPUs this process may run on: the threads of rt_pool_create(0). */
int rt_pool_cpus(void);
/* Runs fn(ctx, begin, end, thread) once for every tile [begin, end) of
 * [0, n) (grain indices each, the last one shorter), the tiles of chunk i
 * (rt_pool_chunk of the tile count) on thread i in order, and returns
 * when all are done (every write fn made is then visible to the caller).
 * n <= 0 calls nothing; grain < 1 is taken as 1. */
void rt_pool_run(RtPool *p, int64_t n, int64_t grain, void (*fn)(void *ctx, int64_t begin, int64_t end, int thread),
                 void *ctx);
/* The number of tiles rt_pool_run makes of [0, n): ceil(n / grain). */
int64_t rt_pool_tiles(int64_t n, int64_t grain);
/* Chunk i of [0, n) split `size` ways, as rt_pool_run shares tiles:
 * q = n / size, r = n % size; chunk i starts at i q + min(i, r) and has
 * q + (i < r) indices. */
void rt_pool_chunk(int64_t n, int size, int i, int64_t *begin, int64_t *end);
#endif
