"""The ``mock`` generator's logic: deterministic code for common requests, no model needed.

It recognizes a few phrasings, in this order: a write (``set HCM1:SP to 2.0``), a fit
(``fit the trend of SR:CURRENT``), statistics (``mean``, ``std`` ... of the current readings,
or of the history when a span such as ``over the last 2 hours`` is named or there is only
one channel), history with a figure (``plot``, ``history``, ``trend`` or just a span) and
otherwise a read of the channels named. Channel names are resolved against the control
system's list (case-insensitive, globs such as ``BPM*:X`` expanded) when the context offers
one. A write request produces write code only in write mode; in read mode the code reads
the channels and reports what it would have set. Same request, same code.

The code uses the runtime API the sandbox injects as globals (``read_channels``,
``read_archiver``, ``write_channel``...); writes are literal calls so the analyzer can
predict exactly which channels and values they touch.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from osprey_core.control.capabilities import is_channel_name, match_write
from osprey_core.execution.generation import GenerationError, excerpt
from osprey_core.execution.models import ExecutionMode, ExecutionRequest

if TYPE_CHECKING:
    from osprey_core.hookspecs.code_generators import GeneratorContext

_WORD = re.compile(r"[^\s,;()\"'`]+")
_GLOB = re.compile(r"[*?\[]")
_FIT = re.compile(r"\bfit(?:s|ting)?\b", re.IGNORECASE)
_PLOT = re.compile(r"\b(?:plot|graph|chart|history|historical|trend|archived?|over\s+time)",
                   re.IGNORECASE)
_STATISTICS = re.compile(r"\b(?:mean|average|avg|std|standard\s+deviation|statistics|stats"
                         r"|rms|min(?:imum)?|max(?:imum)?|spread)\b", re.IGNORECASE)
_SPAN = re.compile(r"\b(?:last|past)\s+(?:(?P<count>\d+(?:\.\d+)?)\s*)?"
                   r"(?P<unit>s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?|d|days?|w|weeks?)\b",
                   re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
DEFAULT_SPAN_SECONDS = 3600.0

UNDERSTOOD = ("read X, Y; mean/std of X, Y; plot/history of X over the last N hours; fit the "
              "trend of X; set X to V (write mode)")


async def mock_code(request: ExecutionRequest, context: GeneratorContext | None) -> str:
    """Code for ``request``; :class:`GenerationError` if it names no known channel."""
    text = " ".join([request.text, *request.capability_hints])
    known = None
    if context is not None and context.list_channels is not None:
        known = await context.list_channels("*")
    if found := match_write(request.text):
        targets = {_resolve_one(item["channel"], known): item["value"]
                   for item in found["writes"]}
        if request.mode is ExecutionMode.WRITE:
            return write_code(targets)
        return read_code(list(targets), not_written=targets)
    channels = resolve_channels(text, known)
    if not channels:
        raise GenerationError(f"the mock generator found no known channel name in "
                              f"{excerpt(request.text)}; it understands: {UNDERSTOOD}")
    span = span_seconds(request.text)
    plot = bool(_PLOT.search(request.text))
    if _FIT.search(request.text):
        return fit_code(channels, span or DEFAULT_SPAN_SECONDS)
    if _STATISTICS.search(request.text) and not plot:
        if span or len(channels) == 1:  # one reading has no spread: use its history
            return history_code(channels, span or DEFAULT_SPAN_SECONDS, plot=False)
        return statistics_code(channels)
    if plot or span:
        return history_code(channels, span or DEFAULT_SPAN_SECONDS)
    return read_code(channels)


def resolve_channels(text: str, known: Sequence[str] | None) -> list[str]:
    """Channel names in ``text``, in order; with ``known``, only (case-corrected) known ones."""
    found: dict[str, None] = {}
    for word in _WORD.findall(text):
        word = word.rstrip(".?!")
        if not is_channel_name(word):
            continue
        if known is None:
            if not _GLOB.search(word):
                found[word] = None
            continue
        pattern = word.lower()
        found.update(dict.fromkeys(name for name in known
                                   if fnmatch.fnmatchcase(name.lower(), pattern)))
    return list(found)


def _resolve_one(channel: str, known: Sequence[str] | None) -> str:
    if known is None:
        return channel
    for name in known:
        if name.lower() == channel.lower():
            return name
    raise GenerationError(f"the mock generator cannot write {channel!r}: the control system "
                          "knows no such channel")


def span_seconds(text: str) -> float | None:
    """``last 2 hours`` → 7200; ``past minute`` → 60; ``None`` if no span is named."""
    found = _SPAN.search(text)
    if found is None:
        return None
    unit = found["unit"].lower()
    return float(found["count"] or 1) * _UNIT_SECONDS[unit[0]]


# -- templates ------------------------------------------------------------------------------

_SUMMARY = '''\
def summary(values):
    if len(values) == 0:
        return {"samples": 0}
    return {"samples": len(values), "mean": float(np.mean(values)),
            "std": float(np.std(values)), "min": float(np.min(values)),
            "max": float(np.max(values))}
'''


def _history(channels: list[str], seconds: float) -> str:
    return (f"channels = {channels!r}\n"
            f"history = read_archiver(channels, timedelta(seconds={seconds:g}))\n"
            "series = {}\n"
            "for name in channels:\n"
            "    samples = history.get(name, [])\n"
            "    series[name] = ([datetime.fromisoformat(stamp) for stamp, _ in samples],\n"
            "                    np.array([float(value) for _, value in samples]))\n")


def _comment(text: str) -> str:
    """A one-line comment, whatever characters the channel names bring."""
    return f"# {' '.join(text.split())}\n"


def _describe(seconds: float) -> str:
    for unit, size in (("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"last {unit}" if count == 1 else f"last {count} {unit}s"
    return f"last {seconds:g} s"


def read_code(channels: list[str], not_written: dict[str, Any] | None = None) -> str:
    code = (_comment(f"Read the current values of {', '.join(channels)}.")
            + f"values = read_channels({channels!r})\n"
            'results["values"] = values\n')
    if not_written:
        code += ("# Read-only run: report the requested write instead of making it.\n"
                 f'results["requested_writes"] = {not_written!r}\n'
                 'results["written"] = False\n'
                 'print("read-only run: nothing written")\n')
    return code + ('for name, value in values.items():\n'
                   '    print(f"{name} = {value}")\n')


def statistics_code(channels: list[str]) -> str:
    return ("import numpy as np\n\n" + _SUMMARY
            + "\n" + _comment(f"Statistics of the current readings of {', '.join(channels)}.")
            + f"values = read_channels({channels!r})\n"
            'results["values"] = values\n'
            'results["statistics"] = summary(np.array([float(v) for v in values.values()]))\n'
            'print(results["statistics"])\n')


def history_code(channels: list[str], seconds: float, *, plot: bool = True) -> str:
    span = _describe(seconds)
    pyplot = "import matplotlib.pyplot as plt\n" if plot else ""
    code = ("from datetime import datetime, timedelta\n\n"
            + pyplot + "import numpy as np\n\n" + _SUMMARY
            + "\n" + _comment(f"History of {', '.join(channels)} over the {span}.")
            + _history(channels, seconds)
            + 'results["statistics"] = {name: summary(values) '
              "for name, (_, values) in series.items()}\n")
    if plot:
        title = f"{', '.join(channels)}: {span}"
        code += ("fig, ax = plt.subplots(figsize=(9, 4))\n"
                 "for name, (times, values) in series.items():\n"
                 "    ax.plot(times, values, label=name)\n"
                 f"ax.set_title({title!r})\n"
                 'ax.set_xlabel("time (UTC)")\n'
                 "ax.legend()\n"
                 "fig.autofmt_xdate()\n")
    return code + 'print(results["statistics"])\n'


def fit_code(channels: list[str], seconds: float) -> str:
    span = _describe(seconds)
    title = f"Linear fit: {span}"
    return ("from datetime import datetime, timedelta\n\n"
            "import matplotlib.pyplot as plt\n"
            "import numpy as np\n\n"
            + _comment(f"Straight-line fit of {', '.join(channels)} against time over the {span}.")
            + _history(channels, seconds)
            + 'results["fits"] = {}\n'
              "fig, ax = plt.subplots(figsize=(9, 4))\n"
              "for name, (times, values) in series.items():\n"
              "    if len(values) < 2:\n"
              '        results["fits"][name] = {"samples": len(values), "error": "too few"}\n'
              "        continue\n"
              "    hours = np.array([(t - times[0]).total_seconds() / 3600 for t in times])\n"
              "    slope, intercept = np.polyfit(hours, values, 1)\n"
              "    residual = values - (slope * hours + intercept)\n"
              '    results["fits"][name] = {\n'
              '        "samples": len(values), "slope_per_hour": float(slope),\n'
              '        "intercept": float(intercept),\n'
              '        "rms_residual": float(np.sqrt(np.mean(residual ** 2)))}\n'
              '    ax.plot(times, values, ".", label=name)\n'
              '    ax.plot(times, slope * hours + intercept, "-", label=f"{name} fit")\n'
              f"ax.set_title({title!r})\n"
              'ax.set_xlabel("time (UTC)")\n'
              "ax.legend()\n"
              "fig.autofmt_xdate()\n"
              'print(results["fits"])\n')


def write_code(writes: dict[str, Any]) -> str:
    """Literal write calls, so the analyzer predicts each channel and value."""
    channels = list(writes)
    if len(writes) == 1:
        [(channel, value)] = writes.items()
        write = f'results["write"] = write_channel({channel!r}, {value!r})\n'
    else:
        write = f'results["write"] = write_channels({writes!r})\n'
    return (_comment(f"Set {', '.join(f'{name} to {value!r}' for name, value in writes.items())}.")
            + f'results["before"] = read_channels({channels!r})\n'
            + write +
            f'results["after"] = read_channels({channels!r})\n'
            'print(results["write"])\n')
