"""The container image (Dockerfile, scripts/docker-entrypoint.sh, .dockerignore)
without a container engine, which these machines do not have: the image is
never built here.

The entrypoint runs with APP_ROOT pointing at a temporary directory laid out
like the image's /app (the example models copied in, an external model
"mounted", a samples file), on PORT=0 and GRPC_PORT=0; the Dockerfile and
.dockerignore are checked item by item against the model-management
standard's checklist (SPEC section 6), the runtime packages against the
libraries the built binaries link, and the build context (.dockerignore
applied to this tree) is configured with CMake as the build stage would.
Debian 12 has no Dockerfile linter (hadolint is not packaged; `apt-cache
search dockerfile` finds only an Emacs mode and image builders), so these
checks stand in for one.

Fixtures: examples/models/*, tests/models/api_probe, tests/models/reads_samples.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import time

import pytest
import requests

from conftest import BIN, EXAMPLES, FIXTURES, ROOT, processes_under, wait_for

ENTRYPOINT = ROOT / "scripts" / "docker-entrypoint.sh"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


# ---------------------------------------------------------------- the entrypoint on an /app stand-in


@pytest.fixture
def app(tmp_path) -> pathlib.Path:
    """A directory laid out like the image's /app."""
    root = tmp_path / "app"
    shutil.copytree(EXAMPLES, root / "models", symlinks=True)
    shutil.copytree(FIXTURES / "reads_samples", root / "models" / "reader")
    shutil.copytree(FIXTURES / "api_probe", root / "external_models" / "mounted")  # a volume's model
    (root / "samples").mkdir()
    (root / "samples" / "speaker.txt").write_text("a speaker sample")
    return root


class Entrypoint:
    """scripts/docker-entrypoint.sh as the container runs it, with `corral` on PATH."""

    def __init__(self, app: pathlib.Path, args=(), **env: str):
        self.app = app
        self.log_path = app.parent / f"entrypoint-{int(time.monotonic() * 1000)}.log"
        full_env = {**os.environ, "APP_ROOT": str(app), "PORT": "0", "GRPC_PORT": "0",
                    "PATH": f"{pathlib.Path(BIN).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}", **env}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(["/bin/sh", str(ENTRYPOINT), *args], stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=full_env)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ports(self) -> list[int]:
        """The TCP ports the process listens on (from /proc: whatever the log level lets it say)."""
        inodes = set()
        for fd in os.listdir(f"/proc/{self.proc.pid}/fd"):
            try:
                target = os.readlink(f"/proc/{self.proc.pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        found = []
        for table in ("tcp", "tcp6"):
            with open(f"/proc/{self.proc.pid}/net/{table}") as f:
                for line in f.readlines()[1:]:
                    cols = line.split()
                    if cols[3] == "0A" and cols[9] in inodes:  # LISTEN
                        found.append(int(cols[1].rsplit(":", 1)[1], 16))
        return sorted(found)

    def wait_serving(self) -> str:
        """Waits for both listeners; returns the HTTP base URL (the port that answers /v2/health/ready)."""
        def listening():
            if self.proc.poll() is not None:
                raise AssertionError(f"the entrypoint exited with {self.proc.returncode}:\n{self.log()}")
            ports = self.ports()
            return ports if len(ports) == 2 else None
        for port in wait_for(listening, timeout=15, what="corral to listen on HTTP and gRPC"):
            try:
                if requests.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=5).status_code == 200:
                    return f"http://127.0.0.1:{port}"
            except requests.ConnectionError:
                continue  # the gRPC port speaks HTTP/2 only
        raise AssertionError(f"no port answered /v2/health/ready:\n{self.log()}")

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                raise AssertionError(f"corral did not stop within {timeout}s of SIGTERM:\n{self.log()}")
        return self.proc.returncode


