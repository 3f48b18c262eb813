"""Triton's system shared memory extension (docs/api.md, "System shared memory"):
register, status and unregister; inputs read from and outputs written into
client regions, mixed with ordinary tensors; bounds and overflow checks on
every use; keys corral refuses; a region unregistered or truncated while a
request using it waits in the queue; --allow-client-shm off; a clean stop
with regions registered. Regions are made with the standard library's
multiprocessing.shared_memory, as tritonclient.utils.shared_memory makes
them with shm_open; the key is "/" + its name, as Triton's clients send it.
"""
import os
import struct
import threading
import time
from multiprocessing import shared_memory

import pytest

from conftest import tensor, wait_for

U64_MAX = 2**64 - 1

# An echo that sleeps for parameters.sleep first: a request behind it waits in the queue.
SLOW_ECHO = '''
import time
import corral

class SlowEcho(corral.Model):
    def infer(self, request):
        time.sleep(float((request.parameters or {}).get("sleep", 0)))
        return {n.replace("INPUT", "OUTPUT"): t for n, t in request.inputs.items()}

if __name__ == "__main__":
    corral.run(SlowEcho)
'''


class Region:
    """A POSIX shared-memory object of the test's, unlinked at the end."""

    def __init__(self, size: int):
        self.shm = shared_memory.SharedMemory(create=True, size=size)
        self.key = "/" + self.shm.name
        self.size = size

    def write(self, offset: int, data: bytes):
        self.shm.buf[offset:offset + len(data)] = data

    def read(self, offset: int, n: int) -> bytes:
        return bytes(self.shm.buf[offset:offset + n])

    def close(self):
        try:
            self.shm.close()
        finally:
            try:
                self.shm.unlink()
            except FileNotFoundError:
                pass


@pytest.fixture
def regions():
    made = []

    def make(size: int) -> Region:
        r = Region(size)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def register(d, name: str, key: str, offset: int = 0, byte_size: int = 0, body=None):
    if body is None:
        body = {"key": key, "offset": offset, "byte_size": byte_size}
    return d.post(f"/v2/systemsharedmemory/region/{name}/register", body)


def shm_params(region: str, byte_size: int, offset: int = 0) -> dict:
    p = {"shared_memory_region": region, "shared_memory_byte_size": byte_size}
    if offset:
        p["shared_memory_offset"] = offset
    return p


def shm_input(name: str, datatype: str, shape: list, region: str, byte_size: int, offset: int = 0) -> dict:
    return {"name": name, "datatype": datatype, "shape": shape, "parameters": shm_params(region, byte_size, offset)}


def fp32(values) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


def bytes_tensor(items) -> bytes:
    return b"".join(struct.pack("<I", len(x)) + x for x in items)


@pytest.fixture
def echo_daemon(corral):
    corral.add("echo", "echo", manifest="runtime: python\nentrypoint: worker.py\ninstances: 1\n")
    return corral.start("--allow-client-shm")


def test_off_by_default_every_endpoint_refused(corral, regions):
    corral.add("echo", "echo")
    d = corral.start()
    assert "system_shared_memory" in d.get("/v2").json()["extensions"]
    r = regions(64)
    answers = [register(d, "r", r.key, 0, 64),
               d.post("/v2/systemsharedmemory/region/r/unregister", {}),
               d.post("/v2/systemsharedmemory/unregister", {}),
               d.get("/v2/systemsharedmemory/region/r/status"),
               d.get("/v2/systemsharedmemory/status"),
               d.infer("echo", [shm_input("INPUT0", "FP32", [4], "r", 16)])]
    for a in answers:
        assert a.status_code == 403, a.text
        assert "--allow-client-shm" in a.json()["error"], a.text
    assert "enable" in answers[0].json()["error"]
    # an output that names a region is refused the same way
    a = d.infer("echo", [tensor("INPUT0", "FP32", [1], [1.0])],
                outputs=[{"name": "OUTPUT0", "parameters": shm_params("r", 4)}])
    assert a.status_code == 403 and "--allow-client-shm" in a.json()["error"], a.text
    # nothing was mapped: the daemon has no mapping of the object
    assert r.shm.name not in open(f"/proc/{d.proc.pid}/maps").read()


