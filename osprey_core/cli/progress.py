"""Following a run from the terminal: a spinner while it works, and its id for Ctrl-C.

``osprey run`` and ``osprey chat`` block while a run plans and executes. The operator sees
what it is doing (on standard error, only on a terminal), and an interrupt says which run
it left and how to pick it up again instead of losing it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from osprey_core.api import Osprey
    from osprey_core.models import RunRecord

EXIT_INTERRUPTED = 130


@dataclass
class Watch:
    """The run being followed (its id once the run was stored) and the spinner's text."""

    run_id: str | None = None
    status: Any = None

    def on_event(self, event: Any) -> None:
        run_id = getattr(event, "run_id", None)
        if self.run_id is None and run_id:
            self.run_id = run_id
        kind, data = getattr(event, "kind", ""), getattr(event, "data", {}) or {}
        text = None
        if kind == "state":
            text = f"{run_id}: {data.get('to')}"
        elif kind in ("step_started", "step_succeeded", "step_failed"):
            what = kind.removeprefix("step_")
            text = f"{run_id}: step {data.get('step')} {data.get('capability', '')} {what}"
        if text and self.status is not None:
            self.status.update(text)


@contextmanager
def following(osprey: Osprey) -> Iterator[Watch]:
    """Observe ``osprey``'s runs while the block runs; a spinner on a terminal."""
    from osprey_core.display.console import make_console

    watch = Watch()
    with ExitStack() as stack:
        stack.callback(osprey.observe(watch.on_event))
        console = make_console(stderr=True)
        if console.is_terminal:
            watch.status = stack.enter_context(console.status("working…"))
        yield watch


def driving(osprey: Osprey, action: Callable[[], RunRecord]) -> RunRecord:
    """``action()`` (a run, an approval, a resume) under a spinner; Ctrl-C says which run
    it stopped and how to resume it, and exits 130."""
    with following(osprey) as watch:
        try:
            return action()
        except KeyboardInterrupt:
            raise interrupted(watch.run_id) from None


def interrupted(run_id: str | None) -> typer.Exit:
    """Say which run an interrupt left behind and how to continue it; exit 130."""
    if run_id is None:
        typer.echo("\nInterrupted before the run was stored; nothing was started.", err=True)
    else:
        typer.echo(f"\nInterrupted: run {run_id} stopped where it was; nothing after that "
                   f"point ran.\n  see it:    osprey runs show {run_id}\n"
                   f"  resume it: osprey runs resume {run_id}\n"
                   f"  or cancel: osprey runs cancel {run_id}", err=True)
    return typer.Exit(EXIT_INTERRUPTED)
