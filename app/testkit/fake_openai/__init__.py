"""Fake OpenAI-compatible upstream server for memchat tests and benchmarks.

A raw ASGI application (no framework) served by uvicorn.  It is deliberately
cheap per streamed chunk (chunk bytes are pre-encoded with ``msgspec.json``) so
that it can also serve as the "direct" baseline in benchmarks.

Usage::

    python -m app.testkit.fake_openai [--host 127.0.0.1] [--port 0] [--port-file PATH]
        [--reply TEXT] [--first-token-delay S] [--token-delay S] [--tokens N]
        [--embedding-dim 256] [--max-records 10000] [--no-record] [--log-level warning]

Once listening it prints exactly one line ``FAKE_OPENAI_LISTENING <port>`` to
stdout (and writes the port to ``--port-file``).  ``--port 0`` picks a free port.

Importable: ``create_app(FakeConfig(...) | dict | None)`` returns the ASGI app
(a ``FakeOpenAI`` instance); all mutable state (config, rules, records) lives on
that object -- there is no module-level mutable state.

Modules: ``config`` (defaults, overrides, faults, validation), ``state`` (rules,
records, stream counters), ``io`` (ASGI plumbing), ``text`` (tokeniser),
``chat`` (completions, non-streaming), ``streaming``, ``responses``, ``embeddings`` (and
models), ``app`` (routing, control API), ``cli`` (uvicorn entry).

API endpoints (also reachable without the ``/v1`` prefix):

* ``POST /v1/chat/completions`` -- stream true/false, tools, stream_options.
* ``POST /v1/responses``        -- the Responses API, typed SSE events (``responses.py``); 404 when the
  config key ``responses_api`` is false (``--no-responses-api``).
* ``POST /v1/embeddings``       -- deterministic hashed bag-of-words vectors.
* ``GET  /v1/models``, ``GET /v1/models/{id}``.

Reply selection, per request (key-wise merge, later wins):
server defaults (CLI / ``POST /_fake/config``) < first matching rule
(``POST /_fake/rules``) < the request's own ``"fake": {...}`` body field
(the OpenAI SDK sends it with ``extra_body={"fake": {...}}``).
Keys: ``reply``, ``tokens``, ``first_token_delay``, ``token_delay``,
``tool_call``, ``fault``.  A key given as ``null`` explicitly unsets it.

* No reply configured: ``"Echo: " + <text of the last user message>``.
* Tokenisation: regex ``\\S+\\s*|\\s+`` -- each token is a word *with its
  trailing whitespace* (a leading-whitespace run is its own token), so
  ``"".join(tokens) == reply`` and ``"Echo: hi there"`` ->
  ``["Echo: ", "hi ", "there"]``.  One streamed chunk per token.
* ``tokens=N``: with an explicit reply, the reply's tokens are cycled/trimmed
  to exactly N tokens (a space is inserted where the cycle wraps); without an
  explicit reply the text is ``"tok0 tok1 ... tok{N-1}"``.
* ``max_completion_tokens`` / ``max_tokens`` in the request truncate the token
  list; finish_reason is then ``"length"``.
* Usage counts use the same tokeniser (prompt = tokens of all message texts).

Tool calls: when the request has ``tools`` (and ``tool_choice`` is not
``"none"``) and the effective config has ``tool_call: {"name", "arguments"}``
(arguments: JSON string, or an object that is serialised; optional ``id``), or
-- with no tool_call configured -- ``tool_choice`` names a function (or is
``"required"``: first tool), the model "calls" it (arguments ``"{}"`` when not
configured).  Streams: first chunk delta = role + tool_calls[0] header
(index, id, type, function.name, arguments ""), then the arguments in 2+
fragments, finish_reason ``"tool_calls"``.

Faults (``fault`` key): ``status`` (+ ``message``, ``type``, ``code``,
``retry_after``) -> OpenAI-shaped error; ``stall: S`` -> wait S seconds before
the response headers; ``stall_after: N`` + ``stall: S`` -> send N chunks, stall,
continue; ``drop_after: N`` -> send N chunks (the role chunk counts) and abort
the connection (no final chunk, no [DONE], chunked body unterminated);
``end_after: N`` -> send N chunks then end the HTTP response *cleanly* without
the finish chunk and without ``[DONE]`` (the OpenAI SDK just stops iterating).
For non-streaming responses ``drop_after`` sends the headers and half of the
JSON body, then aborts.  Faults apply to embeddings as well.

Control / introspection endpoints (not recorded in ``/_fake/requests``):

* ``GET|DELETE /_fake/requests`` (``?path=SUBSTR`` filters)
* ``GET /_fake/streams`` -- counters + per-stream records; stream states:
  ``open``, ``completed``, ``client_closed`` (client went away; counted in
  ``closed_early``), ``dropped`` (drop_after fault), ``ended_early`` (end_after).
* ``GET|POST|DELETE /_fake/rules`` -- POST a rule object or a list of them:
  ``{"match": "substr"|null, "times": int|null, "endpoint":
  "chat"|"embeddings"|"any" (default chat), ...override keys}``
* ``GET|POST /_fake/config``
* ``POST /_fake/reset``
* ``GET /_fake/health``
"""

from .app import FakeOpenAI, create_app
from .cli import LISTENING_PREFIX, main
from .config import FakeConfig

__all__ = ["LISTENING_PREFIX", "FakeConfig", "FakeOpenAI", "create_app", "main"]
