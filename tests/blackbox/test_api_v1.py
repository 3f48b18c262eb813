"""corral's own HTTP API, over real HTTP: model status with per-instance detail,
scaling, the workers' logs, and free-form generate (echo, echo-c, tts-espeak).
"""
from __future__ import annotations

import concurrent.futures
import io
import json
import wave

import pytest

from conftest import EXAMPLES, alive, tensor, wait_for

TTS = EXAMPLES / "tts-espeak"


def assert_error(r, status: int, *needles: str) -> str:
    """Checks an error response: the status, a JSON {"error": message} body, and words in the message."""
    assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text}"
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"error"}, body
    msg = body["error"]
    assert isinstance(msg, str) and msg and "\n" not in msg, body
    for needle in needles:
        assert needle in msg, f"{needle!r} not in error message {msg!r}"
    return msg


def add_probe(corral, name: str = "probe", extra: str = "", parameters: dict | None = None) -> None:
    manifest = "runtime: python\nentrypoint: worker.py\ninstances: 1\n" + extra
    if parameters:
        manifest += "parameters:\n" + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in parameters.items())
    corral.add(name, "api_probe", manifest=manifest)


def rss_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


# ---- status ----

def test_models_list_and_detail(corral):
    corral.add("echo", "echo")
    add_probe(corral)
    d = corral.start()
    r = d.get("/v1/models")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    models = {m["name"]: m for m in r.json()["models"]}
    assert set(models) == {"echo", "probe"}
    for m in models.values():
        assert m["state"] == "unloaded", m
        assert m["queue"] == 0
        assert m["instances"] == []

    r = d.post("/v2/repository/models/echo/load", {"instances": 2})
    assert r.status_code == 200, r.text
    for i in range(3):
        assert d.infer("echo", [tensor("INPUT0", "INT8", [1], [i])]).status_code == 200
    m = d.model("echo")
    assert m["name"] == "echo" and m["state"] == "ready" and m["queue"] == 0, m
    assert m.get("reason") in (None, ""), m
    insts = m["instances"]
    assert [i["id"] for i in insts] == [0, 1], insts
    assert len({i["pid"] for i in insts}) == 2
    for inst in insts:
        assert inst["state"] == "ready", inst
        assert isinstance(inst["pid"], int) and alive(inst["pid"]), inst
        assert isinstance(inst["uptime_s"], (int, float)) and inst["uptime_s"] >= 0, inst
        assert inst["restarts"] == 0, inst
        assert isinstance(inst["rss_bytes"], int) and inst["rss_bytes"] > 1 << 20, inst  # a Python process
        # the daemon reads the same resident set the kernel reports (within a factor, it moves)
        actual = rss_of(inst["pid"])
        assert actual / 4 < inst["rss_bytes"] < actual * 4, (inst, actual)
    assert sum(i["requests"] for i in insts) == 3, insts
    before = {i["id"]: i["uptime_s"] for i in insts}
    wait_for(lambda: all(i["uptime_s"] > before[i["id"]] for i in d.model("echo")["instances"]),
             timeout=5, what="uptime to grow")
    # the list carries the same detail
    listed = {x["name"]: x for x in d.get("/v1/models").json()["models"]}
    assert [i["pid"] for i in listed["echo"]["instances"]] == [i["pid"] for i in insts]
    assert listed["probe"]["state"] == "unloaded"


def test_queue_depth_is_reported(corral):
    add_probe(corral, extra="concurrency: 1\n")
    d = corral.start()
    assert d.post("/v2/repository/models/probe/load").status_code == 200
    slow = {"parameters": {"mode": "sleep", "seconds": 1}}
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        futs = [pool.submit(d.infer, "probe", [tensor("INPUT0", "INT8", [1], [k])], **slow) for k in range(3)]
        # One runs, one is pipelined to the busy worker (in flight, not queued), one waits in the queue.
        m = wait_for(lambda: (lambda m: m if m["queue"] == 1 and m["instances"][0]["inflight"] == 2 else None)(
            d.model("probe")), timeout=10, what="one request queued behind two in flight")
        assert m["instances"][0]["state"] == "ready" and m["pipeline"] == 1, m
        assert [f.result(timeout=20).status_code for f in futs] == [200, 200, 200]
    m = d.model("probe")
    assert m["queue"] == 0 and m["instances"][0]["requests"] == 3, m


