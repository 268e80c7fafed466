"""LabVIEW connector: LabVIEW Web Services over HTTP.

A LabVIEW web service exposes *web method VIs* as HTTP endpoints. There is no standard
"read variable" call, so the configuration maps each channel (an exact name or a glob
pattern) to the method VI that reads it and, optionally, the one that writes it: HTTP
method, URL template, query parameters or body template, and the JSON path of the value
in the answer. For example::

    labview:
      base_url: http://lv-server:8001
      auth: {type: basic, username: operator, password_env: LABVIEW_PASSWORD}
      channels:
        - pattern: "SR:*:Current"          # {1} is what the '*' matched
          read: {url: "/SR/ReadValue", params: {name: "{channel}"}, value_path: data.value}
          write: {url: "/SR/WriteValue", body: {name: "{channel}", value: "{value}"}}
          units: A

HTTP is spoken over asyncio streams, so the two timeouts are separate and exact:
``connection_timeout`` bounds opening the TCP connection (and the TLS handshake),
``read_timeout`` (``write_timeout`` for writes) bounds the whole exchange after that.
Subscriptions poll at ``poll_interval`` and call back on change. The connector only moves
data: limits, readback verification (which re-reads through :meth:`read`) and audit are
applied by :class:`~osprey_core.control.system.ControlSystem`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
import os
import re
import ssl
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import quote, urlencode, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from osprey_core.control.errors import (
    ChannelNotFoundError,
    ConnectionTimeoutError,
    ControlSystemError,
    ReadTimeoutError,
    ServerRejectedError,
    WriteTimeoutError,
)
from osprey_core.control.http import check_http_url, tls_context
from osprey_core.control.types import ChannelMetadata, ChannelValue, Reason, Severity, WriteAck
from osprey_core.errors import ConfigError
from osprey_core.hookspecs.connectors import ControlSystemConnector

log = logging.getLogger(__name__)

HttpMethod = Literal["GET", "POST", "PUT"]
DataType = Literal["float", "int", "bool", "string", "enum", "array"]
_REJECTING_STATUSES = frozenset({400, 409, 412, 422})
_MESSAGE_KEYS = ("message", "error", "detail", "msg", "reason", "description")


class AuthenticationError(ControlSystemError):
    """The web service refused our credentials (HTTP 401/403)."""

    reason = Reason.IO_ERROR


class NotWritableError(ControlSystemError):
    """The channel has no write method configured (or is marked read-only)."""

    reason = Reason.NOT_WRITABLE


# -- JSON paths -------------------------------------------------------------------------

_PATH_TOKEN = re.compile(
    r"""\.(?P<key>[^.\[\]]+)|\[(?P<index>-?\d+)\]|\[(?:'(?P<sq>[^']*)'|"(?P<dq>[^"]*)")\]""")


def parse_json_path(path: str) -> tuple[str | int, ...]:
    """``"data.value"``, ``"$.data.items[0]"`` or ``"$['a b']"`` -> keys and indexes.

    ``""`` and ``"$"`` mean the whole document.
    """
    text = path.strip()
    if text in ("", "$"):
        return ()
    if text.startswith("$"):
        text = text[1:]
    elif not text.startswith(("[", ".")):
        text = "." + text
    tokens: list[str | int] = []
    position = 0
    while position < len(text):
        match = _PATH_TOKEN.match(text, position)
        if match is None:
            raise ValueError(f"invalid JSON path {path!r} near {text[position:]!r} (use "
                             "dotted keys and [index], e.g. data.values[0])")
        if match["index"] is not None:
            tokens.append(int(match["index"]))
        else:
            tokens.append(next(group for group in (match["key"], match["sq"], match["dq"])
                               if group is not None))
        position = match.end()
    return tuple(tokens)


class _Missing(LookupError):
    pass


def extract(document: Any, path: str) -> Any:
    """The value at ``path`` in ``document``; ``_Missing`` when it is not there."""
    current = document
    for token in parse_json_path(path):
        if isinstance(current, list):
            if isinstance(token, str) and re.fullmatch(r"-?\d+", token):
                token = int(token)
            if not isinstance(token, int) or not -len(current) <= token < len(current):
                raise _Missing(path)
            current = current[token]
        elif isinstance(current, dict):
            if str(token) not in current:
                raise _Missing(path)
            current = current[str(token)]
        else:
            raise _Missing(path)
    return current


# -- templates --------------------------------------------------------------------------


