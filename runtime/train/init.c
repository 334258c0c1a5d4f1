/* init.c - parameter initialisation (init.h): one xoshiro256** stream per
 * parameter, normals by Box-Muller in double. */
#include "train/init.h"
#include "core/util.h"

#include <math.h>

typedef struct Rng {
    uint64_t s[4];
} Rng;

/* Uniform in (0, 1): never 0, so log() is finite. */
static double rng_open01(Rng *r)
{
    return ((double)(rt_xoshiro256ss(r->s) >> 11) + 0.5) * 0x1.0p-53;
}

/* Standard normals, two per Box-Muller draw; *spare holds the second. */
static double rng_normal(Rng *r, double *spare, int *have)
{
    if (*have) {
        *have = 0;
        return *spare;
    }
    double u = rng_open01(r), v = rng_open01(r), rad = sqrt(-2 * log(u)), ang = 2 * M_PI * v;
    *spare = rad * sin(ang);
    *have = 1;
    return rad * cos(ang);
}

void rt_init_param(const StrataParam *p, int64_t index, uint64_t seed, float *out)
{
    Rng r;
    uint64_t x = seed ^ (0x9E3779B97F4A7C15ULL * (uint64_t)(index + 1));
    for (int i = 0; i < 4; i++)
        r.s[i] = rt_splitmix64(&x);
    double spare = 0, std = p->init_a;
    int have = 0;
    if (p->init == STRATA_INIT_XAVIER) {
        double fan_out = p->ndim >= 1 ? (double)p->dims[0] : 1, fan_in = p->ndim == 2 ? (double)p->dims[1] : fan_out;
        std = p->init_a * sqrt(2.0 / (fan_in + fan_out));
    }
    for (int64_t k = 0; k < p->numel; k++) {
        double v = 0;
        switch (p->init) {
        case STRATA_INIT_NORMAL:
        case STRATA_INIT_XAVIER:
            v = std * rng_normal(&r, &spare, &have);
            break;
        case STRATA_INIT_TRUNC_NORMAL: {
            double lo = p->init_b, hi = p->init_c;
            int tries = 0;
            do
                v = std * rng_normal(&r, &spare, &have);
            while ((v < lo || v > hi) && ++tries < 64);
            if (v < lo || v > hi)
                v = lo + (hi - lo) * rng_open01(&r);
            /* Rounding to float must not leave the bounds either. */
            float f = (float)v;
            if ((double)f < lo || (double)f > hi)
                v = (double)f < lo ? nextafterf((float)lo, INFINITY) : nextafterf((float)hi, -INFINITY);
            break;
        }
        case STRATA_INIT_ZEROS:
            v = 0;
            break;
        case STRATA_INIT_ONES:
            v = 1;
            break;
        case STRATA_INIT_CONSTANT:
            v = p->init_a;
            break;
        default:
            v = 0;
            break;
        }
        out[k] = (float)v;
    }
}

void rt_init_params(const StrataModelDesc *desc, float *params, uint64_t seed)
{
    for (int64_t i = 0; i < desc->nparams; i++)
        rt_init_param(&desc->params[i], i, seed, params + desc->params[i].offset);
}
