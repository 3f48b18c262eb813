"""leaks_memory — every request allocates memory that is never released (see model.yaml)."""
import os
import subprocess
import sys
import time

import corral

CHILD = "import sys, time\nb = bytearray(b'\\x01') * (int(sys.argv[1]) << 20)\ntime.sleep(600)\n"


def touched(mib):
    # Repeating one byte writes every page, so all of it is resident.
    return bytearray(b"\x01") * (mib << 20)


class Leak(corral.Model):
    def load(self, ctx):
        p = ctx.parameters
        self.leak_mb = int(p.get("leak_mb", 20))
        self.hoard = []
        if int(p.get("initial_mb", 0)):
            self.hoard.append(touched(int(p["initial_mb"])))
        self.child = None
        if int(p.get("child_mb", 0)):
            self.child = subprocess.Popen([sys.executable, "-c", CHILD, str(int(p["child_mb"]))])
        self.count = 0
        print(f"leaks_memory: instance {ctx.instance_id} loaded (pid {os.getpid()})", flush=True)

    def infer(self, request):
        p = request.parameters or {}
        mib = int(p.get("leak_mb", self.leak_mb))
        if mib:
            self.hoard.append(touched(mib))
        self.count += 1
        if p.get("sleep"):
            time.sleep(float(p["sleep"]))
        held = sum(len(b) for b in self.hoard) >> 20
        return {"PID": [os.getpid()], "COUNT": [self.count], "HELD_MB": [held],
                "CHILD": [self.child.pid if self.child else 0]}


if __name__ == "__main__":
    corral.run(Leak)
