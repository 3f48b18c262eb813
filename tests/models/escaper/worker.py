"""escaper — a model whose load starts a process that tries to outlive the worker.

Manifest `parameters` (read by load):
  escape   how the started process escapes (default setsid):
           setsid       the child calls setsid(), ignores SIGTERM and sleeps
           double_fork  the child calls setsid() and forks; the grandchild ignores
                        SIGTERM and sleeps, and its parent exits, orphaning it
           hop          like setsid, but every 10 ms the process forks, calls setsid()
                        again in the new child and exits: a moving target, each
                        generation orphaned, whose pid no scan of /proc can keep up with

Every escaped process holds a shared flock on `escaped.WORKERPID.lock` in the model
directory (inherited across its forks), so the lock is free exactly when none of that
worker's is left: a test that can take it exclusively knows they are all gone, whatever
their pids. Each writes
its pid (the first one, for hop) to `escaped.pid`, and load returns only once it is
there. Each ends by itself once the file `exit-now` appears in the model directory,
and after 300 s in any case. infer returns PID (the worker's) and ESCAPED (the pid in
`escaped.pid`).
"""
import os
import subprocess
import sys
import time

import corral

ESCAPEE = r"""
import fcntl, os, signal, sys, time
mode, model_dir, worker = sys.argv[1], sys.argv[2], sys.argv[3]
lock = os.open(os.path.join(model_dir, f"escaped.{worker}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(lock, fcntl.LOCK_SH)
os.setsid()
signal.signal(signal.SIGTERM, signal.SIG_IGN)
if mode == "double_fork" and os.fork() > 0:
    os._exit(0)
tmp = os.path.join(model_dir, f"escaped.pid.{os.getpid()}")
with open(tmp, "w") as f:
    f.write(f"{os.getpid()}\n")
os.rename(tmp, os.path.join(model_dir, "escaped.pid"))
end = time.monotonic() + 300
while time.monotonic() < end and not os.path.exists(os.path.join(model_dir, "exit-now")):
    if mode == "hop":
        time.sleep(0.01)
        if os.fork() > 0:
            os._exit(0)
        os.setsid()
    else:
        time.sleep(0.02)
"""


class Escaper(corral.Model):
    def load(self, ctx):
        mode = str(ctx.parameters.get("escape", "setsid"))
        pid_file = os.path.join(ctx.model_dir, "escaped.pid")
        if os.path.exists(pid_file):
            os.unlink(pid_file)
        self.child = subprocess.Popen([sys.executable, "-c", ESCAPEE, mode, ctx.model_dir, str(os.getpid())],
                                      stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not os.path.exists(pid_file):
            if time.monotonic() > deadline:
                raise RuntimeError(f"escaper: the {mode} process wrote no pid file within 30 s")
            time.sleep(0.01)
        with open(pid_file) as f:
            self.escaped = int(f.read())
        print(f"escaper: instance {ctx.instance_id} (pid {os.getpid()}) started escaped pid {self.escaped} "
              f"({mode})", flush=True)

    def infer(self, request):
        return {"PID": [os.getpid()], "ESCAPED": [self.escaped]}


if __name__ == "__main__":
    corral.run(Escaper)
