"""tts_whole — a plain whole-file text-to-speech server: what corral's streamed TTS is compared with.

    /usr/bin/python3 bench/peers/tts_whole.py PORT

POST / with {"text": ..., "voice": "en", "rate": 175} runs `espeak-ng --stdout` on the text
(one process per request, as a simple web service would), waits for the whole WAV and answers
it with its length known: the client's first byte comes when the last one is ready. Standard
library only; serves one request at a time on 127.0.0.1.
"""
from __future__ import annotations

import http.server
import json
import struct
import subprocess
import sys


def whole_wav(text: str, voice: str, rate: int) -> bytes:
    wav = subprocess.run(["espeak-ng", "--stdout", "-v", voice, "-s", str(rate), "--stdin"], input=text.encode(),
                         capture_output=True, check=True, timeout=60).stdout
    # espeak-ng writes to a pipe, so its header says "unknown length"; a whole file knows it.
    if len(wav) >= 44 and wav[:4] == b"RIFF" and wav[36:40] == b"data":
        wav = wav[:4] + struct.pack("<I", len(wav) - 8) + wav[8:40] + struct.pack("<I", len(wav) - 44) + wav[44:]
    return wav


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        try:
            req = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            wav = whole_wav(req["text"], req.get("voice") or "en", int(req.get("rate") or 175))
        except (ValueError, KeyError, TypeError, subprocess.SubprocessError) as e:
            body = json.dumps({"error": f"{type(e).__name__}: {e}"}).encode()
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", "audio/wav")
        self.send_header("Content-Length", str(len(wav)))
        self.end_headers()
        self.wfile.write(wav)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        pass


def main() -> int:
    port = int(sys.argv[1])
    with http.server.HTTPServer(("127.0.0.1", port), Handler) as server:
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
