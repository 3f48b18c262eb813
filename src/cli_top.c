/*
 * cli_top — `corral top`: a table of the models and their instances, with
 * state, queue, request and error rates, p50/p99 latency and memory.
 *
 * Every interval it scrapes /metrics and reads /v1/models. Rates and
 * latency are those of the interval: the difference of two scrapes'
 * counters (corral_request_duration_seconds_count for requests answered,
 * nv_inference_request_failure for failures) and of their histogram
 * buckets (corral_request_duration_seconds), whose quantiles promtext
 * computes as Prometheus' histogram_quantile would; an instance's rate is
 * the difference of its `requests` in two reads of /v1/models.
 *
 * On a terminal the table is redrawn in place on the alternate screen,
 * the keyboard read without echo; a lifecycle event on /v1/events (kept
 * open beside the scrapes) redraws the states at once, between two
 * intervals. q or Ctrl-C quits, and the terminal is left as it was found.
 * Not on a terminal, or with --once, it prints one plain table after one
 * interval (so that the rates exist) and exits 0.
 *
 * Errors: a first refresh that fails is one line on stderr and exit 1;
 * later, on the screen, the reason stands in the title until a refresh
 * succeeds again.
 */
#include "cli_internal.h"

#include "evstream.h"
#include "promtext.h"
#include "sb.h"
#include "xmalloc.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define TOP_USAGE "top [--once] [--interval S]"
/* The longest a refresh may take: a daemon that does not answer in this long is shown as not answering. */
#define TOP_FETCH_TIMEOUT_S 10L

/* ---- one scrape of /metrics ---- */

/* One model's numbers in one scrape. */
typedef struct top_series {
    char *name;        /* owned */
    double answered;   /* corral_request_duration_seconds_count */
    double failed;     /* nv_inference_request_failure, every reason */
    double *le, *cum;  /* the latency histogram's bounds and cumulative counts, owned; nbuckets of each */
    size_t nbuckets, cap;
} top_series;

typedef struct top_scrape {
    top_series *s; /* owned */
    size_t n, cap;
    double at;   /* when it was taken, in seconds of CLOCK_MONOTONIC */
    size_t hint; /* the series the last sample went to: samples come grouped by model */
} top_scrape;

static void scrape_free(top_scrape *sc)
{
    for (size_t i = 0; i < sc->n; i++) {
        free(sc->s[i].name);
        free(sc->s[i].le);
        free(sc->s[i].cum);
    }
    free(sc->s);
    memset(sc, 0, sizeof *sc);
}

static const top_series *series_find(const top_scrape *sc, const char *model)
{
    for (size_t i = 0; i < sc->n; i++)
        if (strcmp(sc->s[i].name, model) == 0)
            return &sc->s[i];
    return NULL;
}

static top_series *series_get(top_scrape *sc, const char *model)
{
    if (sc->hint < sc->n && strcmp(sc->s[sc->hint].name, model) == 0)
        return &sc->s[sc->hint];
    for (size_t i = 0; i < sc->n; i++) {
        if (strcmp(sc->s[i].name, model) == 0) {
            sc->hint = i;
            return &sc->s[i];
        }
    }
    if (sc->n == sc->cap) {
        sc->cap = sc->cap ? sc->cap * 2 : 16;
        sc->s = xrealloc(sc->s, sc->cap * sizeof *sc->s);
    }
    top_series *s = &sc->s[sc->n];
    memset(s, 0, sizeof *s);
    s->name = xstrdup(model);
    sc->hint = sc->n++;
    return s;
}

