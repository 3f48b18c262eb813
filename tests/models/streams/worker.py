"""streams — yields events or bytes as the streaming tests ask (see model.yaml)."""
import os
import time

import corral


class Streams(corral.Model):
    def load(self, ctx):
        self.log = os.path.join(ctx.model_dir, "log")

    def note(self, what, yields, request):
        with open(self.log, "a") as f:
            f.write(f"{what} yields={yields} cancelled={int(request.cancelled)}\n")

    def generate(self, request):
        body = request.json or {}
        if "wait" in body:
            end = time.monotonic() + float(body["wait"])
            while time.monotonic() < end and not request.cancelled:
                time.sleep(0.02)
            self.note("wait", 0, request)
            return {"waited": True, "cancelled": request.cancelled}
        if "reply" in body:
            return corral.Response(str(body["reply"]), content_type=str(body["content_type"]))
        if "bytes" in body:
            return corral.Stream(self.byte_chunks(request, int(body["bytes"]), int(body.get("chunk", 65536))),
                                 content_type="text/x-test")
        return self.events(request, body)

    def byte_chunks(self, request, total, chunk):
        n = 0
        try:
            while total > 0:
                take = min(chunk, total)
                n += 1
                yield b"x" * take
                total -= take
        finally:
            self.note("bytes", n, request)

    def events(self, request, body):
        n = 0
        delay = float(body.get("delay", 0))
        try:
            for value in body.get("yield", ()):
                n += 1
                yield value
            k = 0
            while body.get("forever") or k < int(body.get("events", body.get("fail_after", body.get("exit_after", 0)))):
                if k and delay:
                    time.sleep(delay)
                n += 1
                yield {"i": k, "tag": body.get("tag")}
                k += 1
                if body.get("forever"):
                    time.sleep(0.05)
            if "fail_after" in body:
                raise ValueError(f"failed after {k} chunks")
            if "exit_after" in body:
                os._exit(3)
        finally:
            self.note("events", n, request)


if __name__ == "__main__":
    corral.run(Streams)
