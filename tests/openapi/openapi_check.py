"""Real responses checked against docs/openapi.yaml.

A record is one response as a client saw it: {"method", "path", "status",
"content_type", "headers": {lower-case name: value}, "body": text or None,
"truncated": bool}. `problems(doc, records)` lists every way the records
disagree with the document (a status, content type, body or required
header it does not describe; a path it lacks that answered as if served),
and `unexercised(doc, records)` every operation no record reached. Each
message names the method, the path template and the status, and which side
lacks what, so a failure says where to fix it.

Recording (opt-in, for the black-box suite): with CORRAL_RECORD_DIR set,
`install_recorder()` (called by tests/blackbox/conftest.py) wraps
http.client, which requests and urllib both use, and requests' Session, and
appends records of responses from local corral daemons (h2o's Server
header tells them from a test's other servers) to one JSON-lines file per
process under that directory. Bounded: bodies over BODY_MAX are kept only as
truncated, and at most PER_KEY records are written per (method, path,
status); later ones are dropped.

Standard library, python3-yaml and python3-jsonschema (Debian's 4.10:
Draft 2020-12, which OpenAPI 3.1 uses) only.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import threading

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOC_PATH = ROOT / "docs" / "openapi.yaml"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# What the layers before routing answer on any path (docs/openapi.yaml's header): access checks, intake, decoding.
PRE_ROUTING = {400, 401, 403, 413, 415, 503}
BODY_MAX = 64 * 1024
PER_KEY = 3
KEPT_HEADERS = ("retry-after", "inference-header-content-length", "www-authenticate", "allow", "etag",
                "x-corral-log-start", "accept-encoding", "session-expires", "session-ttl")


def load_doc(path: pathlib.Path = DOC_PATH) -> dict:
    import yaml  # python3-yaml
    with open(path) as f:
        return yaml.safe_load(f)


def _template_regex(template: str) -> re.Pattern:
    if template == "/":
        return re.compile(r"/*")
    parts = [r"[^/]+" if p.startswith("{") else re.escape(p) for p in template.strip("/").split("/")]
    return re.compile("/+" + "/+".join(parts) + "/*")


class Matcher:
    """Request paths to the document's templates, literals before parameters (as the router tries them)."""

    def __init__(self, doc: dict):
        templates = sorted(doc["paths"], key=lambda t: (t.count("{"), t))
        self.rules = [(t, _template_regex(t)) for t in templates]

    def template(self, path: str) -> str | None:
        path = path.split("?", 1)[0]
        for t, rx in self.rules:
            if rx.fullmatch(path):
                return t
        return None


def _resolve(doc: dict, node):
    while isinstance(node, dict) and "$ref" in node:
        at = doc
        for part in node["$ref"].lstrip("#/").split("/"):
            at = at[part.replace("~1", "/").replace("~0", "~")]
        node = at
    return node


def _media_type(content: dict, ctype: str | None):
    """The document's media type object for a response's Content-Type, by exact type, then type/*, then */*."""
    base = (ctype or "").split(";", 1)[0].strip().lower()
    for key in (base, base.split("/", 1)[0] + "/*", "*/*"):
        if key in content:
            return key, content[key]
    return None, None


def _validator(doc: dict, schema: dict):
    import jsonschema
    resolver = jsonschema.RefResolver(base_uri="", referrer=doc)
    return jsonschema.Draft202012Validator(schema, resolver=resolver)


def _sse_data(body: str) -> list[str]:
    """The data of each event of a server-sent event stream."""
    events, data = [], []
    for line in body.replace("\r\n", "\n").split("\n"):
        if line == "":
            if data:
                events.append("\n".join(data))
            data = []
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" ") if line[5:6] == " " else line[5:])
    if data:
        events.append("\n".join(data))
    return events


def operation_of(doc: dict, matcher: Matcher, rec: dict):
    """(template, method key, operation or None) of a record; template None when the document has no such path."""
    template = matcher.template(rec["path"])
    method = rec["method"].lower()
    if method == "head":
        method = "get"
    op = doc["paths"][template].get(method) if template else None
    return template, method, op


def problems(doc: dict, records) -> list[str]:
    matcher = Matcher(doc)
    found: list[str] = []
    seen: set[str] = set()

    def report(msg: str):
        if msg not in seen:
            seen.add(msg)
            found.append(msg)

    for rec in records:
        status = rec["status"]
        template, method, op = operation_of(doc, matcher, rec)
        where = f"{rec['method']} {rec['path'].split('?', 1)[0]}"
        if template is None:
            if status != 404 and status not in PRE_ROUTING:
                report(f"{where} answered {status}: the daemon serves this path, docs/openapi.yaml has no path "
                       f"for it")
            continue
        if op is None:
            if status != 405 and status not in PRE_ROUTING:
                report(f"{method.upper()} {template} answered {status}: the daemon serves it, docs/openapi.yaml "
                       f"lacks the operation")
            continue
        responses = op["responses"]
        response = responses.get(str(status), responses.get("default"))
        if response is None:
            report(f"{method.upper()} {template} answered {status} ({where}): docs/openapi.yaml does not list "
                   f"status {status} for it")
            continue
        response = _resolve(doc, response)
        headers = rec.get("headers") or {}
        for name, h in (response.get("headers") or {}).items():
            h = _resolve(doc, h)
            if h.get("required") and name.lower() not in headers:
                report(f"{method.upper()} {template} {status}: the header {name}, required by docs/openapi.yaml, "
                       f"is missing")
        content = response.get("content")
        if not content:
            continue
        key, media = _media_type(content, rec.get("content_type"))
        if media is None:
            report(f"{method.upper()} {template} {status}: content type {rec.get('content_type')!r} is not one "
                   f"docs/openapi.yaml lists ({', '.join(content)})")
            continue
        body = rec.get("body")
        if body is None or rec.get("truncated") or rec["method"] == "HEAD":
            continue
        schema = media.get("schema")
        if key == "application/json" or key.endswith("+json"):
            try:
                value = json.loads(body)
            except ValueError as e:
                report(f"{method.upper()} {template} {status}: the body is not JSON ({e})")
                continue
            targets = [(schema, value)] if schema is not None else []
        elif key == "text/event-stream" and "x-corral-event" in media:
            targets = []
            for data in _sse_data(body):
                try:
                    value = json.loads(data)
                except ValueError as e:
                    report(f"{method.upper()} {template} {status}: an event's data is not JSON ({e})")
                    continue
                is_error = isinstance(value, dict) and set(value) == {"error"}
                targets.append(({"$ref": "#/components/schemas/error"} if is_error else media["x-corral-event"],
                                value))
        else:
            continue
        for sch, value in targets:
            errors = sorted(_validator(doc, sch).iter_errors(value), key=lambda e: list(e.absolute_path))
            for e in errors[:3]:
                at = "/".join(str(p) for p in e.absolute_path) or "(the body)"
                report(f"{method.upper()} {template} {status}: the body does not match docs/openapi.yaml at "
                       f"{at}: {e.message[:300]}")
    return found


