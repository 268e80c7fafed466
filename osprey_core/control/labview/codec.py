"""Reading the web service's answers: values, types, timestamps, errors and refusals."""

from __future__ import annotations

import contextlib
import json
import math
from datetime import UTC, datetime
from typing import Any

from osprey_core.control.errors import ControlSystemError
from osprey_core.control.http import HttpResponse
from osprey_core.control.labview.paths import Missing, extract, value_text
from osprey_core.control.labview.settings import ChannelMapping
from osprey_core.control.types import Reason, Severity

_MESSAGE_KEYS = ("message", "error", "detail", "msg", "reason", "description")
REJECTING_STATUSES = frozenset({400, 409, 412, 422})

class AuthenticationError(ControlSystemError):
    """The web service refused our credentials (HTTP 401/403)."""

    reason = Reason.IO_ERROR


class NotWritableError(ControlSystemError):
    """The channel has no write method configured (or is marked read-only)."""

    reason = Reason.NOT_WRITABLE


# -- answers --------------------------------------------------------------------------------


def snippet(text: str, size: int = 200) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= size else text[:size] + "...")


def json_answer(response: HttpResponse, where: str, channel: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise ControlSystemError(f"{where}: the answer is not JSON: "
                                 f"{snippet(response.text())} (set response: text for "
                                 "plain-text method VIs)", channel=channel) from None


def truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "ok", "yes", "1", "success")
    return bool(value)


def error_in(document: Any, path: str) -> str | None:
    """The error reported at ``path``, or ``None`` when there is none."""
    try:
        error = extract(document, path)
    except Missing:
        return None
    if error is None or error is False or error == "" or error == 0:
        return None
    if isinstance(error, dict):
        keys = {key.lower(): key for key in error}
        if "status" in keys:  # a LabVIEW error cluster
            if not truthy(error[keys["status"]]):
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
        return refusal(document, None)
    return str(error)


def refusal(document: Any, message_path: str | None) -> str:
    if message_path:
        with contextlib.suppress(Missing):
            return str(extract(document, message_path))
    if isinstance(document, dict):
        for key in _MESSAGE_KEYS:
            item = document.get(key)
            if isinstance(item, str) and item:
                return item
            if isinstance(item, dict) and (nested := error_in({"e": item}, "e")):
                return nested
    return snippet(json.dumps(document))


def message_of(response: HttpResponse) -> str:
    """The server's own words about a failed request."""
    text = response.text().strip()
    if not text:
        return response.reason or f"HTTP {response.status}"
    try:
        document = json.loads(text)
    except ValueError:
        return snippet(text, 300).strip("'\"")
    return refusal(document, None)


def detail(response: HttpResponse) -> str:
    return f": {message_of(response)}" if response.body.strip() else ""


def from_text(text: str) -> Any:
    text = text.strip()
    for kind in (int, float):
        with contextlib.suppress(ValueError):
            return kind(text)
    return text


def infer_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, list):
        return "array"
    return "string"


def convert(raw: Any, mapping: ChannelMapping, where: str) -> Any:
    """The JSON value as the configured data type; objects are never values."""
    kind = mapping.data_type

    def fail() -> ControlSystemError:
        return ControlSystemError(f"{where}: cannot use {raw!r} as {kind or 'a value'}")

    if isinstance(raw, dict) or raw is None:
        raise ControlSystemError(f"{where}: the value is {snippet(json.dumps(raw))}; point "
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


def timestamp_of(raw: Any, where: str) -> datetime:
    try:
        if isinstance(raw, int | float) and not isinstance(raw, bool) and math.isfinite(raw):
            return datetime.fromtimestamp(raw, UTC)
        moment = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        raise ControlSystemError(f"{where}: bad timestamp {raw!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def severity_of(raw: Any) -> Severity:
    if isinstance(raw, str) and raw.strip().upper() in Severity.__members__:
        return Severity[raw.strip().upper()]
    try:
        number = int(raw)
    except (TypeError, ValueError):
        return Severity.INVALID
    return Severity(number) if 0 <= number <= 3 else Severity.INVALID
