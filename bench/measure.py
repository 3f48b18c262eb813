"""measure — the measurements of the benchmark suite (issue #4; streaming, #10; GET /metrics, #11;
batching and wake-ups, #12; client shared memory, #13; gRPC, #14).

Each function starts what it needs (a corral daemon over a repository of
bench-local model copies, a peer server), measures, stops it, and returns
plain data for results.json. bench.py runs them in order; report.py turns
the results into docs/benchmarks.md and its plots.
"""
from __future__ import annotations

import copy
import http.client
import json
import os
import pathlib
import re
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import time
from multiprocessing import shared_memory
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

import harness as H
from harness import PYTHON, ROOT

PEERS_DIR = ROOT / "bench" / "peers"
BENCH_MODELS = ROOT / "bench" / "models"
EXAMPLES = ROOT / "examples" / "models"


class Config:
    """Durations and sizes, from the environment (see bench/README.md)."""

    def __init__(self) -> None:
        env = os.environ
        self.quick = env.get("BENCH_QUICK", "") not in ("", "0")
        self.duration = int(env.get("BENCH_DURATION") or (1 if self.quick else 2))
        # Throughput points are taken in rounds, every server in turn, and each
        # server's median round is reported: a shared machine's speed drifts,
        # and interleaving keeps that drift out of the ratios.
        self.rounds = int(env.get("BENCH_ROUNDS") or (1 if self.quick else 5))
        self.connections = [int(c) for c in (env.get("BENCH_CONNECTIONS") or "1,16,64").split(",")]
        self.elements = int(env.get("BENCH_ELEMENTS") or 16)
        self.kills = int(env.get("BENCH_KILLS") or (10 if self.quick else 50))
        self.idle_s = float(env.get("BENCH_IDLE") or (3 if self.quick else 10))
        self.reps = int(env.get("BENCH_REPS") or (1 if self.quick else 3))
        self.queue_s = float(env.get("BENCH_QUEUE_SECONDS") or (0.2 if self.quick else 1.0))
        self.rtt_requests = int(env.get("BENCH_RTT_REQUESTS") or (2000 if self.quick else 20000))
        self.tensor_mib = [int(m) for m in (env.get("BENCH_TENSOR_MIB") or "16,64").split(",")]
        self.tensor_reps = int(env.get("BENCH_TENSOR_REPS") or (2 if self.quick else 6))
        self.load_delay_s = float(env.get("BENCH_LOAD_DELAY") or 2)
        self.cold_instances = [int(n) for n in (env.get("BENCH_COLD_INSTANCES") or "1,4,8").split(",")]
        self.alloc_mib = int(env.get("BENCH_ALLOC_MIB") or 512)
        self.tts_runs = int(env.get("BENCH_TTS_RUNS") or (3 if self.quick else 15))
        self.stream_requests = int(env.get("BENCH_STREAM_REQUESTS") or (500 if self.quick else 5000))
        self.stream_chunks = int(env.get("BENCH_STREAM_CHUNKS") or 100000)
        self.stream_rounds = int(env.get("BENCH_STREAM_ROUNDS") or (1 if self.quick else 5))
        self.metrics_models = int(env.get("BENCH_METRICS_MODELS") or (20 if self.quick else 100))
        self.metrics_instances = int(env.get("BENCH_METRICS_INSTANCES") or (4 if self.quick else 8))
        self.metrics_scrapes = int(env.get("BENCH_METRICS_SCRAPES") or (30 if self.quick else 200))
        self.metrics_requests = int(env.get("BENCH_METRICS_REQUESTS") or 4)
        self.metrics_idle_s = float(env.get("BENCH_METRICS_IDLE") or (2 if self.quick else 5))
        self.restart_window_ms = 500
        # Issue #12: the serving section's batching series (the manifests' `batching` key), and a
        # perf profile of the daemon while they run, to find what forming batches costs it.
        self.batching = env.get("BENCH_BATCHING", "1") not in ("", "0")
        self.batch_size = int(env.get("BENCH_BATCH_SIZE") or 32)
        self.batch_delay_ms = int(env.get("BENCH_BATCH_DELAY_MS") or 2)
        self.perf = env.get("BENCH_PERF", "1") not in ("", "0")
        # Issue #12, item 3: the same two echoes with `pipeline: 0`, the daemon as it was before
        # pipelining, so that one run shows the wake-ups before and after.
        self.nopipe = env.get("BENCH_NOPIPE", "1") not in ("", "0")
        # Issue #13, item 7: tensors through client shared memory against the HTTP binary path.
        self.shm_mib = [int(m) for m in (env.get("BENCH_SHM_MIB") or "64").split(",")]
        self.shm_reps = int(env.get("BENCH_SHM_REPS") or (5 if self.quick else 15))
        # Issue #14, item 5: gRPC's ModelInfer against HTTP/JSON and HTTP/binary on one daemon, and
        # the large tensors (tensor_mib, tensor_reps) over gRPC against HTTP binary.
        self.grpc_connections = [int(c) for c in (env.get("BENCH_GRPC_CONNECTIONS") or "16,64").split(",")]
        self.grpc_channels = int(env.get("BENCH_GRPC_CHANNELS") or 1)
        self.grpc_threads = int(env.get("BENCH_GRPC_THREADS") or 1)
        self.grpc_python = env.get("BENCH_GRPC_PYTHON", "1") not in ("", "0")

    def as_dict(self) -> dict:
        return {k: v for k, v in vars(self).items()}


class Workspace:
    """The bench's temporary directory: model repositories and logs."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.logs = path / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.manifests: Dict[str, str] = {}

    def repo(self, name: str, models: Dict[str, Tuple[pathlib.Path, str]]) -> pathlib.Path:
        """A model repository: name -> (source directory to copy, model.yaml text)."""
        repo = self.path / name / "models"
        repo.mkdir(parents=True)
        for model, (src, manifest) in models.items():
            dest = repo / model
            shutil.copytree(src, dest, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "CMakeLists.txt", "*.c"))
            (dest / "model.yaml").write_text(manifest)
            self.manifests.setdefault(model if model not in self.manifests else f"{model} ({name})", manifest)
        return repo


# ---- manifests: every model the bench serves, in one place ----

def echo_py_manifest(instances: int = 2, restart: str = "", batching: str = "", pipeline: str = "") -> str:
    return (f"# examples/models/echo with Debian's interpreter, as the peers use it"
            f"{', with dynamic batching' if batching else ''}{', without pipelining' if pipeline else ''}.\n"
            f"runtime: python\nentrypoint: worker.py\npython: {PYTHON}\ninstances: {instances}\n"
            f"keep_alive: -1\nmax_queue: 256\n{restart}{batching}{pipeline}")


def echo_c_manifest(instances: int = 2, restart: str = "", batching: str = "", pipeline: str = "") -> str:
    what = ("examples/models/echo-c-batch (echo-c built into its own directory), with dynamic batching"
            if batching else "examples/models/echo-c (C SDK)")
    return (f"# {what}{', without pipelining' if pipeline else ''}.\n"
            f"runtime: exec\nentrypoint: echo-c\ninstances: {instances}\nkeep_alive: -1\nmax_queue: 256\n"
            f"{restart}{batching}{pipeline}")


def batching_policy(cfg: Config) -> str:
    """The `batching` key of the batching series (SPEC section 2): a batch goes when it holds
    max_batch_size rows, or when its oldest request has waited max_queue_delay."""
    return f"batching: {{max_batch_size: {cfg.batch_size}, max_queue_delay: {cfg.batch_delay_ms}ms}}\n"


# The `pipeline` key of the pipeline 0 series (docs/worker-protocol.md, "Pipelining"): nothing is
# sent ahead to a busy worker, each request waits in the daemon's queue until an instance is free.
NO_PIPELINE = "# Nothing sent ahead to a busy instance: the daemon as it was before pipelining.\npipeline: 0\n"


def restart_policy(window_ms: int) -> str:
    return (f"# A crash after a healthy run longer than restart.window restarts at once.\n"
            f"restart: {{max_restarts: 1000, window: {window_ms}ms, backoff_min: 100ms, backoff_max: 1s}}\n")


# ---- requests ----

def request_values(n: int) -> List[float]:
    # Multiples of 0.25 print the same in every JSON writer.
    return [((i * 7) % 64) * 0.25 for i in range(n)]


def json_request(n: int) -> bytes:
    return json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, n],
                                   "data": request_values(n)}]}).encode()


def check_echo(port: int, path: str, body: bytes, n: int) -> bytes:
    """One request; fails unless the answer is the echo of body. Returns the response body."""
    status, headers, resp = H.http_request(port, "POST", path, body, {"Content-Type": "application/json"})
    if status != 200:
        raise RuntimeError(f"POST {path} on port {port} answered {status}: {resp[:300]!r}")
    out = json.loads(resp)["outputs"][0]
    if out["name"] != "OUTPUT0" or out["shape"] != [1, n] or [float(x) for x in out["data"]] != request_values(n):
        raise RuntimeError(f"POST {path} on port {port}: not an echo: {resp[:300]!r}")
    return resp


# ---- 1. the scheduler queue ----

def queue(cfg: Config, ws: Workspace) -> dict:
    out = ROOT / "build" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    exe = out / "sched_bench"
    argv = ["cc", "-O2", "-g", "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror", "-iquote", "src",
            "bench/sched_bench.c", "src/job.c", "src/shm.c", "src/proto.c", "-o", str(exe.relative_to(ROOT))]
    H.record("build sched_bench", argv)
    subprocess.run(argv, cwd=ROOT, check=True)
    depths = ["1000", "100000"]
    rows = []
    argv = [str(exe.relative_to(ROOT)), str(cfg.queue_s), *depths]
    H.record("sched_bench (corral's queue)", argv)
    r = subprocess.run(argv, cwd=ROOT, check=True, capture_output=True, text=True, timeout=600)
    rows += [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    argv = [PYTHON, "bench/pyqueue_bench.py", str(cfg.queue_s), *depths]
    H.record("pyqueue_bench (asyncio.PriorityQueue, heapq)", argv)
    r = subprocess.run(argv, cwd=ROOT, check=True, capture_output=True, text=True, timeout=600)
    rows += [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    return {"rows": rows, "reference": {"impl": "asyncio.PriorityQueue (issue #4's figure)",
                                        "ops": 730108, "enqueue_ns": 700}}


# ---- 2/4. throughput, latency and large tensors, server by server ----

class Server:
    """A server under test: its port, inference path, and the root of its process tree.

    roles() names the processes whose wake-ups are counted, by role; by default the
    root (a peer's master) and every process below it (its workers). model names
    corral's model, whose batch counters (GET /metrics) are read around each point.
    connections, when given, are the only connection counts it is measured at; profiled
    says whether the daemon is profiled with perf while it runs once more."""

    def __init__(self, key: str, label: str, group: str, port: int, path: str, root_pid: int,
                 stopper: Callable[[], None], tensors: bool = True,
                 roles: Optional[Callable[[], Dict[str, List[int]]]] = None, model: Optional[str] = None,
                 connections: Optional[List[int]] = None, profiled: bool = False) -> None:
        self.key, self.label, self.group = key, label, group
        self.port, self.path, self.root_pid = port, path, root_pid
        self.stopper, self.tensors = stopper, tensors
        self.roles = roles or self.master_and_workers
        self.model = model
        self.connections, self.profiled = connections, profiled

    def measured_at(self, conns: int) -> bool:
        return self.connections is None or conns in self.connections

    def master_and_workers(self) -> Dict[str, List[int]]:
        return {"daemon": [self.root_pid], "workers": [p for p in H.descendants(self.root_pid) if p != self.root_pid]}


def corral_roles(d: H.Corral, model: str) -> Callable[[], Dict[str, List[int]]]:
    """The daemon, the model's workers (pids from /v1/models: the worker itself, not the
    `corral __shim` guard above it) and their guards. Other models' workers are left out."""
    def roles() -> Dict[str, List[int]]:
        pids = [i["pid"] for i in d.model(model)["instances"] if i["state"] == "ready" and i.get("pid")]
        if not pids:
            raise RuntimeError(f"corral: {model} has no ready instance with a pid")
        guards = []
        for pid in pids:
            with open(f"/proc/{pid}/stat") as f:
                guards.append(int(f.read().rsplit(")", 1)[1].split()[1]))
        return {"daemon": [d.pid], "workers": pids, "guards": guards}
    return roles


BATCH_SAMPLE = re.compile(r'^(corral_batch_size_bucket|corral_batch_size_sum|corral_batch_size_count|'
                          r'nv_inference_count|nv_inference_exec_count)\{model="([^"]*)"'
                          r'(?:,version="1")?(?:,le="([^"]*)")?\} (\S+)$', re.M)


def batch_counters(port: int, model: str) -> Dict[str, float]:
    """One model's batch counters from GET /metrics: the corral_batch_size histogram (rows per
    execution: its sum, count and buckets, "le=N") and Triton's inference and execution counts."""
    status, _, body = H.http_request(port, "GET", "/metrics")
    if status != 200:
        raise RuntimeError(f"GET /metrics answered {status}: {body[:300]!r}")
    out: Dict[str, float] = {}
    for name, m, le, value in BATCH_SAMPLE.findall(body.decode()):
        if m == model:
            out[f"{name}:{le}" if le else name] = float(value)
    if "corral_batch_size_count" not in out or "nv_inference_exec_count" not in out:
        raise RuntimeError(f"GET /metrics has no batch counters for {model}")
    return out


