/*
 * cli_pull — `corral pull URL --sha256 HEX [--name NAME] [--json]`.
 *
 * POST /v1/models/pull answers when the pull is done (200 with the model's
 * /v1 view, or the error). Beside it, /v1/events is kept open (curl multi)
 * and the daemon's `pull` events of this model's name drive the progress:
 * on a terminal one bar redrawn in place on stderr (bytes, total, rate,
 * time left), otherwise one plain line per event. Progress is best effort:
 * when the event stream cannot be had, the pull still goes on and its
 * answer still decides the exit status (0 pulled, 1 refused or failed,
 * 2 bad arguments).
 */
#include "cli_internal.h"

#include "evstream.h"
#include "pull.h"
#include "sb.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#define PULL_USAGE "pull URL --sha256 HEX [--name NAME] [--json] | pull NAME [--json]"
#define BAR_WIDTH 30
#define ANSWER_MAX (1 << 20)

typedef struct pull_cli {
    char name[129];
    int tty;
    /* the POST */
    sb answer;
    /* the event stream */
    CURL *events;
    int ev_begun, ev_streaming, ev_over;
    int ev_headers; /* the stream's headers arrived */
    int ended; /* a done or failed event of this pull was seen */
    evstream ev;
    /* progress */
    long long bytes, total; /* total -1: unknown */
    double start_s;
    int bar_drawn;
} pull_cli;

static double now_s(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec / 1e6;
}

static size_t on_answer(char *p, size_t size, size_t n, void *ud)
{
    pull_cli *c = ud;
    size_t len = size * n;
    if (c->answer.len < ANSWER_MAX)
        sb_add(&c->answer, p, len < ANSWER_MAX - c->answer.len ? len : ANSWER_MAX - c->answer.len);
    return len;
}

static void draw_bar(pull_cli *c, const char *state)
{
    char have[32], all[32], rate_s[32] = "", left[32] = "";
    double elapsed = now_s() - c->start_s;
    double rate = elapsed > 0.2 ? c->bytes / elapsed : 0;
    cli__human_size((double)c->bytes, have, sizeof have);
    if (rate > 0) {
        cli__human_size(rate, rate_s, sizeof rate_s);
        strcat(rate_s, "/s");
    }
    sb line;
    sb_init(&line, 160);
    sb_printf(&line, "\r\033[K%s ", c->name);
    if (c->total > 0) {
        long long filled = c->bytes >= c->total ? BAR_WIDTH : c->bytes * BAR_WIDTH / c->total;
        sb_addc(&line, '[');
        for (int i = 0; i < BAR_WIDTH; i++)
            sb_addc(&line, i < filled ? '#' : '.');
        cli__human_size((double)c->total, all, sizeof all);
        sb_printf(&line, "] %3lld%% %s/%s", c->bytes * 100 / c->total, have, all);
        if (rate > 0 && c->bytes < c->total) {
            long long secs = (long long)((c->total - c->bytes) / rate);
            snprintf(left, sizeof left, "%lld:%02lld left", secs / 60, secs % 60);
        }
    } else {
        sb_printf(&line, "%s", have);
    }
    sb_printf(&line, "  %s  %s  %s", rate_s, left, state);
    fwrite(line.p, 1, line.len, stderr);
    fflush(stderr);
    sb_free(&line);
    c->bar_drawn = 1;
}

static int on_event(void *ud, const char *text, size_t len)
{
    pull_cli *c = ud;
    if (!c->ev.event_type || strcmp(c->ev.event_type, "pull") != 0)
        return 0;
    json_t *d = json_loadb(text, len, 0, NULL);
    const char *name = json_string_value(json_object_get(d, "model"));
    const char *state = json_string_value(json_object_get(d, "state"));
    if (!name || !state || strcmp(name, c->name) != 0) {
        json_decref(d);
        return 0;
    }
    if (strcmp(state, "done") == 0 || strcmp(state, "failed") == 0)
        c->ended = 1;
    json_t *total = json_object_get(d, "total");
    c->bytes = json_integer_value(json_object_get(d, "bytes"));
    c->total = json_is_integer(total) ? json_integer_value(total) : -1;
    if (c->tty) {
        if (strcmp(state, "done") != 0 && strcmp(state, "failed") != 0)
            draw_bar(c, strcmp(state, "progress") == 0 ? "" : state);
    } else if (strcmp(state, "failed") != 0) {
        char have[32], all[32] = "?";
        cli__human_size((double)c->bytes, have, sizeof have);
        if (c->total >= 0)
            cli__human_size((double)c->total, all, sizeof all);
        fprintf(stderr, "pull %s: %s, %s of %s\n", c->name, state, have, all);
    }
    json_decref(d);
    return 0;
}

/* The end of the event stream's headers: it is open, the pull may start. */
static size_t on_events_header(char *p, size_t size, size_t n, void *ud)
{
    pull_cli *c = ud;
    if (size * n == 2 && p[0] == '\r' && p[1] == '\n')
        c->ev_headers = 1;
    return size * n;
}

static size_t on_events_body(char *p, size_t size, size_t n, void *ud)
{
    pull_cli *c = ud;
    size_t len = size * n;
    if (!c->ev_begun) {
        long status = 0;
        c->ev_begun = 1;
        curl_easy_getinfo(c->events, CURLINFO_RESPONSE_CODE, &status);
        if (status != 200)
            return 0; /* no progress, the pull goes on */
        evstream_init(&c->ev, EVSTREAM_SSE, on_event, c);
        c->ev_streaming = 1;
    }
    return evstream_feed(&c->ev, p, len) ? 0 : len;
}

