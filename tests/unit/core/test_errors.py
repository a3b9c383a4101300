"""`app.errors`: statuses, types and codes of memchat's exceptions, and per-instance overrides."""

from __future__ import annotations

import pytest

from app.errors import (AuthenticationFailed, InvalidRequest, MemchatError, NotFound, PayloadTooLarge,
                        PermissionDenied, ServiceUnavailable, UpstreamError, UpstreamTimeout)


@pytest.mark.parametrize(("cls", "status", "type_", "code"), [
    (MemchatError, 500, "server_error", None),
    (InvalidRequest, 400, "invalid_request_error", "invalid_request"),
    (PayloadTooLarge, 413, "invalid_request_error", "payload_too_large"),
    (AuthenticationFailed, 401, "authentication_error", "invalid_api_key"),
    (PermissionDenied, 403, "permission_error", "forbidden"),
    (NotFound, 404, "not_found_error", "not_found"),
    (UpstreamError, 502, "upstream_error", "upstream_error"),
    (ServiceUnavailable, 503, "server_error", "unavailable"),
])
def test_class_defaults(cls: type[MemchatError], status: int, type_: str, code: str | None) -> None:
    exc = cls("message")
    assert (exc.status_code, exc.error_type, exc.code) == (status, type_, code)
    assert exc.message == str(exc) == "message" and exc.param is None and exc.loc is None


def test_overrides_stay_on_the_instance() -> None:
    exc = InvalidRequest("bad", param="limit", code="too_big", status_code=422, loc=("query", "limit"))
    assert (exc.param, exc.code, exc.status_code, exc.loc) == ("limit", "too_big", 422, ("query", "limit"))
    assert (InvalidRequest.code, InvalidRequest.status_code) == ("invalid_request", 400)
    assert InvalidRequest("again").code == "invalid_request"


def test_upstream_errors() -> None:
    exc = UpstreamError("rate limited", status_code=429, body={"message": "slow down"}, code="rate_limit")
    assert (exc.status_code, exc.body, exc.code) == (429, {"message": "slow down"}, "rate_limit")
    plain = UpstreamError("broke")
    assert (plain.status_code, plain.body, plain.code) == (502, None, "upstream_error")
    timeout = UpstreamTimeout()
    assert isinstance(timeout, UpstreamError) and timeout.status_code == 504
    assert timeout.code == "upstream_timeout" and "did not answer in time" in timeout.message


def test_hierarchy() -> None:
    assert issubclass(PayloadTooLarge, InvalidRequest)
    for cls in (InvalidRequest, AuthenticationFailed, PermissionDenied, NotFound, UpstreamError,
                ServiceUnavailable):
        assert issubclass(cls, MemchatError) and issubclass(cls, Exception)
