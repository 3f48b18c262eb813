"""The dashboard at GET /: its files as the daemon serves them (embedded,
cached by ETag, locked down by their headers, open without the token but
behind the Host and Origin guards), and the page itself in Debian's
chromium, driven by tests/browser/dashboard.mjs (playwright-core from npm,
installed into tests/browser/node_modules on first use): it loads without
console errors, shows the models, follows a load made from outside, and its
load, unload and scale buttons work, with and without a token. A screenshot
is left at build/dashboard.png.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess

import pytest
import requests

from conftest import ROOT, wait_for

TOKEN = "dash-7c1e-Secret"
WEB = ROOT / "web"
BROWSER_DIR = ROOT / "tests" / "browser"
SCREENSHOT = ROOT / "build" / "dashboard.png"
ASSETS = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css",
          "favicon.svg": "image/svg+xml"}


def manifest(instances: int, load: str) -> str:
    return f"runtime: python\nentrypoint: worker.py\ninstances: {instances}\nload: {load}\n"


def start(corral, *args: str, models: dict[str, tuple[int, str]], token: str | None = None):
    for name, (instances, load) in models.items():
        corral.add(name, "echo", manifest=manifest(instances, load))
    if token:
        token_file = corral.tmp / "token"
        token_file.write_text(token + "\n")
        args = (*args, "--auth-token-file", str(token_file))
    # An empty CORRAL_TOKEN counts as unset: the caller's environment does not leak in.
    return corral.start(*args, env={"CORRAL_TOKEN": ""})


# ---- the files, over HTTP ----

def test_files_are_embedded_and_cached(corral):
    d = start(corral, models={"a": (1, "lazy")}, token=TOKEN)
    index = d.get("/")
    assert index.status_code == 200, index.text
    assert index.content == (WEB / "index.html").read_bytes()
    for name, ctype in ASSETS.items():
        r = d.get(f"/dashboard/{name}")
        assert r.status_code == 200, (name, r.text)
        assert r.headers["content-type"].startswith(ctype), (name, r.headers)
        assert r.content == (WEB / name).read_bytes(), f"{name}: not the bytes of web/{name}"
        assert r.headers["cache-control"] == "no-cache"
        assert r.headers["x-content-type-options"] == "nosniff"
        # requests asks for gzip: a compressed file's ETag is weak (it named the uncompressed bytes)
        etag = r.headers["etag"]
        assert etag.startswith('W/"' if "content-encoding" in r.headers else '"'), (etag, r.headers)
        etag = etag.removeprefix("W/")
        assert etag.startswith('"') and etag.endswith('"') and len(etag) > 10, etag
        again = d.get(f"/dashboard/{name}", headers={"If-None-Match": f'"other", W/{etag}'})
        assert again.status_code == 304 and again.content == b"", (name, again.status_code)
        assert again.headers["etag"] == etag
        assert d.get(f"/dashboard/{name}", headers={"If-None-Match": '"other"'}).status_code == 200
        head = d.http.head(d.url(f"/dashboard/{name}"), timeout=10)
        assert head.status_code == 200 and head.headers["content-length"] == r.headers["content-length"]
        if name != "favicon.svg":  # an SVG names its XML namespace by URL, and fetches nothing
            assert b"://" not in r.content, f"{name} refers to another site: nothing may be fetched at run time"
    csp = index.headers["content-security-policy"]
    for directive in ("default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"):
        assert directive in csp, csp
    assert index.headers["referrer-policy"] == "no-referrer"
    # Every file the page refers to is one the daemon has.
    for ref in ("/dashboard/app.js", "/dashboard/style.css", "/dashboard/favicon.svg"):
        assert ref.encode() in index.content, ref

    r = d.get("/dashboard/missing.js")
    assert r.status_code == 404 and "missing.js" in r.json()["error"]
    r = d.post("/", {})
    assert r.status_code == 405 and r.headers["allow"] == "GET"


def test_files_open_but_data_needs_the_token(corral):
    d = start(corral, models={"a": (1, "lazy")}, token=TOKEN)
    assert d.get("/").status_code == 200
    assert d.get("/dashboard/app.js").status_code == 200
    for path in ("/v1/models", "/v1/events", "/metrics", "/v2"):
        assert d.get(path, timeout=10).status_code == 401, path
    # The Host and Origin guards cover the dashboard like every other endpoint.
    r = d.get("/", headers={"Host": "rebound.example.com"})
    assert r.status_code == 403 and "rebound.example.com" in r.json()["error"]
    r = d.get("/", headers={"Origin": "http://evil.example.com"})
    assert r.status_code == 403


# ---- the page, in a browser ----

@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium and playwright-core in tests/browser/node_modules, or a skip saying what is missing."""
    exe = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.skip("Debian's chromium is not installed (scripts/deps.sh installs it): the dashboard is not "
                    "tested in a browser")
    npm = shutil.which("npm")
    if not shutil.which("node") or not npm:
        pytest.skip("node and npm are not installed (scripts/deps.sh installs them): the dashboard is not tested "
                    "in a browser")
    lock = json.loads((BROWSER_DIR / "package-lock.json").read_text())
    want = lock["packages"]["node_modules/playwright-core"]["version"]
    installed = BROWSER_DIR / "node_modules" / "playwright-core" / "package.json"
    if not installed.exists() or json.loads(installed.read_text())["version"] != want:
        try:
            p = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=BROWSER_DIR,
                               capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            pytest.skip("npm ci in tests/browser took over 300 s: is the npm registry reachable?")
        if p.returncode != 0:
            pytest.skip(f"npm ci in tests/browser failed (is the npm registry reachable?):\n{p.stderr[-2000:]}")
    return exe