static int on_sample(void *data, const promtext_sample *smp)
{
    top_scrape *sc = data;
    static const char hist[] = "corral_request_duration_seconds_";
    int is_hist = strncmp(smp->name, hist, sizeof hist - 1) == 0;
    if (!is_hist && strcmp(smp->name, "nv_inference_request_failure") != 0)
        return 0;
    const char *model = promtext_label_get(smp, "model");
    if (!model)
        return 0;
    const char *part = smp->name + sizeof hist - 1;
    if (!is_hist) {
        series_get(sc, model)->failed += smp->value;
    } else if (strcmp(part, "count") == 0) {
        series_get(sc, model)->answered = smp->value;
    } else if (strcmp(part, "bucket") == 0) {
        const char *le = promtext_label_get(smp, "le");
        char *end;
        double bound = le ? strtod(le, &end) : NAN;
        if (!le || *end || isnan(bound))
            return 0;
        top_series *s = series_get(sc, model);
        if (s->nbuckets == s->cap) {
            s->cap = s->cap ? s->cap * 2 : 32;
            s->le = xrealloc(s->le, s->cap * sizeof *s->le);
            s->cum = xrealloc(s->cum, s->cap * sizeof *s->cum);
        }
        /* kept in the order of le, whatever order they came in (the daemon's is already that) */
        size_t i = s->nbuckets++;
        for (; i > 0 && s->le[i - 1] > bound; i--) {
            s->le[i] = s->le[i - 1];
            s->cum[i] = s->cum[i - 1];
        }
        s->le[i] = bound;
        s->cum[i] = smp->value;
    }
    return 0;
}

/* ---- the state of the view ---- */

typedef struct top {
    double interval_s;
    int live;          /* on a terminal: redrawn in place */
    top_scrape prev, cur;     /* the last two scrapes: the rates are of the time between them */
    json_t *models_prev;      /* /v1/models at prev.at (owned; NULL before the second refresh) */
    json_t *models_cur;       /* /v1/models at cur.at (owned) */
    json_t *models_shown;     /* the newest /v1/models: models_cur, or a read after an event (owned) */
    double models_prev_at, models_cur_at;
    char error[640];   /* why the last refresh failed; "" when it did not */
    char refreshed[16]; /* the wall-clock time of the last good refresh, HH:MM:SS */
} top;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t on_fetch_body(char *p, size_t size, size_t n, void *ud)
{
    sb_add(ud, p, size * n);
    return size * n;
}

/*
 * GETs path into body (NUL-terminated). 0, or -1 with err saying why,
 * nothing printed: the screen may be ours. -EINVAL when the token cannot be
 * sent, which cli__open_request has already said on stderr.
 */
static int fetch(const char *path, sb *body, char *err, size_t errlen)
{
    struct curl_slist *headers;
    CURL *c = cli__open_request("GET", path, NULL, &headers);
    if (!c) {
        curl_slist_free_all(headers);
        return -EINVAL;
    }
    body->len = 0;
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_fetch_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, TOP_FETCH_TIMEOUT_S);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(c);
    sb_reserve(body, 0);
    body->p[body->len] = '\0';
    if (rc != CURLE_OK) {
        snprintf(err, errlen, "cannot reach %s: %s", cli__base_url(), curl_easy_strerror(rc));
        return -1;
    }
    if (status < 200 || status > 299) {
        json_t *j = json_loadb(body->p, body->len, 0, NULL);
        const char *msg = json_string_value(json_object_get(j, "error"));
        snprintf(err, errlen, "HTTP %ld: %s", status, msg ? msg : body->len ? body->p : "no message");
        json_decref(j);
        return -1;
    }
    return 0;
}

static int fetch_models(json_t **out, char *err, size_t errlen)
{
    sb body;
    sb_init(&body, 4096);
    int rc = fetch("/v1/models", &body, err, errlen);
    if (rc == 0) {
        json_error_t jerr;
        *out = json_loadb(body.p, body.len, 0, &jerr);
        if (!json_is_array(json_object_get(*out, "models"))) {
            snprintf(err, errlen, "%s/v1/models answered with no list of models: %s", cli__base_url(),
                     *out ? "no \"models\" array" : jerr.text);
            json_decref(*out);
            *out = NULL;
            rc = -1;
        }
    }
    sb_free(&body);
    return rc;
}

static int fetch_metrics(top_scrape *sc, char *err, size_t errlen)
{
    sb body;
    sb_init(&body, 65536);
    int rc = fetch("/metrics", &body, err, errlen);
    sc->at = now_s();
    size_t line = 0;
    if (rc == 0 && promtext_parse(body.p, body.len, on_sample, sc, &line) < 0) {
        snprintf(err, errlen, "%s/metrics is not the Prometheus text format at line %zu", cli__base_url(), line);
        rc = -1;
    }
    sb_free(&body);
    return rc;
}

static void stamp(top *t)
{
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(t->refreshed, sizeof t->refreshed, "%H:%M:%S", &tm);
}

