/*
 * corral_chan.c — the C SDK's end of the protocol socket: reading whole
 * frames (buffered for small ones, straight into the body for large ones) and
 * writing frames atomically with sendmsg() from any thread. Framing itself is
 * src/proto.c, shared with the daemon.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "corral_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define RBUF_SIZE (64 * 1024)
/* Bodies at least this large are read straight into place, skipping rbuf. */
#define DIRECT_READ_MIN 4096
/* iovecs passed to sendmsg() on the stack before falling back to malloc(). */
#define STACK_IOV 16

int corral__chan_init(corral__chan *ch, int fd)
{
    int wake[2];
    memset(ch, 0, sizeof *ch);
    ch->fd = fd;
    ch->wake_rd = ch->wake_wr = -1;
    /* A blocking socket keeps the writer simple; the daemon's end is its own business. */
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || (fl & O_NONBLOCK && fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0))
        return -errno;
    /* Children the model spawns must not hold the daemon's socket open. */
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
        return -errno;
    if (pipe2(wake, O_CLOEXEC | O_NONBLOCK) < 0)
        return -errno;
    ch->wake_rd = wake[0];
    ch->wake_wr = wake[1];
    ch->rbuf = malloc(RBUF_SIZE);
    if (!ch->rbuf) {
        close(ch->wake_rd);
        close(ch->wake_wr);
        ch->wake_rd = ch->wake_wr = -1;
        return -ENOMEM;
    }
    pthread_mutex_init(&ch->wmu, NULL);
    pthread_cond_init(&ch->wcond, NULL);
    return 0;
}

void corral__chan_close(corral__chan *ch)
{
    if (ch->rbuf) {
        pthread_mutex_destroy(&ch->wmu);
        pthread_cond_destroy(&ch->wcond);
    }
    free(ch->rbuf);
    ch->rbuf = NULL;
    if (ch->wake_rd >= 0)
        close(ch->wake_rd);
    if (ch->wake_wr >= 0)
        close(ch->wake_wr);
    if (ch->fd >= 0)
        close(ch->fd);
    ch->fd = ch->wake_rd = ch->wake_wr = -1;
}

void corral__chan_wake(corral__chan *ch)
{
    ssize_t ignored = write(ch->wake_wr, "x", 1);
    (void)ignored;
}

/* ---- reading ---- */

/* Blocks until the socket is readable: 0, or -ECANCELED when woken. */
static int wait_readable(corral__chan *ch)
{
    struct pollfd p[2] = {{.fd = ch->fd, .events = POLLIN}, {.fd = ch->wake_rd, .events = POLLIN}};
    for (;;) {
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (p[1].revents)
            return -ECANCELED;
        if (p[0].revents)
            return 0;
    }
}

/* Reads what is there, up to n bytes: the count, 0 at end-of-file, or a negative errno. */
static ssize_t read_some(corral__chan *ch, void *dst, size_t n)
{
    for (;;) {
        int rc = wait_readable(ch);
        if (rc < 0)
            return rc;
        ssize_t r = read(ch->fd, dst, n);
        if (r >= 0)
            return r;
        if (errno == EINTR || errno == EAGAIN)
            continue;
        if (errno == ECONNRESET)
            return 0; /* the daemon is gone, just as with EOF */
        return -errno;
    }
}

/* Buffers at least n (<= RBUF_SIZE) bytes: 0, 1 at end-of-file, or a negative errno. */
static int fill(corral__chan *ch, size_t n)
{
    if (ch->rend - ch->rstart >= n)
        return 0;
    if (ch->rstart > 0) {
        memmove(ch->rbuf, ch->rbuf + ch->rstart, ch->rend - ch->rstart);
        ch->rend -= ch->rstart;
        ch->rstart = 0;
    }
    while (ch->rend < n) {
        ssize_t r = read_some(ch, ch->rbuf + ch->rend, RBUF_SIZE - ch->rend);
        if (r <= 0)
            return r == 0 ? 1 : (int)r;
        ch->rend += (size_t)r;
    }
    return 0;
}

