"""Triton's readiness, model configuration, load with a config, and what a request may carry.

- Readiness: GET /v2/models/{name}/ready is 200 for a model that serves now
  or loads on demand, 400 for one that is failed, broken or unloading.
- Model configuration: GET /v2/models/{name}[/versions/1]/config in the
  shape of Triton's model_config.proto.
- Load with {"parameters": {"config": "<JSON>"}}: manifest keys for that
  load, validated as the manifest is; a bad one is a 400 that changes nothing.
- The audit: every key of the v2 request bodies is honoured or refused.
"""
from __future__ import annotations

import json
import threading

from conftest import ctl_manifest, infer, load, out, tensor, unload, wait_for


def assert_error(r, status: int, *needles: str) -> str:
    assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text}"
    msg = r.json()["error"]
    for needle in needles:
        assert needle in msg, msg
    return msg


def load_config(d, model: str, config, **extra):
    """A load as Triton's client sends it: the config is a string of JSON."""
    params = {"config": config if isinstance(config, str) else json.dumps(config), **extra}
    return d.post(f"/v2/repository/models/{model}/load", {"parameters": params})


# ---------------------------------------------------------------- readiness


def test_a_lazy_model_is_ready_before_it_loads_and_a_probe_gets_it_served(corral):
    corral.add("ctl", "steerable", manifest=ctl_manifest(parameters={"tag": "lazy"}))
    d = corral.start()
    for path in ("/v2/models/ctl/ready", "/v2/models/ctl/versions/1/ready"):
        r = d.get(path)
        assert r.status_code == 200 and r.json() == {"name": "ctl", "ready": True}, r.text
    # Ready here means "send traffic": /v1 still tells that nothing is loaded.
    assert d.model("ctl")["state"] == "unloaded" and d.model("ctl")["instances"] == []
    assert out(infer(d, "ctl"), "TAG") == "lazy"
    assert d.model("ctl")["state"] == "ready"
    assert d.get("/v2/models/ctl/ready").status_code == 200


def test_a_loading_model_is_ready_its_requests_wait(corral):
    corral.add("slow", "slowload")
    d = corral.start()
    t = threading.Thread(target=lambda: load(d, "slow"))
    t.start()
    try:
        d.wait_state("slow", "loading")
        assert d.get("/v2/models/slow/ready").status_code == 200
    finally:
        t.join(30)
    assert d.model("slow")["state"] == "ready"


def test_failed_broken_unloading_and_unknown_models_are_not_ready(corral):
    corral.add("fails", "load_fails")
    corral.add("broken", "echo", manifest="runtime: python\nentrypoint: worker.py\ninstances: many\n")
    corral.add("slowbye", "steerable", manifest=ctl_manifest(parameters={"unload_delay": 2}))
    d = corral.start()
    assert load(d, "fails").status_code == 503
    assert d.model("fails")["state"] == "failed"
    assert_error(d.get("/v2/models/fails/ready"), 400, "model 'fails' is not ready (failed")
    assert_error(d.get("/v2/models/broken/ready"), 400, "model 'broken' is not ready", "instances")
    assert_error(d.get("/v2/models/broken/versions/1/ready"), 400, "broken")
    assert_error(d.get("/v2/models/nosuch/ready"), 404, "nosuch")
    assert_error(d.get("/v2/models/slowbye/versions/3/ready"), 404, "version")

    assert load(d, "slowbye").status_code == 200
    t = threading.Thread(target=lambda: unload(d, "slowbye"))
    t.start()
    try:
        d.wait_state("slowbye", "unloading")
        assert_error(d.get("/v2/models/slowbye/ready"), 400, "not ready (unloading)")
    finally:
        t.join(30)
    assert d.get("/v2/models/slowbye/ready").status_code == 200  # unloaded again: loads on demand
    # Server readiness is unchanged: the daemon's, not any model's.
    assert d.get("/v2/health/ready").json() == {"ready": True}


# ---------------------------------------------------------------- model configuration


