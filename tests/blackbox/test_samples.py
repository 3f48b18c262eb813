"""Shared directories for workers: samples (--samples, ctx.samples_dir) and
external models (ctx.external_models_dir), in both SDKs; and the
model-management standard's scenario 4, a model that downloads its weights
into external_models/ on first load, which the next scan links into models/.

Fixtures: tests/models/reads_samples, tests/models/dirs_c (C SDK),
tests/models/fetcher, tests/models/api_probe.
"""
from __future__ import annotations

import os
import re
import subprocess

import requests

from conftest import BIN, load, wait_for


def generate(d, model: str, body=None) -> dict:
    r = d.post(f"/v1/models/{model}/generate", body if body is not None else {}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def loaded(d, model: str) -> None:
    r = load(d, model)
    assert r.status_code == 200, r.text


def index(d) -> dict:
    r = d.post("/v2/repository/index", {}, timeout=30)
    assert r.status_code == 200, r.text
    return {e["name"]: e for e in r.json()}


# ---------------------------------------------------------------- samples


def test_a_model_reads_a_sample_from_the_default_samples_dir(corral):
    samples = corral.tmp / "samples"  # beside models/: the default
    samples.mkdir()
    (samples / "speaker.txt").write_text("hello from a speaker\n")
    corral.add("reader", "reads_samples")
    d = corral.start()
    assert f"samples directory {samples.resolve()}, handed to workers" in d.log()
    loaded(d, "reader")
    got = generate(d, "reader")
    assert got["sample"] == "hello from a speaker\n"
    assert got["samples_dir"] == str(samples.resolve())
    assert got["external_models_dir"] is None


def test_both_sdks_get_absolute_directories(corral, tmp_path):
    samples = tmp_path / "shared" / "voices"
    samples.mkdir(parents=True)
    (samples / "a.txt").write_text("sample a")
    corral.add("reader", "reads_samples", manifest="runtime: python\nentrypoint: worker.py\n"
                                                   "parameters:\n  sample: a.txt\n")
    corral.add("dirs", "dirs_c")
    corral.add("ext", "api_probe", external=True)
    # Relative paths, as an operator types them: workers run in their model directory, so they get them absolute.
    d = corral.start("--samples", os.path.relpath(samples), external=True)
    for model in ("reader", "dirs"):
        loaded(d, model)
    want = {"samples_dir": str(samples.resolve()), "external_models_dir": str(corral.external.resolve())}
    py = generate(d, "reader")
    assert {k: py[k] for k in want} == want
    assert py["sample"] == "sample a"
    c = generate(d, "dirs", {"sample": "a.txt"})
    assert {k: c[k] for k in (*want, "sample", "variant_dir")} == {**want, "sample": "sample a", "variant_dir": None}
    r = d.post("/v1/models/dirs/generate", {"sample": "../x"}, timeout=30)
    assert r.status_code == 400, r.text


def test_without_directories_workers_are_told_none(corral):
    corral.add("dirs", "dirs_c")
    # What the daemon inherited is not passed on as if it were the daemon's own.
    d = corral.start(env={"CORRAL_SAMPLES_DIR": "/inherited", "CORRAL_EXTERNAL_MODELS_DIR": "/inherited",
                          "CORRAL_VARIANT_DIR": "/inherited"})
    loaded(d, "dirs")
    c = generate(d, "dirs")
    assert {k: c[k] for k in ("samples_dir", "external_models_dir", "variant_dir")} == \
        {"samples_dir": None, "external_models_dir": None, "variant_dir": None}
    corral.add("reader", "reads_samples")
    index(d)
    r = load(d, "reader")
    assert r.status_code != 200 and "no samples directory" in r.text, r.text


def test_a_missing_samples_dir_is_a_startup_error(corral, tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    for path, reason in ((tmp_path / "nowhere", "No such file or directory"), (not_a_dir, "not a directory")):
        r = subprocess.run([BIN, "serve", "--models", str(corral.repo), "--port", "0", "--samples", str(path)],
                           capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
        assert r.returncode == 1, r
        assert r.stderr.strip() == f"corral: --samples '{path}': {reason}", r.stderr


# ---------------------------------------------------------------- scenario 4: a model downloads its weights


def test_downloaded_weights_are_linked_served_and_survive_a_restart(corral):
    corral.add("fetcher", "fetcher")
    corral.external.mkdir()
    d = corral.start(external=True)
    assert "weights-x" not in index(d)
    loaded(d, "fetcher")
    got = generate(d, "fetcher")
    target = corral.external / "weights-x"
    assert got == {"target": str(target.resolve()), "fetched": True}
    assert sorted(os.listdir(corral.external)) == ["weights-x"]  # the temporary directory is gone
    # The next scan links it into models/ and it serves.
    entry = index(d)["weights-x"]
    link = corral.repo / "weights-x"
    assert link.is_symlink() and link.resolve() == target.resolve()
    assert f"linked external model {link}" in d.log()
    assert entry["state"] == "UNAVAILABLE"  # discovered, not loaded yet (Triton's word for it)
    loaded(d, "weights-x")
    assert generate(d, "weights-x") == {"weights": "downloaded weights v1", "model_dir": str(target.resolve())}
    assert d.stop() == 0

    # A fresh container has a fresh models/ but the same external_models/ volume: the link is made again at
    # start, and the fetcher finds its weights already there.
    link.unlink()
    d = corral.start(external=True)
    assert "weights-x" in index(d)
    loaded(d, "weights-x")
    assert generate(d, "weights-x")["weights"] == "downloaded weights v1"
    loaded(d, "fetcher")
    assert generate(d, "fetcher")["fetched"] is False


def test_a_baked_in_model_wins_over_a_downloaded_one(corral):
    corral.add("fetcher", "fetcher")
    corral.add("weights-x", "api_probe")  # baked in under the name the fetcher downloads to
    corral.external.mkdir()
    d = corral.start(external=True)
    loaded(d, "fetcher")
    assert generate(d, "fetcher")["fetched"] is True
    index(d)
    assert not (corral.repo / "weights-x").is_symlink()
    loaded(d, "weights-x")
    assert "pid" in generate(d, "weights-x")  # api_probe's answer, not the download's
    assert d.model("weights-x")["dir"] == str((corral.repo / "weights-x").resolve())


def test_the_default_samples_dir_is_beside_models_however_it_is_named(corral, tmp_path):
    """--models models/ (a trailing slash) and --models . (from inside it) both find ../samples."""
    (tmp_path / "samples").mkdir()
    corral.add("dirs", "dirs_c")
    want = str((tmp_path / "samples").resolve())
    for models, cwd in ((f"{corral.repo}/", None), (".", corral.repo)):
        log = tmp_path / "log"
        with open(log, "wb") as f:
            proc = subprocess.Popen([BIN, "serve", "--models", models, "--port", "0", "--stop-grace", "1s"],
                                    cwd=cwd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            port = wait_for(lambda: proc.poll() is None and re.search(r"listening on http://127\.0\.0\.1:(\d+)",
                                                                       log.read_text()), timeout=15,
                            what="corral to listen").group(1)
            base = f"http://127.0.0.1:{port}"
            r = requests.post(base + "/v2/repository/models/dirs/load", json={}, timeout=60)
            assert r.status_code == 200, r.text
            r = requests.post(base + "/v1/models/dirs/generate", json={}, timeout=30)
            assert r.json()["samples_dir"] == want, (models, r.text)
        finally:
            proc.terminate()
            assert proc.wait(timeout=20) == 0, log.read_text()
