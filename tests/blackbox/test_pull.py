"""Pulling models (issue 15, docs/repository.md): POST /v1/models/pull and `corral pull` against a loopback HTTP
server the test starts (listed with --pull-allow 127.0.0.1): tar, tar.gz, zip and a single model.yaml
pulled, linked and served; a wrong digest, a truncated body, an HTTP error, refused hosts, addresses,
schemes and redirects, hostile archives (`..`, absolute paths, escaping symbolic and hard links, device
and fifo entries), an archive with no model.yaml, a size past --pull-max-size and a name that exists:
each refused with its reason and nothing left in external_models/ or models/. Progress events on
/v1/events; the CLI's exit codes.
"""
from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import subprocess
import shutil
import signal
import tarfile
import threading
import time
import zipfile

import pytest
import requests

from conftest import BIN, EXAMPLES, tensor, wait_for

ECHO_FILES = {name: (EXAMPLES / "echo" / name).read_bytes() for name in ("model.yaml", "worker.py")}
INPUT = [tensor("INPUT0", "INT32", [2], [4, 2])]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]], gz: bool = False,
              fmt: int = tarfile.GNU_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w", format=fmt) as t:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def file_info(name: str, mode: int = 0o644) -> tarfile.TarInfo:
    i = tarfile.TarInfo(name)
    i.mode = mode
    return i


def special(name: str, kind: bytes, link: str = "") -> tarfile.TarInfo:
    i = tarfile.TarInfo(name)
    i.type = kind
    i.linkname = link
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        i.devmajor, i.devminor = 1, 3
    return i


def echo_tar(top: str = "", gz: bool = False) -> bytes:
    members = []
    if top:
        d = tarfile.TarInfo(top)
        d.type = tarfile.DIRTYPE
        d.mode = 0o755
        members.append((d, None))
    for name, data in ECHO_FILES.items():
        members.append((file_info(f"{top}/{name}" if top else name), data))
    return tar_bytes(members, gz=gz)


def echo_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in ECHO_FILES.items():
            z.writestr(f"echo-zip/{name}", data)
    return buf.getvalue()


