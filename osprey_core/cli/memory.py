"""``osprey memory``: what the agent remembers for each user, managed by hand.

Every command works on one user's memory (``--user``, default: your login name, the same
default as ``osprey run``): a file under ``<home>/memory/``, or rows in the PostgreSQL
database ``store.url`` names. A damaged file is reported and left untouched until
``osprey memory repair``; nothing here deletes data without being told to.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from osprey_core.cli.output import print_json, print_table
from osprey_core.cli.state import cli_state

if TYPE_CHECKING:
    from osprey_core.memory.models import MemoryEntry
    from osprey_core.memory.protocol import MemoryBackend

memory_app = typer.Typer(help="Add, list, search, edit, export, import and repair the "
                         "memories saved for a user.", no_args_is_help=True)

USER = typer.Option(None, "--user", "-u", help="Whose memory (default: your login name).")
JSON = typer.Option(False, "--json", help="Print JSON.")
ENTRY_ID = typer.Argument(..., metavar="ID", help="A memory id, e.g. mem-0123abcd.")
TAGS = typer.Option(None, "--tags", help="Comma-separated tags, e.g. 'bpm,orbit' "
                    "('' for none).")
#: Characters of a memory shown in a table row; ``show`` and ``--json`` give all of it.
PREVIEW = 80


def _open(ctx: typer.Context, user: str | None) -> tuple[MemoryBackend, str]:
    from osprey_core.api import default_user
    from osprey_core.memory.factory import open_memory_store

    config = cli_state(ctx).config()
    return open_memory_store(config), default_user() if user is None else user


def _tags(text: str) -> list[str]:
    return [tag.strip() for tag in text.split(",") if tag.strip()]


def _cell(text: str, limit: int = PREVIEW) -> str:
    """Table text: one line, shortened (tables show markup literally)."""
    line = " ".join(text.split())
    return line if len(line) <= limit else f"{line[:limit - 3]}..."


def _stamp(entry: MemoryEntry) -> str:
    from osprey_core.display.text import when

    return when(entry.updated_at)


@memory_app.command("add")
def add(ctx: typer.Context, text: str = typer.Argument(..., metavar="TEXT",
                                                      help="What to remember."),
        tags: str = typer.Option("", "--tags", help="Comma-separated tags."),
        user: str | None = USER, as_json: bool = JSON) -> None:
    """Save a memory (no approval: you are the operator)."""
    store, user = _open(ctx, user)
    entry = store.add(user, text, _tags(tags), source="cli")
    if as_json:
        print_json(entry.to_json())
    else:
        typer.echo(f"Saved {entry.id} for user {user!r}.")


@memory_app.command("list")
def list_memories(ctx: typer.Context, user: str | None = USER, as_json: bool = JSON) -> None:
    """List every memory of a user, oldest first."""
    store, user = _open(ctx, user)
    entries = store.entries(user)
    if as_json:
        print_json([entry.to_json() for entry in entries])
    elif not entries:
        typer.echo(f"No memories for user {user!r}.")
    else:
        print_table(f"memories of {user}", ("id", "updated", "tags", "text"),
                    [(entry.id, _stamp(entry), _cell(", ".join(entry.tags)), _cell(entry.text))
                     for entry in entries])


@memory_app.command("search")
def search(ctx: typer.Context, query: str = typer.Argument(..., metavar="QUERY"),
           limit: int = typer.Option(10, "--limit", min=1, help="At most this many."),
           user: str | None = USER, as_json: bool = JSON) -> None:
    """The memories most relevant to QUERY, best first (BM25, then substring matches)."""
    if not query.strip():
        raise typer.BadParameter("the query is empty", param_hint="'QUERY'")
    store, user = _open(ctx, user)
    hits = store.search(user, query, limit)
    if as_json:
        print_json([hit.to_json() for hit in hits])
    elif not hits:
        typer.echo(f"No memory of user {user!r} matches {query!r}.")
    else:
        print_table(f"memories of {user} matching {_cell(query, 40)}",
                    ("id", "score", "updated", "text"),
                    [(hit.entry.id, f"{hit.score:.3f}", _stamp(hit.entry), _cell(hit.entry.text))
                     for hit in hits])


@memory_app.command("show")
def show(ctx: typer.Context, entry_id: str = ENTRY_ID, user: str | None = USER,
         as_json: bool = JSON) -> None:
    """Show one memory in full."""
    store, user = _open(ctx, user)
    entry = store.get(user, entry_id)
    if as_json:
        print_json(entry.to_json())
        return
    for key, value in entry.to_json().items():
        typer.echo(f"{key}: {', '.join(value) if isinstance(value, list) else value}")


@memory_app.command("edit")
def edit(ctx: typer.Context, entry_id: str = ENTRY_ID,
         text: str | None = typer.Option(None, "--text", help="The new text."),
         tags: str | None = TAGS, user: str | None = USER, as_json: bool = JSON) -> None:
    """Change the text and/or the tags of a memory."""
    if text is None and tags is None:
        raise typer.BadParameter("give --text and/or --tags", param_hint="'--text'")
    store, user = _open(ctx, user)
    entry = store.update(user, entry_id, text=text, tags=None if tags is None else _tags(tags))
    if as_json:
        print_json(entry.to_json())
    else:
        typer.echo(f"Updated {entry.id} of user {user!r}.")


@memory_app.command("delete")
def delete(ctx: typer.Context, entry_id: str = ENTRY_ID, user: str | None = USER) -> None:
    """Delete one memory (export first to keep a copy)."""
    store, user = _open(ctx, user)
    entry = store.delete(user, entry_id)
    typer.echo(f"Deleted {entry.id} of user {user!r}: {_cell(entry.text)}")


@memory_app.command("export")
def export(ctx: typer.Context,
           file: Path | None = typer.Argument(None, metavar="[FILE]", dir_okay=False,
                                              help="Write here (default: print the JSON)."),
           force: bool = typer.Option(False, "--force", help="Overwrite FILE if it exists."),
           user: str | None = USER, as_json: bool = JSON) -> None:
    """Export a user's memories as JSON (``osprey memory import`` reads it back)."""
    from osprey_core.errors import OspreyError, StorageError, os_error_text
    from osprey_core.fileio import atomic_write_text

    store, user = _open(ctx, user)
    document = store.export(user)
    if file is None:
        print_json(document)
        return
    if file.exists() and not force:
        raise OspreyError(f"{file} exists; choose another file or pass --force")
    try:
        atomic_write_text(file, json.dumps(document, ensure_ascii=False, indent=1) + "\n",
                          mode=0o600)
    except StorageError as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else None
        where = (f" ({cause.filename})" if cause and cause.filename
                 and str(cause.filename) != str(file) else "")
        text = os_error_text(cause) if cause else str(exc)
        raise OspreyError(f"cannot write the export to {file}{where}: {text}; "
                          "nothing was written") from None
    summary = {"path": str(file), "user": user, "entries": len(document["entries"])}
    if as_json:
        print_json(summary)
    else:
        typer.echo(f"Exported {summary['entries']} memories of user {user!r} to {file}.")


