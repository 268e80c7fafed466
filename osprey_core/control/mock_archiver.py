"""History of the simulated machine: the model evaluated at past times.

Raw retrieval samples the model on a grid aligned to multiples of a period chosen from the
range (1 s up to a day, at most :data:`MAX_SAMPLES` samples), starts with the value at
``start`` (as the Archiver Appliance starts with the last value before it) and adds every
setpoint change inside the range at its exact time. Operators ``mean_N``, ``min_N``,
``max_N``, ``firstSample_N`` and ``lastSample_N`` reduce N-second bins aligned to
multiples of N, evaluated at evenly spaced points (midpoint rule); each bin's sample is
stamped at the middle of the part of the bin inside the range.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from statistics import fmean
from typing import Any

from osprey_core.control.simulation import SimulatedMachine, to_datetime, to_seconds
from osprey_core.control.types import Sample, is_number

MAX_SAMPLES = 2000
MAX_BINS = 20_000
#: Points evaluated per bin at most (fewer when there are many bins).
BIN_POINTS = 60
_PERIODS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200,
            86400)
_OPERATOR = re.compile(r"(mean|min|max|firstSample|lastSample)_([1-9][0-9]*)\Z")


def raw_period(span: float) -> float:
    """The grid period for a range of ``span`` seconds: the first giving <= MAX_SAMPLES."""
    for period in _PERIODS:
        if span / period <= MAX_SAMPLES:
            return float(period)
    return math.ceil(span / MAX_SAMPLES)


def _micro(seconds: float) -> float:
    return round(seconds * 1_000_000) / 1_000_000


def retrieve_history(machine: SimulatedMachine, channels: Sequence[str], start: datetime,
                     end: datetime, operator: str | None = None) -> dict[str, list[Sample]]:
    """Samples of each channel over [start, end] (clipped to now), as the model says."""
    for moment, label in ((start, "start"), (end, "end")):
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError(f"mock archiver: {label} {moment} must be timezone-aware")
    if start > end:
        raise ValueError(f"mock archiver: start {start} is after end {end}")
    reducer = _reducer(operator)
    for channel in channels:
        machine.channel(channel)  # ChannelNotFoundError for a bad name, before any work
    machine.log.refresh()
    first, last = to_seconds(start), min(to_seconds(end), machine.now())
    if first > last:
        return {channel: [] for channel in channels}
    return {channel: (_raw(machine, channel, first, last) if reducer is None
                      else _binned(machine, channel, first, last, *reducer))
            for channel in channels}


def _reducer(operator: str | None) -> tuple[int, Callable[[list[Any]], Any]] | None:
    if operator in (None, "", "raw"):
        return None
    match = _OPERATOR.match(operator or "")
    if match is None:
        raise ValueError(f"mock archiver: unsupported operator {operator!r}; use raw, mean_N, "
                         "min_N, max_N, firstSample_N or lastSample_N (N seconds)")
    name, seconds = match.group(1), int(match.group(2))
    reduce: Callable[[list[Any]], Any] = {
        "mean": _mean, "min": lambda values: _extreme(values, min),
        "max": lambda values: _extreme(values, max),
        "firstSample": lambda values: values[0], "lastSample": lambda values: values[-1],
    }[name]
    return seconds, reduce


def _raw(machine: SimulatedMachine, channel: str, first: float, last: float) -> list[Sample]:
    period = raw_period(last - first)
    times = {first}
    step = math.ceil(first / period)
    while (at := step * period) <= last:
        times.add(_micro(at))
        step += 1
    spec = machine.channel(channel)
    if spec.kind == "setpoint" or channel not in machine.spec.channels:
        times.update(at for at, _ in machine.log.changes(channel) if first <= at <= last)
    return [_sample(machine, channel, at) for at in sorted(times)]


def _binned(machine: SimulatedMachine, channel: str, first: float, last: float, seconds: int,
            reduce: Callable[[list[Any]], Any]) -> list[Sample]:
    low = math.floor(first / seconds) * seconds
    count = math.ceil((last - low) / seconds) or 1
    if count > MAX_BINS:
        raise ValueError(f"mock archiver: {count} bins of {seconds} s is more than {MAX_BINS}; "
                         "use a larger N or a shorter range")
    points = max(2, min(BIN_POINTS, 200_000 // count))
    spec = machine.channel(channel)
    samples = []
    for index in range(count):
        begin = max(first, low + index * seconds)
        finish = min(last, low + (index + 1) * seconds)
        if begin > finish:
            continue
        times = [_micro(begin + (finish - begin) * (k + 0.5) / points) for k in range(points)]
        value = reduce([machine.value(channel, at) for at in times])
        status, severity = machine.alarm(spec, value)
        samples.append(Sample(to_datetime(_micro((begin + finish) / 2)), value, severity,
                              status))
    return samples


def _sample(machine: SimulatedMachine, channel: str, at: float) -> Sample:
    reading = machine.sample(channel, at)
    return Sample(reading.timestamp, reading.value, reading.severity, reading.status)


def _mean(values: list[Any]) -> Any:
    if all(is_number(value) for value in values):
        return fmean(values)
    if all(isinstance(value, list) for value in values) and len({len(v) for v in values}) == 1:
        return [fmean(column) for column in zip(*values, strict=True)]
    return values[-1]  # text and enums: the value at the end of the bin


def _extreme(values: list[Any], pick: Callable[..., Any]) -> Any:
    if all(is_number(value) for value in values):
        return pick(values)
    if all(isinstance(value, list) for value in values) and len({len(v) for v in values}) == 1:
        return [pick(column) for column in zip(*values, strict=True)]
    return values[-1]