/* One interval's refresh: a scrape and a read of the models, which become the newest pair. */
static int refresh(top *t)
{
    top_scrape sc = {0};
    json_t *models = NULL;
    char err[sizeof t->error];
    int rc = fetch_metrics(&sc, err, sizeof err);
    if (rc == 0)
        rc = fetch_models(&models, err, sizeof err);
    if (rc < 0) {
        scrape_free(&sc);
        snprintf(t->error, sizeof t->error, "%s", rc == -EINVAL ? "" : err);
        return rc;
    }
    scrape_free(&t->prev);
    t->prev = t->cur;
    t->cur = sc;
    json_decref(t->models_prev);
    json_decref(t->models_shown);
    t->models_prev = t->models_cur;
    t->models_prev_at = t->models_cur_at;
    t->models_cur = models;
    t->models_cur_at = t->cur.at;
    t->models_shown = json_incref(models);
    t->error[0] = '\0';
    stamp(t);
    return 0;
}

/* After a lifecycle event: the states now, the rates as they were. */
static void refresh_states(top *t)
{
    json_t *models;
    char err[sizeof t->error];
    if (fetch_models(&models, err, sizeof err) < 0) {
        snprintf(t->error, sizeof t->error, "%s", err);
        return;
    }
    json_decref(t->models_shown);
    t->models_shown = models;
    t->error[0] = '\0';
    stamp(t);
}

/* ---- the table ---- */

/* One model's rates over the last interval; NAN where they are not known (yet). */
typedef struct top_rates {
    double req_s, err_s, p50, p99;
} top_rates;

static top_rates model_rates(const top *t, const char *name)
{
    top_rates r = {NAN, NAN, NAN, NAN};
    const top_series *a = series_find(&t->prev, name), *b = series_find(&t->cur, name);
    double dt = t->cur.at - t->prev.at;
    if (!a || !b || !(dt > 0) || b->answered < a->answered || b->failed < a->failed)
        return r; /* not two scrapes of it yet, or the daemon restarted between them */
    r.req_s = (b->answered - a->answered) / dt;
    r.err_s = (b->failed - a->failed) / dt;
    if (a->nbuckets != b->nbuckets || !b->nbuckets)
        return r;
    double *delta = xmalloc(b->nbuckets * sizeof *delta);
    for (size_t i = 0; i < b->nbuckets; i++) {
        if (a->le[i] != b->le[i]) { /* the buckets changed: nothing to subtract */
            free(delta);
            return r;
        }
        delta[i] = b->cum[i] - a->cum[i];
    }
    r.p50 = promtext_quantile(0.5, b->le, delta, b->nbuckets);
    r.p99 = promtext_quantile(0.99, b->le, delta, b->nbuckets);
    free(delta);
    return r;
}

static json_t *find_model(json_t *models, const char *name)
{
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(models, "models"), i, m) {
        const char *n = json_string_value(json_object_get(m, "name"));
        if (n && strcmp(n, name) == 0)
            return m;
    }
    return NULL;
}

/* An instance's requests per second over the last interval: the same process in both reads. */
static double instance_rate(const top *t, const char *model, json_t *in)
{
    double dt = t->models_cur_at - t->models_prev_at;
    json_t *pid = json_object_get(in, "pid");
    if (!t->models_prev || !(dt > 0) || !json_is_integer(pid))
        return NAN;
    json_t *id = json_object_get(in, "id");
    json_int_t a = -1, b = -1;
    json_t *snap[2] = {t->models_prev, t->models_cur};
    json_int_t *req[2] = {&a, &b};
    for (int k = 0; k < 2; k++) {
        size_t i;
        json_t *other;
        json_array_foreach(json_object_get(find_model(snap[k], model), "instances"), i, other) {
            if (json_equal(json_object_get(other, "id"), id) && json_equal(json_object_get(other, "pid"), pid))
                *req[k] = json_integer_value(json_object_get(other, "requests"));
        }
    }
    return a >= 0 && b >= a ? (double)(b - a) / dt : NAN;
}

static void fmt_rate(char *buf, size_t len, double v)
{
    if (isnan(v))
        snprintf(buf, len, "-");
    else
        snprintf(buf, len, "%.1f", v);
}

