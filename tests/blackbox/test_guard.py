"""The worker's guard (`corral __shim`): nothing a model starts outlives the
worker or the daemon, not even a process that left the worker's process
group and session (setsid), ignores SIGTERM, or keeps forking to move away.
See docs/supervision.md, "Stopping the daemon".

Fixture: tests/models/escaper. Its `escape` parameter picks how the process
it starts escapes. Every escaped process holds a shared flock on
`escaped.WORKERPID.lock`, so "all of that worker's gone" is checked by
taking that lock, which works even for a process whose pid changes faster
than /proc can be scanned. Each
also ends by itself once `exit-now` appears in the model directory; the
`escapees` fixture writes that file when a test ends, so a test that fails
still leaves nothing behind.
"""
from __future__ import annotations

import fcntl
import os
import pathlib
import signal

import pytest

from conftest import alive, infer, load, out, unload, wait_for


def stat_fields(pid: int) -> list[str]:
    """Fields of /proc/pid/stat after the command name: [state, ppid, pgrp, session, ...]."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def escapees_gone(path: pathlib.Path, worker: int | None = None) -> bool:
    """True once no process escaped from that worker (from any, without one) is left: none holds its lock."""
    for lock in [path / f"escaped.{worker}.lock"] if worker else path.glob("escaped.*.lock"):
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)
    return True


@pytest.fixture
def escapees(tmp_path):
    """Requested before `corral`, so it tears down after it: asks any escaped process left to exit, and waits."""
    yield
    path = tmp_path / "models" / "esc"
    if path.exists():
        (path / "exit-now").write_text("")
        wait_for(lambda: escapees_gone(path), timeout=10, what="the escaped processes to exit when asked")


def start_escaper(corral, mode: str):
    """A daemon serving one loaded `escaper` model; returns (daemon, model dir, worker pid, guard pid)."""
    path = corral.add("esc", "escaper", manifest=f"runtime: python\nentrypoint: worker.py\n"
                                                  f"parameters:\n  escape: {mode}\n")
    d = corral.start()
    assert load(d, "esc").status_code == 200
    worker = d.worker_pids("esc")[0]
    guard = int(stat_fields(worker)[1])
    # Something the model started really runs, outside the guard's session: the test cannot pass vacuously.
    assert not escapees_gone(path, worker)
    if mode != "hop":  # a hopper's first pid is gone in 10 ms
        escaped = int((path / "escaped.pid").read_text())
        assert alive(escaped) and int(stat_fields(escaped)[3]) not in (guard, worker)
    return d, path, worker, guard


def wait_escapees_gone(path: pathlib.Path, worker: int, what: str) -> None:
    wait_for(lambda: escapees_gone(path, worker), timeout=5, interval=0.02, what=what)


@pytest.mark.parametrize("mode", ["setsid", "double_fork", "hop"])
def test_escaped_processes_die_when_the_daemon_stops(escapees, corral, mode):
    d, path, worker, guard = start_escaper(corral, mode)
    assert d.stop(signal.SIGTERM, timeout=20) == 0
    assert not alive(worker)
    wait_escapees_gone(path, worker, "the processes the model started to die with the stopped daemon")


@pytest.mark.parametrize("mode", ["setsid", "double_fork", "hop"])
def test_escaped_processes_die_with_a_sigkilled_daemon(escapees, corral, mode):
    d, path, worker, guard = start_escaper(corral, mode)
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(timeout=10)
    wait_escapees_gone(path, worker, "the processes the model started to die with the SIGKILLed daemon")
    wait_for(lambda: not alive(worker) and not alive(guard), timeout=5, interval=0.02,
             what=f"worker {worker} and guard {guard} to die with the daemon")
    d.stop()


@pytest.mark.parametrize("mode", ["setsid", "double_fork", "hop"])
def test_escaped_processes_die_with_their_worker_and_the_instance_restarts(escapees, corral, mode):
    d, path, worker, guard = start_escaper(corral, mode)
    os.kill(worker, signal.SIGKILL)
    wait_escapees_gone(path, worker, f"the processes worker {worker} started to die with it")

    def restarted():
        for i in d.model("esc")["instances"]:
            if i["state"] == "ready" and i["pid"] not in (0, worker):
                return i
        return None
    i = wait_for(restarted, timeout=20, what="the instance to restart")
    assert i["restarts"] == 1
    assert not alive(guard), "the old guard exited once its sweep was done"
    assert out(infer(d, "esc"), "PID") == i["pid"]
    # The new worker's load started new escapees; an unload takes them too.
    assert not escapees_gone(path, i["pid"])
    assert unload(d, "esc").status_code == 200
    assert escapees_gone(path, i["pid"]), "the unload answered before the worker's escapees were gone"


def test_the_guard_adopts_and_reaps_orphans_while_the_worker_runs(escapees, corral):
    d, path, worker, guard = start_escaper(corral, "double_fork")
    orphan = int((path / "escaped.pid").read_text())
    # Its parent exited: as a child subreaper the guard, not init, is its parent now.
    wait_for(lambda: int(stat_fields(orphan)[1]) == guard, timeout=5, interval=0.02,
             what=f"orphan {orphan} to be re-parented to the guard {guard}")
    (path / "exit-now").write_text("")
    # Reaped, not left a zombie: its /proc entry goes away.
    wait_for(lambda: not os.path.exists(f"/proc/{orphan}"), timeout=5, interval=0.02,
             what=f"the guard to reap orphan {orphan}")
    assert out(infer(d, "esc"), "PID") == worker
    assert alive(guard)
