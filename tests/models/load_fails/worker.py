"""load_fails — a model whose load fails the way a corrupt checkpoint would."""
import os

import corral


class BadLoad(corral.Model):
    def load(self, ctx):
        if not ctx.parameters.get("fixed"):
            raise ValueError("bad weights")

    def infer(self, request):
        return {"PID": [os.getpid()]}


if __name__ == "__main__":
    corral.run(BadLoad)
