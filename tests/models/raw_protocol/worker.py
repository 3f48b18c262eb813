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
  script        say "stream": true in HELLO, and run each request's script: the
                "script" list of a GENERATE's JSON body or of an INFER's
                parameters, steps done in order (below); a GENERATE without one
                is answered whole with {"pid": PID}
  script-nostream  the same with a HELLO that does not say "stream": true
Other INFER_RESULTs are an empty tensor list.

A script's steps (any of them may carry "repeat": N):
  {"chunk": "text"}   a CHUNK whose data is the text's UTF-8; "hex": "ff00" instead
                      gives raw bytes, "size": N a JSON string N bytes long ("xx...");
                      "meta": {...} is its meta as JSON, "meta_raw": "..." its meta
                      verbatim; "obey": S first waits up to S seconds for the chunk to
                      fit the window, and ends the repeats if it does not; "and_end":
                      true sends END in the same write
  {"fill": true}      a CHUNK, a JSON string, that brings the bytes sent and not
                      credited to exactly stream_window; then prints that count
  {"end": true}       END
  {"result": "text"}  GENERATE_RESULT of type text/plain
  {"sleep": S}        S seconds of answering PING and noting CREDIT and CANCEL
  {"credit": true}    wait (10 s at most) until every CHUNK byte sent was credited
  {"cancel": true}    wait (10 s at most) for CANCEL of this request
A script that sends no final frame leaves its request in flight. Each CANCEL
is printed as "raw_protocol: CANCEL of request ID".
"""
import json
import os
import select
import signal
import socket
import struct
import sys
import time

HELLO, LOAD, READY, INFER, INFER_RESULT, SHUTDOWN, PING, PONG = 0x01, 0x02, 0x03, 0x10, 0x11, 0x22, 0x20, 0x21
GENERATE, GENERATE_RESULT, CHUNK, END, CANCEL, CREDIT = 0x12, 0x13, 0x14, 0x15, 0x16, 0x18

mode = sys.argv[1] if len(sys.argv) > 1 else "ok"
sock = socket.socket(fileno=int(os.environ["CORRAL_FD"]))


def frame(ftype, fid, body=b"", version=1, flags=0):
    return struct.pack("<IBBHQ", len(body), version, ftype, flags, fid) + body


def send(ftype, fid, body=b"", version=1, flags=0, then=b""):
    """One frame, and then more bytes in the same write."""
    sock.sendall(frame(ftype, fid, body, version, flags) + then)


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


def split_body(body):
    """A tensor or free-form message: its meta (parsed) and the bytes after it."""
    (meta_len,) = struct.unpack_from("<I", body)
    return json.loads(body[4:4 + meta_len] or b"{}"), body[4 + meta_len:]


window = 0  # stream_window, from LOAD
uncredited = 0  # bytes of CHUNK frames the running script sent and the daemon has not credited
cancelled = set()


def control(ftype, fid, body):
    """Handles PING, CREDIT, CANCEL and SHUTDOWN; returns False for any other frame."""
    global uncredited
    if ftype == PING:
        send(PONG, fid)
    elif ftype == CREDIT:
        uncredited -= struct.unpack("<I", body)[0]
    elif ftype == CANCEL:
        print(f"raw_protocol: CANCEL of request {fid}", flush=True)
        cancelled.add(fid)
    elif ftype == SHUTDOWN:
        if mode == "deaf":
            print("raw_protocol: ignoring SHUTDOWN", flush=True)
        else:
            sys.exit(0)
    else:
        return False
    return True


def wait(done, seconds):
    """Handles control frames until done() or seconds pass."""
    end = time.monotonic() + seconds
    while not done() and time.monotonic() < end:
        if select.select([sock], [], [], max(0.0, end - time.monotonic()))[0]:
            ftype, fid, body = read_frame()
            if not control(ftype, fid, body):
                print(f"raw_protocol: frame type {ftype:#x} while a script runs", flush=True)


def run_script(fid, steps):
    global uncredited
    uncredited = 0
    for step in steps:
        for _ in range(step.get("repeat", 1)):
            if "chunk" in step or "hex" in step or "size" in step or "fill" in step:
                size = window - uncredited - 20 if "fill" in step else step.get("size", 2)
                data = (step["chunk"].encode() if "chunk" in step else
                        bytes.fromhex(step["hex"]) if "hex" in step else b'"' + b"x" * (size - 2) + b'"')
                meta = (step["meta_raw"].encode() if "meta_raw" in step else
                        json.dumps(step["meta"]).encode() if "meta" in step else b"")
                body = struct.pack("<I", len(meta)) + meta + data
                if "obey" in step:
                    wait(lambda: uncredited + 16 + len(body) <= window, step["obey"])
                    if uncredited + 16 + len(body) > window:
                        break
                uncredited += 16 + len(body)
                send(CHUNK, fid, body, then=frame(END, fid) if step.get("and_end") else b"")
                if "fill" in step:
                    print(f"raw_protocol: {uncredited} bytes sent and not credited", flush=True)
            elif "end" in step:
                send(END, fid)
            elif "result" in step:
                meta = b'{"content_type": "text/plain"}'
                send(GENERATE_RESULT, fid, struct.pack("<I", len(meta)) + meta + step["result"].encode())
            elif "sleep" in step:
                wait(lambda: False, step["sleep"])
            elif "credit" in step:
                wait(lambda: uncredited <= 0, 10)
            elif "cancel" in step:
                wait(lambda: fid in cancelled, 10)


if mode == "deaf":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print(f"raw_protocol: mode {mode}, pid {os.getpid()}", flush=True)
hello = {"protocol": 1, "sdk": "raw_protocol", "pid": os.getpid()}
if mode == "shm-short":
    hello["shm"] = True
if mode == "script":
    hello["stream"] = True
send(HELLO, 0, b"this is not json" if mode == "hello-garbage" else json.dumps(hello).encode())
answered = 0
while True:
    ftype, fid, body = read_frame()
    if control(ftype, fid, body):
        continue
    if ftype == LOAD:
        window = json.loads(body).get("stream_window", 0)
        send(READY, 0, b"{}")
    elif ftype == GENERATE:
        script = json.loads(split_body(body)[1] or b"{}").get("script")
        if script is None:
            meta = b'{"content_type": "application/json"}'
            send(GENERATE_RESULT, fid, struct.pack("<I", len(meta)) + meta + b'{"pid": %d}' % os.getpid())
        else:
            run_script(fid, script)
    elif ftype == INFER:
        script = split_body(body)[0].get("parameters", {}).get("script")
        if script is not None:
            run_script(fid, script)
            continue
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
