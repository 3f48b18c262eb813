"""
corral — the Python SDK for writing corral models.

A model is a subclass of ``corral.Model`` in a script the daemon starts as a
worker process (``runtime: python`` in ``model.yaml``)::

    import corral

    class Echo(corral.Model):
        def load(self, ctx):          # once per instance; may take minutes
            self.prefix = ctx.parameters.get("prefix", "")
        def infer(self, request):     # KServe v2 tensors in, dict of tensors out
            return {"OUTPUT0": request.inputs["INPUT0"]}
        def generate(self, request):  # free-form: request.json / request.body
            return corral.Response(b"...", content_type="audio/wav")

    if __name__ == "__main__":
        corral.run(Echo)

Standard library only; numpy is used when importable (set ``CORRAL_NO_NUMPY=1``
to ignore it). With numpy, input tensors are ``numpy.ndarray`` (BYTES as object
arrays of ``bytes``); without it they are ``corral.Tensor`` (``datatype``,
``shape``, flat ``data`` list). BF16 tensors are always ``corral.Tensor`` with
float data, since numpy has no bfloat16.

``infer`` returns a dict of output name to a numpy array, a ``corral.Tensor``,
a nested list or a scalar. Lists and scalars map bool -> BOOL, int -> INT64,
float -> FP64, bytes/str -> BYTES; a scalar becomes shape ``[1]``. numpy dtypes
map exactly (float16/32/64, int8..64, uint8..64, bool; object, bytes_ and str_
arrays -> BYTES).

With ``batching`` in the manifest, ``infer`` gets a batch of requests whole:
each input holds every request's rows concatenated along dimension 0 and
``request.batch_sizes`` the rows of each (``[rows]`` for a single request);
it returns outputs with all the rows, and the daemon gives each request its
own. Or define ``infer_batch(self, requests)`` to get one request each
(inputs are views of its own rows) and return one result per request, in
order: an output dict, or an exception instance that fails only that
request. docs/sdk.md, "Batching", has both in full.

``generate`` returns a ``corral.Response``, bytes, str or dict/list, or yields
chunks: bytes (or ``corral.Stream(chunks, content_type=...)``) or dicts. When
the client asked for a stream they are sent as they come (a ``yield`` waits
while the client is behind), else collected into one reply.
``request.cancelled`` turns true once the client has gone or the deadline has
passed; a streaming generator is then closed at its next ``yield``.

A request may name a session of the daemon's context store: ``request.session``
(a ``corral.Session``: ``id``, ``exists``, ``content``, ``content_type``,
``body``; None when it names none) is its content as the request was accepted,
and ``request.session.update(value)`` (or ``Response(..., session=value)``;
``corral.DELETE`` deletes) is stored once the request has succeeded
(docs/sessions.md, "Sessions and models").

The worker protocol is docs/worker-protocol.md.
"""

from ._model import BadRequest, Context, Model, Request, Response, Sequence, Stream
from ._session import DELETE, Session
from ._tensor import DATATYPES, Tensor, np as _np
from ._worker import SDK_VERSION as __version__
from ._worker import run

HAVE_NUMPY: bool = _np is not None
"""Whether tensors are numpy arrays in this process."""

__all__ = [
    "BadRequest",
    "Context",
    "DATATYPES",
    "DELETE",
    "HAVE_NUMPY",
    "Model",
    "Request",
    "Response",
    "Sequence",
    "Session",
    "Stream",
    "Tensor",
    "run",
    "__version__",
]