static void fmt_seconds(char *buf, size_t len, double v)
{
    if (isnan(v) || v < 0)
        snprintf(buf, len, "-");
    else if (v < 1e-3)
        snprintf(buf, len, "%.0fus", v * 1e6);
    else if (v < 1)
        snprintf(buf, len, "%.1fms", v * 1e3);
    else
        snprintf(buf, len, "%.2fs", v);
}

static void fmt_uptime(char *buf, size_t len, double s)
{
    long long t = (long long)s;
    if (s < 60)
        snprintf(buf, len, "%.1fs", s);
    else if (t < 3600)
        snprintf(buf, len, "%lldm%02llds", t / 60, t % 60);
    else if (t < 86400)
        snprintf(buf, len, "%lldh%02lldm", t / 3600, t / 60 % 60);
    else
        snprintf(buf, len, "%lldd%02lldh", t / 86400, t / 3600 % 24);
}

/* A string member of o, or fallback. */
static const char *jstr_or(json_t *o, const char *key, const char *fallback)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v ? v : fallback;
}

/* Appends s with control characters as '?': names and reasons come from the daemon and its workers. */
static void add_printable(sb *out, const char *s)
{
    for (; s && *s; s++)
        sb_addc(out, (unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s);
}

/* Where the frame is going: its lines, cut to the screen on a terminal. */
typedef struct frame {
    sb out;
    sb line; /* the line being built */
    int live;
    size_t width, height, lines;
} frame;

static void line_end(frame *f)
{
    size_t len = f->line.len;
    if (f->live) {
        if (f->lines + 1 >= f->height) { /* the last row stays empty: a newline there would scroll the screen */
            f->line.len = 0;
            return;
        }
        if (len > f->width) {
            len = f->width;
            while (len && ((unsigned char)f->line.p[len] & 0xC0) == 0x80)
                len--; /* not in the middle of a UTF-8 character */
        }
    } else {
        while (len && f->line.p[len - 1] == ' ')
            len--;
    }
    sb_add(&f->out, f->line.p, len);
    sb_adds(&f->out, f->live ? "\x1b[K\n" : "\n");
    f->lines++;
    f->line.len = 0;
}

static void cell(frame *f, const char *text, int width, int right)
{
    size_t start = f->line.len;
    if (right) {
        int pad = width - (int)strlen(text);
        for (int i = 0; i < pad; i++)
            sb_addc(&f->line, ' ');
    }
    add_printable(&f->line, text);
    while (f->line.len - start < (size_t)width)
        sb_addc(&f->line, ' ');
    sb_addc(&f->line, ' ');
}

static void render(top *t, frame *f)
{
    json_t *models = json_object_get(t->models_shown, "models");
    size_t i, k;
    json_t *m, *in;
    int name_w = 5;
    json_array_foreach(models, i, m) {
        int n = (int)strlen(jstr_or(m, "name", ""));
        if (n > name_w)
            name_w = n < 40 ? n : 40;
    }
    if (f->live) {
        sb_printf(&f->line, "corral top - %s - %s - every %gs - q quits", cli__base_url(), t->refreshed,
                  t->interval_s);
        if (t->error[0]) {
            sb_adds(&f->line, " - ");
            add_printable(&f->line, t->error);
        }
        line_end(f);
        line_end(f);
    }
    static const char *const mhead[] = {"STATE", "INST", "QUEUE", "REQ/S", "ERR/S", "P50", "P99", "MEM"};
    static const int mwidth[] = {9, 5, 5, 8, 7, 8, 8, 9};
    cell(f, "MODEL", name_w, 0);
    for (size_t c = 0; c < sizeof mhead / sizeof mhead[0]; c++)
        cell(f, mhead[c], mwidth[c], c > 0);
    sb_adds(&f->line, "REASON");
    line_end(f);
    json_array_foreach(models, i, m) {
        const char *name = jstr_or(m, "name", "?");
        json_t *insts = json_object_get(m, "instances");
        size_t ready = 0;
        double rss = 0;
        json_array_foreach(insts, k, in) {
            ready += strcmp(jstr_or(in, "state", ""), "ready") == 0;
            rss += (double)json_integer_value(json_object_get(in, "rss_bytes"));
        }
        top_rates r = model_rates(t, name);
        char v[8][32];
        snprintf(v[0], sizeof v[0], "%s", jstr_or(m, "state", "?"));
        snprintf(v[1], sizeof v[1], "%zu/%zu", ready, json_array_size(insts));
        snprintf(v[2], sizeof v[2], "%lld", (long long)json_integer_value(json_object_get(m, "queue")));
        fmt_rate(v[3], sizeof v[3], r.req_s);
        fmt_rate(v[4], sizeof v[4], r.err_s);
        fmt_seconds(v[5], sizeof v[5], r.p50);
        fmt_seconds(v[6], sizeof v[6], r.p99);
        if (json_array_size(insts))
            cli__human_size(rss, v[7], sizeof v[7]);
        else
            snprintf(v[7], sizeof v[7], "-");
        cell(f, name, name_w, 0);
        for (int c = 0; c < 8; c++)
            cell(f, v[c], mwidth[c], c > 0);
        if (strcmp(v[0], "failed") == 0)
            add_printable(&f->line, json_string_value(json_object_get(m, "reason")));
        line_end(f);
    }
    line_end(f);
    static const char *const ihead[] = {"ID", "PID", "STATE", "UPTIME", "REQUESTS", "RESTARTS", "REQ/S", "RSS"};
    static const int iwidth[] = {3, 8, 9, 8, 9, 8, 7, 9};
    cell(f, "MODEL", name_w, 0);
    for (size_t c = 0; c < sizeof ihead / sizeof ihead[0]; c++)
        cell(f, ihead[c], iwidth[c], c >= 3);
    line_end(f);
    json_array_foreach(models, i, m) {
        const char *name = jstr_or(m, "name", "?");
        json_array_foreach(json_object_get(m, "instances"), k, in) {
            char v[8][32];
            json_t *pid = json_object_get(in, "pid");
            snprintf(v[0], sizeof v[0], "%lld", (long long)json_integer_value(json_object_get(in, "id")));
            if (json_is_integer(pid))
                snprintf(v[1], sizeof v[1], "%lld", (long long)json_integer_value(pid));
            else
                snprintf(v[1], sizeof v[1], "-");
            snprintf(v[2], sizeof v[2], "%s", jstr_or(in, "state", "?"));
            fmt_uptime(v[3], sizeof v[3], json_number_value(json_object_get(in, "uptime_s")));
            snprintf(v[4], sizeof v[4], "%lld", (long long)json_integer_value(json_object_get(in, "requests")));
            snprintf(v[5], sizeof v[5], "%lld", (long long)json_integer_value(json_object_get(in, "restarts")));
            fmt_rate(v[6], sizeof v[6], instance_rate(t, name, in));
            cli__human_size((double)json_integer_value(json_object_get(in, "rss_bytes")), v[7], sizeof v[7]);
            cell(f, name, name_w, 0);
            for (int c = 0; c < 8; c++)
                cell(f, v[c], iwidth[c], c >= 3);
            line_end(f);
        }
    }
}

/* Writes all of p; -1 after noting why it cannot. */
static int write_all(const char *p, size_t len, char *err, size_t errlen)
{
    while (len) {
        ssize_t n = write(STDOUT_FILENO, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(err, errlen, "cannot write standard output: %s", strerror(n < 0 ? errno : EIO));
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int write_str(const char *s, char *err, size_t errlen)
{
    return write_all(s, strlen(s), err, errlen);
}

static int draw(top *t, char *err, size_t errlen)
{
    frame f = {.live = t->live, .width = 80, .height = 24};
    struct winsize ws;
    if (t->live && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col && ws.ws_row) {
        f.width = ws.ws_col;
        f.height = ws.ws_row;
    }
    sb_init(&f.out, 8192);
    sb_init(&f.line, 256);
    if (t->live)
        sb_adds(&f.out, "\x1b[H");
    render(t, &f);
    if (t->live)
        sb_adds(&f.out, "\x1b[J");
    int rc = write_all(f.out.p, f.out.len, err, errlen);
    sb_free(&f.out);
    sb_free(&f.line);
    return rc;
}

/* ---- on a terminal ---- */

/* Signals reach the loop through a pipe, so that a poll wakes for them. */
static int signal_pipe[2] = {-1, -1};
static volatile sig_atomic_t quit_signal, resized;

static void on_signal(int sig)
{
    int saved = errno;
    if (sig == SIGWINCH)
        resized = 1;
    else
        quit_signal = sig;
    if (write(signal_pipe[1], "", 1) < 0) {
        /* the pipe is full: the loop is awake already */
    }
    errno = saved;
}

/* The terminal as it was found, and what was changed of it. */
typedef struct screen {
    struct termios saved;
    int raw;     /* stdin is a terminal, set to be read without echo: saved is restored */
    int keys;    /* the keyboard is read for q (until its terminal closes) */
    int entered; /* the alternate screen is up */
    struct sigaction old[4];
} screen;

static const int screen_signals[4] = {SIGINT, SIGTERM, SIGHUP, SIGWINCH};

static int screen_enter(screen *s, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    if (pipe2(signal_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
        snprintf(err, errlen, "cannot make a pipe: %s", strerror(errno));
        return -1;
    }
    struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: a signal ends the wait */
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < 4; i++)
        sigaction(screen_signals[i], &sa, &s->old[i]);
    if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &s->saved) == 0) {
        struct termios raw = s->saved;
        raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO); /* ISIG stays: Ctrl-C is SIGINT */
        raw.c_cc[VMIN] = 0;
        raw.c_cc[VTIME] = 0;
        s->raw = s->keys = tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
    }
    s->entered = 1;
    return write_str("\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J", err, errlen);
}

static void screen_leave(screen *s)
{
    char ignored[64];
    if (s->entered)
        write_str("\x1b[?25h\x1b[?1049l", ignored, sizeof ignored);
    if (s->raw)
        tcsetattr(STDIN_FILENO, TCSANOW, &s->saved);
    for (int i = 0; i < 4; i++)
        sigaction(screen_signals[i], &s->old[i], NULL);
    for (int i = 0; i < 2; i++) {
        if (signal_pipe[i] >= 0)
            close(signal_pipe[i]);
        signal_pipe[i] = -1;
    }
}

/* /v1/events, kept open to redraw the states as soon as they change. */
typedef struct top_events {
    CURLM *multi;
    CURL *easy; /* NULL while not connected */
    struct curl_slist *headers;
    evstream ev;
    int begun;    /* the answer's first byte came */
    int refused;  /* the daemon answered with no stream: not asked again */
    int changed;  /* an event came since the last redraw */
} top_events;

static int on_lifecycle(void *data, const char *event, size_t len)
{
    (void)event;
    (void)len;
    ((top_events *)data)->changed = 1;
    return 0;
}

static size_t on_events_body(char *p, size_t size, size_t n, void *ud)
{
    top_events *e = ud;
    if (!e->begun) {
        e->begun = 1;
        long status = 0;
        curl_easy_getinfo(e->easy, CURLINFO_RESPONSE_CODE, &status);
        if (status != 200) {
            e->refused = 1;
            return 0;
        }
    }
    return evstream_feed(&e->ev, p, size * n) == 0 ? size * n : 0;
}

static void events_close(top_events *e)
{
    if (!e->easy)
        return;
    curl_multi_remove_handle(e->multi, e->easy);
    curl_easy_cleanup(e->easy);
    curl_slist_free_all(e->headers);
    evstream_close(&e->ev);
    e->easy = NULL;
    e->headers = NULL;
}

/* Connects when not connected (after a refresh: the daemon answers). */
static void events_open(top_events *e)
{
    if (e->easy || e->refused)
        return;
    e->easy = cli__open_request("GET", "/v1/events", "text/event-stream", &e->headers);
    if (!e->easy) {
        curl_slist_free_all(e->headers);
        e->headers = NULL;
        e->refused = 1;
        return;
    }
    e->begun = 0;
    evstream_init(&e->ev, EVSTREAM_SSE, on_lifecycle, e);
    curl_easy_setopt(e->easy, CURLOPT_WRITEFUNCTION, on_events_body);
    curl_easy_setopt(e->easy, CURLOPT_WRITEDATA, e);
    curl_multi_add_handle(e->multi, e->easy);
}

/*
 * Reads what was typed; 1 when it says quit. Input is read without
 * waiting (VMIN 0), so a read of 0 bytes after poll said there is some is
 * the terminal closing: the keyboard is not read after that.
 */
static int read_keys(screen *s)
{
    struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};
    if (poll(&p, 1, 0) <= 0)
        return 0;
    char buf[64];
    ssize_t n = -1;
    if (!(p.revents & (POLLIN | POLLHUP)) || (n = read(STDIN_FILENO, buf, sizeof buf)) == 0 ||
        (n < 0 && errno != EAGAIN && errno != EINTR)) {
        s->keys = 0;
        return 0;
    }
    return n > 0 && (memchr(buf, 'q', (size_t)n) || memchr(buf, 'Q', (size_t)n));
}