def zip_with(entries: list[tuple[str, bytes, int | None]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            if mode is not None:
                info.external_attr = mode << 16
                info.create_system = 3
            z.writestr(info, data)
    return buf.getvalue()


class Files:
    """What the test server serves: path -> (status, headers, body, bytes to send before closing)."""

    def __init__(self):
        self.routes: dict[str, tuple[int, dict, bytes, int | None]] = {}
        self.slow: set[str] = set()  # paths sent 64 KiB at a time, 0.1 s apart
        self.port = 0

    def put(self, path: str, body: bytes, status: int = 200, headers: dict | None = None,
            cut: int | None = None) -> str:
        self.routes[path] = (status, headers or {}, body, cut)
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def files():
    f = Files()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            route = f.routes.get(self.path)
            if not route:
                self.send_response(404)
                self.send_header("Content-Length", "9")
                self.end_headers()
                self.wfile.write(b"not found")
                return
            status, headers, body, cut = route
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            data = body if cut is None else body[:cut]
            step = 65536 if self.path in f.slow else len(data) or 1
            try:
                for i in range(0, len(data), step):
                    self.wfile.write(data[i:i + step])
                    self.wfile.flush()
                    if self.path in f.slow:
                        time.sleep(0.1)
            except OSError:
                return
            if cut is not None:
                self.close_connection = True

        def log_message(self, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            pass  # a client (the daemon) that hung up mid-answer: what the test is about

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    f.port = server.server_address[1]
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f
    server.shutdown()
    server.server_close()


@pytest.fixture
def daemon(corral, files):
    corral.add("echo", "echo")
    corral.external.mkdir()
    return corral.start("--pull-allow", "127.0.0.1", external=True)


def pull(d, url: str, digest: str, name: str | None = None, timeout: float = 60) -> requests.Response:
    body = {"url": url, "sha256": digest}
    if name is not None:
        body["name"] = name
    return d.post("/v1/models/pull", body, timeout=timeout)


def assert_clean(corral, expected_external: set[str] = frozenset(), expected_models: set[str] = frozenset()):
    """Nothing but what is expected in external_models/ (no temporary directory either) or models/."""
    assert set(os.listdir(corral.external)) == set(expected_external)
    assert set(os.listdir(corral.repo)) == {"echo", *expected_models, *expected_external}


def served(d, name: str):
    r = d.infer(name, INPUT)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [4, 2]


# ---------------------------------------------------------------- pulled, linked, served


@pytest.mark.parametrize("kind", ["tar", "tar.gz", "zip"])
def test_an_archive_is_pulled_linked_and_served(corral, files, daemon, kind):
    body = {"tar": echo_tar(), "tar.gz": echo_tar("top", gz=True), "zip": echo_zip()}[kind]
    url = files.put(f"/pulled.{kind}", body)
    r = pull(daemon, url, sha(body))
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "pulled"
    assert (corral.external / "pulled" / "worker.py").read_bytes() == ECHO_FILES["worker.py"]
    assert os.path.islink(corral.repo / "pulled")
    served(daemon, "pulled")
    assert_clean(corral, {"pulled"})
    assert "pulled model pulled from" in daemon.log()


# A model that is one file: its manifest is also the shell script that runs it (each YAML line a command
# that fails harmlessly, until the parameters key that execs the echo worker).
SINGLE_FILE_MODEL = f"""runtime: python
python: /bin/sh
entrypoint: model.yaml
instances: 1
parameters:
  exec python3 {EXAMPLES / "echo" / "worker.py"} ; : 1
""".encode()


def test_a_single_model_yaml_is_a_model(corral, files, daemon):
    body = SINGLE_FILE_MODEL
    url = files.put("/v/model.yaml", body)
    r = pull(daemon, url, sha(body).upper(), name="variant")
    assert r.status_code == 200, r.text
    assert os.listdir(corral.external / "variant") == ["model.yaml"]
    served(daemon, "variant")
    assert_clean(corral, {"variant"})


def test_a_single_file_that_is_not_model_yaml_is_refused(corral, files, daemon):
    body = b"weights" * 100
    r = pull(daemon, files.put("/weights.bin", body), sha(body), name="weights")
    assert r.status_code == 422
    assert "single file that is not model.yaml" in r.json()["error"]
    import gzip
    gz = gzip.compress(b"not a tar" * 100)
    r = pull(daemon, files.put("/weights.bin.gz", gz), sha(gz), name="weights")
    assert r.status_code == 422 and "cannot read the archive" in r.json()["error"], r.text
    assert_clean(corral)


# ---------------------------------------------------------------- download failures


def test_a_wrong_digest_leaves_nothing(corral, files, daemon):
    body = echo_tar()
    r = pull(daemon, files.put("/bad.tar", body), sha(b"something else"))
    assert r.status_code == 422
    assert "sha256 mismatch" in r.json()["error"] and sha(body) in r.json()["error"]
    assert_clean(corral)


def test_a_truncated_body_leaves_nothing(corral, files, daemon):
    body = echo_tar(gz=True)
    r = pull(daemon, files.put("/cut.tar.gz", body, cut=len(body) // 2), sha(body))
    assert r.status_code == 502
    assert "partial" in r.json()["error"].lower() or "remaining" in r.json()["error"]
    assert_clean(corral)


def test_an_http_error_status_is_reported(corral, files, daemon):
    r = pull(daemon, f"http://127.0.0.1:{files.port}/missing.tar", "0" * 64)
    assert r.status_code == 502
    assert "answered HTTP 404" in r.json()["error"]
    # an error body is dropped, and not read for ever
    r = pull(daemon, files.put("/huge-404.tar", b"x" * (2 << 20), status=404), "0" * 64)
    assert r.status_code == 502
    assert "answered HTTP 404 with a body of more than 1048576 bytes" in r.json()["error"]
    assert_clean(corral)


def test_redirects_are_followed_and_each_hop_checked(corral, files, daemon):
    body = echo_tar()
    target = files.put("/real.tar", body)
    files.put("/hop.tar", b"", status=302, headers={"Location": target})
    r = pull(daemon, f"http://127.0.0.1:{files.port}/hop.tar", sha(body), name="hopped")
    assert r.status_code == 200, r.text
    served(daemon, "hopped")

    for where in ("http://169.254.169.254/latest/meta-data/", f"http://localhost:{files.port}/real.tar",
                  "file:///etc/passwd", "ftp://127.0.0.1/x"):
        files.put("/evil.tar", b"", status=302, headers={"Location": where})
        r = pull(daemon, f"http://127.0.0.1:{files.port}/evil.tar", sha(body), name="redirected")
        assert r.status_code == 403, (where, r.text)
        assert "redirect from" in r.json()["error"] and "refused" in r.json()["error"]
    assert_clean(corral, {"hopped"})


def test_too_many_redirects(corral, files, daemon):
    files.put("/loop.tar", b"", status=302, headers={"Location": f"http://127.0.0.1:{files.port}/loop.tar"})
    r = pull(daemon, f"http://127.0.0.1:{files.port}/loop.tar", "0" * 64)
    assert r.status_code == 502 and "more than 3 redirects" in r.json()["error"]
    assert_clean(corral)


def test_hosts_schemes_and_addresses_are_refused_unless_listed(corral, files):
    corral.add("echo", "echo")
    corral.external.mkdir()
    body = echo_tar()
    files.put("/x.tar", body)
    # localhost is listed as a host, but its address (loopback) is not: refused at connect time
    d = corral.start("--pull-allow", "localhost", external=True)
    r = pull(d, f"http://localhost:{files.port}/x.tar", sha(body))
    assert r.status_code == 403, r.text
    assert "is loopback, private or reserved" in r.json()["error"]
    r = pull(d, f"http://127.0.0.1:{files.port}/x.tar", sha(body))
    assert r.status_code == 403 and "host '127.0.0.1' is not allowed" in r.json()["error"]
    r = pull(d, "ftp://localhost/x.tar", sha(body))
    assert r.status_code == 403 and "scheme 'ftp' is refused" in r.json()["error"]
    r = pull(d, "file:///etc/passwd", sha(body), name="passwd")
    assert r.status_code == 403 and "--pull-file-root" in r.json()["error"]
    r = pull(d, "http://user:secret@localhost/x.tar", sha(body))
    assert r.status_code == 403 and "user name or password" in r.json()["error"]
    assert_clean(corral)


def test_a_host_and_its_address_both_listed(corral, files):
    # localhost may resolve to ::1 too, which is refused (unlisted) while 127.0.0.1 connects: no failure
    corral.add("echo", "echo")
    corral.external.mkdir()
    body = echo_tar()
    files.put("/both.tar", body)
    d = corral.start("--pull-allow", "localhost", "--pull-allow", "127.0.0.1", external=True)
    r = pull(d, f"http://localhost:{files.port}/both.tar", sha(body))
    assert r.status_code == 200, r.text
    assert_clean(corral, {"both"})


def test_https_verifies_the_certificate(corral, files, tmp_path):
    # a self-signed certificate for 127.0.0.1: the pull must refuse it (curl's verification is on)
    import shutil
    import ssl
    if not shutil.which("openssl"):
        pytest.skip("no openssl to make a certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    body = echo_tar()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class Server(http.server.HTTPServer):
        def handle_error(self, request, client_address):
            pass

    server = Server(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        corral.add("echo", "echo")
        corral.external.mkdir()
        d = corral.start("--pull-allow", "127.0.0.1", external=True)
        r = pull(d, f"https://127.0.0.1:{server.server_address[1]}/tls.tar", sha(body))
        assert r.status_code == 502, r.text
        assert "certificate" in r.json()["error"].lower() or "SSL" in r.json()["error"], r.text
        assert_clean(corral)
    finally:
        server.shutdown()
        server.server_close()


def test_file_urls_only_below_the_file_root(corral, tmp_path):
    corral.add("echo", "echo")
    corral.external.mkdir()
    root = tmp_path / "offered"
    root.mkdir()
    body = echo_tar()
    (root / "local.tar").write_bytes(body)
    (tmp_path / "outside.tar").write_bytes(body)
    os.symlink(tmp_path / "outside.tar", root / "sneaky.tar")
    d = corral.start("--pull-file-root", str(root), external=True)
    r = pull(d, f"file://{root}/local.tar", sha(body))
    assert r.status_code == 200, r.text
    served(d, "local")
    for url in (f"file://{tmp_path}/outside.tar", f"file://{root}/sneaky.tar", f"file://{root}/../outside.tar"):
        r = pull(d, url, sha(body), name="outside")
        assert r.status_code == 403, (url, r.text)
        assert "is not below --pull-file-root" in r.json()["error"]
    assert_clean(corral, {"local"})


def test_a_download_past_the_size_cap(corral, files):
    corral.add("echo", "echo")
    corral.external.mkdir()
    d = corral.start("--pull-allow", "127.0.0.1", "--pull-max-size", "2KiB", external=True)
    body = os.urandom(8192)
    r = pull(d, files.put("/big.tar", body), sha(body), name="big")
    assert r.status_code == 413 and "--pull-max-size" in r.json()["error"]
    # small download, large unpacked: a gzip bomb in miniature
    bomb = tar_bytes([(file_info("model.yaml"), b"x" * 100000)], gz=True)
    assert len(bomb) < 2048
    r = pull(d, files.put("/bomb.tar.gz", bomb), sha(bomb), name="bomb")
    assert r.status_code == 413 and "unpacked" in r.json()["error"]
    assert_clean(corral)


# ---------------------------------------------------------------- hostile archives


HOSTILE = {
    "dotdot": ([(file_info("../evil"), b"x")], "has a '..' component"),
    "inner-dotdot": ([(file_info("a/../../evil"), b"x")], "has a '..' component"),
    "absolute": ([(file_info("/tmp/corral-pull-evil"), b"x")], "has an absolute path"),
    "symlink-out": ([(special("link", tarfile.SYMTYPE, "../../outside"), None)], "points outside"),
    "symlink-abs": ([(special("etc", tarfile.SYMTYPE, "/etc"), None), (file_info("etc/evil"), b"x")],
                    "points to an absolute path"),
    "hardlink-out": ([(special("hard", tarfile.LNKTYPE, "../outside"), None)], "has a '..' component"),
    "hardlink-abs": ([(special("hard", tarfile.LNKTYPE, "/etc/passwd"), None)], "has an absolute path"),
    "chardev": ([(special("null", tarfile.CHRTYPE), None)], "device, fifo or socket"),
    "blockdev": ([(special("disk", tarfile.BLKTYPE), None)], "device, fifo or socket"),
    "fifo": ([(special("pipe", tarfile.FIFOTYPE), None)], "device, fifo or socket"),
    "duplicate": ([(file_info("worker.py"), b"raise SystemExit(1)\n")], "comes twice"),
    "file-over-dir": ([(file_info("sub/x"), b"x"), (file_info("sub"), b"x")], "comes twice"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_tar_archives_are_refused(corral, files, daemon, tmp_path, case):
    members, why = HOSTILE[case]
    members = [(file_info("model.yaml"), ECHO_FILES["model.yaml"]), (file_info("worker.py"), ECHO_FILES["worker.py"]),
               *members]
    body = tar_bytes(members, gz=case == "dotdot")
    r = pull(daemon, files.put(f"/{case}.tar", body), sha(body), name="hostile")
    assert r.status_code == 422, r.text
    assert "hostile archive refused" in r.json()["error"] and why in r.json()["error"], r.text
    assert_clean(corral)
    assert not (tmp_path / "evil").exists() and not os.path.exists("/tmp/corral-pull-evil")


def test_hostile_zip_archives_are_refused(corral, files, daemon):
    for name, entries, why in (
            ("zip-dotdot", [("model.yaml", ECHO_FILES["model.yaml"], None), ("../evil", b"x", None)], "'..'"),
            ("zip-abs", [("/tmp/corral-pull-evil", b"x", None)], "absolute path"),
            ("zip-symlink", [("model.yaml", ECHO_FILES["model.yaml"], None),
                             ("link", b"../../../etc", 0o120777)], "points outside")):
        body = zip_with(entries)
        r = pull(daemon, files.put(f"/{name}.zip", body), sha(body), name="hostile")
        assert r.status_code == 422, r.text
        assert why in r.json()["error"], r.text
    assert_clean(corral)


def test_a_link_that_resolves_outside_through_another_link_is_refused(corral, files, daemon):
    # each link alone stays inside, read lexically; together they leave the tree (s is the root, s/.. above it)
    body = tar_bytes([(file_info("model.yaml"), ECHO_FILES["model.yaml"]),
                      (file_info("worker.py"), ECHO_FILES["worker.py"]),
                      (special("d/e/s", tarfile.SYMTYPE, "../.."), None),
                      (special("t", tarfile.SYMTYPE, "d/e/s/../escaped"), None)])
    r = pull(daemon, files.put("/chain.tar", body), sha(body), name="chain")
    assert r.status_code == 422, r.text
    assert "symbolic link" in r.json()["error"]
    assert_clean(corral)


def test_nothing_is_written_outside_through_a_link_chain(corral, files, daemon, tmp_path):
    # t leads, through d/e/s, three levels above the tree: tmp_path itself, where the victim is
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"intact")
    chain = [(file_info("model.yaml"), ECHO_FILES["model.yaml"]), (file_info("worker.py"), ECHO_FILES["worker.py"]),
             (special("d/e/s", tarfile.SYMTYPE, "../.."), None), (special("t", tarfile.SYMTYPE, "d/e/s/../../.."), None)]
    through_dir = [(file_info("t/victim.txt"), b"pwned")]
    hard = special("h", tarfile.LNKTYPE, "t/victim.txt")
    hard_with_data = special("h", tarfile.LNKTYPE, "t/victim.txt")
    for i, (extra, why) in enumerate(((through_dir, "would be written outside the model directory"),
                                      ([(hard, None)], "does not name a file unpacked before it"),
                                      ([(hard_with_data, b"pwned")], "does not name a file unpacked before it"),
                                      ([(special("h", tarfile.LNKTYPE, "worker.py"), None),
                                        (special("h2", tarfile.LNKTYPE, "model.yaml"), None)], None))):
        body = tar_bytes(chain + extra)
        r = pull(daemon, files.put(f"/chain{i}.tar", body), sha(body), name="chained")
        assert r.status_code == 422, r.text
        # the last is harmless hard links: refused all the same, by the link chain found after unpacking
        assert (why or "does not resolve inside") in r.json()["error"], r.text
        assert victim.read_bytes() == b"intact"
    body = tar_bytes([(file_info("model.yaml"), ECHO_FILES["model.yaml"]), (file_info("worker.py"), ECHO_FILES["worker.py"]),
                      (special("copy.py", tarfile.LNKTYPE, "worker.py"), None)])
    r = pull(daemon, files.put("/hardlinked.tar", body), sha(body), name="hardlinked")
    assert r.status_code == 200, r.text
    assert (corral.external / "hardlinked" / "copy.py").read_bytes() == ECHO_FILES["worker.py"]
    with_data = special("copy.py", tarfile.LNKTYPE, "worker.py")
    body = tar_bytes([(file_info("model.yaml"), ECHO_FILES["model.yaml"]), (file_info("worker.py"), ECHO_FILES["worker.py"]),
                      (with_data, b"overwritten")], fmt=tarfile.PAX_FORMAT)  # pax: a hard link may carry data
    r = pull(daemon, files.put("/hardlink-data.tar", body), sha(body), name="hdata")
    # libarchive 3.6 reads no data after a hard link's header (a damaged archive to it); were it to, corral
    # refuses the entry before it is written, since the data would go into the file it links to
    assert r.status_code == 422, r.text
    assert "carries data" in r.json()["error"] or "Damaged tar archive" in r.json()["error"], r.text
    assert_clean(corral, {"hardlinked"})


def test_an_archive_without_model_yaml_is_refused(corral, files, daemon):
    body = tar_bytes([(file_info("a/worker.py"), ECHO_FILES["worker.py"]), (file_info("b/x"), b"x")])
    r = pull(daemon, files.put("/empty.tar", body), sha(body))
    assert r.status_code == 422
    assert "holds no model.yaml" in r.json()["error"]
    assert_clean(corral)


def test_an_invalid_manifest_is_refused(corral, files, daemon):
    body = tar_bytes([(file_info("model.yaml"), b"runtime: cobol\nentrypoint: x\n")])
    r = pull(daemon, files.put("/broken.tar", body), sha(body))
    assert r.status_code == 422
    assert "model.yaml is invalid" in r.json()["error"] and "runtime" in r.json()["error"]
    assert_clean(corral)


def test_names_that_exist_or_are_invalid_are_refused(corral, files, daemon):
    body = echo_tar()
    url = files.put("/again.tar", body)
    r = pull(daemon, url, sha(body), name="echo")
    assert r.status_code == 409 and "exists already" in r.json()["error"]
    assert pull(daemon, url, sha(body)).status_code == 200
    r = pull(daemon, url, sha(body))
    assert r.status_code == 409 and "exists already" in r.json()["error"]
    for bad in ("../x", "a/b", ".hidden", ""):
        r = pull(daemon, url, sha(body), name=bad)
        assert r.status_code == 400, (bad, r.text)
    named = tar_bytes([(file_info("model.yaml"), b"name: other\n" + ECHO_FILES["model.yaml"]),
                       (file_info("worker.py"), ECHO_FILES["worker.py"])])
    r = pull(daemon, files.put("/named.tar", named), sha(named))
    assert r.status_code == 409 and "names the model 'other'" in r.json()["error"]
    assert_clean(corral, {"again"})


def test_bad_requests(corral, files, daemon):
    for body, why in (({"url": "http://127.0.0.1/x.tar"}, "'sha256' is required"),
                      ({"sha256": "0" * 64}, "'url' is required"),
                      ({"url": "http://127.0.0.1/x.tar", "sha256": "xyz"}, "64 hex digits"),
                      ({"url": "http://127.0.0.1/x.tar", "sha256": "0" * 64, "extra": 1}, "unknown key 'extra'"),
                      ({"url": 5, "sha256": "0" * 64}, "must be a string")):
        r = daemon.post("/v1/models/pull", body)
        assert r.status_code == 400 and why in r.json()["error"], r.text
    assert daemon.get("/v1/models/pull").status_code == 405
    assert_clean(corral)


def test_pulling_needs_external_models(corral, files):
    corral.add("echo", "echo")
    d = corral.start("--pull-allow", "127.0.0.1")
    r = pull(d, files.put("/x.tar", b"x"), sha(b"x"))
    assert r.status_code == 409 and "--external-models" in r.json()["error"]


def test_a_pull_running_at_shutdown_is_cancelled_and_answered(corral, files, daemon):
    body = os.urandom(64 << 20)  # 100 s at the slow pace: the stop comes long before
    url = files.put("/slow.bin", body)
    files.slow.add("/slow.bin")
    answer = {}
    t = threading.Thread(target=lambda: answer.update(r=pull(daemon, url, sha(body), name="slow")))
    t.start()

    def downloading():
        tmp = [n for n in os.listdir(corral.external) if n.startswith(".pull-slow-")]
        return tmp and (corral.external / tmp[0] / "download").exists() and \
            (corral.external / tmp[0] / "download").stat().st_size > 0
    wait_for(downloading, timeout=10, what="the download to begin")
    assert daemon.stop(signal.SIGTERM, timeout=15) == 0
    t.join(timeout=15)
    assert answer["r"].status_code == 503 and "cancelled" in answer["r"].json()["error"]
    assert os.listdir(corral.external) == []


def test_leftovers_of_an_interrupted_pull_are_removed_at_start(corral):
    corral.add("echo", "echo")
    corral.external.mkdir()
    (corral.external / ".pull-x-abc123" / "tree").mkdir(parents=True)
    (corral.external / ".pull-x-abc123" / "download").write_bytes(b"partial")
    d = corral.start(external=True)
    assert "left by an interrupted pull" in d.log()
    assert os.listdir(corral.external) == []


# ---------------------------------------------------------------- events and the CLI


def test_progress_events(corral, files, daemon):
    body = echo_tar() + b"\0" * (4 << 20)  # tar ignores what follows its end
    r = pull(daemon, files.put("/evented.tar", body), sha(body))
    assert r.status_code == 200, r.text
    bad = pull(daemon, files.put("/failing.tar", body), sha(b""))
    assert bad.status_code == 422
    events = []
    with daemon.http.get(daemon.url("/v1/events"), headers={"Last-Event-ID": "0"}, stream=True, timeout=10) as s:
        kind = None
        for line in s.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind == "pull":
                events.append(json.loads(line[6:]))
                if events[-1]["state"] == "failed":
                    break
    ok = [e for e in events if e["model"] == "evented"]
    states = [e["state"] for e in ok]
    assert states[0] == "started" and states[-3:] == ["verified", "unpacked", "done"], states
    assert ok[-1]["bytes"] == len(body) and ok[-1]["total"] == len(body)
    failed = [e for e in events if e["model"] == "failing"]
    assert failed[-1]["state"] == "failed" and "sha256 mismatch" in failed[-1]["error"]
    assert all(e["bytes"] <= len(body) for e in events)


def test_the_cli_pulls_and_fails_with_exit_codes(corral, files, daemon):
    body = echo_tar(gz=True)
    url = files.put("/cli.tar.gz", body)
    env = dict(os.environ, CORRAL_URL=daemon.base)
    ok = subprocess.run([BIN, "pull", url, "--sha256", sha(body)], env=env, capture_output=True, text=True,
                        timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "pulled model cli" in ok.stdout
    assert "pull cli: started" in ok.stderr and "pull cli: done" in ok.stderr  # plain lines: not a terminal
    served(daemon, "cli")
    bad = subprocess.run([BIN, "pull", url, "--sha256", sha(b"x"), "--name", "cli2"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1].startswith("corral: HTTP 422: pull of model 'cli2': sha256 mismatch")
    usage = subprocess.run([BIN, "pull", url], env=env, capture_output=True, text=True, timeout=10)
    assert usage.returncode == 2 and "--sha256 is required" in usage.stderr
    assert_clean(corral, {"cli"})


def test_pulling_is_management_and_needs_the_token(corral, files, tmp_path):
    corral.add("echo", "echo")
    corral.external.mkdir()
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    d = corral.start("--pull-allow", "127.0.0.1", "--auth-token-file", str(token), "--auth", "management",
                     external=True)
    body = echo_tar()
    url = files.put("/guarded.tar", body)
    r = pull(d, url, sha(body))
    assert r.status_code == 401
    assert_clean(corral)
    env = dict(os.environ, CORRAL_URL=d.base, CORRAL_TOKEN="s3cret")
    ok = subprocess.run([BIN, "pull", url, "--sha256", sha(body)], env=env, capture_output=True, text=True,
                        timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "pull guarded: done" in ok.stderr  # the event stream, a /v1 route, was read with the token too
    assert_clean(corral, {"guarded"})


def test_help_names_the_verb_and_the_flags():
    out = subprocess.run([BIN, "--help"], capture_output=True, text=True, timeout=10).stdout
    for text in ("pull URL --sha256 HEX [--name NAME] [--json]", "pull NAME", "--pull-allow HOST",
                 "--pull-file-root DIR", "--pull-max-size SIZE"):
        assert text in out, text


# ---------------------------------------------------------------- a model declared with source


def declared_manifest(url: str, digest: str) -> str:
    return ECHO_FILES["model.yaml"].decode() + f"source:\n  url: {url}\n  sha256: '{digest}'\n"


def test_a_declared_model_pulls_its_files_into_external_models(corral, files):
    weights = tar_bytes([(file_info("weights/a.bin"), b"a" * 1000), (file_info("vocab.txt"), b"hello\n")], gz=True)
    blob = b"\x00\x01" * 500
    corral.add("declared", "echo", manifest=declared_manifest(files.put("/w.tar.gz", weights), sha(weights)))
    corral.add("single", "echo", manifest=declared_manifest(files.put("/blob.bin", blob), sha(blob)))
    corral.add("plain", "echo")
    corral.external.mkdir()
    d = corral.start("--pull-allow", "127.0.0.1", external=True)
    env = dict(os.environ, CORRAL_URL=d.base)
    ok = subprocess.run([BIN, "pull", "declared"], env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert (corral.external / "declared" / "weights" / "a.bin").read_bytes() == b"a" * 1000
    assert (corral.external / "declared" / "vocab.txt").read_bytes() == b"hello\n"
    assert not os.path.islink(corral.repo / "declared")  # the baked-in manifest still wins
    r = d.post("/v1/models/pull", {"name": "single"})
    assert r.status_code == 200, r.text
    assert (corral.external / "single" / "blob.bin").read_bytes() == blob
    served(d, "declared")

    r = d.post("/v1/models/pull", {"name": "declared"})
    assert r.status_code == 409 and "on disk" in r.json()["error"]
    r = d.post("/v1/models/pull", {"name": "plain"})
    assert r.status_code == 409 and "declares no source" in r.json()["error"]
    r = d.post("/v1/models/pull", {"name": "nosuch"})
    assert r.status_code == 404
    bad = subprocess.run([BIN, "pull", "plain"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "declares no source" in bad.stderr
    assert set(os.listdir(corral.external)) == {"declared", "single"}


def test_with_pull_on_load_a_first_request_pulls_the_declared_source_then_serves(corral, files):
    """--pull-on-load: the first load of a model whose source's files are absent pulls them, its requests
    waiting in its queue meanwhile; without the flag, a load never fetches anything."""
    weights = tar_bytes([(file_info("vocab.txt"), b"hello\n")], gz=True)
    files.put("/v.tar.gz", weights)
    files.slow.add("/v.tar.gz")  # a pull that takes a moment: the request waits for it
    weights_url = f"http://127.0.0.1:{files.port}/v.tar.gz"
    corral.add("lazy", "echo", manifest=declared_manifest(weights_url, sha(weights)))
    bad = b"not what the digest says"
    corral.add("wrong", "echo", manifest=declared_manifest(files.put("/bad.bin", bad), sha(b"other")))
    corral.external.mkdir()
    d = corral.start("--pull-allow", "127.0.0.1", "--pull-on-load", external=True)
    served(d, "lazy")  # the request waited for the pull, then the instance
    assert (corral.external / "lazy" / "vocab.txt").read_bytes() == b"hello\n"
    assert "pulling them from" in d.log() and "its source is in place" in d.log()
    r = d.infer("wrong", INPUT)
    assert r.status_code == 503 and "pulling its source" in r.json()["error"] and "sha256" in r.json()["error"], r.text
    assert d.model("wrong")["state"] == "failed"
    assert set(os.listdir(corral.external)) == {"lazy"}  # nothing left of the failed pull
    # an explicit load waits for the pull as well
    shutil.rmtree(corral.external / "lazy")
    r = d.post("/v2/repository/models/lazy/unload", {})
    assert r.status_code == 200, r.text
    loads = [d.post("/v2/repository/models/lazy/load", {}) for _ in range(2)]
    assert all(x.status_code == 200 for x in loads), [x.text for x in loads]
    served(d, "lazy")

    d2 = corral.start("--pull-allow", "127.0.0.1", external=True)  # no flag: nothing is fetched at load
    shutil.rmtree(corral.external / "lazy")
    r = d2.post("/v2/repository/models/lazy/load", {})
    assert r.status_code == 200, r.text
    assert not (corral.external / "lazy").exists()


def test_a_declared_source_is_checked_like_any_url(corral, files):
    evil = tar_bytes([(file_info("../evil"), b"x")])
    corral.add("evil", "echo", manifest=declared_manifest(files.put("/evil.tar", evil), sha(evil)))
    corral.add("far", "echo", manifest=declared_manifest("http://169.254.169.254/latest", "0" * 64))
    corral.add("broken", "echo", manifest=ECHO_FILES["model.yaml"].decode() + "source:\n  url: ftp://x\n  sha256: 12\n")
    corral.external.mkdir()
    d = corral.start("--pull-allow", "127.0.0.1", external=True)
    r = d.post("/v1/models/pull", {"name": "evil"})
    assert r.status_code == 422 and "'..'" in r.json()["error"]
    r = d.post("/v1/models/pull", {"name": "far"})
    assert r.status_code == 403 and "not allowed" in r.json()["error"]
    m = d.get("/v1/models/broken").json()
    assert "source.url" in json.dumps(m)
    r = d.post("/v1/models/pull", {"name": "broken"})
    assert r.status_code == 409 and "model.yaml is broken" in r.json()["error"]
    assert os.listdir(corral.external) == []


# ---------------------------------------------------------------- with a state file


def test_a_pull_is_recorded_in_the_state_file_and_its_absence_reported_at_start(corral, files, tmp_path):
    """With --state, a pulled model's URL and digest are kept; a restart that finds the model gone says how to
    pull it again."""
    state = tmp_path / "state.db"
    corral.add("echo", "echo")
    corral.external.mkdir()
    d = corral.start("--pull-allow", "127.0.0.1", "--state", str(state), external=True)
    body = echo_tar()
    url = files.put("/kept.tar", body)
    r = pull(d, url, sha(body))
    assert r.status_code == 200, r.text
    d.stop(signal.SIGTERM, timeout=20)
    shutil.rmtree(corral.external / "kept")
    os.unlink(corral.repo / "kept")
    d = corral.start("--pull-allow", "127.0.0.1", "--state", str(state), external=True)
    wait_for(lambda: "was pulled from" in d.log(), timeout=15, what="the restore's warning")
    line = next(l for l in d.log().splitlines() if "was pulled from" in l)
    assert f"`corral pull {url} --sha256 {sha(body)} --name kept`" in line, line
