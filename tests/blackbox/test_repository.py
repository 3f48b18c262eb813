"""The model repository: discovery, names, broken manifests, rescans,
manifest changes, external models and entry-point problems.

Fixtures: tests/models/steerable, examples/models/echo, examples/models/echo-c.
"""
from __future__ import annotations

import os
import pathlib
import shutil


from conftest import alive, infer, load, out, tensor, unload, wait_for


def index(d) -> dict:
    r = d.post("/v2/repository/index", {}, timeout=30)
    assert r.status_code == 200, r.text
    return {e["name"]: e for e in r.json()}


def names(d) -> set:
    return {m["name"] for m in d.get("/v1/models").json()["models"]}


def ctl(tag="", extra="") -> str:
    return f"runtime: python\nentrypoint: worker.py\n{extra}parameters:\n  tag: {tag or 'none'}\n"


ECHO_IN = [tensor("INPUT0", "INT32", [2], [4, 5])]


def echo_ok(d, model="echo"):
    r = d.infer(model, ECHO_IN)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [4, 5]


# ---------------------------------------------------------------- discovery and names


def test_discovery_finds_directories_and_links_with_a_manifest(corral, tmp_path):
    corral.add("echo", "echo")
    corral.add("ctl", "steerable")
    corral.add("no_manifest", None, files={"worker.py": "print('not a model')\n"})
    corral.add(".hidden", "echo")
    (corral.repo / "README.md").write_text("models live here\n")
    (corral.repo / "notes.yaml").write_text("runtime: python\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copytree(pathlib.Path(__file__).parents[2] / "examples" / "models" / "echo", elsewhere / "linked_src")
    os.symlink(elsewhere / "linked_src", corral.repo / "linked")
    d = corral.start()
    assert names(d) == {"echo", "ctl", "linked"}
    assert set(index(d)) == {"echo", "ctl", "linked"}
    assert d.get("/v1/models/no_manifest").status_code == 404
    assert d.get("/v1/models/README.md").status_code == 404
    echo_ok(d, "linked")
    assert infer(d, "ctl").status_code == 200


def test_manifest_name_overrides_the_directory_name(corral):
    path = corral.add("some_dir", "steerable", manifest="name: renamed\n" + ctl("renamed"))
    d = corral.start()
    assert names(d) == {"renamed"}
    assert d.get("/v1/models/some_dir").status_code == 404
    assert infer(d, "some_dir").status_code == 404
    m = d.model("renamed")
    assert m["dir"] == str(path.resolve())
    r = infer(d, "renamed")
    assert out(r, "TAG") == "renamed"
    pid = out(r, "PID")
    with open(f"/proc/{pid}/environ", "rb") as f:
        assert b"CORRAL_MODEL=renamed" in f.read().split(b"\0")


def test_invalid_model_names_are_rejected(corral):
    corral.add("echo", "echo")
    corral.add("bad name", "echo")
    corral.add("escape", "echo", manifest="name: ../escape\nruntime: python\nentrypoint: worker.py\n")
    corral.add("dash", "echo", manifest="name: -dash\nruntime: python\nentrypoint: worker.py\n")
    corral.add("toolong", "echo", manifest=f"name: {'a' * 129}\nruntime: python\nentrypoint: worker.py\n")
    d = corral.start()
    idx = index(d)
    # Nothing is served under an invalid name; each problem is reported with the file and the key.
    servable = {n for n, e in idx.items() if e["reason"] in ("", "unloaded")}
    assert servable == {"echo"}
    for dirname, bad in (("escape", "../escape"), ("dash", "-dash"), ("toolong", "a" * 129)):
        entry = next(e for e in idx.values() if f"/{dirname}/model.yaml" in e["reason"])
        assert entry["state"] == "UNAVAILABLE"
        assert "key 'name'" in entry["reason"] and bad in entry["reason"] and "valid model name" in entry["reason"]
        assert entry["name"] != bad
    spaced = next(e for e in idx.values() if "/bad name/model.yaml" in e["reason"])
    assert spaced["state"] == "UNAVAILABLE" and "valid model name" in spaced["reason"]
    assert d.get("/v1/models/bad%20name").status_code == 400
    assert load(d, "bad%20name").status_code == 400
    echo_ok(d)


def test_invalid_names_in_urls_are_400(corral):
    corral.add("echo", "echo")
    d = corral.start()
    for name in ("..%2Fescape", "%2e%2e", "a%2Fb", "a%00b", "-x", ".hidden", "a" * 129):
        r = load(d, name)
        assert r.status_code == 400, f"load {name}: {r.status_code} {r.text}"
        r = d.get(f"/v1/models/{name}")
        assert r.status_code == 400, f"GET /v1/models/{name}: {r.status_code} {r.text}"
    echo_ok(d)


def test_two_directories_claiming_one_name(corral):
    corral.add("alpha", "steerable", manifest=ctl("alpha-dir"))
    corral.add("beta", "steerable", manifest="name: alpha\n" + ctl("beta-dir"))
    d = corral.start()
    # The directory named like the model keeps the name; the other is listed under its own
    # directory name, unavailable, with the clash as its reason.
    r = infer(d, "alpha")
    assert r.status_code == 200, r.text
    assert out(r, "TAG") == "alpha-dir"
    assert d.model("alpha")["dir"].endswith("/models/alpha")
    beta = d.model("beta")
    assert beta["state"] != "ready"
    assert "/beta/model.yaml" in beta["reason"] and "key 'name'" in beta["reason"] and "already used" in beta["reason"]
    idx = index(d)
    assert idx["beta"]["state"] == "UNAVAILABLE" and "already used" in idx["beta"]["reason"]
    assert infer(d, "beta").status_code == 503
    assert "already used" in d.log()


# ---------------------------------------------------------------- broken manifests


BROKEN = {
    # dir: (manifest text, what the error must say besides the file)
    "bad_yaml": ("runtime: [python\nentrypoint: worker.py\n", ["YAML"]),
    "unknown_key": ("runtime: python\nentrypoint: worker.py\ncolour: blue\n", ["key 'colour'", "unknown key"]),
    "wrong_type": ("runtime: python\nentrypoint: worker.py\ninstances: zero\n", ["key 'instances'", "integer"]),
    "no_runtime": ("entrypoint: worker.py\n", ["key 'runtime'", "required"]),
    "no_entrypoint": ("runtime: python\n", ["key 'entrypoint'", "required"]),
    "bad_duration": ("runtime: python\nentrypoint: worker.py\ntimeout: 5 parsecs\n", ["key 'timeout'", "duration"]),
    "bad_restart": ("runtime: python\nentrypoint: worker.py\nrestart:\n  window: soon\n",
                    ["key 'restart.window'", "duration"]),
    "bad_runtime": ("runtime: ruby\nentrypoint: worker.py\n", ["key 'runtime'", "python", "exec"]),
    "outside": ("runtime: python\nentrypoint: ../../worker.py\n", ["key 'entrypoint'", "inside the model directory"]),
}


def test_broken_manifests_make_only_their_model_unavailable(corral):
    corral.add("echo", "echo")
    paths = {name: corral.add(name, "steerable", manifest=text) for name, (text, _) in BROKEN.items()}
    d = corral.start()
    idx = index(d)
    assert set(idx) == set(BROKEN) | {"echo"}
    for name, (_, needles) in BROKEN.items():
        yaml_path = str(paths[name].resolve() / "model.yaml")
        m = d.model(name)
        assert m["state"] != "ready"
        for field in ("reason", "manifest_error"):
            assert yaml_path in m[field], (name, field, m[field])
            for needle in needles:
                assert needle in m[field], (name, field, m[field])
        e = idx[name]
        assert e["state"] == "UNAVAILABLE"
        assert yaml_path in e["reason"] and all(n in e["reason"] for n in needles), e
        # Requests and loads say why, and nothing is started.
        r = infer(d, name, timeout=10)
        assert r.status_code == 503, r.text
        assert needles[0] in r.json()["error"]
        r = load(d, name, timeout=10)
        assert r.status_code == 503, r.text
        assert yaml_path in r.json()["error"]
        assert d.model(name)["instances"] == []
        assert f"model {name}: unavailable: {yaml_path}" in d.log()
    echo_ok(d)
    assert d.get("/v2/health/ready").status_code == 200


def test_a_fixed_manifest_is_picked_up(corral):
    path = corral.add("broken", "steerable", manifest="runtime: python\nentrypoint: worker.py\ninstances: zero\n")
    d = corral.start()
    assert infer(d, "broken").status_code == 503
    (path / "model.yaml").write_text(ctl("fixed"))
    # A rescan clears the error...
    e = index(d)["broken"]
    assert "instances" not in e["reason"]
    assert "manifest_error" not in d.model("broken") or not d.model("broken")["manifest_error"]
    assert out(infer(d, "broken"), "TAG") == "fixed"
    # ...and breaking it again while it runs keeps the running model serving.
    (path / "model.yaml").write_text("runtime: python\nentrypoint: worker.py\ninstances: zero\n")
    e = index(d)["broken"]
    assert e["state"] == "READY"
    assert out(infer(d, "broken"), "TAG") == "fixed"


def test_explicit_load_picks_up_a_fixed_manifest(corral):
    path = corral.add("broken", "steerable", manifest="runtime: python\nentrypoint: worker.py\ntimeout: 5 parsecs\n")
    d = corral.start()
    assert load(d, "broken").status_code == 503
    (path / "model.yaml").write_text(ctl("fixed"))
    r = load(d, "broken")
    assert r.status_code == 200, r.text
    assert out(infer(d, "broken"), "TAG") == "fixed"


# ---------------------------------------------------------------- rescans


def test_rescan_adds_new_models_and_drops_deleted_unloaded_ones(corral):
    corral.add("echo", "echo")
    gone = corral.add("gone", "steerable")
    d = corral.start()
    assert names(d) == {"echo", "gone"}
    corral.add("newbie", "steerable", manifest=ctl("new"))
    # No --poll: nothing changes until a rescan is asked for.
    assert d.get("/v1/models/newbie").status_code == 404
    shutil.rmtree(gone)
    idx = index(d)
    assert set(idx) == {"echo", "newbie"}
    assert idx["newbie"]["state"] == "UNAVAILABLE" and idx["newbie"]["reason"] == "unloaded"
    assert d.get("/v1/models/gone").status_code == 404
    assert infer(d, "gone").status_code == 404
    assert out(infer(d, "newbie"), "TAG") == "new"
    assert index(d)["newbie"]["state"] == "READY"
    # ready-only listing.
    r = d.post("/v2/repository/index", {"ready": True})
    assert [e["name"] for e in r.json()] == ["newbie"]


def test_a_deleted_loaded_model_goes_once_unloaded(corral):
    corral.add("echo", "echo")
    path = corral.add("doomed", "steerable")
    d = corral.start()
    pid = out(infer(d, "doomed"), "PID")
    shutil.rmtree(path)
    idx = index(d)
    assert "echo" in idx
    assert unload(d, "doomed").status_code in (200, 404)
    assert not alive(pid)
    assert "doomed" not in index(d)
    assert d.get("/v1/models/doomed").status_code == 404
    echo_ok(d)


def test_poll_rescans_periodically(corral):
    corral.add("echo", "echo")
    d = corral.start("--poll", "0.2")
    corral.add("polled", "steerable", manifest=ctl("polled"))
    wait_for(lambda: d.get("/v1/models/polled").status_code == 200, timeout=10, what="the poll to find polled")
    assert out(infer(d, "polled"), "TAG") == "polled"


def test_changed_manifest_of_a_loaded_model_applies_at_the_next_load(corral):
    path = corral.add("ctl", "steerable", manifest=ctl("v1"))
    d = corral.start()
    assert load(d, "ctl").status_code == 200
    pids = d.worker_pids("ctl")
    assert d.model("ctl")["changed"] is False
    (path / "model.yaml").write_text(ctl("v2", extra="instances: 2\n"))
    e = index(d)["ctl"]
    assert e["changed"] is True and e["state"] == "READY"
    m = d.model("ctl")
    assert m["changed"] is True
    # Reported, not applied: the same processes keep serving the old manifest.
    assert sorted(d.worker_pids("ctl")) == sorted(pids)
    assert out(infer(d, "ctl"), "TAG") == "v1"
    assert "model ctl: manifest changed; it applies at the next load" in d.log()

    assert unload(d, "ctl").status_code == 200
    assert load(d, "ctl").status_code == 200
    m = d.model("ctl")
    assert m["changed"] is False
    assert len(m["instances"]) == 2
    assert out(infer(d, "ctl"), "TAG") == "v2"
    assert index(d)["ctl"]["changed"] is False


def test_changed_manifest_of_an_unloaded_model_applies_at_once(corral):
    path = corral.add("ctl", "steerable", manifest=ctl("v1"))
    d = corral.start()
    (path / "model.yaml").write_text(ctl("v2"))
    assert index(d)["ctl"]["changed"] is False
    assert out(infer(d, "ctl"), "TAG") == "v2"


def test_explicit_load_finds_a_model_added_after_start(corral):
    corral.add("echo", "echo")
    d = corral.start()
    corral.add("late", "steerable", manifest=ctl("late"))
    r = load(d, "late")
    assert r.status_code == 200, r.text
    assert d.model("late")["state"] == "ready"
    assert out(infer(d, "late"), "TAG") == "late"
    assert load(d, "never_added").status_code == 404


# ---------------------------------------------------------------- external models


def test_external_models_are_linked_and_baked_in_models_take_precedence(corral):
    corral.add("echo", "echo")
    corral.add("dup", "steerable", manifest=ctl("baked"))
    corral.add("ext", "steerable", manifest=ctl("external"), external=True)
    corral.add("dup", "steerable", manifest=ctl("external"), external=True)
    corral.external.mkdir(exist_ok=True)
    os.symlink(corral.tmp / "nowhere", corral.external / "dangling")
    d = corral.start(external=True)

    link = corral.repo / "ext"
    assert link.is_symlink()
    assert link.resolve() == (corral.external / "ext").resolve()
    log = d.log()
    assert any("linked external model" in line and str(link) in line for line in log.splitlines()), log
    assert out(infer(d, "ext"), "TAG") == "external"

    # The baked-in dup wins: it is not replaced by a link and serves its own code.
    assert not (corral.repo / "dup").is_symlink()
    assert d.model("dup")["dir"] == str((corral.repo / "dup").resolve())
    assert out(infer(d, "dup"), "TAG") == "baked"

    # A broken link in external_models is reported and harmless.
    assert any("dangling" in line for line in log.splitlines() if "warn" in line or "error" in line), log
    assert "dangling" not in names(d)
    echo_ok(d)

    # Entries added later are linked by the next rescan.
    corral.add("later", "steerable", manifest=ctl("later"), external=True)
    assert "later" in index(d)
    assert (corral.repo / "later").is_symlink()
    assert out(infer(d, "later"), "TAG") == "later"
    # Our own links are not relinked or reported again.
    assert d.log().count(f"linked external model {link}") == 1


def test_missing_external_directory_is_not_fatal(corral):
    corral.add("echo", "echo")
    d = corral.start(external=True)  # the harness creates external_models only when a model is added there
    echo_ok(d)
    assert "external" in d.log()


# ---------------------------------------------------------------- entry points


def test_entrypoint_problems_fail_the_model_with_a_precise_reason(corral):
    corral.add("echo", "echo")
    noexec = corral.add("noexec", None, manifest="runtime: exec\nentrypoint: run.sh\n",
                        files={"run.sh": "#!/bin/sh\nexit 0\n"})
    os.chmod(noexec / "run.sh", 0o644)
    missing = corral.add("missing", None, manifest="runtime: python\nentrypoint: nothere.py\n")
    corral.add("nodir", None, manifest="runtime: exec\nentrypoint: bin/server\n")
    d = corral.start()
    cases = {
        "noexec": [str(noexec.resolve() / "run.sh"), "not executable"],
        "missing": [str(missing.resolve() / "nothere.py"), "No such file"],
        "nodir": ["bin/server", "No such file"],
    }
    for name, needles in cases.items():
        r = load(d, name, timeout=20)
        assert r.status_code == 503, r.text
        m = d.model(name)
        assert m["state"] == "failed"
        for needle in needles:
            assert needle in m["reason"], (name, m["reason"])
            assert needle in r.json()["error"], (name, r.text)
        r = infer(d, name, timeout=10)
        assert r.status_code == 503 and needles[1] in r.json()["error"], r.text
    echo_ok(d)
    assert d.proc.poll() is None


RESTART_FAST = "restart:\n  max_restarts: 1\n  window: 60s\n  backoff_min: 50ms\n  backoff_max: 100ms\n"


def test_worker_that_cannot_start_fails_with_its_last_words(corral):
    corral.add("echo", "echo")
    corral.add("syntax", None, manifest="runtime: python\nentrypoint: worker.py\n" + RESTART_FAST,
               files={"worker.py": "import corral\ndef broken(:\n    pass\n"})
    corral.add("nopython", None, manifest="runtime: python\npython: /nonexistent/python3\nentrypoint: worker.py\n"
               + RESTART_FAST, files={"worker.py": "import corral\n"})
    d = corral.start()
    r = load(d, "syntax", timeout=20)
    assert r.status_code == 503, r.text
    reason = d.model("syntax")["reason"]
    assert "SyntaxError" in reason, reason
    assert "SyntaxError" in d.get("/v1/models/syntax/logs").text

    r = load(d, "nopython", timeout=20)
    assert r.status_code == 503, r.text
    reason = d.model("nopython")["reason"]
    assert "/nonexistent/python3" in reason, reason
    echo_ok(d)


def test_args_and_env_reach_the_worker(corral):
    corral.add("ctl", "steerable", manifest="args: [--flag, 7]\nenv:\n  LC_NUMBER: 42\n" + ctl("args"))
    d = corral.start()
    pid = out(infer(d, "ctl"), "PID")
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = f.read().split(b"\0")
    assert argv[1:4] == [str(corral.repo.resolve() / "ctl" / "worker.py").encode(), b"--flag", b"7"], argv
    with open(f"/proc/{pid}/environ", "rb") as f:
        assert b"LC_NUMBER=42" in f.read().split(b"\0")