def _fields(template: str) -> list[str]:
    names = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if not name or spec or conversion or not re.fullmatch(r"[a-z]+|\d+", name):
            raise ValueError(f"template {template!r}: use plain placeholders such as "
                             "{channel}, {value} or {1}; no format specs or empty {}")
        names.append(name)
    return names


def _check_template(template: Any, allowed: set[str], wildcards: int, where: str) -> None:
    if isinstance(template, str):
        for name in _fields(template):
            if name.isdigit():
                if int(name) > wildcards:
                    raise ValueError(f"{where}: {{{name}}} but the pattern has only "
                                     f"{wildcards} wildcard(s)")
            elif name not in allowed:
                raise ValueError(f"{where}: unknown placeholder {{{name}}} (allowed: "
                                 f"{', '.join(sorted('{' + a + '}' for a in allowed))}, "
                                 "{0} for the channel and {1}.. for the pattern's wildcards)")
    elif isinstance(template, dict):
        for key, value in template.items():
            _check_template(key, allowed, wildcards, where)
            _check_template(value, allowed, wildcards, where)
    elif isinstance(template, list):
        for item in template:
            _check_template(item, allowed, wildcards, where)


def value_text(value: Any) -> str:
    """How a value appears in a URL or form field: JSON, except that text stays bare."""
    return value if isinstance(value, str) else json.dumps(value)


@dataclass(frozen=True, slots=True)
class _Context:
    channel: str
    groups: tuple[str, ...]  # groups[0] is the channel, then what each wildcard matched
    value: Any = None
    has_value: bool = False

    def text(self, template: str, escape: Callable[[str], str] = lambda text: text) -> str:
        names: dict[str, str] = {"channel": escape(self.channel)}
        if self.has_value:
            names["value"] = escape(value_text(self.value))
        return template.format(*(escape(group) for group in self.groups), **names)

    def json(self, template: Any) -> Any:
        """Fill a JSON body template; a string that is exactly ``{value}`` keeps its type."""
        if isinstance(template, str):
            if template == "{value}" and self.has_value:
                return self.value
            return self.text(template)
        if isinstance(template, dict):
            return {self.text(str(key)): self.json(item) for key, item in template.items()}
        if isinstance(template, list):
            return [self.json(item) for item in template]
        return template


# -- settings ---------------------------------------------------------------------------