def test_failed_model_reports_reason(corral):
    add_probe(corral, parameters={"fail_load": "CUDA out of memory"},
              extra="restart: {max_restarts: 0, backoff_min: 10ms, backoff_max: 10ms}\n")
    d = corral.start()
    r = d.post("/v2/repository/models/probe/load")
    assert r.status_code == 503, r.text
    m = d.wait_state("probe", "failed")
    assert "CUDA out of memory" in m["reason"], m
    listed = {x["name"]: x for x in d.get("/v1/models").json()["models"]}
    assert listed["probe"]["state"] == "failed" and "CUDA out of memory" in listed["probe"]["reason"]


def test_v1_errors(corral):
    corral.add("echo", "echo")
    d = corral.start()
    assert_error(d.get("/v1/models/nope"), 404, "nope")
    assert_error(d.get("/v1/models/nope/logs"), 404, "nope")
    assert_error(d.post("/v1/models/nope/scale", {"instances": 1}), 404, "nope")
    assert_error(d.post("/v1/models/nope/generate", {"a": 1}), 404, "nope")
    assert_error(d.get("/v1/models/bad$name"), 400, "invalid model name")
    assert_error(d.post("/v1/models/" + "x" * 200 + "/generate", {"a": 1}), 400, "invalid model name")
    assert_error(d.get("/v1/models/echo/frobnicate"), 404)
    assert_error(d.get("/v1/nothing"), 404)
    for method, path, allowed in [("PUT", "/v1/models", "GET, POST"), ("PUT", "/v1/models/echo", "GET, DELETE"),
                                  ("GET", "/v1/models/echo/generate", "POST"), ("GET", "/v1/models/echo/scale", "POST"),
                                  ("POST", "/v1/models/echo/logs", "GET")]:
        r = d.http.request(method, d.url(path), timeout=10)
        assert_error(r, 405, method)
        assert r.headers.get("Allow") == allowed, (method, path, r.headers)
    assert d.model("echo")["state"] == "unloaded"  # GET .../generate did not load it


# ---- scale ----

def test_scale_up_and_down(corral):
    corral.add("echo", "echo", manifest="runtime: python\nentrypoint: worker.py\ninstances: 1\n")
    d = corral.start()
    assert d.post("/v2/repository/models/echo/load").status_code == 200
    (first,) = d.worker_pids("echo")
    r = d.post("/v1/models/echo/scale", {"instances": 3})
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "echo"
    m = wait_for(lambda: (lambda m: m if len(m["instances"]) == 3 and all(i["state"] == "ready" for i in m["instances"])
                          else None)(d.model("echo")), timeout=20, what="3 ready instances")
    pids = [i["pid"] for i in m["instances"]]
    assert len(set(pids)) == 3 and first in pids and all(alive(p) for p in pids), m
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        rs = list(pool.map(lambda k: d.infer("echo", [tensor("INPUT0", "INT32", [1], [k])]), range(12)))
    assert all(r.status_code == 200 for r in rs)

    r = d.post("/v1/models/echo/scale", {"instances": 1})
    assert r.status_code == 200, r.text
    m = wait_for(lambda: (lambda m: m if len(m["instances"]) == 1 else None)(d.model("echo")), timeout=20,
                 what="scale down to 1")
    (kept,) = [i["pid"] for i in m["instances"]]
    gone = [p for p in pids if p != kept]
    wait_for(lambda: not any(alive(p) for p in gone), timeout=10, what="retired workers to exit")
    assert m["state"] == "ready"
    r = d.infer("echo", [tensor("INPUT0", "INT32", [1], [5])])
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [5], r.text