/* Moves the next n bytes of the stream to dst (NULL drops them): 0, 1 at end-of-file, or a negative errno. */
static int take(corral__chan *ch, uint8_t *dst, size_t n)
{
    while (n > 0) {
        size_t avail = ch->rend - ch->rstart;
        if (avail > 0) {
            size_t k = avail < n ? avail : n;
            if (dst) {
                memcpy(dst, ch->rbuf + ch->rstart, k);
                dst += k;
            }
            ch->rstart += k;
            n -= k;
            continue;
        }
        ch->rstart = ch->rend = 0;
        if (dst && n >= DIRECT_READ_MIN) {
            ssize_t r = read_some(ch, dst, n);
            if (r <= 0)
                return r == 0 ? 1 : (int)r;
            dst += r;
            n -= (size_t)r;
        } else {
            ssize_t r = read_some(ch, ch->rbuf, RBUF_SIZE);
            if (r <= 0)
                return r == 0 ? 1 : (int)r;
            ch->rend = (size_t)r;
        }
    }
    return 0;
}

int corral__chan_read(corral__chan *ch, corral__frame *f, const char **what)
{
    memset(f, 0, sizeof *f);
    *what = NULL;
    int rc = fill(ch, PROTO_HEADER_SIZE);
    if (rc != 0)
        return rc;
    const uint8_t *raw = ch->rbuf + ch->rstart;
    rc = proto_header_decode(raw, PROTO_HEADER_SIZE, PROTO_MAX_BODY, &f->h);
    if (rc == -EMSGSIZE) {
        snprintf(ch->what, sizeof ch->what, "frame length %u exceeds the limit of %u bytes", f->h.length,
                 PROTO_MAX_BODY);
        *what = ch->what;
        return rc;
    }
    if (rc < 0) {
        snprintf(ch->what, sizeof ch->what, "bad frame header (version %u, type 0x%02x, flags 0x%04x)",
                 f->h.version, f->h.type, f->h.flags);
        *what = ch->what;
        return -EPROTO;
    }
    ch->rstart += PROTO_HEADER_SIZE;
    if (f->h.length == 0)
        return 0;

    /* Place the body so that what follows its meta (tensor data, generate
     * body) starts on a CORRAL__ALIGN boundary: tensors can then be used in
     * place without copies. */
    size_t pad = 0;
    if ((f->h.type == PROTO_INFER || f->h.type == PROTO_BATCH || f->h.type == PROTO_GENERATE) && f->h.length >= 4) {
        rc = fill(ch, 4);
        if (rc != 0)
            return rc;
        uint32_t meta_len = proto_get_u32(ch->rbuf + ch->rstart);
        if (meta_len <= f->h.length - 4)
            pad = (CORRAL__ALIGN - (4 + (size_t)meta_len) % CORRAL__ALIGN) % CORRAL__ALIGN;
    }
    size_t alloc_size = (pad + f->h.length + CORRAL__ALIGN - 1) / CORRAL__ALIGN * CORRAL__ALIGN;
    f->alloc = aligned_alloc(CORRAL__ALIGN, alloc_size);
    if (!f->alloc) {
        rc = take(ch, NULL, f->h.length);
        return rc != 0 ? rc : -ENOMEM;
    }
    f->body = (uint8_t *)f->alloc + pad;
    rc = take(ch, f->body, f->h.length);
    if (rc != 0) {
        free(f->alloc);
        f->alloc = NULL;
        f->body = NULL;
    }
    return rc;
}

/* ---- writing ---- */

/* Writes every byte of iov (which it consumes): 0 or a negative errno. */
static int write_all(int fd, struct iovec *iov, int iovcnt)
{
    while (iovcnt > 0) {
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)(iovcnt < IOV_MAX ? iovcnt : IOV_MAX)};
        /* MSG_NOSIGNAL: a vanished daemon is EPIPE here, not a SIGPIPE that kills the model. */
        ssize_t w = sendmsg(fd, &m, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return -errno;
        }
        size_t left = (size_t)w;
        while (iovcnt > 0 && left >= iov->iov_len) {
            left -= iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + left;
            iov->iov_len -= left;
        }
    }
    return 0;
}

