"""Every error leaves memchat in one place, shaped for the API surface it came through.

- OpenAI surface (``/v1/...``): ``{"error": {"message", "type", "param", "code"}}``
- Memory REST API (``/api/...``): ``{"detail": [{"loc", "msg", "type"}]}``
- Personal chat API (``/serve/...``): ``{"code", "msg", "data": null, "session_id", "failed": true,
  "success": false}``
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from app.errors import MemchatError, UpstreamError

log = logging.getLogger("memchat.errors")

# Personal-chat error codes (documented in README).
PERSONAL_CODES = {400: "4000", 401: "4010", 403: "4030", 404: "4040", 405: "4050", 413: "4130", 422: "4000",
                  429: "4290", 502: "5020", 503: "5030", 504: "5040"}

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
          422: "invalid_request_error", 429: "rate_limit_error"}


class ErrorInfo:
    __slots__ = ("status", "message", "type", "param", "code", "loc", "upstream_body", "extra")

    def __init__(self, status: int, message: str, type_: str, param: str | None = None, code: str | None = None,
                 loc: tuple[Any, ...] | None = None, upstream_body: Any = None) -> None:
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.loc, self.upstream_body = loc, upstream_body
        self.extra: dict[str, Any] = {}


def describe(exc: Exception) -> ErrorInfo:
    if isinstance(exc, MemchatError):
        info = ErrorInfo(exc.status_code, exc.message, exc.error_type, exc.param, exc.code, exc.loc)
        if isinstance(exc, UpstreamError):
            info.upstream_body = exc.body
        return info
    if isinstance(exc, HTTPException):
        status = exc.status_code
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if isinstance(exc, ValidationException) and isinstance(exc.extra, list):
            info = ErrorInfo(400, message, "invalid_request_error", code="invalid_request")
            info.extra["errors"] = exc.extra
            return info
        return ErrorInfo(status, message, _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error"),
                         code=None)
    log.exception("unhandled error", exc_info=exc)
    return ErrorInfo(500, "memchat hit an internal error; it has been logged", "server_error", code="internal_error")


def openai_error(info: ErrorInfo) -> Response[Any]:
    if isinstance(info.upstream_body, dict) and info.status < 500 and "message" in info.upstream_body:
        body = {"error": info.upstream_body}  # the upstream's own 4xx error, passed through
    else:
        body = {"error": {"message": info.message, "type": info.type, "param": info.param, "code": info.code}}
    return Response(body, status_code=info.status, headers=_auth_header(info))


def rest_error(info: ErrorInfo) -> Response[Any]:
    if "errors" in info.extra:
        detail = [{"loc": ["query", str(e.get("key", ""))], "msg": str(e.get("message", "")), "type": "value_error"}
                  for e in info.extra["errors"] if isinstance(e, dict)]
        return Response({"detail": detail}, status_code=422)
    loc = list(info.loc) if info.loc else (["body", info.param] if info.param else [])
    status = 422 if info.status == 400 else info.status
    return Response({"detail": [{"loc": loc, "msg": info.message, "type": info.code or info.type}]},
                    status_code=status, headers=_auth_header(info))


def personal_error(info: ErrorInfo, session_id: str | None = None) -> Response[Any]:
    body = {"code": PERSONAL_CODES.get(info.status, "5000" if info.status >= 500 else "4000"), "msg": info.message,
            "data": None, "session_id": session_id, "failed": True, "success": False}
    return Response(body, status_code=info.status, headers=_auth_header(info))


def _auth_header(info: ErrorInfo) -> dict[str, str] | None:
    return {"www-authenticate": 'Bearer realm="memchat"'} if info.status == 401 else None


def surface_of(path: str) -> str:
    if path.startswith("/serve/"):
        return "personal"
    if path.startswith("/api/"):
        return "rest"
    return "openai"


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    info = describe(exc)
    surface = surface_of(request.url.path)
    if surface == "personal":
        return personal_error(info, request.scope.get("memchat_session_id"))  # type: ignore[arg-type]
    if surface == "rest":
        return rest_error(info)
    return openai_error(info)