def test_scale_errors(corral):
    corral.add("echo", "echo")
    d = corral.start()
    assert_error(d.post("/v1/models/echo/scale", {"instances": 2}), 409, "echo")
    assert d.model("echo")["state"] == "unloaded"
    assert d.post("/v2/repository/models/echo/load").status_code == 200
    for body in ({"instances": -1}, {"instances": "two"}, {"instances": 1.5}, {"instances": 100000}, {}, {"n": 2},
                 [2]):
        assert_error(d.post("/v1/models/echo/scale", body), 400, "instances")
    assert_error(d.post("/v1/models/echo/scale", data=b"{oops", headers={"Content-Type": "application/json"}), 400)
    assert len(d.model("echo")["instances"]) == 2  # untouched


# ---- logs ----

def test_logs_hold_what_the_worker_printed(corral):
    add_probe(corral)
    d = corral.start()
    r = d.get("/v1/models/probe/logs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain"), r.text
    assert r.text == "" and r.headers["X-Corral-Log-Start"] == "0"
    r = d.infer("probe", [tensor("INPUT0", "INT8", [1], [1])], parameters={"mode": "print", "text": "marker-7f3a"})
    assert r.status_code == 200, r.text
    (pid,) = d.worker_pids("probe")
    logs = wait_for(lambda: (lambda t: t if "stderr says marker-7f3a" in t else None)(d.get("/v1/models/probe/logs").text),
                    timeout=5, what="the worker's output in the logs")
    lines = logs.splitlines()
    assert f"[0 out] api_probe: instance 0 loaded pid {pid}" in lines, logs
    assert "[0 out] stdout says marker-7f3a" in lines, logs
    assert "[0 err] stderr says marker-7f3a" in lines, logs
    assert d.get("/v1/models/probe/logs").headers["X-Corral-Log-Start"] == "0"
    # a raised exception's traceback goes to the log too
    d.infer("probe", [tensor("INPUT0", "INT8", [1], [1])], parameters={"mode": "raise", "text": "trace-me"})
    wait_for(lambda: "RuntimeError: boom: trace-me" in d.get("/v1/models/probe/logs").text, timeout=5,
             what="the traceback in the logs")


# ---- generate ----

