"""
declares — returns its inputs (INPUT0 -> OUTPUT0, others unchanged), and
declares in READY the inputs and outputs its parameters name: the SDK sends
a Model's `inputs` and `outputs` attributes once load returns.
"""

from typing import Any, Dict

import corral


class Declares(corral.Model):
    def load(self, ctx: corral.Context) -> None:
        self.inputs = ctx.parameters.get("inputs")
        self.outputs = ctx.parameters.get("outputs")

    def infer(self, request: corral.Request) -> Dict[str, Any]:
        return {("OUTPUT0" if name == "INPUT0" else name): t for name, t in request.inputs.items()}


if __name__ == "__main__":
    corral.run(Declares)
