"""lc_crashloop — dies during load on every start (a crash loop)."""
import os
import sys

import corral


class CrashLoop(corral.Model):
    def load(self, ctx):
        print(f"lc_crashloop: instance {ctx.instance_id} dying in load", file=sys.stderr, flush=True)
        os._exit(3)

    def infer(self, request):
        return {"PID": [os.getpid()]}


if __name__ == "__main__":
    corral.run(CrashLoop)
