/*
 * check — the tiny assertion layer of corral's C unit tests.
 *
 * Each test file is one ctest executable: a list of test functions run in
 * order; CHECK records a failure with its line and carries on, so one run
 * reports every broken expectation. The process exits non-zero on any
 * failure and prints "N passed, N failed".
 */
#ifndef CORRAL_CHECK_H
#define CORRAL_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_failures, check_passes;

#define CHECK(cond)                                                                                                   \
    do {                                                                                                              \
        if (cond) {                                                                                                   \
            check_passes++;                                                                                           \
        } else {                                                                                                      \
            check_failures++;                                                                                         \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);                                  \
        }                                                                                                             \
    } while (0)

#define CHECK_STR_CONTAINS(hay, needle)                                                                               \
    do {                                                                                                              \
        const char *h_ = (hay), *n_ = (needle);                                                                       \
        if (h_ && strstr(h_, n_)) {                                                                                   \
            check_passes++;                                                                                           \
        } else {                                                                                                      \
            check_failures++;                                                                                         \
            fprintf(stderr, "%s:%d: '%s' does not contain '%s'\n", __FILE__, __LINE__, h_ ? h_ : "(null)", n_);       \
        }                                                                                                             \
    } while (0)

typedef struct check_case {
    const char *name;
    void (*fn)(void);
} check_case;

static int check_run(const check_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int before = check_failures;
        cases[i].fn();
        fprintf(stderr, "%s %s\n", check_failures == before ? "ok  " : "FAIL", cases[i].name);
    }
    printf("%d passed, %d failed\n", check_passes, check_failures);
    return check_failures ? 1 : 0;
}

#define CHECK_MAIN(...)                                                                                               \
    int main(void)                                                                                                    \
    {                                                                                                                 \
        static const check_case cases[] = {__VA_ARGS__};                                                              \
        return check_run(cases, sizeof cases / sizeof cases[0]);                                                      \
    }
#define CASE(fn) {#fn, fn}

#endif
