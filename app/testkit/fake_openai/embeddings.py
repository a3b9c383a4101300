"""``POST /v1/embeddings`` and ``GET /v1/models``: deterministic vectors (signed hashed bag of words,
L2-normalised) so that texts sharing words are near each other and tests can rely on the ranking without
a real model."""

from __future__ import annotations

import array
import base64
import hashlib
import math
import sys
from typing import Any

import msgspec

from . import io
from .config import MODELS, OVERRIDE_KEYS, ApiError, bad, is_int, validate_overrides
from .state import FakeState
from .text import WORD_RE


def _word_hash(cache: dict[str, int], w: str) -> int:
    h = cache.get(w)
    if h is None:
        h = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
        if len(cache) > 200_000:
            cache.clear()
        cache[w] = h
    return h


def embed(cache: dict[str, int], text: str, dim: int) -> list[float]:
    """Signed hashed bag-of-words, L2-normalised (deterministic)."""
    words = WORD_RE.findall(text.lower())
    if not words:
        stripped = text.strip().lower()
        words = [stripped or text]
    vec = [0.0] * dim
    for w in words:
        h = _word_hash(cache, w)
        vec[h % dim] += 1.0 if (h >> 63) & 1 else -1.0
    norm = math.sqrt(sum(x * x for x in vec))
    if norm > 0:
        inv = 1.0 / norm
        vec = [x * inv for x in vec]
    return vec


def _inputs(body: dict[str, Any]) -> list[str]:
    inp = body.get("input")
    if isinstance(inp, str):
        inputs = [inp]
    elif isinstance(inp, list) and inp and all(isinstance(x, str) for x in inp):
        inputs = inp
    elif isinstance(inp, list) and inp:
        raise bad("token-array inputs are not supported by the fake server; send strings", param="input")
    else:
        raise bad("'input' must be a non-empty string or a non-empty array of strings", param="input")
    if any(x == "" for x in inputs):
        raise bad("'$.input' is invalid: empty strings are not allowed", param="input")
    return inputs


def _parse(body: Any, default_dim: int) -> tuple[str, list[str], int, str, dict[str, Any]]:
    """(model, inputs, dimensions, encoding_format, the request's ``fake`` overrides), or a 400."""
    if not isinstance(body, dict):
        raise bad("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad("you must provide a model parameter", param="model")
    inputs = _inputs(body)
    dim = body.get("dimensions")
    if dim is None:
        dim = default_dim
    elif not (is_int(dim) and 1 <= dim <= 65536):
        raise bad("'dimensions' must be a positive integer", param="dimensions")
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise bad("'encoding_format' must be 'float' or 'base64'", param="encoding_format")
    return model, inputs, dim, fmt, validate_overrides(body.get("fake"), OVERRIDE_KEYS, "fake")


def _encoded(vec: list[float], fmt: str) -> Any:
    if fmt != "base64":
        return vec
    arr = array.array("f", vec)
    if sys.byteorder != "little":
        arr.byteswap()
    return base64.b64encode(arr.tobytes()).decode("ascii")


async def handle_embeddings(state: FakeState, body: Any, receive: Any, send: Any) -> None:
    model, inputs, dim, fmt, fake = _parse(body, state.config.embedding_dim)
    eff = state.effective("embeddings", inputs, lambda: "", fake)
    fault = eff.get("fault")
    if not await io.pre_response_faults(fault, receive):
        return
    data = []
    n_words = 0
    for i, text in enumerate(inputs):
        vec = embed(state.hash_cache, text, dim)
        n_words += max(1, len(WORD_RE.findall(text)))
        data.append({"object": "embedding", "index": i, "embedding": _encoded(vec, fmt)})
    obj = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": n_words, "total_tokens": n_words},
    }
    if fault and fault.get("drop_after") is not None:
        await io.send_partial_and_drop(send, 200, msgspec.json.encode(obj))
        return
    await io.send_json(send, 200, obj)


def _model(mid: str) -> dict[str, Any]:
    return {"id": mid, "object": "model", "created": 0, "owned_by": "fake"}


async def handle_models(api_path: str, send: Any) -> None:
    """``GET /models`` or ``GET /models/{id}``."""
    if api_path == "/models":
        await io.send_json(send, 200, {"object": "list", "data": [_model(m) for m in MODELS]})
        return
    mid = api_path[len("/models/"):]
    if mid not in MODELS:
        raise ApiError(404, f"The model '{mid}' does not exist", code="model_not_found", param="model")
    await io.send_json(send, 200, _model(mid))
