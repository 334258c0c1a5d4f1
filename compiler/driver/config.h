/* config.h - the resolved config of a model as JSON, the text that
 * checkpoints keep as strata.config and trainers get as RtModel.config_json
 * (train.c, import.c).  See config.c. */
#ifndef STRATA_DRIVER_CONFIG_H
#define STRATA_DRIVER_CONFIG_H
#include "ir/ir.h"

/* The resolved config as a JSON object {"name": value, ...}, malloc'd:
 * whole numbers as integers, others as reals. */
char *drv_config_json(const IrGraph *g);
#endif
