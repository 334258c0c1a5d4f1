/* collective.h - the collectives that data-parallel training needs (rank,
 * size, all-reduce, broadcast, barrier, abort), with an MPI backend (built
 * when configure found MPI: HAVE_MPI) and a single-process backend, plus
 * the rule that cuts a global batch into per-rank slices.
 *
 * Backend: rt_comm_init uses MPI only when the build has it AND the process
 * was started by an MPI launcher (mpirun/mpiexec/srun: rt_comm_launched);
 * a process started by hand is a 1-rank job on the single-process backend,
 * where every collective is a no-op (a sum over one rank is the value
 * itself).  A build without MPI started by a launcher with more than one
 * rank refuses to run (exit 2): N copies of a 1-rank job would each train
 * alone and overwrite each other's checkpoints.
 *
 * Determinism: with `ordered` set (the default) the all-reduce sums are
 * computed element by element in rank order, ((x_0 + x_1) + x_2) + ...,
 * exactly as a serial loop over the ranks would, and the result is copied
 * to every rank: bitwise the same on all ranks, run after run, for any
 * segment size and any MPI implementation.  How: each segment of `seg`
 * elements is cut into `size` chunks; MPI_Alltoallv sends chunk q of every
 * rank to rank q, which sums the `size` copies in rank order and
 * MPI_Allgatherv copies the sums back (the data volume of a ring
 * all-reduce: 2 (N-1)/N of the buffer in and out of each rank).  With
 * `ordered` = 0, MPI_Allreduce is used: MPI leaves its order of summation to
 * the implementation (it may depend on the rank count, the message size and
 * the network), so results can differ in the last bits.
 *
 * Faults: every MPI call returns its error (MPI_ERRORS_RETURN) and a failed
 * call stops the whole job through rt_comm_abort, naming the rank and the
 * call; a rank that exits or crashes makes the launcher stop the others.
 *
 * Memory: rt_comm_init returns a malloc'd RtComm that owns its scratch
 * ((seg + size) * 8 bytes, allocated at the first ordered all-reduce);
 * rt_comm_finalize frees it (and finalizes MPI).  Only the thread that
 * called rt_comm_init may call the collectives (MPI_THREAD_FUNNELED); all
 * ranks must call each collective in the same order with the same n. */
#ifndef STRATA_COLLECTIVE_H
#define STRATA_COLLECTIVE_H
#include <stddef.h>
#include <stdint.h>

#include "data/data.h"

typedef enum RtCommBackend {
    RT_COMM_SINGLE,          /* one process, collectives are no-ops */
    RT_COMM_MPI,             /* MPI_COMM_WORLD */
} RtCommBackend;

/* Elements per segment of an ordered all-reduce (4 Mi: 16 MiB of fp32 scratch). */
#define RT_COMM_SEG_DEFAULT (1 << 22)

typedef struct RtComm {
    int rank;                /* this process, 0..size-1 */
    int size;                /* processes in the job, >= 1 */
    int local_rank;          /* rank among the processes on this machine */
    int local_size;          /* processes on this machine (to share its cores) */
    RtCommBackend backend;
    int ordered;             /* 1: sums in rank order (bitwise reproducible); 0: MPI_Allreduce */
    int64_t seg;             /* elements per segment of an ordered all-reduce, >= 1 */
    void *scratch;           /* ordered all-reduce receive area, scratch_bytes */
    size_t scratch_bytes;
    void *world;             /* the MPI communicator (MPI_Comm *), NULL on the single backend */
} RtComm;

/* Whether an MPI launcher started this process (Open MPI's, MPICH's Hydra,
 * PMI or PMIx, e.g. Slurm's srun): 1 and *size (when not NULL) = the rank
 * count it announces (0 when unknown), else 0. */
int rt_comm_launched(int *size);
/* Starts the job's communicator (see the header comment for the backend).
 * MPI_Init_thread gets argc and argv.  Never NULL: a failure of MPI's start
 * prints why and exits 3; a launcher's multi-rank job in a build without
 * MPI prints why and exits 2. */
