"""A synthetic light-source control-room logbook: seeded, fast, and exact about what it wrote.

The demo, the docs, the tests and the benchmarks need logbooks, and no facility's real one
can ship. This generator writes the entries a storage-ring control room writes (shift
summaries, RF trips, vacuum bursts, beam dumps, injection trouble, power-supply faults, BPM
and orbit-feedback issues, insertion devices, cryogenics, interlocks, software deployments,
tunnel access) with the identifiers operators type: PV names (``SR03C:BPM5:X``,
``RF:CAV2:FWD_PWR``), alarm codes, hosts, files, tickets, serial numbers, and numbers with
units. Timestamps cover about two years with shift patterns, daylight saving time and
writers in other time zones; some entries are long, some are edited later (the same id again
with a new text).

Besides the text, every generated entry carries :class:`Facts`: the events it reports
(kind and facet, such as ``("rf", "2")`` for a trip of cavity 2) and the statements it makes
that a question can ask for. Evaluation sets derive their relevance judgments from these
facts, so they are known by construction instead of judged after the fact.

It is pure Python and makes well over 100,000 entries a second (one ``random.Random`` per
stream), so a benchmark builds a million-entry logbook in seconds. The same seed always
gives the same stream, on every platform.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

from osprey_core.logbook.models import LogEntry
from osprey_core.logbook.sample.vocabulary import (
    ALARMS,
    APPS,
    AUTHORS,
    DAYS,
    DUMP_CAUSES,
    FIRST_ID,
    ID_TYPES,
    INJ_PARTS,
    INTERLOCKS,
    MAGNET_FAMILIES,
    PARAPHRASES,
    SAMPLE_COUNT,
    SAMPLE_FILE,
    SAMPLE_SEED,
    SAMPLE_SOURCE,
    START,
    Facts,
    Generated,
)
from osprey_core.logbook.sample.writer import Writer


def generate(count: int, *, seed: int = 0, start: datetime = START, days: float = DAYS,
             edit_rate: float = 0.02, long_rate: float = 0.15) -> Iterator[Generated]:
    """``count`` entries (ids ``FIRST_ID`` on) over ``days`` from ``start``, in time order,
    with about ``edit_rate`` of them edited later in the stream (repeated with a new text).
    The same arguments always give the same stream."""
    return Writer(seed, count, start, days, edit_rate, long_rate).stream()


def records(count: int, *, seed: int = 0, **options: Any) -> Iterator[dict[str, Any]]:
    """The generated lines as plain dicts in the ``jsonl`` adapter's default field names."""
    for item in generate(count, seed=seed, **options):
        yield item.record


def to_entry(record: dict[str, Any], source: str = SAMPLE_SOURCE) -> LogEntry:
    """A generated record as a :class:`LogEntry` (what the ``jsonl`` adapter makes of it)."""
    return LogEntry.with_offset(
        source=source, native_id=record["id"],
        timestamp=datetime.fromisoformat(record["timestamp"]), author=record["author"],
        title=record["title"], text=record["text"], logbook=record["logbook"],
        tags=tuple(record["tags"]))


def entries(count: int, *, seed: int = 0, source: str = SAMPLE_SOURCE,
            **options: Any) -> Iterator[LogEntry]:
    """The generated lines as entries (edits included: the store keeps the last)."""
    for record in records(count, seed=seed, **options):
        yield to_entry(record, source)


def latest(items: Iterable[Generated]) -> dict[int, Generated]:
    """The logbook a stream leaves behind: each id's last version, in id order."""
    final: dict[int, Generated] = {}
    for item in items:
        final[item.record["id"]] = item
    return dict(sorted(final.items()))


#: One encoder for every line (``json.dumps`` with options builds a new one per call).
jsonl_line = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def write_jsonl(path: Path, count: int, *, seed: int = 0, **options: Any) -> int:
    """Write a generated logbook as JSONL (UTF-8); returns the number of lines."""
    lines = 0
    with path.open("w", encoding="utf-8", newline="\n") as out:
        batch: list[str] = []
        for record in records(count, seed=seed, **options):
            batch.append(jsonl_line(record))
            if len(batch) == 4096:
                out.write("\n".join(batch) + "\n")
                lines += len(batch)
                batch.clear()
        if batch:
            out.write("\n".join(batch) + "\n")
            lines += len(batch)
    return lines


def sample_path() -> Path:
    """The shipped sample logbook (``osprey demo`` ingests it as source ``demo``)."""
    return Path(str(files("osprey_core.logbook") / "data" / SAMPLE_FILE))


def sample_text() -> str:
    """What :func:`sample_path` holds, made again from the generator."""
    return "".join(jsonl_line(record) + "\n"
                   for record in records(SAMPLE_COUNT, seed=SAMPLE_SEED))


__all__ = [
    "ALARMS",
    "APPS",
    "AUTHORS",
    "DAYS",
    "DUMP_CAUSES",
    "FIRST_ID",
    "ID_TYPES",
    "INJ_PARTS",
    "INTERLOCKS",
    "MAGNET_FAMILIES",
    "PARAPHRASES",
    "SAMPLE_COUNT",
    "SAMPLE_FILE",
    "SAMPLE_SEED",
    "SAMPLE_SOURCE",
    "START",
    "Facts",
    "Generated",
    "entries",
    "generate",
    "jsonl_line",
    "latest",
    "records",
    "sample_path",
    "sample_text",
    "to_entry",
    "write_jsonl",
]
