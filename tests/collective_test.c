/* collective_test.c - runtime/train/collective.c.
 *
 * Without arguments (make check, one process started by hand): launch
 * detection from the environment, the single-process backend (collectives
 * leave data unchanged), rt_comm_abort's message and exit status (in a
 * forked child), FNV-1a against published vectors, the batch-slice rule
 * and rt_loader_next_slice against the rows of a full batch.
 *
 * Under mpirun (tests/mpi.test):
 *   --mpi N          every rank checks, for several lengths and segment
 *                    sizes: the sum of exact integers equals the formula
 *                    (ordered and MPI_Allreduce); the ordered fp32 and fp64
 *                    sums of order-sensitive values equal a serial sum over
 *                    the ranks in rank order, bit for bit, computed here from
 *                    the formula of every rank's values; the result hashes
 *                    alike on all ranks; rt_comm_allreduce_sum_f32_each's
 *                    pieces (also checked on one rank): summed when handed
 *                    out, each element in one piece of one rank; broadcast
 *                    from the first and the last rank; rt_comm_same_u64.
 *                    Exit 1 on every rank if any rank failed.
 *   --abort-rank R   rank R calls rt_comm_abort while the others wait in an
 *                    all-reduce: the job must end, not hang.
 *   --die-rank R     rank R exits without a word while the others wait.
 *   --backend        prints "mpi" if built with MPI, else "single". */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "train/collective.h"
#include "data/data.h"

static int fails;
static int my_rank = -1; /* under MPI: printed before each failure */
#define CHECK(c, ...)                                                                                      \
    do {                                                                                                   \
        if (!(c)) {                                                                                        \
            fails++;                                                                                       \
            if (my_rank >= 0) fprintf(stderr, "rank %d: ", my_rank);                                      \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #c);                        \
            fprintf(stderr, __VA_ARGS__);                                                                  \
            fprintf(stderr, "\n");                                                                         \
        }                                                                                                  \
    } while (0)

static uint64_t splitmix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* Rank r's element i: random sign, mantissa and exponent in [-20, 20], so
 * that the order of a sum over ranks changes its rounding. */
static double value(int r, int64_t i, int salt)
{
    uint64_t h = splitmix(((uint64_t)r << 40) ^ (uint64_t)i ^ ((uint64_t)salt << 56));
    double m = 1.0 + (double)(h >> 11) / 9007199254740992.0;
    int e = (int)((h >> 3) % 41) - 20;
    return (h & 1 ? -m : m) * ldexp(1.0, e);
}

/* --- the single-process checks ----------------------------------------------- */

static const char *launcher_vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS",
                                      "SLURM_NTASKS"};

static void clear_launcher(void)
{
    for (size_t k = 0; k < sizeof launcher_vars / sizeof *launcher_vars; k++) unsetenv(launcher_vars[k]);
}

static void check_launched(void)
{
    int n = -1;
    clear_launcher();
    CHECK(!rt_comm_launched(&n) && n == 0, "no launcher variables: launched, size %d", n);
    setenv("OMPI_COMM_WORLD_SIZE", "3", 1);
    CHECK(rt_comm_launched(&n) && n == 3, "Open MPI, 3 ranks: got size %d", n);
    clear_launcher();
    setenv("PMI_SIZE", "2", 1);
    CHECK(rt_comm_launched(&n) && n == 2, "PMI, 2 ranks: got size %d", n);
    clear_launcher();
    setenv("PMIX_RANK", "0", 1);
    setenv("SLURM_NTASKS", "5", 1);
    CHECK(rt_comm_launched(&n) && n == 5, "PMIx under Slurm, 5 tasks: got size %d", n);
    clear_launcher();
    setenv("OMPI_COMM_WORLD_SIZE", "x", 1);
    CHECK(!rt_comm_launched(&n), "a malformed OMPI_COMM_WORLD_SIZE counts as no launcher");
    clear_launcher();
}

