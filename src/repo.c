/*
 * repo — repository scanning and external-model links; see repo.h.
 */
#include "repo.h"

#include "api.h"
#include "log.h"
#include "utf8.h"
#include "xmalloc.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int repo_link_external(const char *models_dir, const char *external_dir)
{
    DIR *d = opendir(external_dir);
    if (!d) {
        int rc = -errno;
        log_warn("external models '%s': cannot read: %s", external_dir, strerror(errno));
        return rc;
    }
    char ext_abs[PATH_MAX];
    if (!realpath(external_dir, ext_abs)) {
        closedir(d);
        return -errno;
    }
    int made = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char src[PATH_MAX * 2], dst[PATH_MAX * 2];
        snprintf(src, sizeof src, "%s/%s", ext_abs, e->d_name);
        snprintf(dst, sizeof dst, "%s/%s", models_dir, e->d_name);
        struct stat st;
        if (stat(src, &st) < 0) {
            log_warn("external model '%s': broken link or unreadable entry: %s", src, strerror(errno));
            continue;
        }
        if (lstat(dst, &st) == 0) {
            char target[PATH_MAX];
            ssize_t n = S_ISLNK(st.st_mode) ? readlink(dst, target, sizeof target - 1) : -1;
            if (n >= 0) {
                target[n] = 0;
                if (strcmp(target, src) == 0)
                    continue; /* our own link from an earlier scan */
            }
            log_debug("external model '%s' not linked: '%s' exists and takes precedence", e->d_name, dst);
            continue;
        }
        if (symlink(src, dst) < 0) {
            log_warn("external model '%s': cannot link to '%s': %s", src, dst, strerror(errno));
            continue;
        }
        log_info("linked external model %s -> %s", dst, src);
        made++;
    }
    closedir(d);
    return made;
}

/* Whether the entry's directory is named like the model: the natural owner of the name. */
static int owns_name(const repo_entry *e)
{
    const char *base = strrchr(e->dir, '/');
    return strcmp(base ? base + 1 : e->dir, e->name) == 0;
}

/* By name; for one name, the directory of that name first, then by directory. */
static int entry_cmp(const void *a, const void *b)
{
    const repo_entry *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c)
        return c;
    c = owns_name(y) - owns_name(x);
    return c ? c : strcmp(x->dir, y->dir);
}

/* The longest chain of variants resolved: more is refused as if it were a loop. */
#define REPO_MAX_CHAIN 16

/* A scanned entry's own tree, before resolution: the file's keys, NULL when they could not be read. */
typedef struct scan_tree {
    json_t *own;
    uint64_t digest;
    int state;   /* 0: not resolved yet, 1: being resolved (on the chain), 2: done */
    char *cycle; /* "a loop: x -> y -> x" when the entry is broken by a loop or too long a chain, which its
                  * variants are told as it is (owned) */
} scan_tree;

/* An entry and its tree while they are sorted together. */
typedef struct scanned {
    repo_entry e;
    scan_tree t;
} scanned;

static int scanned_cmp(const void *a, const void *b)
{
    return entry_cmp(&((const scanned *)a)->e, &((const scanned *)b)->e);
}

static ssize_t find_entry(const repo_entry *v, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (v[i].name && strcmp(v[i].name, name) == 0)
            return (ssize_t)i;
    return -1;
}

