"""steerable — a model whose behaviour the tests steer.

Manifest `parameters` (read by load):
  load_delay     seconds load sleeps (default 0)
  unload_delay   seconds unload sleeps (default 0)
  crash_after    exit with status 3 while handling the Nth request (default never)
  tag            any value; infer returns it as TAG (shows which manifest is running)
  spawn_child    start a `sleep 300` child in load; infer returns its pid as CHILD

Request `parameters` (read by infer):
  sleep          seconds to sleep before answering
  exit           exit the process with this status while holding the request
  raise          raise RuntimeError with this text
  bad            raise corral.BadRequest with this text (a 400)
  say            print this line to stdout
  say_err        print this line to stderr

infer always returns PID, INSTANCE, COUNT (requests this process served), TAG and CHILD
(0 without spawn_child).
"""
import os
import subprocess
import sys
import time

import corral


class Ctl(corral.Model):
    def load(self, ctx):
        p = ctx.parameters
        print(f"steerable: instance {ctx.instance_id} loading (pid {os.getpid()})", flush=True)
        print(f"steerable: stderr hello from instance {ctx.instance_id}", file=sys.stderr, flush=True)
        time.sleep(float(p.get("load_delay", 0)))
        self.instance = ctx.instance_id
        self.crash_after = int(p.get("crash_after", 0))
        self.unload_delay = float(p.get("unload_delay", 0))
        self.tag = str(p.get("tag", ""))
        self.count = 0
        self.child = subprocess.Popen(["sleep", "300"]) if p.get("spawn_child") else None

    def infer(self, request):
        p = request.parameters or {}
        self.count += 1
        if p.get("say"):
            print(p["say"], flush=True)
        if p.get("say_err"):
            print(p["say_err"], file=sys.stderr, flush=True)
        if p.get("sleep"):
            time.sleep(float(p["sleep"]))
        if "exit" in p:
            print(f"steerable: exiting with status {p['exit']} on request", file=sys.stderr, flush=True)
            os._exit(int(p["exit"]))
        if self.crash_after and self.count >= self.crash_after:
            print(f"steerable: crashing after {self.count} requests", file=sys.stderr, flush=True)
            os._exit(3)
        if p.get("raise"):
            raise RuntimeError(str(p["raise"]))
        if p.get("bad"):
            raise corral.BadRequest(str(p["bad"]))
        return {"PID": [os.getpid()], "INSTANCE": [self.instance], "COUNT": [self.count], "TAG": [self.tag],
                "CHILD": [self.child.pid if self.child else 0]}

    def unload(self):
        print(f"steerable: instance {self.instance} unloading", flush=True)
        time.sleep(self.unload_delay)


if __name__ == "__main__":
    corral.run(Ctl)