/* Called with ch->writing claimed. */
static void write_frame(corral__chan *ch, uint8_t type, uint16_t flags, uint64_t id, const struct iovec *body,
                        int nbody)
{
    struct iovec stack_iov[STACK_IOV];
    struct iovec *iov = stack_iov;
    uint8_t header[PROTO_HEADER_SIZE];
    size_t length = 0;

    if (nbody + 1 > STACK_IOV) {
        iov = malloc(sizeof *iov * (size_t)(nbody + 1));
        if (!iov)
            corral__die(CORRAL_EXIT_PROTOCOL, "corral: out of memory sending a %s frame", proto_type_name(type));
    }
    for (int i = 0; i < nbody; i++) {
        iov[i + 1] = body[i];
        length += body[i].iov_len;
    }
    proto_header_encode(header, type, id, (uint32_t)length);
    proto_header_set_flags(header, flags);
    iov[0].iov_base = header;
    iov[0].iov_len = sizeof header;

    int rc = ch->peer_closed ? 0 : write_all(ch->fd, iov, nbody + 1);
    if (iov != stack_iov)
        free(iov);
    if (rc == -EPIPE || rc == -ECONNRESET) {
        /* The daemon is gone. During a graceful stop unload still deserves to run. */
        pthread_mutex_lock(&ch->wmu);
        int may_close = ch->peer_may_close;
        pthread_mutex_unlock(&ch->wmu);
        if (!may_close)
            _exit(0);
        ch->peer_closed = 1;
    } else if (rc < 0) {
        corral__die(CORRAL_EXIT_PROTOCOL, "corral: writing a %s frame failed: %s", proto_type_name(type),
                    strerror(-rc));
    }
}

static void claim(corral__chan *ch)
{
    pthread_mutex_lock(&ch->wmu);
    while (ch->writing)
        pthread_cond_wait(&ch->wcond, &ch->wmu);
    ch->writing = 1;
    pthread_mutex_unlock(&ch->wmu);
}

/* Sends the PONGs parked while we wrote, then gives up the socket. */
static void release(corral__chan *ch)
{
    uint64_t pongs[sizeof ch->pending_pongs / sizeof ch->pending_pongs[0]];
    for (;;) {
        pthread_mutex_lock(&ch->wmu);
        size_t n = ch->npending;
        if (n == 0) {
            ch->writing = 0;
            pthread_cond_broadcast(&ch->wcond);
            pthread_mutex_unlock(&ch->wmu);
            return;
        }
        memcpy(pongs, ch->pending_pongs, n * sizeof pongs[0]);
        ch->npending = 0;
        pthread_mutex_unlock(&ch->wmu);
        for (size_t i = 0; i < n; i++)
            write_frame(ch, PROTO_PONG, 0, pongs[i], NULL, 0);
    }
}

void corral__chan_send_flags(corral__chan *ch, uint8_t type, uint16_t flags, uint64_t id, const struct iovec *iov,
                             int iovcnt)
{
    claim(ch);
    write_frame(ch, type, flags, id, iov, iovcnt);
    release(ch);
}

void corral__chan_send(corral__chan *ch, uint8_t type, uint64_t id, const struct iovec *iov, int iovcnt)
{
    corral__chan_send_flags(ch, type, 0, id, iov, iovcnt);
}

void corral__chan_send_json(corral__chan *ch, uint8_t type, uint64_t id, const json_t *obj)
{
    char *text = json_dumps(obj, JSON_COMPACT);
    if (!text)
        corral__die(CORRAL_EXIT_FAILURE, "corral: out of memory encoding a %s frame", proto_type_name(type));
    struct iovec iov = {.iov_base = text, .iov_len = strlen(text)};
    corral__chan_send(ch, type, id, &iov, 1);
    free(text);
}

void corral__chan_pong(corral__chan *ch, uint64_t nonce)
{
    pthread_mutex_lock(&ch->wmu);
    if (ch->writing && ch->npending < sizeof ch->pending_pongs / sizeof ch->pending_pongs[0]) {
        ch->pending_pongs[ch->npending++] = nonce;
        pthread_mutex_unlock(&ch->wmu);
        return;
    }
    while (ch->writing)
        pthread_cond_wait(&ch->wcond, &ch->wmu);
    ch->writing = 1;
    pthread_mutex_unlock(&ch->wmu);
    write_frame(ch, PROTO_PONG, 0, nonce, NULL, 0);
    release(ch);
}

void corral__chan_peer_may_close(corral__chan *ch)
{
    pthread_mutex_lock(&ch->wmu);
    ch->peer_may_close = 1;
    pthread_mutex_unlock(&ch->wmu);
}
