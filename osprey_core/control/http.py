"""What the HTTP connectors (LabVIEW, Archiver Appliance) share: URL checks, TLS, and one
HTTP client (httpx, the ``http`` extra, imported on first use).

:func:`send` bounds a request twice: httpx's own per-operation timeouts (connect within
``connection_timeout``, every later read or write within ``timeout``) and a deadline on
the whole exchange, so a server that trickles bytes cannot hold a caller past
``connection_timeout + timeout``. Its failures are typed control-system errors that name
the server, the setting to change, and whether a write may have been applied.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from osprey_core.control.errors import (
    ConnectionTimeoutError,
    ControlSystemError,
)
from osprey_core.errors import ConfigError

if TYPE_CHECKING:
    import httpx


def check_http_url(url: str, field: str, *, allow_credentials: bool = False) -> str:
    """``url`` if it is an http(s) URL with a host and a valid port, no query or fragment
    (and, unless allowed, no user:password); otherwise ``ValueError`` naming ``field``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{field} {url!r} must be an http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise ValueError(f"{field} must not hold a query or fragment")
    if not allow_credentials and (parts.username or parts.password):
        raise ValueError(f"{field} must not hold credentials (use auth)")
    try:
        parts.port  # noqa: B018 -- raises on a bad port
    except ValueError as exc:
        raise ValueError(f"{field} {url!r}: {exc}") from None
    return url


def tls_context(ca_file: Path | None, *, verify: bool, section: str) -> ssl.SSLContext:
    """A client TLS context trusting ``ca_file`` (or the system store); ``verify=False``
    turns certificate and host checks off, for test benches only."""
    cafile = None if ca_file is None else str(ca_file)
    try:
        context = ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{section}.ca_file {cafile}: cannot load it: {exc}") from None
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def redacted(url: str) -> str:
    """``url`` without its user:password, for messages."""
    parts = urlsplit(url)
    if not (parts.username or parts.password):
        return url
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def new_client(*, tls: ssl.SSLContext | None, max_connections: int, trust_env: bool = False,
               headers: Mapping[str, str] | None = None) -> httpx.AsyncClient:
    """An httpx client for one event loop: pooled keep-alive connections, no redirects,
    the environment's proxies only when ``trust_env``; :func:`send` sets the timeouts."""
    try:
        import httpx
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError("the HTTP connectors need httpx: pip install "
                          f"'osprey-core[http]' ({exc})") from None
    return httpx.AsyncClient(
        verify=tls if tls is not None else True,
        limits=httpx.Limits(max_connections=max_connections,
                            max_keepalive_connections=max_connections),
        trust_env=trust_env, follow_redirects=False, headers=dict(headers or {}))


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A complete answer: status, reason phrase, headers (lower-case names) and body."""

    status: int
    reason: str
    headers: dict[str, str]
    body: bytes

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


@dataclass(frozen=True, slots=True)
class Exchange:
    """Who is asked and what a failure says: ``server`` names it in messages, ``section``
    is the config section holding ``ca_file``, ``timeout_error`` builds the error of an
    answer that did not come within ``timeout`` (it knows which setting bounds it), and
    ``connect_setting`` names the setting that bounds connecting."""

    server: str
    section: str
    timeout_error: Callable[[float], ControlSystemError]
    channel: str | None = None
    connect_setting: str = "connection_timeout"


async def send(client: httpx.AsyncClient, method: str, url: str, how: Exchange, *,
               timeout: float, connection_timeout: float, limit: int,
               headers: Mapping[str, str] | None = None, content: bytes | None = None,
               total: float | None = None) -> HttpResponse:
    """One request; the answer is read whole, up to ``limit`` bytes, and all of it within
    ``total`` seconds (default: ``connection_timeout + timeout``)."""
    import httpx

    channel = how.channel

    async def exchange() -> HttpResponse:
        async with client.stream(method, url, headers=headers, content=content,
                                 timeout=httpx.Timeout(timeout, connect=connection_timeout),
                                 ) as answer:
            chunks, size = [], 0
            async for chunk in answer.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise ControlSystemError(f"{how.server}: answer larger than "
                                             f"{limit} bytes", channel=channel)
                chunks.append(chunk)
            return HttpResponse(answer.status_code, answer.reason_phrase,
                                {name.lower(): value for name, value in answer.headers.items()},
                                b"".join(chunks))

    try:
        async with asyncio.timeout(connection_timeout + timeout if total is None else total):
            return await exchange()
    except httpx.ConnectTimeout:
        raise ConnectionTimeoutError(f"{how.server}: no connection within "
                                     f"{connection_timeout:g} s ({how.connect_setting})",
                                     channel=channel) from None
    except (TimeoutError, httpx.TimeoutException):
        raise how.timeout_error(timeout) from None
    except httpx.ConnectError as exc:
        if (problem := _certificate_problem(exc)) is not None:
            raise ControlSystemError(f"{how.server}: TLS certificate verification failed "
                                     f"({problem}); set {how.section}.ca_file to the "
                                     "facility CA", channel=channel) from None
        raise ControlSystemError(f"{how.server}: cannot connect: {_reason(exc)}",
                                 channel=channel) from None
    except httpx.HTTPError as exc:
        raise ControlSystemError(f"{how.server}: broken answer: {_reason(exc)}",
                                 channel=channel) from None


def _certificate_problem(exc: BaseException) -> str | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen.verify_message or str(seen)
        seen = seen.__cause__ or seen.__context__
    return None


def _reason(exc: BaseException) -> str:
    """The innermost cause's words (``Connection refused``), else the exception's."""
    text = str(exc) or type(exc).__name__
    seen = exc.__cause__ or exc.__context__
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    return text
