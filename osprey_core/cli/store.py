"""``osprey store``: check the run store, back it up, restore a backup."""

from __future__ import annotations

from pathlib import Path

import typer

from osprey_core.cli.output import print_json, print_table
from osprey_core.cli.state import cli_state

store_app = typer.Typer(help="Check, back up and restore the run store (runs, approvals, "
                        "audit log).", no_args_is_help=True)
JSON = typer.Option(False, "--json", help="Print JSON.")


def _store_path(ctx: typer.Context) -> Path:
    return cli_state(ctx).config().home / "osprey.db"


@store_app.command("check")
def check(ctx: typer.Context, as_json: bool = JSON) -> None:
    """A full integrity check; exit 1 when anything is wrong (the file is never changed)."""
    from osprey_core.store_maintenance import check_store

    report = check_store(_store_path(ctx))
    if as_json:
        print_json(report.to_json())
    else:
        print_table(f"store {report.path}", ("check", "result"), [
            ("file", f"{report.size_bytes} bytes"),
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

    home = cli_state(ctx).config().home
    target = destination or default_backup_path(home)
    report = backup_store(home / "osprey.db", target, overwrite=force)
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
