"""A Python step's result for people: outcome, the code with its indentation, the computed
results as tables, and where its figures, notebook and folder are."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from osprey_core.display.tables import table
from osprey_core.display.text import number, plain_text

if TYPE_CHECKING:
    from rich.console import RenderableType


def python_result(result: Any) -> RenderableType | str:
    from rich.console import Group
    from rich.syntax import Syntax
    from rich.text import Text

    if not isinstance(result, Mapping) or "code" not in result:
        return plain_text(result)
    parts: list[Any] = [Text(_headline(result), style="bold")]
    code = str(result.get("code") or "").rstrip()
    if code:
        parts += [Text(f"code (sha256 {str(result.get('code_sha256', ''))[:16]}…):"),
                  Syntax(code, "python", line_numbers=True, theme="ansi_dark",
                         word_wrap=False, background_color="default")]
    computed = result.get("results") or {}
    parts += results_view(computed)
    stdout = str(result.get("stdout") or "").rstrip()
    if stdout and not computed:
        parts += [Text("printed:"), Text(_indented(stdout))]
    elif stdout:
        lines = len(stdout.splitlines())
        parts.append(Text(f"it printed {lines} line{'s' * (lines != 1)}: stdout.log in the "
                          "folder"))
    stderr = str(result.get("stderr") or "").rstrip()
    if stderr:
        parts += [Text("errors printed:"), Text(_indented(stderr))]
    if result.get("error"):
        parts.append(Text(f"error: {result['error']}"))
    parts += [Text(f"figure:   {figure}") for figure in result.get("figures") or []]
    if result.get("notebook"):
        parts.append(Text(f"notebook: {result['notebook']}"))
    if result.get("folder"):
        parts.append(Text(f"folder:   {result['folder']}"))
    return Group(*parts)


def _headline(result: Mapping[str, Any]) -> str:
    mode = "may write" if result.get("mode") == "write" else "read-only"
    outcome = "ran" if result.get("ok") else f"ended: {result.get('exit_reason')}"
    seconds = (result.get("timings") or {}).get("execution_seconds")
    took = f" in {seconds:.2f} s" if isinstance(seconds, int | float) else ""
    broker = result.get("broker") or {}
    reads, written = broker.get("reads", 0), len(broker.get("writes") or [])
    blocked = len(broker.get("blocked") or [])
    machine = f"; {reads} read(s), {written} write(s)" + (
        f", {blocked} blocked" if blocked else "")
    return f"Python ({mode}) {outcome}{took}{machine}"


def results_view(results: Any) -> list[Any]:
    """Each computed result: a table when it is a mapping of records (per channel
    statistics), else indented text."""
    from rich.text import Text

    if not isinstance(results, Mapping) or not results:
        return []
    parts: list[Any] = []
    for key, value in results.items():
        columns = _record_columns(value)
        if columns:
            rows = [(name, *(number(record.get(column)) for column in columns))
                    for name, record in value.items()]
            parts.append(table(str(key).replace("_", " "), ("name", *columns), rows,
                               numeric=columns))
        else:
            parts.append(Text(plain_text({key: value})))
    return parts


def _record_columns(value: Any) -> tuple[str, ...]:
    if not isinstance(value, Mapping) or not value:
        return ()
    columns: dict[str, None] = {}
    for record in value.values():
        if not isinstance(record, Mapping) or any(
                isinstance(item, Mapping | list) for item in record.values()):
            return ()
        columns.update(dict.fromkeys(record))
    return tuple(columns)


def _indented(text: str) -> str:
    return "\n".join(f"  {line}" for line in text.splitlines())
