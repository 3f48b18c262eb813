/*
 * cli_internal — what the client's verbs share across files: cli.c owns
 * the connection to the daemon (CORRAL_URL, the token, the headers) and
 * the table helpers; cli_top.c is `corral top`.
 */
#ifndef CORRAL_CLI_INTERNAL_H
#define CORRAL_CLI_INTERNAL_H

#include <curl/curl.h>
#include <stddef.h>

/* $CORRAL_URL, or the default address. */
const char *cli__base_url(void);
/*
 * A handle for one request to the daemon at path, with the token and the
 * headers (which *headers owns and the caller frees after the transfer);
 * accept, when not NULL, is sent as Accept. NULL after saying on stderr why
 * the token cannot be sent.
 */
CURL *cli__open_request(const char *method, const char *path, const char *accept, struct curl_slist **headers);
/* A POST of a JSON body (not copied: it must outlive the transfer) to path; as cli__open_request. */
CURL *cli__open_json_post(const char *path, const char *body, size_t len, struct curl_slist **headers);
/* Prints the daemon's {"error"} of a failed answer as "corral: HTTP N: reason"; returns 1. */
int cli__report_failure(long status, const char *body, size_t len);
/* bytes as "512B", "1.5KiB", "3.0GiB". */
void cli__human_size(double bytes, char *buf, size_t len);

/* The argument of a JSON|@FILE|- operand: the text itself, the file's bytes, or stdin's (malloc'd); NULL after saying why. */
char *cli__read_body(const char *arg, size_t *len);

/* A whole answer: its status, content type and body (malloc'd, NUL-terminated past len). */
typedef struct cli__answer {
    long status;
    char content_type[128];
    char *body;
    size_t len;
} cli__answer;

/* Performs method on path with body (of content_type; NULL: none). Returns 0 with out filled, or -1 after saying why. */
int cli__call(const char *method, const char *path, const char *content_type, const void *body, size_t len,
              cli__answer *out);

/* corral session ls|get|put|patch|rm ... (cli_session.c); returns the exit status. */
int cli__session(int argc, char **argv);

/* corral top [--once] [--interval S]; returns the exit status. */
int cli__top(int argc, char **argv);
/* corral pull URL --sha256 HEX [--name NAME] [--json], or pull NAME (cli_pull.c); returns the exit status. */
int cli__pull(int argc, char **argv);

#endif
