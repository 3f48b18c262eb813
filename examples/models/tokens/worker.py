"""tokens — yields the words of the request's text one at a time, `delay` seconds apart.

The LLM-shaped example of streaming: each word is an event
({"index": i, "token": word}); a client that leaves stops the loop at the
next word (the generator is closed there).
"""
import time

import corral


class Tokens(corral.Model):
    def generate(self, request):
        body = request.json or {}
        words = str(body.get("text", "")).split()
        if not words:
            raise corral.BadRequest("'text' is empty")
        delay = float(body.get("delay", 0.05))
        if not 0 <= delay <= 10:
            raise corral.BadRequest("'delay' must be from 0 to 10 seconds")

        def tokens():
            for i, word in enumerate(words):
                if i and delay:
                    time.sleep(delay)
                yield {"index": i, "token": word}

        return tokens()


if __name__ == "__main__":
    corral.run(Tokens)
