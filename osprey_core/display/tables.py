"""Tables that survive narrow terminals and pipes: ids are never wrapped or cut.

An id column (copied into the next command) keeps its full width; other columns fold
long words and wrap at spaces, so a narrow terminal squeezes the prose, not the ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.table import Table

#: Column names whose cells are identifiers or names: shown whole, never wrapped.
ID_COLUMNS = frozenset({"id", "run", "name", "channel", "approval", "waiting for",
                        "capability", "entry"})

#: The narrowest a prose column gets in a narrow terminal.
MIN_TEXT_WIDTH = 8


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]], *,
          numeric: Iterable[str] = ()) -> Table:
    from rich.box import SIMPLE_HEAD
    from rich.table import Table
    from rich.text import Text

    cells = [["" if cell is None else str(cell) for cell in row] for row in rows]
    right = set(numeric)
    # No vertical rules: columns two spaces apart read well and cut well (grep, awk).
    grid = Table(title=title, highlight=False, title_justify="left", box=SIMPLE_HEAD,
                 show_edge=False, pad_edge=False)
    for index, column in enumerate(columns):
        if column in ID_COLUMNS:
            longest = max([2, *(len(row[index]) for row in cells)])  # the header may fold
            grid.add_column(column, min_width=longest, overflow="fold")
        else:  # narrowed down to a short word at most, never to nothing
            shortest = min(MIN_TEXT_WIDTH, max([1, *(len(row[index]) for row in cells)]))
            grid.add_column(column, overflow="fold", min_width=shortest,
                            justify="right" if column in right else "left")
    for row in cells:
        grid.add_row(*(Text(cell) for cell in row))  # data, never markup
    return grid
