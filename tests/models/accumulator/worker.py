"""accumulator: per-sequence running sums (see model.yaml).

Request parameters: ``sleep_ms`` sleeps before answering (to hold the
sequence's slot, or the instance), ``fail`` raises BadRequest after adding.
"""
import os
import threading
import time

import corral


class Accumulator(corral.Model):
    def load(self, ctx):
        self.instance = ctx.instance_id
        self.sums = {}
        self.steps = {}
        self.lock = threading.Lock()
        self.log_path = os.path.join(ctx.model_dir, "events.log")

    def log(self, text):
        with self.lock, open(self.log_path, "a") as f:
            f.write(f"{self.instance} {os.getpid()} {text}\n")

    def step(self, seq, x, parameters):
        """One request of sequence seq adding x: (sum, step, whether the instance knew the sequence)."""
        key = seq.id
        known = key in self.sums
        if seq.start:
            self.log(f"start {key!r}")
            self.sums[key] = 0
            self.steps[key] = 0
        elif not known:
            raise corral.BadRequest(f"sequence {key!r} is unknown to instance {self.instance}")
        sleep_ms = parameters.get("sleep_ms", 0)
        if sleep_ms:
            time.sleep(sleep_ms / 1000)
        self.sums[key] += x
        self.steps[key] += 1
        total, step = self.sums[key], self.steps[key]
        if seq.end:
            self.log(f"end {key!r}")
            del self.sums[key]
            del self.steps[key]
        if parameters.get("fail"):
            raise corral.BadRequest("asked to fail")
        return total, step, known

    def infer(self, request):
        seq = request.sequence
        x = int(request.inputs["X"].tolist()[0])
        total, step, known = self.step(seq, x, request.parameters) if seq else (x, 0, False)
        return {"SUM": corral.Tensor("INT64", [1], [total]), "STEP": corral.Tensor("INT64", [1], [step]),
                "INSTANCE": corral.Tensor("INT64", [1], [self.instance]),
                "PID": corral.Tensor("INT64", [1], [os.getpid()]),
                "STARTED": corral.Tensor("INT64", [1], [int(known)]),
                "SEQ": corral.Tensor("BYTES", [1], [repr(seq.id).encode() if seq else b""])}

    def generate(self, request):
        """Triton's generate: {"x": n} adds n to the sequence named in the request's parameters."""
        seq = request.sequence
        if seq is None:
            raise corral.BadRequest("generate takes a sequence")
        total, step, _ = self.step(seq, int((request.json or {}).get("x", 0)), request.parameters)
        return {"sum": total, "step": step, "instance": self.instance, "seq": repr(seq.id)}

    def end_sequence(self, sequence_id, reason):
        self.log(f"released {sequence_id!r} {reason}")
        self.sums.pop(sequence_id, None)
        self.steps.pop(sequence_id, None)


if __name__ == "__main__":
    corral.run(Accumulator)
