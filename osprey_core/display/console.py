"""Consoles that behave in a pipe: a fixed wide width when not on a terminal, ``NO_COLOR``.

Rich already honours ``NO_COLOR`` and ``COLUMNS``; what it lacks is a sane width in a pipe
(80 columns, so tables wrap mid-word in ``osprey runs list | less``). Output that is not a
terminal gets :data:`PIPE_WIDTH` columns unless ``COLUMNS`` says otherwise.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

PIPE_WIDTH = 200


def make_console(*, stderr: bool = False) -> Console:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    piped = not stream.isatty()
    width = PIPE_WIDTH if piped and not os.environ.get("COLUMNS") else None
    return Console(file=stream, width=width, highlight=False, soft_wrap=False,
                   no_color=bool(os.environ.get("NO_COLOR")) or None)


def emit(item: RenderableType | str, *, console: Console | None = None) -> None:
    """Print what a capability's ``render`` returned: text as is (no markup), else rich."""
    console = console or make_console()
    if isinstance(item, str):
        console.out(item, highlight=False)
    else:
        console.print(item)


def as_text(item: RenderableType | str, *, width: int = 100) -> str:
    """What :func:`emit` prints, as plain text without colour: for answers sent over HTTP
    (the chat endpoint) rather than to a terminal."""
    if isinstance(item, str):
        return item
    from rich.console import Console

    console = Console(width=width, highlight=False, soft_wrap=False, no_color=True,
                      color_system=None, force_terminal=False, force_jupyter=False)
    with console.capture() as captured:
        console.print(item)
    return "\n".join(line.rstrip() for line in captured.get().splitlines())
