"""State that survives a restart (--state FILE, docs/repository.md): explicit loads (HTTP and gRPC), their
scales and configs are loaded again at start, in the background; an unload is remembered, lazy loads are
not; a corrupt state file, a missing directory, a file another daemon holds, records that cannot be restored
and a model gone from the repository are reported and survived; --state off writes nothing; a storm of
scale calls while requests flow delays none of them.

conftest sets CORRAL_STATE=off for every daemon; each test here names its state file with --state.
Fixtures: examples/models/echo (2 instances), tests/models/steerable.
"""
from __future__ import annotations

import sqlite3
import threading
import time

from conftest import ctl_manifest, infer, load, unload, wait_for


def scale(d, model, n):
    return d.post(f"/v1/models/{model}/scale", {"instances": n}, timeout=30)


def active(d, name) -> int:
    return len([i for i in d.model(name)["instances"] if not i["retiring"]])


def ready_count(d, name) -> int:
    return len([i for i in d.model(name)["instances"] if i["state"] == "ready" and not i["retiring"]])


def wait_ready(d, name, n, timeout=30):
    wait_for(lambda: d.model(name)["state"] == "ready" and ready_count(d, name) == n, timeout=timeout,
             what=f"{name} ready with {n} instances")


def wait_log(d, text, timeout=10):
    return wait_for(lambda: text in d.log(), timeout=timeout, what=f"'{text}' in the log")


def test_a_restart_loads_the_explicit_loads_again_at_their_scale_and_config(corral, tmp_path):
    corral.add("three", "echo")
    corral.add("scaled", "echo")
    corral.add("cfg", "steerable", manifest=ctl_manifest(max_queue=5))
    corral.add("lazy", "echo")
    state = tmp_path / "state.db"
    d = corral.start("--state", str(state))
    assert load(d, "three", {"instances": 3}).status_code == 200
    assert load(d, "scaled").status_code == 200
    assert scale(d, "scaled", 1).status_code == 200
    r = load(d, "cfg", {"parameters": {"config": '{"max_queue": 7}'}})
    assert r.status_code == 200, r.text
    assert infer(d, "lazy", timeout=60).status_code == 200  # a lazy load: not recorded
    assert d.stop() == 0

    d = corral.start("--state", str(state))
    wait_ready(d, "three", 3)
    wait_ready(d, "scaled", 1)
    wait_ready(d, "cfg", 1)
    m = d.model("cfg")
    assert m["config_override"] == {"max_queue": 7} and m["max_queue"] == 7
    assert d.model("lazy")["state"] == "unloaded"
    log = d.log()
    assert "state: loading model three again, with 3 instances" in log
    assert "state: loading model scaled again, with 1 instance\n" in log
    assert "3 models to load again" in log


def test_an_unload_is_remembered_and_a_lazy_load_changes_nothing(corral, tmp_path):
    corral.add("kept", "echo")
    corral.add("dropped", "echo")
    state = tmp_path / "state.db"
    d = corral.start("--state", str(state))
    assert load(d, "kept", {"instances": 1}).status_code == 200
    assert load(d, "dropped", {"instances": 1}).status_code == 200
    assert unload(d, "dropped").status_code == 200
    d.stop()

    d = corral.start("--state", str(state))
    wait_ready(d, "kept", 1)
    assert infer(d, "dropped", timeout=60).status_code == 200  # loaded lazily now
    d.stop()

    d = corral.start("--state", str(state))
    wait_ready(d, "kept", 1)
    time.sleep(0.5)
    assert d.model("dropped")["state"] == "unloaded"


def test_the_daemon_serves_while_the_restore_loads(corral, tmp_path):
    corral.add("slow", "steerable", manifest=ctl_manifest(parameters={"load_delay": 5}))
    state = tmp_path / "state.db"
    d = corral.start("--state", str(state))
    assert load(d, "slow").status_code == 200
    d.stop()
    t0 = time.monotonic()
    d = corral.start("--state", str(state))
    wait_for(lambda: d.model("slow")["state"] == "loading", timeout=5, what="the restore to start loading")
    assert d.get("/v2/health/live").status_code == 200
    assert time.monotonic() - t0 < 4.5, "the daemon answered only after the restored model had loaded"
    wait_ready(d, "slow", 1)


def test_records_that_cannot_be_restored_are_reported(corral, tmp_path):
    corral.add("echo", "echo")
    corral.add("bad", "echo")
    state = tmp_path / "state.db"
    d = corral.start("--state", str(state))
    assert load(d, "echo", {"instances": 1}).status_code == 200
    d.stop()
    db = sqlite3.connect(state)
    db.execute("INSERT INTO models VALUES ('bad', 0, '{\"instances\": 0}', 0)")  # a config the manifest refuses
    db.execute("INSERT INTO models VALUES ('../evil', 1, NULL, 0)")
    db.execute("INSERT INTO pulls VALUES ('fetched', 'https://example.com/f.tar.gz', ?, 0)", ("ab" * 32,))
    db.commit()
    db.close()
    d = corral.start("--state", str(state))
    wait_ready(d, "echo", 1)
    wait_log(d, "state: model bad was loaded before the restart but cannot be loaded again: model 'bad': the load's "
                "config")
    log = d.log()
    assert "1 records skipped (the last: a model record's name is not a model name)" in log
    assert (f"model fetched was pulled from https://example.com/f.tar.gz but is not in the repository now; "
            f"`corral pull https://example.com/f.tar.gz --sha256 {'ab' * 32} --name fetched`") in log
    assert d.model("bad")["state"] == "unloaded"


