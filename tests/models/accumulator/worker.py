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

    def infer(self, request):
        seq = request.sequence
        x = int(request.inputs["X"].tolist()[0])
        if seq is None:
            return {"SUM": corral.Tensor("INT64", [1], [x]), "STEP": corral.Tensor("INT64", [1], [0]),
                    "INSTANCE": corral.Tensor("INT64", [1], [self.instance]),
                    "PID": corral.Tensor("INT64", [1], [os.getpid()]),
                    "STARTED": corral.Tensor("INT64", [1], [0]), "SEQ": corral.Tensor("BYTES", [1], [b""])}
        key = seq.id
        known = key in self.sums
        if seq.start:
            self.log(f"start {key!r}")
            self.sums[key] = 0
            self.steps[key] = 0
        elif not known:
            raise corral.BadRequest(f"sequence {key!r} is unknown to instance {self.instance}")
        sleep_ms = request.parameters.get("sleep_ms", 0)
        if sleep_ms:
            time.sleep(sleep_ms / 1000)
        self.sums[key] += x
        self.steps[key] += 1
        total, step = self.sums[key], self.steps[key]
        if seq.end:
            self.log(f"end {key!r}")
            del self.sums[key]
            del self.steps[key]
        if request.parameters.get("fail"):
            raise corral.BadRequest("asked to fail")
        return {"SUM": corral.Tensor("INT64", [1], [total]), "STEP": corral.Tensor("INT64", [1], [step]),
                "INSTANCE": corral.Tensor("INT64", [1], [self.instance]),
                "PID": corral.Tensor("INT64", [1], [os.getpid()]),
                "STARTED": corral.Tensor("INT64", [1], [int(known)]),
                "SEQ": corral.Tensor("BYTES", [1], [repr(key).encode()])}

    def end_sequence(self, sequence_id, reason):
        self.log(f"released {sequence_id!r} {reason}")
        self.sums.pop(sequence_id, None)
        self.steps.pop(sequence_id, None)


if __name__ == "__main__":
    corral.run(Accumulator)