def test_register_status_unregister(echo_daemon, regions):
    d = echo_daemon
    a, b = regions(8192), regions(100)
    assert register(d, "a", a.key, 16, 4096).status_code == 200
    assert register(d, "b", b.key, 0, 100).status_code == 200
    st = d.get("/v2/systemsharedmemory/status")
    assert st.status_code == 200
    assert sorted(st.json(), key=lambda e: e["name"]) == [
        {"name": "a", "key": a.key, "offset": 16, "byte_size": 4096},
        {"name": "b", "key": b.key, "offset": 0, "byte_size": 100}]
    assert d.get("/v2/systemsharedmemory/region/b/status").json() == [
        {"name": "b", "key": b.key, "offset": 0, "byte_size": 100}]
    missing = d.get("/v2/systemsharedmemory/region/nope/status")
    assert missing.status_code == 404 and "nope" in missing.json()["error"]
    # the daemon maps the object while it is registered
    assert a.shm.name in open(f"/proc/{d.proc.pid}/maps").read()

    twice = register(d, "a", b.key, 0, 10)
    assert twice.status_code == 400 and "already registered" in twice.json()["error"], twice.text
    assert d.get("/v2/systemsharedmemory/region/a/status").json()[0]["key"] == a.key  # unchanged

    assert d.post("/v2/systemsharedmemory/region/a/unregister", {}).status_code == 200
    assert [e["name"] for e in d.get("/v2/systemsharedmemory/status").json()] == ["b"]
    assert a.shm.name not in open(f"/proc/{d.proc.pid}/maps").read()
    assert d.post("/v2/systemsharedmemory/region/a/unregister", {}).status_code == 200  # unknown: a no-op, as Triton
    assert register(d, "a", a.key, 0, 8192).status_code == 200  # the name is free again
    assert d.post("/v2/systemsharedmemory/unregister", {}).status_code == 200
    assert d.get("/v2/systemsharedmemory/status").json() == []
    assert b.shm.name not in open(f"/proc/{d.proc.pid}/maps").read()

    # wrong methods, and register without a region
    assert d.get("/v2/systemsharedmemory/region/a/register").status_code == 405
    assert d.post("/v2/systemsharedmemory/status", {}).status_code == 405
    assert d.post("/v2/systemsharedmemory/register", {"key": a.key, "byte_size": 1}).status_code == 400


def test_register_refusals(echo_daemon, regions):
    d = echo_daemon
    r = regions(4096)
    cases = [
        ({"key": r.key, "offset": 0, "byte_size": 4097}, "runs past the end"),
        ({"key": r.key, "offset": 4096, "byte_size": 1}, "runs past the end"),
        ({"key": r.key, "offset": 10**6, "byte_size": 1}, "runs past the end"),
        ({"key": r.key, "offset": 2**63 - 1, "byte_size": 2**63 - 1}, "runs past the end"),
        ({"key": r.key, "offset": U64_MAX, "byte_size": 1}, "below 2^63"),
        ({"key": r.key, "offset": 0, "byte_size": U64_MAX}, "below 2^63"),
        ({"key": r.key, "offset": -1, "byte_size": 1}, "offset"),
        ({"key": r.key, "byte_size": 0}, "at least 1"),
        ({"key": r.key}, "byte_size"),
        ({"offset": 0, "byte_size": 1}, "key"),
        ({"key": "/no_such_object_for_corral_tests", "byte_size": 1}, "cannot open"),
        ({"key": r.shm.name, "byte_size": 1}, "'/' followed by"),
        ({"key": "/corral-in", "byte_size": 1}, "reserved"),
        ({"key": "/corralx", "byte_size": 1}, "reserved"),
        ({"key": "/../etc/passwd", "byte_size": 1}, "'/'"),
        ({"key": "/a..b", "byte_size": 1}, "'..'"),
        ({"key": "/dev/shm/" + r.shm.name, "byte_size": 1}, "no '/' after the first"),
    ]
    for body, why in cases:
        a = register(d, "x", "", body=body)
        assert a.status_code == 400, (body, a.text)
        assert why in a.json()["error"], (body, a.text)
    bad_json = d.post("/v2/systemsharedmemory/region/x/register", data=b"{not json")
    assert bad_json.status_code == 400
    assert d.get("/v2/systemsharedmemory/status").json() == []
    # the largest region that fits is fine
    assert register(d, "x", r.key, 4095, 1).status_code == 200


