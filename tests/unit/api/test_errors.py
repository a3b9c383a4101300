"""`app.api.errors`: every error in each surface's shape (OpenAI, memory REST, personal chat), no internals leaked."""

from __future__ import annotations

import pytest
from litestar.exceptions import MethodNotAllowedException, NotFoundException, ValidationException

from app.api.errors import describe, openai_error, personal_error, rest_error, surface_of
from app.errors import (AuthenticationFailed, InvalidRequest, NotFound, PayloadTooLarge, PermissionDenied,
                        ServiceUnavailable, UpstreamError, UpstreamTimeout)

WWW_AUTH = 'Bearer realm="memchat"'


def www_auth(response) -> str | None:
    return dict(response.headers).get("www-authenticate")


@pytest.mark.parametrize(("path", "surface"), [
    ("/v1/chat/completions", "openai"), ("/v1/models", "openai"), ("/", "openai"), ("/healthz", "openai"),
    ("/api/memories", "rest"), ("/api/", "rest"), ("/api", "openai"),
    ("/serve/chat", "personal"), ("/serve", "openai"), ("/v1/api/x", "openai"),
])
def test_surface_of(path: str, surface: str) -> None:
    assert surface_of(path) == surface


@pytest.mark.parametrize(("exc", "status", "type_", "code"), [
    (InvalidRequest("bad field", param="model"), 400, "invalid_request_error", "invalid_request"),
    (PayloadTooLarge("too big"), 413, "invalid_request_error", "payload_too_large"),
    (AuthenticationFailed("Invalid API key."), 401, "authentication_error", "invalid_api_key"),
    (PermissionDenied("not yours"), 403, "permission_error", "forbidden"),
    (NotFound("no such memory"), 404, "not_found_error", "not_found"),
    (UpstreamError("upstream broke"), 502, "upstream_error", "upstream_error"),
    (UpstreamTimeout(), 504, "upstream_error", "upstream_timeout"),
    (ServiceUnavailable("starting"), 503, "server_error", "unavailable"),
])
def test_openai_shape(exc: Exception, status: int, type_: str, code: str) -> None:
    response = openai_error(describe(exc))
    assert response.status_code == status
    assert response.content == {"error": {"message": str(exc), "type": type_,
                                          "param": getattr(exc, "param", None), "code": code}}
    assert www_auth(response) == (WWW_AUTH if status == 401 else None)


def test_openai_passes_an_upstream_4xx_error_object_through() -> None:
    upstream = {"message": "model not found", "type": "invalid_request_error", "param": "model", "code": "x"}
    response = openai_error(describe(UpstreamError("upstream said 404", status_code=404, body=upstream)))
    assert response.status_code == 404 and response.content == {"error": upstream}


@pytest.mark.parametrize("body", [{"message": "secret upstream detail"}, "plain", None, {"no": "message"}])
def test_openai_does_not_pass_through_5xx_or_odd_upstream_bodies(body) -> None:
    status = 500 if isinstance(body, dict) and "message" in body else 400
    response = openai_error(describe(UpstreamError("upstream failed", status_code=status, body=body)))
    assert response.content["error"]["message"] == "upstream failed"
    assert response.content["error"]["type"] == "upstream_error"


def test_rest_shape() -> None:
    invalid = rest_error(describe(InvalidRequest("limit too big", param="limit")))
    assert invalid.status_code == 422
    assert invalid.content == {"detail": [{"loc": ["body", "limit"], "msg": "limit too big",
                                           "type": "invalid_request"}]}
    located = rest_error(describe(InvalidRequest("bad", loc=("body", "content", 0), code="string_too_long")))
    assert located.content["detail"] == [{"loc": ["body", "content", 0], "msg": "bad", "type": "string_too_long"}]
    assert rest_error(describe(InvalidRequest("bad"))).content["detail"][0]["loc"] == []

    auth = rest_error(describe(AuthenticationFailed("Invalid API key.")))
    assert auth.status_code == 401 and www_auth(auth) == WWW_AUTH
    assert auth.content == {"detail": [{"loc": [], "msg": "Invalid API key.", "type": "invalid_api_key"}]}

    missing = rest_error(describe(NotFound("memory not found")))
    assert missing.status_code == 404 and missing.content["detail"][0]["type"] == "not_found"
    upstream = rest_error(describe(UpstreamError("embedding service down")))
    assert upstream.status_code == 502 and upstream.content["detail"][0]["msg"] == "embedding service down"
    assert rest_error(describe(PayloadTooLarge("too big"))).status_code == 413


def test_rest_shape_of_a_framework_validation_error() -> None:
    exc = ValidationException(detail="Validation failed", extra=[{"key": "limit", "message": "Expected `int`"},
                                                                "not a dict"])
    info = describe(exc)
    assert info.status == 400 and info.type == "invalid_request_error"
    response = rest_error(info)
    assert response.status_code == 422
    assert response.content == {"detail": [{"loc": ["query", "limit"], "msg": "Expected `int`",
                                            "type": "value_error"}]}
    assert openai_error(info).content["error"]["code"] == "invalid_request"


def test_framework_http_errors() -> None:
    info = describe(NotFoundException())
    assert (info.status, info.type) == (404, "not_found_error")
    info = describe(MethodNotAllowedException())
    assert (info.status, info.type) == (405, "invalid_request_error")
    assert personal_error(info).content["code"] == "4050"


@pytest.mark.parametrize(("exc", "status", "code"), [
    (InvalidRequest("bad"), 400, "4000"),
    (AuthenticationFailed("Invalid API key."), 401, "4010"),
    (NotFound("no such session"), 404, "4040"),
    (UpstreamError("upstream broke"), 502, "5020"),
    (UpstreamTimeout(), 504, "5040"),
    (PayloadTooLarge("big"), 413, "4130"),
])
def test_personal_shape(exc: Exception, status: int, code: str) -> None:
    response = personal_error(describe(exc), session_id="s-1")
    assert response.status_code == status
    assert response.content == {"code": code, "msg": str(exc), "data": None, "session_id": "s-1", "failed": True,
                                "success": False}
    assert www_auth(response) == (WWW_AUTH if status == 401 else None)
    assert personal_error(describe(exc)).content["session_id"] is None


def test_unlisted_statuses_fall_back_by_class() -> None:
    assert personal_error(describe(InvalidRequest("x", status_code=418))).content["code"] == "4000"
    assert personal_error(describe(ServiceUnavailable("x", status_code=507))).content["code"] == "5000"


class SecretFailure(Exception):
    pass


def test_an_unexpected_exception_is_a_500_without_internals(caplog: pytest.LogCaptureFixture) -> None:
    try:
        raise SecretFailure("password=hunter2 at /srv/app/secret.py")
    except SecretFailure as exc:
        info = describe(exc)
    assert info.status == 500 and info.code == "internal_error"
    bodies = [openai_error(info).content, rest_error(info).content, personal_error(info).content]
    for body in bodies:
        text = repr(body)
        assert "hunter2" not in text and "Traceback" not in text and "SecretFailure" not in text
    assert bodies[0] == {"error": {"message": "memchat hit an internal error; it has been logged",
                                   "type": "server_error", "param": None, "code": "internal_error"}}
    assert bodies[1]["detail"][0]["type"] == "internal_error"
    assert bodies[2]["code"] == "5000" and bodies[2]["success"] is False
    assert all(r.status_code == 500 for r in (openai_error(info), rest_error(info), personal_error(info)))
    assert any(r.exc_info and r.exc_info[0] is SecretFailure for r in caplog.records)   # logged, not sent
