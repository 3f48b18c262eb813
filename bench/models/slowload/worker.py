"""slowload — a model whose load takes parameters.delay seconds (the cold-start benchmark).

load sleeps rather than computes, so N instances loading at once do not
compete for the CPU: the benchmark measures how the daemon starts them, not
how many cores the machine has.
"""
import time

import corral


class SlowLoad(corral.Model):
    def load(self, ctx: corral.Context) -> None:
        time.sleep(float(ctx.parameters.get("delay", 2)))

    def infer(self, request: corral.Request) -> dict:
        return {"OUTPUT0": [1]}


if __name__ == "__main__":
    corral.run(SlowLoad)
