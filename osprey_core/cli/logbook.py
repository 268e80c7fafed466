"""``osprey logbook``: ingest logbooks, search them, ask them, look after the index.

Sources are configured under ``logbook.sources`` (``osprey logbook ingest`` reads them
all) or given on the command line (``--adapter jsonl --location export.jsonl --source
ops``). Searches take the query syntax and the same filters as options.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from osprey_core.cli.output import print_json, print_table, progress_bar
from osprey_core.cli.state import cli_state

if TYPE_CHECKING:
    from osprey_core.logbook.models import Filters
    from osprey_core.logbook.service import Logbook

logbook_app = typer.Typer(help="Ingest electronic logbooks; search them by keyword, meaning "
                          "or both; answer questions from them with citations.",
                          no_args_is_help=True)

JSON = typer.Option(False, "--json", help="Print JSON.")
MODE = typer.Option(None, "--mode", "-m", help="keyword, semantic or hybrid (default: "
                    "logbook.default_mode).")
AUTHOR = typer.Option(None, "--author", help="Only entries by this author (repeatable).")
LOGBOOK = typer.Option(None, "--logbook", help="Only entries of this logbook (repeatable).")
TAG = typer.Option(None, "--tag", help="Only entries with this tag (repeatable).")
SOURCE = typer.Option(None, "--source", help="Only entries from this source (repeatable).")
SINCE = typer.Option(None, "--since", help="From this time: 2026-11-01, ...T08:00 or 7d.")
UNTIL = typer.Option(None, "--until", help="Up to this time (a date means its end).")


def _open(ctx: typer.Context) -> Logbook:
    from osprey_core.logbook.service import Logbook

    state = cli_state(ctx)
    return Logbook.from_config(state.config(), state.host)


def _filters(authors: list[str] | None, logbooks: list[str] | None, tags: list[str] | None,
             sources: list[str] | None, since: str | None, until: str | None) -> Filters:
    from osprey_core.errors import OspreyError
    from osprey_core.logbook.models import Filters, parse_time

    try:
        return Filters(tuple(authors or ()), tuple(logbooks or ()), tuple(tags or ()),
                       tuple(sources or ()), parse_time(since) if since else None,
                       parse_time(until, end=True) if until else None)
    except ValueError as exc:
        error = OspreyError(f"--since/--until: {exc}")
        error.exit_code = 2
        raise error from None


def _refresh(logbook: Logbook, *, embed: bool) -> list[str]:
    """Bring the indexes up to date, with progress bars; returns notices."""
    with progress_bar("indexing") as keyword, progress_bar("embedding") as semantic:
        report = logbook.refresh(keyword, semantic=embed, semantic_progress=semantic)
    notices = list(report.notices)
    if report.semantic_missing:
        notices.append(f"{report.semantic_missing} entries are not embedded yet "
                       "(osprey logbook ingest without --no-embed does it)")
    return notices


@logbook_app.command("ingest")
def ingest(ctx: typer.Context,
           sources: list[str] | None = typer.Argument(None, metavar="[SOURCE]...",
                                                      help="Configured sources (default: all)."),
           adapter: str | None = typer.Option(None, "--adapter", help="Ingest one location "
                                              "with this adapter (with --location, --source)."),
           location: str | None = typer.Option(None, "--location", help="File, glob or URL."),
           source_name: str | None = typer.Option(None, "--source", help="Source name for "
                                                  "--adapter (prefixes entry ids)."),
           full: bool = typer.Option(False, "--full", help="Read everything again, not only "
                                     "what is new since the last ingest."),
           dry_run: bool = typer.Option(False, "--dry-run", help="Read and check, store "
                                        "nothing."),
           no_embed: bool = typer.Option(False, "--no-embed", help="Skip embedding (semantic "
                                         "search then waits for a later ingest)."),
           as_json: bool = JSON) -> None:
    """Read logbooks into the local index: new entries added, edited ones replaced."""
    from osprey_core.logbook.ingest import LISTED_BAD
    from osprey_core.logbook.sources import ingest_sources

    state = cli_state(ctx)
    with _open(ctx) as logbook:
        outcomes = ingest_sources(logbook, state.config(), state.host, names=sources,
                                  adapter=adapter, location=location, source=source_name,
                                  full=full, dry_run=dry_run, progress=progress_bar)
        notices = [] if dry_run else _refresh(logbook, embed=not no_embed)
    if as_json:
        print_json({"sources": [outcome.to_json() for outcome in outcomes],
                    "notices": notices})
    else:
        print_table("ingest" + (" (dry run: nothing stored)" if dry_run else ""),
                    ("source", "read", "added", "updated", "unchanged", "bad", "seconds"),
                    [(o.report.source, o.report.read, o.report.added, o.report.updated,
                      o.report.unchanged, o.report.bad, f"{o.report.seconds:.1f}")
                     for o in outcomes])
        for outcome in outcomes:
            for bad in outcome.report.bad_records[:10]:
                typer.echo(f"bad record: {bad}", err=True)
            if outcome.report.bad > 10:
                typer.echo(f"... and {outcome.report.bad - 10} more bad records "
                           f"({outcome.report.source}; --json lists {LISTED_BAD})", err=True)
            if outcome.error:
                typer.echo(f"Error: {outcome.report.source}: {outcome.error}", err=True)
        for notice in notices:
            typer.echo(f"Notice: {notice}", err=True)
    if any(outcome.error for outcome in outcomes):
        raise typer.Exit(1)


@logbook_app.command("watch")
def watch(ctx: typer.Context,
          sources: list[str] | None = typer.Argument(None, metavar="[SOURCE]..."),
          interval: float = typer.Option(60.0, "--interval", min=1.0, help="Seconds between "
                                         "polls (longer after failures)."),
          cycles: int | None = typer.Option(None, "--cycles", min=1, help="Stop after this "
                                            "many polls (default: until interrupted).")) -> None:
    """Poll configured sources and ingest what is new, until interrupted."""
    from osprey_core.logbook.sources import watch_sources

    state = cli_state(ctx)
    with _open(ctx) as logbook:
        watch_sources(logbook, state.config(), state.host, names=sources, interval=interval,
                      cycles=cycles, report=lambda line: typer.echo(line, err=True))


@logbook_app.command("search")
def search(ctx: typer.Context,
           query: str = typer.Argument(..., help='e.g. \'"RF trip" AND author:jane since:7d\''),
           mode: str | None = MODE, k: int = typer.Option(10, "-k", "--top", min=1, max=1000),
           author: list[str] | None = AUTHOR, logbook_name: list[str] | None = LOGBOOK,
           tag: list[str] | None = TAG, source: list[str] | None = SOURCE,
           since: str | None = SINCE, until: str | None = UNTIL, as_json: bool = JSON) -> None:
    """Search the logbook; filters apply inside the ranking."""
    filters = _filters(author, logbook_name, tag, source, since, until)
    with _open(ctx) as logbook:
        result = logbook.search(query, mode=mode, filters=filters, k=k)  # type: ignore[arg-type]
    if as_json:
        print_json(result.to_json())
        return
    from osprey_core.display.text import when

    for notice in result.notices:
        typer.echo(f"Notice: {notice}", err=True)
    print_table(f"{len(result.hits)} of {result.total} ({result.mode}, "
                f"{result.seconds * 1000:.0f} ms)", ("id", "time", "author", "logbook",
                                                     "snippet"),
                [(hit.entry.id, when(hit.entry.utc, seconds=False), hit.entry.author,
                  hit.entry.logbook, hit.snippet) for hit in result.hits])


@logbook_app.command("ask")
def ask(ctx: typer.Context, question: str = typer.Argument(...),
        author: list[str] | None = AUTHOR, logbook_name: list[str] | None = LOGBOOK,
        tag: list[str] | None = TAG, source: list[str] | None = SOURCE,
        since: str | None = SINCE, until: str | None = UNTIL, as_json: bool = JSON) -> None:
    """Answer from the logbook, citing the entries used; says so when it does not know."""
    filters = _filters(author, logbook_name, tag, source, since, until)
    with _open(ctx) as logbook:
        answer = logbook.ask(question, filters=filters)
    if as_json:
        print_json(answer.to_json())
        return
    for notice in answer.notices:
        typer.echo(f"Notice: {notice}", err=True)
    typer.echo(answer.text)
    if answer.used:
        typer.echo(f"\nEntries used ({answer.method}): {', '.join(answer.used)}")


@logbook_app.command("show")
def show(ctx: typer.Context, entry_id: str = typer.Argument(..., metavar="ID",
                                                            help="e.g. als/12345"),
         as_json: bool = JSON) -> None:
    """One entry, whole."""
    with _open(ctx) as logbook:
        entry = logbook.entry(entry_id)
    if as_json:
        print_json({"id": entry.id, **entry.model_dump(mode="json")})
        return
    typer.echo(f"{entry.id}  {entry.local_time():%Y-%m-%d %H:%M %z}  {entry.author or ''}  "
               f"[{entry.logbook or ''}]  {', '.join(entry.tags)}")
    if entry.title:
        typer.echo(entry.title)
    typer.echo(f"\n{entry.text}")


@logbook_app.command("status")
def status(ctx: typer.Context, as_json: bool = JSON) -> None:
    """Entries, sources and their high-water marks, and how current the indexes are."""
    with _open(ctx) as logbook:
        info = _status(logbook)
    if as_json:
        print_json(info)
        return
    typer.echo(f"{info['entries']} entries in {info['path']}; semantic search: "
               f"{info['semantic']}")
    print_table("sources", ("source", "adapter", "entries", "newest entry", "last ingest"),
                [(s["source"], s["adapter"], s["entries"], s["high_water"], s["last_ingest"])
                 for s in info["sources"]])


def _status(logbook: Logbook) -> dict[str, Any]:
    index = logbook.semantic()
    return {
        "path": str(logbook.store.path), "entries": logbook.store.count(),
        "semantic": (f"{logbook.settings.embeddings.model}, {index.missing()} entries not "
                     "embedded yet") if index is not None else f"off ({logbook.semantic_problem})",
        "sources": [{"source": state.source, "adapter": state.adapter,
                     "location": state.location, "entries": state.entries,
                     "high_water": None if state.high_water is None
                     else state.high_water.timestamp.isoformat(),
                     "last_ingest": None if state.last_ingest is None
                     else state.last_ingest.isoformat()}
                    for state in logbook.store.sources()]}


@logbook_app.command("reembed")
def reembed(ctx: typer.Context,
            model: str | None = typer.Option(None, "--model", help="Embedding model (default: "
                                             "logbook.embeddings.model)."),
            as_json: bool = JSON) -> None:
    """Embed every entry again with a model; the old vectors stay until the new are done."""
    with _open(ctx) as logbook, progress_bar("embedding") as update:
        count = logbook.reembed(model, update)
    if as_json:
        print_json({"model": model or logbook.settings.embeddings.model, "embedded": count})
    else:
        typer.echo(f"embedded {count} entries")


@logbook_app.command("purge")
def purge(ctx: typer.Context,
          source: str | None = typer.Option(None, "--source", help="Only this source."),
          before: str | None = typer.Option(None, "--before", help="Only entries older than "
                                            "this (2026-01-01, 365d)."),
          yes: bool = typer.Option(False, "--yes", help="Do it without asking."),
          as_json: bool = JSON) -> None:
    """Delete entries from the local index (the logbooks themselves are not touched)."""
    from osprey_core.logbook.models import parse_time

    what = " ".join(part for part in (f"of source {source}" if source else "",
                                      f"older than {before}" if before else "") if part)
    if not yes and not typer.confirm(f"Delete every entry {what or 'in the index'}?"):
        raise typer.Exit(1)
    with _open(ctx) as logbook:
        removed = logbook.store.purge(source=source,
                                      before=parse_time(before) if before else None)
        logbook.refresh(semantic=False)
    if as_json:
        print_json({"removed": removed})
    else:
        typer.echo(f"removed {removed} entries")
