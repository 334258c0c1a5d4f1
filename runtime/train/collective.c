/* collective.c - rank, size, all-reduce, broadcast and abort over MPI or a
 * single process (collective.h), and the per-rank slice of a global batch.
 * Entry points: rt_comm_init / rt_comm_finalize, rt_comm_world, rt_comm_allreduce_sum_*,
 * rt_comm_bcast, rt_comm_barrier, rt_comm_abort, rt_batch_slice,
 * rt_loader_next_slice.  The RtComm owns its scratch buffer. */
#include "config.h"
#include "core/util.h"

#include "train/collective.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef HAVE_MPI
#include <mpi.h>
#endif

/* --- launch detection ------------------------------------------------------ */

static int env_int(const char *name, int *v)
{
    const char *s = getenv(name);
    if (!s || !*s) return 0;
    char *end;
    long x = strtol(s, &end, 10);
    if (*end || x < 0 || x > INT_MAX) return 0;
    *v = (int)x;
    return 1;
}

int rt_comm_launched(int *size)
{
    int n = 0, r;
    int launched = env_int("OMPI_COMM_WORLD_SIZE", &n) ||  /* Open MPI's mpirun */
                   env_int("PMI_SIZE", &n) ||              /* MPICH's Hydra, PMI-1/2 (srun --mpi=pmi2) */
                   env_int("PMIX_RANK", &r) ||             /* PMIx (srun --mpi=pmix, prterun) */
                   env_int("MPI_LOCALNRANKS", &r);         /* Hydra */
    if (launched && n == 0 && getenv("PMIX_RANK")) env_int("SLURM_NTASKS", &n);
    if (size) *size = launched ? n : 0;
    return launched;
}

/* --- errors ---------------------------------------------------------------- */

static void vreport(const RtComm *c, const char *fmt, va_list ap)
{
    /* One buffer, one write: lines of several ranks do not interleave. */
    char msg[1024];
    int k = 0;
    if (c && c->backend == RT_COMM_MPI) k = snprintf(msg, sizeof msg, "rank %d: ", c->rank);
    if (k < 0) k = 0;
    vsnprintf(msg + k, sizeof msg - (size_t)k - 1, fmt, ap);
    size_t len = strlen(msg);
    msg[len++] = '\n';
    fflush(stdout);
    if (write(STDERR_FILENO, msg, len) < 0) {
        /* nothing left to tell anyone */
    }
}

void rt_comm_abort(RtComm *c, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(c, fmt, ap);
    va_end(ap);
    if (code == 0) code = 1;
#ifdef HAVE_MPI
    if (c && c->backend == RT_COMM_MPI) {
        MPI_Abort(*(MPI_Comm *)c->world, code);
        _exit(code); /* MPI_Abort does not return; if it did, still never hang */
    }
#endif
    exit(code);
}

#ifdef HAVE_MPI
/* Aborts the job when an MPI call failed, naming the call and MPI's reason. */
static void mpi_check(RtComm *c, int rc, const char *what)
{
    if (rc == MPI_SUCCESS) return;
    char s[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, s, &len) != MPI_SUCCESS) snprintf(s, sizeof s, "MPI error %d", rc);
    rt_comm_abort(c, 3, "%s failed: %s", what, s);
}
#endif

/* --- start and end --------------------------------------------------------- */

static RtComm *world_comm; /* rt_comm_world */

RtComm *rt_comm_world(void)
{
    return world_comm;
}

static RtComm *comm_new(void)
{
    RtComm *c = calloc(1, sizeof *c);
    if (!c) {
        fprintf(stderr, "strata: out of memory\n");
        exit(3);
    }
    c->rank = 0;
    c->size = 1;
    c->local_rank = 0;
    c->local_size = 1;
    c->backend = RT_COMM_SINGLE;
    c->ordered = 1;
    c->seg = RT_COMM_SEG_DEFAULT;
    world_comm = c;
    return c;
}

RtComm *rt_comm_init(int *argc, char ***argv)
{
    RtComm *c = comm_new();
    int announced = 0;
    if (!rt_comm_launched(&announced)) return c;
#ifdef HAVE_MPI
    int provided = 0, rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS) {
        fprintf(stderr, "strata: MPI_Init_thread failed (error %d)\n", rc);
        exit(3);
    }
    MPI_Comm *world = malloc(sizeof *world);
    if (!world) rt_comm_abort(NULL, 3, "strata: out of memory");
    *world = MPI_COMM_WORLD;
    c->world = world;
    c->backend = RT_COMM_MPI;
    MPI_Comm_rank(MPI_COMM_WORLD, &c->rank);
    mpi_check(c, MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    mpi_check(c, MPI_Comm_size(MPI_COMM_WORLD, &c->size), "MPI_Comm_size");
    if (provided < MPI_THREAD_FUNNELED)
        rt_comm_abort(c, 3, "this MPI provides thread level %d, the runtime needs MPI_THREAD_FUNNELED (%d)",
                      provided, (int)MPI_THREAD_FUNNELED);
    MPI_Comm node;
    mpi_check(c, MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &node),
              "MPI_Comm_split_type");
    mpi_check(c, MPI_Comm_rank(node, &c->local_rank), "MPI_Comm_rank");
    mpi_check(c, MPI_Comm_size(node, &c->local_size), "MPI_Comm_size");
    mpi_check(c, MPI_Comm_free(&node), "MPI_Comm_free");
    return c;
