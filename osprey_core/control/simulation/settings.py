"""The ``mock`` config section, channel names and the time grid of the simulation."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from osprey_core.errors import ConfigError

STATE_FILE_NAME = "mock-machine.json"
STATE_FORMAT = "osprey-mock-machine-state"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# EPICS record-name characters, optionally followed by a ``.FIELD``; at most 128 characters.
_NAME = re.compile(r"[A-Za-z0-9_$][A-Za-z0-9_:+\-\[\]<>;{}$]{0,123}(?:\.[A-Z0-9_]{1,4})?\Z")


def valid_name(channel: object) -> bool:
    """Whether ``channel`` is an EPICS-like channel name (letters, digits, ``_:-+[]<>;``)."""
    return isinstance(channel, str) and bool(_NAME.match(channel))


def to_datetime(seconds: float) -> datetime:
    """Epoch seconds (already on the microsecond grid) as an aware UTC datetime."""
    return _EPOCH + timedelta(microseconds=round(seconds * 1_000_000))


def to_seconds(moment: datetime) -> float:
    """An aware datetime as epoch seconds, exactly inverse to :func:`to_datetime`."""
    return (moment - _EPOCH) / timedelta(microseconds=1) / 1_000_000


def now_seconds(clock: Callable[[], float] = time.time) -> float:
    """``clock()`` rounded to the microsecond, so timestamps round-trip through datetimes."""
    return round(clock() * 1_000_000) / 1_000_000


# -- configuration -------------------------------------------------------------------


class MockSettings(BaseModel):
    """The simulated machine (``mock`` connector and archiver)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    machine_file: Path | None = Field(
        None, description="Machine description (YAML, see docs/control/mock.md); default: "
        "the built-in demo storage ring.")
    state_file: Path | None = Field(
        None, description="Where written setpoints are kept (JSON); default: "
        "<home>/mock-machine.json, or memory only when there is no home.")
    update_interval: float = Field(
        0.1, gt=0, le=60, description="Seconds between subscription updates.")
    noise: bool = Field(True, description="Add the declared measurement noise to readings.")
    time_scale: float = Field(
        1.0, gt=0, le=10_000, description="Speed-up of the slow dynamics (beam decay, "
        "injections, drifts); readback lags are unaffected.")
    any_name_reads: bool = Field(
        False, description="Let undeclared channel names read a plausible value and accept "
        "writes (a sandbox for trying names). Off: an undeclared name is not found, with "
        "the closest declared names suggested, as on a real control system.")


def coerce_settings(settings: Any) -> MockSettings:
    """``None``, a mapping or a :class:`MockSettings` (or a model with the same fields)."""
    if isinstance(settings, MockSettings):
        return settings
    if settings is None:
        return MockSettings()
    data = settings if isinstance(settings, Mapping) else settings.model_dump()
    try:
        return MockSettings.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(f"mock settings: {problems(exc)}") from None


def problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(part) for part in error['loc']) or '(top)'}: "
                     f"{error['msg']}" for error in exc.errors())
