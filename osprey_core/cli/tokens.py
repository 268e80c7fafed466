"""``osprey tokens``: API tokens for ``osprey serve`` (create, list, revoke).

A token's secret is printed once, by ``create``; only its sha256 is stored, in the run
store's database under the osprey home, so whoever can read that file can manage tokens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from osprey_core.cli.output import print_json, print_table
from osprey_core.cli.state import cli_state
from osprey_core.service.roles import Role

if TYPE_CHECKING:
    from osprey_core.service.tokens import TokenRecord, TokenStore

tokens_app = typer.Typer(help="API tokens for osprey serve: create (the secret is shown "
                         "once), list, revoke.", no_args_is_help=True)
JSON = typer.Option(False, "--json", help="Print JSON.")


def _open(ctx: typer.Context) -> TokenStore:
    from osprey_core.service.tokens import TokenStore
    from osprey_core.stores.factory import open_run_store

    config = cli_state(ctx).config()
    store = open_run_store(config.section("store"), config.home)
    ctx.call_on_close(store.close)
    return TokenStore(store)


def _json(record: TokenRecord) -> dict[str, object]:
    from datetime import UTC, datetime

    return {**record.model_dump(mode="json"), "status": record.status(datetime.now(UTC))}


@tokens_app.command("create")
def create(ctx: typer.Context,
           name: str = typer.Argument(..., metavar="NAME", help="Who or what uses the token "
                                      "(the identity in the audit log)."),
           roles: list[Role] = typer.Option(..., "--role", "-r", help="viewer, operator, "
                                            "approver or admin (repeatable)."),
           expires: str | None = typer.Option(None, "--expires", help="Lifetime, e.g. 30d, "
                                              "12h, 2w (default: until revoked)."),
           as_json: bool = JSON) -> None:
    """Create a token and print its secret (shown this once only)."""
    from osprey_core.api import default_user
    from osprey_core.service.tokens import parse_duration

    lifetime = parse_duration(expires) if expires else None
    record, secret = _open(ctx).create(name, roles, created_by=default_user(),
                                       expires_in=lifetime)
    if as_json:
        print_json({**_json(record), "token": secret})
        return
    until = f", expires {record.expires_at:%Y-%m-%d %H:%M} UTC" if record.expires_at else ""
    typer.echo(f"token {record.id} for {record.name} ({', '.join(record.roles)}{until}):")
    typer.echo(secret)
    typer.echo("Store it now: it is not shown again. Send it as 'Authorization: Bearer "
               "<token>'.", err=True)


@tokens_app.command("list")
def list_tokens(ctx: typer.Context, as_json: bool = JSON) -> None:
    """List tokens (never their secrets), oldest first."""
    from osprey_core.display.text import when

    records = _open(ctx).list()
    if as_json:
        print_json([_json(record) for record in records])
        return
    rows = [(item["id"], item["name"], ", ".join(record.roles), item["status"],
             when(record.created_at, seconds=False), record.created_by,
             when(record.expires_at, seconds=False) if record.expires_at else "never",
             when(record.last_used_at, seconds=False) if record.last_used_at else "never")
            for record, item in ((record, _json(record)) for record in records)]
    print_table("tokens", ("id", "name", "roles", "status", "created", "by", "expires",
                           "last used"), rows)


@tokens_app.command("revoke")
def revoke(ctx: typer.Context,
           token_id: str = typer.Argument(..., metavar="ID", help="The token's id (from "
                                          "'osprey tokens list')."),
           as_json: bool = JSON) -> None:
    """Revoke a token: every request with it is refused from now on."""
    from osprey_core.api import default_user

    record = _open(ctx).revoke(token_id, actor=default_user())
    if as_json:
        print_json(_json(record))
    else:
        typer.echo(f"revoked token {record.id} ({record.name})")