def test_inputs_and_outputs_through_shm_mixed_with_json(echo_daemon, regions):
    d = echo_daemon
    inp, outp = regions(4096), regions(4096)
    x = [1.5, -2.0, 3.25, 1e30]
    inp.write(100, fp32(x))
    words = [b"hello", b"", b"\xff\x00binary"]
    inp.write(200, bytes_tensor(words))
    assert register(d, "in", inp.key, 0, 4096).status_code == 200
    assert register(d, "out", outp.key, 64, 1024).status_code == 200  # offsets in requests are within the region
    outp.write(0, b"\xaa" * 4096)
    resp = d.infer("echo", [shm_input("INPUT0", "FP32", [2, 2], "in", 16, 100),
                            tensor("INPUT1", "INT32", [3], [7, 8, 9]),
                            shm_input("INPUT2", "BYTES", [3], "in", len(bytes_tensor(words)), 200)],
                   outputs=[{"name": "OUTPUT0", "parameters": shm_params("out", 16, 8)},
                            {"name": "OUTPUT1"},
                            {"name": "OUTPUT2", "parameters": shm_params("out", 512, 100)}])
    assert resp.status_code == 200, resp.text
    outs = {o["name"]: o for o in resp.json()["outputs"]}
    assert outs["OUTPUT0"] == {"name": "OUTPUT0", "datatype": "FP32", "shape": [2, 2],
                               "parameters": {"shared_memory_region": "out", "shared_memory_byte_size": 16,
                                              "shared_memory_offset": 8}}
    assert outs["OUTPUT1"]["data"] == [7, 8, 9]
    blen = len(bytes_tensor(words))
    assert outs["OUTPUT2"]["parameters"]["shared_memory_byte_size"] == blen and "data" not in outs["OUTPUT2"]
    # region "out" starts at byte 64 of the object
    assert outp.read(64 + 8, 16) == fp32(x)
    assert outp.read(64 + 100, blen) == bytes_tensor(words)
    assert outp.read(64, 8) == b"\xaa" * 8 and outp.read(64 + 8 + 16, 8) == b"\xaa" * 8  # nothing else written
    # binary_data_output does not move a shared-memory output into the body
    resp = d.infer("echo", [shm_input("INPUT0", "FP32", [4], "in", 16, 100)],
                   outputs=[{"name": "OUTPUT0", "parameters": shm_params("out", 16)}],
                   parameters={"binary_data_output": True})
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("application/json"), resp.text


def test_large_tensor_in_and_out(echo_daemon, regions):
    """4 MiB: over the 1 MiB at which tensors go through the worker's own regions."""
    d = echo_daemon
    n = 4 << 20
    inp, outp = regions(n), regions(n)
    data = os.urandom(n)
    inp.write(0, data)
    assert register(d, "in", inp.key, 0, n).status_code == 200
    assert register(d, "out", outp.key, 0, n).status_code == 200
    for _ in range(3):
        outp.write(0, b"\0" * 16)
        resp = d.infer("echo", [shm_input("INPUT0", "UINT8", [n], "in", n)],
                       outputs=[{"name": "OUTPUT0", "parameters": shm_params("out", n)}])
        assert resp.status_code == 200, resp.text
        assert len(resp.content) < 1000  # the tensor is not in the body
        assert outp.read(0, n) == data


