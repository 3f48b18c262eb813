"""counter: reads the session a request names and answers with an update.

infer: outputs INSTANCE (INT64, this instance's id, per row) and SEEN (BYTES,
per row: what that row's request saw of its session, as JSON). With
batching, infer gets the batch whole and updates each request's session
(request.batch_sessions); BATCH (INT64, per row) is the batch's request count.
parameters.mode:
  "append" (default)  {"items": [...]} gets this instance's id appended
  "read"              no update
  "bytes"             the session becomes b"\\x00\\x01raw" as application/x-test
  "delete"            deletes it
  "big"               a JSON string of parameters.size characters
  "raise" / "bad"     sets an update, then raises (500) / BadRequest (400)
  "die"               sets an update, then the process exits
parameters.sleep: seconds to sleep first; parameters.ttl: the update's ttl.

generate: the body {"mode": ..., "events": n} (a JSON body naming its
session with "session", or a raw one with the Session-Id header): a stream
of n events when the client takes one (the update set after the first),
else one JSON object, the update sent with corral.Response(session=...).
"fail_after" raises after the update is set; "as_list" answers a list.
"""

import json
import os
import time

import corral


def describe(s):
    if s is None:
        return None
    seen = {"id": s.id, "exists": s.exists, "content_type": s.content_type}
    if isinstance(s.content, bytes):
        seen["hex"] = s.content.hex()
    else:
        seen["content"] = s.content
    return seen


class Counter(corral.Model):
    def load(self, ctx):
        self.instance = ctx.instance_id

    def next_value(self, s, parameters):
        """The update mode asks for (corral.DELETE included); None for none."""
        mode = parameters.get("mode", "append")
        if mode == "append":
            items = s.content.get("items", []) if s.exists and isinstance(s.content, dict) else []
            return {"items": list(items) + [self.instance]}
        if mode == "bytes":
            return b"\x00\x01raw"
        if mode == "delete":
            return corral.DELETE
        if mode == "big":
            return "x" * int(parameters.get("size", 10))
        if mode in ("raise", "bad", "die"):
            return {"should_not": "be stored"}
        return None

    def update(self, s, parameters):
        if s is None:
            return
        value = self.next_value(s, parameters)
        if value is not None:
            s.update(value, content_type="application/x-test" if isinstance(value, bytes) else None,
                     ttl=parameters.get("ttl"))
        mode = parameters.get("mode")
        if mode == "raise":
            raise ValueError("raised as asked")
        if mode == "bad":
            raise corral.BadRequest("refused as asked")
        if mode == "die":
            os._exit(3)

    def infer(self, request):
        parameters = request.parameters
        if parameters.get("sleep"):
            time.sleep(float(parameters["sleep"]))
        rows = sum(request.batch_sizes)
        seen = []
        for size, s, p in zip(request.batch_sizes, request.batch_sessions, request.batch_parameters):
            seen += [json.dumps(describe(s))] * size
            self.update(s, p)
        return {"INSTANCE": [self.instance] * rows, "SEEN": seen, "BATCH": [len(request.batch_sizes)] * rows}

    def generate(self, request):
        body = request.json if request.json is not None else {}
        s = request.session
        parameters = body if isinstance(body, dict) else {}
        answer = {"instance": self.instance, "seen": describe(s)}
        if parameters.get("events"):
            def events():
                yield answer
                if s is not None:
                    s.update(self.next_value(s, parameters))
                if parameters.get("fail_after"):
                    raise ValueError("the stream broke")
                for i in range(1, int(parameters["events"])):
                    yield {"i": i}
            return events()
        value = self.next_value(s, parameters) if s is not None else None
        if parameters.get("as_list"):  # not an object: Triton's generate answers 500
            answer = [answer]
        if value is None:
            return answer
        return corral.Response(answer, session=value)


if __name__ == "__main__":
    corral.run(Counter)