@pytest.mark.parametrize("variant", ["echo", "echo-c"])
def test_generate_raw_bytes_keep_content_type(corral, variant):
    corral.add(variant, variant)
    d = corral.start()
    payload = bytes(range(256)) * 10
    r = d.post(f"/v1/models/{variant}/generate", data=payload, headers={"Content-Type": "image/x-test"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/x-test"
    assert r.content == payload
    r = d.post(f"/v1/models/{variant}/generate", data="plain text, ünïcode".encode(),
               headers={"Content-Type": "text/plain; charset=utf-8"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.text == "plain text, ünïcode"
    r = d.post(f"/v1/models/{variant}/generate", data=b"")
    assert r.status_code == 200, r.text
    assert r.content == b""


def test_generate_json_with_echo(corral):
    corral.add("echo", "echo")
    d = corral.start()
    body = {"text": "héllo", "n": [1, 2.5, None, True], "nested": {"k": "v"}}
    r = d.post("/v1/models/echo/generate", body)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {"echo": body}
    assert_error(d.post("/v1/models/echo/generate", data=b'{"text": ', headers={"Content-Type": "application/json"}),
                 400, "echo")


def test_generate_errors_from_the_model(corral):
    corral.add("slowload", "slowload", manifest="runtime: python\nentrypoint: worker.py\nparameters: {delay: 0}\n")
    add_probe(corral, parameters={"fail_load": "no voices"},
              extra="restart: {max_restarts: 0, backoff_min: 10ms, backoff_max: 10ms}\n")
    d = corral.start()
    # a model without generate rejects the request; it is not the daemon's fault
    assert_error(d.post("/v1/models/slowload/generate", {"text": "hi"}), 400, "slowload", "generate")
    r = d.post("/v1/models/probe/generate", {"text": "hi"})
    assert_error(r, 503, "probe", "no voices")
    assert r.headers.get("Retry-After", "").isdigit(), r.headers


# ---- tts-espeak ----

def tts(corral):
    if not (TTS / "model.yaml").exists():
        pytest.fail("examples/models/tts-espeak has no model.yaml: the example is not written yet")
    corral.add("tts-espeak", "tts-espeak")
    return corral.start()


def wav_of(r) -> tuple[wave.Wave_read, float]:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].split(";")[0].strip() == "audio/wav", r.headers
    assert r.content[:4] == b"RIFF" and r.content[8:12] == b"WAVE"
    w = wave.open(io.BytesIO(r.content))
    assert w.getnchannels() == 1
    assert w.getsampwidth() == 2
    assert 8000 <= w.getframerate() <= 48000
    assert w.getnframes() > 0
    frames = w.readframes(w.getnframes())
    assert len(frames) == w.getnframes() * 2
    assert any(frames), "the audio is silence"
    return w, w.getnframes() / w.getframerate()


def test_tts_espeak_speaks_wav(corral):
    d = tts(corral)
    _, short = wav_of(d.post("/v1/models/tts-espeak/generate", {"text": "Hello."}))
    _, long = wav_of(d.post("/v1/models/tts-espeak/generate",
                            {"text": "Hello. This is a much longer sentence, spoken by corral's text to speech "
                                     "example, so that it lasts a good deal longer than the first one."}))
    assert 0.1 < short < long, (short, long)
    assert long > 2 * short, (short, long)
    _, slow = wav_of(d.post("/v1/models/tts-espeak/generate", {"text": "Hello there, world.", "rate": 90}))
    _, fast = wav_of(d.post("/v1/models/tts-espeak/generate", {"text": "Hello there, world.", "rate": 300}))
    assert slow > fast, (slow, fast)


@pytest.mark.parametrize("voice", ["de", "fr", "es"])
def test_tts_espeak_other_languages(corral, voice):
    d = tts(corral)
    _, secs = wav_of(d.post("/v1/models/tts-espeak/generate", {"text": "Guten Tag, bonjour, hola.", "voice": voice}))
    assert secs > 0.3


def test_tts_espeak_rejects_bad_input(corral):
    d = tts(corral)
    assert_error(d.post("/v1/models/tts-espeak/generate", {"text": "hi", "voice": "no-such-voice-xx"}), 400,
                 "tts-espeak", "no-such-voice-xx")
    assert_error(d.post("/v1/models/tts-espeak/generate", {"text": ""}), 400, "tts-espeak", "text")
    assert_error(d.post("/v1/models/tts-espeak/generate", {"voice": "en"}), 400, "tts-espeak", "text")
    # still serving
    wav_of(d.post("/v1/models/tts-espeak/generate", {"text": "still here"}))
    m = d.model("tts-espeak")
    assert all(i["restarts"] == 0 for i in m["instances"]), m


def test_tts_espeak_plain_text_body_and_infer(corral):
    d = tts(corral)
    w, secs = wav_of(d.post("/v1/models/tts-espeak/generate", data="Plain text works too.".encode(),
                            headers={"Content-Type": "text/plain; charset=utf-8"}))
    assert secs > 0.3
    r = d.infer("tts-espeak", [tensor("TEXT", "BYTES", [1], ["Hello from infer."])], parameters={"rate": 175})
    assert r.status_code == 200, r.text
    outs = {o["name"]: o for o in r.json()["outputs"]}
    assert outs["SAMPLE_RATE"]["datatype"] == "INT32" and outs["SAMPLE_RATE"]["data"] == [w.getframerate()]
    audio = outs["AUDIO"]
    assert audio["datatype"] == "INT16" and audio["shape"] == [len(audio["data"])] and len(audio["data"]) > 1000
    assert any(audio["data"])
    assert_error(d.post("/v1/models/tts-espeak/generate", {"text": "hi", "rate": 10}), 400, "tts-espeak", "rate")
    assert_error(d.post("/v1/models/tts-espeak/generate", [1, 2]), 400, "tts-espeak")
    assert_error(d.infer("tts-espeak", [tensor("VOICE", "BYTES", [1], ["en"])]), 400, "tts-espeak", "TEXT")
