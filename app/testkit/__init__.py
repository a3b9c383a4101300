"""memchat's test kit: what tests, benchmarks and scripts need to drive memchat from the outside.

It ships inside the ``app`` package (like ``litestar.testing``) so that tests and scripts import it without
editing the import path, and it is the top layer: nothing else in ``app`` imports it.

* ``process``: ``ManagedProcess``, the one launcher of child processes (log file, readiness, graceful stop,
  ``kill9``), ``free_port``, readiness checks;
* ``memchat_server``: ``MemchatServer`` (``python -m app serve`` on a free port);
* ``fake_upstream``: ``FakeUpstream``, the fake OpenAI server in a subprocess plus its control API;
* ``fake_openai``: the fake OpenAI-compatible server itself (``python -m app.testkit.fake_openai``);
* ``rawhttp``: hand-written HTTP/1.1 (``raw_request``, ``RawConnection``) and ``http_call``;
* ``sse``: ``SSEDecoder`` and the timing SSE client ``SSEClient`` / ``StreamResult``;
* ``chunks``: the msgspec structs of streamed frames (OpenAI chunks, memories.ai-style messages);
* ``serve_for``: ``python -m app.testkit.serve_for -- CMD``, a command against a throw-away memchat.
"""

from .fake_upstream import FakeUpstream, FakeUpstreamError
from .memchat_server import MemchatServer, MemchatServerError
from .process import REPO_ROOT, ManagedProcess, ProcessError, free_port, http_ready, tcp_ready
from .rawhttp import raw_request

__all__ = [
    "REPO_ROOT", "FakeUpstream", "FakeUpstreamError", "ManagedProcess", "MemchatServer", "MemchatServerError",
    "ProcessError", "free_port", "http_ready", "raw_request", "tcp_ready",
]
