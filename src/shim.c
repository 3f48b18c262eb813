/*
 * shim — the worker's guard; see shim.h. libc only: no corral module, no
 * library, so the process that stays above each worker stays small.
 */
#include "shim.h"

#include "proto.h" /* the worker's descriptor numbers, macros only */

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/*
 * `corral __shim PPID FILE ARGV0 [ARGS...]`: the first process of every
 * worker (see inst.c). It stays as a small guard: the parent of the real
 * worker, which leads a process group of its own. The guard is a child
 * subreaper (PR_SET_CHILD_SUBREAPER), so whatever the model starts and
 * then orphans comes back to the guard as its child, even a process that
 * left the worker's group or session (setsid) and ignores SIGTERM; while
 * the worker runs, the guard reaps such orphans as they exit. Whenever the
 * worker exits, and when the daemon dies, even by SIGKILL (the guard's
 * parent-death signal is SIGUSR1), the guard sweeps: it kills the worker's
 * group, then every descendant it finds, until it has no child left. So
 * nothing the model started outlives the worker or the daemon. Sweeping
 * after every exit matters: a dying daemon's socket closes before its
 * children get the parent-death signal, and a worker that exits on that
 * end-of-file could otherwise beat the signal to it. The guard then
 * mirrors the worker's exit status or signal as its own.
 *
 * The one death the guard cannot clean up after is its own SIGKILL (inst.c
 * sends it only before the worker's HELLO names the worker): the worker
 * then dies by its parent-death signal, but what it started is re-parented
 * past the guard.
 */
static pid_t guard_pid;      /* this process; both set before SIGUSR1 is unblocked */
static pid_t guarded_worker;

enum {
    SWEEP_KILLED_MAX = 1024, /* processes one pass remembers as parents to look for */
    SWEEP_REAP_MS = 20,      /* reaping between two passes stops after this long */
    SWEEP_STALL_MS = 5000,   /* a sweep that reaps nothing for this long gives up */
};

/* Reads the parent and process group from /proc/NAME/stat; 0, or -1 when the process is gone. */
static int read_parent_and_group(const char *name, size_t namelen, pid_t *ppid, pid_t *pgrp)
{
    char path[32], buf[512];
    if (namelen > sizeof path - sizeof "/proc//stat")
        return -1;
    memcpy(path, "/proc/", 6);
    memcpy(path + 6, name, namelen);
    memcpy(path + 6 + namelen, "/stat", sizeof "/stat");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    /* "pid (comm) state ppid pgrp ...": comm may hold anything, so parse after its last ')' */
    const char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ' || !p[2] || p[3] != ' ')
        return -1;
    p += 4;
    pid_t field[2];
    for (int i = 0; i < 2; i++) {
        if (*p < '0' || *p > '9')
            return -1;
        pid_t v = 0;
        while (*p >= '0' && *p <= '9')
            v = v * 10 + (*p++ - '0');
        field[i] = v;
        if (*p++ != ' ')
            return -1;
    }
    *ppid = field[0];
    *pgrp = field[1];
    return 0;
}

/*
 * One pass over /proc: SIGKILL to every child of the guard, to every
 * child of a process this pass killed (/proc lists pids in ascending
 * order and a child usually has a higher pid than its parent, so most of
 * a tree goes in one pass, a fork bomb included), and to the group of
 * each of them that leads one. Whatever it misses is re-parented to the
 * guard as its parent dies, for the next pass. A pid in killed[] names
 * the process it was taken from for the whole pass: the kernel hands out
 * pids cyclically, so one is not reused within milliseconds.
 * Async-signal-safe: only system calls (open, read, close, getdents64,
 * kill), no allocation.
 */
static void kill_descendants(pid_t guard)
{
    pid_t killed[SWEEP_KILLED_MAX];
    size_t nkilled = 0;
    int dir = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0)
        return;
    _Alignas(struct dirent64) char buf[4096];
    ssize_t n;
    while ((n = getdents64(dir, buf, sizeof buf)) > 0) {
        for (ssize_t off = 0; off < n;) {
            const struct dirent64 *d = (const struct dirent64 *)(buf + off);
            off += d->d_reclen;
            size_t len = strlen(d->d_name);
            pid_t pid = 0;
            for (size_t i = 0; i < len && pid >= 0; i++)
                pid = d->d_name[i] >= '0' && d->d_name[i] <= '9' ? pid * 10 + (d->d_name[i] - '0') : -1;
            pid_t ppid, pgrp;
            if (pid <= 1 || read_parent_and_group(d->d_name, len, &ppid, &pgrp) < 0)
                continue;
            int ours = ppid == guard;
            for (size_t i = 0; i < nkilled && !ours; i++)
                ours = ppid == killed[i];
            if (!ours)
                continue;
            /* Never the guard itself (no process is its own parent). A group led by a descendant holds
             * only descendants: its members share the leader's session, which is either one the leader
             * made (setsid) or the guard's own, and every process in either descends from the guard. */
            kill(pid, SIGKILL);
            if (pgrp == pid)
                kill(-pid, SIGKILL);
            if (nkilled < SWEEP_KILLED_MAX)
                killed[nkilled++] = pid;
        }
    }
    close(dir);
}

