"""pyqueue_bench — the queue patterns of sched_bench.c on Python's own queues.

asyncio.PriorityQueue (put_nowait/get_nowait, what an asyncio server would
use) and bare heapq, with entries (priority, sequence, item) so that equal
priorities stay FIFO as in corral's queue. Priorities are drawn from 3
levels; entries are made beforehand, as sched_bench makes its jobs
beforehand. Output: one JSON object per line, the same fields as sched_bench.

    /usr/bin/python3 bench/pyqueue_bench.py MIN_SECONDS DEPTH...
"""
from __future__ import annotations

import asyncio
import heapq
import json
import random
import statistics
import sys
import time

LEVELS = 3
MAX_ROUNDS = 100000


def entries(n: int, rng: random.Random) -> list:
    return [(rng.randint(1, LEVELS), seq, object()) for seq in range(n)]


def fill_drain(name: str, make, push, pop, depth: int, min_seconds: float) -> dict:
    rng = random.Random(1)
    items = entries(depth, rng)
    push_ns, pop_ns = [], []
    start = time.perf_counter()
    while len(push_ns) < MAX_ROUNDS and (len(push_ns) < 5 or time.perf_counter() - start < min_seconds):
        q = make()
        t0 = time.perf_counter()
        for it in items:
            push(q, it)
        t1 = time.perf_counter()
        for _ in range(depth):
            pop(q)
        t2 = time.perf_counter()
        push_ns.append((t1 - t0) * 1e9 / depth)
        pop_ns.append((t2 - t1) * 1e9 / depth)
    enq, deq = statistics.median(push_ns), statistics.median(pop_ns)
    return {"impl": name, "pattern": "fill_drain", "depth": depth, "rounds": len(push_ns),
            "enqueue_ns": round(enq, 2), "dequeue_ns": round(deq, 2),
            "enqueue_ops": round(1e9 / enq), "dequeue_ops": round(1e9 / deq)}


def steady(name: str, make, push, pop, depth: int, min_seconds: float) -> dict:
    rng = random.Random(2)
    q = make()
    for it in entries(depth, rng):
        push(q, it)
    batch = 10000
    fresh = [(rng.randint(1, LEVELS), depth + i, object()) for i in range(batch)]
    ops = 0
    start = time.perf_counter()
    while True:
        for it in fresh:
            push(q, it)
            pop(q)
        ops += 2 * batch
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            break
    ns = elapsed * 1e9 / ops
    return {"impl": name, "pattern": "steady", "depth": depth, "ops": ops,
            "mixed_ns": round(ns, 2), "mixed_ops": round(1e9 / ns)}


def main() -> int:
    if len(sys.argv) < 3:
        print("usage: pyqueue_bench.py MIN_SECONDS DEPTH...", file=sys.stderr)
        return 2
    min_seconds = float(sys.argv[1])
    # asyncio.PriorityQueue binds to the running loop on first use in some
    # versions; create and use it inside one.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    impls = [
        ("asyncio.PriorityQueue", asyncio.PriorityQueue,
         asyncio.PriorityQueue.put_nowait, asyncio.PriorityQueue.get_nowait),
        ("heapq", list, heapq.heappush, heapq.heappop),
    ]
    for arg in sys.argv[2:]:
        depth = int(arg)
        for name, make, push, pop in impls:
            print(json.dumps(fill_drain(name, make, push, pop, depth, min_seconds)), flush=True)
            print(json.dumps(steady(name, make, push, pop, depth, min_seconds)), flush=True)
    loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