@memory_app.command("import")
def import_memories(ctx: typer.Context,
                    file: Path = typer.Argument(..., metavar="FILE", exists=True,
                                                dir_okay=False, help="An export file."),
                    user: str | None = USER, as_json: bool = JSON) -> None:
    """Merge an export into a user's memory; a bad file changes nothing."""
    from osprey_core.errors import OspreyError
    from osprey_core.memory.errors import InvalidMemoryError, MemoryLimitError

    store, user = _open(ctx, user)
    try:
        document = json.loads(file.read_bytes())
    except (OSError, ValueError) as exc:
        raise OspreyError(f"cannot read {file} as JSON: {exc}") from None
    try:
        report = store.import_entries(user, document)
    except (InvalidMemoryError, MemoryLimitError) as exc:
        raise type(exc)(f"{file}: {exc}; nothing was imported") from None
    if as_json:
        print_json(report.to_json())
        return
    typer.echo(f"Imported {len(report.added)} memories into user {user!r} "
               f"({len(report.unchanged)} already present, {len(report.reassigned)} with a "
               "new id because theirs was taken).")


@memory_app.command("repair")
def repair(ctx: typer.Context, user: str | None = USER, as_json: bool = JSON) -> None:
    """Set an unreadable memory file aside (kept byte for byte) and keep the entries that
    verify; every line that is dropped is listed with its reason."""
    store, user = _open(ctx, user)
    report = store.repair(user)
    data: dict[str, Any] = {"user": user, **report.to_json()}
    if as_json:
        print_json(data)
    else:
        typer.echo(report.describe())
