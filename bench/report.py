"""report — docs/benchmarks.md and docs/bench-*.png from the bench's results.

    /usr/bin/python3 bench/report.py [build/bench/results.json]

bench.py calls generate() at the end of a run; running this file alone
rewrites the report from the last results without measuring again. Every
comparison is a ratio of two numbers measured in the same run.
"""
from __future__ import annotations

import json
import pathlib
import sys
from typing import Callable, Dict, List, Optional, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]

# The issue's goals (#4): targets for the report, not assertions.
GOAL_VS_GUNICORN = 2.0
GOAL_VS_UWSGI = 1.0
GOAL_VS_NGINX = 0.5
GOAL_ADDED_P50_US = 50.0
GOAL_TENSOR_MB_S = 1000.0
GOAL_COLD_8 = 1.2
GOAL_RECLAIM = 0.99
GOAL_RECOVERY_EXTRA_S = 0.050
# Streaming (#10).
GOAL_STREAM_ADDED_FIRST_US = 1000.0
GOAL_STREAM_CHUNKS_S = 100000.0
GOAL_STREAM_VS_BARE = 2.0
# GET /metrics (#11): "rendering 100 models × 8 instances takes under a few ms", read as 3 ms of the daemon's CPU.
GOAL_METRICS_MODELS = 100
GOAL_METRICS_INSTANCES = 8
GOAL_METRICS_CPU_MS = 3.0
# Issue #13, item 7: 64 MiB in and out through client shared memory.
GOAL_SHM_MB_S = 5000.0
GOAL_SHM_MIB = 64
GOAL_SESSION_ADDED_US = 50.0
# Issue #14, item 5: large tensors over gRPC, at least 30 times the reference proof of concept's figure.
GRPC_REFERENCE_MB_S = 31.92
GRPC_GOAL_FACTOR = 30
GOAL_GRPC_MB_S = GRPC_REFERENCE_MB_S * GRPC_GOAL_FACTOR

# Issue #12, item 5 (batching and wake-ups): targets for the report, read on section 2's points.
GOAL12_BATCH_VS_UWSGI = 1.5  # Python echo with batching ÷ uWSGI, at GOAL12_CONNS
GOAL12_NOBATCH_VS_UWSGI = 1.0  # Python echo without batching ÷ uWSGI, at each of GOAL12_NOBATCH_CONNS
GOAL12_C_VS_NGINX = 0.5  # C echo with batching ÷ nginx `return 200`, at GOAL12_CONNS
GOAL12_FORMATION_US = 1.0  # batch formation, the daemon's CPU per request
GOAL12_CONNS = 64
GOAL12_NOBATCH_CONNS = (16, 64)
# "p50 within noise" at one connection: within this fraction of the p50 without batching, or within
# the spread of that p50 over the rounds, whichever is wider.
GOAL12_P50_NOISE = 0.10

# What the wake-up figures (section 2) compare: issue #12 asks for them before and after its
# batching (item 1) and pipelining (item 3). Both are in the daemon: corral's echoes as they are
# pipeline (`pipeline: 1`, the default), the series marked pipeline 0 are the before, and the
# batching series batch (a batching model never pipelines). wakeups_stage() puts them together.
WAKEUPS_PIPELINING = ("after pipelining (issue #12, item 3: `pipeline: 1`, the default) in the rows of corral's "
                      "echoes as they are, before it in the rows marked pipeline 0")
# The same, for a run without the pipeline 0 series (BENCH_NOPIPE=0).
WAKEUPS_PIPELINING_NO_BEFORE = ("after pipelining (issue #12, item 3: `pipeline: 1`, the default), with no "
                                "pipeline 0 series for the before (`BENCH_NOPIPE=0`)")
WAKEUPS_STAGE = "with dynamic batching (item 1), which never pipelines, in the rows marked batching"
# The same, for a run without the batching series (BENCH_BATCHING=0).
WAKEUPS_STAGE_UNBATCHED = "without dynamic batching (`BENCH_BATCHING=0`)"

CORRAL_COLOR = "#d62728"
PEER_COLORS = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#7f7f7f"]
# One colour per server or queue, the same in every plot.
BATCH_COLOR = "#ff9896"  # corral with batching: corral's red, lighter
NOPIPE_COLOR = "#8b0000"  # corral with pipeline 0: corral's red, darker
COLORS = {"corral": CORRAL_COLOR, "corral-c": CORRAL_COLOR, "corral sched (C)": CORRAL_COLOR,
          "corral-batch": BATCH_COLOR, "corral-c-batch": BATCH_COLOR,
          "corral-nopipe": NOPIPE_COLOR, "corral-c-nopipe": NOPIPE_COLOR,
          "gunicorn": "#2ca02c", "uwsgi": "#9467bd", "uvicorn": "#8c564b", "nginx": "#1f77b4",
          "asyncio.PriorityQueue": "#2ca02c", "heapq": "#9467bd"}


# ---- formatting ----

def f_int(x: Optional[float]) -> str:
    return "–" if x is None else f"{x:,.0f}"


def f_num(x: Optional[float], digits: int = 1) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def f_ratio(x: Optional[float]) -> str:
    if x is None:
        return "–"
    return f"{x:.2f}×" if x < 100 else f"{x:,.0f}×"


def f_mib(b: Optional[float]) -> str:
    return "–" if b is None else f"{b / 2**20:,.1f} MiB"


def f_signed(x: Optional[float], digits: int = 1) -> str:
    """A difference with its sign always written: +1.5, −0.3."""
    if x is None:
        return "–"
    return f"{'+' if x >= 0 else '−'}{abs(x):,.{digits}f}"


def f_pct(x: Optional[float], digits: int = 1) -> str:
    return "–" if x is None else f"{x * 100:.{digits}f}%"


