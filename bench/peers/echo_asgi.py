"""echo_asgi — the echo model as a FastAPI app, for uvicorn (see echo_logic.py).

The handler takes the raw body (no pydantic model), which is the fastest
way FastAPI offers to serve it.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import JSONResponse, Response  # noqa: E402

import echo_logic  # noqa: E402

app = FastAPI()


@app.post("/v2/models/{name}/infer")
async def infer(name: str, request: Request) -> Response:
    body = await request.body()
    try:
        out, head_len = echo_logic.infer(body, request.headers.get("inference-header-content-length"))
    except (echo_logic.BadRequest, KeyError, ValueError, TypeError) as e:
        return JSONResponse({"error": str(e)}, status_code=400)
    if head_len is None:
        return Response(out, media_type="application/json")
    return Response(out, media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(head_len)})
