/* ident.h - whether a checkpoint was written by the model at hand: its
 * metadata (strata.model_id, strata.config, strata.model_path,
 * strata.model, strata.sources; checkpoint.h) against the RtModel's.
 * --resume refuses another model (train.c); eval, sample and the other
 * readers of weights warn (model.c). */
#ifndef STRATA_IDENT_H
#define STRATA_IDENT_H
#include "model.h"
#include "store/safetensors.h"

/* NULL when ck is of model m (the same model id; without ids, the same
 * config and sources), else what differs as one malloc'd line: "config
 * heads: 2 in the checkpoint, 4 now; model file: a.strata in the
 * checkpoint, b.strata now (another text)".  When only the ids differ:
 * "the same sources and config resolve to another model (another version
 * of strata?)". */
char *rt_model_diff(const RtSafetensors *ck, const RtModel *m);
#endif