def test_model_config_in_tritons_shape(corral):
    corral.add("echo", "echo")
    d = corral.start()
    assert "model_configuration" in d.get("/v2").json()["extensions"]
    r = d.get("/v2/models/echo/config")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json"), r.text
    c = r.json()
    assert c["name"] == "echo" and c["platform"] == "corral_python" and c["backend"] == "python"
    assert c["max_batch_size"] == 0 and "dynamic_batching" not in c
    assert c["input"] == [] and c["output"] == []  # echo declares none
    assert c["instance_group"] == [{"name": "echo_0", "kind": "KIND_CPU", "count": 2, "gpus": [],
                                    "secondary_devices": [], "profile": [], "passive": False, "host_policy": ""}]
    assert c["version_policy"] == {"latest": {"num_versions": 1}}
    assert c["default_model_filename"] == "worker.py" and c["parameters"] == {}
    assert d.get("/v2/models/echo/versions/1/config").json() == c
    # Reading the config loads nothing.
    assert d.model("echo")["state"] == "unloaded"
    assert_error(d.get("/v2/models/echo/versions/2/config"), 404, "echo", "version")
    assert_error(d.get("/v2/models/nosuch/config"), 404, "nosuch")
    r = d.post("/v2/models/echo/config", {})
    assert r.status_code == 405 and r.headers["allow"] == "GET"


def test_model_config_of_a_batching_model_with_declared_tensors(corral):
    corral.add("b", "batcher", manifest="""runtime: python
entrypoint: worker.py
timeout: 3s
max_queue: 7
batching: {max_batch_size: 8, max_queue_delay: 4ms, preferred_batch_sizes: [2, 4]}
parameters: {mode: fast, n: 3}
inputs: [{name: IN, datatype: FP32, shape: [-1, 3]}, {name: TXT, datatype: BYTES, shape: [-1], optional: true}]
outputs: [{name: OUT, datatype: INT64, shape: [-1, 3, 2]}]
""", files={"labels.txt": "cat\ndog\n"})
    d = corral.start()
    c = d.get("/v2/models/b/config").json()
    assert c["max_batch_size"] == 8
    # dims leave out the batch dimension, as Triton's do when max_batch_size > 0
    assert [(i["name"], i["data_type"], i["dims"], i["optional"]) for i in c["input"]] == [
        ("IN", "TYPE_FP32", [3], False), ("TXT", "TYPE_STRING", [], True)]
    assert [(o["name"], o["data_type"], o["dims"], o["label_filename"]) for o in c["output"]] == [
        ("OUT", "TYPE_INT64", [3, 2], "labels.txt")]
    db = c["dynamic_batching"]
    assert db["preferred_batch_size"] == [2, 4] and db["max_queue_delay_microseconds"] == 4000
    assert db["default_queue_policy"]["default_timeout_microseconds"] == 3_000_000
    assert db["default_queue_policy"]["max_queue_size"] == 7
    assert c["parameters"] == {"mode": {"string_value": "fast"}, "n": {"string_value": "3"}}


def test_model_config_of_a_broken_manifest_names_it(corral):
    corral.add("broken", "echo", manifest="runtime: python\nentrypoint: worker.py\nbogus_key: 1\n")
    d = corral.start()
    msg = assert_error(d.get("/v2/models/broken/config"), 503, "model 'broken' is unavailable", "bogus_key")
    assert "unknown key" in msg


# ---------------------------------------------------------------- load with a config


def test_load_with_a_config_applies_its_keys_for_that_load(corral):
    corral.add("ctl", "steerable", manifest=ctl_manifest(parameters={"tag": "file", "keep": "me"}))
    d = corral.start()
    r = load_config(d, "ctl", {"instances": 2, "parameters": {"tag": "config"}, "timeout": "7s"})
    assert r.status_code == 200 and r.json() == {}, r.text
    m = d.model("ctl")
    assert m["state"] == "ready" and len(m["instances"]) == 2
    assert m["config_override"] == {"instances": 2, "parameters": {"tag": "config"}, "timeout": "7s"}
    assert out(infer(d, "ctl"), "TAG") == "config"
    c = d.get("/v2/models/ctl/config").json()
    assert c["instance_group"][0]["count"] == 2
    # parameters merge key by key: the file's others stay
    assert c["parameters"] == {"tag": {"string_value": "config"}, "keep": {"string_value": "me"}}


