"""A model whose load is slow: for lazy-load and concurrent-start tests."""
import os
import time

import corral


class SlowLoad(corral.Model):
    def load(self, ctx):
        time.sleep(float(ctx.parameters.get("delay", 2)))
        self.instance = ctx.instance_id

    def infer(self, request):
        return {"PID": [os.getpid()], "INSTANCE": [self.instance]}


if __name__ == "__main__":
    corral.run(SlowLoad)