def test_bounds_on_every_use(echo_daemon, regions):
    d = echo_daemon
    r = regions(4096)
    assert register(d, "r", r.key, 0, 1024).status_code == 200
    X = [tensor("INPUT0", "FP32", [1], [1.0])]
    cases = [
        ([shm_input("INPUT0", "FP32", [4], "r", 16, 1024)], None, "run past the end"),
        ([shm_input("INPUT0", "FP32", [4], "r", 16, 1020)], None, "run past the end"),
        ([shm_input("INPUT0", "FP32", [256], "r", 1028)], None, "run past the end"),
        ([shm_input("INPUT0", "FP32", [4], "r", 16, U64_MAX)], None, "overflows"),
        ([shm_input("INPUT0", "FP32", [4], "r", U64_MAX, 1)], None, "overflows"),
        ([shm_input("INPUT0", "FP32", [4], "r", 2**64)], None, "shared_memory_byte_size must be"),
        ([shm_input("INPUT0", "FP32", [4], "r", -1)], None, "shared_memory_byte_size must be"),
        ([shm_input("INPUT0", "FP32", [4], "r", 12)], None, "does not hold 4 FP32"),
        ([shm_input("INPUT0", "FP32", [4], "r", 20)], None, "does not hold 4 FP32"),
        ([shm_input("INPUT0", "BYTES", [2], "r", 16)], None, "does not hold 2 BYTES"),
        ([shm_input("INPUT0", "FP32", [4], "nope", 16)], None, "no shared memory region 'nope'"),
        ([dict(shm_input("INPUT0", "FP32", [1], "r", 4), data=[1.0])], None, "only one of"),
        ([{"name": "INPUT0", "datatype": "FP32", "shape": [1], "parameters": {"shared_memory_region": "r"}}], None,
         "shared_memory_byte_size must be"),
        (X, [{"name": "OUTPUT0", "parameters": shm_params("r", 4, 1024)}], "run past the end"),
        (X, [{"name": "OUTPUT0", "parameters": shm_params("r", 8, U64_MAX - 3)}], "overflows"),
        (X, [{"name": "OUTPUT0", "parameters": shm_params("gone", 4)}], "no shared memory region 'gone'"),
        (X, [{"name": "OUTPUT0", "parameters": dict(shm_params("r", 4), binary_data=True)}], "binary_data"),
        (X, [{"name": "OUTPUT0", "parameters": dict(shm_params("r", 4), classification=1)}], "classification"),
    ]
    for inputs, outputs, why in cases:
        extra = {"outputs": outputs} if outputs else {}
        a = d.infer("echo", inputs, **extra)
        assert a.status_code == 400, (inputs, outputs, a.text)
        assert why in a.json()["error"] and "model 'echo'" in a.json()["error"], (inputs, outputs, a.text)
    # an output larger than its region: Triton's 400, naming the output
    r.write(0, fp32([1, 2, 3, 4]))
    a = d.infer("echo", [shm_input("INPUT0", "FP32", [4], "r", 16)],
                outputs=[{"name": "OUTPUT0", "parameters": shm_params("r", 12, 512)}])
    assert a.status_code == 400, a.text
    assert "output 'OUTPUT0' (12 bytes) should be at least 16 bytes" in a.json()["error"]
    assert r.read(512, 16) == b"\0" * 16
    # and the region still serves
    a = d.infer("echo", [shm_input("INPUT0", "FP32", [4], "r", 16)],
                outputs=[{"name": "OUTPUT0", "parameters": shm_params("r", 16, 512)}])
    assert a.status_code == 200, a.text
    assert r.read(512, 16) == fp32([1, 2, 3, 4])


def slow_daemon(corral):
    corral.add("slow", manifest="runtime: python\nentrypoint: worker.py\ninstances: 1\nconcurrency: 1\n"
                                "pipeline: 0\nmax_queue: 8\n", files={"worker.py": SLOW_ECHO})
    d = corral.start("--allow-client-shm")
    assert d.post("/v2/repository/models/slow/load", {}).status_code == 200
    return d


def behind_a_busy_instance(d, body: dict):
    """Sends a 1.5 s request, then body; returns (the thread waiting for body's answer, its result dict) once
    body is queued behind the first."""
    busy = threading.Thread(target=lambda: d.infer("slow", [tensor("INPUT0", "INT32", [1], [0])],
                                                   parameters={"sleep": 1.5}), daemon=True)
    busy.start()
    wait_for(lambda: d.model("slow")["instances"][0]["inflight"] == 1, what="the instance to be busy")
    result = {}

    def send():
        result["resp"] = d.post("/v2/models/slow/infer", body, timeout=30)

    t = threading.Thread(target=send, daemon=True)
    t.start()
    wait_for(lambda: d.model("slow")["queue"] == 1, what="the second request to be queued")
    return busy, t, result


