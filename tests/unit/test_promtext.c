/*
 * Unit tests of promtext: samples with and without labels, escapes, blanks
 * and a trailing comma, special values and timestamps, comments and blank
 * lines skipped, CR LF, malformed lines refused with their number, a
 * callback that stops the parse, the daemon's own exposition shape, and
 * histogram_quantile's answers (interpolation, the first bucket, the +Inf
 * bucket, empty and malformed histograms).
 */
#include "check.h"
#include "promtext.h"

#include <errno.h>
#include <math.h>
#include <string.h>

typedef struct seen {
    int n;
    char name[8][64];
    char labels[8][128]; /* name=value;... */
    double value[8];
    int has_ts[8];
    long long ts[8];
    int stop_at; /* 1-based; on_sample returns 9 there */
} seen;

static int on_sample(void *data, const promtext_sample *s)
{
    seen *g = data;
    if (g->n < 8) {
        snprintf(g->name[g->n], sizeof g->name[0], "%s", s->name);
        size_t used = 0;
        for (size_t i = 0; i < s->nlabels && used < sizeof g->labels[0]; i++)
            used += (size_t)snprintf(g->labels[g->n] + used, sizeof g->labels[0] - used, "%s=%s;", s->labels[i].name,
                                     s->labels[i].value);
        g->value[g->n] = s->value;
        g->has_ts[g->n] = s->has_timestamp;
        g->ts[g->n] = (long long)s->timestamp_ms;
    }
    g->n++;
    return g->n == g->stop_at ? 9 : 0;
}

static int parse(const char *text, seen *g, size_t *bad)
{
    return promtext_parse(text, strlen(text), on_sample, g, bad);
}

static void samples_labels_and_values(void)
{
    const char *text = "# HELP x_total Things.\n"
                       "# TYPE x_total counter\n"
                       "x_total 3\n"
                       "\n"
                       "  # an indented comment\n"
                       "req{model=\"echo\",version=\"1\"} 12.5\r\n"
                       "esc { a = \"q\\\"b\\\\s\\nn\" , b=\"\" , } -Inf 1700000000000\n"
                       "ns:sub_total{le=\"+Inf\"}\t+Inf\n"
                       "nan NaN\n"
                       "big 1e400\n"
                       "last{x=\"no newline\"} -0.25";
    seen g = {0};
    size_t bad = 0;
    CHECK(parse(text, &g, &bad) == 0);
    CHECK(g.n == 7);
    CHECK(strcmp(g.name[0], "x_total") == 0 && g.value[0] == 3 && g.labels[0][0] == 0 && !g.has_ts[0]);
    CHECK(strcmp(g.name[1], "req") == 0 && strcmp(g.labels[1], "model=echo;version=1;") == 0 && g.value[1] == 12.5);
    CHECK(strcmp(g.name[2], "esc") == 0 && strcmp(g.labels[2], "a=q\"b\\s\nn;b=;") == 0);
    CHECK(isinf(g.value[2]) && g.value[2] < 0 && g.has_ts[2] && g.ts[2] == 1700000000000LL);
    CHECK(strcmp(g.name[3], "ns:sub_total") == 0 && strcmp(g.labels[3], "le=+Inf;") == 0 && isinf(g.value[3]));
    CHECK(strcmp(g.name[4], "nan") == 0 && isnan(g.value[4]));
    CHECK(isinf(g.value[5]) && g.value[5] > 0);
    CHECK(strcmp(g.name[6], "last") == 0 && strcmp(g.labels[6], "x=no newline;") == 0 && g.value[6] == -0.25);
}

static void label_lookup(void)
{
    promtext_label labels[] = {{"model", "echo"}, {"le", "0.5"}};
    promtext_sample s = {.name = "h_bucket", .labels = labels, .nlabels = 2, .value = 1};
    CHECK(strcmp(promtext_label_get(&s, "le"), "0.5") == 0);
    CHECK(strcmp(promtext_label_get(&s, "model"), "echo") == 0);
    CHECK(promtext_label_get(&s, "version") == NULL);
}

static void malformed_lines_are_refused_with_their_number(void)
{
    static const char *const bad[] = {
        "x",                       /* no value */
        "x 1 2 3",                 /* too much */
        "x abc",                   /* not a number */
        "x 1 1.5",                 /* a timestamp is an integer */
        "1x 1",                    /* a name does not start with a digit */
        "x{a=\"1\" 1",             /* unclosed braces */
        "x{a=1} 1",                /* an unquoted value */
        "x{a=\"1\"b=\"2\"} 1",     /* no comma */
        "x{a=\"\\t\"} 1",          /* an escape the format lacks */
        "x{a=\"open} 1",           /* unterminated quotes */
        "x{1a=\"v\"} 1",           /* a bad label name */
        "x{a:b=\"v\"} 1",          /* no colon in label names */
        "x{a=\"v\"}1",             /* the value runs into the labels */
        "x{,} 1",                  /* a comma without a label */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[128];
        snprintf(text, sizeof text, "# TYPE x gauge\nok 1\n%s\nafter 2\n", bad[i]);
        seen g = {0};
        size_t line = 0;
        int rc = parse(text, &g, &line);
        CHECK(rc == -EBADMSG);
        CHECK(line == 3);
        CHECK(g.n == 1); /* what came before was delivered, nothing after */
        if (rc != -EBADMSG || line != 3)
            fprintf(stderr, "  accepted: %s\n", bad[i]);
    }
}