def batch_delta(before: Dict[str, float], after: Dict[str, float]) -> dict:
    """What one point added to the counters: executions, rows, the mean batch (rows per execution,
    by both counts) and the largest batch's bucket (the smallest bound that holds every batch)."""
    d = {k: after[k] - before.get(k, 0.0) for k in after}
    execs, rows = d["corral_batch_size_count"], d["corral_batch_size_sum"]
    bounds = sorted((float(k.split(":", 1)[1]), v) for k, v in d.items()
                    if k.startswith("corral_batch_size_bucket:") and not k.endswith("+Inf"))
    largest = next((b for b, cum in bounds if cum >= execs), None) if execs else None
    return {"executions": execs, "rows": rows, "mean": rows / execs if execs else None,
            "nv_inferences": d["nv_inference_count"], "nv_executions": d["nv_inference_exec_count"],
            "nv_mean": d["nv_inference_count"] / d["nv_inference_exec_count"] if d["nv_inference_exec_count"] else None,
            "largest_le": largest, "buckets": {f"{b:g}": cum for b, cum in bounds}}


def start_gunicorn(ws: Workspace) -> Server:
    port = H.free_port()
    argv = [PYTHON, "-m", "gunicorn", "--workers", "2", "--worker-class", "sync", "--bind", f"127.0.0.1:{port}",
            "--chdir", str(PEERS_DIR), "--log-level", "warning", "echo_wsgi:app"]
    p = H.start("gunicorn (2 sync workers)", argv, ws.logs / "gunicorn.log")
    return Server("gunicorn", "gunicorn (2 sync workers)", "python", port, "/v2/models/echo/infer", p.pid,
                  lambda: H.stop(p))


def start_uwsgi(ws: Workspace) -> Server:
    port = H.free_port()
    # --http-socket, uWSGI's own HTTP: a connection per request, as gunicorn's sync workers.
    # (--http11-socket keeps each connection in one process, so with 2 processes
    # only 2 clients are ever served and the others starve: wrk would report the
    # latency of the lucky two only.)
    # It closes each connection without saying so; Connection: close tells the client.
    argv = ["uwsgi", "--plugin", "python3", "--http-socket", f"127.0.0.1:{port}", "--add-header", "Connection: close", "--master", "--processes", "2",
            "--wsgi-file", str(PEERS_DIR / "echo_wsgi.py"), "--callable", "app", "--need-app", "--disable-logging",
            "--die-on-term"]
    p = H.start("uWSGI (2 processes)", argv, ws.logs / "uwsgi.log")
    return Server("uwsgi", "uWSGI (2 processes)", "python", port, "/v2/models/echo/infer", p.pid,
                  lambda: H.stop(p))


def start_uvicorn(ws: Workspace) -> Server:
    port = H.free_port()
    argv = [PYTHON, "-m", "uvicorn", "--workers", "2", "--host", "127.0.0.1", "--port", str(port),
            "--app-dir", str(PEERS_DIR), "--log-level", "warning", "--no-access-log", "echo_asgi:app"]
    p = H.start("uvicorn + FastAPI (2 processes)", argv, ws.logs / "uvicorn.log")
    return Server("uvicorn", "FastAPI on uvicorn (2 processes)", "python", port, "/v2/models/echo/infer", p.pid,
                  lambda: H.stop(p))


def start_nginx(ws: Workspace, body: bytes) -> Server:
    port = H.free_port()
    prefix = ws.path / "nginx"
    prefix.mkdir(exist_ok=True)
    text = body.decode().replace("\\", "\\\\").replace("'", "\\'")
    conf = prefix / "nginx.conf"
    conf.write_text(f"""# nginx answering every request with the C echo's response, byte for byte.
worker_processes 2;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type application/json;
            return 200 '{text}';
        }}
    }}
}}
""")
    argv = ["nginx", "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"]
    p = H.start("nginx (return 200, 2 workers)", argv, ws.logs / "nginx.log")
    return Server("nginx", "nginx `return 200` (2 workers)", "c", port, "/v2/models/echo-c/infer", p.pid,
                  lambda: H.stop(p), tensors=False)


def wait_ready(server: Server, body: bytes, n: int) -> None:
    """Waits until the server answers, then checks that its answer is the echo."""
    def answers():
        try:
            status, _, _ = H.http_request(server.port, "POST", server.path, body,
                                          {"Content-Type": "application/json"}, timeout=5)
            return status == 200
        except (OSError, ValueError):
            return False
    H.wait_for(answers, 30, f"{server.label} to answer", interval=0.1)
    check_echo(server.port, server.path, body, n)


def warm_up(server: Server, body_file: pathlib.Path) -> None:
    url = f"http://127.0.0.1:{server.port}{server.path}"
    H.wrk("warm-up, 1 s at 16 connections, before each server's points", url, 16, 1, body_file)


def load_point(cfg: Config, server: Server, conns: int, body_file: pathlib.Path) -> dict:
    url = f"http://127.0.0.1:{server.port}{server.path}"
    pids = H.descendants(server.root_pid)
    roles = server.roles()  # before the first reading: for corral it is a request to the daemon
    # Likewise the batch counters, read before the CPU readings start and after they end.
    counters0 = batch_counters(server.port, server.model) if server.model else None
    cpu0, lead0 = H.tree_cpu_s(pids), H.proc_cpu_s(server.root_pid)
    switches0 = H.switches_snapshot(roles)
    res = H.wrk(f"{server.key}, {conns} connection{'s' if conns > 1 else ''}", url, conns, cfg.duration, body_file)
    switches1 = H.switches_snapshot(roles)
    n = res["requests"] or 1
    res["cpu_us_per_req"] = (H.tree_cpu_s(pids) - cpu0) * 1e6 / n
    # For corral, the daemon alone (the root is the daemon; the rest are its workers).
    res["root_cpu_us_per_req"] = (H.proc_cpu_s(server.root_pid) - lead0) * 1e6 / n
    res["processes"] = len(pids)
    # Issue #12's wake-ups: context switches and CPU ticks by role over the same run.
    res["wakeups"] = H.switches_per_request(switches0, switches1, res["requests"])
    if counters0 is not None:
        res["batch"] = batch_delta(counters0, batch_counters(server.port, server.model))
    return res


def median_round(rounds: List[dict]) -> dict:
    """The round with the median request rate, with every round's rate kept beside it."""
    ordered = sorted(rounds, key=lambda r: r["rps"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["rounds_rps"] = [r["rps"] for r in rounds]
    chosen["rounds_p50_us"] = [r["p50_us"] for r in rounds]
    return chosen


def tensor_roundtrips(cfg: Config, server: Server, mib: int, ws: Workspace) -> dict:
    """A binary FP32 tensor of mib MiB in, binary out, timed by curl (a C client, so the
    client's own cost stays small); seconds per round trip."""
    nbytes = mib << 20
    count = nbytes // 4
    data = np.arange(count, dtype=np.float32).tobytes()
    head = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [count],
                                   "parameters": {"binary_data_size": nbytes}}],
                       "parameters": {"binary_data_output": True}}).encode()
    req = ws.path / f"tensor-{mib}.bin"
    if not req.exists():
        req.write_bytes(head + data)
    answer = ws.path / "tensor-answer.bin"
    times = []
    for i in range(cfg.tensor_reps + 1):
        argv = ["curl", "-sS", "--data-binary", f"@{req}", "-H", "Content-Type: application/octet-stream",
                "-H", "Expect:",
                "-H", f"Inference-Header-Content-Length: {len(head)}", "-o", str(answer if i == 0 else "/dev/null"),
                "-w", "%{http_code} %{time_total} %{size_download}", f"http://127.0.0.1:{server.port}{server.path}"]
        H.record(f"curl ({mib} MiB tensor)", [a.replace(str(ws.path), "$TMP") for a in argv])
        r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        try:
            status, seconds, size = r.stdout.split()
        except ValueError:
            raise RuntimeError(f"{server.label}: curl failed on the {mib} MiB tensor: {r.stdout} {r.stderr}")
        if status != "200":
            raise RuntimeError(f"{server.label}: {mib} MiB tensor answered {status}")
        if int(size) < nbytes:
            raise RuntimeError(f"{server.label}: {size} bytes came back for a {mib} MiB tensor")
        if i == 0:  # the first answer is checked byte for byte, the others only timed
            if answer.read_bytes()[-nbytes:] != data:
                raise RuntimeError(f"{server.label}: the {mib} MiB tensor did not come back unchanged")
            answer.unlink()
        else:
            times.append(float(seconds))
    med = statistics.median(times)
    return {"mib": mib, "bytes": nbytes, "reps": len(times), "seconds_median": med, "seconds_min": min(times),
            "mb_s": nbytes / med / 1e6, "seconds": times}


def loopback_floor(cfg: Config, mib: int) -> dict:
    """The machine's own limit for a tensor echo: mib MiB sent over a loopback TCP
    connection and sent back once all of it has arrived, with no HTTP and no
    processing. recv_into and sendall release the GIL, so this is the kernel's speed."""
    import threading
    nbytes = mib << 20
    data = bytes(nbytes)
    times = []
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)

        def serve():
            conn, _ = lsock.accept()
            with conn:
                buf = bytearray(nbytes)
                view = memoryview(buf)
                for _ in range(cfg.tensor_reps + 1):
                    got = 0
                    while got < nbytes:
                        n = conn.recv_into(view[got:])
                        if not n:
                            return
                        got += n
                    conn.sendall(view)

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        with socket.create_connection(lsock.getsockname()) as c:
            buf = bytearray(nbytes)
            view = memoryview(buf)
            for i in range(cfg.tensor_reps + 1):
                t0 = time.perf_counter()
                c.sendall(data)
                got = 0
                while got < nbytes:
                    got += c.recv_into(view[got:])
                if i:
                    times.append(time.perf_counter() - t0)
        t.join(timeout=30)
    med = statistics.median(times)
    return {"mib": mib, "bytes": nbytes, "reps": len(times), "seconds_median": med, "seconds_min": min(times),
            "mb_s": nbytes / med / 1e6}


# The daemon's functions that run only because a model batches (src/dispatch.c, src/batch.c), by
# what they do: forming a batch (choosing its members, the BATCH frame gathered from theirs, the
# delay's timer, each request's batch entry freed) and splitting its answer by rows. A profile
# sample is charged to the first of these on its stack, leaf first. Two more run with and without
# batching, and their cost with batching less their cost without is batching's: "parse", the
# request's parse (src/infer.c), which builds each request's batch entry inline when its model
# batches, and "client_check", the check that a queued request's client is still there (a
# recv(MSG_PEEK) in src/api.c), made for a request about to be sent and, with batching, for every
# queued member each time a batch is considered. The functions under PROFILE_COMMON (sending a
# frame, answering one request) run without batching too, and end the search.
PROFILE_FUNCTIONS = {
    "formation": ("dispatch_batch", "batch_new", "batch_compatible", "batch_fire", "batch_entry_free"),
    "split": ("batch_answer", "parse_outputs", "result_body", "row_offset", "batch_drop_members"),
    "parse": ("infer_parse_request",),
    "client_check": ("client_alive",),
}
PROFILE_COMMON = ("inst_send", "count_answer", "answer_job", "job_free", "infer_build_response")


def perf_stacks(data: pathlib.Path) -> dict:
    """The recorded samples' periods (CPU nanoseconds) by PROFILE_FUNCTIONS' category and in all,
    and for each category the functions its samples were running (leaf first), most first."""
    argv = ["perf", "script", "-i", str(data), "-F", "period,ip,sym", "--no-inline"]
    H.record("perf script (the samples' stacks)", argv)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"perf script failed ({r.returncode}): {r.stderr[-500:]}")
    owner = {f: cat for cat, fs in PROFILE_FUNCTIONS.items() for f in fs}
    owner.update({f: None for f in PROFILE_COMMON})
    total, samples = 0.0, 0
    by_cat = {cat: 0.0 for cat in PROFILE_FUNCTIONS}
    leaves: Dict[str, Dict[str, float]] = {cat: {} for cat in PROFILE_FUNCTIONS}
    for block in r.stdout.split("\n\n"):
        lines = [line.strip() for line in block.strip().splitlines()]
        if not lines or not lines[0].isdigit():
            continue
        period = float(lines[0])
        total += period
        samples += 1
        syms = [(line.split(None, 1) + [""])[1].split(".")[0] for line in lines[1:]]  # batch_new.cold: batch_new
        cat = next((owner[sym] for sym in syms if sym in owner), None)
        if cat:
            by_cat[cat] += period
            leaf = syms[0] if syms else "?"
            leaves[cat][leaf] = leaves[cat].get(leaf, 0.0) + period
    top = {cat: [[sym, v / total] for sym, v in sorted(d.items(), key=lambda kv: -kv[1])[:6]]
           for cat, d in leaves.items()} if total else {}
    return {"all": total, "samples": samples, "by_category": by_cat, "top_leaves": top}


def perf_during(what: str, argv: List[str], data: pathlib.Path, log: pathlib.Path, pid: int,
                run: Callable[[], Any]) -> Tuple[Optional[str], Any, float]:
    """Runs run() while perf record (argv, writing data) samples pid: (None, run's result, pid's CPU
    seconds over the run), or (the reason, None, 0) when perf did not attach, and run did not run."""
    rec = H.start(f"perf record (the daemon, during {what})", argv, log)
    try:
        try:
            H.wait_for(lambda: rec.poll() is not None or (data.exists() and data.stat().st_size > 0), 10,
                       "perf record to attach")
        except RuntimeError:
            pass
        if rec.poll() is not None:
            return (f"perf record exited with {rec.returncode}: {log.read_text(errors='replace')[-300:].strip()}",
                    None, 0.0)
        time.sleep(0.2)
        cpu0 = H.proc_cpu_s(pid)
        result = run()
        return None, result, H.proc_cpu_s(pid) - cpu0
    finally:
        H.stop(rec, signal.SIGINT, timeout=60)


