/*
 * grpc_bridge — gRPC's C core (Debian's libgrpc 1.51) behind a small,
 * loop-thread interface: the only module that includes <grpc/grpc.h>.
 *
 * gRPC's completion queue blocks and has no file descriptor to poll, so
 * libuv cannot wait on it. One bridge thread does nothing but wait on it
 * (grpc_completion_queue_next, which is also where gRPC reads and writes
 * its sockets) and hands each completed operation to the loop thread
 * through a locked list and uv_async_send. Every callback below runs on
 * the loop thread, and every function below is called from it: the
 * daemon's state never leaves that thread (docs/architecture.md,
 * "Threads").
 *
 * A call (gb_call) lives from on_call to on_end. Messages are read one at a
 * time, when asked for (gb_read), so an owner that stops asking holds the
 * client back through HTTP/2 flow control. Messages sent are queued and
 * handed to gRPC one at a time, in order; each gets exactly one on_sent
 * before on_end. The final status goes after the last queued message.
 * on_end comes once the call is over, answered or not (its client
 * cancelled it, its deadline passed, its connection broke, or the server
 * stopped); the call is freed when it returns.
 *
 * Errors: gb_start returns 0 or -1 with the reason in err. Nothing else
 * fails: an operation gRPC refuses ends the call.
 */
#ifndef CORRAL_GRPC_BRIDGE_H
#define CORRAL_GRPC_BRIDGE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* gRPC's status codes (grpc_status_code, numbered as the protocol numbers them). */
enum {
    GB_OK = 0,
    GB_CANCELLED = 1,
    GB_UNKNOWN = 2,
    GB_INVALID_ARGUMENT = 3,
    GB_DEADLINE_EXCEEDED = 4,
    GB_NOT_FOUND = 5,
    GB_ALREADY_EXISTS = 6,
    GB_PERMISSION_DENIED = 7,
    GB_RESOURCE_EXHAUSTED = 8,
    GB_FAILED_PRECONDITION = 9,
    GB_ABORTED = 10,
    GB_UNIMPLEMENTED = 12,
    GB_INTERNAL = 13,
    GB_UNAVAILABLE = 14,
    GB_UNAUTHENTICATED = 16,
};

typedef struct gb_call gb_call;

typedef struct gb_handlers {
    /*
     * A new call of method ("/package.Service/Method", method_len bytes).
     * deadline_ms is on now_ms()'s clock, 0 when the client set none; auth
     * is the call's "authorization" metadata (auth_len bytes), or NULL.
     */
    void (*on_call)(gb_call *c, const char *method, size_t method_len, uint64_t deadline_ms, const char *auth,
                    size_t auth_len);
    /* The message gb_read asked for: len bytes at msg, valid during the callback; msg NULL: the client sent its last. */
    void (*on_message)(gb_call *c, const uint8_t *msg, size_t len);
    /* A message of gb_send left for the client (ok), or never will (the call ended first). */
    void (*on_sent)(gb_call *c, void *arg, uint32_t n, int ok);
    /* The call is over; cancelled: it ended without the status the owner sent. c is freed on return. */
    void (*on_end)(gb_call *c, int cancelled);
} gb_handlers;

/*
 * Listens on host:port (port 0: one the system picks, written to *bound)
 * for messages of at most max_message bytes, gRPC holding at most
 * max_buffered bytes of them at once (its resource quota), and starts the
 * bridge thread. h is copied.
 */
int gb_start(uv_loop_t *loop, const char *host, int port, size_t max_message, size_t max_buffered,
             const gb_handlers *h, int *bound, char *err, size_t errlen);

/* Asks for the call's next message (on_message); at most one is asked for at a time. */
void gb_read(gb_call *c);

/*
 * Queues a message for the client: len bytes at buf, malloc'ed, taken over
 * (freed once sent). last: the call then ends with status OK. arg and n
 * come back in on_sent.
 */
void gb_send(gb_call *c, uint8_t *buf, size_t len, int last, void *arg, uint32_t n);

/* A piece of a message: len bytes at ptr. */
typedef struct gb_part {
    const uint8_t *ptr;
    size_t len;
} gb_part;

/*
 * gb_send for a message in pieces, sent without copying them: the parts,
 * in order, each inside head (head_len bytes, malloc'ed, taken over) or in
 * memory of the caller's, which gRPC reads until it lets go of it; then
 * release(release_arg) runs on the loop thread (once, also when the call
 * ends first).
 */
void gb_send_parts(gb_call *c, uint8_t *head, size_t head_len, const gb_part *parts, int nparts,
                   void (*release)(void *arg), void *release_arg, int last, void *arg, uint32_t n);

/* Ends the call with code and msg (sent after the messages queued); code GB_OK ends it well. */
void gb_finish(gb_call *c, int code, const char *msg);

/*
 * Called from on_message: the message's bytes stay where they are, valid
 * beyond the callback, until gb_release (which any thread may call). So a
 * request's tensors can be used in place instead of copied out.
 */
typedef struct gb_bytes gb_bytes;
gb_bytes *gb_keep(gb_call *c);
void gb_release(gb_bytes *b);

/* Cancels the call (on_end follows with cancelled set). */
void gb_cancel(gb_call *c);

/* Messages queued and not yet taken by gRPC. */
size_t gb_queued(const gb_call *c);

void gb_set_data(gb_call *c, void *data);
void *gb_data(const gb_call *c);

/* Whether gb_start has run (and gb_stop has not finished). */
int gb_running(void);

/* Stops taking new calls; the calls already running go on. */
void gb_drain(void);

/*
 * Stops the server: calls still running after grace_ms are cancelled;
 * once every call has ended and the bridge thread has exited, on_stopped
 * runs on the loop thread.
 */
void gb_stop(uint64_t grace_ms, void (*on_stopped)(void));

#endif
