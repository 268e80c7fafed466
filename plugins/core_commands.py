"""Built-in plugin: the core commands. Essential: it cannot be blocked.

Each command lives in its own module under ``osprey_core.cli`` and is imported only when
this hook runs, which keeps plugin discovery cheap.
"""

from __future__ import annotations

import typer

from osprey_core.hookspecs import hookimpl


@hookimpl
def register_commands(app: typer.Typer) -> None:
    from osprey_core.cli.approvals import approvals_app
    from osprey_core.cli.archiver import archiver_app
    from osprey_core.cli.channels import channels_app
    from osprey_core.cli.chat import chat
    from osprey_core.cli.config import config_app
    from osprey_core.cli.demo import demo
    from osprey_core.cli.deploy import deploy_app
    from osprey_core.cli.memory import memory_app
    from osprey_core.cli.plugins import list_plugins
    from osprey_core.cli.providers import providers_app
    from osprey_core.cli.python import python_app
    from osprey_core.cli.run import run_request
    from osprey_core.cli.runs import runs_app
    from osprey_core.cli.sandbox import sandbox_app
    from osprey_core.cli.serve import serve
    from osprey_core.cli.store import store_app
    from osprey_core.cli.tokens import tokens_app
    from osprey_core.cli.version import show_version

    app.command("run")(run_request)
    app.add_typer(approvals_app, name="approvals")
    app.add_typer(runs_app, name="runs")
    app.command("chat")(chat)
    app.command("demo")(demo)
    app.command("plugins")(list_plugins)
    app.add_typer(config_app, name="config")
    app.command("version")(show_version)
    app.add_typer(channels_app, name="channels")
    app.add_typer(archiver_app, name="archiver")
    app.add_typer(python_app, name="python")
    app.add_typer(memory_app, name="memory")
    app.add_typer(providers_app, name="providers")
    app.add_typer(sandbox_app, name="sandbox")
    app.add_typer(store_app, name="store")
    app.command("serve")(serve)
    app.add_typer(tokens_app, name="tokens")
    app.add_typer(deploy_app, name="deploy")