static void check_single(RtComm *c)
{
    CHECK(c->backend == RT_COMM_SINGLE && c->rank == 0 && c->size == 1 && c->local_size == 1,
          "started by hand: backend %d rank %d size %d", (int)c->backend, c->rank, c->size);
    enum { N = 1001 };
    float f[N], f0[N];
    double d[N], d0[N];
    for (int i = 0; i < N; i++) {
        f[i] = f0[i] = (float)value(0, i, 1);
        d[i] = d0[i] = value(0, i, 2);
    }
    rt_comm_allreduce_sum_f32(c, f, N);
    rt_comm_allreduce_sum_f64(c, d, N);
    rt_comm_allreduce_sum_f32(c, f, 0);
    CHECK(!memcmp(f, f0, sizeof f), "1-rank f32 sum changed the buffer");
    CHECK(!memcmp(d, d0, sizeof d), "1-rank f64 sum changed the buffer");
    rt_comm_bcast(c, f, sizeof f, 0);
    CHECK(!memcmp(f, f0, sizeof f), "1-rank broadcast changed the buffer");
    rt_comm_barrier(c);
    CHECK(rt_comm_same_u64(c, 42), "one rank always agrees with itself");
}

/* Runs rt_comm_abort in a child; its stderr and exit status. */
static void check_abort(RtComm *c)
{
    static const struct {
        int code, want;
    } cases[] = {{4, 4}, {0, 1}};
    for (int k = 0; k < 2; k++) {
        int fd[2];
        if (pipe(fd)) {
            perror("pipe");
            exit(99);
        }
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            exit(99);
        }
        if (pid == 0) {
            dup2(fd[1], 2);
            close(fd[0]);
            rt_comm_abort(c, cases[k].code, "cannot read %s: test fault", "data/train_000.bin");
        }
        close(fd[1]);
        char buf[256];
        size_t len = 0;
        ssize_t r;
        while (len < sizeof buf - 1 && (r = read(fd[0], buf + len, sizeof buf - 1 - len)) > 0) len += (size_t)r;
        buf[len] = 0;
        close(fd[0]);
        int st = 0;
        waitpid(pid, &st, 0);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == cases[k].want, "abort code %d: status %d, want exit %d",
              cases[k].code, st, cases[k].want);
        CHECK(!strcmp(buf, "cannot read data/train_000.bin: test fault\n"), "abort message: \"%s\"", buf);
    }
}

static void check_hash(void)
{
    /* FNV-1a 64 test vectors (Fowler, Noll, Vo; isthe.com/chongo/tech/comp/fnv). */
    CHECK(rt_comm_hash("", 0) == 0xcbf29ce484222325ull, "fnv1a(\"\")");
    CHECK(rt_comm_hash("a", 1) == 0xaf63dc4c8601ec8cull, "fnv1a(\"a\")");
    CHECK(rt_comm_hash("foobar", 6) == 0x85944171f73967e8ull, "fnv1a(\"foobar\")");
}

