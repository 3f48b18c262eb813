"""echo_wsgi — the echo model as a WSGI app, for gunicorn and uWSGI (see echo_logic.py)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import echo_logic  # noqa: E402


def app(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    try:
        out, head_len = echo_logic.infer(body, environ.get("HTTP_INFERENCE_HEADER_CONTENT_LENGTH"))
    except (echo_logic.BadRequest, KeyError, ValueError, TypeError) as e:
        msg = ('{"error": "%s"}' % str(e).replace('"', "'")).encode()
        start_response("400 Bad Request", [("Content-Type", "application/json"), ("Content-Length", str(len(msg)))])
        return [msg]
    headers = [("Content-Length", str(len(out)))]
    if head_len is None:
        headers.append(("Content-Type", "application/json"))
    else:
        headers += [("Content-Type", "application/octet-stream"), ("Inference-Header-Content-Length", str(head_len))]
    start_response("200 OK", headers)
    return [out]


application = app