@pytest.fixture
def entrypoint(app):
    started: list[Entrypoint] = []

    def start(args=(), **env) -> Entrypoint:
        e = Entrypoint(app, args, **env)
        started.append(e)
        return e
    yield start
    for e in started:
        try:
            e.stop()
        except AssertionError:
            pass
    deadline = time.monotonic() + 5
    while (left := processes_under(app.parent)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes outlived corral: {left}"


def healthcheck_command() -> list[str]:
    m = re.search(r"^HEALTHCHECK\b.*?\bCMD (\[.*\])$", dockerfile_text(), re.M)
    assert m, "no HEALTHCHECK ... CMD [...] in the Dockerfile"
    return json.loads(m.group(1))


def test_entrypoint_serves_the_app_layout_and_stops_on_sigterm(app, entrypoint):
    e = entrypoint()
    base = e.wait_serving()
    assert re.search(r"listening on http://0\.0\.0\.0:\d+", e.log())  # every interface, as a container must
    http = requests.Session()
    index = {m["name"] for m in http.post(base + "/v2/repository/index", json={}, timeout=30).json()}
    assert {"echo", "echo-c", "tokens", "tts-espeak", "tts-fr", "reader", "mounted"} <= index
    link = app / "models" / "mounted"
    assert link.is_symlink() and link.resolve() == (app / "external_models" / "mounted").resolve()
    r = http.post(base + "/v2/repository/models/reader/load", json={}, timeout=60)
    assert r.status_code == 200, r.text
    got = http.post(base + "/v1/models/reader/generate", json={}, timeout=30).json()
    assert got == {"samples_dir": str((app / "samples").resolve()),
                   "external_models_dir": str((app / "external_models").resolve()), "sample": "a speaker sample"}
    r = http.post(base + "/v2/repository/models/echo/load", json={}, timeout=60)
    assert r.status_code == 200, r.text
    r = http.post(base + "/v2/models/echo/infer", timeout=30,
                  json={"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1], "data": [7]}]})
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [7], r.text
    # The image's HEALTHCHECK, run as Docker runs it inside the container.
    port = base.rsplit(":", 1)[1]
    hc = subprocess.run(healthcheck_command(), env={**os.environ, "PORT": port}, capture_output=True, timeout=10)
    assert hc.returncode == 0, hc
    http.close()
    assert e.stop() == 0, e.log()
    assert "stopped" in e.log()
    assert processes_under(app) == []


def test_state_lives_on_the_external_models_volume_and_survives_a_restart(app, entrypoint):
    """The image keeps its state file on the volume (a hidden file the scan skips), so a container started
    again on the same volume loads what was loaded, at its scale."""
    e = entrypoint(CORRAL_STATE="")  # unset, as in the image
    base = e.wait_serving()
    r = requests.post(base + "/v2/repository/models/echo/load", json={"parameters": {"instances": 2}}, timeout=60)
    assert r.status_code == 200, r.text
    assert e.stop() == 0
    state = app / "external_models" / ".corral-state.db"
    assert state.is_file() and not (app / "models" / ".corral-state.db").exists()
    e = entrypoint(CORRAL_STATE="")
    base = e.wait_serving()
    def restored():
        m = requests.get(base + "/v1/models/echo", timeout=10).json()
        return m if m["state"] == "ready" and len(m["instances"]) == 2 else None
    wait_for(restored, timeout=30, what="echo restored at 2 instances")


def test_healthcheck_fails_when_nothing_serves(app, entrypoint):
    e = entrypoint()
    port = e.wait_serving().rsplit(":", 1)[1]
    assert e.stop() == 0
    hc = subprocess.run(healthcheck_command(), env={**os.environ, "PORT": port}, capture_output=True, timeout=10)
    assert hc.returncode != 0


@pytest.mark.parametrize("level, present, absent", [
    ("debug", " corral debug: ", None),
    ("WARNING", " corral warn: ", " corral info: "),
])
def test_entrypoint_honours_log_level(app, entrypoint, level, present, absent):
    e = entrypoint(LOG_LEVEL=level)
    e.wait_serving()
    assert e.stop() == 0
    log = e.log()
    assert present in log, log
    if absent:
        assert absent not in log, log


def test_entrypoint_passes_options_through_and_runs_other_commands(app, entrypoint):
    e = entrypoint(["--grpc-port", "off", "--log-level", "info"])
    wait_for(lambda: "listening on http://" in e.log() or e.proc.poll() is not None, timeout=15,
             what="corral to listen")
    assert len(e.ports()) == 1 and "grpc://" not in e.log(), e.log()
    assert e.stop() == 0
    r = subprocess.run(["/bin/sh", str(ENTRYPOINT), "sh", "-c", 'echo "root=$APP_ROOT"'], capture_output=True,
                       text=True, timeout=10, env={**os.environ, "APP_ROOT": str(app)})
    assert (r.returncode, r.stdout) == (0, f"root={app}\n"), r


def test_entrypoint_is_posix_sh():
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")
    assert os.access(ENTRYPOINT, os.X_OK)
    if shutil.which("dash"):  # Debian's /bin/sh: no bashisms get past it
        assert subprocess.run(["dash", "-n", str(ENTRYPOINT)], timeout=10).returncode == 0
    if shutil.which("shellcheck"):
        r = subprocess.run(["shellcheck", "-s", "sh", str(ENTRYPOINT)], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stdout


# ---------------------------------------------------------------- the Dockerfile against the checklist


def dockerfile_text() -> str:
    """The Dockerfile with continuation lines joined and comments dropped: one instruction a line."""
    lines = [ln for ln in DOCKERFILE.read_text().splitlines() if not ln.lstrip().startswith("#")]
    return re.sub(r"\\\n\s*", " ", "\n".join(lines))


def stages() -> list[list[str]]:
    """Instructions, grouped by stage (each list starts with its FROM)."""
    out: list[list[str]] = []
    for line in dockerfile_text().splitlines():
        if not line.strip():
            continue
        if line.startswith("FROM "):
            out.append([])
        assert out, f"an instruction before the first FROM: {line}"
        out[-1].append(line.strip())
    return out


def apt_packages(stage: list[str]) -> set[str]:
    pkgs = set()
    for ins in stage:
        for m in re.finditer(r"apt-get install ([^&]*)", ins):
            pkgs |= {w for w in m.group(1).split() if not w.startswith("-")}
    return pkgs


def instructions(stage: list[str], keyword: str) -> list[str]:
    return [ins[len(keyword) + 1:] for ins in stage if ins.startswith(keyword + " ")]


def test_dockerfile_is_two_debian_12_stages():
    build, runtime = stages()
    assert re.fullmatch(r"FROM debian:bookworm-slim AS build", build[0])
    assert runtime[0] == "FROM debian:bookworm-slim"
    build_pkgs, runtime_pkgs = apt_packages(build), apt_packages(runtime)
    assert {"cmake", "build-essential", "pkg-config"} <= build_pkgs
    assert any("cmake --build" in r for r in instructions(build, "RUN"))
    assert any("-DCORRAL_TESTS=OFF" in r for r in instructions(build, "RUN"))
    # Only runtime packages in the image: no compiler, no headers.
    assert not {p for p in runtime_pkgs if p.endswith("-dev") or p in ("build-essential", "cmake", "gcc")}
    assert all("rm -rf /var/lib/apt/lists/*" in r for r in instructions(runtime, "RUN") if "apt-get" in r)
    copies = instructions(runtime, "COPY")
    assert "--from=build /src/build/corral /usr/local/bin/corral" in copies
    assert "--from=build /src/build/corral-shim /usr/local/bin/corral-shim" in copies  # beside corral: see inst.c
    assert "--from=build /src/sdk/python /app/sdk/python" in copies
    assert "--from=build /src/examples/models /app/models" in copies  # the examples, built, baked in
    assert "CORRAL_PYTHON_SDK=/app/sdk/python" in " ".join(instructions(runtime, "ENV"))


def needed_packages(binary: pathlib.Path) -> set[str]:
    """The Debian packages that hold the shared libraries binary names (readelf NEEDED)."""
    dyn = subprocess.run(["readelf", "-d", str(binary)], capture_output=True, text=True, timeout=30, check=True)
    cache = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=30, check=True).stdout
    pkgs = set()
    for lib in re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dyn.stdout):
        m = re.search(rf"^\s*{re.escape(lib)} \(.*x86-64.*\) => (\S+)$", cache, re.M) or \
            re.search(rf"^\s*{re.escape(lib)} .*=> (\S+)$", cache, re.M)
        assert m, f"{binary.name}: {lib} is not in the linker cache"
        path = m.group(1)
        owner = None
        # Debian 12 merges /lib into /usr/lib: dpkg knows a library by whichever path its package ships.
        for candidate in (path, os.path.realpath(path), path.replace("/usr/lib/", "/lib/", 1),
                          os.path.realpath(path).replace("/usr/lib/", "/lib/", 1)):
            r = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True, timeout=30)
            if r.returncode == 0:
                owner = r.stdout.split(":", 1)[0]
                break
        assert owner, f"{binary.name}: no Debian package holds {path}"
        pkgs.add(owner)
    return pkgs


@pytest.mark.skipif(not shutil.which("dpkg") or not shutil.which("readelf"), reason="needs dpkg and readelf")
def test_runtime_stage_has_every_library_the_binaries_link():
    runtime_pkgs = apt_packages(stages()[1])
    # The plain build's binary, as the image's build stage makes it (CORRAL_BIN may be the sanitizer build's).
    binaries = [ROOT / "build" / "corral", EXAMPLES / "echo-c" / "echo-c", EXAMPLES / "tts-espeak" / "tts-espeak"]
    for binary in binaries:
        if not binary.exists():
            pytest.skip(f"{binary} is not built")
        missing = needed_packages(binary) - runtime_pkgs - {"libc6", "libgcc-s1"}  # Essential in every image
        assert not missing, f"{binary.name} links libraries of {sorted(missing)}, not installed in the image"
    # The Python examples need an interpreter; tts-espeak needs its voices (data, not a linked library).
    assert {"python3", "espeak-ng-data"} <= runtime_pkgs


def test_dockerfile_directories_user_health_ports_entrypoint():
    runtime = stages()[1]
    runs = " ".join(instructions(runtime, "RUN"))
    assert re.search(r"mkdir -p /app/external_models /app/samples", runs)
    volumes = json.loads(instructions(runtime, "VOLUME")[0])
    assert volumes == ["/app/external_models", "/app/samples"]
    # A non-root user that owns what the daemon writes: links in models/, downloads in external_models/.
    user = instructions(runtime, "USER")
    assert user == ["corral"]
    assert re.search(r"useradd --system [^&]*--shell /usr/sbin/nologin corral\b", runs)
    assert "chown corral:corral /app/models /app/external_models" in runs
    assert runtime.index("USER corral") > max(i for i, ins in enumerate(runtime) if ins.startswith(("RUN", "COPY")))
    health = [ins for ins in runtime if ins.startswith("HEALTHCHECK ")]
    assert len(health) == 1 and "/v2/health/ready" in health[0]
    assert healthcheck_command()[0] == "python3"  # the image has python3 and no curl
    assert instructions(runtime, "EXPOSE") == ["8766 8767"]
    env = " ".join(instructions(runtime, "ENV"))
    assert re.search(r"\bPORT=8766\b", env) and re.search(r"\bGRPC_PORT=8767\b", env)
    assert re.search(r"\bLOG_LEVEL=INFO\b", env)
    assert instructions(runtime, "ENTRYPOINT") == ['["/usr/local/bin/docker-entrypoint.sh"]']
    assert "scripts/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh" in instructions(runtime, "COPY")
    text = ENTRYPOINT.read_text()
    assert 'exec corral serve' in text
    for flag in ('--models "$APP_ROOT/models"', '--external-models "$APP_ROOT/external_models"',
                 '--samples "$APP_ROOT/samples"', "--host 0.0.0.0", '--port "${PORT:-8766}"'):
        assert flag in text, flag


# ---------------------------------------------------------------- .dockerignore


def dockerignore_rules() -> list[tuple[bool, re.Pattern]]:
    """(excludes, pattern) per line, as Docker reads them: the last rule that matches a path decides."""
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pat = line[1:] if negate else line
        pat = pat.strip("/")
        rx = ""
        i = 0
        while i < len(pat):
            if pat.startswith("**/", i):
                rx += "(?:.*/)?"
                i += 3
            elif pat.startswith("**", i):
                rx += ".*"
                i += 2
            elif pat[i] == "*":
                rx += "[^/]*"
                i += 1
            elif pat[i] == "?":
                rx += "[^/]"
                i += 1
            else:
                rx += re.escape(pat[i])
                i += 1
        rules.append((not negate, re.compile(rx + "(?:/.*)?")))  # a directory's rule covers what it holds
    return rules


def in_context(path: str, rules) -> bool:
    included = True
    for excludes, rx in rules:
        if rx.fullmatch(path):
            included = not excludes
    return included


def test_dockerignore_keeps_models_out_but_the_baked_in_ones():
    text = DOCKERIGNORE.read_text().splitlines()
    assert text.index("**/models/") < text.index("!examples/models/")  # the exception comes after the rule
    rules = dockerignore_rules()
    for path in ("examples/models/echo/model.yaml", "examples/models/tts-espeak/tts.c", "src/main.c",
                 "sdk/python/corral/__init__.py", "web/index.html", "proto/grpc_service.proto", "CMakeLists.txt",
                 "cmake/embed.cmake", "scripts/docker-entrypoint.sh", "docs/openapi.yaml"):
        assert in_context(path, rules), path
    for path in ("models/big/weights.bin", "some/where/models/x/model.yaml", "tests/models/api_probe/worker.py",
                 "docs/api.md",
                 "external_models/voices/a.bin", "samples/a.wav", "build/corral", "build-asan/corral",
                 ".git/HEAD", "examples/models/echo-c/echo-c", "sdk/python/corral/__pycache__/x.pyc"):
        assert not in_context(path, rules), path


@pytest.mark.skipif(not shutil.which("cmake"), reason="needs cmake")
def test_build_context_configures_as_the_build_stage_does(tmp_path):
    """What `COPY . .` brings into the build stage is enough for its cmake (configure; the build is the
    plain one's, which `make build` runs)."""
    rules = dockerignore_rules()
    # Docker still looks inside an excluded directory for a file a later "!path" brings back (docs/openapi.yaml).
    kept_inside = set()
    for line in DOCKERIGNORE.read_text().splitlines():
        if line.startswith("!") and "*" not in line:
            parts = line[1:].strip("/").split("/")
            kept_inside.update("/".join(parts[:i]) for i in range(1, len(parts)))
    ctx = tmp_path / "ctx"
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel = os.path.relpath(dirpath, ROOT)
        rel = "" if rel == "." else rel + "/"
        dirnames[:] = [d for d in dirnames if in_context(rel + d, rules) or rel + d in kept_inside]
        for name in filenames:
            if in_context(rel + name, rules):
                dest = ctx / rel / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(os.path.join(dirpath, name), dest, follow_symlinks=False)
    assert not (ctx / "tests").exists()
    assert (ctx / "docs" / "openapi.yaml").exists() and not (ctx / "docs" / "api.md").exists()
    r = subprocess.run(["cmake", "-S", str(ctx), "-B", str(ctx / "build"), "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
                        "-DCORRAL_TESTS=OFF"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


# ---------------------------------------------------------------- PORT, as corral itself reads it


def test_port_from_the_environment_is_strict(tmp_path):
    (tmp_path / "models").mkdir()
    for bad in ("http", "80x", "70000", "-1"):
        r = subprocess.run([BIN, "serve", "--models", str(tmp_path / "models")], capture_output=True, text=True,
                           timeout=20, stdin=subprocess.DEVNULL, env={**os.environ, "PORT": bad})
        assert (r.returncode, r.stderr) == (2, f"corral: PORT={bad}: must be a port from 0 to 65535\n"), r
    # --port wins over a PORT that is not a port, as --grpc-port does over GRPC_PORT.
    log = tmp_path / "log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([BIN, "serve", "--models", str(tmp_path / "models"), "--port", "0"], stdout=f,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={**os.environ, "PORT": "http"})
    try:
        wait_for(lambda: "listening on http://127.0.0.1:" in log.read_text() or proc.poll() is not None, timeout=15,
                 what="corral to listen")
        assert proc.poll() is None, log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
