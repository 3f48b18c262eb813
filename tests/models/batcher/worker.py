"""batcher — a batching model whose behaviour the tests steer (tests/blackbox/test_batching.py).

Manifest `env`: BATCHER_FORM=infer_batch gives the model infer_batch (one request object each);
otherwise infer gets the whole batch. Manifest `parameters`:
  bad_rows   answer every batch with one row too many (the daemon must fail the batch, 502)

Request `parameters` (any request of a batch):
  sleep      seconds the batch sleeps before answering
  fail       (infer_batch form) this request alone fails with BadRequest

Every batch appends one line to batches.log in the model directory (its requests' row counts, space-separated)
and one to batches.log.ids (their request ids, '-' for none).
"""
import os
import time

import corral


class Batcher(corral.Model):
    def load(self, ctx):
        self.log = os.path.join(ctx.model_dir, "batches.log")
        self.bad_rows = bool(ctx.parameters.get("bad_rows"))

    def _record(self, sizes, params, ids):
        with open(self.log + ".ids", "a") as f:
            f.write(" ".join(i or "-" for i in ids) + "\n")
        with open(self.log, "a") as f:
            f.write(" ".join(str(s) for s in sizes) + "\n")
        delay = max(float((p or {}).get("sleep", 0)) for p in params)
        if delay:
            time.sleep(delay)

    def infer(self, request):
        self._record(request.batch_sizes, request.batch_parameters, request.batch_ids)
        x = request.inputs["INPUT0"]
        total = sum(request.batch_sizes)
        n = total + (1 if self.bad_rows else 0)
        return {"OUTPUT0": x, "BATCH_ROWS": corral.Tensor("INT32", [n], [total] * n)}


class OneByOne(corral.Model):
    def load(self, ctx):
        self.log = os.path.join(ctx.model_dir, "batches.log")

    def infer_batch(self, requests):
        with open(self.log, "a") as f:
            f.write(" ".join(str(r.batch_sizes[0]) for r in requests) + "\n")
        total = sum(r.batch_sizes[0] for r in requests)
        out = []
        for r in requests:
            if (r.parameters or {}).get("fail"):
                out.append(corral.BadRequest(f"request {r.id} asked to fail"))
                continue
            n = r.batch_sizes[0]
            out.append({"OUTPUT0": r.inputs["INPUT0"], "BATCH_ROWS": corral.Tensor("INT32", [n], [total] * n)})
        return out


if __name__ == "__main__":
    corral.run(OneByOne if os.environ.get("BATCHER_FORM") == "infer_batch" else Batcher)
