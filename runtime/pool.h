/* pool.h - a persistent thread pool for the runtime: rt_pool_run splits the
 * index range [0, n) into rt_pool_size contiguous chunks and runs chunk i
 * on thread i (thread 0 is the calling thread, 1..size-1 are workers that
 * live as long as the pool), returning when every chunk is done.
 *
 * The split is deterministic (rt_pool_chunk): the same n and size always
 * give the same ranges on the same threads, so a reduction that keeps one
 * partial per thread and combines them in thread order is reproducible.
 * Chunk sizes differ by at most one, larger ones first; when n < size the
 * last chunks are empty and fn is not called for them.
 *
 * Idle workers spin for a few microseconds after a dispatch and then block
 * on a condition variable, so they do not fight OpenBLAS's own threads (or
 * anything else) for the CPUs between dispatches.
 *
 * One dispatch at a time: rt_pool_run is not reentrant (fn must not call
 * rt_pool_run on the same pool) and must not be called from two threads at
 * once.  A NULL pool runs fn(ctx, 0, n, 0) on the caller.  The pool owns
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
/* Stops and joins the workers; NULL is a no-op. */
void rt_pool_free(RtPool *p);
/* Threads, caller included; 1 for a NULL pool. */
int rt_pool_size(const RtPool *p);
/* Runs fn(ctx, begin, end, thread) for every non-empty chunk [begin, end)
 * of [0, n), chunk `thread` on thread `thread`, and returns when all are
 * done (every write fn made is then visible to the caller).  n <= 0 calls
 * nothing. */
void rt_pool_run(RtPool *p, int64_t n, void (*fn)(void *ctx, int64_t begin, int64_t end, int thread),
                 void *ctx);
/* Chunk i of [0, n) split `size` ways, as rt_pool_run splits it:
 * q = n / size, r = n % size; chunk i starts at i q + min(i, r) and has
 * q + (i < r) indices. */
void rt_pool_chunk(int64_t n, int size, int i, int64_t *begin, int64_t *end);
#endif
