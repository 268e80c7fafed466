"""Turn an execution folder (after copy-out) into the run's artifacts.

The folder's files came from the jail, so they are untrusted: every file is opened
relative to a descriptor of its directory with ``O_NOFOLLOW`` (nothing outside the folder
is read, no symlink is followed), size-capped, and a file that cannot be used is noted,
never fatal. What the host knows (the code, its output, the broker's report) is written
over anything the code left under the same names.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from osprey_core.fileio import atomic_write_text

if TYPE_CHECKING:
    from osprey_core.execution.models import ExecutionRequest
    from osprey_core.hookspecs.execution_backends import SandboxOutcome
    from osprey_core.sandbox.broker import BrokerReport
    from osprey_core.settings import SandboxLimits

MAX_RESULTS_BYTES = 16 << 20
MAX_ERROR_BYTES = 1 << 20
MAX_FIGURE_BYTES = 20 << 20
MAX_FIGURES = 100
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Artifacts:
    """What a run left, as the execution service reports it."""

    folder: Path
    results: dict[str, Any]
    error: dict[str, Any] | None
    #: PNG files, relative to ``folder`` (``figures/figure_1.png``, ...).
    figures: list[str]
    notebook: Path | None
    metadata: Path
    #: Problems met while collecting (unreadable results, skipped figures, no nbformat).
    notes: list[str] = field(default_factory=list)


class _Unusable(Exception):
    pass


def _read(directory_fd: int, name: str, max_bytes: int) -> bytes | None:
    """The bytes of regular file ``name`` in the directory; None if it does not exist."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=directory_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        why = "symlink not followed" if exc.errno == errno.ELOOP else exc.strerror
        raise _Unusable(f"{name}: {why}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise _Unusable(f"{name}: not a regular file")
        if info.st_size > max_bytes:
            raise _Unusable(f"{name}: {info.st_size} bytes, over the {max_bytes} byte limit")
        return handle.read(max_bytes + 1)[:max_bytes]


def _open_directory(path: Path | str, dir_fd: int | None = None) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                       dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError:
        raise _Unusable(f"{path}: not a directory (symlinks are not followed)") from None


def _json_file(directory_fd: int, name: str, max_bytes: int, notes: list[str]) -> Any:
    try:
        data = _read(directory_fd, name, max_bytes)
        return None if data is None else json.loads(data)
    except _Unusable as exc:
        notes.append(str(exc))
    except ValueError as exc:
        notes.append(f"{name} is not valid JSON ({exc})")
    return None


def _figures(folder_fd: int, notes: list[str]) -> dict[str, bytes]:
    """``figures/*.png`` that are regular PNG files, in figure-number order."""
    try:
        figures_fd = _open_directory("figures", folder_fd)
    except _Unusable as exc:
        notes.append(str(exc))
        return {}
    if figures_fd is None:
        return {}
    found: dict[str, bytes] = {}
    try:
        names = sorted((entry.name for entry in os.scandir(figures_fd)
                        if entry.name.endswith(".png")), key=_natural)
        for name in names[:MAX_FIGURES]:
            try:
                data = _read(figures_fd, name, MAX_FIGURE_BYTES)
            except _Unusable as exc:
                notes.append(f"figures/{exc}")
                continue
            if data is not None and data.startswith(PNG_SIGNATURE):
                found[f"figures/{name}"] = data
            elif data is not None:
                notes.append(f"figures/{name}: not a PNG image")
        if len(names) > MAX_FIGURES:
            notes.append(f"{len(names) - MAX_FIGURES} figures over the limit of {MAX_FIGURES}")
    finally:
        os.close(figures_fd)
    return found


def _natural(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _analysis_summary(analysis: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if analysis is None:
        return None
    findings = analysis.get("findings") or []
    return {**{key: analysis[key] for key in ("writes", "reads", "dangerous", "parse_error")
               if key in analysis},
            "findings": len(findings),
            "categories": sorted({str(item.get("category")) for item in findings
                                  if isinstance(item, Mapping)})}


def _markdown(request: ExecutionRequest | str) -> str:
    if isinstance(request, str):
        return f"## Request\n\n{request}" if request else ""
    text = f"## Request\n\n{request.query}"
    if request.objective and request.objective != request.query:
        text += f"\n\n**Objective:** {request.objective}"
    return text + f"\n\nMode: {request.mode}"


def _notebook(code: str, outcome: SandboxOutcome, request: str, results: dict[str, Any],
              error: dict[str, Any] | None, figures: dict[str, bytes]) -> str:
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

    outputs = [new_output("stream", name=name, text=text)
               for name, text in (("stdout", outcome.stdout), ("stderr", outcome.stderr))
               if text]
    if error is not None:
        outputs.append(new_output(
            "error", ename=str(error.get("type", "Error")), evalue=str(error.get("message", "")),
            traceback=str(error.get("traceback", "")).splitlines()))
    outputs += [new_output("display_data", data={
        "image/png": base64.b64encode(data).decode("ascii"), "text/plain": f"<{name}>"})
        for name, data in figures.items()]
    if results:
        outputs.append(new_output("display_data", data={
            "application/json": results, "text/plain": json.dumps(results, indent=2)}))
    cells = [new_markdown_cell(request)] if request else []
    cells.append(new_code_cell(code, execution_count=1, outputs=outputs))
    notebook = new_notebook(cells=cells, metadata={
        "language_info": {"name": "python"},
        "osprey": {"exit_reason": str(outcome.exit_reason), "backend": outcome.backend}})
    nbformat.validate(notebook)
    return nbformat.writes(notebook)


def write_artifacts(
    folder: Path,
    *,
    code: str,
    outcome: SandboxOutcome,
    analysis: Mapping[str, Any] | None = None,
    broker: BrokerReport | Mapping[str, Any] | None = None,
    timings: Mapping[str, float] | None = None,
    limits: SandboxLimits | Mapping[str, Any] | None = None,
    request: ExecutionRequest | str = "",
    skipped: Sequence[str] = (),
) -> Artifacts:
    """Read what the run left in ``folder`` and write the logs, metadata and notebook.

    ``skipped`` are the notes of the copy-out (files not taken back); ``request`` (its
    query and objective) becomes the notebook's markdown cell.
    """
    notes = list(skipped)
    folder.mkdir(parents=True, exist_ok=True)
    folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        results = _json_file(folder_fd, "results.json", MAX_RESULTS_BYTES, notes)
        error = _json_file(folder_fd, "error.json", MAX_ERROR_BYTES, notes)
        figures = _figures(folder_fd, notes)
    finally:
        os.close(folder_fd)
    if results is not None and not isinstance(results, dict):
        notes.append(f"results.json holds a {type(results).__name__}, not an object")
        results = {"results": results}
    if error is not None and not isinstance(error, dict):
        error = {"type": "Error", "message": str(error)[:1000]}

    atomic_write_text(folder / "code.py", code, durable=False)
    atomic_write_text(folder / "stdout.log", outcome.stdout, durable=False)
    atomic_write_text(folder / "stderr.log", outcome.stderr, durable=False)
    notebook: Path | None = folder / "notebook.ipynb"
    try:
        text = _notebook(code, outcome, _markdown(request), results or {}, error, figures)
    except ImportError:
        notes.append("no notebook: nbformat is not installed (pip install 'osprey-core[sandbox]')")
        notebook = None
    except Exception as exc:  # a notebook is a convenience, never a reason to lose a run
        notes.append(f"no notebook: {type(exc).__name__}: {exc}")
        notebook = None
    if notebook is not None:
        atomic_write_text(notebook, text, durable=False)

    if isinstance(limits, Mapping) or limits is None:
        limit_values = dict(limits or {})
    else:
        limit_values = limits.model_dump()
    metadata = folder / "metadata.json"
    atomic_write_text(metadata, json.dumps({
        "created": datetime.now(UTC).isoformat(),
        "code_sha256": hashlib.sha256(code.encode()).hexdigest(),
        **outcome.to_json(),
        "timings": dict(timings or {}),
        "limits": limit_values,
        "analysis": _analysis_summary(analysis),
        "broker": broker if broker is None or isinstance(broker, Mapping) else broker.to_json(),
        "results": results is not None,
        "error": error,
        "figures": list(figures),
        "notebook": notebook is not None,
        "collection_notes": notes,
    }, indent=2, default=str), durable=False)
    return Artifacts(folder=folder, results=results or {}, error=error, figures=list(figures),
                     notebook=notebook, metadata=metadata, notes=notes)
