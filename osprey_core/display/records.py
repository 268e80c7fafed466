"""Memories and logbook entries for people: tables with times in local time."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from osprey_core.display.tables import table
from osprey_core.display.text import plain_text, when

if TYPE_CHECKING:
    from rich.console import RenderableType


def memory_saved(result: Any) -> RenderableType | str:
    saved = result.get("saved") if isinstance(result, Mapping) else None
    if not isinstance(saved, Mapping):
        return plain_text(result)
    tags = f" (tags: {', '.join(saved['tags'])})" if saved.get("tags") else ""
    return (f"Saved to the memory of {result.get('user')} as {saved.get('id')}: "
            f"\u201c{saved.get('text')}\u201d{tags}")


def memories(result: Any) -> RenderableType | str:
    from rich.console import Group
    from rich.text import Text

    if not isinstance(result, Mapping) or not isinstance(result.get("memories"), list):
        return plain_text(result)
    about = f" about \u201c{result['topic']}\u201d" if result.get("topic") else ""
    items = result["memories"]
    if not items:
        return f"No memories of {result.get('user')}{about}."
    rows = [(item.get("id"), when(item.get("updated_at"), seconds=False), item.get("text"),
             ", ".join(item.get("tags") or [])) for item in items]
    return Group(Text(f"Memories of {result.get('user')}{about} (saved by the user, quoted "
                      "as data):"),
                 table(None, ("id", "saved", "text", "tags"), rows))


def logbook_hits(result: Any) -> RenderableType | str:
    from rich.console import Group
    from rich.text import Text

    if not isinstance(result, Mapping) or not isinstance(result.get("hits"), list):
        return plain_text(result)
    hits = result["hits"]
    head = (f"{len(hits)} of {result.get('total', len(hits))} logbook entries matching "
            f"\u201c{result.get('query')}\u201d ({result.get('mode')} search)")
    parts: list[Any] = [Text(head)]
    parts += [Text(f"note: {notice}") for notice in result.get("notices") or []]
    if hits:
        rows = [(hit.get("id"), when(hit.get("timestamp"), seconds=False), hit.get("author"),
                 hit.get("title"), " ".join(str(hit.get("snippet") or "").split()))
                for hit in hits]
        parts.append(table(None, ("entry", "time", "author", "title", "snippet"), rows))
    return Group(*parts)
