/* ident.c - the model of a checkpoint against the model at hand
 * (ident.h): the ids decide; the config, the file names and texts only
 * explain what differs. */
#define _GNU_SOURCE /* open_memstream */
#include "train/ident.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "; " between the items of a list being written to f. */
static void item(FILE *f, int *n)
{
    if ((*n)++)
        fputs("; ", f);
}

/* The config entries that differ: "config heads: 2 in the checkpoint, 4 now". */
static void config_diff(FILE *f, int *n, const char *was, const char *now)
{
    json_t *a = was ? json_loads(was, 0, NULL) : NULL, *b = now ? json_loads(now, 0, NULL) : NULL;
    if (!json_is_object(a) || !json_is_object(b)) {
        json_decref(a), json_decref(b);
        return;
    }
    const char *key;
    json_t *v;
    json_object_foreach(a, key, v) {
        json_t *w = json_object_get(b, key);
        if (w && json_equal(v, w))
            continue;
        char *vs = json_dumps(v, JSON_ENCODE_ANY), *ws = w ? json_dumps(w, JSON_ENCODE_ANY) : NULL;
        item(f, n);
        if (w)
            fprintf(f, "config %s: %s in the checkpoint, %s now", key, vs, ws);
        else
            fprintf(f, "config %s: %s in the checkpoint, absent now", key, vs);
        free(vs), free(ws);
    }
    json_object_foreach(b, key, v) {
        if (json_object_get(a, key))
            continue;
        char *vs = json_dumps(v, JSON_ENCODE_ANY);
        item(f, n);
        fprintf(f, "config %s: absent in the checkpoint, %s now", key, vs);
        free(vs);
    }
    json_decref(a), json_decref(b);
}

/* Imported files (all sources but the two main files) added, removed or
 * changed. */
static void sources_diff(FILE *f, int *n, const char *was, const char *now, const char *main_was,
                         const char *main_now)
{
    json_t *a = was && *was ? json_loads(was, 0, NULL) : NULL, *b = now ? json_loads(now, 0, NULL) : NULL;
    if (json_is_object(a) && json_is_object(b)) {
        const char *key;
        json_t *v;
        json_object_foreach(a, key, v) {
            if ((main_was && !strcmp(key, main_was)) || (main_now && !strcmp(key, main_now)))
                continue;
            json_t *w = json_object_get(b, key);
            if (w && json_equal(v, w))
                continue;
            item(f, n);
            fprintf(f, "%s %s: %s", !strcmp(key, "<std>") ? "standard library" : "import", key,
                    w ? "another text now" : "imported by the checkpoint's model only");
        }
        json_object_foreach(b, key, v) {
            if ((main_was && !strcmp(key, main_was)) || (main_now && !strcmp(key, main_now)) ||
                json_object_get(a, key))
                continue;
            item(f, n);
            fprintf(f, "import %s: imported now only", key);
        }
    }
    json_decref(a), json_decref(b);
}

char *rt_model_diff(const RtSafetensors *ck, const RtModel *m)
{
    const char *id = rt_st_meta(ck, "strata.model_id");
    bool ids = id && *id && m->model_id && *m->model_id;
    if (ids && !strcmp(id, m->model_id))
        return NULL;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return NULL;
    int n = 0;
    config_diff(f, &n, rt_st_meta(ck, "strata.config"), m->config_json);
    const char *path = rt_st_meta(ck, "strata.model_path"), *src = rt_st_meta(ck, "strata.model");
    bool other_name = path && *path && m->path && strcmp(path, m->path); /* "": not recorded */
    bool other_text = src && *src && m->source && strcmp(src, m->source);
    if (other_name || other_text) {
        item(f, &n);
        if (other_name)
            fprintf(f, "model file: %s in the checkpoint, %s now%s", path, m->path,
                    other_text ? " (another text)" : " (the same text)");
        else
            fprintf(f, "model file %s: another text now", m->path);
    }
    sources_diff(f, &n, rt_st_meta(ck, "strata.sources"), m->sources_json, path, m->path);
    if (n == 0 && ids) {
        item(f, &n);
        fprintf(f, "the same sources and config resolve to another model (model id %s in the checkpoint, %s now; "
                   "another version of strata?)", id, m->model_id);
    }
    fclose(f);
    if (n == 0) {
        free(text);
        return NULL;
    }
    return text;
}