def profile_daemon(cfg: Config, server: Server, conns: int, body_file: pathlib.Path, ws: Workspace) -> dict:
    """A wrk run apart from the measured points, with perf sampling the daemon's stacks: what
    forming batches and splitting their answers cost it per request (the samples' share of its
    CPU time, times its CPU per request over the same run). {"error": ...} when perf cannot run."""
    if not shutil.which("perf"):
        return {"error": "perf is not installed"}
    data = ws.path / f"perf-{server.key}.data"
    log = ws.logs / f"perf-{server.key}.log"
    argv = ["perf", "record", "-q", "-F", "1999", "--call-graph", "dwarf,8192", "-p", str(server.root_pid),
            "-o", str(data)]
    url = f"http://127.0.0.1:{server.port}{server.path}"
    err, res, cpu_s = perf_during(f"{server.key} at {conns} connections", argv, data, log, server.root_pid,
                                  lambda: H.wrk(f"{server.key}, {conns} connections, under perf", url, conns,
                                                cfg.duration, body_file))
    if err:
        return {"error": err}
    cpu_us = cpu_s * 1e6 / (res["requests"] or 1)
    try:
        st = perf_stacks(data)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:  # a failed profile loses only itself
        return {"error": str(e)}
    finally:
        data.unlink(missing_ok=True)
    if not st["samples"]:
        return {"error": "perf recorded no samples of the daemon"}
    share = {cat: v / st["all"] for cat, v in st["by_category"].items()}
    return {"connections": conns, "requests": res["requests"], "rps": res["rps"], "samples": st["samples"],
            "daemon_cpu_us_per_req": cpu_us, "share": share,
            "us_per_req": {cat: v * cpu_us for cat, v in share.items()}, "top_leaves": st["top_leaves"],
            "functions": {cat: list(fs) for cat, fs in PROFILE_FUNCTIONS.items()}}


def serving(cfg: Config, ws: Workspace) -> dict:
    """Items 2 and 4: every server started side by side; wrk points in rounds, every server in
    turn (the median round is kept); then the large tensors, server by server. With
    cfg.batching, corral's two echoes are also served as batching models (issue #12) beside
    the others, and the daemon is profiled with perf while each of those runs once more.
    With cfg.nopipe, they are also served with `pipeline: 0` (issue #12, item 3: the before
    of pipelining, which the echoes as they are have on by default)."""
    models = {"echo": (EXAMPLES / "echo", echo_py_manifest(2)),
              "echo-c": (EXAMPLES / "echo-c", echo_c_manifest(2))}
    # Pipelining starts only when every instance is busy and a request waits: with no more
    # connections than the 2 instances, pipeline 0 and 1 take the same path, so the pipeline 0
    # series are measured only where the connections outnumber the instances.
    nopipe_conns = [c for c in cfg.connections if c > 2] if cfg.nopipe else []
    if nopipe_conns:
        models["echo-nopipe"] = (EXAMPLES / "echo", echo_py_manifest(2, pipeline=NO_PIPELINE))
        models["echo-c-nopipe"] = (EXAMPLES / "echo-c", echo_c_manifest(2, pipeline=NO_PIPELINE))
    if cfg.batching:
        if not (EXAMPLES / "echo-c-batch" / "echo-c").exists():
            raise RuntimeError("examples/models/echo-c-batch/echo-c is missing; run `make build` first")
        models["echo-batch"] = (EXAMPLES / "echo", echo_py_manifest(2, batching=batching_policy(cfg)))
        models["echo-c-batch"] = (EXAMPLES / "echo-c-batch", echo_c_manifest(2, batching=batching_policy(cfg)))
    repo = ws.repo("serving", models)
    body = json_request(cfg.elements)
    body_file = ws.path / "request.json"
    body_file.write_bytes(body)
    d = H.Corral("serving", repo, ws.logs)
    results: Dict[str, dict] = {}
    profiles: Dict[str, dict] = {}
    try:
        for name in models:
            d.load(name)
        c_body = check_echo(d.port, "/v2/models/echo-c/infer", body, cfg.elements)

        def corral_server(key: str, label: str, group: str, model: str,
                          connections: Optional[List[int]] = None, profiled: bool = True) -> Server:
            # Only the echoes as they are take large tensors: a batching series' [N] tensor is N rows,
            # more than max_batch_size, and a tensor that large is never pipelined (it goes through
            # shared memory), so a pipeline 0 series would repeat its echo's figures.
            return Server(key, label, group, d.port, f"/v2/models/{model}/infer", d.pid, lambda: None,
                          tensors=model in ("echo", "echo-c"), roles=corral_roles(d, model), model=model,
                          connections=connections, profiled=profiled)

        corral_py = corral_server("corral", "corral, Python echo (2 instances)", "python", "echo")
        corral_c = corral_server("corral-c", "corral, C echo (2 instances)", "c", "echo-c")
        starters = [lambda: corral_py]
        # Each pipeline 0 series next to its echo in every round: the nearest in time, the least drift.
        if nopipe_conns:
            starters.append(lambda: corral_server("corral-nopipe", "corral, Python echo, pipeline 0 (2 instances)",
                                                  "python", "echo-nopipe", nopipe_conns, profiled=False))
        if cfg.batching:
            starters.append(lambda: corral_server("corral-batch", "corral, Python echo, batching (2 instances)",
                                                  "python", "echo-batch"))
        starters += [lambda: start_gunicorn(ws), lambda: start_uwsgi(ws), lambda: start_uvicorn(ws),
                     lambda: corral_c]
        if nopipe_conns:
            starters.append(lambda: corral_server("corral-c-nopipe", "corral, C echo, pipeline 0 (2 instances)", "c",
                                                  "echo-c-nopipe", nopipe_conns, profiled=False))
        if cfg.batching:
            starters.append(lambda: corral_server("corral-c-batch", "corral, C echo, batching (2 instances)", "c",
                                                  "echo-c-batch"))
        starters.append(lambda: start_nginx(ws, c_body))
        running: List[Server] = []
        try:
            for make in starters:
                running.append(make())
                wait_ready(running[-1], body, cfg.elements)
            for server in running:
                warm_up(server, body_file)
            taken: Dict[Tuple[str, int], List[dict]] = {}
            for r in range(cfg.rounds):
                for conns in cfg.connections:
                    for server in running:
                        if not server.measured_at(conns):
                            continue
                        res = load_point(cfg, server, conns, body_file)
                        taken.setdefault((server.key, conns), []).append(res)
                        wk = res["wakeups"]
                        mean = (res.get("batch") or {}).get("mean")
                        print(f"  round {r + 1}/{cfg.rounds} {server.label:47s} c={conns:<3d} {res['rps']:10.0f} req/s"
                              f"  p50 {res['p50_us']:7d} µs  p99 {res['p99_us']:7d} µs  errors {res['errors']}"
                              f"  switches/req daemon {wk['daemon']['switches_per_req']:.2f}"
                              f" workers {wk['workers']['switches_per_req']:.2f}"
                              + (f"  batch {mean:.2f}" if mean else ""), flush=True)
            if cfg.batching and cfg.perf:
                # Every corral series once more under perf, at the most connections: the echoes
                # without batching give the request parse's cost without a batch entry (the
                # pipeline 0 series are not profiled: they have no batch to cost).
                conns = max(cfg.connections)
                for server in running:
                    if server.model and server.profiled:
                        profiles[server.key] = prof = profile_daemon(cfg, server, conns, body_file, ws)
                        if "error" in prof:
                            print(f"  {server.label:47s} perf: {prof['error']}", flush=True)
                        else:
                            us = prof["us_per_req"]
                            print(f"  {server.label:47s} perf at c={conns}: the daemon "
                                  f"{prof['daemon_cpu_us_per_req']:.1f} µs/req, forming batches "
                                  f"{us['formation']:.2f}, splitting answers {us['split']:.2f}, parsing requests "
                                  f"{us['parse']:.2f}, checking clients {us['client_check']:.2f} "
                                  f"({prof['samples']} samples)", flush=True)
            for server in running:
                entry = {"label": server.label, "group": server.group,
                         "points": [median_round(taken[(server.key, conns)]) for conns in cfg.connections
                                    if server.measured_at(conns)]}
                if server.model:
                    entry["model"] = server.model
                if server.tensors:
                    entry["tensors"] = []
                    for mib in cfg.tensor_mib:
                        t = tensor_roundtrips(cfg, server, mib, ws)
                        entry["tensors"].append(t)
                        print(f"  {server.label:47s} {mib:3d} MiB tensor in and out: {t['mb_s']:8.0f} MB/s",
                              flush=True)
                results[server.key] = entry
        finally:
            for server in running:
                server.stopper()
    finally:
        d.stop()
    floor = []
    for mib in cfg.tensor_mib:
        floor.append(loopback_floor(cfg, mib))
        print(f"  {'loopback TCP echo, no HTTP':47s} {mib:3d} MiB tensor in and out: {floor[-1]['mb_s']:8.0f} MB/s",
              flush=True)
    out = {"request_bytes": len(body), "elements": cfg.elements, "response_bytes_c": len(c_body),
           "servers": results, "loopback_floor": floor, "clk_tck": H.CLK_TCK}
    if cfg.batching:
        out["batching"] = {"max_batch_size": cfg.batch_size, "max_queue_delay_ms": cfg.batch_delay_ms,
                           "perf": profiles if cfg.perf else None}
    if nopipe_conns:
        out["pipelining"] = {"off_connections": nopipe_conns}
    return out


# ---- 3. the worker's own time per request ----

