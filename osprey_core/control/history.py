"""Archived history as a step result: a summary first, then every sample.

Shared by the ``archiver_retrieval`` capability and ``osprey archiver get``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from osprey_core.control.capabilities import json_value
from osprey_core.control.errors import ControlSystemError
from osprey_core.control.types import Sample, is_number

if TYPE_CHECKING:
    from osprey_core.control.capabilities import HistoryParameters
    from osprey_core.hookspecs.archivers import ArchiverConnector


def summarise(samples: Sequence[Sample]) -> dict[str, Any]:
    """Count, min/max/mean of numeric samples, first and last, then every sample as
    ``[timestamp, value]`` (the summary first: an answer shows the start of a long result)."""
    numbers = [sample.value for sample in samples
               if is_number(sample.value) and math.isfinite(sample.value)]
    stats: dict[str, Any] = {"count": len(samples)}
    if numbers:
        stats |= {"min": min(numbers), "max": max(numbers),
                  "mean": sum(numbers) / len(numbers)}
    if samples:
        stats["first"] = {"timestamp": samples[0].timestamp.isoformat(),
                          "value": json_value(samples[0].value)}
        stats["last"] = {"timestamp": samples[-1].timestamp.isoformat(),
                         "value": json_value(samples[-1].value)}
    stats["samples"] = [[sample.timestamp.isoformat(), json_value(sample.value)]
                        for sample in samples]
    return stats


async def retrieve_history(archiver: ArchiverConnector, parameters: HistoryParameters,
                           now: datetime | None = None) -> dict[str, Any]:
    start, end = parameters.time_range(now or datetime.now(UTC))
    try:
        history = await asyncio.wait_for(
            archiver.retrieve(parameters.channels, start, end, operator=parameters.operator),
            archiver.timeout)
    except TimeoutError:
        raise ControlSystemError(f"archiver '{archiver.name}' did not answer within "
                                 f"{archiver.timeout:g} s") from None
    span = {"start": start.isoformat(), "end": end.isoformat(),
            "operator": parameters.operator}
    history = {name: summarise(history.get(name, [])) for name in parameters.channels}
    return {name: {**{key: value for key, value in data.items() if key != "samples"}, **span,
                   "samples": data["samples"]} for name, data in history.items()}
