/* pipeline.c - the forward graph to the training graph (pipeline.h). */
#include "ir/pipeline.h"

#include "ir/ad.h"
#include "ir/fuse.h"
#include "ir/remat.h"

bool ir_train_graph(IrGraph *g, bool remat, FILE *err, const char **what)
{
    ad_build(g);
    if (!ir_verify(g, err)) {
        *what = "autodiff";
        return false;
    }
    if (remat && remat_blocks(g) && !ir_verify(g, err)) {
        *what = "rematerialisation";
        return false;
    }
    fuse_graph(g);
    return true;
}
