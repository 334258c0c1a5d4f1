/* config.c - drv_config_json (config.h): the resolved config constants of
 * a graph as one JSON object, in the file's order.  The caller frees the
 * text. */
#include "driver/config.h"

#include <jansson.h>
#include <math.h>

char *drv_config_json(const IrGraph *g)
{
    json_t *o = json_object();
    for (int i = 0; i < g->config.n; i++) {
        const IrConfig *c = g->config.v[i];
        double v = c->value;
        json_t *j = (v == floor(v) && fabs(v) < 0x1p53) ? json_integer((json_int_t)v) : json_real(v);
        json_object_set_new(o, c->name, j);
    }
    char *s = json_dumps(o, JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!s)
        die("out of memory");
    return s;
}