class NoAuth(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["none"] = "none"


class BasicAuth(BaseModel):
    """HTTP basic authentication (the LabVIEW web server's user accounts)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["basic"]
    username: str = Field(description="User name.")
    password: SecretStr | None = Field(None, description="Password; prefer password_env.")
    password_env: str | None = Field(None, description="Environment variable holding the "
                                     "password.")

    @model_validator(mode="after")
    def _one_password(self) -> BasicAuth:
        if (self.password is None) == (self.password_env is None):
            raise ValueError("basic auth needs exactly one of password or password_env")
        return self

    def header(self, environ: Mapping[str, str]) -> str:
        password = _secret(self.password, self.password_env, environ, "password")
        raw = f"{self.username}:{password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


class BearerAuth(BaseModel):
    """A bearer token in the ``Authorization`` header (e.g. behind a reverse proxy)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["bearer"]
    token: SecretStr | None = Field(None, description="The token; prefer token_env.")
    token_env: str | None = Field(None, description="Environment variable holding the token.")

    @model_validator(mode="after")
    def _one_token(self) -> BearerAuth:
        if (self.token is None) == (self.token_env is None):
            raise ValueError("bearer auth needs exactly one of token or token_env")
        return self

    def header(self, environ: Mapping[str, str]) -> str:
        return "Bearer " + _secret(self.token, self.token_env, environ, "token")


def _secret(value: SecretStr | None, env: str | None, environ: Mapping[str, str],
            what: str) -> str:
    if value is not None:
        return value.get_secret_value()
    assert env is not None
    if not environ.get(env):
        raise ConfigError(f"labview.auth: environment variable {env} (the {what}) is not set")
    return environ[env]


Auth = Annotated[NoAuth | BasicAuth | BearerAuth, Field(discriminator="type")]


class _HttpCall(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    method: HttpMethod = Field("GET", description="HTTP method: GET, POST or PUT.")
    url: str = Field(description="Path of the web method VI, relative to base_url; may hold "
                     "{channel}, {0} (the channel) and {1}.. (what the pattern's wildcards "
                     "matched), URL-encoded when filled in.")
    params: dict[str, str] = Field(default_factory=dict, description="Query parameters "
                                   "(templates like the URL).")
    body: Any = Field(None, description="Request body template (POST/PUT); a string that is "
                      "exactly '{value}' is replaced by the typed value.")
    body_format: Literal["json", "form"] = Field("json", description="Send the body as JSON "
                                                 "or as form fields.")
    error_path: str | None = Field(
        "error", description="JSON path of an error field in the answer; a LabVIEW error "
        "cluster ({status, code, source}) counts when its status is true.")

    @field_validator("url")
    @classmethod
    def _relative_url(cls, url: str) -> str:
        if "://" in url or url.startswith("//"):
            raise ValueError("url must be a path relative to base_url (credentials are only "
                             "sent to base_url)")
        if any(char.isspace() or not char.isprintable() for char in url):
            raise ValueError("url must not contain spaces or control characters")
        return url

    @field_validator("error_path")
    @classmethod
    def _valid_path(cls, path: str | None) -> str | None:
        if path is not None:
            parse_json_path(path)
        return path

    @model_validator(mode="after")
    def _form_body(self) -> _HttpCall:
        if self.method == "GET" and self.body is not None:
            raise ValueError("a GET request has no body: use params")
        if self.body_format == "form" and self.body is not None and not (
                isinstance(self.body, dict)
                and all(not isinstance(item, dict | list) for item in self.body.values())):
            raise ValueError("a form body must be a flat mapping of field -> value")
        return self


class ReadCall(_HttpCall):
    """The web method VI that reads a channel."""

    response: Literal["json", "text"] = Field(
        "json", description="Answer format: JSON, or plain text holding just the value.")
    value_path: str = Field("value", description="JSON path of the value, e.g. data.value "
                            "or $.value ('$' = the whole answer).")
    timestamp_path: str | None = Field(None, description="JSON path of the timestamp (epoch "
                                       "seconds or ISO 8601); default: time of the read.")
    severity_path: str | None = Field(None, description="JSON path of an alarm severity "
                                      "(0-3 or NO_ALARM/MINOR/MAJOR/INVALID).")
    status_path: str | None = Field(None, description="JSON path of an alarm status text.")

    @field_validator("value_path", "timestamp_path", "severity_path", "status_path")
    @classmethod
    def _valid_paths(cls, path: str | None) -> str | None:
        if path is not None:
            parse_json_path(path)
        return path


class WriteCall(_HttpCall):
    """The web method VI that writes a channel; templates may use {value}."""

    method: HttpMethod = Field("POST", description="HTTP method: GET, POST or PUT.")
    success_path: str | None = Field(None, description="JSON path that must be true in the "
                                     "answer for the write to count as accepted.")
    message_path: str | None = Field(None, description="JSON path of the server's message "
                                     "when it refuses a write.")

    @field_validator("success_path", "message_path")
    @classmethod
    def _valid_paths(cls, path: str | None) -> str | None:
        if path is not None:
            parse_json_path(path)
        return path


class ChannelMapping(BaseModel):
    """Which web method VIs read and write the channels matching ``pattern``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pattern: str = Field(description="Channel name, or a glob (*, ?, [..]) whose wildcards "
                         "are available to templates as {1}, {2}, ...")
    read: ReadCall = Field(description="How to read these channels.")
    write: WriteCall | None = Field(None, description="How to write them (none: read-only).")
    writable: bool | None = Field(None, description="Default: true when write is set.")
    units: str | None = Field(None, description="Engineering units.")
    data_type: DataType | None = Field(
        None, description="float, int, bool, string, enum or array; values are converted "
        "to it (default: as the JSON answer has them).")
    precision: int | None = Field(None, ge=0, description="Display precision (digits).")
    description: str | None = Field(None, description="What the channel is.")

    @field_validator("pattern")
    @classmethod
    def _nonempty(cls, pattern: str) -> str:
        if not pattern or any(char.isspace() for char in pattern):
            raise ValueError("pattern must be a non-empty name without spaces")
        _glob_regex(pattern)
        return pattern

    @model_validator(mode="after")
    def _consistent(self) -> ChannelMapping:
        if self.writable and self.write is None:
            raise ValueError(f"{self.pattern}: writable is true but no write method is set")
        wildcards = _glob_regex(self.pattern).groups
        for where, call, allowed in (("read", self.read, {"channel"}),
                                     ("write", self.write, {"channel", "value"})):
            if call is None:
                continue
            for part in ("url", "params", "body"):
                _check_template(getattr(call, part), allowed, wildcards,
                                f"{self.pattern}: {where}.{part}")
        return self

    @property
    def is_writable(self) -> bool:
        return self.write is not None and self.writable is not False


class LabviewSettings(BaseModel):
    """LabVIEW Web Services: where the server is and which method VIs serve which channel."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str | None = Field(None, description="Web service root, e.g. "
                                 "http://lv-server:8001/SR (http or https).")
    auth: Auth = Field(default_factory=NoAuth, description="none | basic (username, "
                       "password_env) | bearer (token_env).")
    verify_tls: bool = Field(True, description="Check the server certificate (https).")
    ca_file: Path | None = Field(None, description="CA bundle (PEM) for a facility CA.")
    poll_interval: float = Field(1.0, gt=0, description="Seconds between polls of a "
                                 "subscribed channel.")
    max_concurrency: int = Field(8, ge=1, le=256, description="Requests in flight at once.")
    max_response_bytes: int = Field(10_000_000, ge=1024, description="Largest answer "
                                    "accepted.")
    channels: list[ChannelMapping] = Field(
        default_factory=list, description="Channel mappings; exact names win over "
        "patterns, then the first matching pattern.")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        return None if url is None else check_http_url(url, "base_url")

    @field_validator("channels")
    @classmethod
    def _unique_patterns(cls, channels: list[ChannelMapping]) -> list[ChannelMapping]:
        seen: set[str] = set()
        for mapping in channels:
            if mapping.pattern in seen:
                raise ValueError(f"pattern {mapping.pattern!r} is mapped twice")
            seen.add(mapping.pattern)
        return channels


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Glob -> regex where each wildcard is a group: ``*`` ``?`` ``[seq]`` ``[!seq]``."""
    out, position = [], 0
    while position < len(pattern):
        char = pattern[position]
        if char == "*":
            out.append("(.*?)")
        elif char == "?":
            out.append("(.)")
        elif char == "[":
            end = pattern.find("]", position + 2)
            if end < 0:
                raise ValueError(f"pattern {pattern!r}: unclosed '['")
            body = pattern[position + 1:end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("([" + body.replace("\\", "\\\\") + "])")
            position = end
        else:
            out.append(re.escape(char))
        position += 1
    return re.compile("".join(out))


# -- HTTP over asyncio streams ------------------------------------------------------------


class _ProtocolError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, str, dict[str, str]]:
    while True:
        line = await reader.readline()
        if not line:
            raise _ProtocolError("the server closed the connection without answering")
        parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise _ProtocolError(f"not an HTTP answer: {line[:80]!r}")
        headers: dict[str, str] = {}
        while True:
            header = await reader.readline()
            if header in (b"\r\n", b"\n", b""):
                break
            name, _, value = header.decode("latin-1").partition(":")
            key = name.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
        status = int(parts[1])
        if not 100 <= status < 200:
            return status, parts[2] if len(parts) > 2 else "", headers


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str], limit: int
                     ) -> bytes:
    too_big = _ProtocolError(f"answer larger than max_response_bytes ({limit})")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks, size = [], 0
        while True:
            line = await reader.readline()
            try:
                length = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                raise _ProtocolError(f"bad chunk size line {line[:40]!r}") from None
            if length == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            size += length
            if size > limit:
                raise too_big
            chunks.append(await reader.readexactly(length))
            await reader.readline()
    if "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise _ProtocolError("bad Content-Length") from None
        if length > limit:
            raise too_big
        return await reader.readexactly(length)
    body = await reader.read(limit + 1)
    while len(body) <= limit and (more := await reader.read(limit + 1 - len(body))):
        body += more
    if len(body) > limit:
        raise too_big
    return body


# -- the connector ------------------------------------------------------------------------


@dataclass(eq=False)
class Subscription:
    """Handle returned by :meth:`LabviewConnector.subscribe`."""

    channel: str
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class LabviewConnector(ControlSystemConnector):
    name = "labview"
    description = "LabVIEW Web Services over HTTP: configured read/write method VIs."
    settings_model: ClassVar[type[BaseModel] | None] = LabviewSettings

    def __init__(self, settings: LabviewSettings | Mapping[str, Any] | None = None,
                 **kwargs: Any) -> None:
        if settings is None:
            settings = LabviewSettings()
        elif not isinstance(settings, LabviewSettings):
            settings = LabviewSettings.model_validate(settings)
        super().__init__(settings, **kwargs)
        self.settings: LabviewSettings = settings
        self._exact = {mapping.pattern: mapping for mapping in settings.channels
                       if _glob_regex(mapping.pattern).groups == 0}
        self._patterns = [(_glob_regex(mapping.pattern), mapping)
                          for mapping in settings.channels if mapping.pattern not in self._exact]
        self._auth_header: str | None = None
        self._ssl: ssl.SSLContext | None = None
        self._limiter: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        self._subscriptions: set[Subscription] = set()
        self._ready = False

    # -- lifecycle --------------------------------------------------------------------

    async def connect(self) -> None:
        """Check the settings and resolve credentials; HTTP needs no session."""
        if self.settings.base_url is None:
            raise ConfigError("labview.base_url is not set: the LabVIEW connector needs the "
                              "web service address, e.g. http://lv-server:8001")
        auth = self.settings.auth
        self._auth_header = None if isinstance(auth, NoAuth) else auth.header(os.environ)
        if urlsplit(self.settings.base_url).scheme == "https":
            self._ssl = self._ssl_context()
        self._ready = True

    def _ssl_context(self) -> ssl.SSLContext:
        return tls_context(self.settings.ca_file, verify=self.settings.verify_tls,
                           section="labview")

    async def close(self) -> None:
        subscriptions, self._subscriptions = list(self._subscriptions), set()
        for subscription in subscriptions:
            await self.unsubscribe(subscription)
        self._ready = False

    # -- channels ---------------------------------------------------------------------

    def mapping(self, channel: str) -> tuple[ChannelMapping, tuple[str, ...]]:
        """The mapping serving ``channel`` and the groups for its templates."""
        if (mapping := self._exact.get(channel)) is not None:
            return mapping, (channel,)
        for regex, mapping in self._patterns:
            if match := regex.fullmatch(channel):
                return mapping, (channel, *match.groups())
        raise ChannelNotFoundError(f"{channel} is not configured for the LabVIEW connector "
                                   "(no entry in labview.channels matches it)",
                                   channel=channel)

    async def read(self, channel: str) -> ChannelValue:
        mapping, groups = self.mapping(channel)
        call = mapping.read
        response = await self._request(call, _Context(channel, groups), "read")
        where = f"reading {channel}"
        if response.status in (401, 403):
            raise self._auth_failed(response, channel)
        if response.status == 404:
            raise ChannelNotFoundError(f"{where}: the web service answered 404 Not Found"
                                       f"{_detail(response)}", channel=channel)
        if not 200 <= response.status < 300:
            raise ControlSystemError(f"{where}: HTTP {response.status} {response.reason}"
                                     f"{_detail(response)}", channel=channel)
        if call.response == "text":
            return ChannelValue(channel, _convert(_from_text(response.text()), mapping, where),
                                datetime.now(UTC), units=mapping.units)
        document = _json_answer(response, where, channel)
        if call.error_path and (problem := _error_in(document, call.error_path)):
            raise ControlSystemError(f"{where}: the web service reported an error: {problem}",
                                     channel=channel)
        try:
            raw = extract(document, call.value_path)
        except _Missing:
            raise ControlSystemError(f"{where}: the answer has no value at "
                                     f"'{call.value_path}': {_snippet(response.text())}",
                                     channel=channel) from None
        value = _convert(raw, mapping, where)
        timestamp = datetime.now(UTC)
        severity, status = Severity.NO_ALARM, "NO_ALARM"
        if call.timestamp_path:
            with contextlib.suppress(_Missing):
                timestamp = _timestamp(extract(document, call.timestamp_path), where)
        if call.severity_path:
            with contextlib.suppress(_Missing):
                severity = _severity(extract(document, call.severity_path))
                status = severity.name
        if call.status_path:
            with contextlib.suppress(_Missing):
                status = str(extract(document, call.status_path))
        return ChannelValue(channel, value, timestamp, status, severity, mapping.units)

    async def write(self, channel: str, value: Any) -> WriteAck:
        mapping, groups = self.mapping(channel)
        call = mapping.write
        if call is None or not mapping.is_writable:
            raise NotWritableError(f"{channel} has no write method in labview.channels "
                                   "(read-only)", channel=channel)
        response = await self._request(call, _Context(channel, groups, value, True), "write")
        where = f"writing {channel}"
        if response.status in (401, 403):
            raise self._auth_failed(response, channel)
        if response.status == 404:
            raise ChannelNotFoundError(f"{where}: the web service answered 404 Not Found"
                                       f"{_detail(response)}", channel=channel)
        if response.status in _REJECTING_STATUSES:
            raise ServerRejectedError(f"the LabVIEW web service refused {value!r} for "
                                      f"{channel} (HTTP {response.status}): "
                                      f"{_message(response)}", channel=channel)
        if not 200 <= response.status < 300:
            raise ControlSystemError(f"{where}: HTTP {response.status} {response.reason}"
                                     f"{_detail(response)} (the value may or may not have "
                                     "been applied)", channel=channel)
        document: Any = None
        if response.body.strip():
            with contextlib.suppress(ValueError):
                document = response.json()
        if call.error_path and document is not None and (
                problem := _error_in(document, call.error_path)):
            raise ServerRejectedError(f"the LabVIEW web service refused {value!r} for "
                                      f"{channel}: {problem}", channel=channel)
        if call.success_path:
            if document is None:
                raise ControlSystemError(f"{where}: expected a JSON answer with "
                                         f"'{call.success_path}', got "
                                         f"{_snippet(response.text())}", channel=channel)
            try:
                accepted = extract(document, call.success_path)
            except _Missing:
                accepted = None
            if not _truthy(accepted):
                message = _refusal(document, call.message_path)
                raise ServerRejectedError(f"the LabVIEW web service refused {value!r} for "
                                          f"{channel}: {message}", channel=channel)
        return WriteAck(True, f"HTTP {response.status}")

    async def metadata(self, channel: str) -> ChannelMetadata:
        """From the mapping; with no ``data_type`` configured, one read tells the type."""
        mapping, _ = self.mapping(channel)
        data_type: str | None = mapping.data_type
        if data_type is None:
            data_type = _infer_type((await self.read(channel)).value)
        return ChannelMetadata(channel, data_type, units=mapping.units,
                               precision=mapping.precision, description=mapping.description,
                               writable=mapping.is_writable)

    # -- subscriptions ----------------------------------------------------------------

    async def subscribe(self, channel: str, callback: Callable[[ChannelValue], None]
                        ) -> Subscription:
        """Poll ``channel`` every ``poll_interval``; call back with the first value and
        on every change of value or alarm state."""
        self.mapping(channel)  # unknown channels fail now, not in the background
        subscription = Subscription(channel)
        subscription.task = asyncio.get_running_loop().create_task(
            self._poll(channel, callback), name=f"labview-poll-{channel}")
        self._subscriptions.add(subscription)
        return subscription

    async def unsubscribe(self, handle: Any) -> None:
        if not isinstance(handle, Subscription):
            raise TypeError(f"not a LabVIEW subscription handle: {handle!r}")
        self._subscriptions.discard(handle)
        task, handle.task = handle.task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _poll(self, channel: str, callback: Callable[[ChannelValue], None]) -> None:
        last: str | None = None
        failing = False
        while True:
            try:
                reading = await self.read(channel)
            except Exception as exc:
                if not failing:
                    log.warning("polling %s: %s", channel, exc)
                failing = True
            else:
                if failing:
                    log.info("polling %s: reading again", channel)
                failing = False
                key = json.dumps([reading.value, reading.severity, reading.status], default=str)
                if key != last:
                    last = key
                    try:
                        callback(reading)
                    except Exception:
                        log.exception("subscription callback for %s failed", channel)
            await asyncio.sleep(self.settings.poll_interval)

    # -- HTTP -------------------------------------------------------------------------

    def _auth_failed(self, response: HttpResponse, channel: str) -> AuthenticationError:
        kind = self.settings.auth.type
        hint = ("no credentials are configured (labview.auth)" if kind == "none" else
                f"check the {kind} credentials in labview.auth")
        return AuthenticationError(
            f"LabVIEW web service at {self.settings.base_url}: authentication failed "
            f"(HTTP {response.status} {response.reason}); {hint}", channel=channel)

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._limiter is None or self._limiter[0] is not loop:
            self._limiter = (loop, asyncio.Semaphore(self.settings.max_concurrency))
        return self._limiter[1]

    def _build(self, call: _HttpCall, method: str, context: _Context
               ) -> tuple[str, dict[str, str], bytes | None]:
        assert self.settings.base_url is not None
        base = urlsplit(self.settings.base_url)
        path = context.text(call.url, lambda text: quote(text, safe=""))
        path, _, query = path.partition("?")
        target = base.path.rstrip("/") + "/" + path.lstrip("/")
        target = quote(target, safe="/%:@!$&'()*+,;=-._~")
        params = [(context.text(key), context.text(value)) for key, value in call.params.items()]
        query = "&".join(part for part in (query, urlencode(params)) if part)
        if query:
            target += "?" + query
        headers: dict[str, str] = {}
        body: bytes | None = None
        if method in ("POST", "PUT"):
            payload = context.json(call.body) if call.body is not None else None
            if payload is None:
                body = b""
            elif call.body_format == "form":
                body = urlencode([(key, value_text(item)) for key, item in payload.items()]
                                 ).encode()
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            else:
                try:
                    body = json.dumps(payload, allow_nan=False).encode()
                except ValueError as exc:
                    raise ControlSystemError(f"cannot send {context.value!r} as JSON: {exc}",
                                             channel=context.channel) from None
                headers["Content-Type"] = "application/json"
        return target, headers, body

    async def _request(self, call: _HttpCall, context: _Context,
                       phase: Literal["read", "write"]) -> HttpResponse:
        if not self._ready:
            await self.connect()
        method = call.method
        target, extra, body = self._build(call, method, context)
        async with self._semaphore():
            return await self.exchange(method, target, extra, body, phase, context.channel)

    async def exchange(self, method: str, target: str, extra: dict[str, str],
                       body: bytes | None, phase: Literal["read", "write"],
                       channel: str | None = None) -> HttpResponse:
        """One HTTP request on a fresh connection, under the connector's timeouts."""
        assert self.settings.base_url is not None
        base = urlsplit(self.settings.base_url)
        host = base.hostname or ""
        tls = base.scheme == "https"
        port = base.port or (443 if tls else 80)
        authority = f"[{host}]" if ":" in host else host
        if base.port is not None:
            authority += f":{base.port}"
        headers = {"Host": authority, "User-Agent": "osprey-core-labview",
                   "Accept": "application/json, text/plain;q=0.9, */*;q=0.5",
                   "Connection": "close", **extra}
        if body is not None:
            headers["Content-Length"] = str(len(body))
        if self._auth_header is not None:
            headers["Authorization"] = self._auth_header
        head = f"{method} {target} HTTP/1.1\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
        server = f"LabVIEW web service at {self.settings.base_url}"
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=self._ssl if tls else None,
                                        server_hostname=host if tls else None,
                                        limit=2**16),
                self.connection_timeout)
        except TimeoutError:
            raise ConnectionTimeoutError(f"{server}: no connection within "
                                         f"{self.connection_timeout:g} s (connection_timeout)",
                                         channel=channel) from None
        except ssl.SSLCertVerificationError as exc:
            raise ControlSystemError(f"{server}: TLS certificate verification failed "
                                     f"({exc.verify_message}); set labview.ca_file to the "
                                     "facility CA", channel=channel) from None
        except OSError as exc:
            raise ControlSystemError(f"{server}: cannot connect: "
                                     f"{exc.strerror or exc}", channel=channel) from None
        limit = self.settings.max_response_bytes
        timeout = self.read_timeout if phase == "read" else self.write_timeout

        async def talk() -> HttpResponse:
            writer.write(head.encode("latin-1") + (body or b""))
            await writer.drain()
            status, reason, answer_headers = await _read_head(reader)
            data = b"" if method == "HEAD" or status in (204, 304) else (
                await _read_body(reader, answer_headers, limit))
            return HttpResponse(status, reason, answer_headers, data)

        try:
            return await asyncio.wait_for(talk(), timeout)
        except TimeoutError:
            if phase == "read":
                raise ReadTimeoutError(f"{server}: no answer within {timeout:g} s "
                                       "(read_timeout)", channel=channel) from None
            raise WriteTimeoutError(f"{server}: no answer within {timeout:g} s "
                                    "(write_timeout); the value may or may not have been "
                                    "applied", channel=channel) from None
        except (_ProtocolError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError, OSError) as exc:
            raise ControlSystemError(f"{server}: broken answer: {exc}",
                                     channel=channel) from None
        finally:
            writer.transport.abort()


