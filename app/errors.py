"""memchat's exception hierarchy.

Services raise these; ``app.api.errors`` renders them in the error shape of the API surface the request
came through. Nothing here knows about HTTP frameworks.
"""

from __future__ import annotations

from typing import Any


class MemchatError(Exception):
    """Base class: an error with an HTTP status and a client-safe message."""

    status_code: int = 500
    error_type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status_code: int | None = None,
        loc: tuple[str | int, ...] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code
        self.loc = loc


class InvalidRequest(MemchatError):
    status_code = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class PayloadTooLarge(InvalidRequest):
    status_code = 413
    code = "payload_too_large"


class AuthenticationFailed(MemchatError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(MemchatError):
    status_code = 403
    error_type = "permission_error"
    code = "forbidden"


class NotFound(MemchatError):
    status_code = 404
    error_type = "not_found_error"
    code = "not_found"


class UpstreamError(MemchatError):
    """The upstream LLM failed. ``body`` carries the upstream's own error object when it sent one."""

    status_code = 502
    error_type = "upstream_error"
    code = "upstream_error"

    def __init__(self, message: str, *, status_code: int = 502, body: Any = None, code: str | None = None) -> None:
        super().__init__(message, status_code=status_code, code=code)
        self.body = body


class UpstreamTimeout(UpstreamError):
    code = "upstream_timeout"

    def __init__(self, message: str = "the upstream model did not answer in time") -> None:
        super().__init__(message, status_code=504)


class ServiceUnavailable(MemchatError):
    status_code = 503
    error_type = "server_error"
    code = "unavailable"