def infer_frame_body(n: int) -> bytes:
    """The INFER body corral sends for json_request(n) (see build_infer_frame in src/api_v2.c)."""
    data = np.asarray(request_values(n), dtype=np.float32).tobytes()
    meta = json.dumps({"id": "", "parameters": {},
                       "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, n], "size": len(data)}]},
                      separators=(",", ":")).encode()
    return struct.pack("<I", len(meta)) + meta + data


def worker_rtt(cfg: Config, ws: Workspace) -> dict:
    out = ROOT / "build" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    exe = out / "worker_rtt"
    argv = ["cc", "-O2", "-g", "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror", "-iquote", "src",
            "bench/worker_rtt.c", "src/proto.c", "-o", str(exe.relative_to(ROOT))]
    H.record("build worker_rtt", argv)
    subprocess.run(argv, cwd=ROOT, check=True)
    pingpong = out / "pingpong"
    pp_argv = ["cc", "-O2", "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror", "bench/pingpong.c", "-o",
               str(pingpong.relative_to(ROOT))]
    H.record("build pingpong", pp_argv)
    subprocess.run(pp_argv, cwd=ROOT, check=True)
    body_file = ws.path / "infer-frame.bin"
    body_file.write_bytes(infer_frame_body(cfg.elements))
    repo = ws.repo("rtt", {"echo": (EXAMPLES / "echo", echo_py_manifest(1)),
                           "echo-c": (EXAMPLES / "echo-c", echo_c_manifest(1))})
    results = {}
    for key, model, cmd in (("python", "echo", [PYTHON, "worker.py"]), ("c", "echo-c", ["./echo-c"])):
        mdir = repo / model
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # The health socket, as the daemon gives it: the SDKs then run requests inline.
        health_ours, health_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds = {3: theirs.fileno(), 4: health_theirs.fileno()}

        def on_fds(fds=fds):
            # The worker finds its sockets on fds 3 and 4; only those survive exec.
            moved = {target: os.dup(fd) for target, fd in fds.items()}
            for target, fd in moved.items():
                os.dup2(fd, target, inheritable=True)

        env = {"CORRAL_FD": "3", "CORRAL_HEALTH_FD": "4", "CORRAL_PROTOCOL": "1", "CORRAL_MODEL": model,
               "CORRAL_INSTANCE": "0", "CORRAL_MODEL_DIR": str(mdir), "PYTHONPATH": str(ROOT / "sdk" / "python")}
        worker = H.start(f"worker alone ({model})", cmd, ws.logs / f"rtt-{model}.log", cwd=str(mdir), env=env,
                         preexec_fn=on_fds)
        theirs.close()
        health_theirs.close()
        try:
            load = json.dumps({"model": model, "model_dir": str(mdir), "instance_id": 0, "device": "cpu",
                               "concurrency": 1, "parameters": {}})
            n = cfg.rtt_requests if key == "c" else max(cfg.rtt_requests // 4, 500)
            argv = [str(exe), str(ours.fileno()), load, str(body_file), str(n), str(max(n // 10, 100))]
            H.record(f"worker_rtt ({model})", [str(exe.relative_to(ROOT)), "FD", "LOAD_JSON", "infer-frame.bin",
                                               str(n), str(max(n // 10, 100))])
            r = subprocess.run(argv, pass_fds=(ours.fileno(),), capture_output=True, text=True, timeout=300)
            if r.returncode != 0:
                raise RuntimeError(f"worker_rtt {model}: {r.stderr.strip()}\n"
                                   f"{(ws.logs / f'rtt-{model}.log').read_text()[-2000:]}")
            results[key] = json.loads(r.stdout)
            print(f"  worker alone ({model}): p50 {results[key]['p50_us']:.1f} µs  p99 {results[key]['p99_us']:.1f} µs",
                  flush=True)
            worker.wait(timeout=10)
        finally:
            ours.close()
            health_ours.close()
            H.stop(worker, timeout=5)
    # The floor under both: one round trip between two processes doing nothing.
    n = cfg.rtt_requests
    pp_args = [str(pingpong.relative_to(ROOT)), str(n), str(max(n // 10, 100))]
    H.record("pingpong (two processes, no work)", pp_args)
    r = subprocess.run([str(pingpong), *pp_args[1:]], capture_output=True, text=True, timeout=300, check=True)
    results["pingpong"] = json.loads(r.stdout)
    print(f"  process round trip alone: p50 {results['pingpong']['p50_us']:.1f} µs", flush=True)
    return results


# ---- 5. cold start ----

def cold_start(cfg: Config, ws: Workspace) -> dict:
    manifest = (f"# bench/models/slowload: load sleeps parameters.delay seconds.\n"
                f"runtime: python\nentrypoint: worker.py\npython: {PYTHON}\nkeep_alive: -1\nload_timeout: 1m\n"
                f"parameters: {{delay: {cfg.load_delay_s:g}}}\n")
    repo = ws.repo("cold", {"slowload": (BENCH_MODELS / "slowload", manifest)})
    d = H.Corral("cold-start", repo, ws.logs)
    rows = []
    try:
        for n in cfg.cold_instances:
            times = []
            for _ in range(cfg.reps):
                t = d.load("slowload", n)
                ready = [i for i in d.model("slowload")["instances"] if i["state"] == "ready"]
                if len(ready) != n:
                    raise RuntimeError(f"cold start: {len(ready)} of {n} instances ready after the load answered")
                times.append(t)
                d.unload("slowload")
            rows.append({"instances": n, "seconds": statistics.median(times), "all": times,
                         "sequential_s": n * cfg.load_delay_s})
            print(f"  cold start, {n} instances: {rows[-1]['seconds']:.3f} s (sequential {n * cfg.load_delay_s:g} s)",
                  flush=True)
    finally:
        d.stop()
    return {"load_delay_s": cfg.load_delay_s, "rows": rows}


# ---- 6. memory reclaim ----

def memory(cfg: Config, ws: Workspace) -> dict:
    manifest = (f"# bench/models/alloc: load allocates and touches parameters.mib MiB.\n"
                f"runtime: python\nentrypoint: worker.py\npython: {PYTHON}\nkeep_alive: -1\n"
                f"parameters: {{mib: {cfg.alloc_mib}}}\n")
    repo = ws.repo("memory", {"alloc": (BENCH_MODELS / "alloc", manifest)})
    d = H.Corral("memory", repo, ws.logs)
    reps = []
    settle = 1.0
    try:
        # One cycle unmeasured: first-time costs (files read into the page
        # cache, the daemon's own buffers) are not the model's memory.
        d.load("alloc")
        d.unload("alloc")
        for _ in range(cfg.reps):
            time.sleep(settle)
            before, tree_before = H.host_memory(), H.tree_rss(H.descendants(d.pid))
            d.load("alloc")
            time.sleep(settle)
            loaded, tree_loaded = H.host_memory(), H.tree_rss(H.descendants(d.pid))
            reported = sum(i.get("rss_bytes") or 0 for i in d.model("alloc")["instances"])
            d.unload("alloc")
            time.sleep(settle)
            unloaded, tree_after = H.host_memory(), H.tree_rss(H.descendants(d.pid))
            rep = {"instance_rss_reported": reported}
            readings = {f"host_{k}": (before[k], loaded[k], unloaded[k]) for k in before if k != "pcp_free"}
            readings["tree"] = (tree_before, tree_loaded, tree_after)
            readings["host_pcp_free"] = (before["pcp_free"], loaded["pcp_free"], unloaded["pcp_free"])
            for key, (b, ld, u) in readings.items():
                rep[key] = {"before": b, "loaded": ld, "unloaded": u,
                            "returned_fraction": (ld - u) / (ld - b) if ld - b > 0 else None}
            reps.append(rep)
            print(f"  memory: host +{(loaded['used'] - before['used']) / 2**20:.0f} MiB on load; returned on unload: "
                  f"{(rep['host_used']['returned_fraction'] or 0) * 100:.1f}% of MemTotal-MemAvailable, "
                  f"{(rep['host_used_less_pcp']['returned_fraction'] or 0) * 100:.1f}% less the per-CPU free lists, "
                  f"{(rep['host_anon']['returned_fraction'] or 0) * 100:.1f}% of AnonPages, "
                  f"{(rep['tree']['returned_fraction'] or 0) * 100:.2f}% of corral's tree", flush=True)
    finally:
        d.stop()
    return {"alloc_mib": cfg.alloc_mib, "settle_s": settle, "reps": reps}


# ---- 7. recovery ----

def recovery(cfg: Config, ws: Workspace) -> dict:
    policy = restart_policy(cfg.restart_window_ms)
    repo = ws.repo("recovery", {"echo": (EXAMPLES / "echo", echo_py_manifest(1, policy)),
                                "echo-c": (EXAMPLES / "echo-c", echo_c_manifest(1, policy))})
    body = json_request(cfg.elements)
    d = H.Corral("recovery", repo, ws.logs)
    out = {}
    try:
        for key, model in (("python", "echo"), ("c", "echo-c")):
            loads = []
            for _ in range(max(cfg.reps, 3)):
                loads.append(d.load(model))
                d.unload(model)
            d.load(model)
            check_echo(d.port, f"/v2/models/{model}/infer", body, cfg.elements)
            times, refused = [], {}
            for _ in range(cfg.kills):
                time.sleep(cfg.restart_window_ms / 1000 + 0.2)  # healthy for longer than the window
                inst = d.model(model)["instances"][0]
                old = inst["pid"]
                os.kill(old, signal.SIGKILL)
                t0 = time.perf_counter()
                while True:
                    try:
                        status, _, _ = H.http_request(d.port, "POST", f"/v2/models/{model}/infer", body,
                                                      {"Content-Type": "application/json"}, timeout=30)
                    except OSError:
                        status = 0
                    if status == 200:
                        break
                    refused[str(status)] = refused.get(str(status), 0) + 1
                    if time.perf_counter() - t0 > 30:
                        raise RuntimeError(f"recovery: {model} did not serve within 30 s of kill -9")
                times.append(time.perf_counter() - t0)
                new = d.model(model)["instances"][0]["pid"]
                if new == old:
                    raise RuntimeError(f"recovery: {model} still reports pid {old} after kill -9")
            times.sort()
            out[key] = {"model": model, "kills": len(times), "p50_s": statistics.median(times),
                        "p99_s": times[min(len(times) - 1, round(0.99 * (len(times) - 1)))],
                        "max_s": times[-1], "min_s": times[0], "refused": refused,
                        "load_s": statistics.median(loads), "loads": loads}
            print(f"  recovery {model}: p50 {out[key]['p50_s'] * 1e3:.1f} ms  p99 {out[key]['p99_s'] * 1e3:.1f} ms"
                  f"  (load alone {out[key]['load_s'] * 1e3:.1f} ms)", flush=True)
            d.unload(model)
    finally:
        d.stop()
    return {"restart_window_ms": cfg.restart_window_ms, "models": out}


# ---- 8. idle cost ----

def sample_idle(root_pid: int, seconds: float, leader_only_pid: Optional[int] = None) -> dict:
    pids = H.descendants(root_pid)
    leader = leader_only_pid or root_pid
    cpu_leader0, cpu_tree0 = H.proc_cpu_s(leader), H.tree_cpu_s(pids)
    t0 = time.perf_counter()
    time.sleep(seconds)
    wall = time.perf_counter() - t0
    pids = [p for p in pids if os.path.exists(f"/proc/{p}")]
    return {"seconds": wall,
            "leader_rss": H.proc_rss(leader), "tree_rss": H.tree_rss(pids), "processes": len(pids),
            "leader_cpu_pct": (H.proc_cpu_s(leader) - cpu_leader0) / wall * 100,
            "tree_cpu_pct": (H.tree_cpu_s(pids) - cpu_tree0) / wall * 100}


def idle(cfg: Config, ws: Workspace) -> dict:
    tts = EXAMPLES / "tts-espeak"
    models = {"echo": (EXAMPLES / "echo", echo_py_manifest(2)),
              "echo-c": (EXAMPLES / "echo-c", echo_c_manifest(1)),
              "tts-espeak": (tts, (tts / "model.yaml").read_text() + "keep_alive: -1\n")}
    repo = ws.repo("idle", models)
    body = json_request(cfg.elements)
    rows = {}
    d = H.Corral("idle", repo, ws.logs)
    try:
        for name in models:
            d.load(name)
        time.sleep(1.0)
        rows["corral"] = {"label": "corral daemon, 3 models loaded (4 workers)", **sample_idle(d.pid, cfg.idle_s)}
    finally:
        d.stop()
    for make in (start_gunicorn, start_uwsgi, start_uvicorn):
        server = make(ws)
        try:
            wait_ready(server, body, cfg.elements)
            time.sleep(1.0)
            rows[server.key] = {"label": server.label + ", 1 app", **sample_idle(server.root_pid, cfg.idle_s)}
        finally:
            server.stopper()
    for key, r in rows.items():
        print(f"  idle {key}: supervisor {r['leader_rss'] / 2**20:.1f} MiB, {r['leader_cpu_pct']:.3f}% CPU; "
              f"tree {r['tree_rss'] / 2**20:.1f} MiB, {r['tree_cpu_pct']:.3f}% CPU", flush=True)
    return {"rows": rows}


# ---- 9. streaming ----

# 60 words: long enough that speaking all of it takes espeak a noticeable time.
TTS_TEXT = ("Streaming speech lets a listener hear the first words of an answer while the rest is still being "
            "made. This paragraph has sixty words, so that the synthesizer needs a noticeable time to speak all of "
            "it, and the difference between hearing the start at once and waiting for the whole file becomes easy "
            "to measure on any ordinary machine.")
WAV_HEADER_BYTES = 44
STREAM_PATH = "/v1/models/{}/generate"


def build_c_tool(name: str, sources: List[str]) -> pathlib.Path:
    """Builds bench/NAME.c (with sources from src/) into build/bench/NAME, as worker_rtt is built."""
    out = ROOT / "build" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    exe = out / name
    argv = ["cc", "-O2", "-g", "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror", "-iquote", "src",
            f"bench/{name}.c", *sources, "-o", str(exe.relative_to(ROOT))]
    H.record(f"build {name}", argv)
    subprocess.run(argv, cwd=ROOT, check=True)
    return exe


def generate_frame_body(request: bytes) -> bytes:
    """The GENERATE body corral sends for a streamed JSON request (see src/generate.c)."""
    meta = b'{"id":"","content_type":"application/json","stream":true}'
    return struct.pack("<I", len(meta)) + meta + request


def chunks_request(n: int) -> bytes:
    """echo-c's streamed generate request for n events {"i": 0} .. {"i": n-1}."""
    return json.dumps({"chunks": [{"i": i} for i in range(n)], "stream": True}, separators=(",", ":")).encode()


def sse_bytes(n: int) -> int:
    """Bytes of the event stream corral makes of chunks_request(n): `data: {"i":k}\\n\\n` each."""
    return sum(len(f'data: {{"i":{i}}}\n\n') for i in range(n))


class BareWorker:
    """A model's worker started without the daemon, its protocol and health sockets held here.

    Started as corral starts it (docs/worker-protocol.md "The channel"): fds 3 and 4, the
    environment, 4 MiB send buffers on the protocol socket. The harness that drives it sends
    LOAD and, at the end, SHUTDOWN; stop() closes the sockets, waits for the exit, then makes
    sure of it."""

    def __init__(self, ws: Workspace, label: str, model: str, mdir: pathlib.Path, argv: List[str]) -> None:
        self.model, self.mdir = model, mdir
        self.ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.health, health_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for s in (self.ours, theirs):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)  # PROTO_SOCKET_BUFFER, as src/inst.c
        fds = {3: theirs.fileno(), 4: health_theirs.fileno()}

        def on_fds(fds=fds):
            moved = {target: os.dup(fd) for target, fd in fds.items()}
            for target, fd in moved.items():
                os.dup2(fd, target, inheritable=True)

        env = {"CORRAL_FD": "3", "CORRAL_HEALTH_FD": "4", "CORRAL_PROTOCOL": "1", "CORRAL_MODEL": model,
               "CORRAL_INSTANCE": "0", "CORRAL_MODEL_DIR": str(mdir)}
        self.log = ws.logs / f"bare-{model}.log"
        try:
            self.proc = H.start(label, argv, self.log, cwd=str(mdir), env=env, preexec_fn=on_fds)
        finally:
            theirs.close()
            health_theirs.close()

    def load_json(self) -> str:
        return json.dumps({"model": self.model, "model_dir": str(self.mdir), "instance_id": 0, "device": "cpu",
                           "concurrency": 1, "stream_window": 1 << 20, "parameters": {}})

    def run(self, label: str, exe: pathlib.Path, args: List[str]) -> dict:
        """Runs the C harness exe MODE FD HEALTH_FD LOAD_JSON args...; its JSON output."""
        fds = (self.ours.fileno(), self.health.fileno())
        H.record(label, [str(exe.relative_to(ROOT)), args[0], "FD", "HEALTH_FD", "LOAD_JSON", *args[1:]])
        r = subprocess.run([str(exe), args[0], str(fds[0]), str(fds[1]), self.load_json(), *args[1:]],
                           pass_fds=fds, capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise RuntimeError(f"{exe.name} {args[0]} ({self.model}): {r.stderr.strip()}\n"
                               f"{self.log.read_text(errors='replace')[-2000:]}")
        return json.loads(r.stdout)

    def stop(self) -> None:
        # End-of-file tells a worker the harness left without SHUTDOWN, as it does when the daemon goes.
        self.ours.close()
        self.health.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        H.stop(self.proc, timeout=5)


def start_tts_peer(ws: Workspace) -> Tuple[int, subprocess.Popen]:
    port = H.free_port()
    argv = [PYTHON, str(PEERS_DIR / "tts_whole.py"), str(port)]
    p = H.start("whole-file TTS peer (http.server, espeak-ng --stdout per request)", argv, ws.logs / "tts-peer.log")
    try:
        H.wait_for(lambda: H.port_answers(port), 15, "the TTS peer to listen")
    except Exception:
        H.stop(p)
        raise
    return port, p


def timed_read(port: int, path: str, body: bytes) -> dict:
    """One POST on a fresh connection, the answer read as it arrives: seconds from sending
    to the first body byte, to the first byte past the WAV header, and to the last; and the body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        t0 = time.perf_counter()
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        if r.status != 200:
            raise RuntimeError(f"POST {path} on port {port} answered {r.status}: {r.read()[:300]!r}")
        parts: List[bytes] = []
        got, first, first_audio = 0, None, None
        while True:
            piece = r.read1(1 << 16)
            if not piece:
                break
            t = time.perf_counter() - t0
            first = first if first is not None else t
            got += len(piece)
            if first_audio is None and got > WAV_HEADER_BYTES:
                first_audio = t
            parts.append(piece)
        end = time.perf_counter() - t0
        return {"first_byte_s": first, "first_audio_s": first_audio, "end_s": end, "body": b"".join(parts),
                "chunked": (r.getheader("Transfer-Encoding") or "").lower() == "chunked"}
    finally:
        conn.close()


def wav_seconds(wav: bytes, what: str) -> float:
    if len(wav) <= WAV_HEADER_BYTES or wav[:4] != b"RIFF" or wav[8:12] != b"WAVE" or wav[36:40] != b"data":
        raise RuntimeError(f"{what}: not a 16-bit PCM WAV with a 44-byte header: {wav[:48]!r}")
    rate = struct.unpack("<I", wav[24:28])[0]
    return (len(wav) - WAV_HEADER_BYTES) / 2 / rate


def tts_compare(cfg: Config, port: int, peer_port: int) -> dict:
    """Time to first audio: the 60-word text through corral streamed and whole, through the
    whole-file peer, and spoken by espeak-ng's command line alone; in rounds, one warm-up first."""
    path = STREAM_PATH.format("tts-espeak")
    streamed = json.dumps({"text": TTS_TEXT, "stream": True}).encode()
    whole = json.dumps({"text": TTS_TEXT}).encode()
    peer_body = json.dumps({"text": TTS_TEXT, "voice": "en", "rate": 175}).encode()
    cli = ["espeak-ng", "--stdout", "-v", "en", "-s", "175", "--stdin"]
    H.record("espeak-ng alone (the text on stdin, the WAV to a pipe)", cli)
    runs: Dict[str, List[dict]] = {"stream": [], "whole": [], "peer": [], "cli": []}
    for i in range(cfg.tts_runs + 1):
        s = timed_read(port, path, streamed)
        w = timed_read(port, path, whole)
        p = timed_read(peer_port, "/", peer_body)
        t0 = time.perf_counter()
        c = subprocess.run(cli, input=TTS_TEXT.encode(), capture_output=True, check=True, timeout=60)
        cli_s = time.perf_counter() - t0
        if i == 0:  # the warm-up round's answers are checked, its times dropped
            if not s["chunked"] or w["chunked"]:
                raise RuntimeError("tts-espeak: the streamed answer was not chunked, or the whole one was")
            lengths = {"corral streamed": wav_seconds(s["body"], "corral, streamed"),
                       "corral whole": wav_seconds(w["body"], "corral, whole"),
                       "peer": wav_seconds(p["body"], "the TTS peer"),
                       "espeak-ng": wav_seconds(c.stdout, "espeak-ng --stdout")}
            # espeak in one long-lived process does not speak the same text to the sample each time
            # (the command line, started afresh, does): the lengths agree to well within 5%.
            if max(lengths.values()) > 1.05 * min(lengths.values()):
                raise RuntimeError(f"tts: the WAVs differ in length by more than 5%: {lengths}")
            continue
        for key, r in (("stream", s), ("whole", w), ("peer", p)):
            runs[key].append({k: v for k, v in r.items() if k not in ("body", "chunked")})
        runs["cli"].append({"end_s": cli_s})

    paths = {key: {field: statistics.median(r[field] for r in rs) for field in rs[0]} for key, rs in runs.items()}
    out = {"words": len(TTS_TEXT.split()), "runs": cfg.tts_runs, "audio_s": lengths["corral whole"],
           "audio_s_all": lengths, "paths": paths, "all": runs,
           "first_audio_over_whole": paths["stream"]["first_audio_s"] / paths["whole"]["end_s"]}
    ms = {key: {k: v * 1e3 for k, v in p.items()} for key, p in paths.items()}
    print(f"  tts, {out['words']} words ({out['audio_s']:.1f} s of audio): corral streamed first audio "
          f"{ms['stream']['first_audio_s']:.1f} ms, last byte {ms['stream']['end_s']:.1f} ms; corral whole WAV "
          f"{ms['whole']['end_s']:.1f} ms (first audio ÷ whole {out['first_audio_over_whole']:.3f}); whole-file peer "
          f"{ms['peer']['end_s']:.1f} ms; espeak-ng alone {ms['cli']['end_s']:.1f} ms", flush=True)
    return out


def stream_rate(run: dict, count_key: str) -> dict:
    """A pipe run's rates: events per second from the first chunk to the last, and over the whole request."""
    stream_s = (run["end_us"] - run["first_us"]) / 1e6
    return {**run, "chunks_s": run[count_key] / stream_s if stream_s > 0 else 0.0,
            "request_chunks_s": run[count_key] / (run["end_us"] / 1e6)}


def median_run(runs: List[dict]) -> dict:
    """The run with the median streaming rate, with every run's rate kept beside it."""
    ordered = sorted(runs, key=lambda r: r["chunks_s"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["rounds_chunks_s"] = [r["chunks_s"] for r in runs]
    return chosen


def median_rounds(rounds: List[dict]) -> dict:
    """Each latency figure's median over the rounds, with every round's p50 kept beside it."""
    keys = [k for k in rounds[0] if k.endswith("_us")]
    out = {k: statistics.median(r[k] for r in rounds) for k in keys}
    out["rounds_p50_us"] = [r["p50_us"] for r in rounds]
    return out


def run_tool(label: str, exe: pathlib.Path, args: List[str]) -> dict:
    """Runs a C tool of the bench (its port shown as PORT); its JSON output."""
    shown = ["PORT" if i == 1 else a for i, a in enumerate(args)]
    H.record(label, [str(exe.relative_to(ROOT)), *shown])
    r = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"{exe.name} {args[0]}: {r.stderr.strip()}")
    return json.loads(r.stdout)


def bare_run(ws: Workspace, mdir: pathlib.Path, exe: pathlib.Path, args: List[str]) -> dict:
    """Starts echo-c alone, runs the C harness exe on its sockets, stops it; the harness's JSON output."""
    w = BareWorker(ws, "echo-c alone (a fresh worker for each stream_rtt run)", "echo-c", mdir, ["./echo-c"])
    try:
        return w.run(f"{exe.name} {args[0]} (echo-c alone)", exe, args)
    finally:
        w.stop()


def streaming(cfg: Config, ws: Workspace) -> dict:
    """Issue #10's streaming figures: time to first audio against the whole WAV (tts-espeak, and a
    whole-file peer), the time corral adds to a first chunk, and chunks/s through one stream, each
    against the same model's worker driven directly over its sockets."""
    stream_rtt = build_c_tool("stream_rtt", ["src/proto.c"])
    sse_reader = build_c_tool("sse_reader", [])
    tts = EXAMPLES / "tts-espeak"
    for exe in (EXAMPLES / "echo-c" / "echo-c", tts / "tts-espeak"):
        if not exe.exists():
            raise RuntimeError(f"{exe.relative_to(ROOT)} is missing; run `make build` first")
    repo = ws.repo("streaming", {"echo-c": (EXAMPLES / "echo-c", echo_c_manifest(1)),
                                 "tts-espeak": (tts, (tts / "model.yaml").read_text() + "keep_alive: -1\n")})
    n = cfg.stream_requests
    first_req = ws.path / "stream-first.json"
    first_req.write_bytes(json.dumps({"chunks": [{"i": 0}], "stream": True}, separators=(",", ":")).encode())
    many_req = ws.path / "stream-many.json"
    many_req.write_bytes(chunks_request(cfg.stream_chunks))
    first_frame, many_frame = ws.path / "stream-first.bin", ws.path / "stream-many.bin"
    first_frame.write_bytes(generate_frame_body(first_req.read_bytes()))
    many_frame.write_bytes(generate_frame_body(many_req.read_bytes()))
    path = STREAM_PATH.format("echo-c")
    out: Dict[str, dict] = {}
    corral_first: List[dict] = []
    bare_first: List[dict] = []
    corral_pipe: List[dict] = []
    bare_pipe: List[dict] = []

    d = H.Corral("streaming", repo, ws.logs)
    peer = None
    try:
        d.load("tts-espeak")
        d.load("echo-c")
        peer_port, peer = start_tts_peer(ws)
        out["tts"] = tts_compare(cfg, d.port, peer_port)
        H.stop(peer)
        peer = None

        # The stream is checked byte for byte before it is timed.
        status, _, body = H.http_request(d.port, "POST", path, chunks_request(3), {"Content-Type": "application/json"})
        if status != 200 or body != b'data: {"i":0}\n\ndata: {"i":1}\n\ndata: {"i":2}\n\n':
            raise RuntimeError(f"echo-c: the stream of 3 events came back as {status} {body[:300]!r}")

        # In rounds, both paths in turn (a shared machine's speed drifts); each figure is the median round's.
        per_round = max(n // cfg.stream_rounds, 100)
        warm = max(per_round // 10, 50)
        mdir = repo / "echo-c"
        for rnd in range(cfg.stream_rounds):
            corral_first.append(run_tool("sse_reader first (through corral)", sse_reader,
                                         ["first", str(d.port), path, str(first_req), str(per_round), str(warm)]))
            bare_first.append(bare_run(ws, mdir, stream_rtt,
                                       ["first", str(first_frame), str(per_round), str(warm)]))

            pids = H.descendants(d.pid)
            cpu0, lead0, reads0 = H.tree_cpu_s(pids), H.proc_cpu_s(d.pid), H.proc_read_calls(d.pid)
            # Two streams each time, the first unmeasured: the fresh bare worker warms up as corral's has.
            runs = run_tool("sse_reader pipe (through corral)", sse_reader,
                            ["pipe", str(d.port), path, str(many_req), "2"])["runs"]
            for run in runs:
                if run["events"] != cfg.stream_chunks or run["bytes"] != sse_bytes(cfg.stream_chunks):
                    raise RuntimeError(f"echo-c through corral: {run['events']} events, {run['bytes']} bytes, for "
                                       f"{cfg.stream_chunks} events of {sse_bytes(cfg.stream_chunks)} bytes")
            run = runs[-1]
            # CPU and read calls over both streams, per stream.
            run["daemon_cpu_s"] = (H.proc_cpu_s(d.pid) - lead0) / len(runs)
            run["workers_cpu_s"] = (H.tree_cpu_s(pids) - cpu0) / len(runs) - run["daemon_cpu_s"]
            run["daemon_reads"] = (H.proc_read_calls(d.pid) - reads0) / len(runs)
            corral_pipe.append(stream_rate(run, "events"))
            # A fresh worker, the same chunks, credited as they are read (in quarter-window batches).
            runs = bare_run(ws, mdir, stream_rtt, ["pipe", str(many_frame), "2"])["runs"]
            for run in runs:
                if run["chunks"] != cfg.stream_chunks:
                    raise RuntimeError(f"echo-c alone: {run['chunks']} chunks for {cfg.stream_chunks}")
            bare_pipe.append(stream_rate(runs[-1], "chunks"))
            print(f"  round {rnd + 1}/{cfg.stream_rounds}: first chunk p50 through corral "
                  f"{corral_first[-1]['p50_us']:.1f} µs, echo-c alone {bare_first[-1]['p50_us']:.1f} µs; "
                  f"{cfg.stream_chunks} events through corral {corral_pipe[-1]['chunks_s']:,.0f}/s, bare pipe "
                  f"{bare_pipe[-1]['chunks_s']:,.0f}/s", flush=True)
    finally:
        if peer is not None:
            H.stop(peer)
        d.stop()

    fc = {"requests": per_round * cfg.stream_rounds, "rounds": cfg.stream_rounds,
          "corral": median_rounds(corral_first), "worker": median_rounds(bare_first)}
    fc["added_p50_us"] = fc["corral"]["p50_us"] - fc["worker"]["p50_us"]
    fc["added_p90_us"] = fc["corral"]["p90_us"] - fc["worker"]["p90_us"]
    out["first_chunk"] = fc
    print(f"  first chunk: corral p50 {fc['corral']['p50_us']:.1f} µs p90 {fc['corral']['p90_us']:.1f} µs; "
          f"echo-c alone p50 {fc['worker']['p50_us']:.1f} µs p90 {fc['worker']['p90_us']:.1f} µs; added p50 "
          f"{fc['added_p50_us']:.1f} µs", flush=True)
    c, b = median_run(corral_pipe), median_run(bare_pipe)
    out["pipe"] = {"chunks": cfg.stream_chunks, "request_bytes": len(many_req.read_bytes()),
                   "sse_bytes": sse_bytes(cfg.stream_chunks), "rounds": cfg.stream_rounds,
                   "corral": c, "bare": b, "bare_over_corral": b["chunks_s"] / c["chunks_s"] if c["chunks_s"] else None}
    print(f"  {cfg.stream_chunks} events: corral {c['chunks_s']:,.0f}/s, bare pipe {b['chunks_s']:,.0f}/s "
          f"(bare ÷ corral {out['pipe']['bare_over_corral']:.2f}); the client's CPU "
          f"{c['cpu_s'] * 1e6 / c['end_us'] * 100:.0f}% of the request's time", flush=True)
    return out


# ---- 10. GET /metrics ----

# What one echo-c instance (the worker and its guard) holds, with room to spare; measured at
# about 2 MiB of the host's memory each. The section refuses to start more than the host can hold.
METRICS_INSTANCE_BYTES = 4 << 20
# Descriptors the daemon holds per instance (sockets, pipes, memfds: about 6), with room to spare.
METRICS_INSTANCE_FDS = 8


def metrics_repo(ws: Workspace, models: int, instances: int) -> Tuple[pathlib.Path, List[str]]:
    """A repository of `models` copies of echo-c, each with `instances` instances loaded at start.

    Each model directory gets its own copy of the binary: an entrypoint is a path inside the
    model's directory, and separate models are separate files in any real repository."""
    exe = EXAMPLES / "echo-c" / "echo-c"
    if not exe.exists():
        raise RuntimeError(f"{exe.relative_to(ROOT)} is missing; run `make build` first")
    manifest = (f"# examples/models/echo-c (C SDK), {models} copies, all loaded at start.\n"
                f"runtime: exec\nentrypoint: echo-c\ninstances: {instances}\nload: eager\nkeep_alive: -1\n")
    repo = ws.path / "metrics" / "models"
    repo.mkdir(parents=True)
    names = [f"echo-c-{i:03d}" for i in range(models)]
    for name in names:
        (repo / name).mkdir()
        shutil.copy2(exe, repo / name / "echo-c")
        (repo / name / "model.yaml").write_text(manifest)
    ws.manifests[f"{names[0]} … {names[-1]} (each)"] = manifest
    return repo, names


def wait_all_ready(d: H.Corral, models: int, instances: int, timeout: float) -> None:
    def ready():
        status, _, body = H.http_request(d.port, "GET", "/v1/models")
        if status != 200:
            raise RuntimeError(f"/v1/models answered {status}: {body[:300]!r}")
        listed = json.loads(body)["models"]
        bad = [m["name"] for m in listed if m["state"] == "failed"]
        if bad:
            raise RuntimeError(f"metrics: {len(bad)} models failed to load, {bad[0]} first: "
                               f"{next(m['reason'] for m in listed if m['state'] == 'failed')}")
        up = sum(1 for m in listed for i in m["instances"] if i["state"] == "ready")
        return len(listed) == models and up == models * instances
    H.wait_for(ready, timeout, f"{models * instances} instances to be ready", interval=0.5)


def metrics_traffic(port: int, names: List[str], requests: int, elements: int) -> int:
    """`requests` inferences and one streamed generate per model, over one keep-alive connection,
    so that every histogram (time to first chunk included) has samples. Returns the requests sent."""
    body = json_request(elements)
    stream = chunks_request(3)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    sent = 0
    try:
        for name in names:
            for path, data in [(f"/v2/models/{name}/infer", body)] * requests + [(STREAM_PATH.format(name), stream)]:
                conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                answer = r.read()
                if r.status != 200:
                    raise RuntimeError(f"POST {path} answered {r.status}: {answer[:300]!r}")
                sent += 1
    finally:
        conn.close()
    return sent


def idle_cpu_rate(pid: int, seconds: float) -> float:
    """The daemon's CPU seconds per second while nothing is asked of it (its timers)."""
    c0, t0 = H.proc_cpu_s(pid), time.perf_counter()
    time.sleep(seconds)
    return (H.proc_cpu_s(pid) - c0) / (time.perf_counter() - t0)


def exposition_check(text: str, names: List[str], instances: int, requests: int) -> dict:
    """Counts the exposition's families and samples, and checks that it describes the whole
    registry: every instance ready and with a resident memory figure, every request counted."""
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    families = sum(1 for line in text.splitlines() if line.startswith("# TYPE "))

    def values(prefix: str) -> List[float]:
        return [float(line.rsplit(" ", 1)[1]) for line in samples if line.startswith(prefix)]

    ready = sum(float(s.rsplit(" ", 1)[1]) for s in samples
                if s.startswith("corral_instances{") and 'state="ready"' in s)
    rss = values("corral_instance_resident_memory_bytes{")
    success = sum(values("nv_inference_request_success{"))
    ttfc = values("corral_time_to_first_chunk_seconds_count{")
    want = len(names) * instances
    problems = []
    if ready != want:
        problems.append(f"{ready:g} instances ready for {want}")
    if len(rss) != want or min(rss or [0]) <= 0:
        problems.append(f"{len(rss)} resident-memory samples for {want} instances, the smallest {min(rss or [0]):g}")
    if success != len(names) * (requests + 1):
        problems.append(f"{success:g} successful requests counted for {len(names) * (requests + 1)} sent")
    if len(ttfc) != len(names) or min(ttfc or [0]) < 1:
        problems.append("a model without a first-chunk sample")
    if problems:
        raise RuntimeError("metrics: the exposition does not describe the registry: " + "; ".join(problems))
    return {"families": families, "samples": len(samples), "instances_ready": ready, "rss_samples": len(rss),
            "requests_counted": success}


def promtool_check(body_file: pathlib.Path) -> Optional[dict]:
    """`promtool check metrics` on the exposition: a parse error exits 1, lint findings alone 3
    (one line each on stderr, naming the family). None without promtool."""
    if not shutil.which("promtool"):
        return None
    argv = ["promtool", "check", "metrics"]
    H.record("promtool check metrics (the last scrape's body on stdin)", argv)
    with open(body_file, "rb") as f:
        r = subprocess.run(argv, stdin=f, capture_output=True, text=True, timeout=120)
    lines = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()]
    parse_errors = [line for line in lines if "error" in line.lower() and "parsing" in line.lower()]
    findings = [line for line in lines if line not in parse_errors]
    v = subprocess.run(["promtool", "--version"], capture_output=True, text=True, timeout=30)
    m = re.search(r"version (\S+)", v.stdout + v.stderr)
    version = m.group(1) if m else "?"
    return {"version": version, "rc": r.returncode, "ok": r.returncode in (0, 3) and not parse_errors,
            "parse_errors": parse_errors, "findings": len(findings),
            "findings_nv": sum(1 for line in findings if line.startswith("nv_")),
            "findings_other": [line for line in findings if not line.startswith("nv_")]}


def metrics(cfg: Config, ws: Workspace) -> dict:
    """Issue #11: GET /metrics over a large registry (models × instances echo-c workers, every
    histogram with samples), scraped over one keep-alive connection: wall time per scrape, the
    daemon's CPU per scrape (its idle CPU taken out), the exposition's size, and promtool's verdict."""
    scrape = build_c_tool("metrics_scrape", [])
    models, instances = cfg.metrics_models, cfg.metrics_instances
    total = models * instances
    avail = H.meminfo()["MemAvailable"]
    if total * METRICS_INSTANCE_BYTES + (512 << 20) > avail:
        need_mib = total * METRICS_INSTANCE_BYTES >> 20
        raise RuntimeError(f"metrics: {total} instances need about {need_mib:,} MiB and {avail >> 20:,} MiB are "
                           f"available; lower BENCH_METRICS_MODELS or BENCH_METRICS_INSTANCES")
    fd_need = total * METRICS_INSTANCE_FDS + 1024
    fd_limit = H.raise_fd_limit(fd_need)
    if fd_limit != resource.RLIM_INFINITY and fd_limit < fd_need:
        raise RuntimeError(f"metrics: {total} instances need about {fd_need} open files and the limit is {fd_limit}")
    repo, names = metrics_repo(ws, models, instances)
    body_file = ws.path / "metrics-body.txt"
    mem0 = H.host_used()
    out: Dict[str, object] = {"models": models, "instances": instances, "workers": total,
                              "requests_per_model": cfg.metrics_requests, "scrapes": cfg.metrics_scrapes}
    procs: List[Tuple[int, int]] = []
    t0 = time.perf_counter()
    d = H.Corral("metrics", repo, ws.logs)
    try:
        wait_all_ready(d, models, instances, max(60.0, total * 0.1))
        out["startup_s"] = time.perf_counter() - t0
        pids = H.descendants(d.pid)
        procs = [ident for ident in map(H.proc_identity, pids) if ident]
        out["processes"] = len(pids)
        out["tree_rss"] = H.tree_rss(pids)
        out["daemon_rss"] = H.proc_rss(d.pid)
        out["host_used_delta"] = H.host_used() - mem0
        out["daemon_fds"] = len(os.listdir(f"/proc/{d.pid}/fd"))
        print(f"  {models} models × {instances} instances ready in {out['startup_s']:.1f} s: {len(pids)} processes, "
              f"host memory +{out['host_used_delta'] / 2**20:,.0f} MiB", flush=True)

        t = time.perf_counter()
        out["requests_sent"] = metrics_traffic(d.port, names, cfg.metrics_requests, cfg.elements)
        out["traffic_s"] = time.perf_counter() - t
        time.sleep(1.5)  # a memory tick after the traffic, so every instance's figure is fresh

        warm = max(cfg.metrics_scrapes // 10, 3)
        idle_before = idle_cpu_rate(d.pid, cfg.metrics_idle_s)
        H.record("metrics_scrape (GET /metrics over one keep-alive connection)",
                 [str(scrape.relative_to(ROOT)), "scrape", "PORT", "/metrics", str(cfg.metrics_scrapes), str(warm),
                  str(body_file)])
        c0, w0 = H.proc_cpu_s(d.pid), time.perf_counter()
        r = subprocess.run([str(scrape), "scrape", str(d.port), "/metrics", str(cfg.metrics_scrapes), str(warm),
                            str(body_file)], capture_output=True, text=True, timeout=600)
        daemon_cpu, wall = H.proc_cpu_s(d.pid) - c0, time.perf_counter() - w0
        if r.returncode != 0:
            raise RuntimeError(f"metrics_scrape: {r.stderr.strip()}")
        sc = json.loads(r.stdout)
        idle_after = idle_cpu_rate(d.pid, cfg.metrics_idle_s)
        idle_rate = (idle_before + idle_after) / 2
        n = sc["scrapes_total"]
        sc["daemon_cpu_s"] = daemon_cpu
        sc["run_wall_s"] = wall
        sc["daemon_cpu_us_raw"] = daemon_cpu * 1e6 / n
        sc["daemon_cpu_us"] = max(daemon_cpu - idle_rate * wall, 0.0) * 1e6 / n
        sc["client_cpu_us"] = sc["cpu_s"] * 1e6 / n
        out["scrape"] = sc
        out["idle_cpu_rate"] = {"before": idle_before, "after": idle_after, "seconds": cfg.metrics_idle_s}
        # One part of every scrape measured apart: the process_open_fds gauge lists /proc/self/fd,
        # an entry per descriptor, and the daemon holds several per instance.
        reps = max(cfg.metrics_scrapes // 2, 10)
        H.record("metrics_scrape fds (list the daemon's /proc/PID/fd, as process_open_fds does)",
                 [str(scrape.relative_to(ROOT)), "fds", "PID", str(reps)])
        r = subprocess.run([str(scrape), "fds", str(d.pid), str(reps)], capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"metrics_scrape fds: {r.stderr.strip()}")
        out["fd_listing"] = json.loads(r.stdout)
        out["exposition"] = exposition_check(body_file.read_text(), names, instances, cfg.metrics_requests)
        out["promtool"] = promtool_check(body_file)
        pt = out["promtool"]
        print(f"  {n} scrapes ({sc['bytes']:,} bytes, {sc['lines']:,} lines): p50 {sc['p50_us'] / 1e3:.2f} ms, p90 "
              f"{sc['p90_us'] / 1e3:.2f} ms, max {sc['max_us'] / 1e3:.2f} ms; daemon CPU "
              f"{sc['daemon_cpu_us'] / 1e3:.2f} ms per scrape ({sc['daemon_cpu_us_raw'] / 1e3:.2f} ms before taking out its idle "
              f"{idle_rate * 100:.2f}%); listing its {out['fd_listing']['entries']:,} descriptors alone "
              f"{out['fd_listing']['cpu_us_per_listing'] / 1e3:.2f} ms; promtool: "
              + ("not installed" if pt is None else
                 f"{'no parse error' if pt['ok'] else 'PARSE ERROR'}, {pt['findings']} lint findings "
                 f"({pt['findings_nv']} on nv_ names)"), flush=True)
    finally:
        # Whatever became of the section, every process below the daemon is known before it stops.
        procs += [ident for ident in map(H.proc_identity, H.descendants(d.pid)) if ident and ident not in procs]
        t = time.perf_counter()
        d.stop()
        # The daemon stops its workers before it exits; give any straggler a moment, then make sure.
        try:
            H.wait_for(lambda: not H.still_running(procs), 10, "corral's workers to exit", interval=0.1)
            left: List[int] = []
        except RuntimeError:
            left = H.still_running(procs)
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        out["stop_s"] = time.perf_counter() - t
    if left:
        raise RuntimeError(f"metrics: {len(left)} of corral's {len(procs)} processes outlived it (killed now)")
    print(f"  stopped with SIGTERM: all {len(procs)} processes gone in {out['stop_s']:.1f} s", flush=True)
    return out


# ---- 11. client shared memory (issue #13, item 7) ----

def shm_roundtrips(cfg: Config, port: int, model: str, mib: int) -> dict:
    """An FP32 tensor of mib MiB read by the daemon from one client region and its echo written
    into another (Triton's system shared memory extension): the request and the response carry
    only JSON. Timed by a Python client on one keep-alive connection, from the request's write to
    the response's last byte, when the output is in the client's region; seconds per round trip.
    The first round trip (mapping the regions' pages in) is checked byte for byte, not timed."""
    nbytes = mib << 20
    count = nbytes // 4
    src = shared_memory.SharedMemory(create=True, size=nbytes)
    dst = shared_memory.SharedMemory(create=True, size=nbytes)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        view = np.ndarray(count, dtype=np.float32, buffer=src.buf)
        view[:] = np.arange(count, dtype=np.float32)
        del view  # a live view would keep the buffer exported past close()
        for name, shm in (("bench-in", src), ("bench-out", dst)):
            status, _, body = H.http_request(port, "POST", f"/v2/systemsharedmemory/region/{name}/register",
                                             json.dumps({"key": "/" + shm.name, "offset": 0,
                                                         "byte_size": nbytes}).encode(),
                                             {"Content-Type": "application/json"})
            if status != 200:
                raise RuntimeError(f"clientshm: registering {name} answered {status}: {body[:300]!r}")
        req = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [count],
                                      "parameters": {"shared_memory_region": "bench-in",
                                                     "shared_memory_byte_size": nbytes}}],
                          "outputs": [{"name": "OUTPUT0",
                                       "parameters": {"shared_memory_region": "bench-out",
                                                      "shared_memory_byte_size": nbytes}}]}).encode()
        H.record(f"client shared memory ({mib} MiB, {model})",
                 ["POST", f"/v2/models/{model}/infer", req.decode()])
        times = []
        for i in range(cfg.shm_reps + 1):
            dst.buf[:8] = b"\xff" * 8
            t0 = time.perf_counter()
            conn.request("POST", f"/v2/models/{model}/infer", body=req,
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            body = r.read()
            elapsed = time.perf_counter() - t0
            if r.status != 200:
                raise RuntimeError(f"clientshm: {model}, {mib} MiB answered {r.status}: {body[:300]!r}")
            if i == 0:
                if bytes(dst.buf) != bytes(src.buf):
                    raise RuntimeError(f"clientshm: {model}: the {mib} MiB tensor did not come back unchanged")
            else:
                times.append(elapsed)
        for name in ("bench-in", "bench-out"):
            H.http_request(port, "POST", f"/v2/systemsharedmemory/region/{name}/unregister", b"{}",
                           {"Content-Type": "application/json"})
    finally:
        conn.close()
        for shm in (src, dst):
            shm.close()
            shm.unlink()
    med = statistics.median(times)
    return {"mib": mib, "bytes": nbytes, "reps": len(times), "seconds_median": med, "seconds_min": min(times),
            "mb_s": nbytes / med / 1e6, "response_bytes": len(body)}


def memcpy_floor(cfg: Config, mib: int) -> dict:
    """One copy of mib MiB between two buffers whose pages are in (numpy's copy is memcpy), the
    fastest of several: the machine's bound for each copy a round trip makes."""
    a = np.ones(mib << 18, dtype=np.float32)
    b = np.zeros_like(a)
    np.copyto(b, a)
    times = []
    for _ in range(max(cfg.shm_reps, 10)):
        t0 = time.perf_counter()
        np.copyto(b, a)
        times.append(time.perf_counter() - t0)
    return {"mib": mib, "seconds_median": statistics.median(times), "seconds_min": min(times),
            "mb_s": (mib << 20) / min(times) / 1e6}


def clientshm(cfg: Config, ws: Workspace) -> dict:
    """Issue #13, item 7: the same tensor echo through client shared memory and through the HTTP
    binary path, from one daemon (--allow-client-shm) in the same run, for the Python and C echoes
    (2 instances each, as in the serving section); and one memcpy of the tensor, the bound."""
    models = {"echo": (EXAMPLES / "echo", echo_py_manifest(2)), "echo-c": (EXAMPLES / "echo-c", echo_c_manifest(2))}
    repo = ws.repo("clientshm", models)
    d = H.Corral("clientshm", repo, ws.logs, ["--allow-client-shm"])
    out: Dict[str, dict] = {}
    try:
        for model, label in (("echo", "corral, Python echo (2 instances)"), ("echo-c", "corral, C echo (2 instances)")):
            d.load(model)
            server = Server(model, label, "corral", d.port, f"/v2/models/{model}/infer", d.pid, lambda: None)
            entry = {"label": label, "sizes": []}
            for mib in cfg.shm_mib:
                # in turn, the nearest in time: the shared machine's drift stays out of the ratio
                http_t = tensor_roundtrips(cfg, server, mib, ws)
                shm_t = shm_roundtrips(cfg, d.port, model, mib)
                entry["sizes"].append({"mib": mib, "http": http_t, "shm": shm_t})
                print(f"  {label:40s} {mib:3d} MiB in and out: HTTP binary {http_t['mb_s']:8.0f} MB/s, "
                      f"client shared memory {shm_t['mb_s']:8.0f} MB/s", flush=True)
            out[model] = entry
    finally:
        d.stop()
    floor = [memcpy_floor(cfg, mib) for mib in cfg.shm_mib]
    for f in floor:
        print(f"  {'one memcpy of the tensor':40s} {f['mib']:3d} MiB: {f['mb_s']:8.0f} MB/s", flush=True)
    return {"models": out, "memcpy": floor}


# ---- 12. gRPC (issue #14, item 5) ----

GRPC_PROTOS = ("grpc_service", "model_config")
# The series of the request-rate comparison, every one on the same daemon and model: wrk with the
# JSON body, wrk with the binary tensor extension's body (both as the serving section's), and
# grpc_load's ModelInfer, on cfg.grpc_channels channels and on a channel per call in flight (as wrk
# opens a connection per connection count).
GRPC_PATHS = ("http-json", "http-binary", "grpc", "grpc-channels")
# Where the daemon spends a large tensor's round trip: a profile sample goes to the first of these
# functions on its stack, leaf first (src/grpc_bridge.c gathers a received message with readall,
# src/api_grpc.c unpacks it with protobuf-c and packs the answer, src/inst_shm.c places a tensor in
# the instance's input region; h2o grows its request buffer as an HTTP body arrives), or to the
# socket's receive or send when a kernel copy made it.
COPY_SITES = (("grpc_byte_buffer_reader_readall", "readall"), ("protobuf_c_message_unpack", "unpack"),
              ("inst_shm_place", "to_instance"), ("copy_pieces", "to_instance"),
              ("protobuf_c_message_pack", "pack"), ("grpc_pack_result", "pack"),
              ("h2o_buffer_reserve", "h2o_buffer"), ("tcp_recvmsg", "socket_recv"),
              ("tcp_sendmsg", "socket_send"), ("tcp_sendmsg_locked", "socket_send"))
PAGE_FAULT_FUNCTIONS = ("asm_exc_page_fault", "exc_page_fault", "do_user_addr_fault", "handle_mm_fault")
# The kernel's copies between a socket and user memory (which direction: the site, above).
KERNEL_COPY_FUNCTIONS = ("_copy_to_iter", "_copy_from_iter", "copy_user_enhanced_fast_string",
                         "copy_user_generic_unrolled", "rep_movs_alternative")


# Round trips each way per round of the large tensors (cfg.tensor_reps of them in all, each way).
TENSOR_ROUND = 2


def build_grpc_load() -> pathlib.Path:
    """bench/grpc_load.c with the build's protobuf-c messages (build/pb, which CMakeLists.txt makes from
    proto/ with protoc-c), or, when the build has none, the same made here into build/bench/pb."""
    out = ROOT / "build" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    pb = ROOT / "build" / "pb"
    if not all((pb / f"{p}.pb-c.c").exists() for p in GRPC_PROTOS):
        pb = out / "pb"
        pb.mkdir(exist_ok=True)
        argv = ["protoc-c", "-Iproto", f"--c_out={pb.relative_to(ROOT)}", *(f"proto/{p}.proto" for p in GRPC_PROTOS)]
        H.record("protoc-c (proto/'s messages, as CMakeLists.txt compiles them)", argv)
        subprocess.run(argv, cwd=ROOT, check=True)
    rel = str(pb.relative_to(ROOT))

    def pkg(flag: str) -> List[str]:
        return subprocess.run(["pkg-config", flag, "grpc", "libprotobuf-c"], check=True, capture_output=True,
                              text=True).stdout.split()

    objs = []
    for p in GRPC_PROTOS:
        obj = str((out / f"{p}.pb-c.o").relative_to(ROOT))
        # generated code: its warnings are protoc-c's, not ours (CMakeLists.txt builds it so too)
        argv = ["cc", "-O2", "-g", "-std=c11", "-w", "-I", rel, *pkg("--cflags"), "-c", f"{rel}/{p}.pb-c.c", "-o", obj]
        H.record(f"build {p}.pb-c.o", argv)
        subprocess.run(argv, cwd=ROOT, check=True)
        objs.append(obj)
    exe = out / "grpc_load"
    argv = ["cc", "-O2", "-g", "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror", "-I", rel,
            *pkg("--cflags"), "bench/grpc_load.c", *objs, "-o", str(exe.relative_to(ROOT)), *pkg("--libs"),
            "-lpthread"]
    # abseil's libraries make the link line long: the report shows pkg-config's call instead
    H.COMMANDS.setdefault("build grpc_load", " ".join(argv[:argv.index("-o") + 2]) +
                          " $(pkg-config --libs grpc libprotobuf-c) -lpthread")
    subprocess.run(argv, cwd=ROOT, check=True)
    return exe


def binary_request(n: int) -> Tuple[bytes, int]:
    """json_request(n)'s tensor with the binary tensor extension, in and out: the body and its
    JSON head's length (the Inference-Header-Content-Length)."""
    data = np.asarray(request_values(n), dtype=np.float32).tobytes()
    head = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, n],
                                   "parameters": {"binary_data_size": len(data)}}],
                       "parameters": {"binary_data_output": True}}).encode()
    return head + data, len(head)


def check_binary_echo(port: int, path: str, body: bytes, head_len: int, n: int) -> None:
    """One binary request; fails unless the answer is the echo, binary too."""
    status, headers, resp = H.http_request(port, "POST", path, body, {
        "Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(head_len)})
    if status != 200:
        raise RuntimeError(f"POST {path} (binary) answered {status}: {resp[:300]!r}")
    hl = {k.lower(): v for k, v in headers.items()}.get("inference-header-content-length")
    if hl is None:
        raise RuntimeError(f"POST {path} (binary): the answer is not binary: {resp[:300]!r}")
    out = json.loads(resp[:int(hl)])["outputs"][0]
    if out["name"] != "OUTPUT0" or out["shape"] != [1, n] or resp[int(hl):] != body[head_len:]:
        raise RuntimeError(f"POST {path} (binary): not an echo: {resp[:300]!r}")


def grpc_rate_point(cfg: Config, exe: pathlib.Path, d: H.Corral, model: str, path: str, conns: int,
                    seconds: int, bodies: Dict[str, tuple], why: str = "") -> dict:
    """One point of the request-rate comparison: wrk (HTTP) or grpc_load (gRPC) for seconds at conns
    connections or calls in flight; with the daemon's and the model's workers' CPU per request. why,
    when not a measured point (a warm-up, a profile), names it among the recorded commands."""
    roles = corral_roles(d, model)()
    cpu0 = {role: H.tree_cpu_s(pids) for role, pids in roles.items()}
    sw0 = H.switches_snapshot({"daemon": roles["daemon"]})
    if path in bodies:
        body_file, ctype, headers = bodies[path]
        res = H.wrk(f"grpc section, {path}{why}", f"http://127.0.0.1:{d.port}/v2/models/{model}/infer", conns, seconds,
                    body_file, ctype, headers)
    else:
        channels = conns if path == "grpc-channels" else cfg.grpc_channels
        res = run_tool(f"grpc_load rate ({'a channel per call' if path == 'grpc-channels' else 'channels: BENCH_GRPC_CHANNELS'}"
                       f"{why})",
                       exe, ["rate", str(d.grpc_port), model, str(seconds), str(conns), str(channels),
                             str(min(cfg.grpc_threads, conns)), str(cfg.elements)])
    n = res["requests"] or 1
    res["daemon_switches_per_req"] = H.switches_per_request(sw0, H.switches_snapshot({"daemon": roles["daemon"]}),
                                                           res["requests"])["daemon"]["switches_per_req"]
    for role in ("daemon", "workers"):
        res[f"{role}_cpu_us_per_req"] = (H.tree_cpu_s(roles[role]) - cpu0[role]) * 1e6 / n
    if "cpu_s" in res:
        res["client_cpu_us_per_req"] = res["cpu_s"] * 1e6 / n
    res["connections"] = conns
    return res


def copy_stacks(data: pathlib.Path, pid: int) -> dict:
    """The recorded samples' periods by kind (a user-space copy, a kernel copy to or from a socket, a
    page fault, the rest) and, within each kind, by COPY_SITES' site; by thread (the loop thread, the
    daemon's other threads, gRPC's own); and the leaf functions, most first."""
    argv = ["perf", "script", "-i", str(data), "-F", "comm,tid,period,ip,sym", "--no-inline"]
    H.record("perf script (the daemon's stacks during the tensors)", argv)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"perf script failed ({r.returncode}): {r.stderr[-500:]}")
    site_of = dict(COPY_SITES)
    total, samples = 0.0, 0
    kinds: Dict[str, Dict[str, float]] = {}
    threads: Dict[str, float] = {}
    leaves: Dict[str, float] = {}
    for block in r.stdout.split("\n\n"):
        lines = [line.strip() for line in block.strip().splitlines()]
        head = lines[0].split() if lines else []
        if len(head) < 3 or not head[-1].isdigit() or not head[-2].isdigit():
            continue
        period, tid, comm = float(head[-1]), int(head[-2]), " ".join(head[:-2])
        syms = [(line.split(None, 1) + [""])[1].split(".")[0] for line in lines[1:]]
        leaf = syms[0] if syms else "?"
        if any(s in PAGE_FAULT_FUNCTIONS for s in syms):
            kind = "page_fault"
        elif leaf.startswith(("__memmove", "__memcpy", "memcpy", "memmove")):
            kind = "user_copy"
        elif leaf in KERNEL_COPY_FUNCTIONS:
            kind = "kernel_copy"
        else:
            kind = "other"
        site = next((site_of[s] for s in syms if s in site_of), "elsewhere")
        kinds.setdefault(kind, {})
        kinds[kind][site] = kinds[kind].get(site, 0.0) + period
        thread = "loop" if tid == pid else ("corral" if comm == "corral" else "grpc")
        threads[thread] = threads.get(thread, 0.0) + period
        leaves[leaf] = leaves.get(leaf, 0.0) + period
        total += period
        samples += 1
    if not total:
        return {"samples": 0}
    return {"samples": samples,
            "kinds": {k: {s: v / total for s, v in sites.items()} for k, sites in kinds.items()},
            "threads": {t: v / total for t, v in threads.items()},
            "top_leaves": [[sym, v / total] for sym, v in sorted(leaves.items(), key=lambda kv: -kv[1])[:10]]}


# The libraries a small call's daemon CPU goes to, by the leaf's object (malloc's functions apart from
# the rest of libc): the lists of the rate profile's categories.
GRPC_LIBRARIES = ("libgrpc", "libgpr", "libabsl", "libupb", "libaddress_sorting", "libcares", "libre2")
MALLOC_FUNCTIONS = ("malloc", "free", "cfree", "calloc", "realloc", "_int_malloc", "_int_free", "_int_realloc",
                    "__libc_calloc", "__libc_malloc", "__libc_free", "malloc_consolidate", "unlink_chunk",
                    "tcache_init", "__libc_realloc", "_int_free_merge_chunk", "_int_free_create_chunk",
                    "_int_free_maybe_consolidate")


def library_samples(data: pathlib.Path, pid: int) -> dict:
    """The recorded samples' periods (no stacks: the leaf only) by what ran: corral's own code, gRPC's
    core (libgrpc, libgpr, abseil, ...), protobuf-c, malloc and free, the rest of libc, h2o, libuv,
    jansson, the kernel; and by thread, as copy_stacks."""
    argv = ["perf", "script", "-i", str(data), "-F", "comm,tid,period,ip,sym,dso"]
    H.record("perf script (the daemon's samples during small calls)", argv)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"perf script failed ({r.returncode}): {r.stderr[-500:]}")
    total, samples = 0.0, 0
    libs: Dict[str, float] = {}
    threads: Dict[str, float] = {}
    leaves: Dict[str, float] = {}
    # Without stacks, one line per sample: COMM TID PERIOD IP SYM (DSO).
    sample = re.compile(r"^\s*(.*?)\s+(\d+)\s+(\d+)\s+[0-9a-f]+\s+(.*?)\s*\(([^()]*)\)$")
    for line in r.stdout.splitlines():
        m = sample.match(line)
        if not m:
            continue
        comm, tid, period, sym, dso = m.group(1), int(m.group(2)), float(m.group(3)), m.group(4), m.group(5)
        sym = sym.split("+")[0].split(".")[0] or "?"
        base = os.path.basename(dso)
        if dso == "[kernel.kallsyms]":
            lib = "kernel"
        elif base == "corral":
            lib = "corral"
        elif base.startswith(GRPC_LIBRARIES):
            lib = "grpc"
        elif base.startswith("libprotobuf-c"):
            lib = "protobuf-c"
        elif base.startswith("libc.so"):
            lib = "malloc" if sym in MALLOC_FUNCTIONS else "libc"
        elif base.startswith(("libh2o", "libuv", "libjansson")):
            lib = base[3:].split(".")[0].split("-")[0]
        else:
            lib = "other"
        libs[lib] = libs.get(lib, 0.0) + period
        thread = "loop" if tid == pid else ("corral" if comm == "corral" else "grpc")
        threads[thread] = threads.get(thread, 0.0) + period
        leaves[f"{sym} ({base})"] = leaves.get(f"{sym} ({base})", 0.0) + period
        total += period
        samples += 1
    if not total:
        return {"samples": 0}
    return {"samples": samples, "libraries": {k: v / total for k, v in libs.items()},
            "threads": {t: v / total for t, v in threads.items()},
            "top_leaves": [[sym, v / total] for sym, v in sorted(leaves.items(), key=lambda kv: -kv[1])[:12]]}


def profile_run(d: H.Corral, key: str, what: str, run: Callable[[], int], ws: Workspace, stacks: bool) -> dict:
    """perf on the daemon, every thread, while run() works (it returns how many round trips or requests
    it made). With stacks (--call-graph dwarf: the build keeps no frame pointers) the samples are read
    by copy_stacks, for a large tensor's copies; without, by library_samples, for small calls. Each
    share of the samples times the daemon's CPU per round trip over the same run gives its cost."""
    if not shutil.which("perf"):
        return {"error": "perf is not installed"}
    data = ws.path / f"perf-grpc-{key}.data"
    log = ws.logs / f"perf-grpc-{key}.log"
    argv = ["perf", "record", "-q", "-F", "999" if stacks else "1999",
            *(["--call-graph", "dwarf,16384"] if stacks else []), "-p", str(d.pid), "-o", str(data)]
    err, trips, cpu_s = perf_during(what, argv, data, log, d.pid, run)
    if err:
        return {"error": err}
    cpu_us = cpu_s * 1e6 / (trips or 1)
    try:
        st = copy_stacks(data, d.pid) if stacks else library_samples(data, d.pid)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        return {"error": str(e)}
    finally:
        data.unlink(missing_ok=True)
    if not st["samples"]:
        return {"error": "perf recorded no samples of the daemon"}
    st.update({"what": what, "count": trips, "daemon_cpu_us_per": cpu_us})
    return st


def grpc(cfg: Config, ws: Workspace) -> dict:
    """Issue #14, item 5: one daemon over echo-c (and the Python echo), 2 instances each. In interleaved
    rounds at each of cfg.grpc_connections: wrk with the JSON body, wrk with the binary body, and
    grpc_load's ModelInfer on one channel and on a channel per call, every model in turn (each
    series' median round kept). Then, per large tensor size, echo-c's round trip over HTTP binary
    (curl) and over gRPC in turn, and perf on the daemon during each at the largest size."""
    exe = build_grpc_load()
    models = {"echo-c": (EXAMPLES / "echo-c", echo_c_manifest(2))}
    labels = {"echo-c": "corral, C echo (2 instances)"}
    if cfg.grpc_python:
        models["echo"] = (EXAMPLES / "echo", echo_py_manifest(2))
        labels["echo"] = "corral, Python echo (2 instances)"
    repo = ws.repo("grpc", models)
    json_body = json_request(cfg.elements)
    bin_body, head_len = binary_request(cfg.elements)
    json_file, bin_file = ws.path / "grpc-request.json", ws.path / "grpc-request.bin"
    json_file.write_bytes(json_body)
    bin_file.write_bytes(bin_body)
    bodies = {"http-json": (json_file, "application/json", None),
              "http-binary": (bin_file, "application/octet-stream", {"Inference-Header-Content-Length": str(head_len)})}
    d = H.Corral("grpc", repo, ws.logs)
    try:
        H.wait_for(lambda: d.grpc_port, 15, "corral's gRPC listener")
        for model in models:
            d.load(model)
            check_echo(d.port, f"/v2/models/{model}/infer", json_body, cfg.elements)
            check_binary_echo(d.port, f"/v2/models/{model}/infer", bin_body, head_len, cfg.elements)
        for model in models:
            for path in GRPC_PATHS:
                grpc_rate_point(cfg, exe, d, model, path, 16, 1, bodies, ", warm-up")  # not kept
        taken: Dict[Tuple[str, str, int], List[dict]] = {}
        for r in range(cfg.rounds):
            for conns in cfg.grpc_connections:
                for model in models:
                    for path in GRPC_PATHS:
                        res = grpc_rate_point(cfg, exe, d, model, path, conns, cfg.duration, bodies)
                        taken.setdefault((model, path, conns), []).append(res)
                        print(f"  round {r + 1}/{cfg.rounds} {model:6s} {path:13s} c={conns:<3d} {res['rps']:9.0f} req/s"
                              f"  p50 {res['p50_us']:8.0f} µs  p99 {res['p99_us']:8.0f} µs  errors {res['errors']}"
                              f"  daemon {res['daemon_cpu_us_per_req']:6.1f} µs/req", flush=True)
        series = {model: {"label": labels[model],
                          "paths": {path: [median_round(taken[(model, path, c)]) for c in cfg.grpc_connections]
                                    for path in GRPC_PATHS}}
                  for model in models}
        server = Server("grpc-http", labels["echo-c"], "c", d.port, "/v2/models/echo-c/infer", d.pid, lambda: None)

        def grpc_tensor(mib: int, reps: int) -> dict:
            return run_tool(f"grpc_load tensor ({mib} MiB)", exe,
                            ["tensor", str(d.grpc_port), "echo-c", str(mib), str(reps)])

        # Rounds of TENSOR_ROUND round trips each way, the two alternating (and which goes first), each
        # tool's run after one untimed round trip of its own: the shared machine's drift, which comes and
        # goes in seconds, then falls on both alike. Each figure is the median of every round's times.
        pair = copy.copy(cfg)
        pair.tensor_reps = TENSOR_ROUND
        tensors = []
        for mib in cfg.tensor_mib:
            times: Dict[str, List[float]] = {"http": [], "grpc": []}
            answer = 0
            for r in range(max(1, cfg.tensor_reps // TENSOR_ROUND)):
                for way in (("http", "grpc") if r % 2 == 0 else ("grpc", "http")):
                    if way == "http":
                        times["http"] += tensor_roundtrips(pair, server, mib, ws)["seconds"]
                    else:
                        g = grpc_tensor(mib, TENSOR_ROUND)
                        times["grpc"] += g["seconds"]
                        answer = g["answer_bytes"]
            entry = {"mib": mib, "rounds": max(1, cfg.tensor_reps // TENSOR_ROUND), "per_round": TENSOR_ROUND}
            for way, ts in times.items():
                med = statistics.median(ts)
                entry[way] = {"mib": mib, "bytes": mib << 20, "reps": len(ts), "seconds": ts, "seconds_median": med,
                              "seconds_min": min(ts), "mb_s": (mib << 20) / med / 1e6}
            entry["grpc"]["answer_bytes"] = answer
            tensors.append(entry)
            print(f"  echo-c {mib:3d} MiB in and out: HTTP binary {entry['http']['mb_s']:6.0f} MB/s, "
                  f"gRPC {entry['grpc']['mb_s']:6.0f} MB/s", flush=True)
        profiles: Dict[str, dict] = {}
        if cfg.perf:
            mib = max(cfg.tensor_mib)
            few = copy.copy(cfg)
            few.tensor_reps = 2
            profiles["grpc"] = profile_run(d, "grpc", f"gRPC, {mib} MiB", lambda: grpc_tensor(mib, 2)["reps"] + 1,
                                           ws, stacks=True)
            profiles["http"] = profile_run(d, "http", f"HTTP binary, {mib} MiB",
                                           lambda: tensor_roundtrips(few, server, mib, ws)["reps"] + 1, ws, stacks=True)
            conns = max(cfg.grpc_connections)
            for path in ("grpc", "http-binary"):
                profiles[f"{path}-small"] = profile_run(
                    d, f"{path}-small", f"{path}, echo-c, {conns} calls in flight",
                    lambda: grpc_rate_point(cfg, exe, d, "echo-c", path, conns, cfg.duration, bodies,
                                            ", under perf")["requests"],
                    ws, stacks=False)
            for k, prof in profiles.items():
                if "error" in prof:
                    print(f"  perf ({k}): {prof['error']}", flush=True)
                elif "kinds" in prof:
                    copies = sum(prof["kinds"].get("user_copy", {}).values())
                    print(f"  perf ({prof['what']}): the daemon {prof['daemon_cpu_us_per'] / 1e3:.1f} ms of CPU per "
                          f"round trip, {copies * 100:.0f}% of it in user-space copies "
                          f"({prof['samples']} samples)", flush=True)
                else:
                    libs = prof["libraries"]
                    print(f"  perf ({prof['what']}): the daemon {prof['daemon_cpu_us_per']:.1f} µs of CPU per request; "
                          + ", ".join(f"{k} {v * 100:.0f}%" for k, v in sorted(libs.items(), key=lambda kv: -kv[1]))
                          + f" ({prof['samples']} samples)", flush=True)
        mib = max(cfg.tensor_mib)
        floors = {"loopback": loopback_floor(cfg, mib), "memcpy": memcpy_floor(cfg, mib)}
    finally:
        d.stop()
    return {"elements": cfg.elements, "json_bytes": len(json_body), "binary_bytes": len(bin_body),
            "grpc_request_bytes": taken[("echo-c", "grpc", cfg.grpc_connections[0])][0]["request_bytes"],
            "connections": cfg.grpc_connections, "channels": cfg.grpc_channels, "threads": cfg.grpc_threads,
            "series": series, "tensors": tensors, "perf": profiles if cfg.perf else None, "floors": floors}


# ---- sessions (issue 16, item 6) ----

SESSION_COUNT = 10000
SESSION_BYTES = 4096


def session_c_manifest() -> str:
    return ("# tests/models/session_c (C SDK): an echo that reads the session a request names and updates\n"
            "# nothing unless asked (parameters.mode).\n"
            "runtime: exec\nentrypoint: session_c\ninstances: 1\nkeep_alive: -1\nmax_queue: 256\n")


def sessions(cfg: Config, ws: Workspace) -> dict:
    """Issue #16, item 6: 10,000 JSON sessions of 4 KiB each PUT into one daemon's store, then one
    keep-alive connection sends a C echo (tests/models/session_c, 1 instance) pairs of requests, one
    without a session and one naming a random one of them, in random order within each pair; the added
    latency is the difference of the two kinds' medians (and p99s), over cfg.rtt_requests pairs."""
    exe = build_c_tool("session_load", [])
    repo = ws.repo("sessions", {"session-c": (ROOT / "tests" / "models" / "session_c", session_c_manifest())})
    d = H.Corral("sessions", repo, ws.logs)
    try:
        d.load("session-c")
        fill = run_tool("session_load fill (PUT the sessions)", exe,
                        ["fill", str(d.port), str(SESSION_COUNT), str(SESSION_BYTES)])
        print(f"  {SESSION_COUNT} sessions of {SESSION_BYTES} bytes PUT in {fill['seconds']:.1f} s", flush=True)
        runs = []
        for r in range(cfg.reps):
            res = run_tool("session_load run (pairs with and without a session)", exe,
                           ["run", str(d.port), "session-c", str(SESSION_COUNT), str(cfg.rtt_requests),
                            str(max(cfg.rtt_requests // 10, 100))])
            runs.append(res)
            print(f"  run {r + 1}/{cfg.reps}: without p50 {res['without']['p50_us']:.1f} µs, with p50 "
                  f"{res['with']['p50_us']:.1f} µs: added {res['added_p50_us']:+.1f} µs at p50, "
                  f"{res['added_p99_us']:+.1f} µs at p99", flush=True)
        best = sorted(runs, key=lambda x: x["added_p50_us"])[len(runs) // 2]  # the median run
        return {"sessions": SESSION_COUNT, "session_bytes": SESSION_BYTES, "fill": fill, "runs": runs,
                "median_run": best}
    finally:
        d.stop()
