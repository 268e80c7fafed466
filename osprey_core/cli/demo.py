"""``osprey demo``: a scripted walk through approvals and the simulated machine.

Part one is a planning-mode request and its approval round trip; part two reads the
simulated ``mock`` machine, asks to move a corrector, stops for approval with the exact
write (channel, current and requested value, units, limits, verification), writes it after
approval, verifies it by readback and shows the audit trail; part three has generated code
read the machine's history in the nsjail sandbox and plot it (a figure and a notebook);
part four ingests the sample logbook that ships with osprey, searches it, asks it a
question and lets the agent search it.

It runs on embedded defaults (offline planner, default approval policy, the ``mock``
control system with writes enabled and a limits entry for the corrector, no API key, no
network) in a throwaway home directory: an operator's config file, ``OSPREY__*``
overrides and ``OSPREY_HOME`` data are neither read nor touched. What the analysis made
(its figure and notebook) is kept in a folder the demo names at the end.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from osprey_core.cli.render import decision_commands, show_answer, show_approval
from osprey_core.cli.state import CliState, cli_state
from osprey_core.display.text import clock
from osprey_core.errors import OspreyError

if TYPE_CHECKING:
    from osprey_core.api import Osprey
    from osprey_core.config import OspreyConfig
    from osprey_core.models import RunRecord
    from osprey_core.run_machine import RunState

REQUEST = "/planning what can you do?"
READ_REQUEST = "read SR:CURRENT and HCM1:SP"
WRITE_REQUEST = "set HCM1:SP to 1.5 A"
PYTHON_REQUEST = "plot SR:CURRENT over the last hour"
LOGBOOK_QUERY = '"RF cavity" AND trip since:2025-06-01'
LOGBOOK_QUESTION = "what caused the last beam dump?"
LOGBOOK_REQUEST = "has the injection kicker misfired before?"
#: The demo's control system: the simulated machine, writable within these limits only.
DEMO_CONTROL_SYSTEM = {
    "type": "mock",
    "writes_enabled": True,
    "verify_timeout": 5.0,
    "limits": {"channels": {"HCM1:SP": {
        "writable": True, "type": "float", "min": -5.0, "max": 5.0, "max_step": 2.0,
        "verification": "readback", "readback_channel": "HCM1:RB",
        "tolerance": {"absolute": 0.01}}}},
}
DEMO_ARCHIVER = {"type": "mock"}
#: Keyword search: quick and the same everywhere (hybrid needs the 'search' extra's model).
DEMO_LOGBOOK = {"default_mode": "keyword"}


def demo(
    ctx: typer.Context,
    home: Path | None = typer.Option(None, "--home", file_okay=False, help="Keep the demo's "
                                     "data here (default: a temporary directory, removed "
                                     "afterwards)."),
) -> None:
    """Walk through approvals, then a read, an approved and verified write on the
    simulated machine."""
    state = cli_state(ctx)
    if home is not None:
        made = _walk(state, home.expanduser().absolute())
        typer.echo(f"\nThe demo's runs, plans and audit log are kept in {home}; the "
                   f"analysis's figure and notebook are in {made}.")
        return
    with tempfile.TemporaryDirectory(prefix="osprey-demo-") as tmp:
        made = _walk(state, Path(tmp))
        kept = Path(tempfile.mkdtemp(prefix="osprey-demo-results-"))
        for item in made.iterdir():
            if item.is_dir():
                shutil.copytree(item, kept / item.name)
            else:
                shutil.copy2(item, kept / item.name)
    typer.echo("\nThe demo ran in a temporary directory, now removed. What the analysis "
               f"made (figure, notebook, code, results) is kept in {kept}.")


def demo_config(state: CliState, home: Path) -> OspreyConfig:
    """Built-in defaults with ``home``. Plugin sections that cannot do without settings
    come from the operator's config; core sections (LLM, approval, control system, ...)
    never do."""
    from pydantic import ValidationError

    from osprey_core.config import CoreSettings, OspreyConfig, config_model

    core = {"home": str(home), "control_system": DEMO_CONTROL_SYSTEM,
            "archiver": DEMO_ARCHIVER, "logbook": DEMO_LOGBOOK}
    registered = state.host.config_sections()
    try:
        settings = config_model(state.host).model_validate(core)
    except ValidationError:  # a plugin section has required keys
        defaults = CoreSettings.model_validate(core)
        update = {name: getattr(defaults, name) for name in CoreSettings.model_fields}
        # The simulated machine keeps its state under the demo's home, never the user's.
        if "mock" in registered:
            update["mock"] = registered["mock"][0]()
        settings = state.config().settings.model_copy(update=update)
    sections = {name: plugin for name, (_, plugin) in registered.items()}
    return OspreyConfig(settings, sections=sections, fallback_home=home)


def _walk(state: CliState, home: Path) -> Path:
    """The whole demo; returns the analysis's execution folder."""
    from osprey_core.api import Osprey
    from osprey_core.errors import ApprovalError
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
        show_answer(osprey, run)

        _say(5, "The audit log of this run:")
        for entry in osprey.audit(run_id=run.id):
            digest = f" sha256 {entry.sha256[:16]}..." if entry.sha256 else ""
            typer.echo(f"  {clock(entry.at)} {entry.action:<20} {entry.actor:<18} "
                       f"via {entry.interface}{digest}")

        try:
            osprey.approve(approval_id, user="demo-shift-leader", interface="demo")
        except ApprovalError as exc:
            _say(6, f"Approving the same request again is refused: {exc}")
        else:
            raise OspreyError(f"demo: a second approval of {approval_id} was accepted")

        _machine(osprey)
        made = _python(osprey)
        _logbook(osprey, state)
    return made


