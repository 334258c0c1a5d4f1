/* gradcheck.h - proves a model's gradients by central finite differences.
 * Random parameters and a random batch go through the fp64 reference
 * interpreter; every parameter tensor's autodiff gradient (sampled
 * elements) is compared with the fourth-order central difference
 * (-L(p+2h) + 8 L(p+h) - 8 L(p-h) + L(p-2h)) / 12h at h = 1e-3 max(1, |p|)
 * and h/2, Richardson-extrapolated. */
#ifndef STRATA_GRADCHECK_H
#define STRATA_GRADCHECK_H
#include "ir/ir.h"

typedef struct GradcheckOptions {
    int B, T;          /* batch */
    int samples;       /* elements checked per tensor (all if fewer) */
    double tol;        /* largest acceptable relative error */
    uint64_t seed;
    const char *export_path; /* if set: write the point, loss and gradients as JSON */
} GradcheckOptions;

/* g must have been through ad_build.  Prints a table; returns true if every
 * checked element is within tolerance. */
bool gradcheck_run(const IrGraph *g, const GradcheckOptions *o, FILE *out);
#endif
