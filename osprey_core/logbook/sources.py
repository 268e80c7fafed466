"""Which logbooks to read: the configured sources by name, or one given on the command
line; each read through its adapter into the logbook, indexes refreshed afterwards."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from osprey_core.errors import ConfigError, OspreyError
from osprey_core.registry import did_you_mean

if TYPE_CHECKING:
    from osprey_core.config import OspreyConfig
    from osprey_core.hookspecs.logbook_adapters import LogbookAdapter
    from osprey_core.logbook.ingest import IngestReport
    from osprey_core.logbook.service import Logbook
    from osprey_core.settings import LogbookSourceSettings

ProgressBar = Callable[[str], AbstractContextManager[Callable[[int, int | None], None]]]


@dataclass
class SourceOutcome:
    """One source's ingest: what it read and stored, and why it stopped if it failed."""

    report: IngestReport
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {**self.report.to_json(), "error": self.error}


def resolve(config: OspreyConfig, plugins: Any, *, names: list[str] | None = None,
            adapter: str | None = None, location: str | None = None,
            source: str | None = None) -> list[tuple[str, LogbookSourceSettings,
                                                      LogbookAdapter]]:
    """(name, settings, adapter) for each source to read: ``adapter`` + ``location`` +
    ``source`` name one on the spot; otherwise ``names`` of configured sources (all when
    empty). Unknown names and adapters are configuration errors with a did-you-mean."""
    from osprey_core.logbook.models import SOURCE_PATTERN
    from osprey_core.settings import LogbookSourceSettings

    configured = dict(config.section("logbook").sources)
    if adapter or location or source:
        if not (adapter and location and source):
            raise ConfigError("--adapter, --location and --source go together: which adapter "
                              "reads which location, under which source name")
        if not SOURCE_PATTERN.match(source):
            raise ConfigError(f"source name {source!r}: use lower-case letters, digits, '_' "
                              "and '-' (it prefixes entry ids)")
        configured = {source: LogbookSourceSettings(adapter=adapter, location=location)}
        names = [source]
    if not configured:
        raise ConfigError("no logbook sources are configured (logbook.sources); name one "
                          "with --adapter, --location and --source")
    chosen = names or sorted(configured)
    for name in chosen:
        if name not in configured:
            raise ConfigError(f"no logbook source named {name!r}"
                              f"{did_you_mean(name, list(configured))}; configured: "
                              f"{', '.join(sorted(configured))}")
    registry = plugins.logbook_adapters()
    return [(name, configured[name],
             registry.get(configured[name].adapter).create(name, configured[name].options))
            for name in chosen]


def ingest_sources(logbook: Logbook, config: OspreyConfig, plugins: Any, *,
                   names: list[str] | None = None, adapter: str | None = None,
                   location: str | None = None, source: str | None = None,
                   full: bool = False, dry_run: bool = False,
                   progress: ProgressBar | None = None) -> list[SourceOutcome]:
    """Ingest each chosen source in turn; a source that fails is reported with its error
    and the others still run. Nothing already stored is lost either way."""
    from osprey_core.logbook.ingest import IngestError, IngestReport, ingest

    outcomes: list[SourceOutcome] = []
    for name, settings, reader in resolve(config, plugins, names=names, adapter=adapter,
                                          location=location, source=source):
        try:
            if progress is None:
                report = ingest(logbook.store, name, settings, reader, dry_run=dry_run,
                                full=full)
            else:
                with progress(f"reading {name}") as update:
                    report = ingest(logbook.store, name, settings, reader, dry_run=dry_run,
                                    full=full, progress=update)
        except IngestError as exc:
            outcomes.append(SourceOutcome(exc.report, str(exc)))
            continue
        except OspreyError as exc:
            outcomes.append(SourceOutcome(
                IngestReport(name, reader.name, settings.location, dry_run), str(exc)))
            continue
        outcomes.append(SourceOutcome(report))
    return outcomes


def watch_sources(logbook: Logbook, config: OspreyConfig, plugins: Any, *,
                  names: list[str] | None = None, interval: float = 60.0,
                  cycles: int | None = None, report: Callable[[str], None] = print,
                  stop: threading.Event | None = None) -> None:
    """Poll the chosen sources in turn until interrupted (or ``cycles`` rounds), refreshing
    the indexes after each round that stored something."""
    from osprey_core.logbook.ingest import IngestError, ingest

    chosen = resolve(config, plugins, names=names)
    stop = stop or threading.Event()
    failures: dict[str, int] = {}
    done = 0
    while not stop.is_set() and (cycles is None or done < cycles):
        done += 1
        changed = False
        for name, settings, reader in chosen:
            try:
                result = ingest(logbook.store, name, settings, reader)
            except (IngestError, OspreyError) as exc:
                failures[name] = failures.get(name, 0) + 1
                report(f"{name}: ingest failed ({exc}); retrying later")
                continue
            failures[name] = 0
            changed = changed or bool(result.added or result.updated)
            report(f"{name}: {result.read} read, {result.added} added, {result.updated} "
                   f"updated, {result.bad} bad")
        if changed:
            logbook.refresh()
        if cycles is not None and done >= cycles:
            break
        # Back off while every source fails, so a server that is down is not hammered.
        backoff = min(max(failures.values(), default=0), 5)
        stop.wait(interval * 2 ** backoff if all(failures.values()) and failures else interval)