def test_a_bad_config_is_a_400_naming_the_key_and_changes_nothing(corral):
    corral.add("ctl", "steerable", manifest=ctl_manifest(parameters={"tag": "file"}))
    d = corral.start()
    cases = [
        ({"instances": 0}, "key 'instances': must be an integer from 1 to 1024"),
        ({"instance_group": [{"count": 2}]}, "key 'instance_group': unknown key"),
        ({"batching": {"max_batch": 4}}, "key 'batching.max_batch': unknown key"),
        ({"keep_alive": "later"}, "key 'keep_alive': must be a duration"),
        ({"entrypoint": "other.py"}, "key 'entrypoint': cannot be set by a load's config"),
        ({"python": "/bin/sh"}, "key 'python': cannot be set"),
        ({"name": "other"}, "key 'name': cannot be set"),
        ({"load": "eager"}, "key 'load': cannot be set"),
    ]
    for config, needle in cases:
        assert_error(load_config(d, "ctl", config), 400, "model 'ctl': the load's config", needle)
    assert_error(load_config(d, "ctl", "{not json"), 400, "parameters.config must be a JSON object")
    assert_error(load_config(d, "ctl", "[1, 2]"), 400, "parameters.config must be a JSON object")
    assert d.model("ctl")["state"] == "unloaded" and "config_override" not in d.model("ctl")

    # Loaded: a bad config leaves the same processes serving.
    assert load(d, "ctl").status_code == 200
    pids = sorted(d.worker_pids("ctl"))
    assert_error(load_config(d, "ctl", {"concurrency": -1}), 400, "key 'concurrency'")
    assert sorted(d.worker_pids("ctl")) == pids and d.model("ctl")["state"] == "ready"
    assert out(infer(d, "ctl"), "TAG") == "file"


def test_file_overrides_and_unknown_load_options_are_refused(corral):
    corral.add("ctl", "steerable", manifest=ctl_manifest())
    d = corral.start()
    # Triton's client sends files as "file:<path>": base64 of the content.
    r = d.post("/v2/repository/models/ctl/load",
               {"parameters": {"config": "{}", "file:1/model.py": "cHJpbnQoKQ=="}})
    assert_error(r, 400, "model 'ctl'", "'file:1/model.py'", "file overrides are not supported")
    assert_error(d.post("/v2/repository/models/ctl/load", {"parameters": {"version": 2}}), 400,
                 "unknown parameter 'version'")
    assert_error(d.post("/v2/repository/models/ctl/load", {"force": True}), 400, "unknown option 'force'")
    assert_error(d.post("/v2/repository/models/ctl/load", {"parameters": []}), 400, "'parameters' must be an object")
    assert_error(d.post("/v2/repository/models/ctl/load", data=b"[]"), 400, "must be a JSON object")
    assert d.model("ctl")["state"] == "unloaded"
    # corral's own {"instances": N} stays, in both places
    assert load(d, "ctl", {"parameters": {"instances": 2}}).status_code == 200
    assert len(d.model("ctl")["instances"]) == 2


def test_a_config_on_a_loaded_model_reloads_it_and_running_requests_finish(corral):
    corral.add("ctl", "steerable", manifest=ctl_manifest(parameters={"tag": "file"}))
    d = corral.start()
    assert load(d, "ctl").status_code == 200
    old = d.worker_pids("ctl")
    slow = {}
    t = threading.Thread(target=lambda: slow.setdefault("r", infer(d, "ctl", sleep=1.0)))
    t.start()
    wait_for(lambda: any(i["inflight"] for i in d.model("ctl")["instances"]), what="the slow request to run")
    r = load_config(d, "ctl", {"parameters": {"tag": "reloaded"}})
    assert r.status_code == 200, r.text
    t.join(30)
    assert out(slow["r"], "TAG") == "file"  # it ran to its end on the old instance
    assert not set(d.worker_pids("ctl")) & set(old)
    assert out(infer(d, "ctl"), "TAG") == "reloaded"
    assert "model ctl: unloading to reload with the load's config" in d.log()