static long monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Kills the worker's group and every descendant of the guard, and reaps
 * until the guard has no child left (ECHILD). It loops because a process
 * comes back to the guard only once its parent has died, and because a
 * process can fork until its SIGKILL lands: each pass kills what appeared
 * since the last. It gives up only after SWEEP_STALL_MS without reaping
 * anything, when a killed process is stuck in the kernel (its SIGKILL
 * stays pending). Async-signal-safe: on_daemon_death runs it.
 */
static void sweep(pid_t guard, pid_t worker)
{
    assert(worker > 0 && worker != guard);
    kill(-worker, SIGKILL);
    long last_reaped_ms = monotonic_ms();
    for (;;) {
        /* Bounded in time: a process that forks and exits in a loop keeps the guard supplied with
         * zombies, and the pass that kills it must still come round. */
        long start_ms = monotonic_ms(), now_ms = start_ms;
        int reaped = 0;
        pid_t p;
        while ((p = waitpid(-1, NULL, WNOHANG)) > 0) {
            reaped++;
            if ((now_ms = monotonic_ms()) - start_ms >= SWEEP_REAP_MS)
                break;
        }
        if (p < 0 && errno == ECHILD)
            return;
        if (reaped)
            last_reaped_ms = now_ms;
        else if (now_ms - last_reaped_ms > SWEEP_STALL_MS)
            return;
        kill_descendants(guard);
        if (p == 0) {
            struct timespec moment = {0, 1000000}; /* a killed process takes a moment to become a zombie */
            nanosleep(&moment, NULL);
        }
    }
}

static void on_daemon_death(int sig)
{
    (void)sig;
    if (guarded_worker > 0)
        sweep(guard_pid, guarded_worker);
    _exit(1);
}

int shim_main(int argc, char **argv)
{
    if (argc < 5)
        return 127;
    pid_t daemon_pid = (pid_t)atoi(argv[2]);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_daemon_death;
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigprocmask(SIG_BLOCK, &block, &old); /* until guarded_worker is set */
    sigaction(SIGUSR1, &sa, NULL);
    prctl(PR_SET_PDEATHSIG, SIGUSR1);
    if (getppid() != daemon_pid) /* the daemon died before the prctl took effect */
        _exit(1);
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) /* before the fork: every orphan from now on is ours */
        fprintf(stderr, "corral: cannot become a child subreaper: %s; processes that leave the worker's "
                        "group may outlive it\n", strerror(errno));
    static const int stop_signals[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT};
    for (size_t i = 0; i < sizeof stop_signals / sizeof stop_signals[0]; i++)
        signal(stop_signals[i], SIG_IGN);
    signal(SIGCHLD, SIG_DFL); /* SIG_IGN would reap the worker before we read its status */
    pid_t guard = getpid();
    pid_t worker = fork();
    if (worker < 0) {
        fprintf(stderr, "corral: cannot fork the worker: %s\n", strerror(errno));
        _exit(127);
    }
    if (worker == 0) {
        setpgid(0, 0);
        for (size_t i = 0; i < sizeof stop_signals / sizeof stop_signals[0]; i++)
            signal(stop_signals[i], SIG_DFL);
        signal(SIGUSR1, SIG_DFL);
        sigprocmask(SIG_SETMASK, &old, NULL);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != guard)
            _exit(1);
        execvp(argv[3], argv + 4);
        fprintf(stderr, "corral: cannot execute %s: %s\n", argv[3], strerror(errno));
        _exit(127);
    }
    setpgid(worker, worker); /* also here: whichever of the two runs first, the group exists before we rely on it */
    guard_pid = guard;
    guarded_worker = worker;
    sigprocmask(SIG_SETMASK, &old, NULL);
    /* The protocol and health sockets and the shared-memory regions are the
     * worker's: EOF on a socket must mean the worker is gone. */
    for (int fd = WORKER_PROTOCOL_FD; fd <= WORKER_SHM_OUT_FD; fd++)
        close(fd);
    /* Orphans re-parented to the guard are reaped as they exit, so none lingers as a zombie. */
    int status;
    pid_t reaped;
    while ((reaped = waitpid(-1, &status, 0)) != worker)
        if (reaped < 0 && errno != EINTR)
            _exit(127);
    sigprocmask(SIG_BLOCK, &block, NULL); /* one sweep at a time: a dying daemon's SIGUSR1 waits */
    sweep(guard, worker); /* whatever the worker started goes with it */
    if (WIFEXITED(status))
        _exit(WEXITSTATUS(status));
    int sig = WTERMSIG(status);
    signal(sig, SIG_DFL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    kill(guard, sig);
    _exit(128 + sig);
}
