"""Salvaging the entries of a damaged memory file, line by line, keeping only what verifies.

A memory file holds a header line, one entry per line and a closing ``]}`` line. Every
line that holds something is accounted for: it frames the file, or it yields a kept entry,
or it is dropped with a reason. An entry is kept only if its checksum matches its fields,
so no damage (a flipped byte, a cut, inserted garbage) can leave an altered entry behind.
Only a file that shows no sign of checksums (written before them) keeps entries unverified,
and the report lists them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osprey_core.memory.models import (
    CHECKSUM,
    FORMAT,
    LEGACY_VERSION,
    PROBLEMS,
    VERSION,
    EntryProblem,
    MemoryEntry,
    parse_line,
    read_entry,
)

CLOSING = b"]}"
_HEADER_KEYS = frozenset({"format", "version", "user", "entries"})


@dataclass(frozen=True, slots=True)
class DroppedLine:
    """A line of the damaged file that yields no entry (it remains in the backup)."""

    line: int
    reason: str
    detail: str
    id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"line": self.line, "reason": self.reason, "id": self.id, "detail": self.detail}

    def describe(self) -> str:
        which = f" ({self.id})" if self.id else ""
        return f"line {self.line}: {PROBLEMS[self.reason]}{which}: {self.detail}"


@dataclass(frozen=True, slots=True)
class UnverifiedLine:
    """A kept entry that has no checksum because it was written before checksums."""

    line: int
    id: str

    def to_json(self) -> dict[str, Any]:
        return {"line": self.line, "id": self.id}


@dataclass(slots=True)
class Salvage:
    entries: list[MemoryEntry] = field(default_factory=list)
    dropped: list[DroppedLine] = field(default_factory=list)
    unverified: list[UnverifiedLine] = field(default_factory=list)
    #: Lines that held something (not only whitespace).
    lines: int = 0
    #: Of those, the header and closing lines.
    framing: int = 0


def salvage(raw: bytes, user: str) -> Salvage:
    """Every entry of ``raw`` that can be trusted, and why each other line was dropped."""
    result = Salvage()
    candidates: list[tuple[int, Any]] = []
    header_version: Any = None
    for number, row in enumerate(raw.split(b"\n"), start=1):
        if not row.strip():
            continue
        result.lines += 1
        if row.strip() == CLOSING:
            result.framing += 1
            continue
        try:
            text = row.decode("utf-8")
        except UnicodeDecodeError as exc:
            result.dropped.append(DroppedLine(number, "bad_utf8",
                                              f"invalid byte at column {exc.start + 1}"))
            continue
        if result.lines == 1 and (header := _header(text)) is not None:
            header_version = header.get("version")
            if problem := _header_problem(header, user):
                result.dropped.append(DroppedLine(number, "bad_header", problem))
            else:
                result.framing += 1
            continue
        try:
            candidates.append((number, parse_line(text.removesuffix(","))))
        except EntryProblem as problem:
            result.dropped.append(DroppedLine(number, problem.reason, problem.detail))
    # Checksum-less entries are trusted only in a file that has no checksums at all.
    legacy = header_version != VERSION and not any(
        isinstance(item, dict) and CHECKSUM in item for _, item in candidates)
    first_line: dict[str, int] = {}
    for number, item in candidates:
        try:
            entry, verified = read_entry(item, checksum_required=not legacy)
        except EntryProblem as problem:
            result.dropped.append(DroppedLine(number, problem.reason, problem.detail,
                                              _id_of(item)))
            continue
        if entry.id in first_line:
            result.dropped.append(DroppedLine(
                number, "duplicate_id", f"{entry.id} is also used by line "
                f"{first_line[entry.id]}, which is kept", entry.id))
            continue
        first_line[entry.id] = number
        result.entries.append(entry)
        if not verified:
            result.unverified.append(UnverifiedLine(number, entry.id))
    result.dropped.sort(key=lambda dropped: dropped.line)
    return result


def _header(text: str) -> dict[str, Any] | None:
    """The header a first line holds (``{"format": ..., "entries": [``), if it is one."""
    try:
        value = json.loads(text + "]}")
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) and value.get("entries") == [] else None


def _header_problem(header: dict[str, Any], user: str) -> str:
    if set(header) != _HEADER_KEYS or header["format"] != FORMAT:
        return f"not an {FORMAT} header"
    if header["version"] not in (VERSION, LEGACY_VERSION):
        return f"unknown format version {header['version']!r}"
    if header["user"] != user:
        return f"the header names user {header['user']!r}, not {user!r}"
    return ""


def _id_of(item: Any) -> str | None:
    """The id a dropped entry claims, to help find it in the backup."""
    value = item.get("id") if isinstance(item, dict) else None
    return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class RepairReport:
    """What a repair kept and dropped: ``framing + kept + len(dropped) == lines``."""

    path: Path | str
    repaired: bool
    kept: int
    #: Every line that yields no entry, with its reason (all remain in the backup).
    dropped: tuple[DroppedLine, ...] = ()
    #: Kept entries written before checksums, which nothing could verify.
    unverified: tuple[UnverifiedLine, ...] = ()
    #: Lines of the damaged file that held something, and how many of them were its
    #: header and closing line.
    lines: int = 0
    framing: int = 0
    backup: Path | None = None
    problem: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "repaired": self.repaired, "kept": self.kept,
                "dropped": [item.to_json() for item in self.dropped],
                "unverified": [item.to_json() for item in self.unverified],
                "lines": self.lines, "framing": self.framing,
                "backup": self.backup and str(self.backup), "problem": self.problem}

    def describe(self) -> str:
        if not self.repaired:
            return self.problem
        kept = _count(self.kept, "entry was", "entries were")
        dropped = _count(len(self.dropped), "line was", "lines were")
        text = [f"{self.path} was unreadable ({self.problem}). The original is kept byte "
                f"for byte at {self.backup}. Of its {self.lines} non-empty lines, "
                f"{self.framing} framed the file, {kept} salvaged and written back, and "
                f"{dropped} dropped (kept in the backup)"
                + (":" if self.dropped else ".")]
        text += [f"  {item.describe()}" for item in self.dropped]
        if self.unverified:
            lines = ", ".join(f"line {item.line} ({item.id})" for item in self.unverified)
            text.append(f"{_count(len(self.unverified), 'kept entry was', 'kept entries were')} "
                        "written before entries had checksums, so nothing could verify them; "
                        f"compare them with the backup: {lines}.")
        return "\n".join(text)


def _count(number: int, one: str, many: str) -> str:
    return f"{number} {one if number == 1 else many}"
