"""Python stubs of the repository's gRPC service definition, generated at test time.

The tests talk to the daemon's gRPC listener with Debian's grpcio, through
stubs generated from proto/grpc_service.proto (and the model_config.proto it
imports) by python3-grpc-tools, the same definitions the daemon is built
from: nothing generated is committed, so the tests cannot drift from the
daemon. `load()` generates them once per process into a temporary directory
and returns (pb, pb_grpc): the messages and GRPCInferenceServiceStub.
"""
from __future__ import annotations

import atexit
import importlib
import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROTO = ROOT / "proto"
_loaded = None


def load():
    global _loaded
    if _loaded:
        return _loaded
    out = pathlib.Path(tempfile.mkdtemp(prefix="corral-grpc-stubs-"))
    atexit.register(shutil.rmtree, out, True)
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO}", f"--python_out={out}",
                    f"--grpc_python_out={out}", str(PROTO / "grpc_service.proto"), str(PROTO / "model_config.proto")],
                   check=True, capture_output=True)
    sys.path.insert(0, str(out))
    pb = importlib.import_module("grpc_service_pb2")
    pb_grpc = importlib.import_module("grpc_service_pb2_grpc")
    _loaded = (pb, pb_grpc)
    return _loaded


def stub(port: int, **options):
    """A GRPCInferenceServiceStub on a new insecure channel to 127.0.0.1:port, and the channel (close it)."""
    import grpc
    _, pb_grpc = load()
    opts = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1),
            *options.items()]
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=opts)
    return pb_grpc.GRPCInferenceServiceStub(channel), channel
