"""counts_spawns — a model for the fault-injection tests (see model.yaml)."""
import os
import sys
import time

import corral


class FaultCtl(corral.Model):
    def load(self, ctx):
        with open(os.path.join(ctx.model_dir, "spawns"), "a") as f:
            f.write(f"{os.getpid()}\n")
        if ctx.parameters.get("die_in_load"):
            print(f"counts_spawns: instance {ctx.instance_id} dying in load", file=sys.stderr, flush=True)
            os._exit(3)
        self.count = 0

    def infer(self, request):
        p = request.parameters or {}
        self.count += 1
        entered = time.time()
        if p.get("sleep"):
            time.sleep(float(p["sleep"]))
        if "exit" in p:
            print(f"counts_spawns: exiting with status {p['exit']} on request", file=sys.stderr, flush=True)
            os._exit(int(p["exit"]))
        return {"PID": [os.getpid()], "COUNT": [self.count], "ID": [request.id], "T": [entered]}

    def generate(self, request):
        body = request.json or {}
        self.count += 1
        time.sleep(float(body.get("sleep", 0)))
        return {"pid": os.getpid(), "count": self.count}


if __name__ == "__main__":
    corral.run(FaultCtl)