static void check_slice(void)
{
    static const struct {
        int64_t B;
        int rank, size;
        int64_t first, rows; /* -1: an error */
        const char *msg;
    } cases[] = {
        {8, 0, 4, 0, 2, NULL},
        {8, 3, 4, 6, 2, NULL},
        {5, 0, 1, 0, 5, NULL},
        {12, 1, 3, 4, 4, NULL},
        {6, 1, 4, -1, -1,
         "global batch 6 is not divisible by 4 ranks: each rank trains on batch / ranks rows; use a multiple "
         "of 4 (e.g. 8)"},
        {8, 4, 4, -1, -1, "rank 4 of 4 ranks: no such rank"},
        {8, -1, 4, -1, -1, "rank -1 of 4 ranks: no such rank"},
        {0, 0, 1, -1, -1, "global batch 0: must be at least 1"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        RtBatchSlice s = {-5, -5};
        char *err = NULL;
        int rc = rt_batch_slice(cases[k].B, cases[k].rank, cases[k].size, &s, &err);
        if (cases[k].msg) {
            CHECK(rc == -1 && err && !strcmp(err, cases[k].msg), "B %lld rank %d of %d: rc %d, error \"%s\"",
                  (long long)cases[k].B, cases[k].rank, cases[k].size, rc, err ? err : "(none)");
        } else {
            CHECK(rc == 0 && s.first == cases[k].first && s.rows == cases[k].rows,
                  "B %lld rank %d of %d: rc %d, first %lld rows %lld", (long long)cases[k].B, cases[k].rank,
                  cases[k].size, rc, (long long)s.first, (long long)s.rows);
        }
        free(err);
    }
}

/* N ranks' slices, drawn by N loaders, are the rows of one loader's batch. */
static void check_loader_slice(void)
{
    enum { W = 5, T = 3, B = 4, NR = 2, NTOK = W * T + 1 };
    char path[] = "/tmp/strata-collective-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) {
        perror("mkstemp");
        exit(99);
    }
    close(fd);
    int32_t ids[NTOK];
    for (int i = 0; i < NTOK; i++) ids[i] = i;
    char *err = NULL;
    if (rt_shard_write(path, ids, NTOK, 0, &err)) {
        fprintf(stderr, "%s\n", err);
        exit(99);
    }
    const char *paths[] = {path};
    for (int mode = 0; mode < 2; mode++) {
        RtLoaderMode m = mode ? RT_LOADER_SEQUENTIAL : RT_LOADER_RANDOM;
        RtLoader one, rank[NR];
        if (rt_loader_init(&one, paths, 1, B, T, m, 7, &err)) {
            fprintf(stderr, "%s\n", err);
            exit(99);
        }
        for (int r = 0; r < NR; r++)
            if (rt_loader_init(&rank[r], paths, 1, B, T, m, 7, &err)) {
                fprintf(stderr, "%s\n", err);
                exit(99);
            }
        int32_t tok[B * T], tgt[B * T], all_tok[B * T], all_tgt[B * T], st[B / NR * T], sg[B / NR * T];
        int batches = mode ? 2 : 4; /* random: across an epoch; sequential: W = 5 rows, then 1 */
        for (int b = 0; b < batches; b++) {
            int filled = rt_loader_next(&one, tok, tgt);
            for (int r = 0; r < NR; r++) {
                RtBatchSlice s;
                if (rt_batch_slice(B, r, NR, &s, &err)) {
                    fprintf(stderr, "%s\n", err);
                    exit(99);
                }
                int64_t valid = rt_loader_next_slice(&rank[r], s, all_tok, all_tgt, st, sg);
                int64_t want = filled - s.first < 0 ? 0 : filled - s.first > s.rows ? s.rows : filled - s.first;
                CHECK(valid == want, "mode %d batch %d rank %d: %lld valid rows, want %lld", mode, b, r,
                      (long long)valid, (long long)want);
                CHECK(!memcmp(st, tok + s.first * T, sizeof st) && !memcmp(sg, tgt + s.first * T, sizeof sg),
                      "mode %d batch %d rank %d: slice differs from rows %lld.. of the 1-rank batch", mode, b, r,
                      (long long)s.first);
                for (int64_t i = 0; i < valid * T; i++)
                    CHECK(sg[i] == st[i] + 1, "targets are the inputs shifted by one (ids are positions)");
                RtLoaderState a = rt_loader_state(&one), c = rt_loader_state(&rank[r]);
                CHECK(a.epoch == c.epoch && a.pos == c.pos, "loader states differ after batch %d", b);
            }
        }
        if (mode == 1) CHECK(rt_loader_state(&one).pos == W, "sequential pass did not see all %d windows", W);
        rt_loader_free(&one);
        for (int r = 0; r < NR; r++) rt_loader_free(&rank[r]);
    }
    unlink(path);
}

/* --- the MPI checks ----------------------------------------------------------- */