# -- answers --------------------------------------------------------------------------------


def _snippet(text: str, size: int = 200) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= size else text[:size] + "...")


def _json_answer(response: HttpResponse, where: str, channel: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise ControlSystemError(f"{where}: the answer is not JSON: "
                                 f"{_snippet(response.text())} (set response: text for "
                                 "plain-text method VIs)", channel=channel) from None


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "ok", "yes", "1", "success")
    return bool(value)


def _error_in(document: Any, path: str) -> str | None:
    """The error reported at ``path``, or ``None`` when there is none."""
    try:
        error = extract(document, path)
    except _Missing:
        return None
    if error is None or error is False or error == "" or error == 0:
        return None
    if isinstance(error, dict):
        keys = {key.lower(): key for key in error}
        if "status" in keys:  # a LabVIEW error cluster
            if not _truthy(error[keys["status"]]):
                return None
            source = error.get(keys.get("source", ""), "")
            code = error.get(keys.get("code", ""), "")
            return " ".join(part for part in (str(source).strip(),
                                              f"(error {code})" if code != "" else "") if part)
        for key in _MESSAGE_KEYS:
            if key in keys and error[keys[key]]:
                return str(error[keys[key]])
        return json.dumps(error)[:200] if error else None
    if error is True and isinstance(document, dict):
        return _refusal(document, None)
    return str(error)


