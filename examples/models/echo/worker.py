"""
echo — a corral model that returns its inputs.

infer renames each input INPUTn -> OUTPUTn (more generally, a leading "INPUT"
becomes "OUTPUT"; any other name is returned unchanged) and returns the tensor
as received: same datatype, shape and bytes. generate answers a JSON body with
{"echo": body} and any other body with the same bytes and content type.

With `batching` in the manifest, infer gets a batch whole: each input holds
every request's rows, and returning them as they are gives each request its
own rows back.
"""

from typing import Any, Dict

import corral


def output_name(input_name: str) -> str:
    """INPUT0 -> OUTPUT0; names not starting with INPUT are kept."""
    if input_name.startswith("INPUT"):
        return "OUTPUT" + input_name[len("INPUT"):]
    return input_name


class Echo(corral.Model):
    def load(self, ctx: corral.Context) -> None:
        print(f"echo: instance {ctx.instance_id} of {ctx.name} loaded on {ctx.device}")

    def infer(self, request: corral.Request) -> Dict[str, Any]:
        return {output_name(name): tensor for name, tensor in request.inputs.items()}

    def generate(self, request: corral.Request) -> Any:
        if request.json is not None:
            return {"echo": request.json}
        return corral.Response(request.body, content_type=request.content_type or "application/octet-stream")


if __name__ == "__main__":
    corral.run(Echo)
