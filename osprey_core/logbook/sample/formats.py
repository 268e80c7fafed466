"""How the generated logbook writes times and numbers: the writers' zones with their daylight
saving rules, ISO timestamps with offsets, and numbers as text made once (the generator's
hot path picks from these instead of formatting)."""

from __future__ import annotations

import time
from bisect import bisect_right
from datetime import UTC, datetime, timedelta


def _us_pacific_transitions(first: int, last: int) -> list[float]:
    """UTC instants at which the facility's clock changes (US rules: the second Sunday in
    March at 02:00 PST, the first Sunday in November at 02:00 PDT)."""
    instants = []
    for year in range(first, last + 1):
        march = datetime(year, 3, 8, 10, tzinfo=UTC)
        march += timedelta(days=(6 - march.weekday()) % 7)
        november = datetime(year, 11, 1, 9, tzinfo=UTC)
        november += timedelta(days=(6 - november.weekday()) % 7)
        instants += [march.timestamp(), november.timestamp()]
    return instants


def _eu_transitions(first: int, last: int) -> list[float]:
    """UTC instants of European summer time: last Sundays of March and October, 01:00 UTC."""
    instants = []
    for year in range(first, last + 1):
        for month in (3, 10):
            day = datetime(year, month, 31, 1, tzinfo=UTC)
            day -= timedelta(days=(day.weekday() + 1) % 7)
            instants.append(day.timestamp())
    return instants


PACIFIC = _us_pacific_transitions(2000, 2100)
EUROPE = _eu_transitions(2000, 2100)


def utc_offset(instant: float, zone: str) -> int:
    """Minutes east of UTC for a writer's clock: the facility (US Pacific), Europe, or UTC."""
    if zone == "utc":
        return 0
    if zone == "pacific":
        return -420 if bisect_right(PACIFIC, instant) % 2 else -480
    return 120 if bisect_right(EUROPE, instant) % 2 else 60


def local_iso(instant: float, offset: int) -> str:
    local = time.gmtime(int(instant) + offset * 60)
    return (f"{local.tm_year:04d}-{local.tm_mon:02d}-{local.tm_mday:02d}T{local.tm_hour:02d}:"
            f"{local.tm_min:02d}:{local.tm_sec:02d}{OFFSET_TEXT[offset]}")


OFFSET_TEXT = {minutes: f"{'+' if minutes >= 0 else '-'}{abs(minutes) // 60:02d}:"
                f"{abs(minutes) % 60:02d}" for minutes in (-480, -420, 0, 60, 120)}
D2 = tuple(f"{number:02d}" for number in range(100))


def _numbers(low: float, high: float, step: float, digits: int = 1) -> tuple[str, ...]:
    """Numbers as text, made once: formatting floats per entry costs more than all the
    rest of an entry."""
    return tuple(f"{low + i * step:.{digits}f}" for i in range(round((high - low) / step) + 1))


AMPS = _numbers(380, 500, 0.1)
LIFETIMES = _numbers(5.5, 9.5, 0.1)
KW_FORWARD = _numbers(80, 140, 0.1)
KW_REFLECTED = _numbers(5, 35, 0.1)
SURVIVED = _numbers(150, 350, 1, 0)
MS = _numbers(0, 3, 0.01, 2)
PRESSURE = _numbers(1, 9, 0.1)
NS = _numbers(0, 4, 0.01, 2)
SETPOINT = _numbers(-60, 60, 0.001, 3)
UM = _numbers(5, 85, 0.1)
RMS = _numbers(0, 5, 0.01, 2)
MM = _numbers(10, 100, 0.01, 2)
DOSE = _numbers(0, 4, 0.1)
TUNE_X = _numbers(0.15, 0.25, 0.0001, 4)
TUNE_Y = _numbers(0.2, 0.3, 0.0001, 4)
LIFETIME_MEASURED = _numbers(5, 10, 0.01, 2)
CHROMATICITY = _numbers(1, 3, 0.1)
KRPM = _numbers(20, 30, 0.1)
COUNTS = tuple(str(number) for number in range(1000))
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

