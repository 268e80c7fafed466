"""The LabVIEW connector: mapped method VIs over HTTP, polling subscriptions."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import quote, urlencode, urlsplit

from pydantic import BaseModel

if TYPE_CHECKING:
    import httpx

from osprey_core.control.errors import (
    ChannelNotFoundError,
    ControlSystemError,
    ReadTimeoutError,
    ServerRejectedError,
    WriteTimeoutError,
)
from osprey_core.control.http import Exchange, HttpResponse, new_client, send, tls_context
from osprey_core.control.labview.codec import (
    REJECTING_STATUSES,
    AuthenticationError,
    NotWritableError,
    convert,
    detail,
    error_in,
    from_text,
    infer_type,
    json_answer,
    message_of,
    refusal,
    severity_of,
    snippet,
    timestamp_of,
    truthy,
)
from osprey_core.control.labview.paths import Fill, Missing, extract, value_text
from osprey_core.control.labview.settings import (
    ChannelMapping,
    HttpCall,
    LabviewSettings,
    NoAuth,
    glob_regex,
)
from osprey_core.control.types import ChannelMetadata, ChannelValue, Severity, WriteAck
from osprey_core.errors import ConfigError
from osprey_core.hookspecs.connectors import ControlSystemConnector

log = logging.getLogger(__name__)

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
                       if glob_regex(mapping.pattern).groups == 0}
        self._patterns = [(glob_regex(mapping.pattern), mapping)
                          for mapping in settings.channels if mapping.pattern not in self._exact]
        self._auth_header: str | None = None
        self._ssl: ssl.SSLContext | None = None
        #: One HTTP client and request limiter per event loop (both belong to their loop).
        self._session: tuple[asyncio.AbstractEventLoop, httpx.AsyncClient,
                             asyncio.Semaphore] | None = None
        self._subscriptions: set[Subscription] = set()
        self._ready = False

    # -- lifecycle --------------------------------------------------------------------

    async def connect(self) -> None:
        """Check the settings and resolve credentials; connections open on first use."""
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
        session, self._session = self._session, None
        if session is not None and session[0] is asyncio.get_running_loop():
            await session[1].aclose()
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
        response = await self._request(call, Fill(channel, groups), "read")
        where = f"reading {channel}"
        if response.status in (401, 403):
            raise self._auth_failed(response, channel)
        if response.status == 404:
            raise ChannelNotFoundError(f"{where}: the web service answered 404 Not Found"
                                       f"{detail(response)}", channel=channel)
        if not 200 <= response.status < 300:
            raise ControlSystemError(f"{where}: HTTP {response.status} {response.reason}"
                                     f"{detail(response)}", channel=channel)
        if call.response == "text":
            return ChannelValue(channel, convert(from_text(response.text()), mapping, where),
                                datetime.now(UTC), units=mapping.units)
        document = json_answer(response, where, channel)
        if call.error_path and (problem := error_in(document, call.error_path)):
            raise ControlSystemError(f"{where}: the web service reported an error: {problem}",
                                     channel=channel)
        try:
            raw = extract(document, call.value_path)
        except Missing:
            raise ControlSystemError(f"{where}: the answer has no value at "
                                     f"'{call.value_path}': {snippet(response.text())}",
                                     channel=channel) from None
        value = convert(raw, mapping, where)
        timestamp = datetime.now(UTC)
        severity, status = Severity.NO_ALARM, "NO_ALARM"
        if call.timestamp_path:
            with contextlib.suppress(Missing):
                timestamp = timestamp_of(extract(document, call.timestamp_path), where)
        if call.severity_path:
            with contextlib.suppress(Missing):
                severity = severity_of(extract(document, call.severity_path))
                status = severity.name
        if call.status_path:
            with contextlib.suppress(Missing):
                status = str(extract(document, call.status_path))
        return ChannelValue(channel, value, timestamp, status, severity, mapping.units)

    async def write(self, channel: str, value: Any) -> WriteAck:
        mapping, groups = self.mapping(channel)
        call = mapping.write
        if call is None or not mapping.is_writable:
            raise NotWritableError(f"{channel} has no write method in labview.channels "
                                   "(read-only)", channel=channel)
        response = await self._request(call, Fill(channel, groups, value, True), "write")
        where = f"writing {channel}"
        if response.status in (401, 403):
            raise self._auth_failed(response, channel)
        if response.status == 404:
            raise ChannelNotFoundError(f"{where}: the web service answered 404 Not Found"
                                       f"{detail(response)}", channel=channel)
        if response.status in REJECTING_STATUSES:
            raise ServerRejectedError(f"the LabVIEW web service refused {value!r} for "
                                      f"{channel} (HTTP {response.status}): "
                                      f"{message_of(response)}", channel=channel)
        if not 200 <= response.status < 300:
            raise ControlSystemError(f"{where}: HTTP {response.status} {response.reason}"
                                     f"{detail(response)} (the value may or may not have "
                                     "been applied)", channel=channel)
        document: Any = None
        if response.body.strip():
            with contextlib.suppress(ValueError):
                document = response.json()
        if call.error_path and document is not None and (
                problem := error_in(document, call.error_path)):
            raise ServerRejectedError(f"the LabVIEW web service refused {value!r} for "
                                      f"{channel}: {problem}", channel=channel)
        if call.success_path:
            if document is None:
                raise ControlSystemError(f"{where}: expected a JSON answer with "
                                         f"'{call.success_path}', got "
                                         f"{snippet(response.text())}", channel=channel)
            try:
                accepted = extract(document, call.success_path)
            except Missing:
                accepted = None
            if not truthy(accepted):
                message = refusal(document, call.message_path)
                raise ServerRejectedError(f"the LabVIEW web service refused {value!r} for "
                                          f"{channel}: {message}", channel=channel)
        return WriteAck(True, f"HTTP {response.status}")

    async def metadata(self, channel: str) -> ChannelMetadata:
        """From the mapping; with no ``data_type`` configured, one read tells the type."""
        mapping, _ = self.mapping(channel)
        data_type: str | None = mapping.data_type
        if data_type is None:
            data_type = infer_type((await self.read(channel)).value)
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

    def _client(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session[0] is not loop:
            client = new_client(
                tls=self._ssl, max_connections=self.settings.max_concurrency,
                headers={"User-Agent": "osprey-core-labview",
                         "Accept": "application/json, text/plain;q=0.9, */*;q=0.5"})
            self._session = (loop, client, asyncio.Semaphore(self.settings.max_concurrency))
        return self._session[1], self._session[2]

    def _build(self, call: HttpCall, method: str, context: Fill
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

    async def _request(self, call: HttpCall, context: Fill,
                       phase: Literal["read", "write"]) -> HttpResponse:
        if not self._ready:
            await self.connect()
        assert self.settings.base_url is not None
        target, headers, body = self._build(call, call.method, context)
        if self._auth_header is not None:
            headers["Authorization"] = self._auth_header
        base = urlsplit(self.settings.base_url)
        server = f"LabVIEW web service at {self.settings.base_url}"

        def late(timeout: float) -> ControlSystemError:
            if phase == "read":
                return ReadTimeoutError(f"{server}: no answer within {timeout:g} s "
                                        "(read_timeout)", channel=context.channel)
            return WriteTimeoutError(f"{server}: no answer within {timeout:g} s "
                                     "(write_timeout); the value may or may not have been "
                                     "applied", channel=context.channel)

        client, limiter = self._client()
        async with limiter:
            return await send(
                client, call.method, f"{base.scheme}://{base.netloc}{target}",
                Exchange(server, "labview", late, context.channel),
                timeout=self.read_timeout if phase == "read" else self.write_timeout,
                connection_timeout=self.connection_timeout,
                limit=self.settings.max_response_bytes, headers=headers, content=body)