def unexercised(doc: dict, records) -> list[str]:
    """Every operation of the document that no record reached with a status it lists."""
    matcher = Matcher(doc)
    reached = set()
    for rec in records:
        template, method, op = operation_of(doc, matcher, rec)
        if op is not None and (str(rec["status"]) in op["responses"] or "default" in op["responses"]):
            reached.add((method, template))
    missing = []
    for template, item in doc["paths"].items():
        for method in METHODS:
            if method in item and (method, template) not in reached:
                missing.append(f"{method.upper()} {template}: in docs/openapi.yaml, but no test's request reached it")
    return missing


def record_of(method: str, url_path: str, status: int, headers, body: bytes | None) -> dict:
    """A record from a response's parts (headers: any mapping with .get, case-insensitive names)."""
    ctype = headers.get("content-type") or headers.get("Content-Type")
    kept = {}
    for name in KEPT_HEADERS:
        v = headers.get(name)
        if v is not None:
            kept[name] = v
    rec = {"method": method.upper(), "path": url_path, "status": status, "content_type": ctype, "headers": kept,
           "body": None, "truncated": False}
    if body is not None and method.upper() != "HEAD":  # a HEAD's answer has the headers of a body it lacks
        rec["truncated"] = len(body) > BODY_MAX
        rec["body"] = body[:BODY_MAX].decode("utf-8", "replace")
    return rec


def record_response(resp) -> dict:
    """A record of a requests.Response whose body has been read."""
    from urllib.parse import urlsplit
    body = resp.content if resp._content_consumed else None
    return record_of(resp.request.method, urlsplit(resp.request.url).path, resp.status_code, resp.headers, body)


# ---- the recorder for the black-box suite ----

_lock = threading.Lock()
_counts: dict = {}
_out = None


def _from_corral(host, headers) -> bool:
    """A local daemon's answer: corral's HTTP is h2o's, which names itself (a test's Prometheus or file server does
    not)."""
    return str(host) in ("127.0.0.1", "localhost", "::1", "[::1]") and \
        (headers.get("server") or "").startswith("h2o/")


def _write(rec: dict):
    global _out
    key = (rec["method"], rec["path"], rec["status"], rec["body"] is not None)
    with _lock:
        n = _counts.get(key, 0)
        if n >= PER_KEY:
            return
        _counts[key] = n + 1
        if _out is None:
            d = pathlib.Path(os.environ["CORRAL_RECORD_DIR"])
            d.mkdir(parents=True, exist_ok=True)
            _out = open(d / f"responses-{os.getpid()}.jsonl", "a", buffering=1)
        _out.write(json.dumps(rec) + "\n")


def install_recorder():
    """Records responses from local daemons (see the module's docstring); does nothing without CORRAL_RECORD_DIR."""
    if not os.environ.get("CORRAL_RECORD_DIR"):
        return
    import http.client
    from urllib.parse import urlsplit

    import requests

    put_request = http.client.HTTPConnection.putrequest
    get_response = http.client.HTTPConnection.getresponse

    def putrequest(self, method, url, *a, **kw):
        self._corral_request = (method, urlsplit(url).path if "://" in url else url.split("?", 1)[0])
        return put_request(self, method, url, *a, **kw)

    def getresponse(self, *a, **kw):
        resp = get_response(self, *a, **kw)
        req = getattr(self, "_corral_request", None)
        if req and _from_corral(self.host, resp.headers):
            try:
                _write(record_of(req[0], req[1], resp.status, resp.headers, None))
            except Exception:  # a recorder must never break the test it watches
                pass
        return resp

    http.client.HTTPConnection.putrequest = putrequest
    http.client.HTTPConnection.getresponse = getresponse

    send = requests.Session.send

    def session_send(self, request, **kw):
        resp = send(self, request, **kw)
        try:
            if not kw.get("stream") and _from_corral(urlsplit(request.url).hostname, resp.headers):
                _write(record_response(resp))
        except Exception:
            pass
        return resp

    requests.Session.send = session_send


def read_records(directory: pathlib.Path) -> list[dict]:
    records = []
    for f in sorted(directory.glob("responses-*.jsonl")):
        for line in f.read_text().splitlines():
            if line.strip():
                records.append(json.loads(line))
    return records
