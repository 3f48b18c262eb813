/*
 * pull — fetching a model into external_models/ (docs/repository.md): a URL and
 * its expected sha256 downloaded with libcurl, verified while it streams,
 * unpacked with libarchive (tar, tar.gz, zip) or kept as a single file,
 * checked, and renamed into place as external_models/NAME; the registry
 * rescan then links it into models/.
 *
 * Threads: pull_start runs on the loop thread; the download, the unpacking
 * and the rename run on libuv's thread pool and touch no daemon state (a
 * pull's own fields, its counters atomic); the result comes back through
 * the work's callback on the loop, which rescans and calls on_done.
 *
 * The pure parts (the URL, host and address policy, the archive entry
 * checks, the digest's hex) are exported for the unit tests and the fuzzer.
 *
 * Errors: pull_start and on_done give an HTTP status (0: success) and a
 * message that names the URL, the entry or the file and the reason.
 */
#ifndef CORRAL_PULL_H
#define CORRAL_PULL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

/* The defaults of --pull-max-size and the entry cap. */
#define PULL_DEFAULT_MAX_SIZE (16LL << 30)
#define PULL_MAX_ENTRIES 100000
/* Pulls running at once (each holds one thread of libuv's pool). */
#define PULL_MAX_ACTIVE 2
/* Redirects followed, each checked as the first URL is. */
#define PULL_MAX_REDIRECTS 3

typedef struct pull_policy {
    const char *const *allow; /* --pull-allow: host names and literal addresses, not owned */
    size_t n_allow;
    const char *file_root;    /* --pull-file-root: file:// URLs only below it (a real path); NULL: none */
    int64_t max_size;         /* bytes: the download, and the unpacked files together */
    int64_t max_entries;      /* archive entries */
} pull_policy;

typedef struct pull pull;

/* status 0: the model is in place and rescanned; else an HTTP status and msg. */
typedef void (*pull_done_cb)(pull *p, int status, const char *name, const char *msg, void *data);

/*
 * Sets up pulling into external_dir (NULL: pulls are refused with 409).
 * policy's strings must outlive the daemon.
 */
void pull_init(uv_loop_t *loop, const pull_policy *policy, const char *models_dir, const char *external_dir);
/*
 * Starts a pull of url (expected digest sha256_hex, 64 hex digits) as model
 * name (NULL: from the URL's last segment): the download must hold a
 * model.yaml. url NULL: the files of model name, declared with `source` in
 * its model.yaml, fetched from there into external_models/NAME, with no
 * model.yaml of their own. On refusal returns an HTTP status with the
 * reason in err; else 0, and on_done is called once, later, on the loop
 * thread, unless pull_detach was called first.
 */
int pull_start(const char *url, const char *sha256_hex, const char *name, pull_done_cb on_done, void *data,
               pull **out, char *err, size_t errlen);
/* The caller is gone: the pull goes on (its events still tell), on_done is not called. */
void pull_detach(pull *p);
/*
 * The daemon is stopping: every pull is cancelled (each still cleans up
 * after itself and answers 503). on_idle, when not NULL, is called once no
 * pull is left (at once when none runs).
 */
void pull_shutdown(void (*on_idle)(void));

/* ---- pure ---- */

/* 64 hex digits (either case) to 32 bytes; 0 or -EINVAL. */
int pull_parse_sha256(const char *hex, unsigned char out[32]);
/*
 * Whether url may be fetched under policy: its scheme (http, https; file
 * only under file_root), its host (listed in allow), no user name or
 * password. On success returns 0 with the scheme's kind in *is_file and,
 * for file URLs, the decoded path in path (pathlen bytes). Else -EPERM or
 * -EINVAL and the reason in err.
 */
int pull_check_url(const pull_policy *policy, const char *url, int *is_file, char *path, size_t pathlen, char *err,
                   size_t errlen);
/*
 * The model name a URL suggests: its last path segment less .tar.gz, .tgz,
 * .tar, .zip or .yaml, when that is a valid model name other than "model".
 * 0, or -EINVAL when there is none.
 */
int pull_default_name(const char *url, char *out, size_t len);
/* Whether host is listed in policy->allow (exact, any case; "[::1]" and "::1" alike). */
int pull_host_allowed(const pull_policy *policy, const char *host);
/* Whether an address is public: not loopback, private, link-local, unspecified, multicast or reserved. */
int pull_addr_public(const struct sockaddr *sa);
/*
 * Whether the daemon may connect to sa: a public address, or one whose
 * literal text is listed in policy->allow. 0, or -EPERM with the reason.
 */
int pull_check_addr(const pull_policy *policy, const struct sockaddr *sa, char *err, size_t errlen);

enum pull_entry_type { PULL_ENTRY_FILE, PULL_ENTRY_DIR, PULL_ENTRY_SYMLINK, PULL_ENTRY_HARDLINK, PULL_ENTRY_OTHER };

/*
 * corral's own check of one archive entry before it is extracted: path
 * relative, not empty, no ".." component, no component longer than 255
 * bytes; only files, directories and links; a symbolic link's target
 * relative and, read from the link's directory, inside the tree; a hard
 * link's target a path that passes the same rules as an entry's. link is
 * the target (NULL for files and directories). 0, or -EPERM with the reason.
 */
int pull_check_entry(const char *path, enum pull_entry_type type, const char *link, char *err, size_t errlen);

#endif
