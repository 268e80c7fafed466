"""Who is asking, and may they: bearer tokens, a trusted proxy's header, console sessions.

Use in any router::

    @router.post("/thing")
    async def thing(who: Identity = Depends(require(Role.APPROVER))) -> ...

The console signs in with :func:`console_session` (sets the session and CSRF cookies; the
sign-in form itself carries :func:`signin_csrf`'s token) and out with
:func:`end_console_session`; :func:`identity` believes the session cookie and, for
a state-changing request, demands the CSRF token (``X-CSRF-Token`` header or the
``csrf_token`` form field) that :func:`csrf_token` hands to pages. Bearer requests need no
CSRF token: a browser never adds an ``Authorization`` header by itself.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, Request, Response

from osprey_core.service.context import ServiceState, service_state
from osprey_core.service.errors import ServiceError, unauthenticated
from osprey_core.service.settings import Role, implied_roles

__all__ = [
    "CSRF_COOKIE",
    "CSRF_FIELD",
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "Identity",
    "Role",
    "check_csrf",
    "console_session",
    "csrf_token",
    "end_console_session",
    "identity",
    "require",
    "set_csrf_cookie",
    "signin_csrf",
]

SESSION_COOKIE = "osprey_session"
CSRF_COOKIE = "osprey_csrf"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Identity:
    """An authenticated caller. ``via``: ``token``, ``proxy`` or ``session`` (the console
    cookie, which carries a token); ``token_id`` names the token, never its secret."""

    name: str
    roles: frozenset[Role]
    via: str
    token_id: str | None = field(default=None)

    def has(self, role: Role) -> bool:
        return role in self.roles

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "roles": sorted(self.roles), "via": self.via,
                "token_id": self.token_id}


def _from_token(state: ServiceState, token: str, via: str) -> Identity | None:
    record = state.tokens.verify(token)
    if record is None:
        return None
    return Identity(record.name, implied_roles(frozenset(record.roles)), via, record.id)


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise unauthenticated("the Authorization header must be 'Bearer <token>'")
    return credentials.strip()


def _from_proxy(state: ServiceState, request: Request) -> Identity | None:
    """The user a configured reverse proxy names; the header from any other peer is
    ignored, so it can never stand in for a credential."""
    settings = state.settings
    peer = request.client.host if request.client else None
    user = request.headers.get(settings.proxy_user_header, "").strip()
    if not user or not settings.trusts(peer):
        return None
    roles = settings.proxy_roles.get(user, settings.proxy_default_roles)
    return Identity(user, implied_roles(frozenset(roles)), "proxy")


async def identity(request: Request,
                   state: ServiceState = Depends(service_state)) -> Identity:
    """The authenticated caller (401 otherwise). A bearer token wins; then a trusted
    proxy's user header; then the console's session cookie (with CSRF for changes)."""
    token = _bearer(request)
    if token is not None:
        who = await state.read(lambda: _from_token(state, token, "token"))
        if who is None:
            raise unauthenticated("the token is invalid, expired or revoked")
        return who
    if (who := _from_proxy(state, request)) is not None:
        return who
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        who = await state.read(lambda: _from_token(state, cookie, "session"))
        if who is None:
            raise unauthenticated("the console session ended (token expired or revoked); "
                                  "sign in again")
        if request.method not in SAFE_METHODS:
            await check_csrf(request)
        return who
    raise unauthenticated("sign in: send 'Authorization: Bearer <token>' (osprey tokens "
                          "create makes one)")


def require(role: Role) -> Callable[..., Coroutine[Any, Any, Identity]]:
    """A dependency that lets through callers holding ``role`` (403 otherwise)."""

    async def dependency(who: Identity = Depends(identity)) -> Identity:
        if not who.has(role):
            held = ", ".join(sorted(who.roles)) or "none"
            raise ServiceError(403, "forbidden", f"this needs the {role} role; {who.name} "
                               f"has {held}")
        return who

    dependency.__name__ = f"require_{role}"
    return dependency


# -- console sessions --------------------------------------------------------------------


def console_session(request: Request, response: Response, token: str) -> Identity:
    """Sign the console in with ``token``: set the HttpOnly session cookie and a fresh
    CSRF cookie on ``response``; 401 if the token is not valid."""
    state = service_state(request)
    who = _from_token(state, token.strip(), "session")
    if who is None:
        raise unauthenticated("the token is invalid, expired or revoked")
    response.set_cookie(SESSION_COOKIE, token.strip(), httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")
    set_csrf_cookie(request, response, secrets.token_urlsafe(32))
    return who


def signin_csrf(request: Request) -> str:
    """The CSRF token of the sign-in form: the browser's cookie, else a new one (set it with
    :func:`set_csrf_cookie`), so a page elsewhere cannot sign you in as someone else."""
    return request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)


def set_csrf_cookie(request: Request, response: Response, value: str) -> None:
    """The CSRF cookie pages read their token from (not HttpOnly: the page sends it back)."""
    response.set_cookie(CSRF_COOKIE, value, httponly=False, samesite="strict",
                        secure=request.url.scheme == "https", path="/")


def end_console_session(response: Response) -> None:
    """Sign the console out (both cookies removed)."""
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")


def csrf_token(request: Request) -> str | None:
    """The CSRF token pages must send back with every change (``None`` before sign-in)."""
    return request.cookies.get(CSRF_COOKIE)


async def check_csrf(request: Request, submitted: str | None = None) -> None:
    """403 unless the request carries the CSRF cookie's value (double submit): in
    ``submitted``, the ``X-CSRF-Token`` header or the ``csrf_token`` form field."""
    expected = request.cookies.get(CSRF_COOKIE)
    if submitted is None:
        submitted = request.headers.get(CSRF_HEADER)
    if submitted is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        value = (await request.form()).get(CSRF_FIELD)
        submitted = value if isinstance(value, str) else None
    if not expected or not submitted or not hmac.compare_digest(expected, submitted):
        raise ServiceError(403, "csrf_failed", "missing or wrong CSRF token; reload the "
                           "page and try again")