def test_a_config_on_a_loading_model_reloads_it(corral):
    corral.add("slow", "slowload", manifest="runtime: python\nentrypoint: worker.py\nparameters: {delay: 3}\n")
    d = corral.start()
    first = {}
    t = threading.Thread(target=lambda: first.setdefault("r", load(d, "slow")))
    t.start()
    d.wait_state("slow", "loading")
    r = load_config(d, "slow", {"parameters": {"delay": 0}, "instances": 2})
    assert r.status_code == 200, r.text
    t.join(30)
    # the load that was waiting saw its instances go: it is told, not left hanging
    assert_error(first["r"], 503, "model 'slow' is being unloaded")
    m = d.model("slow")
    assert m["state"] == "ready" and len(m["instances"]) == 2 and m["config_override"]["instances"] == 2


def test_the_config_stays_through_unloads_until_a_load_without_one(corral):
    corral.add("ctl", "steerable", manifest=ctl_manifest(parameters={"tag": "file"}))
    d = corral.start()
    assert load_config(d, "ctl", {"parameters": {"tag": "config"}}).status_code == 200
    assert unload(d, "ctl").status_code == 200
    # A lazy load (the first request) keeps the config ...
    assert out(infer(d, "ctl"), "TAG") == "config"
    assert unload(d, "ctl").status_code == 200
    assert d.post("/v2/repository/index").status_code == 200  # a rescan does not drop it either
    assert out(infer(d, "ctl"), "TAG") == "config"
    # ... and a load without one goes back to model.yaml, reloading the running model.
    assert load(d, "ctl").status_code == 200
    assert out(infer(d, "ctl"), "TAG") == "file"
    assert "config_override" not in d.model("ctl")


def test_an_unload_during_a_reload_wins(corral):
    corral.add("ctl", "steerable", manifest=ctl_manifest(parameters={"tag": "file", "unload_delay": 1}))
    d = corral.start()
    assert load(d, "ctl").status_code == 200
    res = {}
    t = threading.Thread(target=lambda: res.setdefault("r", load_config(d, "ctl", {"parameters": {"tag": "x"}})))
    t.start()
    d.wait_state("ctl", "unloading")
    assert unload(d, "ctl").status_code == 200
    t.join(30)
    assert_error(res["r"], 503, "model 'ctl' was unloaded before its reload started")
    assert d.model("ctl")["state"] == "unloaded"


# ---------------------------------------------------------------- repository bodies


def test_unload_takes_tritons_body_and_refuses_others(corral):
    corral.add("ctl", "steerable", manifest=ctl_manifest())
    d = corral.start()
    for deps in (False, True):  # no corral model depends on another: both unload the one model
        assert load(d, "ctl").status_code == 200
        r = d.post("/v2/repository/models/ctl/unload", {"parameters": {"unload_dependents": deps}})
        assert r.status_code == 200 and r.json() == {}, r.text
        assert d.model("ctl")["state"] == "unloaded"
    assert load(d, "ctl").status_code == 200
    u = "/v2/repository/models/ctl/unload"
    assert_error(d.post(u, {"parameters": {"unload_dependents": "yes"}}), 400, "unload_dependents must be true or false")
    assert_error(d.post(u, {"parameters": {"now": True}}), 400, "model 'ctl': unload", "unknown parameter 'now'")
    assert_error(d.post(u, {"force": True}), 400, "unknown option 'force'")
    assert_error(d.post(u, data=b"[]"), 400, "model 'ctl': unload: the request body must be a JSON object")
    assert d.model("ctl")["state"] == "ready"