def run_browser(d, chromium: str, scenario: str, token: str | None = None, timeout: float = 60) -> str:
    """Runs one scenario of dashboard.mjs against d; returns its output, or fails with it and the daemon's log."""
    env = dict(os.environ, CORRAL_URL=d.base, CHROMIUM=chromium, SCENARIO=scenario, CORRAL_TOKEN=token or "")
    if scenario == "open":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        env["SCREENSHOT"] = str(SCREENSHOT)
    # Its own process group, so a timeout ends the browser along with node.
    p = subprocess.Popen(["node", "dashboard.mjs"], cwd=BROWSER_DIR, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        output, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        output, _ = p.communicate()
        pytest.fail(f"dashboard.mjs ran over {timeout} s:\n{output}\n--- daemon log ---\n{d.log()[-3000:]}")
    print(output)
    assert p.returncode == 0, f"dashboard.mjs {scenario}:\n{output}\n--- daemon log ---\n{d.log()[-3000:]}"
    return output


def test_page_in_chromium(corral, chromium):
    d = start(corral, models={"a": (2, "eager"), "b": (1, "lazy"), "c": (1, "lazy")})
    d.wait_state("a", "ready")
    if SCREENSHOT.exists():
        SCREENSHOT.unlink()
    output = run_browser(d, chromium, "open")
    assert "ok no console errors" in output, output
    # What the page's buttons did, as the daemon tells it.
    assert d.model("c")["state"] == "ready"
    assert d.model("b")["state"] == "unloaded"
    a = d.model("a")
    assert a["state"] == "ready" and a["target_instances"] == 2
    wait_for(lambda: len(d.model("a")["instances"]) == 2, timeout=10, what="a's third instance to retire")
    assert SCREENSHOT.exists() and SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_page_with_token(corral, chromium):
    d = start(corral, models={"a": (1, "eager"), "b": (1, "lazy")}, token=TOKEN)
    wait_for(lambda: requests.get(d.url("/v1/models/a"), headers={"Authorization": f"Bearer {TOKEN}"},
                                  timeout=10).json()["state"] == "ready", timeout=20, what="a to be ready")
    output = run_browser(d, chromium, "token", token=TOKEN)
    assert "ok no console errors" in output, output
    r = requests.get(d.url("/v1/models/b"), headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert r.json()["state"] == "ready"
