"""``osprey demo``: a scripted walk through a planning-mode request and its approval.

It runs on embedded defaults (offline planner, default approval policy, no API key, no
network) in a throwaway home directory: an operator's config file, ``OSPREY__*``
overrides and ``OSPREY_HOME`` data are neither read nor touched.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from osprey_core.cli.render import decision_commands, show_approval
from osprey_core.cli.state import CliState, cli_state
from osprey_core.errors import OspreyError

if TYPE_CHECKING:
    from osprey_core.config import OspreyConfig

REQUEST = "/planning what can you do?"


def demo(
    ctx: typer.Context,
    home: Path | None = typer.Option(None, "--home", file_okay=False, help="Keep the demo's "
                                     "data here (default: a temporary directory, removed "
                                     "afterwards)."),
) -> None:
    """Walk through a planning-mode request with its approval round trip."""
    state = cli_state(ctx)
    if home is not None:
        _walk(state, home.expanduser().absolute())
        typer.echo(f"\nThe demo's runs, plans and audit log are kept in {home}.")
        return
    with tempfile.TemporaryDirectory(prefix="osprey-demo-") as tmp:
        _walk(state, Path(tmp))
    typer.echo("\nThe demo ran in a temporary directory, now removed; nothing was kept.")


def demo_config(state: CliState, home: Path) -> OspreyConfig:
    """Built-in defaults with ``home``. Plugin sections that cannot do without settings
    come from the operator's config; core sections (LLM, approval, control system, ...)
    never do."""
    from pydantic import ValidationError

    from osprey_core.config import CoreSettings, OspreyConfig, config_model

    try:
        settings = config_model(state.host).model_validate({"home": str(home)})
    except ValidationError:  # a plugin section has required keys
        defaults = CoreSettings(home=home)
        settings = state.config().settings.model_copy(
            update={name: getattr(defaults, name) for name in CoreSettings.model_fields})
    sections = {name: plugin for name, (_, plugin) in state.host.config_sections().items()}
    return OspreyConfig(settings, sections=sections, fallback_home=home)


def _walk(state: CliState, home: Path) -> None:
    from osprey_core.api import Osprey
    from osprey_core.orchestrator import ApprovalError
    from osprey_core.run_machine import RunState

    with Osprey(host=state.host, config=demo_config(state, home)) as osprey:
        _say(1, f"An operator asks, in planning mode:  osprey run {REQUEST!r}")
        run = osprey.run(REQUEST, session="demo", user="demo-operator", interface="demo")
        if run.state is not RunState.AWAITING_PLAN_APPROVAL or run.approval_id is None:
            raise OspreyError(f"demo: the run should wait for plan approval but is {run.state}"
                              f" ({run.error or 'no details'})")
        approval_id = run.approval_id
        _say(2, f"The run pauses ({run.state}). The plan is stored at "
             f"{osprey.plan_file(run.id)}, and this approval request was committed to the "
             "store before it was shown:")
        approval = osprey.approval(approval_id)
        show_approval(approval)
        typer.echo("In a terminal, it would be decided with one of:")
        for line in decision_commands(osprey, approval):
            typer.echo(f"  {line}")

        _say(3, "A shift leader approves exactly that plan (bound to its sha256, single use).")
        run = osprey.approve(approval_id, user="demo-shift-leader", interface="demo",
                             reason="demo")
        if run.state is not RunState.DONE:
            raise OspreyError(f"demo: the approved run should be done but is {run.state} "
                              f"({run.error or 'no details'})")
        _say(4, f"The run is {run.state}. Its answer:")
        typer.echo(run.response)

        _say(5, "The audit log of this run:")
        for entry in osprey.audit(run_id=run.id):
            digest = f" sha256 {entry.sha256[:16]}..." if entry.sha256 else ""
            typer.echo(f"  {entry.at:%H:%M:%S} {entry.action:<20} {entry.actor:<18} "
                       f"via {entry.interface}{digest}")

        try:
            osprey.approve(approval_id, user="demo-shift-leader", interface="demo")
        except ApprovalError as exc:
            _say(6, f"Approving the same request again is refused: {exc}")
        else:
            raise OspreyError(f"demo: a second approval of {approval_id} was accepted")


def _say(number: int, text: str) -> None:
    typer.echo(f"\n[{number}] {text}")
