"""Dependencies shared by the HTTP surfaces."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.di import NamedDependency

from app.auth import Principal, key_from_headers
from app.errors import AuthenticationFailed
from app.obs.context import set_org
from app.services import Services


# Handler parameters filled by the app's dependencies, marked as such (Litestar 3 drops inferred ones).
PrincipalDep = NamedDependency[Principal]
ServicesDep = NamedDependency[Services]
NsScopeDep = NamedDependency[str]   # "<namespace>" or the shared scope (`app.api.memories`)


def services_of(request: Request[Any, Any, Any]) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


async def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    if len(request.headers.getall("authorization", [])) > 1 or len(request.headers.getall("x-api-key", [])) > 1:
        raise AuthenticationFailed("Send exactly one API key.")
    key = key_from_headers(request.headers, request.cookies)
    principal = services_of(request).keyring.resolve(key)
    set_org(principal.org_id)  # for this request's log lines
    return principal


async def provide_services(request: Request[Any, Any, Any]) -> Services:
    return services_of(request)
