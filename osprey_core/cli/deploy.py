"""``osprey deploy``: render, build and run this project's services (podman-compose, or
another compose runtime: see docs/deployment.md).

Everything acts on one compose project (``deploy.project``): its containers carry its
label and nothing here lists, stops or removes another project's. See docs/deployment.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from osprey_core.cli.output import print_json, print_table
from osprey_core.cli.state import cli_state

if TYPE_CHECKING:
    from osprey_core.deploy.catalog import Deployment
    from osprey_core.deploy.runtime import Runtime

deploy_app = typer.Typer(help="Deploy services as containers (podman or docker), scoped to "
                              "this project.", no_args_is_help=True)
AS_JSON = typer.Option(False, "--json", help="Print JSON.")


def _deployment(ctx: typer.Context) -> Deployment:
    from osprey_core.deploy.catalog import plan

    state = cli_state(ctx)
    return plan(state.config(), state.host)


def _runtime(deployment: Deployment, *, quiet: bool = False) -> Runtime:
    from osprey_core.deploy.runtime import detect_runtime

    runtime = detect_runtime(deployment.settings.runtime)
    if not quiet:
        typer.echo(f"runtime: {runtime.name} ({runtime.version})", err=True)
    return runtime


def _say(message: str) -> None:
    typer.echo(message, err=True)


@deploy_app.command("render")
def render_command(ctx: typer.Context) -> None:
    """Write the compose files (base + one per service, in start order) to the build dir."""
    from osprey_core.deploy.render import render

    deployment = _deployment(ctx)
    rendered = render(deployment)
    for path in rendered.files:
        typer.echo(str(path))


@deploy_app.command("build")
def build_command(ctx: typer.Context,
                  rebuild: bool = typer.Option(False, "--rebuild", help="Build even when "
                                               "the image already exists.")) -> None:
    """Build the deployed services' images locally with podman (cached: quick when nothing
    changed); a docker runtime gets them loaded into docker."""
    from osprey_core.deploy.build import build_images

    state = cli_state(ctx)
    deployment = _deployment(ctx)
    results = build_images(
        deployment, runtime_dir=state.config().section("execution").runtime_dir,
        cache_dir=deployment.home / "deploy" / "cache", progress=_say,
        target=_runtime(deployment).open_engine(deployment), rebuild=rebuild)
    for built in results:
        how = built.describe()
        if built.pruned:
            how += f"; removed older {', '.join(built.pruned)}"
        typer.echo(f"{built.service}: {built.image} ({how})")


@deploy_app.command("up")
def up_command(ctx: typer.Context) -> None:
    """Start the services and wait until each is healthy; fail naming the one that is not,
    with its last log lines."""
    from osprey_core.deploy.lifecycle import up

    deployment = _deployment(ctx)
    started = up(deployment, _runtime(deployment), _say)
    typer.echo(f"project {deployment.project}: {len(started)} container(s) up and healthy")


@deploy_app.command("down")
def down_command(ctx: typer.Context) -> None:
    """Stop and remove this project's containers and network (volumes are kept)."""
    from osprey_core.deploy.lifecycle import down

    deployment = _deployment(ctx)
    removed = down(deployment, _runtime(deployment))
    typer.echo(f"project {deployment.project}: removed {len(removed)} container(s)")


@deploy_app.command("status")
def status_command(ctx: typer.Context, as_json: bool = AS_JSON) -> None:
    """This project's containers: service, state, health, published ports."""
    deployment = _deployment(ctx)
    runtime = _runtime(deployment, quiet=as_json)
    found = runtime.open_engine(deployment).containers(deployment.project)
    if as_json:
        print_json({"project": deployment.project, "runtime": runtime.name,
                    "containers": [c.to_json() for c in found]})
        return
    print_table(f"project {deployment.project}", ["service", "container", "state", "health",
                                                    "ports"],
                [[c.service, c.name, c.state, c.health, c.ports] for c in found])


@deploy_app.command("restart")
def restart_command(ctx: typer.Context,
                    service: str | None = typer.Argument(None, help="Only this service.")
                    ) -> None:
    """Restart the services (or one) and wait for health again."""
    from osprey_core.deploy.lifecycle import restart

    deployment = _deployment(ctx)
    restart(deployment, _runtime(deployment), _say, service)
    typer.echo("restarted and healthy")


@deploy_app.command("logs")
def logs_command(ctx: typer.Context,
                 service: str | None = typer.Argument(None, help="Only this service."),
                 tail: int = typer.Option(50, "--tail", min=1, help="Lines per container.")
                 ) -> None:
    """The last log lines of this project's containers."""
    deployment = _deployment(ctx)
    engine = _runtime(deployment).open_engine(deployment)
    for container in engine.containers(deployment.project, service=service):
        typer.echo(f"== {container.service} ({container.name})")
        typer.echo(engine.logs(container.id, tail))


@deploy_app.command("clean")
def clean_command(ctx: typer.Context) -> None:
    """Remove this project's containers, network, volumes (data!) and build dir."""
    from osprey_core.deploy.lifecycle import clean

    deployment = _deployment(ctx)
    removed = clean(deployment, _runtime(deployment))
    typer.echo(f"project {deployment.project}: removed {len(removed)} item(s)")
