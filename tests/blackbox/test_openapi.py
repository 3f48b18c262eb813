"""docs/openapi.yaml against a real daemon: it is served (JSON and YAML, with
the daemon's address and version), every operation it lists is driven once
here and every answer validated against it (status, content type, required
headers, body, with python3-jsonschema), and the checker itself notices a
document that lost a path or a status, or gained one the daemon lacks.

The whole suite's answers are checked the same way by tests/openapi, from
what tests/blackbox recorded (CORRAL_RECORD_DIR, set by `make test`).
"""
import copy
import gzip
import json
import struct
import sys

import requests

from conftest import ROOT, tensor, wait_for

sys.path.insert(0, str(ROOT / "tests" / "openapi"))
import openapi_check  # noqa: E402


def drive_every_operation(d) -> list[dict]:
    """One request (or a few) per operation of the document, as records."""
    recs = []

    def keep(r: requests.Response) -> requests.Response:
        recs.append(openapi_check.record_response(r))
        return r

    def get(path, **kw):
        return keep(d.get(path, **kw))

    def post(path, body=None, **kw):
        return keep(d.post(path, body, **kw))

    assert get("/v2/health/live").status_code == 200
    assert get("/v2/health/ready").status_code == 200
    assert get("/v2").status_code == 200
    assert get("/v2?x=1").status_code == 400
    for base in ("/v2/models/echo", "/v2/models/echo/versions/1"):
        assert get(base).status_code == 200
        assert get(base + "/ready").status_code == 200
        assert get(base + "/config").status_code == 200
        x = [tensor("INPUT0", "FP32", [2], [1.5, 2])]
        assert post(base + "/infer", {"id": "7", "inputs": x}).status_code == 200
        r = post(base + "/infer", {"inputs": x, "parameters": {"binary_data_output": True}})
        assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream", r.headers
        assert get(base + "/stats").status_code == 200
    assert get("/v2/models/nope").status_code == 404
    assert get("/v2/models/echo/versions/2").status_code == 404
    assert post("/v2/models/echo/infer", {"inputs": "no"}).status_code == 400
    assert get("/v2/models/stats").status_code == 200
    for base in ("/v2/models/streams", "/v2/models/streams/versions/1"):
        assert post(base + "/generate", {"events": 1}).status_code == 200
        r = post(base + "/generate_stream", {"events": 2, "tag": "t"})
        assert r.status_code == 200 and r.text.count("data:") == 2, r.text
    assert post("/v2/models/streams/generate", {"events": 2}).status_code == 400
    assert post("/v2/models/streams/generate_stream", {"fail_after": 1}).status_code == 200
    assert post("/v2/repository/index", {}).status_code == 200
    assert post("/v2/repository/index", {"ready": 1}).status_code == 400
    assert post("/v2/repository/models/echo/load", {}).status_code == 200
    assert post("/v2/repository/models/echo/unload", {}).status_code == 200
    assert post("/v2/repository/models/nope/unload", {}).status_code == 404
    assert get("/v2/logging").status_code == 200
    assert post("/v2/logging", {"log_info": True}).status_code == 200
    assert post("/v2/logging", {"log_file": "/tmp/x"}).status_code == 400
    assert get("/v2/systemsharedmemory/status").status_code == 200
    assert get("/v2/systemsharedmemory/region/r/status").status_code == 404
    assert post("/v2/systemsharedmemory/register", {}).status_code == 400
    assert post("/v2/systemsharedmemory/region/r/register", {"key": "/corral-openapi-none", "byte_size": 8}
                ).status_code in (400, 404)
    assert post("/v2/systemsharedmemory/region/r/unregister", {}).status_code == 200
    assert post("/v2/systemsharedmemory/unregister", {}).status_code == 200
    assert get("/v1/models").status_code == 200
    assert get("/v1/models/echo").status_code == 200
    assert get("/v1/models/bad$name").status_code == 400
    assert post("/v1/models/echo/generate", {"a": 1}).status_code == 200
    r = post("/v1/models/streams/generate", {"events": 2, "stream": True}, headers={"Accept": "application/x-ndjson"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson"), r.headers
    assert post("/v1/models/streams/generate", {"bytes": 10, "stream": True}).status_code == 200
    assert post("/v2/repository/models/echo/unload", {}).status_code == 200
    assert post("/v1/models/echo/scale", {"instances": 1}).status_code == 409  # not loaded
    assert post("/v2/repository/models/echo/load", {}).status_code == 200
    assert post("/v1/models/echo/scale", {"instances": 1}).status_code == 200
    assert get("/v1/models/echo/logs").status_code == 200
    assert post("/v1/models/pull", {"name": "absent"}).status_code in (400, 404, 409)
    with d.http.get(d.url("/v1/events"), stream=True, timeout=10) as r:
        recs.append(openapi_check.record_of("GET", "/v1/events", r.status_code, r.headers, None))
        assert r.status_code == 200
    def call(method, path, **kw):
        return keep(d.http.request(method, d.url(path), timeout=10, **kw))

    js = {"Content-Type": "application/json"}
    assert call("PUT", "/v1/sessions/s1?ttl=60", data=b'{"turns": [1]}', headers=js).status_code == 201
    assert call("PUT", "/v1/sessions/s1", data=b'{"turns": [1, 2]}', headers=js).status_code == 200
    assert call("PUT", "/v1/sessions/voice", data=b"RIFF", headers={"Content-Type": "audio/wav",
                                                                      "Session-TTL": "30"}).status_code == 201
    assert call("PUT", "/v1/sessions/bad$id", data=b"{}", headers=js).status_code == 400
    assert call("PUT", "/v1/sessions/big", data=b'"' + b"x" * 5000 + b'"', headers=js).status_code == 413
    assert call("PATCH", "/v1/sessions/s1", data=b'{"user": "a"}',
                headers={"Content-Type": "application/merge-patch+json"}).status_code == 200
    assert call("PATCH", "/v1/sessions/voice", data=b'{"a": 1}', headers=js).status_code == 409
    assert call("PATCH", "/v1/sessions/none", data=b'{"a": 1}', headers=js).status_code == 404
    assert get("/v1/sessions/s1").status_code == 200
    assert get("/v1/sessions/voice").status_code == 200
    assert get("/v1/sessions/none").status_code == 404
    assert get("/v1/sessions").status_code == 200
    assert call("PUT", "/v1/sessions/half", data=b'"' + b"y" * 3500 + b'"', headers=js).status_code == 201
    assert call("PUT", "/v1/sessions/full", data=b'"' + b"y" * 3500 + b'"', headers=js).status_code == 507
    assert call("DELETE", "/v1/sessions/voice").status_code == 200
    assert call("DELETE", "/v1/sessions/voice").status_code == 404
    assert post("/v1/models", {"name": "echo-v", "from": "echo", "parameters": {"prefix": "v"}}).status_code == 201
    assert post("/v1/models", {"name": "echo-v", "from": "echo"}).status_code == 409
    assert post("/v1/models", {"name": "echo-w", "from": "nope"}).status_code == 404
    assert post("/v1/models", {"name": "echo-w", "from": "echo", "frobnicate": 1}).status_code == 400
    assert call("DELETE", "/v1/models/echo-v").status_code == 200
    assert call("DELETE", "/v1/models/echo-v").status_code == 404
    assert call("DELETE", "/v1/models/echo").status_code == 409
    assert get("/metrics").status_code == 200
    assert get("/openapi.json").status_code == 200
    assert get("/openapi.yaml").status_code == 200
    r = get("/")
    assert r.status_code == 200
    assert get("/", headers={"If-None-Match": r.headers["etag"]}).status_code == 304
    assert get("/dashboard/app.js").status_code == 200
    assert get("/dashboard/nope.js").status_code == 404
    # what the router refuses: not operations, but the checker must accept them
    assert keep(d.http.request("PUT", d.url("/v2/models/echo"), timeout=10)).status_code == 405
    assert get("/v3/nothing").status_code == 404
    return recs


def test_every_operation_matches_the_document(corral):
    corral.add("echo", "echo", manifest="runtime: python\nentrypoint: worker.py\ninstances: 1\n")
    corral.add("streams", "streams")
    d = corral.start("--allow-client-shm", "--session-memory", "6KiB", "--session-max-size", "4KiB",
                     "--session-evict", "off")
    doc = openapi_check.load_doc()
    recs = drive_every_operation(d)
    found = openapi_check.problems(doc, recs)
    assert not found, "answers docs/openapi.yaml does not describe:\n" + "\n".join(found)
    missing = openapi_check.unexercised(doc, recs)
    assert not missing, "operations of docs/openapi.yaml this test did not reach:\n" + "\n".join(missing)

    # The checker sees drift both ways, naming the side that lacks what.
    lacking = copy.deepcopy(doc)
    del lacking["paths"]["/v1/models/{model_name}/logs"]
    assert "GET /v1/models/echo/logs answered 200: the daemon serves this path, docs/openapi.yaml has no path " \
           "for it" in openapi_check.problems(lacking, recs)
    fake = copy.deepcopy(doc)
    fake["paths"]["/v1/frobnicate"] = {"get": {"operationId": "x", "responses": {"200": {"description": "x"}}}}
    assert openapi_check.unexercised(fake, recs) == [
        "GET /v1/frobnicate: in docs/openapi.yaml, but no test's request reached it"]
    no_status = copy.deepcopy(doc)
    no_status["paths"]["/v2/models/stats"]["get"]["responses"] = {
        k: v for k, v in doc["paths"]["/v2/models/stats"]["get"]["responses"].items() if k != "200"}
    assert any(p.startswith("GET /v2/models/stats answered 200") and "does not list status 200" in p
               for p in openapi_check.problems(no_status, recs))
    wrong_body = copy.deepcopy(doc)
    wrong_body["components"]["schemas"]["metadata_server_response"]["required"].append("uptime")
    assert any(p.startswith("GET /v2 200: the body does not match") and "'uptime' is a required property" in p
               for p in openapi_check.problems(wrong_body, recs))
    no_post = copy.deepcopy(doc)
    del no_post["paths"]["/v2/logging"]["post"]
    assert any(p.startswith("POST /v2/logging answered 200: the daemon serves it, docs/openapi.yaml lacks the "
                            "operation") for p in openapi_check.problems(no_post, recs))


def test_served_document_has_the_daemons_address_and_version(corral):
    d = corral.start()
    doc = openapi_check.load_doc()
    served = d.get("/openapi.json")
    assert served.status_code == 200 and served.headers["content-type"] == "application/json"
    got = served.json()
    assert got["servers"] == [{"url": d.base}]
    assert got["info"]["version"] == d.get("/v2").json()["version"]
    for key in ("servers", "info"):
        del got[key]
        del doc[key]
    assert got == doc  # otherwise docs/openapi.yaml as it is

    import yaml
    y = d.get("/openapi.yaml")
    assert y.status_code == 200 and y.headers["content-type"] == "application/yaml"
    as_yaml = yaml.safe_load(y.text)
    assert as_yaml["servers"] == [{"url": d.base}]
    assert as_yaml == d.get("/openapi.json").json()
    # byte for byte the file, but for the two values filled in
    text = (ROOT / "docs" / "openapi.yaml").read_text()
    assert y.text.count("\n") == text.count("\n")
    assert len(y.text.splitlines()) == len(text.splitlines())
    changed = [(a, b) for a, b in zip(text.splitlines(), y.text.splitlines()) if a != b]
    assert len(changed) == 2, changed

    # HEAD answers as GET does; compressed when asked, like every complete answer
    assert d.http.head(d.url("/openapi.json"), timeout=10).status_code == 200
    r = d.get("/openapi.json", headers={"Accept-Encoding": "gzip"}, stream=True)
    assert r.headers.get("content-encoding") == "gzip"
    assert json.loads(gzip.decompress(r.raw.read())) == d.get("/openapi.json").json()
    r = d.post("/openapi.json", {})
    assert r.status_code == 405 and r.headers["allow"] == "GET"


def test_openapi_needs_the_token_like_metrics(corral, tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    d = corral.start("--auth-token-file", str(token))
    assert d.get("/openapi.json").status_code == 401
    assert d.get("/openapi.json", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    d2 = corral.start("--auth-token-file", str(token), "--auth", "management")
    assert d2.get("/openapi.yaml").status_code == 200  # read-only, as /metrics is
    wait_for(lambda: d2.get("/metrics").status_code == 200, what="metrics without the token")


def test_binary_answer_carries_its_header(corral):
    corral.add("echo", "echo", manifest="runtime: python\nentrypoint: worker.py\ninstances: 1\n")
    d = corral.start()
    body = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [2],
                                   "parameters": {"binary_data_size": 8}}],
                       "parameters": {"binary_data_output": True}}).encode()
    r = d.http.post(d.url("/v2/models/echo/infer"), data=body + struct.pack("<2i", 3, 4), timeout=60,
                    headers={"Content-Type": "application/octet-stream",
                             "Inference-Header-Content-Length": str(len(body))})
    rec = openapi_check.record_response(r)
    assert r.status_code == 200 and "inference-header-content-length" in rec["headers"], r.headers
    assert openapi_check.problems(openapi_check.load_doc(), [rec]) == []
    rec["headers"].pop("inference-header-content-length")
    rec["status"] = 503  # a 503 without Retry-After breaks the document's rule
    assert any("the header Retry-After, required by docs/openapi.yaml, is missing" in p
               for p in openapi_check.problems(openapi_check.load_doc(), [rec]))
