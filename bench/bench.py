"""bench — corral's benchmark suite: measure, then write docs/benchmarks.md.

    make bench                      # everything, ~10 minutes
    BENCH_QUICK=1 make bench        # 1 s points, fewer repetitions: for development
    /usr/bin/python3 bench/bench.py # the same, without installing or building

Runs the measurements of issues #4, #10 (streaming), #11 (GET /metrics),
#12 (batching and wake-ups, in the serving section), #13 (client shared
memory), #14 (gRPC) and #16 (sessions) on this machine,
side by side with the peers started here on loopback, writes
build/bench/results.json, then docs/benchmarks.md and docs/bench-*.png
from it (bench/report.py). Every process it starts is
stopped before it exits, however it exits.
Environment knobs are listed in bench/README.md.
"""
from __future__ import annotations

import datetime
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as H  # noqa: E402
import measure as M  # noqa: E402
import report  # noqa: E402

SECTIONS = [
    ("queue", "1. scheduler queue", M.queue),
    ("serving", "2, 4. throughput, latency, large tensors", M.serving),
    ("worker_rtt", "3. the worker's own time per request", M.worker_rtt),
    ("cold_start", "5. cold start", M.cold_start),
    ("memory", "6. memory reclaim", M.memory),
    ("recovery", "7. recovery after kill -9", M.recovery),
    ("idle", "8. idle cost", M.idle),
    ("streaming", "9. streaming", M.streaming),
    ("metrics", "10. GET /metrics", M.metrics),
    ("clientshm", "11. client shared memory", M.clientshm),
    ("grpc", "12. gRPC", M.grpc),
    ("sessions", "13. sessions", M.sessions),
]


def main() -> int:
    cfg = M.Config()
    only = [s for s in os.environ.get("BENCH_ONLY", "").split(",") if s]
    results_path = H.ROOT / "build" / "bench" / "results.json"
    results_path.parent.mkdir(parents=True, exist_ok=True)
    if not (H.ROOT / "build" / "corral").exists():
        print("bench: build/corral is missing; run `make build` (or `make bench`) first", file=sys.stderr)
        return 1
    results = {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "machine": H.machine(), "config": cfg.as_dict(), "errors": {}}
    if only and results_path.exists():
        # A partial run refreshes only the sections it names.
        old = json.loads(results_path.read_text())
        for key, _, _ in SECTIONS:
            if key not in only and key in old:
                results[key] = old[key]
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="corral-bench-"))
    ws = M.Workspace(tmp)
    t_start = time.monotonic()
    failed = False
    try:
        for key, title, fn in SECTIONS:
            if only and key not in only:
                continue
            print(f"bench: {title}", flush=True)
            t0 = time.monotonic()
            H.COMMANDS.clear()
            ws.manifests.clear()
            try:
                results[key] = fn(cfg, ws)
            except Exception as e:  # one failed measurement must not lose the others
                failed = True
                traceback.print_exc()
                results["errors"][key] = f"{type(e).__name__}: {e}"
                results.pop(key, None)
                H.stop_all()
            else:
                # What each section ran with travels with its numbers, so a
                # partial run (BENCH_ONLY) still describes every section truly.
                results[key]["_run"] = {"config": cfg.as_dict(), "commands": dict(H.COMMANDS),
                                        "manifests": dict(ws.manifests), "started": results["started"],
                                        "seconds": time.monotonic() - t0}
            print(f"bench: {title}: {time.monotonic() - t0:.1f} s", flush=True)
            results_path.write_text(json.dumps(results, indent=1))
    finally:
        H.stop_all()
        results["seconds"] = time.monotonic() - t_start
        results["sections"] = [key for key, _, _ in SECTIONS]
        results_path.write_text(json.dumps(results, indent=1))
        if os.environ.get("BENCH_KEEP"):
            print(f"bench: logs and repositories kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report.generate(results, H.ROOT / "docs")
    print(f"bench: wrote docs/benchmarks.md and docs/bench-*.png in {results['seconds']:.0f} s "
          f"(results: {results_path.relative_to(H.ROOT)})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
