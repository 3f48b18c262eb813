"""The quick path: the echo example answers a v2 inference over real HTTP."""
from conftest import tensor


def test_echo_infer_roundtrip(corral):
    corral.add("echo", "echo")
    d = corral.start()
    r = d.infer("echo", [tensor("INPUT0", "FP32", [2], [1.5, 2.0])], id="req-1")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "req-1"
    assert body["model_name"] == "echo"
    assert body["outputs"] == [{"name": "OUTPUT0", "datatype": "FP32", "shape": [2], "data": [1.5, 2.0]}]
