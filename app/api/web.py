"""The browser demo: the page at ``/``, its static files under ``/web/``, and sign-in.

``POST /auth/session`` checks a key and stores it in the ``vai_token`` cookie (HttpOnly, SameSite=Strict,
Secure over https), which the page's websocket handshake and its memory REST calls then carry;
``GET /auth/session`` says whether the cookie holds a valid key; ``DELETE /auth/session`` signs out.
State-changing ``/auth`` requests that carry an ``Origin`` must come from the page's own origin.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
from litestar import Request, Response, Router, delete, get, post
from litestar.datastructures import CacheControlHeader, Cookie
from litestar.static_files import create_static_files_router

from app.api.deps import services_of
from app.api.ws_protocol import same_origin
from app.auth import Principal
from app.errors import AuthenticationFailed, InvalidRequest, NotFound, PermissionDenied

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
COOKIE_NAME = "vai_token"
_COOKIE_SAFE = re.compile(r"^[!#$%&'()*+\-./0-9:<=>?@A-Z\[\]^_`a-z{|}~]+$")  # RFC 6265 cookie-octets
_decode = msgspec.json.Decoder().decode

PAGE_HEADERS = {
    "content-security-policy": ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


def _check_origin(request: Request[Any, Any, Any]) -> None:
    origin = request.headers.get("origin")
    if origin is not None and not same_origin(origin, request.headers.get("host")):
        raise PermissionDenied("cross-origin request refused: Origin must match Host")


def _cookie(request: Request[Any, Any, Any], value: str, *, clear: bool = False) -> Cookie:
    return Cookie(key=COOKIE_NAME, value=value, path="/", httponly=True, samesite="strict",
                  secure=request.url.scheme == "https", max_age=0 if clear else None)


@get("/", include_in_schema=False)
async def index() -> Response[bytes]:
    page = WEB_DIR / "index.html"
    if not page.is_file():
        raise NotFound("the web demo is not installed (no web/index.html next to the app package)")
    return Response(page.read_bytes(), media_type="text/html", headers=PAGE_HEADERS)


@post("/auth/session", status_code=200)
async def sign_in(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    """Body ``{"key": "<memchat key>"}``: on success the key is stored in the ``vai_token`` cookie."""
    _check_origin(request)
    raw = await request.body()
    try:
        body = _decode(raw) if raw.strip() else None
    except msgspec.DecodeError:
        raise InvalidRequest("request body is not valid JSON", param="key", code="invalid_json") from None
    key = body.get("key") if isinstance(body, dict) else None
    if not isinstance(key, str) or not key.strip():
        raise InvalidRequest("send the API key as {\"key\": \"...\"}", param="key")
    key = key.strip()
    principal: Principal = services_of(request).keyring.resolve(key)
    if not _COOKIE_SAFE.match(key):
        raise InvalidRequest("this key contains characters a cookie cannot hold; use the Authorization header",
                             param="key")
    return Response({"signed_in": True, "org_id": principal.org_id}, cookies=[_cookie(request, key)],
                    headers={"cache-control": "no-store"})


@get("/auth/session")
async def session_status(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    """``{"signed_in": bool, "org_id"?}`` for the cookie this browser holds (a stale cookie is cleared)."""
    token = request.cookies.get(COOKIE_NAME)
    if not token:
        return Response({"signed_in": False}, headers={"cache-control": "no-store"})
    try:
        principal = services_of(request).keyring.resolve(token.strip())
    except AuthenticationFailed:
        return Response({"signed_in": False}, cookies=[_cookie(request, "", clear=True)],
                        headers={"cache-control": "no-store"})
    return Response({"signed_in": True, "org_id": principal.org_id}, headers={"cache-control": "no-store"})


@delete("/auth/session", status_code=204)
async def sign_out(request: Request[Any, Any, Any]) -> Response[None]:
    _check_origin(request)
    return Response(None, status_code=204, cookies=[_cookie(request, "", clear=True)])


web_router = Router(
    path="/",
    route_handlers=[
        index, sign_in, session_status, sign_out,
        create_static_files_router(path="/web", directories=[WEB_DIR], name="web", include_in_schema=False,
                                   cache_control=CacheControlHeader(no_cache=True)),
    ],
    tags=["web demo"],
)
