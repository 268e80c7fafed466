"""EPICS Archiver Appliance archiver: its HTTP JSON retrieval API.

One ``GET {url}/data/getData.json?pv=...&from=...&to=...`` per channel, all channels at
once (bounded by ``max_concurrency``). Times go out as ISO 8601 in UTC with a ``Z``
(``2024-05-01T12:00:00.000Z``); naive datetimes are refused rather than guessed. A
server-side operator wraps the PV name the way the appliance expects, e.g. ``mean_60``
asks for ``mean_60(SR:Current)``: one-minute averaging bins computed by the appliance.

The answer, ``[{"meta": {"name": ..., "EGU": ...}, "data": [{"secs", "nanos", "val",
"severity", "status"}, ...]}]``, becomes :class:`~osprey_core.control.types.Sample` objects
with timezone-aware UTC timestamps; waveforms stay lists. A PV the appliance does not
archive (HTTP 404, or an empty body) raises ``ChannelNotFoundError``; an archived PV with
no samples in the range maps to ``[]``.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlencode, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from osprey_core.control.errors import (
    ChannelNotFoundError,
    ControlSystemError,
    ReadTimeoutError,
)
from osprey_core.control.http import (
    Exchange,
    check_http_url,
    new_client,
    redacted,
    send,
    tls_context,
)
from osprey_core.control.types import Sample, Severity, safe_repr
from osprey_core.errors import ConfigError, OspreyError
from osprey_core.hookspecs.archivers import ArchiverConnector

if TYPE_CHECKING:
    import httpx

#: The appliance's post-processors (``mean_60``, ``firstSample_3600``, ...). Those that can
#: fill empty bins also exist with a ``Sample`` suffix that does not (``meanSample_60``).
OPERATORS = frozenset({
    "firstSample", "lastSample", "firstFill", "lastFill", "mean", "min", "max", "count",
    "ncount", "nth", "median", "std", "jitter", "ignoreflyers", "flyers", "variance",
    "popvariance", "kurtosis", "skewness", "linear", "loess", "rms", "caplotbinning",
    "deadBand", "errorbar", "optimized", "optimLastSample",
})
#: Largest answer accepted for one channel (a year of 10 Hz samples is about 250 MB).
MAX_ANSWER = 1 << 30
_OPERATOR = re.compile(r"(?P<name>[A-Za-z]+)(?P<args>(?:_\d+(?:\.\d+)?)*)")

#: EPICS alarm status codes (``epicsAlarmConditionStrings``), as the appliance stores them.
ALARM_STATUS = (
    "NO_ALARM", "READ", "WRITE", "HIHI", "HIGH", "LOLO", "LOW", "STATE", "COS", "COMM",
    "TIMEOUT", "HWLIMIT", "CALC", "SCAN", "LINK", "SOFT", "BAD_SUB", "UDF", "DISABLE",
    "SIMM", "READ_ACCESS", "WRITE_ACCESS",
)


class ArchiverRequestError(OspreyError, ValueError):
    """A retrieval request that cannot be sent as asked (naive time, bad operator, ...)."""


class ArchiverApplianceSettings(BaseModel):
    """Where the Archiver Appliance's retrieval service is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = Field(None, description="Retrieval base URL, e.g. "
                            "http://archiver:17668/retrieval (data/getData.json is appended).")
    timeout: float | None = Field(None, gt=0, description="Seconds per retrieval; default: "
                                  "archiver.timeout.")
    verify_tls: bool = Field(True, description="Check the server certificate (https).")
    ca_file: Path | None = Field(None, description="CA bundle (PEM) for a facility CA.")
    max_concurrency: int = Field(8, ge=1, le=64, description="Channels fetched at once.")
    use_env_proxy: bool = Field(False, description="Go through the http(s)_proxy of the "
                                "environment (off: connect directly, as on a control network).")
    extra_operators: list[str] = Field(
        default_factory=list, description="Operator names this appliance supports beyond "
        "the standard post-processors.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        return check_http_url(url, "url", allow_credentials=True).rstrip("/")

    @field_validator("extra_operators")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not re.fullmatch(r"[A-Za-z]+", name):
                raise ValueError(f"operator name {name!r} must be letters only")
        return names


def format_time(moment: datetime, what: str = "time") -> str:
    """``2024-05-01T12:00:00.123Z``: UTC with milliseconds, as the appliance parses it."""
    if not isinstance(moment, datetime):
        raise ArchiverRequestError(f"{what} must be a datetime, not {type(moment).__name__}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ArchiverRequestError(
            f"{what} {moment.isoformat()} has no timezone: the archiver needs UTC-aware "
            "times, e.g. datetime(..., tzinfo=datetime.UTC)")
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


class ArchiverApplianceConnector(ArchiverConnector):
    name = "archiver_appliance"
    description = "EPICS Archiver Appliance over its HTTP JSON retrieval API."
    settings_model: ClassVar[type[BaseModel] | None] = ArchiverApplianceSettings

    # The constructor is the base class's (settings, timeout and whatever it grows).

    @property
    def config(self) -> ArchiverApplianceSettings:
        settings = self.settings
        if settings is None:
            settings = ArchiverApplianceSettings()
        elif not isinstance(settings, ArchiverApplianceSettings):
            settings = ArchiverApplianceSettings.model_validate(settings)
        self.settings = settings
        return settings

    @property
    def effective_timeout(self) -> float:
        return self.config.timeout or self.timeout

    def wrap(self, channel: str, operator: str | None) -> str:
        """The ``pv`` argument: ``channel`` itself or ``operator(channel)``."""
        if operator is None or operator in ("", "raw"):
            return channel
        match = _OPERATOR.fullmatch(operator) if isinstance(operator, str) else None
        if match is None:
            raise ArchiverRequestError(
                f"operator {operator!r} is not of the form name or name_N (e.g. mean_60)")
        name = match["name"]
        known = OPERATORS | set(self.config.extra_operators)
        if name not in known and not (name.endswith("Sample") and name[:-6] in known):
            raise ArchiverRequestError(
                f"unknown operator {name!r}; the Archiver Appliance offers: "
                f"{', '.join(sorted(OPERATORS))} (add others with "
                "archiver_appliance.extra_operators)")
        return f"{operator}({channel})"

    async def retrieve(
        self,
        channels: Sequence[str],
        start: datetime,
        end: datetime,
        *,
        operator: str | None = None,
    ) -> dict[str, list[Sample]]:
        if isinstance(channels, str):
            raise ArchiverRequestError("channels must be a list of names, not one string")
        begin, finish = format_time(start, "start"), format_time(end, "end")
        if start > end:
            raise ArchiverRequestError(f"start {begin} is after end {finish}")
        for channel in channels:
            if not isinstance(channel, str) or not channel.strip() or not channel.isprintable():
                raise ArchiverRequestError(f"invalid channel name {safe_repr(channel)}")
        wrapped = {channel: self.wrap(channel, operator) for channel in channels}
        url = self.config.url
        if url is None:
            raise ConfigError("archiver_appliance.url is not set: the Archiver Appliance "
                              "archiver needs its retrieval URL, e.g. "
                              "http://archiver:17668/retrieval")
        tls = self._ssl_context() if urlsplit(url).scheme == "https" else None
        limit = asyncio.Semaphore(self.config.max_concurrency)
        client = new_client(tls=tls, max_connections=self.config.max_concurrency,
                            trust_env=self.config.use_env_proxy,
                            headers={"Accept": "application/json",
                                     "User-Agent": "osprey-core-archiver-appliance"})

        async def one(channel: str) -> list[Sample]:
            query = urlencode({"pv": wrapped[channel], "from": begin, "to": finish})
            async with limit:
                document = await self._fetch(client, f"{url}/data/getData.json?{query}",
                                             channel)
            return parse_response(document, channel)

        async with client:
            unique = list(dict.fromkeys(channels))
            results = await asyncio.gather(*(one(channel) for channel in unique))
        return dict(zip(unique, results, strict=True))

    def _ssl_context(self) -> ssl.SSLContext:
        return tls_context(self.config.ca_file, verify=self.config.verify_tls,
                           section="archiver_appliance")

    async def _fetch(self, client: httpx.AsyncClient, url: str, channel: str) -> Any:
        """GET and decode one answer."""
        timeout = self.effective_timeout
        server = f"Archiver Appliance at {redacted(self.config.url or '')}"

        def late(seconds: float) -> ControlSystemError:
            return ReadTimeoutError(f"{server}: no complete answer for {channel} within "
                                    f"{seconds:g} s (archiver timeout)", channel=channel)

        how = Exchange(server, "archiver_appliance", late, channel, "archiver timeout")
        answer = await send(client, "GET", url, how, timeout=timeout,
                            connection_timeout=timeout, total=timeout, limit=MAX_ANSWER)
        body = answer.body
        if answer.status == 404:
            raise ChannelNotFoundError(
                f"{server} does not archive {channel} (HTTP 404{_error_text(body)}); check "
                "the name or, with an operator, that the appliance accepts it",
                channel=channel)
        if not 200 <= answer.status < 300:
            raise ControlSystemError(f"{server}: retrieving {channel} failed: HTTP "
                                     f"{answer.status} {answer.reason}{_error_text(body)}",
                                     channel=channel)
        if not body.strip():
            raise ChannelNotFoundError(f"{server} returned nothing for {channel}: it is not "
                                       "archived", channel=channel)
        try:
            return json.loads(body.decode("utf-8"))
        except ValueError:
            snippet = " ".join(body[:200].decode("utf-8", errors="replace").split())
            raise ControlSystemError(f"{server}: the answer for {channel} is not JSON: "
                                     f"{snippet!r}", channel=channel) from None


def _error_text(body: bytes) -> str:
    text = body[:2000].decode("utf-8", errors="replace")
    text = re.sub(r"<[^>]+>", " ", text)  # Tomcat error pages are HTML
    text = " ".join(text.split())
    return f": {text[:200]}" if text else ""


def parse_response(document: Any, channel: str) -> list[Sample]:
    """Samples from a ``getData.json`` answer (a list of ``{meta, data}`` blocks)."""
    if not isinstance(document, list):
        raise ControlSystemError(f"unexpected Archiver Appliance answer for {channel}: "
                                 f"expected a list, got {type(document).__name__}",
                                 channel=channel)
    samples: list[Sample] = []
    for block in document:
        if not isinstance(block, Mapping) or not isinstance(block.get("data", []), list):
            raise ControlSystemError(f"unexpected Archiver Appliance answer for {channel}: "
                                     "each entry needs a 'data' list", channel=channel)
        for point in block.get("data", []):
            samples.append(_sample(point, channel))
    return samples


def _sample(point: Any, channel: str) -> Sample:
    try:
        secs = int(point["secs"])
        nanos = int(point.get("nanos", 0))
        value = point["val"]
    except (TypeError, KeyError, ValueError):
        raise ControlSystemError(f"unexpected Archiver Appliance sample for {channel}: "
                                 f"{str(point)[:120]}", channel=channel) from None
    timestamp = datetime.fromtimestamp(secs, UTC) + timedelta(microseconds=nanos // 1000)
    return Sample(timestamp, value, severity(point.get("severity", 0)),
                  alarm_status(point.get("status", 0)))


def severity(raw: Any) -> Severity:
    """EPICS severities 0-3; anything else the appliance stores counts as INVALID."""
    try:
        number = int(raw)
    except (TypeError, ValueError):
        text = str(raw).strip().upper()
        return Severity[text] if text in Severity.__members__ else Severity.INVALID
    return Severity(number) if 0 <= number <= 3 else Severity.INVALID


def alarm_status(raw: Any) -> str:
    if isinstance(raw, str) and not raw.strip().isdigit():
        return raw
    try:
        number = int(raw)
    except (TypeError, ValueError):
        return str(raw)
    return ALARM_STATUS[number] if 0 <= number < len(ALARM_STATUS) else str(number)