static int run_live(top *t)
{
    char err[640] = "";
    screen scr;
    top_events ev = {.multi = curl_multi_init()};
    int status = 0;
    if (screen_enter(&scr, err, sizeof err) < 0 || draw(t, err, sizeof err) < 0)
        goto done;
    events_open(&ev);
    double next = t->cur.at + t->interval_s;
    for (;;) {
        double wait = next - now_s();
        struct curl_waitfd fds[2] = {{.fd = signal_pipe[0], .events = CURL_WAIT_POLLIN},
                                     {.fd = STDIN_FILENO, .events = CURL_WAIT_POLLIN}};
        int running;
        curl_multi_poll(ev.multi, fds, scr.keys ? 2 : 1, wait > 0 ? (int)(wait * 1000) + 1 : 0, NULL);
        char drain[64];
        while (read(signal_pipe[0], drain, sizeof drain) > 0) {
        }
        if (quit_signal) {
            status = quit_signal == SIGINT ? 0 : 128 + quit_signal;
            break;
        }
        if (scr.keys && read_keys(&scr))
            break;
        curl_multi_perform(ev.multi, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(ev.multi, &left)))
            if (msg->msg == CURLMSG_DONE && msg->easy_handle == ev.easy)
                events_close(&ev); /* the stream ended or broke: opened again after the next refresh */
        int redraw = resized;
        resized = 0;
        if (now_s() >= next) {
            next += t->interval_s;
            if (next < now_s())
                next = now_s() + t->interval_s; /* fell behind (a slow daemon): from now on */
            if (refresh(t) == 0)
                events_open(&ev);
            ev.changed = 0;
            redraw = 1;
        } else if (ev.changed) {
            ev.changed = 0;
            refresh_states(t);
            redraw = 1;
        }
        if (redraw && draw(t, err, sizeof err) < 0)
            goto done;
    }