static void check_sums(RtComm *c)
{
    int N = c->size, me = c->rank;
    static const int64_t lens[] = {0, 1, 2, 3, 5, 1000, 100003};
    static const int64_t segs[] = {RT_COMM_SEG_DEFAULT, 7, 4096};
    int order_matters = 0;
    for (size_t li = 0; li < sizeof lens / sizeof *lens; li++)
        for (size_t si = 0; si < sizeof segs / sizeof *segs; si++) {
            int64_t n = lens[li];
            c->seg = segs[si];
            float *f = malloc((size_t)(n + 1) * sizeof *f);
            double *d = malloc((size_t)(n + 1) * sizeof *d);
            if (!f || !d) rt_comm_abort(c, 99, "out of memory");
            /* exact integers: the formula, in any order */
            for (int ordered = 0; ordered < 2; ordered++) {
                c->ordered = ordered;
                for (int64_t i = 0; i < n; i++) f[i] = (float)(me + 1 + i % 7), d[i] = me + 1 + i % 7;
                rt_comm_allreduce_sum_f32(c, f, n);
                rt_comm_allreduce_sum_f64(c, d, n);
                int bad = 0;
                for (int64_t i = 0; i < n; i++) {
                    double want = N * (N + 1) / 2 + (double)N * (double)(i % 7);
                    bad += f[i] != (float)want || d[i] != want;
                }
                CHECK(!bad, "n %lld seg %lld ordered %d: %d sums differ from N(N+1)/2 + N (i mod 7)", (long long)n,
                      (long long)c->seg, ordered, bad);
            }
            /* order-sensitive values: the serial sum in rank order, bit for bit */
            c->ordered = 1;
            for (int64_t i = 0; i < n; i++) f[i] = (float)value(me, i, 1), d[i] = value(me, i, 2);
            rt_comm_allreduce_sum_f32(c, f, n);
            rt_comm_allreduce_sum_f64(c, d, n);
            int64_t badf = 0, badd = 0;
            for (int64_t i = 0; i < n; i++) {
                float sf = (float)value(0, i, 1), rf = (float)value(N - 1, i, 1);
                double sd = value(0, i, 2);
                for (int r = 1; r < N; r++) sf += (float)value(r, i, 1), sd += value(r, i, 2);
                for (int r = N - 2; r >= 0; r--) rf += (float)value(r, i, 1);
                badf += memcmp(&f[i], &sf, sizeof sf) != 0;
                badd += memcmp(&d[i], &sd, sizeof sd) != 0;
                order_matters += memcmp(&rf, &sf, sizeof sf) != 0;
            }
            CHECK(!badf && !badd, "n %lld seg %lld: %lld fp32 and %lld fp64 sums differ from the serial sum",
                  (long long)n, (long long)c->seg, (long long)badf, (long long)badd);
            uint64_t h = rt_comm_hash(f, (size_t)n * sizeof *f) ^ rt_comm_hash(d, (size_t)n * sizeof *d);
            CHECK(rt_comm_same_u64(c, h), "n %lld seg %lld: the sums differ between ranks", (long long)n,
                  (long long)c->seg);
            free(f);
            free(d);
        }
    c->seg = RT_COMM_SEG_DEFAULT;
    /* With 3 or more ranks the test values must make the order visible, or the
     * bitwise check above proves nothing (2 ranks: a + b == b + a). */
    if (N >= 3) CHECK(order_matters > 0, "no value depends on the order of summation");
}

/* rt_comm_allreduce_sum_f32_each: every piece it hands out is non-empty and
 * already holds its sums (exact integers, so MPI_Allreduce's order does not
 * matter) when it is handed out; over all ranks the pieces cover each
 * element once. */
typedef struct Seen {
    const float *buf;
    double *cover;   /* (n) pieces holding element i, this rank */
    int N, bad, empty;
} Seen;

static void seen_piece(void *ctx, int64_t at, int64_t len)
{
    Seen *s = ctx;
    s->empty += len <= 0;
    for (int64_t i = at; i < at + len; i++) {
        s->cover[i] += 1;
        s->bad += s->buf[i] != (float)(s->N * (s->N + 1) / 2 + (double)s->N * (double)(i % 7));
    }
}

static void check_pieces(RtComm *c)
{
    static const int64_t lens[] = {0, 1, 3, 1000, 100003};
    static const int64_t segs[] = {RT_COMM_SEG_DEFAULT, 7, 4096};
    for (size_t li = 0; li < sizeof lens / sizeof *lens; li++)
        for (size_t si = 0; si < sizeof segs / sizeof *segs; si++)
            for (int ordered = 0; ordered < 2; ordered++) {
                int64_t n = lens[li];
                c->seg = segs[si], c->ordered = ordered;
                float *f = malloc((size_t)(n + 1) * sizeof *f);
                double *cover = calloc((size_t)(n + 1), sizeof *cover);
                if (!f || !cover) rt_comm_abort(c, 99, "out of memory");
                for (int64_t i = 0; i < n; i++) f[i] = (float)(c->rank + 1 + i % 7);
                Seen s = {f, cover, c->size, 0, 0};
                rt_comm_allreduce_sum_f32_each(c, f, n, seen_piece, &s);
                CHECK(!s.bad && !s.empty, "n %lld seg %lld ordered %d: %d values not yet summed, %d empty pieces",
                      (long long)n, (long long)c->seg, ordered, s.bad, s.empty);
                rt_comm_allreduce_sum_f64(c, cover, n);
                int64_t wrong = 0;
                for (int64_t i = 0; i < n; i++) wrong += cover[i] != 1;
                CHECK(!wrong, "n %lld seg %lld ordered %d: %lld elements not in exactly one piece of one rank",
                      (long long)n, (long long)c->seg, ordered, (long long)wrong);
                free(f);
                free(cover);
            }
    c->seg = RT_COMM_SEG_DEFAULT, c->ordered = 1;
}