def _refusal(document: Any, message_path: str | None) -> str:
    if message_path:
        with contextlib.suppress(_Missing):
            return str(extract(document, message_path))
    if isinstance(document, dict):
        for key in _MESSAGE_KEYS:
            item = document.get(key)
            if isinstance(item, str) and item:
                return item
            if isinstance(item, dict) and (nested := _error_in({"e": item}, "e")):
                return nested
    return _snippet(json.dumps(document))


def _message(response: HttpResponse) -> str:
    """The server's own words about a failed request."""
    text = response.text().strip()
    if not text:
        return response.reason or f"HTTP {response.status}"
    try:
        document = json.loads(text)
    except ValueError:
        return _snippet(text, 300).strip("'\"")
    return _refusal(document, None)


def _detail(response: HttpResponse) -> str:
    return f": {_message(response)}" if response.body.strip() else ""


def _from_text(text: str) -> Any:
    text = text.strip()
    for kind in (int, float):
        with contextlib.suppress(ValueError):
            return kind(text)
    return text


def _infer_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, list):
        return "array"
    return "string"


def _convert(raw: Any, mapping: ChannelMapping, where: str) -> Any:
    """The JSON value as the configured data type; objects are never values."""
    kind = mapping.data_type

    def fail() -> ControlSystemError:
        return ControlSystemError(f"{where}: cannot use {raw!r} as {kind or 'a value'}")

    if isinstance(raw, dict) or raw is None:
        raise ControlSystemError(f"{where}: the value is {_snippet(json.dumps(raw))}; point "
                                 "value_path at a number, text, boolean or list")
    try:
        if kind == "float":
            if isinstance(raw, bool | list):
                raise fail()
            return float(raw)
        if kind == "int":
            if isinstance(raw, bool | list):
                raise fail()
            number = float(raw)
            if not number.is_integer():
                raise fail()
            return int(number)
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("true", "1", "1.0", "on", "yes"):
                return True
            if text in ("false", "0", "0.0", "off", "no"):
                return False
            raise fail()
        if kind == "string":
            return raw if isinstance(raw, str) else value_text(raw)
        if kind == "enum":
            return raw if isinstance(raw, str | int) and not isinstance(raw, bool) else (
                value_text(raw))
        if kind == "array":
            if not isinstance(raw, list):
                raise fail()
            return [float(item) if isinstance(item, str) else item for item in raw]
    except (TypeError, ValueError):
        raise fail() from None
    return raw


def _timestamp(raw: Any, where: str) -> datetime:
    try:
        if isinstance(raw, int | float) and not isinstance(raw, bool) and math.isfinite(raw):
            return datetime.fromtimestamp(raw, UTC)
        moment = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        raise ControlSystemError(f"{where}: bad timestamp {raw!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _severity(raw: Any) -> Severity:
    if isinstance(raw, str) and raw.strip().upper() in Severity.__members__:
        return Severity[raw.strip().upper()]
    try:
        number = int(raw)
    except (TypeError, ValueError):
        return Severity.INVALID
    return Severity(number) if 0 <= number <= 3 else Severity.INVALID
