/*
 * repo — repository scanning and external-model links; see repo.h.
 */
#include "repo.h"

#include "log.h"
#include "xmalloc.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
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
    repo_entry *v = xmalloc(cap * sizeof *v);
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
            v = xrealloc(v, cap * sizeof *v);
        }
        repo_entry *r = &v[count++];
        memset(r, 0, sizeof *r);
        r->dir = xstrdup(dir);
        char err[1024];
        if (manifest_load(yaml, e->d_name, &r->mf, err, sizeof err) < 0) {
            r->error = xstrdup(err);
            r->name = xstrdup(e->d_name);
        } else {
            r->name = xstrdup(r->mf->name);
        }
    }
    closedir(d);
    qsort(v, count, sizeof *v, entry_cmp);
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
            const char *base = strrchr(v[i].dir, '/') + 1;
            char err[PATH_MAX * 2 + 128];
            snprintf(err, sizeof err, "%s/model.yaml: key 'name': '%s' is already used by %s", v[i].dir, v[i].name,
                     v[winner].dir);
            int taken = !model_name_valid(base, strlen(base));
            for (size_t k = 0; k < count && !taken; k++)
                taken = k != i && v[k].name && strcmp(v[k].name, base) == 0;
            log_error("model repository: %s%s", err, taken ? "; skipped" : "");
            manifest_free(v[i].mf);
            v[i].mf = NULL;
            free(v[i].error);
            free(v[i].name);
            v[i].name = NULL;
            if (taken) {
                free(v[i].dir);
                continue;
            }
            v[i].name = xstrdup(base);
            v[i].error = xstrdup(err);
            v[kept++] = v[i];
            continue;
        }
        winner = (ssize_t)kept;
        v[kept++] = v[i];
    }
    count = kept;
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
    }
    free(v);
}