static void a_callback_stops_the_parse(void)
{
    seen g = {.stop_at = 2};
    CHECK(parse("a 1\nb 2\nc 3\n", &g, NULL) == 9);
    CHECK(g.n == 2);
}

/* The lines corral's /metrics writes for a histogram, a Triton counter and a gauge. */
static void the_daemons_exposition(void)
{
    const char *text = "# HELP corral_request_duration_seconds Time.\n"
                       "# TYPE corral_request_duration_seconds histogram\n"
                       "corral_request_duration_seconds_bucket{model=\"m \\\"q\\\"\",le=\"0.0001\"} 0\n"
                       "corral_request_duration_seconds_bucket{model=\"m \\\"q\\\"\",le=\"+Inf\"} 4\n"
                       "corral_request_duration_seconds_sum{model=\"m \\\"q\\\"\"} 0.012\n"
                       "nv_inference_request_failure{model=\"m\",version=\"1\",reason=\"BACKEND\"} 2\n"
                       "process_start_time_seconds 1764585600.123\n";
    seen g = {0};
    CHECK(parse(text, &g, NULL) == 0);
    CHECK(g.n == 5);
    CHECK(strcmp(g.labels[0], "model=m \"q\";le=0.0001;") == 0 && g.value[0] == 0);
    CHECK(strcmp(g.labels[1], "model=m \"q\";le=+Inf;") == 0 && g.value[1] == 4);
    CHECK(strcmp(g.labels[3], "model=m;version=1;reason=BACKEND;") == 0 && g.value[3] == 2);
    CHECK(fabs(g.value[4] - 1764585600.123) < 1e-6);
}

static int near(double a, double b)
{
    return fabs(a - b) < 1e-9;
}

static void quantiles_as_prometheus_computes_them(void)
{
    const double le[] = {0.1, 0.5, 1, INFINITY};
    /* 10 in (0, 0.1], 30 in (0.1, 0.5], 0 in (0.5, 1], 10 above */
    const double cum[] = {10, 40, 40, 50};
    CHECK(near(promtext_quantile(0.1, le, cum, 4), 0.05));                /* rank 5 of 10 in the first: half of 0.1 */
    CHECK(near(promtext_quantile(0.5, le, cum, 4), 0.1 + 0.4 * (15.0 / 30))); /* rank 25: 15 of 30 in the second */
    CHECK(near(promtext_quantile(0.8, le, cum, 4), 0.5));                 /* rank 40: the second bucket's top */
    CHECK(near(promtext_quantile(0.99, le, cum, 4), 1));                  /* in +Inf: the highest finite bound */
    CHECK(near(promtext_quantile(1, le, cum, 4), 1));
    CHECK(isinf(promtext_quantile(-0.1, le, cum, 4)) && promtext_quantile(-0.1, le, cum, 4) < 0);
    CHECK(isinf(promtext_quantile(1.1, le, cum, 4)) && promtext_quantile(1.1, le, cum, 4) > 0);

    const double none[] = {0, 0, 0, 0};
    CHECK(isnan(promtext_quantile(0.5, le, none, 4))); /* nothing observed */
    const double le_finite[] = {0.1, 0.5};
    CHECK(isnan(promtext_quantile(0.5, le_finite, cum, 2))); /* no +Inf bucket */
    const double inf_only[] = {INFINITY};
    CHECK(isnan(promtext_quantile(0.5, inf_only, cum, 1)));

    const double le_neg[] = {-1, 1, INFINITY};
    const double cum_neg[] = {4, 8, 8};
    CHECK(near(promtext_quantile(0.25, le_neg, cum_neg, 3), -1)); /* a first bound not positive: that bound */
    const double cum_top[] = {0, 0, 0, 6};
    CHECK(near(promtext_quantile(0.5, le, cum_top, 4), 1)); /* all of it above the bounds */
}

CHECK_MAIN(CASE(samples_labels_and_values), CASE(label_lookup), CASE(malformed_lines_are_refused_with_their_number),
           CASE(a_callback_stops_the_parse), CASE(the_daemons_exposition), CASE(quantiles_as_prometheus_computes_them))