static void check_bcast(RtComm *c)
{
    enum { NB = 1001 };
    unsigned char buf[NB];
    int roots[2] = {0, c->size - 1};
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < NB; i++) buf[i] = (unsigned char)(c->rank == roots[k] ? i * 7 + roots[k] : 0xEE);
        rt_comm_bcast(c, buf, NB, roots[k]);
        int bad = 0;
        for (int i = 0; i < NB; i++) bad += buf[i] != (unsigned char)(i * 7 + roots[k]);
        CHECK(!bad, "broadcast from rank %d: %d bytes differ", roots[k], bad);
    }
    CHECK(rt_comm_same_u64(c, 12345), "equal values are the same");
    if (c->size > 1) CHECK(!rt_comm_same_u64(c, (uint64_t)c->rank), "rank numbers are not all the same");
}

static int mpi_main(RtComm *c, int want)
{
    my_rank = c->rank;
    CHECK(c->backend == RT_COMM_MPI, "launched by mpirun, but on the single backend (built without MPI?)");
    CHECK(c->size == want, "%d ranks, mpirun was asked for %d", c->size, want);
    CHECK(c->rank >= 0 && c->rank < c->size && c->local_rank >= 0 && c->local_rank < c->local_size,
          "rank %d of %d, local %d of %d", c->rank, c->size, c->local_rank, c->local_size);
    if (c->backend == RT_COMM_MPI) {
        check_sums(c);
        check_pieces(c);
        check_bcast(c);
        rt_comm_barrier(c);
    }
    double total = fails;
    rt_comm_allreduce_sum_f64(c, &total, 1);
    if (c->rank == 0) printf("%s: %d ranks, %g failed checks\n", total ? "FAIL" : "ok", c->size, total);
    rt_comm_finalize(c);
    return total ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "--backend")) {
#ifdef HAVE_MPI
        puts("mpi");
#else
        puts("single");
#endif
        return 0;
    }
    if (argc == 3 && !strcmp(argv[1], "--mpi")) {
        RtComm *c = rt_comm_init(&argc, &argv);
        return mpi_main(c, atoi(argv[2]));
    }
    if (argc == 3 && (!strcmp(argv[1], "--abort-rank") || !strcmp(argv[1], "--die-rank"))) {
        RtComm *c = rt_comm_init(&argc, &argv);
        int who = atoi(argv[2]);
        rt_comm_barrier(c);
        if (c->rank == who) {
            usleep(200000); /* let the others block in the all-reduce */
            if (argv[1][2] == 'a') rt_comm_abort(c, 7, "cannot read data/train_000.bin: test fault");
            _exit(5);
        }
        static float big[1 << 20];
        rt_comm_allreduce_sum_f32(c, big, 1 << 20);
        rt_comm_barrier(c);
        fprintf(stderr, "rank %d: the job went on without rank %d\n", c->rank, who);
        rt_comm_finalize(c);
        return 1;
    }
    if (argc != 1) {
        fprintf(stderr, "usage: %s [--backend | --mpi N | --abort-rank R | --die-rank R]\n", argv[0]);
        return 2;
    }
    check_launched();
    RtComm *c = rt_comm_init(&argc, &argv);
    check_single(c);
    check_pieces(c); /* one rank: one piece, [0, n) */
    check_abort(c);
    rt_comm_finalize(c);
    check_abort(NULL);
    check_hash();
    check_slice();
    check_loader_slice();
    if (fails) {
        fprintf(stderr, "%d checks failed\n", fails);
        return 1;
    }
    printf("ok\n");
    return 0;
}
