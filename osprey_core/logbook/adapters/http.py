"""JSON over HTTP for logbook APIs, careful by default: TLS certificates verified (a CA
bundle can be given; turning verification off is explicit and logged), a bearer token read
from an environment variable and never shown, bounded retries with exponential backoff and
jitter for what may pass (timeouts, dropped connections, 5xx, 429), and answers checked to
be JSON, so a login page never becomes "no entries".
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import ssl
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from osprey_core.errors import shorten
from osprey_core.hookspecs.logbook_adapters import LogbookSourceError

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

#: Answers worth asking again: the server (or a proxy) may recover.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


class HttpOptions(BaseModel):
    """How an adapter talks to a logbook server."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout_seconds: float = Field(60.0, gt=0, description="Per request.")
    max_attempts: int = Field(5, ge=1, le=20, description="Tries per request before the "
                              "ingest stops with an error.")
    backoff_seconds: float = Field(2.0, ge=0, description="Wait before the first retry; it "
                                   "doubles per retry (with jitter).")
    max_backoff_seconds: float = Field(120.0, ge=0, description="Longest wait between tries.")
    verify_tls: bool = Field(True, description="Check the server's certificate. Turning this "
                             "off lets anyone on the network path read and alter entries.")
    ca_file: Path | None = Field(None, description="CA bundle (PEM) that signs the server's "
                                 "certificate, e.g. the facility's own CA.")
    token_env: str | None = Field(None, description="Environment variable holding an API "
                                  "token, sent as 'Authorization: Bearer ...'.")

    @field_validator("ca_file")
    @classmethod
    def _ca_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.expanduser().is_file():
            raise ValueError(f"no CA file at {value}")
        return None if value is None else value.expanduser()

    @field_validator("token_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError("give the name of an environment variable (not the token)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.ca_file is not None and not self.verify_tls:
            raise ValueError("ca_file is given but verify_tls is false: choose one")
        return self


def display_url(url: str) -> str:
    """``url`` without any user:password part, for messages."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def merged_query(url: str, params: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """``url`` without its query, and the query's parameters updated with ``params`` (an
    HTTP client given both would drop the URL's own, e.g. ``?book=ops``)."""
    base, _, query = url.partition("?")
    return base, {**dict(parse_qsl(query, keep_blank_values=True)), **params}


def describe(url: str, params: Mapping[str, str]) -> str:
    """The request as a message shows it: credentials left out, parameters in."""
    base, merged = merged_query(url, params)
    return display_url(base) + ("?" + urlencode(merged) if merged else "")


class JsonClient:
    """GETs JSON from one logbook server; use as a context manager."""

    def __init__(self, source: str, options: HttpOptions, *,
                 sleep: Callable[[float], Any] = time.sleep,
                 rng: Callable[[], float] = random.random) -> None:
        self.source, self.options = source, options
        self.sleep, self.rng = sleep, rng
        self.client: httpx.Client | None = None

    def __enter__(self) -> Self:
        import httpx

        options = self.options
        verify: ssl.SSLContext | bool = True
        if options.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(options.ca_file))
        elif not options.verify_tls:
            verify = False
            log.warning("logbook source '%s': TLS certificate verification is OFF; anyone on "
                        "the network path can read and alter its entries", self.source)
        headers = {"Accept": "application/json"}
        if options.token_env is not None:
            token = os.environ.get(options.token_env, "").strip()
            if not token:
                raise LogbookSourceError(f"logbook source '{self.source}': the environment "
                                         f"variable {options.token_env} (its API token) is "
                                         "not set")
            headers["Authorization"] = f"Bearer {token}"
        self.client = httpx.Client(verify=verify, headers=headers, follow_redirects=False,
                                   timeout=httpx.Timeout(options.timeout_seconds))
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self.client is not None:
            self.client.close()

    def get(self, url: str, params: Mapping[str, str]) -> Any:
        """The JSON answer to ``GET url?params``, retrying what may pass; anything else is
        a LogbookSourceError naming the URL."""
        import httpx

        assert self.client is not None, "use JsonClient as a context manager"
        where = describe(url, params)
        url, params = merged_query(url, params)
        attempts = self.options.max_attempts
        for attempt in range(1, attempts + 1):
            retry_after = None
            try:
                response = self.client.get(url, params=params)
            except httpx.TimeoutException:
                problem = f"no answer within {self.options.timeout_seconds:g} s"
            except httpx.TransportError as exc:
                if _tls_failure(exc):
                    raise LogbookSourceError(
                        f"{where}: TLS certificate verification failed ({_cause(exc)}): give "
                        "the CA that signs the server's certificate as the source's ca_file "
                        "option") from None
                problem = f"connection failed ({_cause(exc)})"
            else:
                if response.status_code == 200:
                    return _json(where, response)
                problem = f"HTTP {response.status_code}"
                if response.status_code not in RETRY_STATUSES:
                    raise _refusal(where, response, self.options.token_env)
                retry_after = _seconds(response.headers.get("retry-after"))
            if attempt == attempts:
                raise LogbookSourceError(f"{where}: no usable answer after {attempts} "
                                         f"attempts (last: {problem})")
            delay = min(self.options.max_backoff_seconds,
                        self.options.backoff_seconds * 2 ** (attempt - 1))
            delay *= 0.5 + self.rng() / 2  # jitter: clients that failed together spread out
            if retry_after is not None:
                delay = max(delay, min(retry_after, self.options.max_backoff_seconds))
            log.warning("%s: %s; attempt %d of %d, retrying in %.1f s", where, problem,
                        attempt, attempts, delay)
            self.sleep(delay)
        raise AssertionError("unreachable")


def _json(where: str, response: httpx.Response) -> Any:
    body = response.content
    kind = response.headers.get("content-type", "")
    if "html" in kind.lower() or body.lstrip()[:1] == b"<":
        title = _TITLE.search(body[:65536])
        seen = (title[1] if title else body.lstrip()[:80]).decode("utf-8", "replace")
        raise LogbookSourceError(f"{where} answered HTML, not JSON ({shorten(seen.strip(), 80)!r}"
                                 "): a login or error page? Check the URL and the credentials")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LogbookSourceError(f"{where} answered something that is not JSON ({exc})"
                                 ) from None


def _refusal(where: str, response: httpx.Response, token_env: str | None
             ) -> LogbookSourceError:
    status = response.status_code
    if status in (401, 403):
        hint = (f"check the token in {token_env}" if token_env
                else "the server wants credentials: set the source's token_env option")
        return LogbookSourceError(f"{where}: HTTP {status}, access refused: {hint}")
    if 300 <= status < 400:
        target = display_url(response.headers.get("location", "?"))
        return LogbookSourceError(f"{where}: HTTP {status}, redirected to {target}: use that "
                                  "URL as the location (redirects are not followed, so a "
                                  "token never goes to another host)")
    text = response.text.strip().replace("\n", " ")
    return LogbookSourceError(f"{where}: HTTP {status}: {shorten(text, 160)}")


def _tls_failure(exc: BaseException) -> bool:
    current: BaseException | None = exc
    while current is not None:
        if isinstance(current, ssl.SSLCertVerificationError) or (
                "CERTIFICATE_VERIFY_FAILED" in str(current)):
            return True
        current = current.__cause__ or current.__context__
    return False


def _cause(exc: BaseException) -> str:
    return shorten(str(exc) or type(exc).__name__, 160)


def _seconds(value: str | None) -> float | None:
    try:
        return None if value is None else max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: the exponential delay stands