done:
    events_close(&ev);
    curl_multi_cleanup(ev.multi);
    screen_leave(&scr);
    if (err[0]) {
        fprintf(stderr, "corral: %s\n", err);
        return 1;
    }
    return status;
}

/* ---- the verb ---- */

/* --interval: seconds, a positive number up to a day. */
static int parse_interval(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !(v >= 0.05) || v > 86400)
        return -1;
    *out = v;
    return 0;
}

static void sleep_s(double s)
{
    struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

static void top_close(top *t)
{
    scrape_free(&t->prev);
    scrape_free(&t->cur);
    json_decref(t->models_prev);
    json_decref(t->models_cur);
    json_decref(t->models_shown);
}

int cli__top(int argc, char **argv)
{
    top t = {.interval_s = 1};
    int once = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--once") == 0) {
            once = 1;
        } else if (strcmp(argv[i], "--interval") == 0) {
            if (i + 1 >= argc || parse_interval(argv[i + 1], &t.interval_s) < 0) {
                fprintf(stderr, "corral: --interval needs seconds, a number from 0.05 to 86400 (usage: corral " TOP_USAGE
                                ")\n");
                return 2;
            }
            i++;
        } else {
            fprintf(stderr, "corral: unknown argument '%s' for top (usage: corral " TOP_USAGE ")\n", argv[i]);
            return 2;
        }
    }
    t.live = !once && isatty(STDOUT_FILENO);
    int status = 1;
    if (refresh(&t) < 0)
        goto fail;
    if (t.live) {
        status = run_live(&t);
        top_close(&t);
        return status;
    }
    sleep_s(t.interval_s); /* one interval, so that the rates exist */
    if (refresh(&t) < 0)
        goto fail;
    char err[640];
    if (draw(&t, err, sizeof err) < 0) {
        fprintf(stderr, "corral: %s\n", err);
        goto done;
    }
    status = 0;
    goto done;
fail:
    if (t.error[0])
        fprintf(stderr, "corral: %s\n", t.error);
done:
    top_close(&t);
    return status;
}