def _machine(osprey: Osprey) -> None:
    """Part two: read, a write that waits for approval, the verified write, the audit."""
    from osprey_core.run_machine import RunState

    _say(7, "Now the control system: the simulated 'mock' machine (no real control system "
         f"is contacted). An operator asks:  osprey run {READ_REQUEST!r}")
    run = _expect(osprey.run(READ_REQUEST, session="demo", user="demo-operator",
                             interface="demo"), RunState.DONE)
    show_answer(osprey, run)

    _say(8, f"The operator asks for a change:  osprey run {WRITE_REQUEST!r}")
    run = _expect(osprey.run(WRITE_REQUEST, session="demo", user="demo-operator",
                             interface="demo"), RunState.AWAITING_STEP_APPROVAL)
    approval = osprey.approval(run.approval_id or "")
    typer.echo(f"The write may change the machine, so the run pauses ({run.state}). The "
               "request shows the channel, its current and the requested value, units, "
               "limits and how the write will be verified:")
    show_approval(approval)
    typer.echo("(the same pause as `osprey channels write HCM1:SP 1.5 --units A`)")

    _say(9, "A shift leader approves exactly these values. The control system checks "
         "writes_enabled and the limits, records the attempt in the audit log, writes, and "
         "verifies by reading HCM1:RB back:")
    run = _expect(osprey.approve(approval.id, user="demo-shift-leader", interface="demo",
                                 reason="demo"), RunState.DONE)
    show_answer(osprey, run)
    check = _expect(osprey.run("read HCM1:SP and HCM1:RB", session="demo",
                               user="demo-operator", interface="demo"), RunState.DONE)
    show_answer(osprey, check)

    _say(10, "The audit log of the write, every attempt with who asked and under which "
         "approval:")
    for entry in osprey.audit(run_id=run.id):
        channel = entry.details.get("channel")
        what = f" {channel} -> {entry.details.get('requested')!r}" if channel else ""
        if channel and entry.approval_id:
            what += f" (approval {entry.approval_id})"
        typer.echo(f"  {clock(entry.at)} {entry.action:<22} {entry.actor:<18} "
                   f"via {entry.interface}{what}")


