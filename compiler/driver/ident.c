/* ident.c - the identity of a resolved model (ident.h).  The hash covers
 * what decides the model's function and training: the resolved config,
 * every parameter (name, shape, role, init) and the forward IR as
 * ir_dump prints it; so a comment or a renamed import changes nothing,
 * while another file, -D value or preset that changes the model does. */
#include "driver/ident.h"
#include "core/util.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A JSON string of text; bytes that are not UTF-8 become '?' (jansson
 * takes UTF-8 only; the text is kept for people to read). */
static json_t *text_json(const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    if (j)
        return j;
    char *copy = xmalloc(n + 1);
    for (size_t i = 0; i < n; i++)
        copy[i] = (unsigned char)s[i] < 0x80 ? s[i] : '?';
    j = json_stringn(copy, n);
    free(copy);
    return j;
}

void drv_ident_make(DrvIdent *id, const Program *prog, const SemaOptions *opt, const IrGraph *g)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        die("out of memory");
    for (int i = 0; i < g->config.n; i++) {
        const IrConfig *c = g->config.v[i];
        fprintf(f, "config %s = %.17g\n", c->name, c->value);
    }
    for (int i = 0; i < g->params.n; i++) {
        const IrParam *p = g->params.v[i];
        fprintf(f, "param %s ndim %d [%lld, %lld] role %d init %d %.17g %.17g %.17g\n", p->name, p->ndim,
                (long long)p->dims[0], (long long)p->dims[1], (int)p->role, (int)p->init.kind, p->init.a,
                p->init.b, p->init.c);
    }
    ir_dump(f, g);
    if (fclose(f) != 0)
        die("out of memory");
    id->model_id = rt_fmt("%016llx", (unsigned long long)rt_fnv64(RT_FNV64_INIT, text, len));
    free(text);

    json_t *src = json_object();
    for (int i = 0; i < prog->files.n; i++) {
        const SrcFile *s = prog->files.v[i];
        json_object_set_new(src, s->name, text_json(s->text, s->len));
    }
    id->sources_json = json_dumps(src, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(src);

    json_t *def = json_object(), *list = json_array();
    for (int i = 0; i < opt->ndefines; i++)
        json_array_append_new(list, text_json(opt->defines[i], strlen(opt->defines[i])));
    json_object_set_new(def, "defines", list);
    json_object_set_new(def, "preset", opt->preset ? text_json(opt->preset, strlen(opt->preset)) : json_null());
    id->defines_json = json_dumps(def, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(def);
    if (!id->sources_json || !id->defines_json)
        die("out of memory");
}

void drv_ident_free(DrvIdent *id)
{
    free(id->model_id), free(id->sources_json), free(id->defines_json);
    *id = (DrvIdent){0};
}
