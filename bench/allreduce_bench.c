/* allreduce_bench.c - seconds and bytes per second of the fp32 all-reduce
 * of runtime/train/collective.c, in rank order (the default, bitwise
 * reproducible) and through MPI_Allreduce, for buffers the size of a
 * model's gradients (70M floats: the LNS model at d 512, 12 layers, is
 * about 70M parameters) and of a small model (1M floats).
 *
 *   mpirun -np 2 bench/allreduce_bench [FLOATS...]   (default 1048576 70000000)
 *
 * Rank 0 prints one line per size and method: the slowest rank's mean
 * seconds per call (after a warm-up call), the algorithm bandwidth (buffer
 * bytes / s) and the bus bandwidth (2 (N-1)/N of that: the bytes each rank
 * sends and receives, comparable across rank counts).  Ordered sums are
 * also timed with segments of 1 Mi and 16 Mi elements.  Started without
 * mpirun it is a 1-rank job: it says so and exits. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "train/collective.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Mean seconds per call on the slowest rank. */
static double time_sum(RtComm *c, float *buf, int64_t n, int reps)
{
    rt_comm_allreduce_sum_f32(c, buf, n); /* warm-up: scratch, connections */
    rt_comm_barrier(c);
    double t0 = now();
    for (int k = 0; k < reps; k++) rt_comm_allreduce_sum_f32(c, buf, n);
    double t = (now() - t0) / reps;
    /* the maximum over ranks, through the sum: every rank's time in its own slot */
    double *all = calloc((size_t)c->size, sizeof *all);
    if (!all) rt_comm_abort(c, 3, "out of memory");
    all[c->rank] = t;
    rt_comm_allreduce_sum_f64(c, all, c->size);
    double worst = 0;
    for (int r = 0; r < c->size; r++) worst = all[r] > worst ? all[r] : worst;
    free(all);
    return worst;
}

int main(int argc, char **argv)
{
    RtComm *c = rt_comm_init(&argc, &argv);
    if (c->size == 1) {
        printf("1 rank: every all-reduce is a no-op; run it as mpirun -np 2 %s\n", argv[0]);
        rt_comm_finalize(c);
        return 0;
    }
    int64_t def[] = {1 << 20, 70000000};
    int nsize = argc > 1 ? argc - 1 : 2;
    if (c->rank == 0) printf("all-reduce of fp32 buffers, %d ranks\n", c->size);
    for (int k = 0; k < nsize; k++) {
        int64_t n = argc > 1 ? strtoll(argv[k + 1], NULL, 10) : def[k];
        if (n < 1) rt_comm_abort(c, 2, "%s: expected a number of floats >= 1", argv[k + 1]);
        float *buf = malloc((size_t)n * sizeof *buf);
        if (!buf) rt_comm_abort(c, 3, "out of memory (%lld floats)", (long long)n);
        for (int64_t i = 0; i < n; i++) buf[i] = (float)(i % 1000) * 1e-3f;
        int reps = n >= (1 << 24) ? 3 : 20;
        static const struct {
            const char *name;
            int ordered;
            int64_t seg;
        } ways[] = {
            {"ordered, seg 4Mi", 1, RT_COMM_SEG_DEFAULT},
            {"ordered, seg 1Mi", 1, 1 << 20},
            {"ordered, seg 16Mi", 1, 1 << 24},
            {"MPI_Allreduce", 0, RT_COMM_SEG_DEFAULT},
        };
        for (size_t w = 0; w < sizeof ways / sizeof *ways; w++) {
            c->ordered = ways[w].ordered;
            c->seg = ways[w].seg;
            double t = time_sum(c, buf, n, reps);
            double bytes = (double)n * sizeof(float);
            double bus = bytes * 2.0 * (c->size - 1) / c->size;
            if (c->rank == 0)
                printf("%10lld floats  %-18s %9.4f s  %7.2f GB/s algorithm  %7.2f GB/s bus\n", (long long)n,
                       ways[w].name, t, t > 0 ? bytes / t * 1e-9 : 0, t > 0 ? bus / t * 1e-9 : 0);
        }
        free(buf);
    }
    rt_comm_finalize(c);
    return 0;
}
