"""``osprey demo``: a scripted walk through a planning-mode request and its approval.

Runs on embedded defaults (offline planner, no API key, no network) in a throwaway home
directory, so it never touches an operator's real runs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer

from osprey_core.cli.render import show_approval
from osprey_core.cli.state import cli_state

REQUEST = "/planning what can you do?"


def demo(
    ctx: typer.Context,
    home: Path | None = typer.Option(None, "--home", help="Keep the demo's data here "
                                     "(default: a temporary directory, removed afterwards)."),
) -> None:
    """Walk through a planning-mode request with its approval round trip."""
    if home is not None:
        _walk(ctx, home)
        return
    with tempfile.TemporaryDirectory(prefix="osprey-demo-") as tmp:
        _walk(ctx, Path(tmp))


def _walk(ctx: typer.Context, home: Path) -> None:
    from osprey_core.api import Osprey

    state = cli_state(ctx)
    config = state.config()
    config.settings = config.settings.model_copy(update={"home": home})
    with Osprey(host=state.host, config=config) as osprey:
        _say(1, f"an operator asks, in planning mode:  {REQUEST!r}")
        run = osprey.run(REQUEST, session="demo", user="demo-operator", interface="demo")
        _say(2, f"the run pauses ({run.state}); the plan is stored at {osprey.plan_file(run.id)}"
             " and this approval request was committed before it was shown:")
        assert run.approval_id is not None
        show_approval(osprey.approval(run.approval_id))
        _say(3, "a shift leader approves exactly that plan (hash-bound, single use)")
        run = osprey.approve(run.approval_id, user="demo-shift-leader", interface="demo")
        _say(4, f"the run is {run.state}; its answer:")
        typer.echo(run.response)
        _say(5, "the audit log of this run:")
        for entry in osprey.audit(run_id=run.id):
            digest = f" sha256 {entry.sha256[:16]}..." if entry.sha256 else ""
            typer.echo(f"  {entry.at:%H:%M:%S} {entry.action:<20} {entry.actor:<18} "
                       f"via {entry.interface}{digest}")
        try:
            osprey.approve(run.approval_id or "", user="demo-shift-leader", interface="demo")
        except Exception as exc:  # the point of the demo: a second decision is refused
            _say(6, f"approving the same request again is refused: {exc}")


def _say(number: int, text: str) -> None:
    typer.echo(f"\n[{number}] {text}")