def table(header: List[str], rows: List[List[str]], align: Optional[str] = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    seps = [":---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(seps) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def verdict(ok: Optional[bool]) -> str:
    return "–" if ok is None else ("met" if ok else "**not met**")


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or b == 0:
        return None
    return a / b


# ---- access to results ----

SECTIONS = ["queue", "serving", "worker_rtt", "cold_start", "memory", "recovery", "idle", "streaming", "metrics",
            "clientshm", "grpc", "sessions"]


def scfg(res: dict, key: str) -> dict:
    """The settings a section was measured with (a partial run keeps older sections)."""
    return ((res.get(key) or {}).get("_run") or {}).get("config") or res.get("config") or {}


def present(res: dict) -> List[str]:
    return [k for k in SECTIONS if res.get(k)]


def servers(res: dict) -> Dict[str, dict]:
    return (res.get("serving") or {}).get("servers") or {}


def point(res: dict, key: str, conns: int) -> Optional[dict]:
    for p in servers(res).get(key, {}).get("points", []):
        if p["connections"] == conns:
            return p
    return None


def peak(res: dict, key: str) -> Optional[dict]:
    pts = servers(res).get(key, {}).get("points", [])
    return max(pts, key=lambda p: p["rps"]) if pts else None


def tensor(res: dict, key: str, mib: int) -> Optional[dict]:
    for t in servers(res).get(key, {}).get("tensors", []):
        if t["mib"] == mib:
            return t
    return None


def floor(res: dict, mib: int) -> Optional[dict]:
    for t in (res.get("serving") or {}).get("loopback_floor", []):
        if t["mib"] == mib:
            return t
    return None


def queue_row(res: dict, impl: str, pattern: str, depth: int) -> Optional[dict]:
    for r in (res.get("queue") or {}).get("rows", []):
        if r["impl"] == impl and r["pattern"] == pattern and r["depth"] == depth:
            return r
    return None


# ---- goals ----

class Goal:
    def __init__(self, name: str, target: str, measured: str, ok: Optional[bool], why: str = "") -> None:
        self.name, self.target, self.measured, self.ok, self.why = name, target, measured, ok, why


def throughput_goal(res: dict, peer: str, peer_label: str, corral_key: str, target: float) -> Goal:
    c, p = peak(res, corral_key), peak(res, peer)
    r = ratio(c and c["rps"], p and p["rps"])
    per_conn = []
    for conns in scfg(res, "serving").get("connections", []):
        cp, pp = point(res, corral_key, conns), point(res, peer, conns)
        rr = ratio(cp and cp["rps"], pp and pp["rps"])
        if rr is not None:
            per_conn.append(f"{f_ratio(rr)} at {conns}")
    measured = f"{f_ratio(r)} at peak ({f_int(c and c['rps'])} vs {f_int(p and p['rps'])} req/s)"
    if per_conn:
        measured += "; " + ", ".join(per_conn) + " connections"
    why = ""
    if r is not None and r < target:
        why = throughput_why(res, corral_key, peer, peer_label)
    return Goal(f"corral ÷ {peer_label}, requests/s", f"≥ {target:g}×", measured, None if r is None else r >= target,
                why)


def throughput_why(res: dict, corral_key: str, peer: str, peer_label: str) -> str:
    c, p = peak(res, corral_key), peak(res, peer)
    cores = res["machine"]["cores"]
    worker = c["cpu_us_per_req"] - c["root_cpu_us_per_req"]
    parts = [
        f"At their peaks corral's processes spend {f_num(c['cpu_us_per_req'])} µs of CPU per request, the daemon "
        f"{f_num(c['root_cpu_us_per_req'])} µs and the workers {f_num(worker)} µs, against "
        f"{f_num(p['cpu_us_per_req'])} µs for {peer_label}'s whole request. With {cores} cores shared with wrk, "
        f"CPU per request sets the rate. A request to corral crosses two processes (the daemon parses HTTP and "
        f"JSON and frames the tensor; the worker's SDK decodes the frame, runs the model and encodes the "
        f"answer), where {peer_label} parses and answers in one."]
    if worker > p["cpu_us_per_req"]:
        parts.append(f"corral's worker alone already costs more than {peer_label}'s whole request, so the daemon "
                     f"cannot close the gap by itself.")
    parts.append(wakeup_note(res))
    parts.append("What remains: the daemon's share is mostly kernel time, the wake-ups and context switches of "
                 "handing each request to another process and back (the SDKs no longer add a hand-off between "
                 "threads, and the daemon formats numbers without printf). Pipelining, on here by default, spares "
                 "a busy worker its sleep between requests, but every request still crosses two processes; "
                 "batching (a model's `batching` key) shares one wake-up among several requests.")
    return " ".join(p for p in parts if p)


def wakeup_note(res: dict) -> str:
    """A sentence on what a process round trip costs here (section 3's ping-pong), or ""."""
    pp = (res.get("worker_rtt") or {}).get("pingpong")
    if not pp:
        return ""
    return (f"On this machine a bare round trip between two processes, with no work at all, takes "
            f"{f_num(pp['p50_us'])} µs (section 3): waking a process on the other CPU is expensive here.")


def c_worker_cap(res: dict) -> str:
    """A sentence when the C worker alone is slower than the Python one: it caps the C echo."""
    rtt = res.get("worker_rtt") or {}
    c, py = rtt.get("c"), rtt.get("python")
    if not c or not py or c["mean_us"] <= py["mean_us"]:
        return ""
    return (f"The C worker alone, without the daemon, needs {f_num(c['mean_us'])} µs per request, more than the "
            f"Python worker's {f_num(py['mean_us'])} µs (see section 3), so 2 instances cap the C echo near "
            f"{f_int(2e6 / c['mean_us'])} requests/s whatever the daemon does. ")


def goals(res: dict) -> List[Goal]:
    out: List[Goal] = []
    if servers(res):
        out.append(throughput_goal(res, "gunicorn", "gunicorn", "corral", GOAL_VS_GUNICORN))
        out.append(throughput_goal(res, "uwsgi", "uWSGI", "corral", GOAL_VS_UWSGI))
        g = throughput_goal(res, "nginx", "nginx `return 200`", "corral-c", GOAL_VS_NGINX)
        g.name = "C echo ÷ nginx `return 200`, requests/s"
        if g.ok is False:
            c, n = peak(res, "corral-c"), peak(res, "nginx")
            g.why = (f"nginx answers from memory in one process with {f_num(n['cpu_us_per_req'])} µs of CPU per "
                     f"request. corral parses the JSON, converts the tensor, sends it to a worker process and "
                     f"back, and writes the JSON answer: {f_num(c['cpu_us_per_req'])} µs of CPU per request, "
                     f"{f_num(c['root_cpu_us_per_req'])} µs of it in the daemon and the rest in the C worker. "
                     + c_worker_cap(res) + wakeup_note(res) +
                     f" What remains: the daemon's own per-request cost is "
                     f"{f_ratio(ratio(c['root_cpu_us_per_req'], n['cpu_us_per_req']))} nginx's whole request, most "
                     f"of it the kernel's work of handing the request to the worker and back; a server that hands "
                     f"every request to another process cannot reach a server that answers from memory in-process, "
                     f"only batching several requests per wake-up would narrow the gap.")
        out.append(g)
    rtt = res.get("worker_rtt") or {}
    for key, model, ckey in (("python", "Python echo", "corral"), ("c", "C echo", "corral-c")):
        c1 = point(res, ckey, 1)
        if c1 and rtt.get(key):
            added = c1["p50_us"] - rtt[key]["p50_us"]
            ok = added <= GOAL_ADDED_P50_US
            why = ""
            n1 = point(res, "nginx", 1)
            if not ok:
                why = (f"corral's p50 at one connection is {f_int(c1['p50_us'])} µs and the worker alone answers "
                       f"in {f_num(rtt[key]['p50_us'])} µs, so corral adds {f_int(added)} µs.")
                if n1:
                    why += (f" Of those, {f_int(n1['p50_us'])} µs is the floor any HTTP server pays here "
                            f"(nginx's `return 200` p50 at one connection: wrk, the loopback, one HTTP exchange), "
                            f"which leaves {f_int(added - n1['p50_us'])} µs in the daemon itself: parsing the "
                            f"JSON request, converting the tensor to raw bytes and back, queueing, and the hop to "
                            f"the worker and back.")
                pp = rtt.get("pingpong")
                if pp:
                    why += (f" A bare round trip between two processes costs {f_num(pp['p50_us'])} µs here "
                            f"(section 3); the client-to-daemon exchange is such a trip that the worker alone "
                            f"does not make.")
                if n1 and n1["p50_us"] >= GOAL_ADDED_P50_US:
                    why += (f" What remains: on this machine one HTTP exchange alone ({f_int(n1['p50_us'])} µs) "
                            f"is above the goal, so no HTTP server in front of a worker process can meet it here; "
                            f"what corral adds beyond that floor is the figure to watch.")
                else:
                    why += " What remains: the daemon's own path (JSON parsing and conversion, the hop to the worker)."
            out.append(Goal(f"added p50 latency, {model}", f"≤ {GOAL_ADDED_P50_US:g} µs",
                            f"{f_int(added)} µs (corral {f_int(c1['p50_us'])} − worker {f_num(rtt[key]['p50_us'])})",
                            ok, why))
    tens = []
    for key in ("corral", "corral-c"):
        for mib in scfg(res, "serving").get("tensor_mib", []):
            t = tensor(res, key, mib)
            if t:
                tens.append((key, mib, t))
    if tens:
        worst = min(tens, key=lambda x: x[2]["mb_s"])
        ok = worst[2]["mb_s"] >= GOAL_TENSOR_MB_S
        why = ""
        if not ok:
            fl = floor(res, worst[1])
            why = (f"The slowest case, {worst[1]} MiB through the "
                   f"{'C' if worst[0] == 'corral-c' else 'Python'} echo, ran at {f_int(worst[2]['mb_s'])} MB/s.")
            if fl:
                why += (f" On this machine a bare loopback TCP echo of the same {worst[1]} MiB, with no HTTP and no "
                        f"work at all, reaches only {f_int(fl['mb_s'])} MB/s, so corral is at "
                        f"{f_pct(ratio(worst[2]['mb_s'], fl['mb_s']), 0)} of what this machine can move.")
                if fl["mb_s"] < GOAL_TENSOR_MB_S:
                    why += " The goal is above this machine's own floor."
            why += (" What remains: tensors pass through shared memory, but h2o 2.2 buffers the whole request "
                    "body before the handler runs (it copies the body from the socket's buffer into a "
                    "request-body buffer that grows by doubling: in a profile of 16 MiB round trips most of the "
                    "daemon's own copying), so receiving, copying into the worker's region and sending back "
                    "happen one after the other rather than overlapped.")
        out.append(Goal("large tensors in and out, MB/s (slowest of 16/64 MiB, Python and C echo)",
                        f"≥ {GOAL_TENSOR_MB_S:,.0f} MB/s", f"{f_int(worst[2]['mb_s'])} MB/s", ok, why))
    cold = res.get("cold_start")
    if cold:
        by_n = {r["instances"]: r for r in cold["rows"]}
        if 1 in by_n and 8 in by_n:
            r8 = by_n[8]["seconds"] / by_n[1]["seconds"]
            ok = r8 <= GOAL_COLD_8
            why = ""
            if not ok:
                why = (f"8 instances were ready in {f_num(by_n[8]['seconds'], 2)} s against "
                       f"{f_num(by_n[1]['seconds'], 2)} s for one. The load itself sleeps, so the difference is "
                       f"8 Python interpreters starting and importing at once on {res['machine']['cores']} cores.")
            out.append(Goal("cold start, 8 instances ÷ 1 instance", f"≤ {GOAL_COLD_8:g}×",
                            f"{f_ratio(r8)} ({f_num(by_n[8]['seconds'], 2)} s vs {f_num(by_n[1]['seconds'], 2)} s; "
                            f"sequential would take {by_n[8]['sequential_s']:g} s)", ok, why))
    mem = res.get("memory")
    if mem and mem["reps"] and "host_used" in mem["reps"][0]:
        used = mem_median(mem, "host_used", "returned_fraction")
        less = mem_median(mem, "host_used_less_pcp", "returned_fraction")
        anon = mem_median(mem, "host_anon", "returned_fraction")
        tree = mem_median(mem, "tree", "returned_fraction")
        ok = less is not None and less >= GOAL_RECLAIM
        why = ""
        if not ok:
            why = (f"Less the kernel's per-CPU free lists, the host got back {f_pct(less)} of what the load took; "
                   f"the processes' anonymous memory (AnonPages) went back by {f_pct(anon)}, and corral's own "
                   f"process tree by {f_pct(tree, 2)}: every worker process had exited and its memory was freed. "
                   f"What is left is everything else on the machine moving at the same time (other processes, "
                   f"page cache); run the bench on a quiet machine to read the host alone.")
        out.append(Goal("memory returned on unload (host)", f"≥ {GOAL_RECLAIM * 100:g}%",
                        f"{f_pct(less)} (MemTotal − MemAvailable less the per-CPU free lists; "
                        f"{f_pct(used)} without that correction; corral's process tree: {f_pct(tree, 2)})", ok, why))
    rec = (res.get("recovery") or {}).get("models") or {}
    for key, model in (("python", "Python echo"), ("c", "C echo")):
        r = rec.get(key)
        if not r:
            continue
        extra = r["p50_s"] - r["load_s"]
        ok = extra <= GOAL_RECOVERY_EXTRA_S
        why = ""
        if not ok:
            why = (f"From kill -9 to the first answer of the replacement took {f_num(r['p50_s'] * 1e3)} ms at the "
                   f"median, {f_num(extra * 1e3)} ms more than loading the model afresh "
                   f"({f_num(r['load_s'] * 1e3)} ms): the daemon waits until the worker's whole process group is "
                   f"gone (polled every 5 ms) before it restarts the instance.")
        out.append(Goal(f"recovery p50, {model}", f"≤ 50 ms + load ({f_num(r['load_s'] * 1e3)} ms)",
                        f"{f_num(r['p50_s'] * 1e3)} ms (load + {f_num(extra * 1e3)} ms)", ok, why))
    out += stream_goals(res)
    out += metrics_goals(res)
    return out


def stream_goals(res: dict) -> List[Goal]:
    """Issue #10's goals: the first chunk's added time, and chunks/s through one stream."""
    st = res.get("streaming") or {}
    out: List[Goal] = []
    fc = st.get("first_chunk")
    if fc:
        c, w = fc["corral"], fc["worker"]
        ok = fc["added_p50_us"] <= GOAL_STREAM_ADDED_FIRST_US
        why = ""
        if not ok:
            why = (f"Through corral the first event arrived after {f_num(c['p50_us'])} µs at the median, from the "
                   f"worker alone after {f_num(w['p50_us'])} µs. {wakeup_note(res)} A streamed request through "
                   f"corral makes two such hops (client to daemon, daemon to worker) where the worker alone makes "
                   f"one; what is left beyond them is the daemon's own path: parsing the HTTP request and its "
                   f"JSON body, queueing, the GENERATE frame, and the first chunk's HTTP/1.1 headers and chunk.")
        out.append(Goal("streaming: time to first chunk added by corral, p50 (C echo, HTTP/1.1)",
                        f"≤ {GOAL_STREAM_ADDED_FIRST_US / 1000:g} ms",
                        f"{f_num(fc['added_p50_us'])} µs (corral {f_num(c['p50_us'])} − worker "
                        f"{f_num(w['p50_us'])}; p90 {f_num(fc['added_p90_us'])} µs)", ok, why))
    pipe = st.get("pipe")
    if pipe:
        c, b = pipe["corral"], pipe["bare"]
        n = pipe["chunks"]
        daemon_us, workers_us = c["daemon_cpu_s"] * 1e6 / n, c["workers_cpu_s"] * 1e6 / n
        cpu_note = (f"While it streamed, corral's daemon spent {f_num(daemon_us, 2)} µs of CPU per chunk and the "
                    f"worker {f_num(workers_us, 2)} µs; the client (sse_reader) used "
                    f"{f_pct(c['cpu_s'] * 1e6 / c['end_us'], 0)} of one core, so it was not what held the stream "
                    f"back. With {res['machine']['cores']} cores shared by client, daemon and worker, CPU per chunk "
                    f"sets the rate.")
        ok = c["chunks_s"] >= GOAL_STREAM_CHUNKS_S
        why = ""
        if not ok:
            why = f"{n:,} events streamed through corral at {f_int(c['chunks_s'])}/s. " + cpu_note
            if b["chunks_s"] < GOAL_STREAM_CHUNKS_S:
                why += (f" The worker alone, read straight from its socket, makes only {f_int(b['chunks_s'])} "
                        f"events/s here (the C SDK serialises each event with jansson and writes one frame per "
                        f"event), so the goal is above what this worker produces on this machine, daemon or not.")
            else:
                why += (" What remains is the daemon's own cost per chunk: reading the CHUNK frames, writing "
                        "each out as an event, crediting them back.")
        out.append(Goal("streaming: chunks/s through one stream (C echo, server-sent events over HTTP/1.1)",
                        f"≥ {GOAL_STREAM_CHUNKS_S:,.0f}/s", f"{f_int(c['chunks_s'])}/s", ok, why))
        r = pipe["bare_over_corral"]
        ok = r is not None and r <= GOAL_STREAM_VS_BARE
        why = ""
        if r is not None and not ok:
            why = (f"The worker alone streamed {f_int(b['chunks_s'])} events/s to a reader on its socket, through "
                   f"corral {f_int(c['chunks_s'])}/s. " + cpu_note + " Through corral every event costs the daemon's "
                   "work on top of the worker's, on the same cores; a faster daemon path per chunk (fewer writes and "
                   "wake-ups per event) is what would close the gap.")
        out.append(Goal("streaming: bare pipe ÷ corral, chunks/s", f"≤ {GOAL_STREAM_VS_BARE:g}×",
                        f"{f_ratio(r)} ({f_int(b['chunks_s'])}/s vs {f_int(c['chunks_s'])}/s)", ok, why))
    return out


def metrics_registry(mt: dict) -> str:
    return f"{mt['models']} models × {mt['instances']} instances"


def metrics_full_size(mt: dict) -> bool:
    """Whether the section scraped a registry at least as large as the goal's."""
    return mt["models"] >= GOAL_METRICS_MODELS and mt["instances"] >= GOAL_METRICS_INSTANCES


def metrics_goals(res: dict) -> List[Goal]:
    """Issue #11's goals: the daemon's CPU per scrape of a 100 × 8 registry, and promtool's verdict."""
    mt = res.get("metrics")
    if not mt:
        return []
    out: List[Goal] = []
    sc, ex, fl = mt["scrape"], mt["exposition"], mt["fd_listing"]
    cpu_ms = sc["daemon_cpu_us"] / 1e3
    full = metrics_full_size(mt)
    ok = cpu_ms <= GOAL_METRICS_CPU_MS if full else None
    measured = (f"{f_num(cpu_ms, 2)} ms of CPU ({metrics_registry(mt)}; wall p50 {f_num(sc['p50_us'] / 1e3, 2)} ms, "
                f"p90 {f_num(sc['p90_us'] / 1e3, 2)} ms)")
    if not full:
        measured += "; a smaller registry than the goal's, not judged"
    why = ""
    if ok is False:
        fd_ms = fl["cpu_us_per_listing"] / 1e3
        why = (f"Each scrape of {metrics_registry(mt)} writes {f_int(ex['samples'])} samples "
               f"({f_int(sc['bytes'])} bytes) and costs the daemon {f_num(cpu_ms, 2)} ms of CPU. Part of it is not "
               f"the registry at all: the `process_open_fds` gauge lists `/proc/self/fd` on every scrape, and the "
               f"daemon held {f_int(mt['daemon_fds'])} descriptors (about {f_num(mt['daemon_fds'] / mt['workers'])} "
               f"per instance); listing that many from outside, the same kernel path, took {f_num(fd_ms, 2)} ms of "
               f"CPU here, {f_pct(ratio(fd_ms, cpu_ms), 0)} of the scrape. The rest is formatting: every sample "
               f"goes through `sb_printf`, and every histogram bucket's bound and every sum through `%.17g`, "
               f"though the bounds are the same for every model and every scrape. What remains: counting the "
               f"descriptors without listing them, formatting the fixed bounds once, and writing integers "
               f"without printf would take the rendering toward the goal.")
    out.append(Goal(f"GET /metrics, {GOAL_METRICS_MODELS} models × {GOAL_METRICS_INSTANCES} instances: the daemon's "
                    f"CPU per scrape", f"≤ {GOAL_METRICS_CPU_MS:g} ms (\"under a few ms\")", measured, ok, why))
    pt = mt.get("promtool")
    if pt:
        measured = "no parse error" if pt["ok"] else f"**parse error**: {'; '.join(pt['parse_errors'])[:300]}"
        measured += (f"; {pt['findings']} lint findings, {pt['findings_nv']} of them on Triton's `nv_` names "
                     f"({metrics_registry(mt)})")
        why = "" if pt["ok"] else (f"`promtool check metrics` (exit status {pt['rc']}) could not parse the "
                                   f"exposition: {'; '.join(pt['parse_errors'])[:500]}")
        out.append(Goal("GET /metrics: `promtool check metrics` on the large registry's exposition", "no parse error",
                        measured, pt["ok"], why))
    return out


# ---- issue #12: batching ----

# The batching series beside the series they batch, and how the report names them.
BATCH_PAIRS = (("corral-batch", "corral", "Python echo"), ("corral-c-batch", "corral-c", "C echo"))
# The pipeline 0 series (issue #12, item 3: the before) beside the echoes as they are (the after).
NOPIPE_PAIRS = (("corral-nopipe", "corral", "Python echo"), ("corral-c-nopipe", "corral-c", "C echo"))


def wakeups_stage(res: dict) -> str:
    """What section 2's wake-ups compare in this run: pipelining's before and after, and batching."""
    srv = servers(res)
    before = any(k in srv for k, _, _ in NOPIPE_PAIRS)
    batched = any(k in srv for k, _, _ in BATCH_PAIRS)
    return (f"{WAKEUPS_PIPELINING if before else WAKEUPS_PIPELINING_NO_BEFORE}; "
            f"{WAKEUPS_STAGE if batched else WAKEUPS_STAGE_UNBATCHED}")


def cpu_split(p: dict) -> Tuple[float, float]:
    """A corral point's CPU per request in the daemon and in the rest of its tree (the workers)."""
    return p["root_cpu_us_per_req"], p["cpu_us_per_req"] - p["root_cpu_us_per_req"]


def before_after(res: dict, key: str, nopipe_key: str, conns: int) -> str:
    """One point of a pipeline 0 series beside its echo's: requests/s, then each role's context
    switches and CPU per request, before (pipeline 0) → after (pipeline 1). "" without both."""
    a, b = point(res, key, conns), point(res, nopipe_key, conns)
    if not a or not b:
        return ""
    text = (f"{f_ratio(ratio(a['rps'], b['rps']))} at {conns} connections "
            f"({f_int(b['rps'])} → {f_int(a['rps'])} req/s")
    aw, bw = a.get("wakeups"), b.get("wakeups")
    if aw and bw:
        for role in ("daemon", "workers"):
            before, after = bw[role], aw[role]
            text += (f"; {role} {f_num(before['switches_per_req'], 2)} → {f_num(after['switches_per_req'], 2)} "
                     f"switches, {f_num(before['cpu_us_per_req'])} → {f_num(after['cpu_us_per_req'])} µs")
    return text + ")"


def batching(res: dict) -> dict:
    """The serving section's batching settings and perf profiles; {} without the batching series."""
    return (res.get("serving") or {}).get("batching") or {}


def batch_mean(p: Optional[dict]) -> Optional[float]:
    """Rows per model execution over one point (GET /metrics), or None."""
    return ((p or {}).get("batch") or {}).get("mean")


def f_batch(p: Optional[dict]) -> str:
    m = batch_mean(p)
    return "–" if m is None else f_num(m, 1)


def cost_sentence(res: dict, key: str, peer: str, peer_label: str, conns: int) -> str:
    """Where a corral series' CPU and wake-ups went at one point, beside a peer's whole request."""
    c, p = point(res, key, conns), point(res, peer, conns)
    if not c or not p:
        return ""
    text = (f"At {conns} connections {servers(res)[key]['label'].split(' (')[0]} spent "
            f"{f_num(c['cpu_us_per_req'])} µs of CPU per request ({f_num(c['root_cpu_us_per_req'])} µs in the "
            f"daemon, the rest in its workers) against {f_num(p['cpu_us_per_req'])} µs for {peer_label}'s whole "
            f"request")
    cw, pw = c.get("wakeups"), p.get("wakeups")
    if cw and pw:
        text += (f"; {f_num(cw['daemon']['switches_per_req'], 2)} context switches per request in the daemon "
                 f"and {f_num(cw['workers']['switches_per_req'], 2)} in the workers, against "
                 f"{f_num(pw['workers']['switches_per_req'], 2)} in {peer_label}'s workers")
    if batch_mean(c) and batch_mean(c) > 1.05:
        text += f", with {f_num(batch_mean(c), 1)} requests per batch on average"
    return text + f". With {res['machine']['cores']} cores shared with wrk, CPU per request sets the rate."


def formation_figures(res: dict, batch_key: str, plain_key: str) -> Optional[dict]:
    """What forming batches costs the daemon per request, from the perf profiles at the same
    connection count: the batching functions' own share, and what the request's parse and the
    clients' checks cost with batching beyond their cost without. None without both profiles."""
    prof = batching(res).get("perf") or {}
    b, n = prof.get(batch_key), prof.get(plain_key)
    if not b or not n or "error" in b or "error" in n:
        return None
    bu, nu = b["us_per_req"], n["us_per_req"]
    parse = bu.get("parse", 0.0) - nu.get("parse", 0.0)
    check = bu.get("client_check", 0.0) - nu.get("client_check", 0.0)
    # A difference below zero is the two profiles' noise, not a saving of batching's: it counts as zero.
    return {"formation": bu["formation"], "parse": parse, "client_check": check, "split": bu["split"],
            "total": bu["formation"] + max(parse, 0.0) + max(check, 0.0), "profile": b, "plain": n}


def batching_goals(res: dict) -> List[Goal]:
    """Issue #12's item 5: batching against uWSGI and nginx, the latency it adds, what it costs; and
    item 3's pipelining, before → after (reported, not judged)."""
    srv = servers(res)
    if not any(k in srv for k, _, _ in BATCH_PAIRS):
        return pipelining_reports(res)  # a run without the batching series (BENCH_BATCHING=0)
    out: List[Goal] = []
    bcfg = batching(res)
    delay_us = bcfg.get("max_queue_delay_ms", 0) * 1000

    def at(key: str, peer: str, conns: int):
        a, b = point(res, key, conns), point(res, peer, conns)
        return a, b, ratio(a and a["rps"], b and b["rps"])

    a, u, r = at("corral-batch", "uwsgi", GOAL12_CONNS)
    why = ""
    if r is not None and r < GOAL12_BATCH_VS_UWSGI:
        why = cost_sentence(res, "corral-batch", "uwsgi", "uWSGI", GOAL12_CONNS)
        f = formation_figures(res, "corral-batch", "corral")
        why += (" What remains is the daemon's own work per request, which batching does not share out: HTTP, "
                "parsing the JSON and converting the tensor, the answer"
                + (f", and forming the batches ({f_num(f['total'], 1)} µs per request, see the goal below)"
                   if f else "") + ". A batching model does not pipeline: its queue is where batches form, and a "
                "batch already shares one wake-up among its requests.")
    out.append(Goal(f"Python echo with batching ÷ uWSGI, requests/s at {GOAL12_CONNS} connections",
                    f"≥ {GOAL12_BATCH_VS_UWSGI:g}×",
                    f"{f_ratio(r)} ({f_int(a and a['rps'])} vs {f_int(u and u['rps'])} req/s; "
                    f"{f_batch(a)} requests per batch)" if a else "not measured", None if r is None else
                    r >= GOAL12_BATCH_VS_UWSGI, why))

    parts, oks = [], []
    for conns in GOAL12_NOBATCH_CONNS:
        a, u, r = at("corral", "uwsgi", conns)
        if r is not None:
            parts.append(f"{f_ratio(r)} at {conns} ({f_int(a['rps'])} vs {f_int(u['rps'])} req/s)")
            oks.append(r >= GOAL12_NOBATCH_VS_UWSGI)
    ok = all(oks) if len(oks) == len(GOAL12_NOBATCH_CONNS) else None
    why = ""
    if ok is False:
        worst = min((c for c in GOAL12_NOBATCH_CONNS), key=lambda c: at("corral", "uwsgi", c)[2] or 0)
        why = nobatch_why(res, worst)
    out.append(Goal("Python echo without batching ÷ uWSGI, requests/s at "
                    + " and ".join(map(str, GOAL12_NOBATCH_CONNS)) + " connections",
                    f"≥ {GOAL12_NOBATCH_VS_UWSGI:g}× at each", "; ".join(parts) or "not measured", ok, why))

    out += pipelining_reports(res)

    a, n, r = at("corral-c-batch", "nginx", GOAL12_CONNS)
    plain = at("corral-c", "nginx", GOAL12_CONNS)[2]
    why = ""
    if r is not None and r < GOAL12_C_VS_NGINX:
        why = (cost_sentence(res, "corral-c-batch", "nginx", "nginx", GOAL12_CONNS) +
               " nginx answers from memory in one process; corral still parses each request's JSON, converts "
               "its tensor, hands it to a worker (in a batch) and writes the JSON answer.")
        f = formation_figures(res, "corral-c-batch", "corral-c")
        if f:
            why += f" Forming the batches costs the daemon {f_num(f['total'], 1)} µs per request of that (below)."
    out.append(Goal(f"C echo with batching ÷ nginx `return 200`, requests/s at {GOAL12_CONNS} connections",
                    f"≥ {GOAL12_C_VS_NGINX:g}×",
                    f"{f_ratio(r)} ({f_int(a and a['rps'])} vs {f_int(n and n['rps'])} req/s; {f_batch(a)} "
                    f"requests per batch; without batching {f_ratio(plain)})" if a else "not measured",
                    None if r is None else r >= GOAL12_C_VS_NGINX, why))

    for batch_key, plain_key, model in BATCH_PAIRS:
        b1, p1 = point(res, batch_key, 1), point(res, plain_key, 1)
        if not b1 or not p1:
            continue
        rounds = p1.get("rounds_p50_us") or [p1["p50_us"]]
        noise = max(GOAL12_P50_NOISE * p1["p50_us"], max(rounds) - min(rounds))
        added = b1["p50_us"] - p1["p50_us"]
        ok = added <= noise
        why = ""
        if not ok:
            beyond = b1["p50_us"] - delay_us
            why = (f"With batching, a request that finds no other to join waits `max_queue_delay` "
                   f"({f_num(delay_us / 1000, 0)} ms) for company before it is sent, by design (SPEC section 2, "
                   f"Triton's rule); at one connection no other request ever comes, so every request waits the "
                   f"whole delay, measured in whole milliseconds (the queue's clock and libuv's timers), so give "
                   f"or take up to one. Less the delay its p50 is {f_int(beyond)} µs against "
                   f"{f_int(p1['p50_us'])} µs without batching ({f_signed(beyond - p1['p50_us'], 0)} µs; the "
                   f"noise allowed is {f_int(noise)} µs).")
            bw, pw = b1.get("wakeups"), p1.get("wakeups")
            if bw and pw:
                why += (f" The timer is one more wake-up of the daemon per request: "
                        f"{f_num(bw['daemon']['switches_per_req'], 2)} context switches per request against "
                        f"{f_num(pw['daemon']['switches_per_req'], 2)} without batching.")
            why += (" What remains: no work in the daemon closes a gap of the delay's own making; a lone request "
                    "goes at once only with a shorter `max_queue_delay` (0: batches then form only from the "
                    "requests that queue while every instance is busy).")
        out.append(Goal(f"p50 at 1 connection, {model} with batching vs without",
                        f"within noise (≤ +{f_int(noise)} µs)",
                        f"{f_int(b1['p50_us'])} µs with batching, {f_int(p1['p50_us'])} µs without "
                        f"({f_signed(added, 0)} µs; max_queue_delay {f_num(delay_us / 1000, 0)} ms)", ok, why))

    figs = [(model, batch_key, plain_key, formation_figures(res, batch_key, plain_key))
            for batch_key, plain_key, model in BATCH_PAIRS if batch_key in srv]
    net, net_us = [], []
    for model, batch_key, plain_key, _ in figs:
        b, p = point(res, batch_key, GOAL12_CONNS), point(res, plain_key, GOAL12_CONNS)
        if b and p:
            net_us.append(b["root_cpu_us_per_req"] - p["root_cpu_us_per_req"])
            net.append(f"{model} {f_signed(net_us[-1])} µs")
    net_text = (f"the daemon's CPU per request with batching less without, in section 2's points at "
                f"{GOAL12_CONNS} connections: {', '.join(net)}") if net else ""
    perf = bcfg.get("perf")
    measured_figs = [(m, f) for m, _, _, f in figs if f]
    why = ""
    if measured_figs:
        conns = measured_figs[0][1]["profile"]["connections"]
        measured = "; ".join(
            f"{m} {f_num(f['total'], 2)} µs (forming {f_num(f['formation'], 2)}, extra client checks "
            f"{f_signed(f['client_check'], 2)}, batch entries in the parse {f_signed(f['parse'], 2)}; splitting "
            f"answers {f_num(f['split'], 2)} more)" for m, f in measured_figs)
        measured += f"; perf at {conns} connections"
        if net_text:
            measured += "; " + net_text
        ok = all(f["total"] <= GOAL12_FORMATION_US for _, f in measured_figs)
        if not ok:
            m, f = max(measured_figs, key=lambda x: x[1]["total"])
            top = ", ".join(f"`{sym}` {f_pct(share, 1)}" for sym, share in f["profile"]["top_leaves"]["formation"][:4])
            cc = f["profile"]["us_per_req"]["client_check"]
            why = (f"For the {m} the daemon spends {f_num(f['profile']['daemon_cpu_us_per_req'], 1)} µs of CPU per "
                   f"request under perf. The checks that queued clients are still there take {f_num(cc, 2)} µs of "
                   f"it, against {f_num(f['plain']['us_per_req']['client_check'], 2)} µs without batching: while "
                   f"an instance waits for its batch to fill, every arriving request runs `dispatch_batch` again, "
                   f"which walks the queue from its head and checks each queued member's client with a "
                   f"`recv(MSG_PEEK)` system call, so a request's share grows with the requests queued before it. "
                   f"The batching functions themselves (`{'`, `'.join(f['profile']['functions']['formation'])}`) "
                   f"take {f_num(f['formation'], 2)} µs; the samples in them were in {top} of all the daemon's "
                   f"samples. What remains: check a member's client once, when its batch is sent (as the path "
                   f"without batching checks a request once, when it is sent), and keep the batch being formed "
                   f"between arrivals instead of rebuilding it from the queue's head.")
    elif net:
        errors = sorted({v["error"] for v in (perf or {}).values() if v.get("error")})
        reason = "; ".join(errors) if errors else "the run skipped it (`BENCH_PERF=0`)"
        measured = (net_text[0].upper() + net_text[1:] + f" (no profile: {reason}; the net difference counts what "
                    f"batching saves as well as what it costs)")
        ok = max(net_us) <= GOAL12_FORMATION_US
        if not ok:
            why = ("The daemon spent more CPU per request with batching than without; without a profile the "
                   "share that is batch formation cannot be told apart.")
    else:
        measured, ok = "not measured", None
    out.append(Goal("batch formation overhead per request, in the daemon", f"≤ {GOAL12_FORMATION_US:g} µs",
                    measured, ok, why))

    rows = []
    for batch_key, _, model in BATCH_PAIRS:
        if batch_key in srv:
            rows.append(f"{model} " + " / ".join(f_batch(point(res, batch_key, c))
                                                 for c in scfg(res, "serving").get("connections", [])))
    largest = [((p.get("batch") or {}).get("largest_le")) for k, _, _ in BATCH_PAIRS if k in srv
               for p in srv[k]["points"]]
    largest = [x for x in largest if x is not None]
    # Not a goal of the issue: the figure behind the others.
    out.append(Goal("requests per batch, with batching (`corral_batch_size` sum ÷ count over each point)",
                    f"– (max_batch_size {bcfg.get('max_batch_size', '?')})",
                    "; ".join(rows) + f" at {', '.join(map(str, scfg(res, 'serving').get('connections', [])))} "
                    f"connections" + (f"; every batch ≤ {max(largest):g} rows (`corral_batch_size_bucket`)"
                                      if largest else ""), None))
    return out


def nobatch_why(res: dict, conns: int) -> str:
    """Why the Python echo without batching stays under uWSGI at conns connections, with pipelining on."""
    c, u = point(res, "corral", conns), point(res, "uwsgi", conns)
    if not c or not u:
        return ""
    text = ("Pipelining is on (`pipeline: 1`, the default): when both instances are busy, the daemon writes the "
            "next request to one of them ahead of time, so a worker finds it on finishing the last instead of "
            "sleeping until the daemon hears of the finish.")
    effect = before_after(res, "corral", "corral-nopipe", conns)
    if effect:
        text += (f" Against the same echo with `pipeline: 0` (each figure before → after, per request), "
                 f"pipeline 1 ÷ pipeline 0 was {effect}.")
    text += " " + cost_sentence(res, "corral", "uwsgi", "uWSGI", conns)
    daemon, workers = cpu_split(c)
    uw = u["cpu_us_per_req"]
    text += (f" What remains: every request still crosses two processes, and at {conns} connections the daemon "
             f"alone spends {f_num(daemon)} µs of CPU per request (HTTP, parsing the JSON and converting the "
             f"tensor, the frame to the worker and the answer back) and the workers {f_num(workers)} µs (the "
             f"SDK's decoding and encoding of the frame around the model), against {f_num(uw)} µs for uWSGI's "
             f"whole request; ")
    if workers > uw:
        text += ("the workers alone cost more than uWSGI's whole request, so no saving in the daemon closes the "
                 "gap by itself: the Python SDK's own path per request must shrink too, or batching share it.")
    else:
        text += (f"corral would need its two processes together under {f_num(uw)} µs, which leaves "
                 f"{f_num(uw - workers)} µs for the daemon beside these workers.")
    return text


def pipelining_reports(res: dict) -> List[Goal]:
    """Issue #12, item 3's effect, reported (not judged): each echo with pipelining ÷ pipeline 0 at the
    goals' connection counts, and the wake-ups and CPU per request before → after."""
    srv = servers(res)
    out: List[Goal] = []
    for nopipe_key, key, model in NOPIPE_PAIRS:
        if nopipe_key not in srv or key not in srv:
            continue
        parts = [x for x in (before_after(res, key, nopipe_key, c) for c in GOAL12_NOBATCH_CONNS) if x]
        out.append(Goal(f"pipelining: {model}, pipeline 1 ÷ pipeline 0, requests/s at "
                        + " and ".join(map(str, GOAL12_NOBATCH_CONNS)) + " connections; switches and CPU µs "
                        "per request, daemon and workers, before → after", "– (a report)",
                        "; ".join(parts) or "not measured", None))
    return out


def mem_median(mem: dict, key: str, field: str) -> Optional[float]:
    return median([r[key][field] for r in mem["reps"] if r.get(key) and r[key][field] is not None])


def median(xs: List[float]) -> Optional[float]:
    xs = sorted(xs)
    if not xs:
        return None
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


# ---- plots ----

def plot_throughput(res: dict, path: pathlib.Path) -> bool:
    srv = servers(res)
    if not srv:
        return False
    conns = scfg(res, "serving")["connections"]
    groups = [("Python echo (2 processes each)",
               [k for k in ("corral", "corral-nopipe", "corral-batch", "gunicorn", "uwsgi", "uvicorn") if k in srv]),
              ("C echo vs nginx `return 200` (2 processes each)",
               [k for k in ("corral-c", "corral-c-nopipe", "corral-c-batch", "nginx") if k in srv])]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, (title, keys) in zip(axes, groups):
        width = 0.8 / max(len(keys), 1)
        for i, key in enumerate(keys):
            # A series measured at only some connection counts (pipeline 0) has no bar at the others.
            at = [(j, point(res, key, c)) for j, c in enumerate(conns) if point(res, key, c)]
            color = COLORS.get(key, PEER_COLORS[i % len(PEER_COLORS)])
            xs = [j + (i - (len(keys) - 1) / 2) * width for j, _ in at]
            ax.bar(xs, [p["rps"] for _, p in at], width, label=srv[key]["label"], color=color)
        ax.set_xticks(range(len(conns)))
        ax.set_xticklabels([f"{c} conn." for c in conns])
        ax.set_ylabel("requests/s")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Inference throughput (wrk, POST KServe v2 JSON, higher is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_latency(res: dict, path: pathlib.Path) -> bool:
    srv = servers(res)
    if not srv:
        return False
    conns = scfg(res, "serving")["connections"]
    keys = [k for k in ("corral", "corral-nopipe", "corral-batch", "gunicorn", "uwsgi", "uvicorn", "corral-c",
                        "corral-c-nopipe", "corral-c-batch", "nginx") if k in srv]
    # Room under each panel for every server's name: wider with the batching series.
    fig, axes = plt.subplots(1, len(conns), figsize=(max(4.2, 0.68 * len(keys)) * len(conns), 4.8), squeeze=False)
    for ax, c in zip(axes[0], conns):
        # Only the servers measured at c (the pipeline 0 series are not measured at every count).
        here = [k for k in keys if point(res, k, c)]
        p50 = [point(res, k, c)["p50_us"] for k in here]
        p99 = [point(res, k, c)["p99_us"] for k in here]
        xs = range(len(here))
        colors = [COLORS.get(k, PEER_COLORS[keys.index(k) % len(PEER_COLORS)]) for k in here]
        ax.bar([x - 0.2 for x in xs], p50, 0.4, color=colors, label="p50")
        ax.bar([x + 0.2 for x in xs], p99, 0.4, color=colors, alpha=0.45, label="p99")
        ax.set_yscale("log")
        ax.set_xticks(list(xs))
        ax.set_xticklabels([srv[k]["label"].split(" (")[0].replace(", batching", "\nbatching")
                            .replace(", pipeline 0", "\npipeline 0") for k in here],
                           fontsize=7, rotation=30, ha="right")
        ax.set_title(f"{c} connection{'s' if c > 1 else ''}", fontsize=10)
        ax.set_ylabel("latency, µs (log)")
        ax.grid(axis="y", alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle("Inference latency: p50 (solid) and p99 (light), lower is better")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_queue(res: dict, path: pathlib.Path) -> bool:
    rows = (res.get("queue") or {}).get("rows")
    if not rows:
        return False
    impls = ["corral sched (C)", "asyncio.PriorityQueue", "heapq"]
    depths = sorted({r["depth"] for r in rows})
    ops = [("enqueue", "fill_drain", "enqueue_ns"), ("dequeue", "fill_drain", "dequeue_ns"),
           ("push+pop at depth", "steady", "mixed_ns")]
    fig, axes = plt.subplots(1, len(depths), figsize=(6 * len(depths), 4.2), squeeze=False)
    for ax, depth in zip(axes[0], depths):
        width = 0.8 / len(impls)
        for i, impl in enumerate(impls):
            vals = [(queue_row(res, impl, pat, depth) or {}).get(field, 0) for _, pat, field in ops]
            ax.bar([j + (i - 1) * width for j in range(len(ops))], vals, width, label=impl,
                   color=COLORS.get(impl, PEER_COLORS[i % len(PEER_COLORS)]))
        ax.set_yscale("log")
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo, hi * 12)  # room for the legend above the bars
        ax.set_xticks(range(len(ops)))
        ax.set_xticklabels([o[0] for o in ops])
        ax.set_ylabel("ns per operation (log)")
        ax.set_title(f"{depth:,} queued, 3 priority levels", fontsize=10)
        ax.grid(axis="y", alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="upper center", ncol=3)
    fig.suptitle("Scheduler queue, lower is better")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_cold_recovery(res: dict, path: pathlib.Path) -> bool:
    cold = res.get("cold_start")
    rec = (res.get("recovery") or {}).get("models") or {}
    if not cold and not rec:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    if cold:
        ns = [r["instances"] for r in cold["rows"]]
        ax = axes[0]
        xs = range(len(ns))
        ax.bar([x - 0.2 for x in xs], [r["seconds"] for r in cold["rows"]], 0.4, color=CORRAL_COLOR,
               label="corral (instances start concurrently)")
        ax.bar([x + 0.2 for x in xs], [r["sequential_s"] for r in cold["rows"]], 0.4, color=PEER_COLORS[0],
               label=f"sequential ({cold['load_delay_s']:g} s × N)")
        ax.set_xticks(list(xs))
        ax.set_xticklabels([f"{n} instance{'s' if n > 1 else ''}" for n in ns])
        ax.set_ylabel("seconds until ready")
        ax.set_title(f"Cold start, a model whose load takes {cold['load_delay_s']:g} s", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    if rec:
        ax = axes[1]
        keys = [k for k in ("python", "c") if k in rec]
        xs = range(len(keys))
        ax.bar([x - 0.27 for x in xs], [rec[k]["load_s"] * 1e3 for k in keys], 0.27, color=PEER_COLORS[0],
               label="load alone (p50)")
        ax.bar(list(xs), [rec[k]["p50_s"] * 1e3 for k in keys], 0.27, color=CORRAL_COLOR,
               label="kill -9 → served, p50")
        ax.bar([x + 0.27 for x in xs], [rec[k]["p99_s"] * 1e3 for k in keys], 0.27, color=CORRAL_COLOR, alpha=0.45,
               label="kill -9 → served, p99")
        ax.set_xticks(list(xs))
        ax.set_xticklabels([f"{rec[k]['model']}" for k in keys])
        ax.set_ylabel("milliseconds")
        ax.set_title(f"Recovery over {max(rec[k]['kills'] for k in keys)} kills", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ---- the page ----

def render(res: dict, plots: Dict[str, bool]) -> str:
    m = res["machine"]
    out: List[str] = []
    w = out.append
    w("# corral benchmarks\n")
    w(f"Generated by `make bench` ([bench/](../bench/)) on {res['started']}: do not edit by hand, run the bench "
      f"again. Every figure below was measured in the same run on the machine described here, and every "
      f"comparison is a ratio of two numbers measured side by side.\n")
    runs = sorted({(res[k].get("_run") or {}).get("started", res["started"]) for k in present(res)})
    if len(runs) > 1:
        w("> The sections below come from runs started at " + ", ".join(runs) + " (a partial run, `BENCH_ONLY`, "
          "refreshes only the sections it names); each section's settings are listed at the end.\n")
    if any(scfg(res, k).get("quick") for k in present(res)):
        w("> **Quick mode** (`BENCH_QUICK=1`): 1-second load points and few repetitions, on a machine that may "
          "have been busy. The numbers show that the bench works; run `make bench` on a quiet machine for "
          "figures worth quoting.\n")
    if res.get("errors"):
        w("> **Some measurements failed in this run:**\n")
        for k, e in res["errors"].items():
            w(f"> - {k}: `{e.splitlines()[0][:300]}`")
        w("")

    w("## The machine\n")
    w(table(["", ""], [
        ["CPU", m["cpu"]], ["cores", str(m["cores"])], ["memory", f"{m['memory_bytes'] / 2**30:.1f} GiB"],
        ["OS, kernel", f"{m['os']}, Linux {m['kernel']}"], ["Python (peers, Python workers)", m["python"]],
        ["corral", f"commit {m['corral_commit']}, `build/corral` (RelWithDebInfo: -O2)"],
        ["load average at start", " ".join(m["loadavg_at_start"])],
        ["bench run time", f"{sum((res[k].get('_run') or {}).get('seconds', 0) for k in present(res)):.0f} s "
                            f"(the sections' total)"],
        ["peers and tools (Debian packages)", ", ".join(f"{k} {v}" for k, v in m["packages"].items())],
    ], "ll"))
    w("")

    gl = goals(res)
    gl += [g for g in [clientshm_goal(res)] if g]
    gl += grpc_goals(res)
    gl += [g for g in [sessions_goal(res)] if g]
    gl12 = batching_goals(res)
    w("## Goals\n")
    w("The targets of issues #4, #10 (streaming), #11 (GET /metrics), #13 (client shared memory), #14 (gRPC) and #12 "
      "(batching and pipelining, the second "
      "table), against this run's numbers. They are targets for this report, not test assertions; each one "
      "not met is explained in [Where corral falls short](#where-corral-falls-short).\n")
    w(table(["goal", "target", "measured", ""], [[g.name, g.target, g.measured, verdict(g.ok)] for g in gl], "llll"))
    w("")
    if gl12:
        render_batching_goals(res, gl12, w)

    # 1. queue
    q = res.get("queue")
    if q:
        w("## 1. Scheduler queue\n")
        w("corral's per-model queue (`src/job.c`: one intrusive FIFO per priority level and a bitmap of "
          "non-empty levels) against Python's `asyncio.PriorityQueue` (`put_nowait`/`get_nowait`) and bare "
          "`heapq`, with entries `(priority, sequence, item)` so equal priorities stay FIFO. Priorities are "
          "drawn at random from 3 levels (the manifest default). *enqueue* and *dequeue*: fill an empty queue "
          "with N entries, then drain it (median per-op cost over many rounds). *push+pop at depth*: with N "
          "queued, push one and pop one repeatedly (cost per operation). Entries and jobs are made beforehand "
          "in both languages, so only the queue is timed.\n")
        rows = []
        for depth in sorted({r["depth"] for r in q["rows"]}):
            base_fd = queue_row(res, "corral sched (C)", "fill_drain", depth)
            base_st = queue_row(res, "corral sched (C)", "steady", depth)
            for impl in ("corral sched (C)", "asyncio.PriorityQueue", "heapq"):
                fd, st = queue_row(res, impl, "fill_drain", depth), queue_row(res, impl, "steady", depth)
                if not fd or not st:
                    continue
                speed = "–" if impl.startswith("corral") else (
                    f"{f_ratio(ratio(fd['enqueue_ns'], base_fd['enqueue_ns']))} / "
                    f"{f_ratio(ratio(fd['dequeue_ns'], base_fd['dequeue_ns']))} / "
                    f"{f_ratio(ratio(st['mixed_ns'], base_st['mixed_ns']))}")
                rows.append([f"{depth:,}", impl, f_num(fd["enqueue_ns"]), f_int(fd["enqueue_ops"]),
                             f_num(fd["dequeue_ns"]), f_int(fd["dequeue_ops"]), f_num(st["mixed_ns"]),
                             f_int(st["mixed_ops"]), speed])
        w(table(["queued", "implementation", "enqueue ns/op", "enqueue ops/s", "dequeue ns/op", "dequeue ops/s",
                 "push+pop ns/op", "push+pop ops/s", "corral faster by (enq / deq / push+pop)"], rows, "llrrrrrrr"))
        w("")
        ref = q["reference"]
        a1 = queue_row(res, "asyncio.PriorityQueue", "fill_drain", 1000)
        c1 = queue_row(res, "corral sched (C)", "fill_drain", 1000)
        if a1 and c1:
            w(f"The issue quotes `asyncio.PriorityQueue` at {ref['ops']:,} ops/s and {ref['enqueue_ns'] / 1000:g} µs "
              f"per enqueue on another machine; on this one it enqueues in {f_num(a1['enqueue_ns'])} ns "
              f"({f_int(a1['enqueue_ops'])} ops/s) with 1,000 queued, and corral's queue in "
              f"{f_num(c1['enqueue_ns'], 2)} ns ({f_int(c1['enqueue_ops'])} ops/s).\n")
        if plots.get("queue"):
            w("![Scheduler queue](bench-queue.png)\n")

    # 2. throughput and latency
    s = res.get("serving")
    if s and s.get("servers"):
        srv = s["servers"]
        cfg = scfg(res, "serving")
        w("## 2. Inference throughput and latency\n")
        rounds = cfg.get("rounds", 1)
        w(f"wrk with a Lua POST script ([bench/post.lua](../bench/post.lua)), {cfg['duration']} s per point after a "
          f"1 s warm-up, 2 threads (1 at one connection). Every server runs side by side, and the points are taken "
          f"in {rounds} round{'s' if rounds != 1 else ''}, every server in turn at each connection count; each "
          f"figure is from a server's median round by request rate (a shared machine's speed drifts, and "
          f"interleaving keeps that drift out of the ratios). Each request is a KServe v2 JSON inference request "
          f"with one FP32 tensor of shape [1, {s['elements']}] ({s['request_bytes']} bytes); every server "
          f"answers with the v2 response shape `{{model_name, model_version, outputs: [{{name, datatype, shape, "
          f"data}}]}}`, and its first answer is checked to be the echo before it is measured.\n")
        w("- **corral**: `examples/models/echo` (Python SDK, 2 instances, Debian's `/usr/bin/python3`) and "
          "`examples/models/echo-c` (C SDK, 2 instances), copied to a temporary repository.\n"
          "- **Python peers** serve the same echo ([bench/peers/echo_logic.py](../bench/peers/echo_logic.py)): "
          "parse the request, turn each input into a numpy array of its datatype and shape (what corral's "
          "Python model receives), rename it, and write the same JSON response. gunicorn runs it with 2 sync "
          "workers, uWSGI with 2 processes on its own HTTP socket, uvicorn (uvloop, httptools) with FastAPI "
          "and 2 worker processes; FastAPI's handler reads the raw body, its fastest path.\n"
          f"- **nginx** answers `return 200` with the C echo's response, byte for byte ({s['response_bytes_c']} "
          f"bytes), from 2 worker processes.\n"
          + (f"- **corral, batching** (issue #12): the same two echoes served as batching models beside the "
             f"others, by the same daemon: `examples/models/echo` with `batching: {{max_batch_size: "
             f"{s['batching']['max_batch_size']}, max_queue_delay: {s['batching']['max_queue_delay_ms']}ms}}` "
             f"added to its manifest, and `examples/models/echo-c-batch` (echo-c built into its own directory, "
             f"the same `batching`). Queued requests whose inputs match go to a worker as one `BATCH` message "
             f"([worker-protocol.md](worker-protocol.md#batches)) when it holds max_batch_size rows or its "
             f"oldest request has waited max_queue_delay; each request here is one row. Their figures, like "
             f"the others', are taken in the same rounds at the same connection counts; they take no large "
             f"tensors (a [N] tensor is N rows, more than a batch holds).\n" if s.get("batching") else "")
          + (f"- **corral, pipeline 0** (issue #12, item 3): the same two echoes with `pipeline: 0` added to "
             f"their manifests, by the same daemon: nothing is sent ahead to a busy instance, so each request "
             f"waits in the daemon's queue until a worker has answered its last, as before pipelining. corral's "
             f"echoes as they are pipeline (`pipeline: 1`, the default: when every instance is busy, up to one "
             f"more request is written to one of them ahead of time; [worker-protocol.md]"
             f"(worker-protocol.md#pipelining)). Taken in the same rounds, next to their echo, at "
             f"{' and '.join(map(str, s['pipelining']['off_connections']))} connections only: with no more "
             f"connections than the 2 instances nothing ever waits for a busy one, and both take the same path. "
             f"No large tensors: one that large goes through shared memory and is never pipelined.\n"
             if s.get("pipelining") else "")
          + "- *server CPU/req* is the CPU time of the server's whole process tree during the point divided by "
          "the requests served (for corral: daemon and workers; the daemon's share is in brackets). wrk runs "
          "on the same cores.\n")
        for title, keys, base_key, batch_key in (
                ("Python echo", ["corral", "corral-nopipe", "corral-batch", "gunicorn", "uwsgi", "uvicorn"], "corral",
                 "corral-batch"),
                ("C echo against nginx `return 200`", ["corral-c", "corral-c-nopipe", "corral-c-batch", "nginx"],
                 "corral-c", "corral-c-batch")):
            keys = [k for k in keys if k in srv]
            if not keys:
                continue
            batched = batch_key in srv
            w(f"### {title}\n")
            rows = []
            for conns in cfg["connections"]:
                base, bbase = point(res, base_key, conns), point(res, batch_key, conns)
                for key in keys:
                    p = point(res, key, conns)
                    if not p:
                        continue
                    cpu = f_num(p["cpu_us_per_req"])
                    if key.startswith("corral"):
                        cpu += f" ({f_num(p['root_cpu_us_per_req'])})"
                    is_base = key == base_key
                    row = [str(conns), srv[key]["label"], f_int(p["rps"]), f_int(p["p50_us"]),
                           f_int(p["p99_us"]), cpu, str(p["errors"]),
                           "–" if is_base else f_ratio(ratio(base and base["rps"], p["rps"])),
                           "–" if is_base else f_ratio(ratio(base and base["p50_us"], p["p50_us"])),
                           "–" if is_base else f_ratio(ratio(base and base["p99_us"], p["p99_us"]))]
                    if batched:
                        row.append("–" if key == batch_key else f_ratio(ratio(bbase and bbase["rps"], p["rps"])))
                    rows.append(row)
            header = ["conn.", "server", "req/s", "p50 µs", "p99 µs", "server CPU/req µs", "errors",
                      "corral ÷ it, req/s", "corral ÷ it, p50", "corral ÷ it, p99"]
            if batched:
                header.append("corral with batching ÷ it, req/s")
            w(table(header, rows, "ll" + "r" * (len(header) - 2)))
            w("")
            piped = any(k in keys for k, _, _ in NOPIPE_PAIRS)
            w("Ratios: *corral* is the first row, without batching and with pipelining, as by default"
              + (" (so its ratios to the pipeline 0 row are pipelining's effect)" if piped else "")
              + "; above 1× in *req/s* means corral serves more; below 1× in *p50*/*p99* means corral answers "
              "sooner.\n")
        if plots.get("throughput"):
            w("![Throughput](bench-throughput.png)\n")
        if plots.get("latency"):
            w("![Latency](bench-latency.png)\n")
        render_wakeups(res, w)

    # 3. added latency
    rtt = res.get("worker_rtt")
    if rtt and s and s.get("servers"):
        w("## 3. Added latency\n")
        w("What corral adds to a request, beyond what the worker itself costs. *worker alone* is the model's own "
          "worker process, started without the daemon and driven over its protocol socket by a small C program "
          "([bench/worker_rtt.c](../bench/worker_rtt.c)) that sends the same INFER frame the daemon sends for "
          "this request, one at a time, and times each INFER → INFER_RESULT round trip. corral's figures are "
          "wrk's at one connection (section 2). *HTTP floor* is nginx `return 200` at one connection: what wrk, "
          "the loopback and one HTTP exchange cost on their own.\n")
        rows = []
        n1 = point(res, "nginx", 1)
        for key, label, ckey in (("python", "Python echo", "corral"), ("c", "C echo", "corral-c")):
            c1, r = point(res, ckey, 1), rtt.get(key)
            if not c1 or not r:
                continue
            rows.append([label, f_int(c1["p50_us"]), f_num(r["p50_us"]), f"**{f_int(c1['p50_us'] - r['p50_us'])}**",
                         f_int(c1["p99_us"]), f_num(r["p99_us"]), f_int(c1["p99_us"] - r["p99_us"]),
                         f_int(n1 and n1["p50_us"]),
                         f_int(n1 and c1["p50_us"] - r["p50_us"] - n1["p50_us"])])
        w(table(["model", "corral p50 µs", "worker alone p50 µs", "added p50 µs", "corral p99 µs",
                 "worker alone p99 µs", "added p99 µs", "HTTP floor p50 µs", "added p50 beyond the floor µs"],
                rows, "lrrrrrrrr"))
        w("")
        pp = rtt.get("pingpong")
        if pp:
            w(f"*A round trip between two processes* that do nothing else ([bench/pingpong.c](../bench/pingpong.c): "
              f"64 bytes back and forth over a socket pair, each side asleep in `read` between turns) takes "
              f"{f_num(pp['p50_us'])} µs at the median on this machine ({f_num(pp['p99_us'])} µs at p99). That is "
              f"the cost of waking a process on another CPU, twice; the worker-alone figures above include one such "
              f"round trip, and a request through corral makes one more (client to daemon) besides HTTP.\n")
        if rtt.get("c") and rtt.get("python") and rtt["c"]["p50_us"] > rtt["python"]["p50_us"]:
            w(f"The C worker alone answers more slowly than the Python one here ({f_num(rtt['c']['p50_us'])} vs "
              f"{f_num(rtt['python']['p50_us'])} µs at the median): that time is spent in the C worker's own request "
              f"path (`sdk/c` and `examples/models/echo-c`), not in the daemon.\n")

    # 4. large tensors
    if s and s.get("servers"):
        cfg = scfg(res, "serving")
        mibs = cfg["tensor_mib"]
        keys = [k for k in ("corral", "corral-c", "gunicorn", "uwsgi", "uvicorn") if k in srv and srv[k].get("tensors")]
        if keys:
            w("## 4. Large tensors\n")
            w("One FP32 tensor sent with the binary tensor extension (`Inference-Header-Content-Length`, "
              "`binary_data_size`) and asked back as binary (`binary_data_output`), through each echo; timed by "
              "curl (a C client), median of the round trips after one checked warm-up (whose answer is compared "
              "byte for byte). MB/s = tensor bytes ÷ round-trip time (10^6 bytes; each round trip carries the "
              "tensor both ways). The Python peers decode and encode the binary extension with numpy. *loopback "
              "floor*: the same bytes echoed over a bare loopback TCP connection with no HTTP and no work: what "
              "this machine can move at all.\n")
            header = ["server"]
            for mib in mibs:
                header += [f"{mib} MiB, MB/s", f"{mib} MiB, ms"]
            header += [f"corral (Python echo) ÷ it, {mib} MiB" for mib in mibs]
            rows = []
            for key in keys:
                row = [srv[key]["label"]]
                for mib in mibs:
                    t = tensor(res, key, mib)
                    row += [f_int(t and t["mb_s"]), f_num(t and t["seconds_median"] * 1e3)]
                for mib in mibs:
                    t, b = tensor(res, key, mib), tensor(res, "corral", mib)
                    row.append("–" if key == "corral" else f_ratio(ratio(b and b["mb_s"], t and t["mb_s"])))
                rows.append(row)
            row = ["loopback floor (TCP echo, no HTTP)"]
            for mib in mibs:
                fl = floor(res, mib)
                row += [f_int(fl and fl["mb_s"]), f_num(fl and fl["seconds_median"] * 1e3)]
            for mib in mibs:
                fl, b = floor(res, mib), tensor(res, "corral", mib)
                row.append(f_ratio(ratio(b and b["mb_s"], fl and fl["mb_s"])))
            rows.append(row)
            w(table(header, rows))
            w("")

    # 5. cold start
    cold = res.get("cold_start")
    if cold:
        cfg = scfg(res, "cold_start")
        w("## 5. Cold start\n")
        w(f"A Python model whose `load` sleeps {cold['load_delay_s']:g} s ([bench/models/slowload](../bench/models/"
          f"slowload/worker.py)), loaded with `POST /v2/repository/models/slowload/load {{\"instances\": N}}`, "
          f"which answers once every instance is ready; then unloaded. Median of {cfg['reps']} load(s) per N. "
          f"Starting the instances one after another would take {cold['load_delay_s']:g} s × N.\n")
        rows = []
        one = next((r for r in cold["rows"] if r["instances"] == 1), None)
        for r in cold["rows"]:
            rows.append([str(r["instances"]), f_num(r["seconds"], 3), f"{r['sequential_s']:g}",
                         f_ratio(ratio(r["seconds"], r["sequential_s"])),
                         f_ratio(ratio(r["seconds"], one and one["seconds"]))])
        w(table(["instances", "corral, s until ready", "sequential, s", "corral ÷ sequential",
                 "corral ÷ one instance"], rows, "rrrrr"))
        w("")

    # 6. memory
    mem = res.get("memory")
    if mem and mem["reps"] and "host_used" in mem["reps"][0]:
        w("## 6. Memory reclaim\n")
        w(f"A Python model whose `load` allocates and writes {mem['alloc_mib']} MiB ([bench/models/alloc]"
          f"(../bench/models/alloc/worker.py)), read before the load, once loaded, and after the unload, "
          f"{mem['settle_s']:g} s after each step. One load/unload cycle runs first, unmeasured. Median of "
          f"{len(mem['reps'])} cycle(s); *returned* = (loaded − after unload) ÷ (loaded − before).\n")
        w("- *host in use* is `MemTotal − MemAvailable` from `/proc/meminfo`.\n"
          "- The kernel keeps freed pages on per-CPU free lists (the pagesets of `/proc/zoneinfo`), which "
          "`MemFree` does not count, and drains them only slowly: right after a 512 MiB process exits, tens of "
          "MiB can sit there, free. *less the per-CPU free lists* subtracts them, and is the figure the goal "
          "is read on.\n"
          "- *anonymous memory* is `AnonPages`: what every process on the host holds.\n"
          "- *corral's process tree* is the RSS of the daemon, its guards and its workers.\n")
        rows = []
        for key, label, digits in (("host_used", "host in use", 1),
                                   ("host_used_less_pcp", "host in use, less the per-CPU free lists", 1),
                                   ("host_pcp_free", "per-CPU free lists (free, not counted by MemFree)", 1),
                                   ("host_anon", "host anonymous memory (AnonPages)", 1),
                                   ("tree", "corral's process tree, RSS", 2)):
            frac = "–" if key == "host_pcp_free" else f_pct(mem_median(mem, key, "returned_fraction"), digits)
            rows.append([label, f_mib(mem_median(mem, key, "before")), f_mib(mem_median(mem, key, "loaded")),
                         f_mib(mem_median(mem, key, "unloaded")), frac])
        inst = median([r["instance_rss_reported"] for r in mem["reps"]])
        rows.append(["the instance as corral reports it (`rss_bytes`)", "–", f_mib(inst), "–", "–"])
        w(table(["", "before load", "loaded", "after unload", "returned on unload"], rows, "lrrrr"))
        w("")

    # 7. recovery
    rec = (res.get("recovery") or {}).get("models")
    if rec:
        w("## 7. Recovery\n")
        w(f"One instance per model. Each time: wait until the instance has been ready for longer than the "
          f"manifest's `restart.window` ({res['recovery']['restart_window_ms']} ms here, so that each crash "
          f"counts as one after a healthy run, which restarts at once; a crash inside the window would wait "
          f"`backoff_min` first), `kill -9` the worker's pid taken from `/v1/models`, then send the same "
          f"inference request until one is answered 200, and check that the pid changed. The time is from the "
          f"kill to that answer. *load alone* is the median time to load the same model with one instance "
          f"(`POST .../load`), which a replacement cannot beat.\n")
        rows = []
        for key in ("python", "c"):
            r = rec.get(key)
            if not r:
                continue
            rows.append([r["model"], str(r["kills"]), f_num(r["p50_s"] * 1e3), f_num(r["p99_s"] * 1e3),
                         f_num(r["max_s"] * 1e3), f_num(r["load_s"] * 1e3), f_num((r["p50_s"] - r["load_s"]) * 1e3),
                         f_ratio(ratio(r["p50_s"], r["load_s"])),
                         ", ".join(f"{n}× {'no answer' if st == '0' else st}" for st, n in sorted(r.get("refused", {}).items()))
                         or "none"])
        w(table(["model", "kills", "p50 ms", "p99 ms", "max ms", "load alone ms", "p50 − load ms",
                 "p50 ÷ load alone", "answers before the 200 (all kills)"], rows, "lrrrrrrrr"))
        w("")
        if plots.get("coldstart"):
            w("![Cold start and recovery](bench-coldstart.png)\n")

    # 8. idle
    idle = res.get("idle")
    if idle and idle.get("rows"):
        rows_in = idle["rows"]
        base = rows_in.get("corral")
        cfg = scfg(res, "idle")
        w("## 8. Idle cost\n")
        w(f"Resident memory and CPU while nothing is asked, over {cfg['idle_s']:g} s: corral with 3 models loaded "
          f"(echo with 2 instances, echo-c, tts-espeak), and each Python peer serving its one echo app. The "
          f"*supervisor* is the daemon, or the peer's master process; *all processes* adds the workers (and "
          f"corral's guard processes). CPU from the kernel's per-thread accounting (`schedstat`).\n")
        rows = []
        for key, r in rows_in.items():
            is_base = key == "corral"
            rows.append([r["label"], f_mib(r["leader_rss"]), f_num(r["leader_cpu_pct"], 3),
                         str(r["processes"]), f_mib(r["tree_rss"]), f_num(r["tree_cpu_pct"], 3),
                         "–" if is_base else f_ratio(ratio(base and base["leader_rss"], r["leader_rss"])),
                         "–" if is_base else f_ratio(ratio(base and base["leader_cpu_pct"], r["leader_cpu_pct"]))])
        w(table(["server", "supervisor RSS", "supervisor CPU %", "processes", "all processes RSS",
                 "all processes CPU %", "corral ÷ it, supervisor RSS", "corral ÷ it, supervisor CPU"], rows,
                "lrrrrrrr"))
        w("")
        w("An idle corral daemon still runs its timers: a memory sample of every worker once a second (one pass "
          "over `/proc/*/stat`, for `limits.memory`, `--memory-budget` and autoscaling) and a health ping to "
          "each worker every 10 s ([supervision.md](supervision.md)). A ratio of – means the peer's figure was "
          "zero within the kernel's accounting.")
        w("")

    render_streaming(res, w)
    render_metrics(res, w)
    render_clientshm(res, w)
    render_grpc(res, w)
    render_sessions(res, w)

    # shortfalls
    w("## Where corral falls short\n")
    gl = gl + gl12
    short = [g for g in gl if g.ok is False]
    if not short:
        w("Every goal measured in this run was met.\n")
    for g in short:
        w(f"- **{g.name}** (target {g.target}; measured {g.measured}). {g.why}")
    if short:
        w("")
    met = [g for g in gl if g.ok]
    if met:
        w("Met in this run: " + "; ".join(f"{g.name} ({g.measured.split(' (')[0]})" for g in met) + ".\n")

    # commands
    w("## How to run it, and the exact commands\n")
    w("```sh\nmake bench                 # installs the peers (bench/deps.sh), builds, measures, writes this page\n"
      "BENCH_QUICK=1 make bench   # 1 s points, fewer repetitions: a check that everything works\n"
      "BENCH_ONLY=streaming make bench   # some sections only; the others keep their last results\n"
      "/usr/bin/python3 bench/report.py   # rewrite this page from build/bench/results.json\n```\n")
    w("Settings (environment variables in [bench/README.md](../bench/README.md)):\n")
    groups: Dict[str, List[str]] = {}
    for k in present(res):
        groups.setdefault(json.dumps(scfg(res, k), sort_keys=True), []).append(k)
    for text, keys in groups.items():
        label = "" if len(groups) == 1 else f"# sections: {', '.join(keys)}\n"
        w("```\n" + label + "\n".join(f"{k} = {v}" for k, v in json.loads(text).items()) + "\n```\n")
    w("Every command the bench ran, as it ran it, from the repository's root (`$TMP` is the bench's temporary "
      "directory, `$REPO` the repository; ports are ephemeral, chosen at run time; `worker_rtt` gets the "
      "worker's socket as FD, `stream_rtt` its two sockets as FD and HEALTH_FD, both the LOAD message as "
      "LOAD_JSON; `sse_reader` and `metrics_scrape` get corral's PORT, `metrics_scrape fds` the daemon's PID):\n")
    w("```sh")
    seen = set()
    for k in present(res):
        for label, line in ((res[k].get("_run") or {}).get("commands") or {}).items():
            if label in seen:
                continue
            seen.add(label)
            w(f"# {label}")
            # Commands run from the repository's root; one run elsewhere names it $REPO.
            if line.startswith("(cd "):
                w(line.replace(str(ROOT), "$REPO"))
            else:
                w(line.replace(str(ROOT) + "/", "").replace(str(ROOT), "."))
    w("```\n")
    manifests: Dict[str, str] = {}
    for k in present(res):
        for name, text in ((res[k].get("_run") or {}).get("manifests") or {}).items():
            if text not in manifests.values():
                manifests[name if name not in manifests else f"{name} ({k})"] = text
    if manifests:
        w("The manifests of the bench's model copies:\n")
        for name, text in manifests.items():
            w(f"`{name}`:\n\n```yaml\n{text.rstrip()}\n```\n")
    return "\n".join(out).rstrip() + "\n"


def render_batching_goals(res: dict, gl12: List[Goal], w) -> None:
    """The goals of issue #12, item 5, and item 3's pipelining report, in a table of their own under the others."""
    b = batching(res)
    srv = servers(res)
    batched = any(k in srv for k, _, _ in BATCH_PAIRS)
    piped = any(k in srv for k, _, _ in NOPIPE_PAIRS)
    w("### Issue #12: dynamic batching and pipelining\n")
    pipe = ("the echo as it is, which pipelines (item 3: `pipeline: 1`, the default, one request sent ahead to a "
            "busy worker)" + ("; *pipeline 0* is the same echo with `pipeline: 0`, the daemon as it was before "
                              "pipelining. The pipelining rows report its effect, before → after, and are not "
                              "judged." if piped else
                              "; this run has no pipeline 0 series (`BENCH_NOPIPE=0`) to show the before."))
    if batched:
        w(f"Item 5's goals, read on section 2's points of this run (each series' median round, every series in "
          f"the same rounds) and on its perf profile of the daemon. *With batching* is the same echo served as a "
          f"batching model (`batching: {{max_batch_size: {b.get('max_batch_size', '?')}, max_queue_delay: "
          f"{b.get('max_queue_delay_ms', '?')}ms}}`); *without* is {pipe}\n")
    else:
        w(f"This run has no batching series (`BENCH_BATCHING=0`), so item 5's goals are not read; what is left is "
          f"pipelining's report, on section 2's points (each series' median round, every series in the same "
          f"rounds). *pipeline 1* is {pipe}\n")
    w(table(["goal", "target", "measured", ""], [[g.name, g.target, g.measured, verdict(g.ok)] for g in gl12],
            "llll"))
    w("")
    slower = []
    for batch_key, plain_key, model in BATCH_PAIRS:
        for conns in scfg(res, "serving").get("connections", []):
            bp, pp = point(res, batch_key, conns), point(res, plain_key, conns)
            if conns > 1 and bp and pp and bp["rps"] < pp["rps"]:
                slower.append(f"the {model} at {conns} connections ({f_int(bp['rps'])} against {f_int(pp['rps'])} "
                              f"req/s, {f_batch(bp)} requests per batch, p50 {f_int(bp['p50_us'])} µs against "
                              f"{f_int(pp['p50_us'])} µs)")
    if slower:
        w(f"Batching served fewer requests than no batching for {'; '.join(slower)}. With fewer connections in "
          f"flight than max_batch_size, a batch cannot fill: it goes when its oldest request has waited "
          f"max_queue_delay, and every client waits that long for each answer.\n")


def f_split(role: dict, total: str, a: str, b: str, digits: int) -> str:
    return f"{f_num(role[total], digits)} ({f_num(role[a], digits)} + {f_num(role[b], digits)})"


def render_wakeups(res: dict, w) -> None:
    """Section 2's wake-ups (issue #12, item 4): context switches and CPU per request, by process."""
    srv = servers(res)
    keys = [k for k in ("corral", "corral-nopipe", "corral-batch", "uwsgi", "corral-c", "corral-c-nopipe",
                        "corral-c-batch", "nginx") if k in srv]
    if not any(p.get("wakeups") for k in keys for p in srv[k]["points"]):
        return
    batched = any(k in srv for k, _, _ in BATCH_PAIRS)
    piped = any(k in srv for k, _, _ in NOPIPE_PAIRS)
    serving, cfg = res["serving"], scfg(res, "serving")
    w(f"### Wake-ups per request, {wakeups_stage(res)}\n")
    w("Read from `/proc` around the same wrk points as the table above (the median round's), measured by "
      "`make bench`, or by `BENCH_ONLY=serving make bench` alone. *Switches/req* are the context switches of "
      "the processes during the point, summed over all their threads (`voluntary_ctxt_switches`, a thread "
      "going to sleep because it has nothing to do, + `nonvoluntary_ctxt_switches`, a thread preempted; "
      "`/proc/PID/task/*/status`), divided by the requests wrk completed. *CPU µs/req* is `utime` + `stime` "
      f"of `/proc/PID/stat` (every thread; clock ticks of {f_num(1000 / serving.get('clk_tck', 100), 0)} ms, so "
      "±1 tick per process over the point), user + system, over the same requests. For corral the daemon is "
      "`corral serve`, and the workers are the model's 2 worker processes named by `/v1/models` (the "
      "process running the SDK and the model, with its reader and health threads; not its `corral-shim __shim` "
      "guard, counted apart below); the other models' workers are left out. For the peers the first columns "
      "are the master process (uWSGI's master, nginx's master), which takes no part in a request, and the "
      "workers are every process below it. A request through corral wakes the daemon (the client's bytes, "
      "then the worker's answer) and a worker (the INFER frame); a peer's worker alone does the whole "
      "request. With pipelining (corral's echoes as they are) a busy worker is sent the next request before "
      "it finishes the last, and finds it without going to sleep"
      + ("; in the rows marked pipeline 0 (measured only with more connections than instances) every "
         "request waits in the daemon until a worker is free, and the worker sleeps between requests." if piped
         else ".")
      + (" With batching a worker is woken once per batch (the BATCH frame) and the daemon once per batch's "
         "answer; *requests per batch* is rows per model execution over the point, from the model's "
         "`corral_batch_size_sum` ÷ `corral_batch_size_count` on `GET /metrics` read before and after it (1 "
         "for a model without batching: every request is its own execution)." if batched else "") + "\n")
    rows = []
    for conns in cfg.get("connections", []):
        for key in keys:
            p = point(res, key, conns)
            if not p or not p.get("wakeups"):
                continue
            d, wk = p["wakeups"]["daemon"], p["wakeups"]["workers"]
            is_corral = key.startswith("corral")
            rows.append([str(conns), srv[key]["label"], f_int(p["rps"]),
                         f_split(d, "switches_per_req", "voluntary_per_req", "involuntary_per_req", 2)
                         if is_corral else f"{f_num(d['switches_per_req'], 2)}",
                         f_split(d, "cpu_us_per_req", "user_us_per_req", "sys_us_per_req", 1)
                         if is_corral else f"{f_num(d['cpu_us_per_req'], 1)}",
                         f_split(wk, "switches_per_req", "voluntary_per_req", "involuntary_per_req", 2),
                         f_split(wk, "cpu_us_per_req", "user_us_per_req", "sys_us_per_req", 1),
                         f_num(d["switches_per_req"] + wk["switches_per_req"], 2)]
                        + ([f_batch(p)] if batched else []))
    header = ["conn.", "server", "req/s", "daemon (peer: master) switches/req (vol. + invol.)",
              "daemon (peer: master) CPU µs/req (user + sys)", "workers switches/req (vol. + invol.)",
              "workers CPU µs/req (user + sys)", "all switches/req"] + (["requests per batch"] if batched else [])
    w(table(header, rows, "ll" + "r" * (len(header) - 2)))
    w("")
    guards = [p["wakeups"]["guards"] for k in ("corral", "corral-c") if k in srv
              for p in srv[k]["points"] if p.get("wakeups") and "guards" in p["wakeups"]]
    if guards:
        w(f"The guards (`corral-shim __shim`, one above each worker) slept through the load: at most "
          f"{f_num(max(g['switches_per_req'] for g in guards) * 1000, 1)} context switches and "
          f"{f_num(max(g['cpu_us_per_req'] for g in guards) * 1000, 1)} µs of CPU per 1,000 requests at any "
          f"point.\n")
    missing = sorted({pid for k in keys for p in srv[k]["points"] if p.get("wakeups")
                      for r in p["wakeups"].values() for pid in r["missing"]})
    if missing:
        w(f"> Some processes exited during a point and are not counted: pids {', '.join(map(str, missing))}.\n")
    render_profile(res, w)


def render_profile(res: dict, w) -> None:
    """Section 2's perf profile of the daemon (issue #12: what forming batches costs it)."""
    prof = batching(res).get("perf")
    if prof is None:
        return
    srv = servers(res)
    w("### What batching costs the daemon (perf)\n")
    errors = {k: v["error"] for k, v in prof.items() if "error" in v}
    good = {k: v for k, v in prof.items() if "error" not in v}
    if not good:
        w(f"Not profiled: {'; '.join(sorted(set(errors.values()))) or 'no profile was taken'}.\n")
        return
    any_prof = next(iter(good.values()))
    fs = any_prof["functions"]
    w(f"After the rounds, each corral series runs once more at {any_prof['connections']} connections for the same "
      f"duration with `perf record -F 1999 --call-graph dwarf` on the daemon alone (so these figures are not "
      f"the points' above, and perf's own cost slows them). Each sample is charged to the first of these "
      f"functions on its stack, leaf first, callees included: *forming batches* "
      f"(`{'`, `'.join(fs['formation'])}`), *splitting answers* (`{'`, `'.join(fs['split'])}`), *parsing "
      f"requests* (`{'`, `'.join(fs['parse'])}`, which builds each request's batch entry inline when its model "
      f"batches) and *checking clients* (`{'`, `'.join(fs['client_check'])}`, a `recv(MSG_PEEK)` on the "
      f"client's socket); the search stops at what every request does with or without batching (sending a "
      f"frame, answering a request). A category's µs per request is its share of the daemon's samples times "
      f"the daemon's CPU per request over the same run. *Formation per request* is forming, plus parsing and "
      f"checking clients beyond what they cost without batching in the same echo's profile (a difference below "
      f"zero is the profiles' noise and counts as zero).\n")
    rows = []
    for batch_key, plain_key, model in BATCH_PAIRS:
        for key in (plain_key, batch_key):
            v = good.get(key)
            if not v:
                continue
            u = v["us_per_req"]
            f = formation_figures(res, batch_key, plain_key) if key == batch_key else None
            rows.append([srv[key]["label"] if key in srv else key, f_int(v["rps"]), str(v["samples"]),
                         f_num(v["daemon_cpu_us_per_req"], 1), f_num(u["formation"], 2), f_num(u["split"], 2),
                         f_num(u["parse"], 2), f_num(u["client_check"], 2),
                         f"**{f_num(f['total'], 2)}**" if f else "–"])
    w(table(["series", "req/s under perf", "samples", "daemon CPU µs/req", "forming batches µs/req",
             "splitting answers µs/req", "parsing requests µs/req", "checking clients µs/req",
             "formation per request µs"], rows, "lrrrrrrrr"))
    w("")
    for k, e in sorted(errors.items()):
        w(f"> {srv[k]['label'] if k in srv else k}: not profiled: {e}.\n")


def render_streaming(res: dict, w) -> None:
    """Section 9: streamed answers (issue #10)."""
    st = res.get("streaming")
    if not st:
        return
    w("## 9. Streaming\n")
    w("Streamed `generate` answers (`\"stream\": true`; [api.md](api.md), [worker-protocol.md]"
      "(worker-protocol.md#streams)), each figure beside the same model's worker driven directly over its "
      "sockets. Measured by `make bench`, or this section alone by `BENCH_ONLY=streaming make bench`.\n")
    tts = st.get("tts")
    if tts:
        p = tts["paths"]
        whole = p["whole"]["end_s"]
        w("### Time to first audio\n")
        w(f"`examples/models/tts-espeak` (C SDK, libespeak-ng, voice `en` at 175 words a minute) speaking a "
          f"{tts['words']}-word text ({f_num(tts['audio_s'])} s of audio), each request on a fresh HTTP/1.1 "
          f"connection from Python's `http.client`, the answer read as it arrives. *Streamed*: `{{\"text\": ..., "
          f"\"stream\": true}}`, a chunked WAV whose 44-byte header comes first, then the samples as espeak makes "
          f"them; *first audio* is the first byte after the header. *Whole WAV*: the same request without "
          f"`stream`. The *whole-file peer* ([bench/peers/tts_whole.py](../bench/peers/tts_whole.py)) is Python's "
          f"`http.server` running `espeak-ng --stdout` once per request and answering the finished file, so its "
          f"first byte comes when its last is ready; *espeak-ng alone* is the same command line timed without "
          f"HTTP. Medians of {tts['runs']} rounds, every path in turn, after one checked warm-up round.\n")
        rows = []
        for key, label in (("stream", "corral, streamed"), ("whole", "corral, whole WAV"),
                           ("peer", "whole-file peer (http.server + espeak-ng --stdout)")):
            r = p[key]
            rows.append([label, f_num(r["first_byte_s"] * 1e3), f_num(r["first_audio_s"] * 1e3),
                         f_num(r["end_s"] * 1e3), f_ratio(ratio(r["first_audio_s"], whole))])
        rows.append(["espeak-ng alone (command line, no HTTP)", "–", "–", f_num(p["cli"]["end_s"] * 1e3), "–"])
        w(table(["path", "first byte ms", "first audio ms", "last byte ms", "first audio ÷ corral's whole WAV"],
                rows, "lrrrr"))
        w("")
        w(f"Streamed, the first audio comes after {f_num(p['stream']['first_audio_s'] * 1e3)} ms, "
          f"{f_ratio(tts['first_audio_over_whole'])} the time the whole WAV takes through corral "
          f"({f_num(whole * 1e3)} ms) and {f_ratio(ratio(p['stream']['first_audio_s'], p['peer']['end_s']))} the "
          f"whole-file peer's ({f_num(p['peer']['end_s'] * 1e3)} ms); the stream's last byte comes after "
          f"{f_num(p['stream']['end_s'] * 1e3)} ms.\n")
    fc = st.get("first_chunk")
    if fc:
        c, wk = fc["corral"], fc["worker"]
        w("### Time to first chunk\n")
        w(f"`examples/models/echo-c` (C SDK, 1 instance) answering `{{\"chunks\": [{{\"i\": 0}}], \"stream\": true}}` "
          f"with one event, one request after another: {fc['requests']:,} in {fc['rounds']} round(s), both paths in "
          f"turn, each round after a warm-up; every figure is the median of the rounds'. *Through corral*: "
          f"[bench/sse_reader.c](../bench/sse_reader.c), a C client on one keep-alive HTTP/1.1 connection, times "
          f"the request's send to the first bytes of the body (`data:`). *Worker alone*: "
          f"[bench/stream_rtt.c](../bench/stream_rtt.c) plays the daemon on the worker's socket pair (and gives it "
          f"the health socket, as the daemon does) and times the same GENERATE frame's send to the first CHUNK. "
          f"The difference is what corral adds.\n")
        rows = [["through corral (HTTP/1.1, keep-alive)", f_num(c["p50_us"]), f_num(c["p90_us"]), f_num(c["p99_us"]),
                 f_num(c["end_p50_us"])],
                ["echo-c alone (its socket pair)", f_num(wk["p50_us"]), f_num(wk["p90_us"]), f_num(wk["p99_us"]),
                 f_num(wk["end_p50_us"])],
                ["**added by corral**", f"**{f_num(fc['added_p50_us'])}**", f_num(fc["added_p90_us"]),
                 f_num(c["p99_us"] - wk["p99_us"]), f_num(c["end_p50_us"] - wk["end_p50_us"])]]
        w(table(["path", "first chunk p50 µs", "p90 µs", "p99 µs", "stream's end p50 µs"], rows, "lrrrr"))
        w("")
    pipe = st.get("pipe")
    if pipe:
        c, b = pipe["corral"], pipe["bare"]
        n = pipe["chunks"]
        w("### Chunks per second through one stream\n")
        w(f"echo-c streaming {n:,} small events (`{{\"i\": n}}`; a {f_mib(pipe['request_bytes'])} request, "
          f"{f_mib(pipe['sse_bytes'])} of server-sent events back) as fast as it can. *Through corral*: "
          f"sse_reader reads the stream over HTTP/1.1, decoding the chunked body and counting events without "
          f"copying them, and every stream is checked to carry all {n:,} events, byte count exact. *Bare pipe*: "
          f"stream_rtt reads the same {n:,} CHUNK frames straight from a fresh echo-c worker over its socket pair "
          f"and credits them in batches of a quarter window, the daemon's batch (and what it owes whenever the "
          f"worker has been silent for 1 ms): fewer CREDIT frames than the daemon sends a fast client, each of "
          f"which wakes the worker's health thread, so its flow control costs the worker as little as the "
          f"protocol allows. "
          f"*chunks/s* counts from the first chunk to the last; the whole request also includes sending the "
          f"request and both sides parsing it before the first chunk. {pipe['rounds']} round(s), corral and the "
          f"bare pipe in turn, two streams each time of which the first warms up and is not timed; each path's "
          f"median round.\n")
        rows = []
        for label, r, count in (("through corral (HTTP/1.1, server-sent events)", c, c["events"]),
                                ("bare pipe (echo-c alone, its socket pair)", b, b["chunks"])):
            rows.append([label, f"**{f_int(r['chunks_s'])}**", f_num(r["first_us"] / 1e3), f_num(r["end_us"] / 1e3),
                         f_int(r["request_chunks_s"]), f_int(count), f_pct(r["cpu_s"] * 1e6 / r["end_us"], 0)])
        rows.append(["bare pipe ÷ corral", f_ratio(pipe["bare_over_corral"]), "", "",
                     f_ratio(ratio(b["request_chunks_s"], c["request_chunks_s"])), "", ""])
        w(table(["path", "chunks/s", "first chunk ms", "last chunk ms", "chunks/s, whole request", "chunks",
                 "reader's CPU"], rows, "lrrrrrr"))
        w("")
        w(f"Through corral the daemon spent {f_num(c['daemon_cpu_s'] * 1e6 / n, 2)} µs of CPU per chunk and the "
          f"worker (with its guard process) {f_num(c['workers_cpu_s'] * 1e6 / n, 2)} µs, over the whole requests. "
          f"*reader's CPU* is the reading client's own CPU time (`getrusage`) over the whole request: a client far "
          f"from a full core is not what limits the rate. Rates of every round: through corral "
          f"{', '.join(f_int(x) for x in c['rounds_chunks_s'])}; bare pipe "
          f"{', '.join(f_int(x) for x in b['rounds_chunks_s'])}.\n")
        if c.get("daemon_reads") and b.get("reads"):
            w(f"Reads: the daemon made {f_int(c['daemon_reads'] * 1000 / n)} read calls per 1,000 chunks (on all "
              f"its sockets, the worker's and the client's: `syscr` of `/proc/PID/io`), the bare pipe's reader "
              f"{f_int(b['reads'] * 1000 / n)} on the worker's socket. A reader that is idle when a frame arrives "
              f"is woken for it, and the waking is paid in the writer's send: the fewer frames each read finds, "
              f"the more every chunk costs the worker. The bare pipe's reader does nothing else, so it is often "
              f"idle; on a busy 2-core machine that can make the bare pipe slower than the stream through corral, "
              f"whose daemon finds more frames waiting at each read.\n")
        later = (c["first_us"] - b["first_us"]) / 1e3
        if later > 0:
            w(f"The first chunk of this stream comes {f_num(later)} ms later through corral than from the worker "
              f"alone: the daemon receives the whole {f_mib(pipe['request_bytes'])} body and parses it as JSON "
              f"(for `stream` and `parameters.priority`, `src/generate.c`) before it queues the request, and the "
              f"worker then parses it again.\n")


def render_metrics(res: dict, w) -> None:
    """Section 10: GET /metrics over a large registry (issue #11)."""
    mt = res.get("metrics")
    if not mt:
        return
    sc, ex, fl, pt = mt["scrape"], mt["exposition"], mt["fd_listing"], mt.get("promtool")
    idle = mt["idle_cpu_rate"]
    cpu_ms = sc["daemon_cpu_us"] / 1e3
    w("## 10. GET /metrics\n")
    w(f"A repository of {mt['models']} copies of `examples/models/echo-c` (C SDK), each with `instances: "
      f"{mt['instances']}` and `load: eager`: {f_int(mt['workers'])} workers, {f_int(mt['processes'])} processes "
      f"with their guards and the daemon. Once every instance is ready, each model gets "
      f"{mt['requests_per_model']} inference requests and one streamed generate, so that every histogram (time "
      f"to first chunk included) has samples; the exposition is checked to count them all, and to list every "
      f"instance as ready with its resident memory. Then [bench/metrics_scrape.c](../bench/metrics_scrape.c), a C "
      f"client on one keep-alive HTTP/1.1 connection, sends `GET /metrics` {sc['scrapes']} times one after "
      f"another after {sc['scrapes_total'] - sc['scrapes']} untimed ones, and times each from the request's "
      f"write to the body's last byte. *Daemon CPU per scrape* is the daemon's CPU time over all "
      f"{sc['scrapes_total']} scrapes (the kernel's per-thread accounting, `/proc/PID/task/*/schedstat`, finer "
      f"than the 10 ms ticks of `/proc/PID/stat`), less its idle CPU over the same time (measured for "
      f"{idle['seconds']:g} s before and after: its once-a-second memory tick and health pings), divided by the "
      f"scrapes: what rendering and sending one exposition costs, less noisy than the wall time on a shared "
      f"machine. Memory figures come from that tick, so a scrape walks no `/proc` for them; the "
      f"`process_open_fds` gauge does list the daemon's own `/proc/self/fd`, measured apart below.\n")
    full = metrics_full_size(mt)
    rows = [
        ["registry", f"{GOAL_METRICS_MODELS} models × {GOAL_METRICS_INSTANCES} instances",
         f"{metrics_registry(mt)} ({f_int(mt['workers'])} workers)" + ("" if full else " — smaller than the goal's")],
        ["**daemon CPU per scrape**", f"under a few ms (≤ {GOAL_METRICS_CPU_MS:g} ms)",
         f"**{f_num(cpu_ms, 2)} ms** ({f_num(sc['daemon_cpu_us_raw'] / 1e3, 2)} ms before taking out the idle "
         f"CPU)" + ("" if full else "; not judged at this size")],
        ["scrape time, p50 / p90 / max (the client's view)", "–",
         f"{f_num(sc['p50_us'] / 1e3, 2)} / {f_num(sc['p90_us'] / 1e3, 2)} / {f_num(sc['max_us'] / 1e3, 2)} ms "
         f"(min {f_num(sc['min_us'] / 1e3, 2)} ms)"],
        ["exposition", "–", f"{f_int(sc['bytes'])} bytes, {f_int(sc['lines'])} lines ({f_int(ex['families'])} "
                            f"families, {f_int(ex['samples'])} samples)"],
        ["listing the daemon's descriptors once (as `process_open_fds` does)", "–",
         f"{f_num(fl['cpu_us_per_listing'] / 1e3, 2)} ms of CPU for {f_int(fl['entries'])} entries "
         f"({f_pct(ratio(fl['cpu_us_per_listing'] / 1e3, cpu_ms), 0)} of a scrape)"],
        ["`promtool check metrics`", "no parse error",
         "not installed" if not pt else
         (("no parse error" if pt["ok"] else "**parse error**") +
          f"; {pt['findings']} lint findings, {pt['findings_nv']} on Triton's `nv_` names")],
        ["client CPU per scrape (metrics_scrape)", "–", f"{f_num(sc['client_cpu_us'] / 1e3, 2)} ms"],
        ["daemon's idle CPU, before / after", "–",
         f"{f_pct(idle['before'], 2)} / {f_pct(idle['after'], 2)} of a core"],
    ]
    w(table(["", "goal", "measured"], rows, "lll"))
    w("")
    if full:
        met = cpu_ms <= GOAL_METRICS_CPU_MS
        w(f"At {metrics_registry(mt)} a scrape costs the daemon {f_num(cpu_ms, 2)} ms of CPU, which "
          f"{'meets' if met else 'does **not** meet'} the goal of \"under a few ms\" (read here as "
          f"{GOAL_METRICS_CPU_MS:g} ms)" + ("." if met else "; why, in [Where corral falls short]"
                                            "(#where-corral-falls-short).") + "\n")
    if pt:
        other = pt["findings_other"]
        w(f"promtool ({pt['version']}) exits {pt['rc']}" + (" (lint findings only)" if pt["rc"] == 3 else "") +
          f": {pt['findings_nv']} of its {pt['findings']} findings are about Triton's names (`_total` suffixes, "
          f"abbreviated units), which corral keeps so that Triton's dashboards work unchanged "
          f"([observability.md](observability.md#metrics-get-metrics))" +
          (f"; the others: {'; '.join(f'`{x}`' for x in other)}" if other else "; corral's own families draw none")
          + ".\n")
    w(f"The registry: every instance ready {f_num(mt['startup_s'])} s after the daemon started; host memory "
      f"+{f_mib(mt['host_used_delta'])} with all {f_int(mt['workers'])} workers running "
      f"({f_mib(mt['host_used_delta'] / mt['workers'])} per instance with its guard; the resident sizes of corral's "
      f"processes add up to {f_mib(mt['tree_rss'])}, shared pages counted in each, the daemon's own "
      f"{f_mib(mt['daemon_rss'])}); the daemon held "
      f"{f_int(mt['daemon_fds'])} descriptors. SIGTERM stopped the daemon and every one of its "
      f"{f_int(mt['processes'])} processes in {f_num(mt['stop_s'])} s; the bench checks that none outlives it.\n")


def render_clientshm(res: dict, w) -> None:
    """Section 11: tensors through client shared memory against the HTTP binary path (issue #13)."""
    cs = res.get("clientshm")
    if not cs:
        return
    w("## 11. Client shared memory\n")
    w("Triton's system shared memory extension (`--allow-client-shm`, [api.md](api.md#system-shared-memory)): "
      "the client writes an FP32 tensor into a POSIX shared-memory object, registers it and a second one for the "
      "answer, and sends a request whose input and output name the regions; the daemon reads the input from its "
      "mapping of the client's object straight into the instance's input region, the worker echoes it into its "
      "output region, and the daemon copies the answer into the client's second region. Only JSON crosses the "
      "socket. Beside it, in turn, the same echo over HTTP with the binary tensor extension (curl, as in section "
      "4). Both from one daemon, 2 instances per model; MB/s is the tensor's size over the median round trip "
      "(the first round trip, checked byte for byte, is not timed). *One memcpy* is numpy copying the tensor "
      "between two buffers already in memory, the fastest of ten or more: the machine's bound for each of the three copies a "
      "shared-memory round trip makes.\n")
    floor = {f["mib"]: f for f in cs.get("memcpy", [])}
    rows = []
    for model, e in cs["models"].items():
        for sz in e["sizes"]:
            mib, h, m = sz["mib"], sz["http"], sz["shm"]
            rows.append([e["label"], f"{mib} MiB", f_int(h["mb_s"]), f"{f_num(h['seconds_median'] * 1e3)} ms",
                         f_int(m["mb_s"]), f"{f_num(m['seconds_median'] * 1e3)} ms",
                         f_ratio(ratio(m["mb_s"], h["mb_s"])),
                         f_int(floor[mib]["mb_s"]) if mib in floor else "–"])
    w(table(["server", "tensor", "HTTP binary, MB/s", "HTTP, ms", "shared memory, MB/s", "shared memory, ms",
             "shared memory ÷ HTTP", "one memcpy, MB/s"], rows, "llrrrrrr"))
    w("")
    render_goal(clientshm_goal(res), w)


def render_goal(g: Optional[Goal], w) -> None:
    """A section's own goal as a one-row table, and why it fell short."""
    if not g:
        return
    w(table(["goal", "target", "measured", ""], [[g.name, g.target, g.measured, verdict(g.ok)]], "llll"))
    w("")
    if g.why:
        w(g.why + "\n")


def sessions_goal(res: dict) -> Optional[Goal]:
    """Issue #16, item 6: what carrying a session adds to a request, p50."""
    ss = res.get("sessions")
    if not ss:
        return None
    added = ss["median_run"]["added_p50_us"]
    return Goal(f"added latency of a request carrying a 4 KiB session, p50, {ss['sessions']:,} sessions stored "
                f"(section 13)", f"≤ {f_int(GOAL_SESSION_ADDED_US)} µs", f"{f_num(added)} µs",
                added <= GOAL_SESSION_ADDED_US)


def render_sessions(res: dict, w) -> None:
    """Section 13: a request carrying a session against one that carries none (issue #16)."""
    ss = res.get("sessions")
    if not ss:
        return
    w("## 13. Sessions\n")
    w(f"{ss['sessions']:,} JSON sessions of {ss['session_bytes']:,} bytes each are PUT into one daemon's context "
      f"store (`/v1/sessions`, [sessions.md](sessions.md)); then one keep-alive connection (`bench/session_load.c`) "
      "sends a C echo (`tests/models/session_c`, 1 instance, reading the session and updating nothing) pairs of "
      "small FP32 requests, one without a session and one with `parameters.session` naming a random one of them, "
      "in random order within each pair, one request at a time. *Added* is the difference of the two kinds' "
      "figures: the store's lookup, the pin, and the 4 KiB copied into the worker's frame and parsed by the SDK. "
      "Each row is one run; the goal takes the median run.\n")
    rows = []
    for i, r in enumerate(ss["runs"]):
        rows.append([str(i + 1), f_int(r["without"]["requests"]), f_num(r["without"]["p50_us"]),
                     f_num(r["with"]["p50_us"]), f_signed(r["added_p50_us"]), f_num(r["without"]["p99_us"]),
                     f_num(r["with"]["p99_us"]), f_signed(r["added_p99_us"])])
    w(table(["run", "pairs", "without, p50 µs", "with, p50 µs", "added, p50 µs", "without, p99 µs",
             "with, p99 µs", "added, p99 µs"], rows, "lrrrrrrr"))
    w("")
    render_goal(sessions_goal(res), w)


def clientshm_goal(res: dict) -> Optional[Goal]:
    """Issue #13, item 7: the faster echo's 64 MiB round trip through client shared memory."""
    cs = res.get("clientshm")
    if not cs:
        return None
    best = max((sz["shm"]["mb_s"] for e in cs["models"].values() for sz in e["sizes"]
                if sz["mib"] == GOAL_SHM_MIB), default=None)
    if best is None:
        return None
    ok = best >= GOAL_SHM_MB_S
    f = {m["mib"]: m for m in cs.get("memcpy", [])}.get(GOAL_SHM_MIB)
    why = ""
    if not ok and f:
        why = (f"The round trip makes three copies of the tensor: the daemon's from the client's region into the "
               f"instance's input region, the worker's from its input region into its output region (what the echo "
               f"computes), and the daemon's from the output region into the client's. At this machine's "
               f"{f_int(f['mb_s'])} MB/s for one copy, three copies alone bound the round trip near "
               f"{f_int(f['mb_s'] / 3)} MB/s, under the goal. The worker protocol offers no fewer within itself: the "
               f"regions a worker reads and writes are memfds it inherited when it was started, and no message "
               f"passes a file descriptor, so the client's object cannot be handed to the worker "
               f"([api.md](api.md#system-shared-memory)). Reaching the goal takes a protocol extension in which the "
               f"worker maps the client's object by its key itself (the daemon then copies nothing), at the price "
               f"of a model reading memory the client may change while it runs.")
    return Goal(f"{GOAL_SHM_MIB} MiB in and out through client shared memory, MB/s (the faster echo; section 11)",
                f"≥ {f_int(GOAL_SHM_MB_S)}", f_int(best), ok, why)


GRPC_PATH_LABELS = {"http-json": "HTTP/JSON", "http-binary": "HTTP/binary",
                    "grpc": "gRPC ModelInfer", "grpc-channels": "gRPC ModelInfer, a channel per call"}
# Where a large tensor's round trip spends the daemon's CPU (measure.copy_stacks' kinds and sites).
GRPC_COPY_ROWS = (
    ("user_copy", "readall", "copy: gathering the received message into one buffer (`grpc_byte_buffer_reader_readall`)"),
    ("user_copy", "unpack", "copy: unpacking it (protobuf-c copies `raw_input_contents` out of the message)"),
    ("user_copy", "h2o_buffer", "copy: h2o growing the request body's buffer (`h2o_buffer_reserve`)"),
    ("user_copy", "to_instance", "copy: the input into the instance's region (`inst_shm_place`)"),
    ("user_copy", "pack", "copy: the output into the packed answer (`grpc_pack_result`, protobuf-c)"),
    ("user_copy", None, "copy: elsewhere"),
    ("kernel_copy", "socket_recv", "kernel copy: socket → daemon (`recv`)"),
    ("kernel_copy", "socket_send", "kernel copy: daemon → socket (`send`)"),
    ("kernel_copy", None, "kernel copy: elsewhere"),
    ("page_fault", None, "page faults (first touch of memory just allocated or mapped)"),
    ("other", None, "everything else"),
)
# The sites of GRPC_COPY_ROWS that are copies of the tensor itself, with their short names.
GRPC_COPY_NAMES = {"readall": "gathering the message", "unpack": "protobuf-c's unpack",
                   "h2o_buffer": "h2o's body buffer", "to_instance": "into the instance's region",
                   "pack": "packing the answer"}
GRPC_LIBRARY_LABELS = (("corral", "corral's own code"), ("grpc", "gRPC core (libgrpc, libgpr, abseil, upb)"),
                       ("protobuf-c", "protobuf-c"), ("malloc", "malloc and free"), ("libc", "the rest of libc"),
                       ("h2o", "h2o"), ("uv", "libuv"), ("jansson", "jansson"), ("kernel", "the kernel"),
                       ("other", "other"))
GRPC_THREAD_LABELS = (("loop", "the loop thread"),
                      ("corral", "the daemon's other threads (the gRPC bridge, libuv's pool)"),
                      ("grpc", "gRPC's own threads (executor, event engine, timers)"))


def grpc_point(g: dict, model: str, path: str, conns: int) -> Optional[dict]:
    for p in ((g.get("series") or {}).get(model) or {}).get("paths", {}).get(path, []):
        if p["connections"] == conns:
            return p
    return None


def copy_share(prof: dict, kind: str, site: Optional[str]) -> float:
    """A large-tensor profile's share in one row of GRPC_COPY_ROWS: a kind at one site, or (site None)
    at every site no other row of that kind names."""
    sites = prof.get("kinds", {}).get(kind, {})
    if site is not None:
        return sites.get(site, 0.0)
    named = {s for k, s, _ in GRPC_COPY_ROWS if k == kind and s is not None}
    return sum(v for s, v in sites.items() if s not in named)


def grpc_copies(prof: dict) -> List[Tuple[str, float]]:
    """The user-space copies of the tensor in a large-tensor profile, by site, largest first (above 2%)."""
    sites = prof.get("kinds", {}).get("user_copy", {})
    return sorted(((s, v) for s, v in sites.items() if s in GRPC_COPY_NAMES and v >= 0.02), key=lambda kv: -kv[1])


def grpc_why(g: dict, t: dict) -> str:
    """Why large tensors over gRPC fall short of the goal, from the same run's profiles and floors (t:
    the largest size's figures, the size they were taken at)."""
    prof = (g.get("perf") or {}).get("grpc") or {}
    hprof = (g.get("perf") or {}).get("http") or {}
    fl = g.get("floors") or {}
    parts = []
    lb = (fl.get("loopback") or {}).get("mb_s")
    if lb:
        parts.append(f"On this machine a bare loopback TCP echo of {fl['loopback']['mib']} MiB, with no protocol and "
                     f"no work, moves {f_int(lb)} MB/s: the goal asks for {f_pct(GOAL_GRPC_MB_S / lb, 0)} of what the "
                     f"sockets alone allow, and HTTP binary reaches {f_int(t['http']['mb_s'])} MB/s at {t['mib']} MiB "
                     f"on the same daemon (gRPC {f_int(t['grpc']['mb_s'])}).")
    if "kinds" in prof:
        copies = grpc_copies(prof)
        hcopies = grpc_copies(hprof) if "kinds" in hprof else []
        parts.append(f"perf on the daemon during {prof['what']} round trips: {f_num(prof['daemon_cpu_us_per'] / 1e3, 0)} "
                     f"ms of its CPU per round trip, {f_pct(sum(prof['kinds'].get('user_copy', {}).values()), 0)} of it "
                     f"in user-space copies of the tensor, {len(copies)} of them ("
                     + "; ".join(f"{GRPC_COPY_NAMES[s]}, {f_pct(v, 0)}" for s, v in copies)
                     + f"), and {f_pct(copy_share(prof, 'page_fault', None), 0)} in page faults"
                     + (f"; the HTTP binary path makes {len(hcopies)} ("
                        + "; ".join(f"{GRPC_COPY_NAMES[s]}, {f_pct(v, 0)}" for s, v in hcopies) + ")"
                        if hcopies else "") + ".")
        extra = [s for s, _ in copies if s not in {h for h, _ in hcopies}]
        why = {
            "readall": "gRPC's C core hands a received message over as a list of slices, which the bridge gathers "
                       "into one buffer before protobuf-c reads it (src/grpc_bridge.c, `on_recv`)",
            "unpack": "protobuf-c's unpack copies every `bytes` field out of the message",
            "pack": "the answer's tensor is copied into a newly packed message",
        }
        present = [s for s in ("readall", "unpack", "pack") if s in extra]
        if present:
            parts.append("The copies gRPC adds to HTTP's are the daemon's own: " + "; ".join(why[s] for s in present)
                         + ". (The daemon reads `raw_input_contents` where they lie in the gathered message and sends "
                         "a large answer's tensors as slices of the worker's output region after a packed head, "
                         "src/grpc_infer.c and src/api_grpc.c, so neither protobuf-c copy should appear.)")
    return " ".join(parts)


def grpc_goals(res: dict) -> List[Goal]:
    """Issue #14, item 5: each large tensor size over gRPC against 30 times the reference's 31.92 MB/s."""
    g = res.get("grpc")
    if not g:
        return []
    out = []
    tensors = g.get("tensors", [])
    largest = max(tensors, key=lambda t: t["mib"], default=None)
    for t in tensors:
        mb_s = t["grpc"]["mb_s"]
        ok = mb_s >= GOAL_GRPC_MB_S
        out.append(Goal(f"{t['mib']} MiB in and out over gRPC, MB/s (the C echo; section 12)",
                        f"≥ {GRPC_GOAL_FACTOR} × {GRPC_REFERENCE_MB_S:g} = {f_int(GOAL_GRPC_MB_S)}",
                        f"{f_int(mb_s)} ({f_ratio(ratio(mb_s, GRPC_REFERENCE_MB_S))} the reference; HTTP binary "
                        f"{f_int(t['http']['mb_s'])})", ok,
                        "" if ok else grpc_why(g, largest) if t is largest else
                        f"For the reasons given for {largest['mib']} MiB (the next entry)."))
    return out


def profile_table(profs: Dict[str, dict], names: Dict[str, str], rows_in: List[Tuple[str, Callable[[dict], float]]],
                  unit: float, unit_name: str) -> str:
    """A table of shares of the daemon's CPU, one pair of columns (share, cost) per profile: each row's
    value is a share of a profile's samples, its cost the share times the daemon's CPU per round trip."""
    keys = list(profs)
    rows = []
    for label, share in rows_in:
        vals = [share(profs[k]) for k in keys]
        if label.startswith("*thread:*") or max(vals) >= 0.005:
            rows.append([label] + [c for k, v in zip(keys, vals)
                                   for c in (f_pct(v, 0), f_num(v * profs[k]["daemon_cpu_us_per"] / unit))])
    rows.append(["**the daemon's CPU**"] + [c for k in keys for c in
                                           ("100%", f"**{f_num(profs[k]['daemon_cpu_us_per'] / unit)}**")])
    header = ["where"] + [c for k in keys for c in (f"{names[k]}, share", f"{names[k]}, {unit_name}")]
    return table(header, rows, "l" + "r" * (len(header) - 1))


def render_grpc(res: dict, w) -> None:
    """Section 12: gRPC against HTTP on one daemon (issue #14, item 5)."""
    g = res.get("grpc")
    if not g:
        return
    cfg = scfg(res, "grpc")
    rounds = cfg.get("rounds", 1)
    w("## 12. gRPC\n")
    w(f"KServe v2's `GRPCInferenceService` (`--grpc-port`, [api.md](api.md)) against the HTTP API, on one daemon "
      f"over the same models (2 instances each), in the same run. The points are taken in {rounds} round"
      f"{'s' if rounds != 1 else ''}, every path of every model in turn at each count of requests in flight, "
      f"{cfg.get('duration')} s each after a 1 s warm-up; each figure is from a path's median round by request "
      f"rate. The request is one FP32 tensor of shape [1, {g['elements']}]:\n")
    w(f"- **HTTP/JSON**: wrk and [bench/post.lua](../bench/post.lua) as in section 2, the tensor in JSON "
      f"({g['json_bytes']} bytes of body).\n"
      f"- **HTTP/binary**: the same with the binary tensor extension in and out (`Inference-Header-Content-Length`, "
      f"`binary_data_size`, `binary_data_output`; {g['binary_bytes']} bytes).\n"
      f"- **gRPC ModelInfer**: [bench/grpc_load.c](../bench/grpc_load.c), a C client on gRPC's C core (the library "
      f"the daemon serves with), the tensor in `raw_input_contents` ({g['grpc_request_bytes']} bytes of message): "
      f"a closed loop that keeps that many unary calls in flight on {g['channels']} channel"
      f"{'s' if g['channels'] != 1 else ''} from {g['threads']} thread{'s' if g['threads'] != 1 else ''} (a gRPC "
      f"client multiplexes its calls over one HTTP/2 connection), and the same with a channel, so a connection, "
      f"per call in flight (as wrk opens a connection per connection count). The message is packed once; every "
      f"channel's first answer is checked field by field, every timed one for its status and size.\n"
      f"- *daemon CPU/req* is the daemon's CPU time over the point (every thread: the loop, the gRPC bridge, "
      f"gRPC's own) divided by the requests; *switches/req* its context switches per request, every thread; "
      f"*client CPU/req* is grpc_load's own (wrk's is not measured; both run on the same cores as the daemon).\n")
    rows = []
    for conns in g["connections"]:
        for model, e in g["series"].items():
            base = grpc_point(g, model, "grpc", conns)
            for path in ("http-json", "http-binary", "grpc", "grpc-channels"):
                p = grpc_point(g, model, path, conns)
                if not p:
                    continue
                rows.append([str(conns), e["label"], GRPC_PATH_LABELS[path], f"**{f_int(p['rps'])}**",
                             f"**{f_int(p['p50_us'])}**", f_int(p["p99_us"]), f_num(p["daemon_cpu_us_per_req"]),
                             f_num(p.get("daemon_switches_per_req"), 2), f_num(p.get("client_cpu_us_per_req")),
                             str(p["errors"]),
                             "–" if path == "grpc" else f_ratio(ratio(base and base["rps"], p["rps"])),
                             "–" if path == "grpc" else f_ratio(ratio(base and base["p50_us"], p["p50_us"]))])
    w(table(["in flight", "model", "path", "req/s", "p50 µs", "p99 µs", "daemon CPU/req µs", "daemon switches/req",
             "client CPU/req µs", "errors", "gRPC ÷ it, req/s", "gRPC ÷ it, p50"], rows, "lll" + "r" * 9))
    w("")
    w("*gRPC ÷ it* compares each row with the gRPC ModelInfer row (one channel) of the same model and count: above "
      "1× in req/s means gRPC serves more, below 1× in p50 means gRPC answers sooner.\n")

    prof = g.get("perf") or {}
    thread_rows = [(f"*thread:* {label}", lambda p, t=t: p["threads"].get(t, 0.0)) for t, label in GRPC_THREAD_LABELS]
    small = {k: prof[k] for k in ("grpc-small", "http-binary-small") if prof.get(k) and "libraries" in prof[k]}
    if small:
        w(f"Where the daemon's CPU goes in a small call: one more point of gRPC ModelInfer (one channel) and of "
          f"HTTP/binary on the C echo at {max(g['connections'])} in flight, with `perf record -F 1999` on the daemon "
          f"(every thread), each sample charged to the library it was running in (malloc and free apart from the "
          f"rest of libc); µs per request is the share times the daemon's CPU per request over the same run.\n")
        w(profile_table(small, {"grpc-small": "gRPC", "http-binary-small": "HTTP/binary"},
                        [(label, lambda p, lib=lib: p["libraries"].get(lib, 0.0)) for lib, label in GRPC_LIBRARY_LABELS]
                        + thread_rows, 1.0, "µs/req"))
        w("")
        top = small.get("grpc-small", {}).get("top_leaves", [])[:8]
        if top:
            w("The gRPC call's most sampled functions: " + ", ".join(f"`{s}` {f_pct(v, 1)}" for s, v in top) + ".\n")

    tensors = g.get("tensors") or []
    if tensors:
        w("### Large tensors\n")
        w(f"The C echo's round trip of one large tensor, in turn over HTTP with the binary tensor extension (FP32, "
          f"curl, as in section 4) and over gRPC (UINT8 in `raw_input_contents`, back in `raw_output_contents`: "
          f"grpc_load on one channel, one call at a time, each timed from its start to the whole answer's arrival, "
          f"every answer then compared byte for byte, untimed), in {tensors[0].get('rounds', 1)} rounds of "
          f"{tensors[0].get('per_round', cfg.get('tensor_reps'))} round trips each way, the two alternating and "
          f"each run after one untimed round trip of its own; each figure is the median of all "
          f"{tensors[0]['grpc']['reps']} of a way. MB/s = tensor bytes (10^6) ÷ round-trip time, the tensor going both ways. The "
          f"reference is the proof of concept's {GRPC_REFERENCE_MB_S:g} MB/s over gRPC, the goal "
          f"{GRPC_GOAL_FACTOR}× that.\n")
        rows = []
        for t in tensors:
            h, r = t["http"], t["grpc"]
            rows.append([f"{t['mib']} MiB", f_int(h["mb_s"]), f_num(h["seconds_median"] * 1e3),
                         f"**{f_int(r['mb_s'])}**", f_num(r["seconds_median"] * 1e3),
                         f_ratio(ratio(r["mb_s"], h["mb_s"])), f_ratio(ratio(r["mb_s"], GRPC_REFERENCE_MB_S)),
                         f_int(GOAL_GRPC_MB_S), verdict(r["mb_s"] >= GOAL_GRPC_MB_S)])
        w(table(["tensor", "HTTP binary, MB/s", "HTTP, ms", "gRPC, MB/s", "gRPC, ms", "gRPC ÷ HTTP",
                 f"gRPC ÷ reference ({GRPC_REFERENCE_MB_S:g} MB/s)", "goal, MB/s", ""], rows, "lrrrrrrrl"))
        w("")
        fl = g.get("floors") or {}
        if fl:
            w(f"This machine's bounds, measured in the same run: a bare loopback TCP echo of {fl['loopback']['mib']} "
              f"MiB (no protocol, no work) moves {f_int(fl['loopback']['mb_s'])} MB/s; one memcpy of the tensor "
              f"runs at {f_int(fl['memcpy']['mb_s'])} MB/s.\n")
    big = {k: prof[k] for k in ("grpc", "http") if prof.get(k) and "kinds" in prof[k]}
    if big:
        what = next(iter(big.values()))["what"].split(", ")[-1]
        w(f"Where the daemon's CPU goes in a {what} round trip: three more round trips each way with `perf record "
          f"-F 999 --call-graph dwarf` on the daemon (every thread; slower than the timed ones). A sample is a copy "
          f"when its leaf is `memcpy`/`memmove` (user space) or the kernel's copy between a socket and user memory, "
          f"charged to the first of the daemon's functions on its stack named below; a page fault anywhere on the "
          f"stack makes it a page fault; ms per round trip is the share times the daemon's CPU per round trip over "
          f"the same run.\n")
        w(profile_table(big, {"grpc": "gRPC", "http": "HTTP binary"},
                        [(label, lambda p, k=kind, s=site: copy_share(p, k, s)) for kind, site, label in GRPC_COPY_ROWS]
                        + thread_rows, 1e3, "ms"))
        w("")
    for k, p in sorted(prof.items()):
        if p and "error" in p:
            w(f"> perf ({k}): not profiled: {p['error']}.\n")
    gl = grpc_goals(res)
    if gl:
        w(table(["goal", "target", "measured", ""], [[x.name, x.target, x.measured, verdict(x.ok)] for x in gl],
                "llll"))
        w("")
        why = next((x.why for x in reversed(gl) if x.why), "")  # the largest size's, which gives the reasons
        if why:
            w(why + "\n")
    cmds = (g.get("_run") or {}).get("commands") or {}
    shown = [(label, line) for label, line in cmds.items()
             if label.startswith(("protoc-c", "build grpc_load", "corral serve (grpc)", "wrk (grpc section",
                                  "grpc_load", "curl (", "perf record (the daemon, during"))]
    w("This section alone, and the commands it ran (`PORT` is the daemon's gRPC port, which it logs as "
      "`listening on grpc://127.0.0.1:PORT`):\n")
    w("```sh\nBENCH_ONLY=grpc make bench     # or, once built: BENCH_ONLY=grpc /usr/bin/python3 bench/bench.py")
    for label, line in shown:
        w(f"# {label}")
        w(line.replace(str(ROOT) + "/", "").replace(str(ROOT), "."))
    w("```\n")


def generate(res: dict, docs: pathlib.Path) -> None:
    import re
    docs.mkdir(parents=True, exist_ok=True)
    plots = {
        "throughput": plot_throughput(res, docs / "bench-throughput.png"),
        "latency": plot_latency(res, docs / "bench-latency.png"),
        "queue": plot_queue(res, docs / "bench-queue.png"),
        "coldstart": plot_cold_recovery(res, docs / "bench-coldstart.png"),
    }
    text = render(res, plots)
    # The temporary directory's name changes every run; the page should not.
    text = re.sub(r"/tmp/corral-bench-[A-Za-z0-9_]+", "$TMP", text)
    (docs / "benchmarks.md").write_text(text)


def main() -> int:
    path = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "build" / "bench" / "results.json"
    generate(json.loads(path.read_text()), ROOT / "docs")
    print(f"report: wrote docs/benchmarks.md and docs/bench-*.png from {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