def test_region_unregistered_while_a_request_waits(corral, regions):
    """The request holds its regions: it completes, into the region it named, after the unregistration."""
    d = slow_daemon(corral)
    n = 2 << 20  # large: its input stays in the client's mapping until it is sent
    inp, outp = regions(n), regions(n)
    data = os.urandom(n)
    inp.write(0, data)
    assert register(d, "in", inp.key, 0, n).status_code == 200
    assert register(d, "out", outp.key, 0, n).status_code == 200
    body = {"inputs": [shm_input("INPUT0", "UINT8", [n], "in", n)],
            "outputs": [{"name": "OUTPUT0", "parameters": shm_params("out", n)}]}
    busy, t, result = behind_a_busy_instance(d, body)
    assert d.post("/v2/systemsharedmemory/unregister", {}).status_code == 200
    assert d.get("/v2/systemsharedmemory/status").json() == []
    t.join(timeout=30)
    busy.join(timeout=30)
    assert result["resp"].status_code == 200, result["resp"].text
    assert outp.read(0, n) == data
    # the last reference went with the request: no mapping is left
    wait_for(lambda: inp.shm.name not in open(f"/proc/{d.proc.pid}/maps").read(), what="the mapping to go")
    assert outp.shm.name not in open(f"/proc/{d.proc.pid}/maps").read()
    # a new request naming the region is refused
    a = d.post("/v2/models/slow/infer", body)
    assert a.status_code == 400 and "no shared memory region 'in'" in a.json()["error"]


@pytest.mark.parametrize("large", [False, True])
def test_region_truncated_while_a_request_waits(corral, regions, large):
    """A client that shrinks its object under the daemon's mapping gets a 400; the daemon lives on."""
    d = slow_daemon(corral)
    n = (2 << 20) if large else 4096
    r = regions(2 * n)
    r.write(0, os.urandom(n))
    assert register(d, "r", r.key, 0, 2 * n).status_code == 200
    body = {"inputs": [shm_input("INPUT0", "UINT8", [n], "r", n)],
            "outputs": [{"name": "OUTPUT0", "parameters": shm_params("r", n, n)}]}
    busy, t, result = behind_a_busy_instance(d, body)
    os.truncate(f"/dev/shm/{r.shm.name}", 0)
    t.join(timeout=30)
    busy.join(timeout=30)
    resp = result["resp"]
    assert resp.status_code == 400, resp.text
    assert "truncated" in resp.json()["error"] and "'r'" in resp.json()["error"]
    assert d.proc.poll() is None
    # the broken region is refused until it is registered again
    again = d.post("/v2/models/slow/infer", body)
    assert again.status_code == 400 and "register it again" in again.json()["error"], again.text
    # the daemon goes on serving, shared memory included
    ok = regions(64)
    ok.write(0, fp32([5, 6]))
    assert register(d, "ok", ok.key, 0, 64).status_code == 200
    a = d.infer("slow", [shm_input("INPUT0", "FP32", [2], "ok", 8)],
                outputs=[{"name": "OUTPUT0", "parameters": shm_params("ok", 8, 32)}])
    assert a.status_code == 200, a.text
    assert ok.read(32, 8) == fp32([5, 6])


def test_stop_with_regions_registered(echo_daemon, regions):
    d = echo_daemon
    r = regions(8192)
    r.write(0, fp32([1, 2]))
    assert register(d, "a", r.key, 0, 8192).status_code == 200
    assert register(d, "b", r.key, 4096, 4096).status_code == 200
    assert d.infer("echo", [shm_input("INPUT0", "FP32", [2], "a", 8)]).status_code == 200
    assert d.stop() == 0
    assert "stopped" in d.log()


