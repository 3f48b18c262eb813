"""harness — processes, ports, load generation and /proc sampling for the benchmark suite.

Every process the bench starts goes through `start()`, which puts it in a
session (and so a process group) of its own and remembers it; `stop_all()`
(run at exit, and on SIGINT/SIGTERM) signals each group with SIGTERM, then
SIGKILL. Every command run is also recorded, so docs/benchmarks.md can print
the exact command lines.
"""
from __future__ import annotations

import atexit
import http.client
import json
import os
import pathlib
import re
import resource
import shlex
import signal
import socket
import subprocess
import sys
import time
from typing import Dict, Iterable, List, Optional, Tuple

ROOT = pathlib.Path(__file__).resolve().parents[1]
PYTHON = "/usr/bin/python3"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# label -> command line, in the order first run; printed in the report.
COMMANDS: Dict[str, str] = {}

_started: List[subprocess.Popen] = []


def record(label: str, argv: Iterable[str], cwd: Optional[str] = None, env: Optional[dict] = None) -> None:
    """Remembers a command line (with the environment it was given) for the report."""
    line = " ".join(shlex.quote(str(a)) for a in argv)
    if env:
        line = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in env.items()) + " " + line
    if cwd:
        line = f"(cd {shlex.quote(str(cwd))} && {line})"
    COMMANDS.setdefault(label, line)