static void set_error(repo_entry *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(repo_entry *e, const char *fmt, ...)
{
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    utf8_trim_partial(buf);
    free(e->error);
    e->error = xstrdup(buf);
}

/* "a -> b -> c" of the names on the chain, and name last. */
static void chain_text(const repo_entry *v, const size_t *chain, int depth, const char *last, char *out, size_t len)
{
    size_t at = 0;
    out[0] = 0;
    for (int k = 0; k < depth && at < len; k++)
        at += (size_t)snprintf(out + at, len - at, "%s -> ", v[chain[k]].name);
    if (at < len)
        snprintf(out + at, len - at, "%s", last);
}

/*
 * Resolves entry i: its keys (its own, or its base's resolved with its own
 * over them), code directory and manifest, or its error. chain holds the
 * entries being resolved below it, depth of them.
 */
static void resolve(repo_entry *v, scan_tree *t, size_t n, size_t i, size_t *chain, int depth)
{
    repo_entry *e = &v[i];
    if (t[i].state == 2)
        return;
    t[i].state = 1;
    chain[depth] = i;
    char yaml[PATH_MAX + 16];
    snprintf(yaml, sizeof yaml, "%s/model.yaml", e->variant_dir ? e->variant_dir : e->dir);
    const char *from = NULL;
    if (!t[i].own || e->error)
        goto done;
    if (manifest_from_name(t[i].own, &from) < 0) {
        set_error(e, "%s: key 'from': must be the name of a model in the repository", yaml);
        goto done;
    }
    if (!from) { /* a model of its own */
        char err[1024];
        if (manifest_from_tree(yaml, t[i].own, e->name, NULL, t[i].digest, &e->mf, err, sizeof err) < 0)
            set_error(e, "%s", err);
        else
            e->keys = json_incref(t[i].own);
        goto done;
    }
    char chain_buf[1024];
    ssize_t b = find_entry(v, n, from);
    chain_text(v, chain, depth + 1, from, chain_buf, sizeof chain_buf);
    if (b < 0) {
        set_error(e, "%s: key 'from': base model '%s' is not in the repository (%s)", yaml, from, chain_buf);
        goto done;
    }
    if (t[b].state == 1 || depth + 1 >= REPO_MAX_CHAIN) {
        char cycle[1200];
        snprintf(cycle, sizeof cycle, "%s: %s", t[b].state == 1 ? "a loop" : "a chain of more than 16 variants",
                 chain_buf);
        t[i].cycle = xstrdup(cycle);
        set_error(e, "%s: key 'from': %s", yaml, cycle);
        goto done;
    }
    resolve(v, t, n, (size_t)b, chain, depth + 1);
    if (!v[b].keys) {
        if (t[b].cycle) { /* found below, naming the whole chain already */
            t[i].cycle = xstrdup(t[b].cycle);
            set_error(e, "%s: key 'from': %s", yaml, t[b].cycle);
        } else { /* the base's own error says which file */
            set_error(e, "%s: key 'from': base model '%s' is broken: %s", yaml, from,
                      v[b].error ? v[b].error : "unavailable");
        }
        goto done;
    }
    json_t *keys = manifest_inherit(v[b].keys, t[i].own);
    uint64_t digest = manifest_keys_digest(keys);
    char err[1024];
    if (manifest_from_tree(yaml, keys, e->name, NULL, digest, &e->mf, err, sizeof err) < 0) {
        set_error(e, "%s", err);
        json_decref(keys);
        goto done;
    }
    e->keys = keys;
    free(e->dir); /* the code is the base's: the variant's own directory is variant_dir */
    e->dir = xstrdup(v[b].dir);
done:
    if (from && !e->from) /* a broken variant still names its base */
        e->from = xstrdup(from);
    t[i].state = 2;
}

int repo_scan(const char *models_dir, repo_entry **out, size_t *n)
{
    DIR *d = opendir(models_dir);
    if (!d)
        return -errno;
    char base[PATH_MAX];
    if (!realpath(models_dir, base)) {
        int rc = -errno;
        closedir(d);
        return rc;
    }
    size_t cap = 16, count = 0;
    scanned *sc = xmalloc(cap * sizeof *sc);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[PATH_MAX * 2], yaml[PATH_MAX * 2 + 16];
        snprintf(path, sizeof path, "%s/%s", base, e->d_name);
        struct stat st;
        if (stat(path, &st) < 0) {
            log_warn("model repository: '%s' is a broken link (%s); skipped", path, strerror(errno));
            continue;
        }
        if (!S_ISDIR(st.st_mode))
            continue;
        snprintf(yaml, sizeof yaml, "%s/model.yaml", path);
        if (access(yaml, F_OK) < 0)
            continue;
        char dir[PATH_MAX];
        if (!realpath(path, dir))
            continue;
        if (count == cap) {
            cap *= 2;
            sc = xrealloc(sc, cap * sizeof *sc);
        }
        memset(&sc[count], 0, sizeof sc[count]);
        repo_entry *r = &sc[count].e;
        scan_tree *tr = &sc[count++].t;
        r->dir = xstrdup(dir);
        /* Only read here: validated once every name is known, as a variant needs its base's keys. */
        char err[1024];
        if (manifest_load_tree(yaml, &tr->own, &tr->digest, err, sizeof err) < 0)
            r->error = xstrdup(err);
        json_t *nm = json_object_get(tr->own, "name");
        int own_name = json_is_string(nm) && model_name_valid(json_string_value(nm), json_string_length(nm));
        r->name = xstrdup(own_name ? json_string_value(nm) : e->d_name);
        char why[400];
        if (!r->error && api_model_name_reserved(r->name, strlen(r->name), why, sizeof why))
            set_error(r, "%s: %s: %s", yaml, own_name ? "key 'name'" : "the directory's name (no key 'name')", why);
    }
    closedir(d);
    qsort(sc, count, sizeof *sc, scanned_cmp);
    repo_entry *v = xmalloc((count ? count : 1) * sizeof *v);
    scan_tree *t = xmalloc((count ? count : 1) * sizeof *t);
    for (size_t i = 0; i < count; i++) {
        v[i] = sc[i].e;
        t[i] = sc[i].t;
    }
    free(sc);
    /*
     * Two directories claiming one name: the first in entry_cmp order keeps
     * it; the others are listed under their directory's name with the
     * conflict as their error, or dropped with a log line when that name is
     * taken too.
     */
    size_t kept = 0;
    ssize_t winner = -1; /* in the compacted prefix: the last entry that kept its own name */
    for (size_t i = 0; i < count; i++) {
        if (winner >= 0 && strcmp(v[i].name, v[winner].name) == 0) {
            const char *dname = strrchr(v[i].dir, '/') + 1;
            char err[PATH_MAX * 2 + 128];
            snprintf(err, sizeof err, "%s/model.yaml: key 'name': '%s' is already used by %s", v[i].dir, v[i].name,
                     v[winner].dir);
            int taken = !model_name_valid(dname, strlen(dname));
            for (size_t k = 0; k < count && !taken; k++)
                taken = k != i && v[k].name && strcmp(v[k].name, dname) == 0;
            log_error("model repository: %s%s", err, taken ? "; skipped" : "");
            json_decref(t[i].own);
            t[i].own = NULL;
            free(v[i].error);
            free(v[i].name);
            v[i].name = NULL;
            if (taken) {
                free(v[i].dir);
                continue;
            }
            v[i].name = xstrdup(dname);
            v[i].error = xstrdup(err);
            t[kept] = t[i];
            v[kept++] = v[i];
            continue;
        }
        winner = (ssize_t)kept;
        t[kept] = t[i];
        v[kept++] = v[i];
    }
    count = kept;
    /* A variant's own directory is known before resolution, so its messages name its file. */
    for (size_t i = 0; i < count; i++) {
        const char *from;
        if (t[i].own && manifest_from_name(t[i].own, &from) != 0)
            v[i].variant_dir = xstrdup(v[i].dir);
    }
    size_t chain[REPO_MAX_CHAIN + 1];
    for (size_t i = 0; i < count; i++)
        resolve(v, t, count, i, chain, 0);
    for (size_t i = 0; i < count; i++) {
        json_decref(t[i].own);
        free(t[i].cycle);
    }
    free(t);
    /* Names changed for the losers of a conflict: sort again (no tree travels now). */
    qsort(v, count, sizeof *v, entry_cmp);
    *out = v;
    *n = count;
    return 0;
}

void repo_entries_free(repo_entry *v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++) {
        free(v[i].name);
        free(v[i].dir);
        manifest_free(v[i].mf);
        free(v[i].error);
        json_decref(v[i].keys);
        free(v[i].from);
        free(v[i].variant_dir);
    }
    free(v);
}
