"""Salvaging entries from a damaged memory file (truncated, garbled or hand-edited)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from osprey_core.memory.models import MemoryEntry


def _candidates(value: Any) -> list[Any]:
    """Objects inside a parsed JSON value that look like entries (they have a ``text``)."""
    if isinstance(value, dict):
        if "text" in value:
            return [value]
        return [found for item in value.values() for found in _candidates(item)]
    if isinstance(value, list):
        return [found for item in value for found in _candidates(item)]
    return []


def salvage(raw: bytes) -> tuple[list[MemoryEntry], int]:
    """Every valid entry that can be parsed out of ``raw``, and how many looked like
    entries but were damaged.

    The text is scanned for JSON objects from each ``{``: a truncated file still yields
    every entry before the cut. Bytes that are not UTF-8 stay undecodable, so an entry
    they touch is dropped (and counted) rather than saved with altered text.
    """
    text = raw.decode("utf-8", errors="surrogateescape")
    decoder = json.JSONDecoder()
    found: list[Any] = []
    position = 0
    while (start := text.find("{", position)) != -1:
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            position = start + 1
            continue
        found += _candidates(value)
        position = end
    entries: list[MemoryEntry] = []
    damaged = 0
    for candidate in found:
        try:
            json.dumps(candidate, ensure_ascii=False).encode("utf-8")
            entry = MemoryEntry.model_validate(candidate)
        except (ValidationError, UnicodeEncodeError):
            damaged += 1
            continue
        entries.append(entry)
    return entries, damaged
