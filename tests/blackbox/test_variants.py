"""Variants: one model's code under other names (docs/repository.md, "Variants").

Declared variants (`from: NAME` in a model.yaml) and variants created at run
time (POST /v1/models, DELETE /v1/models/{name}, `corral create`/`delete`):
inheritance and overriding, the parameter merge, chains, loops and missing
bases, a changed base, separate queues and instances, the variant's load
context (Python and C SDKs), conflicts and bad keys, a delete with requests
queued, the state file across a restart, and the token.

Fixtures: tests/models/steerable (TAG shows the parameters it runs with),
tests/models/variant_ctx (answers its load context), tests/models/dirs_c
(the C SDK's context), examples/models/tts-espeak and tts-fr.
"""
from __future__ import annotations

import concurrent.futures
import os
import shutil
import sqlite3
import subprocess
import time

import pytest
import requests

from conftest import BIN, EXAMPLES, ctl_manifest, infer, load, out, unload, wait_for


def index(d):
    r = d.post("/v2/repository/index", {})
    assert r.status_code == 200, r.text
    return {e["name"]: e for e in r.json()}


def create(d, body, timeout=30):
    return d.post("/v1/models", body, timeout=timeout)


def delete(d, name, timeout=60, **kw):
    return requests.delete(d.url(f"/v1/models/{name}"), timeout=timeout, **kw)


