"""dies_in_load — dies during load on every start (a crash loop)."""
import os
import sys

import corral


class CrashLoop(corral.Model):
    def load(self, ctx):
        print(f"dies_in_load: instance {ctx.instance_id} dying in load", file=sys.stderr, flush=True)
        os._exit(3)

    def infer(self, request):
        return {"PID": [os.getpid()]}


if __name__ == "__main__":
    corral.run(CrashLoop)
