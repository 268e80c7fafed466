"""``osprey python analyze|run``: the same analysis, approval and sandbox path as a plan step."""

from __future__ import annotations

from pathlib import Path

import typer

from osprey_core.cli.output import print_json
from osprey_core.cli.state import cli_state

python_app = typer.Typer(
    name="python", help="Analyze Python and run it in the sandbox (read or write mode).",
    no_args_is_help=True, rich_markup_mode=None)

SOURCE = typer.Argument(..., metavar="FILE", exists=True, dir_okay=False,
                        help="The Python source file.")
JSON = typer.Option(False, "--json", help="Print the result as JSON.")


@python_app.command("analyze")
def analyze_file(source: Path = SOURCE, as_json: bool = JSON) -> None:
    """Show what the static analyzer finds. Exit 0 clean, 1 writes/dangerous, 2 unparsable.

    The analyzer decides who must look at code before it runs; the sandbox is the boundary.
    """
    from osprey_core.analysis import analyze
    from osprey_core.cli.approvals import read_text_file

    analysis = analyze(read_text_file(source, "code", "Python source"))  # lines say the file
    if as_json:
        print_json(analysis.to_json())
    else:
        for finding in analysis.findings:
            typer.echo(f"{source}:{finding.line}:{finding.column}: {finding.severity} "
                       f"{finding.category}: {finding.reason}")
        targets = analysis.write_targets
        if analysis.writes:
            typer.echo("write targets: " + (", ".join(sorted(targets)) if targets
                                            else "cannot be predicted (any channel)"))
        if not analysis.findings:
            typer.echo(f"{source}: no control-system access or dangerous constructs found")
    if analysis.parse_error:
        raise typer.Exit(2)
    raise typer.Exit(1 if analysis.writes or analysis.dangerous else 0)


@python_app.command("run")
def run_file(
    ctx: typer.Context,
    source: Path = SOURCE,
    mode: str = typer.Option("read", "--mode", "-m", help="read (writes are blocked) or "
                             "write (needs approval of this exact code; limits apply)."),
    session: str = typer.Option("default", "--session", "-s", help="Conversation/thread id."),
    user: str | None = typer.Option(None, "--user", "-u", help="Who is asking (audit log)."),
    as_json: bool = JSON,
) -> None:
    """Run a file through analysis, approval and the sandbox, as a one-step run.

    Exit 0 done, 3 waiting for approval (decide with 'osprey approvals'), 1 failed.
    """
    from osprey_core.cli.approvals import read_text_file
    from osprey_core.cli.render import show_run
    from osprey_core.models import Plan, PlanStep

    if mode not in ("read", "write"):
        raise typer.BadParameter(f"{mode!r} is not a mode: use read or write",
                                 param_hint="'--mode'")
    code = read_text_file(source, "code", "Python source")
    capability = "python" if mode == "read" else "python_write"
    step = PlanStep(capability=capability, output="execution",
                    parameters={"objective": f"run {source.name}", "code": code},
                    description=f"Run {source} in the sandbox ({mode} mode).")
    plan = Plan(steps=[step], reasoning=f"osprey python run {source} --mode {mode}")
    osprey = cli_state(ctx).osprey()
    run = osprey.run(f"run {source.name} ({mode} mode)", session=session, user=user,
                     interface="cli", plan=plan)
    show_run(osprey, run, as_json=as_json)
