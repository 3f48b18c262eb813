#!/usr/bin/env python3
"""raw_protocol — a hand-written protocol-1 worker that misbehaves on request.

argv[1], the mode:
  ok            answer every INFER with an empty result
  linger        on the first INFER, shut the protocol socket down and keep running
  garbage       on the first INFER, send a frame with protocol version 9
  deaf          ignore SHUTDOWN and SIGTERM (only SIGKILL stops it)
  shm-unasked   answer in shared memory without having said it maps the regions
  shm-short     say it maps the regions, then answer a 2 MiB output in shared
                memory that holds 1 MiB
  shm-shrink    on the first INFER, try to grow, then shrink, both regions and
                print what happened
  hello-garbage send a HELLO whose body is not JSON
  huge-claim    on the first INFER, send a frame header that claims a 1 GiB
                body, a few bytes of it, and then nothing
  lying         answer every INFER with a result whose meta claims 100 bytes
                of data that are not there
  stale-line    print a line while answering the first INFER (which succeeds),
                then exit with status 3 on the second without printing
Other INFER_RESULTs are an empty tensor list.
"""
import json
import os
import signal
import socket
import struct
import sys
import time

HELLO, LOAD, READY, INFER, INFER_RESULT, SHUTDOWN, PING, PONG = 0x01, 0x02, 0x03, 0x10, 0x11, 0x22, 0x20, 0x21

mode = sys.argv[1] if len(sys.argv) > 1 else "ok"
sock = socket.socket(fileno=int(os.environ["CORRAL_FD"]))


def send(ftype, fid, body=b"", version=1, flags=0):
    sock.sendall(struct.pack("<IBBHQ", len(body), version, ftype, flags, fid) + body)


def recv_exact(n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            sys.exit(0)  # the daemon is gone
        buf += chunk
    return buf


def read_frame():
    length, _version, ftype, _flags, fid = struct.unpack("<IBBHQ", recv_exact(16))
    return ftype, fid, recv_exact(length) if length else b""


if mode == "deaf":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print(f"raw_protocol: mode {mode}, pid {os.getpid()}", flush=True)
hello = {"protocol": 1, "sdk": "raw_protocol", "pid": os.getpid()}
if mode == "shm-short":
    hello["shm"] = True
send(HELLO, 0, b"this is not json" if mode == "hello-garbage" else json.dumps(hello).encode())
answered = 0
while True:
    ftype, fid, body = read_frame()
    if ftype == LOAD:
        send(READY, 0, b"{}")
    elif ftype == PING:
        send(PONG, fid)
    elif ftype == SHUTDOWN:
        if mode == "deaf":
            print("raw_protocol: ignoring SHUTDOWN", flush=True)
            continue
        sys.exit(0)
    elif ftype == INFER:
        if mode == "linger":
            print("raw_protocol: closing the protocol socket and lingering", file=sys.stderr, flush=True)
            sock.shutdown(socket.SHUT_RDWR)
            time.sleep(120)
        if mode == "huge-claim":
            sock.sendall(struct.pack("<IBBHQ", 1 << 30, 1, INFER_RESULT, 0, fid) + b"\0" * 100)
            time.sleep(120)
        if mode == "lying":
            meta = json.dumps({"outputs": [{"name": "OUT", "datatype": "UINT8", "shape": [100],
                                            "size": 100}]}).encode()
            send(INFER_RESULT, fid, struct.pack("<I", len(meta)) + meta)
            continue
        if mode == "stale-line":
            answered += 1
            if answered == 1:
                print("raw_protocol: a stale line from the first request", flush=True)
            else:
                os._exit(3)
        if mode == "garbage":
            send(INFER_RESULT, fid, b"", version=9)
            time.sleep(120)
        if mode == "shm-shrink":
            for fd in map(int, os.environ["CORRAL_SHM_FDS"].split(",")):
                os.ftruncate(fd, 1 << 20)  # growing is allowed
                try:
                    os.ftruncate(fd, 0)
                    print(f"raw_protocol: shrank fd {fd}", flush=True)
                except OSError as err:
                    print(f"raw_protocol: shrinking fd {fd} refused: {err.strerror}", flush=True)
        if mode in ("shm-unasked", "shm-short"):
            out_fd = int(os.environ["CORRAL_SHM_FDS"].split(",")[1])
            os.ftruncate(out_fd, 1 << 20)
            meta = json.dumps({"outputs": [{"name": "OUT", "datatype": "UINT8", "shape": [2 << 20],
                                            "size": 2 << 20}]}).encode()
            send(INFER_RESULT, fid, struct.pack("<I", len(meta)) + meta, flags=0x0001)
            continue
        meta = json.dumps({"outputs": []}).encode()
        send(INFER_RESULT, fid, struct.pack("<I", len(meta)) + meta)
