"""``osprey store``: check the run store, back it up, restore a backup; migrate a store's
schema, copy an installation's store into another database."""

from __future__ import annotations

from pathlib import Path

import typer

from osprey_core.cli.output import print_json, print_table
from osprey_core.cli.state import cli_state

store_app = typer.Typer(help="Check, back up, restore, migrate and copy the run store (runs, "
                        "approvals, audit log).", no_args_is_help=True)
JSON = typer.Option(False, "--json", help="Print JSON.")


def _store_path(ctx: typer.Context) -> Path:
    """The SQLite file; backup and restore work on it (a PostgreSQL store has the server's
    own tools)."""
    from osprey_core.store_errors import StoreError
    from osprey_core.stores.factory import is_postgres

    config = cli_state(ctx).config()
    url = config.section("store").url
    if url is not None and is_postgres(url.get_secret_value()):
        raise StoreError("backup and restore work on the SQLite store file, and store.url "
                         "names a PostgreSQL database: back it up with pg_dump (or copy it "
                         "with osprey store copy) and restore it with pg_restore")
    return config.home / "osprey.db"


@store_app.command("check")
def check(ctx: typer.Context, as_json: bool = JSON) -> None:
    """A full integrity check; exit 1 when anything is wrong (the store is never changed)."""
    from osprey_core.store_maintenance import check_store
    from osprey_core.stores.factory import is_postgres

    url = _configured_url(ctx)
    if is_postgres(url):
        from osprey_core.stores.maintenance import check_postgres

        settings = cli_state(ctx).config().section("store")
        report = check_postgres(url, connect_timeout=settings.connect_timeout)
    else:
        report = check_store(_store_path(ctx))
    if as_json:
        print_json(report.to_json())
    else:
        print_table(f"store {report.path}", ("check", "result"), [
            ("size", f"{report.size_bytes} bytes"),
            ("schema version", report.schema_version),
            *((name, count) for name, count in report.counts.items()),
            ("verdict", "ok" if report.ok else "DAMAGED")])
        for problem in report.problems:
            typer.echo(f"problem: {problem}", err=True)
    if not report.ok:
        raise typer.Exit(1)


@store_app.command("backup")
def backup(ctx: typer.Context,
           destination: Path | None = typer.Argument(
               None, help="Backup file (default: OSPREY_HOME/backups/osprey-<time>.db)."),
           force: bool = typer.Option(False, "--force", help="Overwrite DESTINATION."),
           as_json: bool = JSON) -> None:
    """A consistent copy of the store, safe while other osprey processes use it."""
    from osprey_core.store_maintenance import backup_store, default_backup_path

    source = _store_path(ctx)
    target = destination or default_backup_path(source.parent)
    report = backup_store(source, target, overwrite=force)
    if as_json:
        print_json(report.to_json())
    else:
        typer.echo(f"backed up to {report.path} ({report.counts.get('runs', 0)} runs, "
                   f"{report.counts.get('audit', 0)} audit entries, checked)")


@store_app.command("restore")
def restore(ctx: typer.Context,
            backup_file: Path = typer.Argument(..., metavar="BACKUP", help="A backup file."),
            as_json: bool = JSON) -> None:
    """Replace the store with a checked backup; the replaced store is kept beside it.
    Stop other osprey processes first."""
    from osprey_core.store_maintenance import restore_store

    path = _store_path(ctx)
    kept = restore_store(path, backup_file)
    if as_json:
        print_json({"path": str(path), "restored_from": str(backup_file),
                    "replaced_store_kept_as": None if kept is None else str(kept)})
        return
    typer.echo(f"restored {path} from {backup_file}")
    if kept is not None:
        typer.echo(f"the store it replaced is kept as {kept}")


@store_app.command("migrate")
def migrate(ctx: typer.Context,
            url: str | None = typer.Option(None, "--url", help="sqlite:PATH or postgresql://"
                                           "... (default: this installation's store)."),
            as_json: bool = JSON) -> None:
    """Bring a store's schema up to this version (SQLite or PostgreSQL); a store written
    by a newer osprey-core is refused and left alone."""
    from osprey_core.stores.transfer import migrate_store

    settings = cli_state(ctx).config().section("store")
    report = migrate_store(url or _configured_url(ctx), connect_timeout=settings.connect_timeout)
    if as_json:
        print_json(report.to_json())
        return
    versions = {"runs": (report.before, report.after), **report.parts}
    for part, (before, after) in versions.items():
        change = (f"already at schema version {after}" if before == after
                  else f"schema version {before} -> {after}")
        typer.echo(f"{report.store}: {part}: {change}")


@store_app.command("copy")
def copy(ctx: typer.Context,
         source: str | None = typer.Option(None, "--from", help="sqlite:PATH or postgresql://"
                                           "... (default: this installation's store)."),
         target: str = typer.Option(..., "--to", help="An empty store: postgresql://USER@"
                                    "HOST:PORT/DB or sqlite:PATH."),
         as_json: bool = JSON) -> None:
    """Copy every run, step, approval, audit entry, event and token into an empty store,
    in one transaction, and check the counts. Stop other osprey processes first."""
    from osprey_core.stores.transfer import copy_store

    settings = cli_state(ctx).config().section("store")
    report = copy_store(source or _configured_url(ctx), target,
                        connect_timeout=settings.connect_timeout)
    if as_json:
        print_json(report.to_json())
        return
    rows = [*report.counts.items(), ("memory entries", report.memory_entries)]
    print_table(f"copied {report.source} -> {report.target}", ("table", "rows"), rows)


def _configured_url(ctx: typer.Context) -> str:
    from osprey_core.stores.factory import store_url

    config = cli_state(ctx).config()
    return store_url(config.section("store"), config.home)