RtComm *rt_comm_init(int *argc, char ***argv);
/* The RtComm that rt_comm_init returned (a process has one job), or NULL
 * before it and after rt_comm_finalize: how the training loop finds the
 * job that rt_trainer_main started for `train` and `sft`. */
RtComm *rt_comm_world(void);
/* MPI_Finalize (MPI backend) and frees c.  NULL is a no-op. */
void rt_comm_finalize(RtComm *c);
/* buf (n) = the element-wise sum of every rank's buf (n), on every rank. */
void rt_comm_allreduce_sum_f32(RtComm *c, float *buf, int64_t n);
/* The same, calling each(ctx, at, len) for pieces buf[at, at + len) of
 * the sums as soon as they are final on this rank, the pieces of all ranks
 * together covering [0, n) once (none empty): with `ordered`, this rank's
 * chunk of every segment right after it added the ranks' copies, while it
 * is still in cache (how training takes the gradient norm's block sums
 * without a pass of its own); with MPI_Allreduce, this rank's share of the
 * buffer afterwards; on one rank, [0, n).  each runs on the calling thread
 * and must not call a collective. */
typedef void RtCommPiece(void *ctx, int64_t at, int64_t len);
void rt_comm_allreduce_sum_f32_each(RtComm *c, float *buf, int64_t n, RtCommPiece *each, void *ctx);
void rt_comm_allreduce_sum_f64(RtComm *c, double *buf, int64_t n);
/* Copies root's buf (bytes) into every rank's buf. */
void rt_comm_bcast(RtComm *c, void *buf, size_t bytes, int root);
void rt_comm_barrier(RtComm *c);
/* 1 on every rank when every rank passed the same v, else 0 on every rank
 * (for checks such as a parameter hash or a checkpoint's rank count). */
int rt_comm_same_u64(RtComm *c, uint64_t v);
/* Prints "rank R: MESSAGE" (MPI backend; MESSAGE alone on the single
 * backend) on stderr and stops the whole job with exit status code (0 is
 * turned into 1): MPI_Abort, so the other ranks never wait for this one.
 * c may be NULL (before rt_comm_init): the message alone, then exit. */
_Noreturn void rt_comm_abort(RtComm *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* 64-bit FNV-1a of bytes (e.g. to check that all ranks hold the same
 * parameters: rt_comm_same_u64(c, rt_comm_hash(params, bytes))). */
uint64_t rt_comm_hash(const void *buf, size_t bytes);

/* --- data slices ------------------------------------------------------------
 * Data parallelism cuts every global batch of B rows into `size` slices of
 * B / size consecutive rows: rank r trains on rows [r B/N, (r+1) B/N).  All
 * ranks draw the same global batch (same shards, B, T and seed, so loader
 * states stay equal and rank 0's checkpoint of it is every rank's), each
 * keeps its own rows.  Rows in rank order are the 1-rank batch, so N ranks
 * see exactly the tokens that one rank with batch B sees. */
typedef struct RtBatchSlice {
    int64_t first;           /* first row of the global batch this rank trains on */
    int64_t rows;            /* B / size */
} RtBatchSlice;

/* The slice of rank of size ranks in a global batch of B rows.  0, or -1
 * with a malloc'd *err when B is not a multiple of size ("global batch 6
 * is not divisible by 4 ranks ...") or an argument is out of range. */
int rt_batch_slice(int64_t B, int rank, int size, RtBatchSlice *s, char **err);
/* Draws the next global batch from l (l->B rows: rt_loader_next into
 * all_tokens and all_targets, (l->B, l->T) each, caller-owned) and copies
 * this rank's rows to tokens and targets, (s.rows, l->T) each.  Returns the
 * rows of the slice that hold windows: s.rows, fewer or 0 for a sequential
 * loader's last, partial batch (the rows past them repeat the batch's last
 * window, as rt_loader_next does). */
int64_t rt_loader_next_slice(RtLoader *l, RtBatchSlice s, int32_t *all_tokens, int32_t *all_targets,
                             int32_t *tokens, int32_t *targets);
#endif
