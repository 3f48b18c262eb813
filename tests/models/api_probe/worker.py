"""api_probe: a corral model whose behaviour each request chooses (see model.yaml)."""
import os
import sys
import time

import corral


class Probe(corral.Model):
    def load(self, ctx):
        self.params = ctx.parameters
        self.served = 0
        time.sleep(float(self.params.get("load_delay", 0)))
        if self.params.get("fail_load"):
            raise RuntimeError(str(self.params["fail_load"]))
        print(f"api_probe: instance {ctx.instance_id} loaded pid {os.getpid()}", flush=True)

    def infer(self, request):
        params = request.parameters
        mode = params.get("mode", "")
        text = str(params.get("text", ""))
        if mode == "raise":
            raise RuntimeError("boom: " + text)
        if mode == "bad":
            raise corral.BadRequest("rejected: " + text)
        if mode == "exit":
            sys.stdout.flush()
            os._exit(int(params.get("status", 3)))
        if mode == "sleep":
            time.sleep(float(params.get("seconds", 1)))
        if mode == "print":
            print(f"stdout says {text}", flush=True)
            print(f"stderr says {text}", file=sys.stderr, flush=True)
        outputs = {}
        for name, tensor in request.inputs.items():
            outputs["OUTPUT" + name[5:] if name.startswith("INPUT") else name] = tensor
        self.served += 1
        outputs["PID"] = [os.getpid()]
        outputs["SEQ"] = [self.served]
        return outputs

    def generate(self, request):
        return {"pid": os.getpid(), "json": request.json}

    def unload(self):
        time.sleep(float(self.params.get("unload_delay", 0)))
        print("api_probe: unloaded", flush=True)


if __name__ == "__main__":
    corral.run(Probe)