def _python(osprey: Osprey) -> Path:
    """Part three: generated code reads the machine's history in the sandbox and plots it;
    returns its execution folder."""
    from osprey_core.run_machine import RunState

    _say(11, "Analysis needs code. The operator asks:  osprey run "
         f"{PYTHON_REQUEST!r}\nThe offline 'mock' generator writes Python, the analyzer reads "
         "its syntax tree (read-only: no approval needed), and it runs in the nsjail sandbox "
         "(no network, read-only filesystem, limits, unprivileged user), reaching the machine "
         "only through the broker on this side:")
    run = _expect(osprey.run(PYTHON_REQUEST, session="demo", user="demo-operator",
                             interface="demo"), RunState.DONE)
    show_answer(osprey, run)
    return Path(run.context["python"]["folder"])


def _logbook(osprey: Osprey, state: CliState) -> None:
    """Part four: a sample logbook ingested, searched, asked, and used by the agent."""
    from importlib.resources import files

    from osprey_core.logbook.service import Logbook
    from osprey_core.logbook.sources import ingest_sources
    from osprey_core.run_machine import RunState

    sample = str(files("osprey_core.logbook") / "data" / "sample_logbook.jsonl")
    _say(12, "The electronic logbook. A synthetic sample of 400 control-room entries ships "
         f"with osprey; it is ingested like any export:\n  osprey logbook ingest --adapter "
         f"jsonl --location {sample} --source ops")
    with Logbook.from_config(osprey.config, state.host) as logbook:
        [outcome] = ingest_sources(logbook, osprey.config, state.host, adapter="jsonl",
                                   location=sample, source="ops")
        if outcome.error:
            raise OspreyError(f"demo: the sample logbook did not ingest: {outcome.error}")
        logbook.refresh(semantic=False)
        report = outcome.report
        typer.echo(f"{report.read} read, {report.added} added, {report.bad} bad, in "
                   f"{report.seconds:.2f} s")

        _say(13, f"A keyword search with operators and a filter:  osprey logbook search "
             f"{LOGBOOK_QUERY!r}")
        found = logbook.search(LOGBOOK_QUERY, k=3)
        for hit in found.hits:
            typer.echo(f"  {hit.entry.id}  {hit.entry.utc:%Y-%m-%d}  {hit.entry.author}: "
                       f"{hit.snippet}")
        typer.echo(f"  ({found.total} entries match; filters apply inside the ranking)")

        _say(14, f"A question:  osprey logbook ask {LOGBOOK_QUESTION!r}\nWith no language "
             "model configured the answer is extractive, every statement cited; an "
             "answer never cites an entry it was not given, and abstains when the logbook "
             "does not say:")
        answer = logbook.ask(LOGBOOK_QUESTION)
        typer.echo(f"  {answer.text}")
        unknown = logbook.ask("when was the cryoplant converted to helium-3 cooling?")
        typer.echo(f"  'when was the cryoplant converted to helium-3 cooling?' -> "
                   f"{unknown.text}")
    _say(15, f"The agent uses it too:  osprey run {LOGBOOK_REQUEST!r}")
    run = _expect(osprey.run(LOGBOOK_REQUEST, session="demo", user="demo-operator",
                             interface="demo"), RunState.DONE)
    assert run.plan is not None
    hits = run.context[run.plan.steps[0].output]["hits"]
    typer.echo(f"The offline planner chose the read-only 'logbook_search' step; it found "
               f"{len(hits)} entries, e.g. {hits[0]['id']}: {hits[0]['title']}" if hits
               else "The logbook_search step found no entries.")


def _expect(run: RunRecord, state: RunState) -> RunRecord:
    if run.state is not state:
        raise OspreyError(f"demo: run {run.id} should be {state} but is {run.state} "
                          f"({run.error or 'no details'})")
    return run


def _say(number: int, text: str) -> None:
    typer.echo(f"\n[{number}] {text}")