def start(label: str, argv: List[str], log: pathlib.Path, cwd: Optional[str] = None,
          env: Optional[dict] = None, pass_fds=(), preexec_fn=None) -> subprocess.Popen:
    """Starts a long-running process in its own process group, output to log.

    With preexec_fn (which may dup2 a descriptor into place), descriptors are
    not swept before exec: Python's own are close-on-exec anyway."""
    record(label, argv, cwd, env)
    full_env = dict(os.environ)
    full_env.update(env or {})
    out = open(log, "ab")
    proc = subprocess.Popen(argv, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True, pass_fds=pass_fds,
                            preexec_fn=preexec_fn, close_fds=preexec_fn is None)
    out.close()
    _started.append(proc)
    return proc


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    """Stops a process started by start(): sig to its group, SIGKILL if it lingers."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    # The group may outlive its leader (a pre-fork server's workers).
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait(timeout=5)
    if proc in _started:
        _started.remove(proc)


def stop_all() -> None:
    for proc in list(reversed(_started)):
        try:
            stop(proc, timeout=10)
        except Exception as e:  # keep stopping the others
            print(f"bench: could not stop pid {proc.pid}: {e}", file=sys.stderr)


def _on_signal(signum, frame):
    raise SystemExit(f"bench: interrupted by {signal.Signals(signum).name}")


atexit.register(stop_all)
signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def http_request(port: int, method: str, path: str, body: bytes = b"", headers: Optional[dict] = None,
                 timeout: float = 60.0):
    """One request on a fresh connection: (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def port_answers(port: int, path: str = "/", method: str = "GET") -> bool:
    try:
        http_request(port, method, path, timeout=2)
        return True
    except OSError:
        return False
    except http.client.HTTPException:
        return False


# ---- corral ----

class Corral:
    """One `corral serve` on an ephemeral port, over a repository of bench models."""

    def __init__(self, label: str, repo: pathlib.Path, logdir: pathlib.Path, args: Iterable[str] = ()):
        self.log = logdir / f"corral-{label}.log"
        args = list(args)
        if "--grpc-port" not in args:
            args += ["--grpc-port", "0"]  # several daemons run at once; the gRPC series reads the port it logs
        argv = [str(ROOT / "build" / "corral"), "serve", "--models", str(repo), "--port", "0", *args]
        self.proc = start(f"corral serve ({label})", argv, self.log)
        self.port = wait_for(self._port, 15, "corral to listen")
        self.pid = self.proc.pid

    def _port(self) -> Optional[int]:
        if self.proc.poll() is not None:
            raise RuntimeError(f"corral exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", self.log.read_text(errors="replace"))
        return int(m.group(1)) if m else None

    @property
    def grpc_port(self) -> Optional[int]:
        m = re.search(r"listening on grpc://127\.0\.0\.1:(\d+)", self.log.read_text(errors="replace"))
        return int(m.group(1)) if m else None

    def post(self, path: str, body=None, timeout: float = 120.0):
        data = json.dumps(body).encode() if body is not None else b""
        return http_request(self.port, "POST", path, data, {"Content-Type": "application/json"}, timeout)

    def load(self, name: str, instances: Optional[int] = None) -> float:
        """Loads a model; returns the seconds the load request took."""
        t0 = time.perf_counter()
        status, _, body = self.post(f"/v2/repository/models/{name}/load",
                                    {"instances": instances} if instances else None)
        elapsed = time.perf_counter() - t0
        if status != 200:
            raise RuntimeError(f"corral: load of {name} answered {status}: {body[:500]!r}")
        return elapsed

    def unload(self, name: str) -> float:
        t0 = time.perf_counter()
        status, _, body = self.post(f"/v2/repository/models/{name}/unload")
        if status != 200:
            raise RuntimeError(f"corral: unload of {name} answered {status}: {body[:500]!r}")
        return time.perf_counter() - t0

    def model(self, name: str) -> dict:
        status, _, body = http_request(self.port, "GET", f"/v1/models/{name}")
        if status != 200:
            raise RuntimeError(f"corral: /v1/models/{name} answered {status}: {body[:500]!r}")
        return json.loads(body)

    def stop(self) -> None:
        stop(self.proc, signal.SIGTERM, timeout=30)


# ---- /proc ----

def proc_cpu_s(pid: int) -> float:
    """CPU seconds of one process, all its threads: the scheduler's nanosecond
    accounting (/proc/PID/task/*/schedstat) where there is one, else the tick
    counts of /proc/PID/stat (10 ms resolution, too coarse for an idle daemon)."""
    try:
        total = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except OSError:
                pass  # a thread that just exited
        return total / 1e9
    except FileNotFoundError:
        raise
    except OSError:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss(pid: int) -> int:
    """Resident bytes of one process."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


def proc_read_calls(pid: int) -> int:
    """read-type system calls one process has made (syscr in /proc/PID/io), all its descriptors."""
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("syscr:"):
                return int(line.split()[1])
    raise OSError(f"/proc/{pid}/io has no syscr")


def proc_switches(pid: int) -> dict:
    """One process's context switches and CPU ticks, all its threads.

    /proc/PID/status counts the switches of one thread only (the leader), so
    voluntary (went to sleep: a read with nothing to read, a wait) and
    involuntary (preempted) switches are summed over /proc/PID/task/*/status;
    a thread that exits takes its counts with it. utime and stime come from
    /proc/PID/stat, which sums every thread, live and exited, in clock ticks."""
    vol = invol = threads = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        vol += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        invol += int(line.split()[1])
            threads += 1
        except OSError:
            pass  # a thread that just exited
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return {"voluntary": vol, "involuntary": invol, "utime": int(fields[11]), "stime": int(fields[12]),
            "threads": threads}


def switches_snapshot(roles: Dict[str, List[int]]) -> Dict[str, Dict[int, dict]]:
    """proc_switches of every process, by role ("daemon", "workers", ...); a process gone is left out."""
    out: Dict[str, Dict[int, dict]] = {}
    for role, pids in roles.items():
        out[role] = {}
        for pid in pids:
            try:
                out[role][pid] = proc_switches(pid)
            except OSError:
                pass
    return out


def switches_per_request(before: Dict[str, Dict[int, dict]], after: Dict[str, Dict[int, dict]],
                         requests: int) -> Dict[str, dict]:
    """Each role's context switches and CPU time between two snapshots, summed over its
    processes and divided by requests. A process missing from either snapshot (it exited,
    or was replaced) is not counted and is named in "missing"."""
    out = {}
    n = requests or 1
    for role, procs in before.items():
        common = [pid for pid in procs if pid in after.get(role, {})]
        d = {k: sum(after[role][pid][k] - procs[pid][k] for pid in common)
             for k in ("voluntary", "involuntary", "utime", "stime")}
        user_us, sys_us = d["utime"] * 1e6 / CLK_TCK / n, d["stime"] * 1e6 / CLK_TCK / n
        out[role] = {"processes": len(common), "threads": sum(after[role][pid]["threads"] for pid in common),
                     "voluntary_per_req": d["voluntary"] / n, "involuntary_per_req": d["involuntary"] / n,
                     "switches_per_req": (d["voluntary"] + d["involuntary"]) / n,
                     "user_us_per_req": user_us, "sys_us_per_req": sys_us, "cpu_us_per_req": user_us + sys_us,
                     "totals": d, "missing": sorted(set(procs) ^ set(after.get(role, {})))}
    return out


def descendants(pid: int) -> List[int]:
    """pid and every live process below it."""
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(rest[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def proc_identity(pid: int) -> Optional[Tuple[int, int]]:
    """(pid, its start time in clock ticks since boot): names one process even once
    its pid is reused; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return pid, int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def still_running(identities: Iterable[Tuple[int, int]]) -> List[int]:
    """The pids of those processes (from proc_identity) that still run, zombies left out."""
    out = []
    for pid, start in identities:
        try:
            with open(f"/proc/{pid}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(rest[19]) == start and rest[0] != "Z":
            out.append(pid)
    return out


def raise_fd_limit(need: int) -> int:
    """Raises this process's soft limit on open files to need (its children inherit it),
    as far as the hard limit allows; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        soft = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


def tree_cpu_s(pids: Iterable[int]) -> float:
    total = 0.0
    for p in pids:
        try:
            total += proc_cpu_s(p)
        except OSError:
            pass
    return total


def tree_rss(pids: Iterable[int]) -> int:
    total = 0
    for p in pids:
        try:
            total += proc_rss(p)
        except OSError:
            pass
    return total


def meminfo() -> Dict[str, int]:
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":", 1)
            out[k] = int(v.split()[0]) * 1024
    return out


def host_used() -> int:
    """Host memory in use: MemTotal - MemAvailable, bytes."""
    m = meminfo()
    return m["MemTotal"] - m["MemAvailable"]


def pcp_free() -> int:
    """Free pages the kernel keeps on its per-CPU lists (/proc/zoneinfo pagesets), bytes.

    MemFree does not count them: after a process frees a large allocation,
    tens of MiB may sit there, free but not counted, and drain only slowly."""
    total = 0
    try:
        with open("/proc/zoneinfo") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[0] == "count:":
                    total += int(parts[1])
    except OSError:
        return 0
    return total * PAGE


def host_memory() -> Dict[str, int]:
    """One reading of the host's memory, bytes: in use (MemTotal - MemAvailable), the
    same less the per-CPU free lists, and every process's anonymous memory (AnonPages)."""
    m = meminfo()
    pcp = pcp_free()
    used = m["MemTotal"] - m["MemAvailable"]
    return {"used": used, "pcp_free": pcp, "used_less_pcp": used - pcp, "anon": m["AnonPages"]}


# ---- wrk ----

def wrk(label: str, url: str, connections: int, duration_s: int, body_file: pathlib.Path,
        content_type: str = "application/json", headers: Optional[Dict[str, str]] = None) -> dict:
    """Runs wrk with bench/post.lua; returns its summary (latencies in µs). headers are sent
    with every request besides Content-Type."""
    threads = min(connections, 2)
    argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration_s}s", "--timeout", "10s",
            "-s", str(ROOT / "bench" / "post.lua"), url]
    env = {"BENCH_BODY_FILE": str(body_file), "BENCH_CONTENT_TYPE": content_type}
    if headers:
        env["BENCH_HEADERS"] = "\n".join(f"{k}: {v}" for k, v in headers.items())
    record(f"wrk ({label})", argv, env=env)
    full_env = dict(os.environ)
    full_env.update(env)
    r = subprocess.run(argv, env=full_env, capture_output=True, text=True, timeout=duration_s + 60)
    m = re.search(r"^BENCH_RESULT (\{.*\})$", r.stdout, re.M)
    if r.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed ({r.returncode}): {r.stdout[-2000:]} {r.stderr[-2000:]}")
    res = json.loads(m.group(1))
    res["rps"] = res["requests"] / (res["duration_us"] / 1e6) if res["duration_us"] else 0.0
    res["errors"] = sum(res[k] for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))
    res["connections"] = connections
    return res


# ---- the machine ----

def _first_line(argv: List[str]) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return ((r.stdout or r.stderr).strip().splitlines() or [""])[0]
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def machine() -> dict:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    os_name = "?"
    try:
        for line in pathlib.Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    pkgs = {}
    for p in ("wrk", "gunicorn", "uwsgi-core", "python3-fastapi", "python3-uvicorn", "python3-uvloop",
              "python3-httptools", "nginx-light", "python3", "python3-numpy", "libh2o0.13", "libuv1"):
        v = _first_line(["dpkg-query", "-W", "-f=${Version}", p])
        if v and "no packages" not in v:
            pkgs[p] = v
    commit = _first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = _first_line(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "src"])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_bytes": meminfo()["MemTotal"],
        "kernel": os.uname().release,
        "os": os_name,
        "python": sys.version.split()[0],
        "corral_commit": commit + (" (src/ modified)" if dirty else ""),
        "packages": pkgs,
        "loadavg_at_start": open("/proc/loadavg").read().split()[:3],
    }