def test_management_token_guards_the_endpoints(corral, regions, tmp_path):
    corral.add("echo", "echo")
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    d = corral.start("--allow-client-shm", "--auth-token-file", str(token), "--auth", "management")
    r = regions(64)
    assert register(d, "r", r.key, 0, 64).status_code == 401
    assert d.get("/v2/systemsharedmemory/status").status_code == 401
    a = d.post("/v2/systemsharedmemory/region/r/register", {"key": r.key, "byte_size": 64},
               headers={"Authorization": "Bearer s3cret"})
    assert a.status_code == 200, a.text


def test_batched_requests_from_shm(corral, regions):
    """Requests of a batching model whose inputs and outputs are in client regions: each gets its own rows."""
    corral.add("echo", "echo", manifest="runtime: python\nentrypoint: worker.py\ninstances: 1\n"
                                        "batching: {max_batch_size: 8, max_queue_delay: 200ms}\n")
    d = corral.start("--allow-client-shm")
    r = regions(4096)
    assert register(d, "r", r.key, 0, 4096).status_code == 200
    n = 4
    for i in range(n):
        r.write(i * 64, fp32([i, i + 0.5]))
    results = {}

    def send(i):
        results[i] = d.infer("echo", [shm_input("INPUT0", "FP32", [1, 2], "r", 8, i * 64)],
                             outputs=[{"name": "OUTPUT0", "parameters": shm_params("r", 8, 2048 + i * 64)}])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    for i in range(n):
        assert results[i].status_code == 200, results[i].text
        assert r.read(2048 + i * 64, 8) == fp32([i, i + 0.5])
    batch_sum = [line for line in d.get("/metrics").text.splitlines()
                 if line.startswith("corral_batch_size_count") and 'model="echo"' in line]
    assert batch_sum and float(batch_sum[0].split()[-1]) < n, batch_sum  # fewer executions than requests


def test_flag_in_help_and_before_other_options(corral, regions):
    import subprocess
    from conftest import BIN
    out = subprocess.run([BIN, "serve", "--help"], capture_output=True, text=True, timeout=10).stdout
    assert "--allow-client-shm" in out and "docs/security.md" in out
    corral.add("echo", "echo")
    # a flag without a value: the option after it keeps its own value
    d = corral.start("--allow-client-shm", "--log-level", "debug")
    r = regions(64)
    assert register(d, "r", r.key, 0, 64).status_code == 200
    assert "--allow-client-shm" in d.log()  # the warning at start


def test_tritonclient_request_shapes(echo_daemon, regions):
    """The bodies tritonclient.http sends (its _client.py): register with json.dumps and no Content-Type,
    unregister with an empty body, the status parsed as JSON; and InferInput.set_shared_memory's parameters
    (no shared_memory_offset when it is 0) with the Inference-Header-Content-Length it always sends."""
    import json as _json
    d = echo_daemon
    r = regions(1024)
    r.write(0, fp32([3.0, 4.0]))
    body = _json.dumps({"key": r.key, "offset": 0, "byte_size": 1024})
    a = d.http.post(d.url("/v2/systemsharedmemory/region/input%20data/register"), data=body, timeout=10)
    assert a.status_code == 200, a.text
    assert _json.loads(d.get("/v2/systemsharedmemory/region/input%20data/status").content)[0]["name"] == "input data"
    req = _json.dumps({"inputs": [{"name": "INPUT0", "shape": [2], "datatype": "FP32",
                                   "parameters": {"shared_memory_region": "input data",
                                                  "shared_memory_byte_size": 8}}],
                       "outputs": [{"name": "OUTPUT0", "parameters": {"shared_memory_region": "input data",
                                                                      "shared_memory_byte_size": 8,
                                                                      "shared_memory_offset": 512}}]})
    a = d.http.post(d.url("/v2/models/echo/infer"), data=req,
                    headers={"Inference-Header-Content-Length": str(len(req))}, timeout=10)
    assert a.status_code == 200, a.text
    assert r.read(512, 8) == fp32([3.0, 4.0])
    a = d.http.post(d.url("/v2/systemsharedmemory/region/input%20data/unregister"), data="", timeout=10)
    assert a.status_code == 200 and d.get("/v2/systemsharedmemory/status").json() == []