#else
    (void)argc;
    (void)argv;
    if (announced > 1) {
        fprintf(stderr,
                "strata: started by an MPI launcher with %d ranks, but this build has no MPI "
                "(configure --with-mpi, with libopenmpi-dev installed); each rank would train alone\n",
                announced);
        exit(2);
    }
    return c;
#endif
}

void rt_comm_finalize(RtComm *c)
{
    if (!c) return;
    if (c == world_comm) world_comm = NULL;
#ifdef HAVE_MPI
    if (c->backend == RT_COMM_MPI) {
        MPI_Finalize();
        free(c->world);
    }
#endif
    free(c->scratch);
    free(c);
}

/* --- collectives ------------------------------------------------------------ */

void rt_comm_barrier(RtComm *c)
{
#ifdef HAVE_MPI
    if (c->backend == RT_COMM_MPI) mpi_check(c, MPI_Barrier(*(MPI_Comm *)c->world), "MPI_Barrier");
#else
    (void)c;
#endif
}

void rt_comm_bcast(RtComm *c, void *buf, size_t bytes, int root)
{
    if (root < 0 || root >= c->size) rt_comm_abort(c, 3, "rt_comm_bcast: root %d of %d ranks", root, c->size);
#ifdef HAVE_MPI
    if (c->backend != RT_COMM_MPI || c->size == 1) return;
    for (size_t off = 0; off < bytes;) { /* MPI counts are ints */
        size_t k = bytes - off < (size_t)INT_MAX ? bytes - off : (size_t)INT_MAX;
        mpi_check(c, MPI_Bcast((char *)buf + off, (int)k, MPI_BYTE, root, *(MPI_Comm *)c->world), "MPI_Bcast");
        off += k;
    }
#else
    (void)buf;
    (void)bytes;
#endif
}

#ifdef HAVE_MPI
/* Chunk q of m elements split over p ranks: sizes differ by at most one,
 * larger ones first (as rt_pool_chunk). */
static void chunk(int64_t m, int p, int q, int *lo, int *cnt)
{
    int64_t base = m / p, extra = m % p;
    *lo = (int)(q * base + (q < extra ? q : extra));
    *cnt = (int)(base + (q < extra ? 1 : 0));
}

/* The ordered all-reduce of one element type, in segments of c->seg;
 * each (when not NULL) gets this rank's chunk of every segment as soon as
 * it holds its sums. */
#define DEFINE_ORDERED(NAME, T, MPIT)                                                                      \
    static void NAME(RtComm *c, T *buf, int64_t n, RtCommPiece *each, void *ctx)                           \
    {                                                                                                      \
        int p = c->size, me = c->rank;                                                                     \
        int64_t seg = c->seg < 1 ? 1 : c->seg;                                                             \
        if (seg > INT_MAX / 2) seg = INT_MAX / 2;                                                          \
        size_t need = (size_t)(seg + p) * sizeof(T);                                                       \
        if (c->scratch_bytes < need) {                                                                     \
            free(c->scratch);                                                                              \
            c->scratch = malloc(need);                                                                     \
            if (!c->scratch) rt_comm_abort(c, 3, "out of memory (%zu bytes of all-reduce scratch)", need); \
            c->scratch_bytes = need;                                                                       \
        }                                                                                                  \
        T *recv = c->scratch;                                                                              \
        int *cnt = malloc(4 * (size_t)p * sizeof(int));                                                    \
        if (!cnt) rt_comm_abort(c, 3, "out of memory");                                                    \
        int *lo = cnt + p, *rcnt = lo + p, *rlo = rcnt + p;                                                \
        MPI_Comm w = *(MPI_Comm *)c->world;                                                                \
        for (int64_t off = 0; off < n; off += seg) {                                                       \
            int64_t m = n - off < seg ? n - off : seg;                                                     \
            for (int q = 0; q < p; q++) chunk(m, p, q, &lo[q], &cnt[q]);                                   \
            int mine = cnt[me];                                                                            \
            for (int q = 0; q < p; q++) {                                                                  \
                rcnt[q] = mine;                                                                            \
                rlo[q] = q * mine;                                                                         \
            }                                                                                              \
            /* recv (p, mine): row q = rank q's copy of my chunk */                                        \
            mpi_check(c, MPI_Alltoallv(buf + off, cnt, lo, MPIT, recv, rcnt, rlo, MPIT, w), "MPI_Alltoallv"); \
            T *out = buf + off + lo[me];                                                                   \
            for (int i = 0; i < mine; i++) out[i] = recv[i];                                               \
            for (int q = 1; q < p; q++) {                                                                  \
                const T *r = recv + (size_t)q * (size_t)mine;                                              \
                for (int i = 0; i < mine; i++) out[i] += r[i];                                             \
            }                                                                                              \
            if (each && mine > 0) each(ctx, off + lo[me], mine);                                           \
            mpi_check(c, MPI_Allgatherv(MPI_IN_PLACE, 0, MPIT, buf + off, cnt, lo, MPIT, w),               \
                      "MPI_Allgatherv");                                                                   \
        }                                                                                                  \
        free(cnt);                                                                                         \
    }