def gen(d, model, body=None):
    r = d.post(f"/v1/models/{model}/generate", body or {}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def error_of(r, status, *words):
    assert r.status_code == status, (r.status_code, r.text)
    msg = r.json()["error"]
    for w in words:
        assert w in msg, (w, msg)
    return msg


# ---- declared variants ----

def test_a_variant_inherits_every_key_and_overrides_its_own(corral):
    base = corral.add("base", "steerable", manifest=ctl_manifest({"tag": "base"}, instances=2, max_queue=5,
                                                                 concurrency=1))
    v = corral.add("fast", manifest="from: base\ninstances: 1\nparameters:\n  tag: fast\n")
    d = corral.start()
    m = d.model("fast")
    assert m["from"] == "base" and m["origin"] == "repository", m
    assert m["dir"] == str(base.resolve()) and m["variant_dir"] == str(v.resolve()), m
    assert m["max_queue"] == 5 and m["runtime"] == "python", m   # inherited
    assert out(infer(d, "fast"), "TAG") == "fast"
    assert out(infer(d, "base"), "TAG") == "base"
    assert len(d.model("fast")["instances"]) == 1                 # its own instances key
    assert len(d.model("base")["instances"]) == 2
    b = d.model("base")
    assert "from" not in b and "variant_dir" not in b and b["origin"] == "repository"


def test_parameters_merge_key_by_key_one_level(corral):
    corral.add("base", "variant_ctx")
    corral.add("v", manifest="from: base\nparameters:\n  b: 3\n  c: 4\n  voice: {x: 5}\n")
    d = corral.start()
    assert gen(d, "v")["parameters"] == {"a": 1, "b": 3, "c": 4, "voice": {"x": 5}}
    assert gen(d, "base")["parameters"] == {"a": 1, "b": 2, "voice": {"x": 1, "y": 2}}


def test_the_python_context_of_a_variant(corral):
    base = corral.add("base", "variant_ctx")
    v = corral.add("v", manifest="from: base\n", files={"extra.txt": "mine"})
    d = corral.start()
    c = gen(d, "v")
    assert c["name"] == "v" and c["model_dir"] == str(base.resolve()) and c["cwd"] == str(base.resolve())
    assert c["variant_dir"] == str(v.resolve()) and c["extra"] == "mine"
    assert c["env"] == {"CORRAL_MODEL": "v", "CORRAL_MODEL_DIR": str(base.resolve()),
                        "CORRAL_VARIANT_DIR": str(v.resolve())}
    b = gen(d, "base")
    assert b["variant_dir"] is None and b["env"]["CORRAL_VARIANT_DIR"] is None and b["name"] == "base"


def test_the_c_context_of_a_variant(corral):
    base = corral.add("dirs", "dirs_c")
    v = corral.add("dirs-v", manifest="from: dirs\n")
    d = corral.start(env={"CORRAL_VARIANT_DIR": "/inherited"})
    c = gen(d, "dirs-v")
    assert (c["model"], c["model_dir"], c["variant_dir"]) == ("dirs-v", str(base.resolve()), str(v.resolve())), c
    c = gen(d, "dirs")
    assert (c["model"], c["variant_dir"]) == ("dirs", None), c


def test_a_variant_of_a_variant(corral):
    base = corral.add("a", "variant_ctx")
    corral.add("b", manifest="from: a\nparameters:\n  b: 20\n")
    c_dir = corral.add("c", manifest="from: b\nparameters:\n  c: 30\n")
    d = corral.start()
    c = gen(d, "c")
    assert c["parameters"] == {"a": 1, "b": 20, "c": 30, "voice": {"x": 1, "y": 2}}
    assert c["model_dir"] == str(base.resolve()) and c["variant_dir"] == str(c_dir.resolve())
    assert d.model("c")["from"] == "b"


def test_loops_and_missing_bases_are_the_variants_errors(corral):
    corral.add("base", "steerable", manifest=ctl_manifest({"tag": "base"}))
    corral.add("x", manifest="from: y\n")
    corral.add("y", manifest="from: x\n")
    corral.add("self", manifest="from: self\n")
    corral.add("lost", manifest="from: nowhere\n")
    corral.add("bad-from", manifest="from: [1, 2]\n")
    corral.add("on-lost", manifest="from: lost\n")
    d = corral.start()
    assert "a loop: x -> y -> x" in d.model("x")["manifest_error"]
    assert "a loop: x -> y -> x" in d.model("y")["manifest_error"]
    assert "a loop: self -> self" in d.model("self")["manifest_error"]
    err = d.model("lost")["manifest_error"]
    assert "lost/model.yaml: key 'from': base model 'nowhere' is not in the repository (lost -> nowhere)" in err, err
    assert "key 'from'" in d.model("bad-from")["manifest_error"]
    err = d.model("on-lost")["manifest_error"]
    assert "base model 'lost' is broken" in err and "nowhere" in err, err
    error_of(infer(d, "x"), 503, "x", "loop")
    assert out(infer(d, "base"), "TAG") == "base"   # the base keeps working


def test_a_variants_keys_are_validated_as_a_manifest(corral):
    corral.add("base", "steerable", manifest=ctl_manifest())
    corral.add("v", manifest="from: base\ninstancez: 2\n")
    corral.add("w", manifest="from: base\ninstances: 0\n")
    d = corral.start()
    assert "v/model.yaml: key 'instancez': unknown key" in d.model("v")["manifest_error"]
    assert "key 'instances': must be an integer" in d.model("w")["manifest_error"]


def test_a_changed_base_marks_its_variants_changed(corral):
    base = corral.add("base", "steerable", manifest=ctl_manifest({"tag": "one"}))
    corral.add("v", manifest="from: base\n")
    corral.add("w", manifest="from: v\n")
    d = corral.start()
    assert out(infer(d, "v"), "TAG") == "one"
    assert out(infer(d, "w"), "TAG") == "one"
    (base / "model.yaml").write_text(ctl_manifest({"tag": "two"}))
    idx = index(d)
    assert idx["v"]["changed"] and idx["w"]["changed"], idx
    assert not idx["base"]["changed"]           # unloaded: it simply runs the new manifest from its next load
    assert out(infer(d, "v"), "TAG") == "one"   # applies at the next load
    assert unload(d, "v").status_code == 200
    assert load(d, "v").status_code == 200
    assert out(infer(d, "v"), "TAG") == "two"
    assert not d.model("v")["changed"]
    # A change that leaves the resolved keys as they were changes nothing.
    (base / "model.yaml").write_text("# a comment\n" + ctl_manifest({"tag": "two"}))
    assert not index(d)["v"]["changed"]


def test_a_model_that_becomes_a_variant_runs_its_bases_code_from_its_next_load(corral):
    base = corral.add("base", "variant_ctx")
    m = corral.add("m", "variant_ctx")
    d = corral.start()
    assert gen(d, "m")["model_dir"] == str(m.resolve())
    (m / "model.yaml").write_text("from: base\nparameters:\n  z: 1\n")
    assert index(d)["m"]["changed"]
    assert gen(d, "m")["model_dir"] == str(m.resolve())     # the running instances keep their code
    assert unload(d, "m").status_code == 200
    c = gen(d, "m")                                          # a lazy load: the manifest, and the code, of the scan
    assert (c["model_dir"], c["variant_dir"], c["parameters"]["z"]) == (str(base.resolve()), str(m.resolve()), 1)


def test_a_load_config_applies_over_a_variants_keys(corral):
    corral.add("base", "steerable", manifest=ctl_manifest({"tag": "base", "other": 1}))
    corral.add("v", manifest="from: base\nparameters:\n  tag: v\n")
    d = corral.start()
    r = load(d, "v", {"parameters": {"config": '{"instances": 2}'}})
    assert r.status_code == 200, r.text
    assert len(d.model("v")["instances"]) == 2 and out(infer(d, "v"), "TAG") == "v"
    error_of(load(d, "v", {"parameters": {"config": '{"from": "x"}'}}), 400, "from")


def test_base_and_variant_keep_their_own_queues_and_instances(corral):
    corral.add("base", "steerable", manifest=ctl_manifest(instances=1, max_queue=20, pipeline=0))
    corral.add("v", manifest="from: base\ninstances: 2\n")
    d = corral.start()
    for name in ("base", "v"):
        assert load(d, name).status_code == 200
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        futs = [pool.submit(infer, d, name, sleep=0.6) for name in ["base"] * 4 + ["v"] * 4]
        # Both busy at once: each model's queue holds its own requests only.
        seen = wait_for(lambda: (lambda b, v: (b, v) if b["queue"] >= 2 and v["queue"] >= 1 else None)(
            d.model("base"), d.model("v")), timeout=10, what="both models busy with queued requests")
        base_now, v_now = seen
        assert base_now["queue"] <= 3 and v_now["queue"] <= 2, (base_now["queue"], v_now["queue"])
        res = [f.result() for f in futs]
    assert all(r.status_code == 200 for r in res), [r.text for r in res]
    base_pids = {out(r, "PID") for r in res[:4]}
    v_pids = {out(r, "PID") for r in res[4:]}
    assert len(base_pids) == 1 and len(v_pids) == 2 and not base_pids & v_pids, (base_pids, v_pids)
    b, v = d.model("base"), d.model("v")
    assert sum(i["requests"] for i in b["instances"]) == 4 and sum(i["requests"] for i in v["instances"]) == 4
    metrics = d.get("/metrics").text
    assert 'nv_inference_request_success{model="v",version="1"} 4' in metrics
    assert 'nv_inference_request_success{model="base",version="1"} 4' in metrics


# ---- run-time variants ----

def test_create_a_variant_at_run_time(corral):
    base = corral.add("base", "steerable", manifest=ctl_manifest({"tag": "base", "keep": 1}))
    d = corral.start()
    r = create(d, {"name": "rt", "from": "base", "parameters": {"tag": "rt"}, "instances": 2})
    assert r.status_code == 201, r.text
    m = r.json()
    assert (m["name"], m["origin"], m["from"], m["state"]) == ("rt", "runtime", "base", "unloaded"), m
    assert m["dir"] == str(base.resolve()) and "variant_dir" not in m
    assert out(infer(d, "rt"), "TAG") == "rt"
    assert len(d.model("rt")["instances"]) == 2
    listed = {x["name"]: x for x in d.get("/v1/models").json()["models"]}
    assert listed["rt"]["origin"] == "runtime" and listed["base"]["origin"] == "repository"
    idx = index(d)   # a rescan keeps it
    assert idx["rt"]["origin"] == "runtime" and idx["base"]["origin"] == "repository"
    assert out(infer(d, "base"), "TAG") == "base"
    # A variant of the run-time variant, and of a declared variant.
    assert create(d, {"name": "rt2", "from": "rt", "parameters": {"tag": "rt2"}}).status_code == 201
    assert out(infer(d, "rt2"), "TAG") == "rt2"
    assert d.model("rt2")["from"] == "rt"


def test_a_runtime_variant_of_a_declared_variant_sees_its_directory(corral):
    base = corral.add("base", "variant_ctx")
    v = corral.add("v", manifest="from: base\nparameters:\n  c: 3\n", files={"extra.txt": "v's"})
    d = corral.start()
    assert create(d, {"name": "rt", "from": "v", "parameters": {"d": 4}}).status_code == 201
    c = gen(d, "rt")
    assert c["parameters"] == {"a": 1, "b": 2, "c": 3, "d": 4, "voice": {"x": 1, "y": 2}}
    assert (c["name"], c["model_dir"], c["variant_dir"], c["extra"]) == ("rt", str(base.resolve()), str(v.resolve()),
                                                                         "v's")
    assert create(d, {"name": "rt-base", "from": "base"}).status_code == 201
    assert gen(d, "rt-base")["variant_dir"] is None


def test_create_refuses_what_is_not_valid_and_changes_nothing(corral):
    corral.add("base", "steerable", manifest=ctl_manifest())
    corral.add("disk", "steerable", manifest=ctl_manifest())
    d = corral.start()
    assert create(d, {"name": "rt", "from": "base"}).status_code == 201
    before = d.get("/v1/models").json()
    error_of(create(d, {"name": "rt", "from": "base"}), 409, "rt", "exists", "run time")
    error_of(create(d, {"name": "disk", "from": "base"}), 409, "disk", "exists", "repository")
    error_of(create(d, {"name": "x", "from": "nope"}), 404, "x", "nope")
    error_of(create(d, {"name": "x", "from": "base", "instancez": 2}), 400, "x", "instancez", "unknown key")
    error_of(create(d, {"name": "x", "from": "base", "instances": 0}), 400, "x", "instances")
    error_of(create(d, {"name": "x", "from": "base", "parameters": [1]}), 400, "parameters")
    for key, value in (("env", {"LD_PRELOAD": "/tmp/x.so"}), ("entrypoint", "worker.py"), ("python", "/bin/sh"),
                       ("args", ["-c"]), ("runtime", "exec"), ("source", {"url": "http://x", "sha256": "0" * 64})):
        error_of(create(d, {"name": "x", "from": "base", key: value}), 400, "x", f"'{key}'", "run time")
    error_of(create(d, {"name": "../x", "from": "base"}), 400, "invalid model name")
    error_of(create(d, {"name": "x"}), 400, "'from' is required")
    error_of(create(d, {"from": "base"}), 400, "'name' is required")
    error_of(create(d, {"name": 3, "from": "base"}), 400, "'name'")
    error_of(d.post("/v1/models", [1, 2]), 400, "JSON object")
    r = requests.post(d.url("/v1/models"), data=b"{not json", headers={"Content-Type": "application/json"}, timeout=10)
    error_of(r, 400, "malformed JSON")
    error_of(d.post("/v1/models", {"name": "x", "from": "base", "name2": 1}), 400, "name2")
    error_of(create(d, {"name": "x", "from": "base", "parameters": {"big": "x" * (1 << 20)}}), 413, "x",
             "more than the 1048576")
    assert d.get("/v1/models").json() == before
    assert d.get("/v1/models/x").status_code == 404


def test_delete_a_runtime_variant(corral):
    corral.add("base", "steerable", manifest=ctl_manifest())
    d = corral.start()
    assert create(d, {"name": "rt", "from": "base"}).status_code == 201
    assert create(d, {"name": "rt2", "from": "rt"}).status_code == 201
    assert out(infer(d, "rt"), "TAG") == ""
    pids = d.worker_pids("rt")
    error_of(delete(d, "rt"), 409, "rt", "rt2", "delete 'rt2' first")
    error_of(delete(d, "base"), 409, "base", "repository")
    error_of(delete(d, "nope"), 404, "nope")
    assert delete(d, "rt2").status_code == 200
    r = delete(d, "rt")
    assert r.status_code == 200 and r.json() == {"name": "rt", "deleted": True}, r.text
    assert d.get("/v1/models/rt").status_code == 404
    assert infer(d, "rt").status_code == 404
    assert "rt" not in index(d)
    for pid in pids:
        wait_for(lambda: not os.path.exists(f"/proc/{pid}"), timeout=10, what=f"worker {pid} gone")
    # The name is free again.
    assert create(d, {"name": "rt", "from": "base"}).status_code == 201


def test_create_and_delete_are_events(corral):
    from test_observability import SSE
    corral.add("base", "steerable", manifest=ctl_manifest())
    d = corral.start()
    sse = SSE(d)
    try:
        assert create(d, {"name": "rt", "from": "base"}).status_code == 201
        assert out(infer(d, "rt"), "TAG") == ""
        assert delete(d, "rt").status_code == 200
        seen = sse.until(lambda ev: ev[1] == "model.deleted")
    finally:
        sse.close()
    kinds = [(kind, data["model"]) for _, kind, data in seen]
    assert kinds[0] == ("model.created", "rt") and seen[0][2]["base"] == "base", seen
    assert kinds.index(("model.unloaded", "rt")) < kinds.index(("model.deleted", "rt")), kinds


def test_delete_with_requests_queued_answers_them_503(corral):
    corral.add("base", "steerable", manifest=ctl_manifest())
    d = corral.start()
    assert create(d, {"name": "rt", "from": "base", "instances": 1, "pipeline": 0}).status_code == 201
    assert load(d, "rt").status_code == 200
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        running = pool.submit(infer, d, "rt", sleep=1.5)
        wait_for(lambda: d.model("rt")["instances"][0]["inflight"] == 1, what="the first request running")
        queued = [pool.submit(infer, d, "rt") for _ in range(3)]
        wait_for(lambda: d.model("rt")["queue"] == 3, what="three requests queued")
        gone = pool.submit(delete, d, "rt")
        for f in queued:
            error_of(f.result(), 503, "rt", "unload")
        assert running.result().status_code == 200
        assert gone.result().status_code == 200
    assert d.get("/v1/models/rt").status_code == 404


def test_a_directory_with_a_runtime_models_name_waits(corral):
    corral.add("base", "steerable", manifest=ctl_manifest({"tag": "base"}))
    d = corral.start()
    assert create(d, {"name": "rt", "from": "base", "parameters": {"tag": "runtime"}}).status_code == 201
    corral.add("rt", "steerable", manifest=ctl_manifest({"tag": "disk"}))
    assert index(d)["rt"]["origin"] == "runtime"
    assert out(infer(d, "rt"), "TAG") == "runtime"
    wait_for(lambda: "was created at run time; delete it" in d.log(), what="the refusal logged")
    assert delete(d, "rt").status_code == 200
    assert index(d)["rt"]["origin"] == "repository"
    assert out(infer(d, "rt"), "TAG") == "disk"


def test_a_changed_base_marks_its_runtime_variants_changed(corral):
    base = corral.add("base", "steerable", manifest=ctl_manifest({"tag": "one"}))
    d = corral.start()
    assert create(d, {"name": "rt", "from": "base", "parameters": {"other": 1}}).status_code == 201
    assert out(infer(d, "rt"), "TAG") == "one"
    (base / "model.yaml").write_text(ctl_manifest({"tag": "two"}))
    assert index(d)["rt"]["changed"]
    assert out(infer(d, "rt"), "TAG") == "one"
    assert unload(d, "rt").status_code == 200 and load(d, "rt").status_code == 200
    assert out(infer(d, "rt"), "TAG") == "two" and not d.model("rt")["changed"]


def test_an_eager_runtime_variant_loads_at_once(corral):
    corral.add("base", "steerable", manifest=ctl_manifest())
    d = corral.start()
    assert create(d, {"name": "rt", "from": "base", "load": "eager"}).status_code == 201
    d.wait_state("rt", "ready")


def test_a_broken_base_refuses_and_a_vanished_one_breaks_the_variant(corral):
    base = corral.add("base", "steerable", manifest=ctl_manifest())
    corral.add("broken", "steerable", manifest="runtime: python\n")
    d = corral.start()
    error_of(create(d, {"name": "x", "from": "broken"}), 409, "x", "broken", "unavailable")
    assert create(d, {"name": "rt", "from": "base"}).status_code == 201
    shutil.rmtree(base)
    index(d)
    err = d.model("rt")["manifest_error"]
    assert "base model 'base' does not exist" in err, err
    error_of(infer(d, "rt"), 503, "rt")


def test_runtime_variants_are_kept_across_a_restart_with_state(corral, tmp_path):
    corral.add("base", "steerable", manifest=ctl_manifest({"tag": "base"}))
    state = tmp_path / "state.db"
    d = corral.start("--state", str(state))
    wait_for(lambda: "state file" in d.log(), what="the state file opened")
    assert create(d, {"name": "rt", "from": "base", "parameters": {"tag": "rt"}}).status_code == 201
    assert create(d, {"name": "rt2", "from": "rt"}).status_code == 201
    assert create(d, {"name": "gone", "from": "base"}).status_code == 201
    assert load(d, "rt2", {"instances": 2}).status_code == 200
    assert delete(d, "gone").status_code == 200
    assert d.stop() == 0
    d = corral.start("--state", str(state))
    # Created again once the state file is read, a moment after the daemon listens.
    wait_for(lambda: d.get("/v1/models/rt2").status_code == 200, what="rt2 created again")
    d.wait_state("rt2", "ready")
    assert len(d.model("rt2")["instances"]) == 2
    assert d.model("rt")["origin"] == "runtime" and d.model("rt")["state"] == "unloaded"
    assert out(infer(d, "rt2"), "TAG") == "rt"
    assert d.get("/v1/models/gone").status_code == 404
    assert delete(d, "rt2").status_code == 200
    assert d.stop() == 0
    d = corral.start("--state", str(state))
    wait_for(lambda: "created again, from base" in d.log(), what="rt restored")
    assert d.get("/v1/models/rt2").status_code == 404
    assert d.model("rt")["from"] == "base"


def test_a_runtime_variant_whose_base_is_gone_at_a_restart_waits_for_it(corral, tmp_path):
    base = corral.add("base2", "steerable", manifest=ctl_manifest({"tag": "b2"}))
    state = tmp_path / "state.db"
    d = corral.start("--state", str(state))
    wait_for(lambda: "state file" in d.log(), what="the state file opened")
    assert create(d, {"name": "rt", "from": "base2"}).status_code == 201
    assert d.stop() == 0
    kept = tmp_path / "kept"
    shutil.move(str(base), str(kept))
    d = corral.start("--state", str(state))
    wait_for(lambda: "which is not in the repository now; not created (its record is kept)" in d.log(),
             what="the missing base logged")
    assert d.get("/v1/models/rt").status_code == 404
    assert d.stop() == 0
    shutil.move(str(kept), str(base))
    d = corral.start("--state", str(state))
    wait_for(lambda: "created again, from base2" in d.log(), what="rt restored")
    assert out(infer(d, "rt"), "TAG") == "b2"


def test_without_state_runtime_variants_are_lost(corral):
    corral.add("base", "steerable", manifest=ctl_manifest())
    d = corral.start()
    assert create(d, {"name": "rt", "from": "base"}).status_code == 201
    assert d.stop() == 0
    d = corral.start()
    assert d.get("/v1/models/rt").status_code == 404


def slow_to_read(state, rows=200_000):
    """Fills state's sessions table so that reading it at start takes a second or more: the window in which the
    daemon listens before the file is restored."""
    far = int(time.time() * 1000) + 10 ** 9
    c = sqlite3.connect(str(state))
    blob = b"x" * 900
    c.executemany("INSERT INTO sessions (id, content_type, data, expires_ms) VALUES (?, 'application/octet-stream', "
                  "?, ?)", ((f"s{i}", blob, far) for i in range(rows)))
    c.commit()
    c.close()


def test_a_delete_or_create_before_the_restore_is_not_undone_by_it(corral, tmp_path):
    corral.add("base", "steerable", manifest=ctl_manifest({"tag": "base"}))
    state = tmp_path / "state.db"
    d = corral.start("--state", str(state))
    wait_for(lambda: "state file" in d.log(), what="the state file opened")
    for name, tag in (("victim", "old"), ("kept", "kept"), ("renewed", "old")):
        assert create(d, {"name": name, "from": "base", "parameters": {"tag": tag}}).status_code == 201
    assert d.stop() == 0
    slow_to_read(state)
    d = corral.start("--state", str(state))
    # In the window: victim is only in the file, so the DELETE finds no model; it is remembered all the same.
    error_of(delete(d, "victim"), 404, "victim", "state file is still being read", "not created again")
    r = create(d, {"name": "renewed", "from": "base", "parameters": {"tag": "new"}})
    restored = "created at run time recorded" in d.log()
    assert not restored, "the state file was read before the requests: the window was missed"
    assert r.status_code == 201, r.text
    wait_for(lambda: "created at run time recorded" in d.log(), timeout=60, what="the state file read")
    wait_for(lambda: "state: model kept created again" in d.log(), what="kept restored")
    assert d.get("/v1/models/victim").status_code == 404
    assert out(infer(d, "renewed"), "TAG") == "new"
    assert d.stop() == 0
    d = corral.start("--state", str(state))
    wait_for(lambda: "state: model kept created again" in d.log(), timeout=60, what="kept restored")
    assert d.get("/v1/models/victim").status_code == 404
    assert out(infer(d, "renewed"), "TAG") == "new"


def test_names_the_routes_take_are_refused(corral):
    corral.add("base", "steerable", manifest=ctl_manifest())
    corral.add("pull", "steerable", manifest=ctl_manifest())
    corral.add("disk", "steerable", manifest=ctl_manifest() + "name: stats\n")
    corral.external.mkdir()
    d = corral.start("--pull-allow", "127.0.0.1", external=True)
    for name, route in (("pull", "/v1/models/pull"), ("stats", "/v2/models/stats")):
        error_of(create(d, {"name": name, "from": "base"}), 400, f"'{name}'", "reserved", route)
        listed = {m["name"]: m for m in d.get("/v1/models").json()["models"]}
        assert name in listed, listed
        msg = listed[name]["manifest_error"]
        assert "reserved" in msg and route in msg, msg
        assert listed[name]["origin"] == "repository", listed[name]
        # A pull would only fetch a model the scan marks broken: refused before anything is fetched.
        r = d.post("/v1/models/pull", {"url": "http://127.0.0.1:9/m.tar.gz", "sha256": "0" * 64, "name": name})
        error_of(r, 400, f"'{name}'", "reserved", route)
    # Other names are free, a literal segment that no {model_name} route shares too.
    assert create(d, {"name": "pulls", "from": "base"}).status_code == 201
    assert create(d, {"name": "events", "from": "base"}).status_code == 201


def test_a_recorded_run_time_model_of_a_reserved_name_is_not_created_and_its_record_goes(corral, tmp_path):
    corral.add("base", "steerable", manifest=ctl_manifest())
    state = tmp_path / "state.db"
    d = corral.start("--state", str(state))
    wait_for(lambda: "state file" in d.log(), what="the state file opened")
    assert create(d, {"name": "rt", "from": "base"}).status_code == 201
    assert d.stop() == 0
    # As an older corral, which did not reserve the name, recorded it.
    c = sqlite3.connect(str(state))
    c.execute("INSERT INTO runtime_models (name, spec, created_at) VALUES ('pull', '{\"from\":\"base\"}', 1)")
    c.commit()
    c.close()
    d = corral.start("--state", str(state))
    wait_for(lambda: "state: model rt created again" in d.log(), what="rt restored")
    wait_for(lambda: "state: model pull created at run time is not created again: the name 'pull' is reserved"
             in d.log(), what="pull refused")
    assert "pull" not in [m["name"] for m in d.get("/v1/models").json()["models"]]
    assert d.stop() == 0
    c = sqlite3.connect(str(state))
    names = [r[0] for r in c.execute("SELECT name FROM runtime_models")]
    c.close()
    assert names == ["rt"], names


def test_a_variant_of_a_model_being_deleted_is_refused(corral):
    corral.add("base", "steerable", manifest=ctl_manifest({"unload_delay": 3}))
    d = corral.start()
    assert create(d, {"name": "v1", "from": "base"}).status_code == 201
    assert load(d, "v1").status_code == 200
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        gone = pool.submit(delete, d, "v1")
        wait_for(lambda: d.model("v1")["state"] == "unloading", what="v1 unloading")
        error_of(create(d, {"name": "v2", "from": "v1"}), 409, "'v1'", "being deleted")
        assert gone.result().status_code == 200
    assert d.get("/v1/models/v2").status_code == 404


def test_a_runtime_models_load_record_does_not_load_a_disk_model_of_its_name(corral, tmp_path):
    corral.add("base", "steerable", manifest=ctl_manifest({"tag": "base"}))
    state = tmp_path / "state.db"
    d = corral.start("--state", str(state))
    wait_for(lambda: "state file" in d.log(), what="the state file opened")
    assert create(d, {"name": "rt", "from": "base"}).status_code == 201
    assert load(d, "rt", {"instances": 2}).status_code == 200
    assert d.stop() == 0
    corral.add("rt", "steerable", manifest=ctl_manifest({"tag": "disk"}))
    d = corral.start("--state", str(state))
    wait_for(lambda: "a model of that name is in the repository now" in d.log(), what="the run-time model skipped")
    wait_for(lambda: "not loaded: its load record is the run-time model's" in d.log(), what="its load skipped")
    m = d.model("rt")
    assert m["origin"] == "repository" and m["state"] == "unloaded", m


@pytest.mark.parametrize("scope", ["all", "management"])
def test_create_and_delete_need_the_token(corral, scope):
    corral.add("base", "steerable", manifest=ctl_manifest())
    d = corral.start("--auth", scope, env={"CORRAL_TOKEN": "s3cret"})
    good = {"Authorization": "Bearer s3cret"}
    error_of(requests.post(d.url("/v1/models"), json={"name": "rt", "from": "base"}, timeout=10), 401)
    r = requests.post(d.url("/v1/models"), json={"name": "rt", "from": "base"}, headers=good, timeout=10)
    assert r.status_code == 201, r.text
    error_of(delete(d, "rt"), 401)
    error_of(delete(d, "rt", headers={"Authorization": "Bearer wrong"}), 401)
    assert delete(d, "rt", headers=good).status_code == 200


def test_cli_create_and_delete(corral):
    corral.add("base", "steerable", manifest=ctl_manifest({"tag": "base"}))
    d = corral.start()
    env = {**os.environ, "CORRAL_URL": d.url("")}

    def cli(*args):
        return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=30, env=env,
                              stdin=subprocess.DEVNULL)

    r = cli("create", "rt", "--from", "base", "--param", "tag=cli", "--param", "n=3", "--param", "on=true",
            "--instances", "2")
    assert r.returncode == 0 and r.stdout.strip() == "created rt from base", r
    assert out(infer(d, "rt"), "TAG") == "cli"
    assert len(d.model("rt")["instances"]) == 2
    r = cli("create", "rt3", "--from", "base", "--json")
    assert r.returncode == 0 and '"origin": "runtime"' in r.stdout, r
    r = cli("create", "rt", "--from", "base")
    assert r.returncode == 1 and r.stderr.startswith("corral: HTTP 409: ") and "exists" in r.stderr, r
    r = cli("create", "rt4", "--from", "base", "--param", "novalue")
    assert r.returncode == 2 and "k=v" in r.stderr, r
    r = cli("create", "rt4")
    assert r.returncode == 2 and "--from" in r.stderr, r
    r = cli("delete", "rt")
    assert r.returncode == 0 and r.stdout.strip() == "deleted rt", r
    r = cli("delete", "base")
    assert r.returncode == 1 and "409" in r.stderr, r
    assert d.get("/v1/models/rt").status_code == 404


# ---- the example ----

def test_tts_fr_speaks_french_by_default(corral):
    corral.add("tts-espeak", "tts-espeak")
    corral.add("tts-fr", "tts-fr")
    d = corral.start()
    m = d.model("tts-fr")
    assert m["from"] == "tts-espeak" and "manifest_error" not in m, m
    text = {"text": "Bonjour tout le monde."}

    def wav(model, body):
        r = d.post(f"/v1/models/{model}/generate", body, timeout=60)
        assert r.status_code == 200 and r.content[:4] == b"RIFF", r.text[:200]
        return r.content

    fr = wav("tts-fr", text)
    assert fr == wav("tts-espeak", {**text, "voice": "fr"})
    assert fr != wav("tts-espeak", text)
    assert (EXAMPLES / "tts-fr" / "model.yaml").read_text().count("from: tts-espeak") == 1
