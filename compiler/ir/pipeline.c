/* pipeline.c - the forward graph to the training graph (pipeline.h). */
#include "ir/pipeline.h"

#include "ir/ad.h"
#include "ir/fuse.h"
#include "ir/remat.h"

#include <string.h>

static const char *const names[] = {[IR_REMAT_POINTWISE] = "pointwise", [IR_REMAT_NONE] = "none",
                                    [IR_REMAT_BLOCKS] = "blocks"};

bool ir_remat_parse(const char *s, IrRemat *out)
{
    for (int r = 0; r < (int)(sizeof names / sizeof *names); r++)
        if (!strcmp(s, names[r])) {
            *out = (IrRemat)r;
            return true;
        }
    return false;
}

const char *ir_remat_name(IrRemat r)
{
    return names[r];
}

bool ir_train_graph(IrGraph *g, IrRemat remat, FILE *err, const char **what)
{
    ad_build(g);
    if (!ir_verify(g, err)) {
        *what = "autodiff";
        return false;
    }
    int added = remat == IR_REMAT_BLOCKS ? remat_blocks(g) : remat == IR_REMAT_POINTWISE ? remat_pointwise(g) : 0;
    if (added && !ir_verify(g, err)) {
        *what = "rematerialisation";
        return false;
    }
    fuse_graph(g);
    return true;
}