int cli__pull(int argc, char **argv)
{
    const char *url = NULL, *sha = NULL, *name = NULL;
    int json_out = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--sha256") == 0 && i + 1 < argc) {
            sha = argv[++i];
        } else if (strcmp(argv[i], "--name") == 0 && i + 1 < argc) {
            name = argv[++i];
        } else if (strcmp(argv[i], "--json") == 0) {
            json_out = 1;
        } else if (argv[i][0] != '-' && !url) {
            url = argv[i];
        } else {
            fprintf(stderr, "corral: unexpected argument '%s' (usage: corral " PULL_USAGE ")\n", argv[i]);
            return 2;
        }
    }
    /* corral pull NAME: a model declared with source in its model.yaml */
    if (url && !strstr(url, ":") && !sha && !name) {
        name = url;
        url = NULL;
    }
    if (!name && (!url || !sha)) {
        fprintf(stderr, "corral: %s is required (usage: corral " PULL_USAGE ")\n", url ? "--sha256" : "a URL");
        return 2;
    }
    if (!url && sha) {
        fprintf(stderr, "corral: --sha256 goes with a URL (usage: corral " PULL_USAGE ")\n");
        return 2;
    }
    pull_cli c = {.tty = isatty(STDERR_FILENO), .total = -1, .start_s = now_s()};
    if (name)
        snprintf(c.name, sizeof c.name, "%s", name);
    else if (pull_default_name(url, c.name, sizeof c.name) < 0)
        snprintf(c.name, sizeof c.name, "?"); /* the daemon says why it needs a name */
    json_t *body = url ? json_pack("{s:s,s:s}", "url", url, "sha256", sha) : json_object();
    if (name)
        json_object_set_new(body, "name", json_string(name));
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);

    struct curl_slist *post_headers = NULL, *ev_headers = NULL;
    CURL *post = cli__open_json_post("/v1/models/pull", text, strlen(text), &post_headers);
    if (!post) {
        free(text);
        return 1;
    }
    sb_init(&c.answer, 4096);
    curl_easy_setopt(post, CURLOPT_WRITEFUNCTION, on_answer);
    curl_easy_setopt(post, CURLOPT_WRITEDATA, &c);
    c.events = cli__open_request("GET", "/v1/events", "text/event-stream", &ev_headers);
    CURLM *multi = curl_multi_init();
    if (c.events) {
        curl_easy_setopt(c.events, CURLOPT_WRITEFUNCTION, on_events_body);
        curl_easy_setopt(c.events, CURLOPT_WRITEDATA, &c);
        curl_easy_setopt(c.events, CURLOPT_HEADERFUNCTION, on_events_header);
        curl_easy_setopt(c.events, CURLOPT_HEADERDATA, &c);
        curl_multi_add_handle(multi, c.events);
    }
    /*
     * The event stream first (up to 2 s), so that the pull's first events
     * are seen; after the answer, the events already sent are read for
     * up to half a second more, so the last lines are printed.
     */
    double ev_deadline = now_s() + 2;
    int post_added = 0, post_done = 0;
    CURLcode post_rc = CURLE_OK;
    double drain_until = 0;
    for (;;) {
        if (!post_added && (!c.events || c.ev_headers || c.ev_over || now_s() > ev_deadline)) {
            curl_multi_add_handle(multi, post);
            post_added = 1;
        }
        int running;
        curl_multi_perform(multi, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(multi, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            if (msg->easy_handle == post) {
                post_rc = msg->data.result;
                post_done = 1;
                drain_until = now_s() + 0.5;
            } else {
                c.ev_over = 1;
            }
        }
        if (post_done && (c.ended || c.ev_over || !c.ev_streaming || now_s() > drain_until))
            break;
        curl_multi_poll(multi, NULL, 0, post_done ? 100 : 250, NULL);
    }
    long status = 0;
    curl_easy_getinfo(post, CURLINFO_RESPONSE_CODE, &status);
    if (c.bar_drawn)
        fputc('\n', stderr);
    int rc = 0;
    if (post_rc != CURLE_OK) {
        fprintf(stderr, "corral: cannot reach %s: %s\n", cli__base_url(), curl_easy_strerror(post_rc));
        rc = 1;
    } else if (status != 200) {
        rc = cli__report_failure(status, c.answer.p ? c.answer.p : "", c.answer.len);
    } else {
        json_t *m = json_loadb(c.answer.p, c.answer.len, 0, NULL);
        const char *mname = json_string_value(json_object_get(m, "name"));
        if (json_out) {
            char *s = json_dumps(m, JSON_INDENT(2));
            printf("%s\n", s ? s : "{}");
            free(s);
        } else {
            char size[32];
            cli__human_size((double)c.bytes, size, sizeof size);
            if (c.bytes)
                printf("pulled model %s (%s)\n", mname ? mname : c.name, size);
            else
                printf("pulled model %s\n", mname ? mname : c.name);
        }
        json_decref(m);
    }
    if (c.events) {
        curl_multi_remove_handle(multi, c.events);
        curl_easy_cleanup(c.events);
    }
    if (c.ev_streaming)
        evstream_close(&c.ev);
    curl_multi_remove_handle(multi, post);
    curl_easy_cleanup(post);
    curl_multi_cleanup(multi);
    curl_slist_free_all(post_headers);
    curl_slist_free_all(ev_headers);
    sb_free(&c.answer);
    free(text);
    return rc;
}