DEFINE_ORDERED(ordered_f32, float, MPI_FLOAT)
DEFINE_ORDERED(ordered_f64, double, MPI_DOUBLE)

/* MPI_Allreduce in pieces of at most INT_MAX elements. */
static void native_sum(RtComm *c, void *buf, int64_t n, MPI_Datatype t, size_t width)
{
    for (int64_t off = 0; off < n;) {
        int64_t k = n - off < INT_MAX ? n - off : INT_MAX;
        mpi_check(c,
                  MPI_Allreduce(MPI_IN_PLACE, (char *)buf + (size_t)off * width, (int)k, t, MPI_SUM,
                                *(MPI_Comm *)c->world),
                  "MPI_Allreduce");
        off += k;
    }
}
#endif

void rt_comm_allreduce_sum_f32(RtComm *c, float *buf, int64_t n)
{
    rt_comm_allreduce_sum_f32_each(c, buf, n, NULL, NULL);
}

void rt_comm_allreduce_sum_f32_each(RtComm *c, float *buf, int64_t n, RtCommPiece *each, void *ctx)
{
    if (n < 0) rt_comm_abort(c, 3, "rt_comm_allreduce_sum_f32: %lld elements", (long long)n);
#ifdef HAVE_MPI
    if (c->backend == RT_COMM_MPI && c->size > 1) {
        if (c->ordered) {
            ordered_f32(c, buf, n, each, ctx);
            return;
        }
        native_sum(c, buf, n, MPI_FLOAT, sizeof(float));
        int lo, cnt; /* this rank's share of the sums, in pieces that fit an int */
        for (int64_t off = 0; each && off < n; off += INT_MAX) {
            int64_t m = n - off < INT_MAX ? n - off : INT_MAX;
            chunk(m, c->size, c->rank, &lo, &cnt);
            if (cnt > 0) each(ctx, off + lo, cnt);
        }
        return;
    }
#else
    (void)buf;
#endif
    if (each && n > 0) each(ctx, 0, n);
}

void rt_comm_allreduce_sum_f64(RtComm *c, double *buf, int64_t n)
{
    if (n < 0) rt_comm_abort(c, 3, "rt_comm_allreduce_sum_f64: %lld elements", (long long)n);
#ifdef HAVE_MPI
    if (c->backend != RT_COMM_MPI || c->size == 1) return;
    if (c->ordered)
        ordered_f64(c, buf, n, NULL, NULL);
    else
        native_sum(c, buf, n, MPI_DOUBLE, sizeof(double));
#else
    (void)buf;
#endif
}

int rt_comm_same_u64(RtComm *c, uint64_t v)
{
    if (c->size == 1) return 1;
    uint64_t root = v;
    rt_comm_bcast(c, &root, sizeof root, 0);
    double differ = root != v;
    rt_comm_allreduce_sum_f64(c, &differ, 1);
    return differ == 0;
}

uint64_t rt_comm_hash(const void *buf, size_t bytes)
{
    const unsigned char *p = buf;
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a 64 offset basis and prime */
    for (size_t i = 0; i < bytes; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* --- data slices ------------------------------------------------------------ */

int rt_batch_slice(int64_t B, int rank, int size, RtBatchSlice *s, char **err)
{
    if (size < 1 || rank < 0 || rank >= size) {
        *err = rt_fmt("rank %d of %d ranks: no such rank", rank, size);
        return -1;
    }
    if (B < 1) {
        *err = rt_fmt("global batch %lld: must be at least 1", (long long)B);
        return -1;
    }
    if (B % size != 0) {
        int64_t up = (B / size + 1) * size;
        *err = rt_fmt("global batch %lld is not divisible by %d ranks: each rank trains on batch / ranks "
                    "rows; use a multiple of %d (e.g. %lld)",
                    (long long)B, size, size, (long long)up);
        return -1;
    }
    s->rows = B / size;
    s->first = (int64_t)rank * s->rows;
    return 0;
}

int64_t rt_loader_next_slice(RtLoader *l, RtBatchSlice s, int32_t *all_tokens, int32_t *all_targets,
                             int32_t *tokens, int32_t *targets)
{
    int filled = rt_loader_next(l, all_tokens, all_targets);
    if (filled == 0) return 0;
    size_t off = (size_t)s.first * (size_t)l->T, len = (size_t)s.rows * (size_t)l->T;
    memcpy(tokens, all_tokens + off, len * sizeof *tokens);
    memcpy(targets, all_targets + off, len * sizeof *targets);
    int64_t valid = filled - s.first;
    return valid < 0 ? 0 : valid > s.rows ? s.rows : valid;
}