def test_a_second_daemon_on_the_same_file_runs_without_state(corral, tmp_path):
    corral.add("echo", "echo")
    state = tmp_path / "state.db"
    first = corral.start("--state", str(state))
    wait_log(first, "0 models to load again")
    second = corral.start("--state", str(state))
    wait_log(second, f"state file {state} is in use by another process (database is locked); running without state")
    assert load(second, "echo", {"instances": 1}).status_code == 200  # not recorded
    assert load(first, "echo", {"instances": 2}).status_code == 200
    second.stop()
    first.stop()
    d = corral.start("--state", str(state))
    wait_ready(d, "echo", 2)


def test_grpc_loads_and_unloads_are_recorded_too(corral, tmp_path):
    import grpc
    import grpc_stubs
    pb, pb_grpc = grpc_stubs.load()
    corral.add("viagrpc", "echo")
    corral.add("dropped", "echo")
    state = tmp_path / "state.db"
    d = corral.start("--state", str(state))
    with grpc.insecure_channel(f"127.0.0.1:{d.grpc_port}") as ch:
        g = pb_grpc.GRPCInferenceServiceStub(ch)
        params = {"instances": pb.ModelRepositoryParameter(int64_param=3)}
        g.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="viagrpc", parameters=params), timeout=60)
        g.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="dropped"), timeout=60)
        g.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="dropped"), timeout=60)
    d.stop()
    d = corral.start("--state", str(state))
    wait_ready(d, "viagrpc", 3)
    assert d.model("dropped")["state"] == "unloaded"


def test_a_corrupt_state_file_is_moved_aside_and_a_new_one_started(corral, tmp_path):
    corral.add("echo", "echo")
    state = tmp_path / "state.db"
    state.write_bytes(b"garbage, not SQLite\n" * 500)
    d = corral.start("--state", str(state))
    line = wait_log(d, f"state file {state} is corrupt (")
    assert "file is not a database" in d.log()
    assert "moved aside to" in d.log()
    aside = list(tmp_path.glob("state.db.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"garbage")
    assert line
    assert load(d, "echo", {"instances": 1}).status_code == 200
    d.stop()
    d = corral.start("--state", str(state))
    wait_ready(d, "echo", 1)


def test_a_state_file_in_a_missing_directory_is_reported_and_the_daemon_serves(corral, tmp_path):
    corral.add("echo", "echo")
    state = tmp_path / "no" / "such" / "state.db"
    d = corral.start("--state", str(state))
    wait_log(d, f"cannot open state file {state}: unable to open database file")
    assert "running without state" in d.log()
    assert load(d, "echo", {"instances": 1}).status_code == 200
    assert infer(d, "echo").status_code == 200
    assert not (tmp_path / "no").exists()


def test_a_model_gone_from_the_repository_is_reported_and_its_record_kept(corral, tmp_path):
    corral.add("gone", "echo")
    state = tmp_path / "state.db"
    d = corral.start("--state", str(state))
    assert load(d, "gone", {"instances": 1}).status_code == 200
    d.stop()
    import shutil
    shutil.move(str(corral.repo / "gone"), str(tmp_path / "gone-away"))
    d = corral.start("--state", str(state))
    wait_log(d, "model gone was loaded before the restart but is not in the repository now")
    d.stop()
    shutil.move(str(tmp_path / "gone-away"), str(corral.repo / "gone"))  # the volume is back
    d = corral.start("--state", str(state))
    wait_ready(d, "gone", 1)


def test_state_off_writes_nothing_and_the_default_is_beside_the_repository(corral, tmp_path):
    corral.add("echo", "echo")
    before = {p.name for p in tmp_path.iterdir()}
    d = corral.start("--state", "off", env={"CORRAL_STATE": ""})
    assert load(d, "echo", {"instances": 1}).status_code == 200
    assert "state: off" in d.log()
    d.stop()
    made = {p.name for p in tmp_path.iterdir()} - before
    assert all(n.startswith("corral-") and n.endswith(".log") for n in made), made

    d = corral.start(env={"CORRAL_STATE": ""})  # the default: corral-state.db beside models/
    assert load(d, "echo", {"instances": 1}).status_code == 200
    wait_log(d, f"state file {tmp_path}/corral-state.db did not exist")
    d.stop()
    assert (tmp_path / "corral-state.db").is_file()
    assert not list(tmp_path.glob("corral-state.db-*"))  # no journal left at rest
    d = corral.start(env={"CORRAL_STATE": str(tmp_path / "corral-state.db")})
    wait_ready(d, "echo", 1)


def test_a_storm_of_scale_calls_while_requests_flow(corral, tmp_path):
    corral.add("echo", "echo")
    state = tmp_path / "state.db"
    d = corral.start("--state", str(state))
    assert load(d, "echo", {"instances": 1}).status_code == 200
    stop = threading.Event()
    failures: list = []
    served = [0]

    def requests_flow():
        import requests
        s = requests.Session()
        while not stop.is_set():
            t0 = time.monotonic()
            r = s.post(d.url("/v2/models/echo/infer"), json={"inputs": [
                {"name": "INPUT0", "datatype": "INT32", "shape": [1], "data": [1]}]}, timeout=30)
            if r.status_code != 200 or time.monotonic() - t0 > 5:
                failures.append((r.status_code, r.text[:200], time.monotonic() - t0))
            served[0] += 1

    threads = [threading.Thread(target=requests_flow) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for k in range(150):
            r = scale(d, "echo", 1 + k % 3)
            assert r.status_code == 200, r.text
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=40)
    assert not failures, failures[:3]
    assert served[0] > 0
    assert scale(d, "echo", 2).status_code == 200
    d.stop()
    d = corral.start("--state", str(state))
    wait_ready(d, "echo", 2)