def test_repository_index_ready_filter_and_refusals(corral):
    corral.add("a", "steerable", manifest=ctl_manifest())
    corral.add("b", "steerable", manifest=ctl_manifest())
    d = corral.start()
    assert load(d, "a").status_code == 200
    names = lambda body: [e["name"] for e in d.post("/v2/repository/index", body).json()]  # noqa: E731
    assert names({"ready": True}) == ["a"]
    assert names({"ready": False}) == ["a", "b"]
    assert [e["name"] for e in d.post("/v2/repository/index", data=b"").json()] == ["a", "b"]
    assert_error(d.post("/v2/repository/index", {"ready": "yes"}), 400, "'ready' must be true or false")
    assert_error(d.post("/v2/repository/index", {"ready": True, "limit": 1}), 400, "unknown option 'limit'")
    assert_error(d.post("/v2/repository/index", data=b"[1]"), 400, "repository index: the request body must be a JSON")


# ---------------------------------------------------------------- inference request audit


def test_sequence_parameters_are_checked(corral):
    corral.add("ctl", "steerable", manifest=ctl_manifest())
    d = corral.start()
    for params, needle in [({"sequence_id": 7}, "inference request for sequence 7 to model 'ctl' must specify the "
                                                "START flag on the first request of the sequence"),
                           ({"sequence_id": -3}, "parameters.sequence_id must be an unsigned integer or a string"),
                           ({"sequence_id": 1.5}, "parameters.sequence_id must be an unsigned integer or a string"),
                           ({"sequence_start": True}, "parameters.sequence_start needs a parameters.sequence_id"),
                           ({"sequence_id": 0, "sequence_end": True}, "parameters.sequence_end needs"),
                           ({"sequence_end": 1}, "parameters.sequence_end must be true or false"),
                           ({"triton_enable_empty_final_response": True}, "reserved for Triton")]:
        assert_error(infer(d, "ctl", **params), 400, "model 'ctl'", needle)
    # No sequence, said explicitly, is fine.
    for params in ({"sequence_id": 0}, {"sequence_id": ""}, {"sequence_id": 0, "sequence_start": False,
                                                              "sequence_end": False}):
        assert infer(d, "ctl", **params).status_code == 200


def test_unknown_request_keys_and_tensor_parameters_are_refused(corral):
    corral.add("echo", "echo")
    d = corral.start()
    t = tensor("INPUT0", "INT32", [1], [5])
    cases = [
        ({"inputs": [t], "output": [{"name": "OUTPUT0"}]}, "unknown key 'output' in the inference request"),
        ({"inputs": [dict(t, dims=[1])]}, "input 'INPUT0': unknown key 'dims'"),
        ({"inputs": [dict(t, parameters={"binary_data": True})]}, "input 'INPUT0': unknown parameter 'binary_data'"),
        ({"inputs": [dict(t, parameters=[1])]}, "input 'INPUT0': parameters must be an object"),
        ({"inputs": [t], "outputs": [{"name": "OUTPUT0", "parameters": {"binary": True}}]},
         "output 'OUTPUT0': unknown parameter 'binary'"),
        ({"inputs": [t], "outputs": [{"name": "OUTPUT0", "datatype": "INT32"}]}, "output 'OUTPUT0': unknown key"),
    ]
    for body, needle in cases:
        assert_error(d.post("/v2/models/echo/infer", body), 400, "model 'echo'", needle)
    # The known ones, and a custom request parameter (handed to the model), work.
    r = d.post("/v2/models/echo/infer", {"id": "x", "inputs": [t], "parameters": {"my_option": 1, "priority": 1},
                                         "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": False}}]})
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [5], r.text


def test_custom_request_parameters_reach_the_model(corral):
    corral.add("ctl", "steerable", manifest=ctl_manifest())
    d = corral.start()
    r = infer(d, "ctl", say="hello from a custom parameter")
    assert r.status_code == 200
    wait_for(lambda: "hello from a custom parameter" in d.get("/v1/models/ctl/logs").text, what="the model's line")


def test_a_query_string_on_a_v2_endpoint_is_refused(corral):
    corral.add("echo", "echo")
    d = corral.start()
    assert_error(d.get("/v2/models/echo/ready?verbose=1"), 400, "no query parameters", "verbose=1")
    r = d.post("/v2/models/echo/infer?priority=1", {"inputs": [tensor("INPUT0", "INT32", [1], [1])]})
    assert_error(r, 400, "'?priority=1'")
    assert d.get("/v2/models/echo/ready?").status_code == 200  # an empty query says nothing
