"""What the console's templates show, shaped from the stored records.

Kept free of the web framework: each function turns an approval, a run or a channel
reading into plain data a template lays out, so the same facts the CLI prints (the
summary, the analyzer's findings, the write table) reach the shift leader's screen.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from osprey_core.display.text import when

if TYPE_CHECKING:
    from osprey_core.control.limits import ChannelLimits
    from osprey_core.control.types import ReadBatch
    from osprey_core.models import ApprovalRecord, RunRecord, StepRecord


def pretty(value: Any) -> str:
    """A parameter as people read it: text as is, anything else as one line of JSON."""
    if isinstance(value, str):
        return value or "(empty)"
    return json.dumps(value, ensure_ascii=False, default=str)


def first_line(summary: str, width: int = 110) -> str:
    """The gist of a summary for a list row (the approval page has all of it): its first
    lines of prose, without the code block a code approval's summary ends with."""
    lines = []
    for line in summary.splitlines():
        if line.startswith("```"):
            break
        if line.strip():
            lines.append(line.strip())
    text = " / ".join(lines[:2])
    return text if len(text) <= width else text[: width - 1] + "…"


# -- plans -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepView:
    number: int
    capability: str
    description: str
    parameters: list[tuple[str, str]]
    inputs: list[str]
    output: str
    status: str | None = None
    error: str | None = None


def plan_steps(plan: Mapping[str, Any] | None,
               records: Sequence[StepRecord] = ()) -> list[StepView]:
    """Each planned step with its parameters (and, on a run page, how it went)."""
    if not plan:
        return []
    by_index = {record.index: record for record in records}
    views = []
    for index, step in enumerate(plan.get("steps", [])):
        record = by_index.get(index)
        views.append(StepView(
            number=index + 1, capability=str(step.get("capability", "")),
            description=str(step.get("description") or ""),
            parameters=[(key, pretty(value))
                        for key, value in (step.get("parameters") or {}).items()],
            inputs=list(step.get("inputs") or []), output=str(step.get("output") or ""),
            status=None if record is None else str(record.status),
            error=None if record is None else record.error))
    return views


# -- code --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodeLine:
    number: int
    text: str
    findings: list[dict[str, Any]] = field(default_factory=list)
    writes: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class CodeView:
    code: str
    mode: str
    generator: str
    code_sha256: str
    lines: list[CodeLine]
    #: Findings without a line in the code (a parse error at its end, say).
    loose: list[dict[str, Any]]
    planned_writes: list[dict[str, Any]]
    #: ``None``: the analyzer could not tell which channels the code writes.
    write_targets: list[str] | None
    writes: bool
    expected_results: dict[str, str]


def code_view(artifact: Mapping[str, Any]) -> CodeView:
    """The code with each analyzer finding and planned write placed on its own line."""
    code = str(artifact.get("code") or "")
    analysis = artifact.get("analysis") or {}
    findings = list(analysis.get("findings") or [])
    planned = list(analysis.get("planned_writes") or [])
    texts = code.splitlines()
    lines = [CodeLine(number, text,
                      [f for f in findings if f.get("line") == number],
                      [w for w in planned if w.get("line") == number])
             for number, text in enumerate(texts, start=1)]
    numbered = set(range(1, len(texts) + 1))
    request = artifact.get("request") or {}
    return CodeView(
        code=code, mode=str(artifact.get("mode") or "read"),
        generator=str(artifact.get("generator") or ""),
        code_sha256=str(artifact.get("code_sha256") or ""), lines=lines,
        loose=[f for f in findings if f.get("line") not in numbered],
        planned_writes=planned, write_targets=analysis.get("write_targets"),
        writes=bool(analysis.get("writes")),
        expected_results=dict(request.get("expected_results") or {}))


# -- channel writes ----------------------------------------------------------------------


@dataclass(frozen=True)
class WriteView:
    channel: str
    requested: str
    units: str
    #: The value read when the request was made (``None``: not read then), and now.
    at_request: str | None
    now: str
    now_problem: str | None
    limits: list[tuple[str, str]]
    in_database: bool
    verification: str
    notes: list[str]


def _shown(value: Any) -> str:
    return "unknown" if value is None else value if isinstance(value, str) else \
        json.dumps(value, ensure_ascii=False)


def _limit_items(limits: ChannelLimits | Mapping[str, Any] | None) -> list[tuple[str, str]]:
    if limits is None:
        return []
    data = limits if isinstance(limits, Mapping) else limits.model_dump(exclude_none=True)
    items = [(key.replace("_", " "), _shown(data[key]))
             for key in ("min", "max", "max_step") if data.get(key) is not None]
    if data.get("allowed"):
        items.append(("allowed", ", ".join(str(item) for item in data["allowed"])))
    return items


def _verification(entry: Mapping[str, Any]) -> str:
    check = str(entry.get("verification") or "none")
    if entry.get("readback_channel"):
        check = f"readback of {entry['readback_channel']}"
        tolerance = entry.get("tolerance") or {}
        if "absolute" in tolerance:
            check += f" within ±{tolerance['absolute']:g}"
        if "relative" in tolerance:
            check += f" within {tolerance['relative']:.3g} relative"
    return check


def write_views(entries: Sequence[Mapping[str, Any]], batch: ReadBatch,
                limits_for: Callable[[str], ChannelLimits | None]) -> list[WriteView]:
    """Each write as current → requested, with the limits the control system will enforce
    (``limits_for``: the live limits database; the entry's copy if it has none) and how
    the result is verified."""
    views = []
    for entry in entries:
        channel = str(entry.get("channel"))
        read = batch.values.get(channel)
        problem = None
        if read is None:
            error = batch.errors.get(channel)
            problem = f"{type(error).__name__}: {error}" if error else "no value"
        live, stored = limits_for(channel), entry.get("limits")
        views.append(WriteView(
            channel=channel, requested=_shown(entry.get("value")),
            units=entry.get("units") or (read.units if read else None) or "",
            at_request=_shown(entry["current"]) if "current" in entry else None,
            now="unknown" if read is None else _shown(read.value), now_problem=problem,
            limits=_limit_items(live if live is not None else stored),
            in_database=live is not None or stored is not None,
            verification=_verification(entry), notes=list(entry.get("notes") or [])))
    return views


def write_entries(approval: ApprovalRecord,
                  limits_for: Callable[[str], ChannelLimits | None]) -> list[dict[str, Any]]:
    """The writes an approval would make: a channel write's own entries, or the writes the
    analyzer read off the code (verified as the limits database says)."""
    if "writes" in approval.artifact:
        return list(approval.artifact["writes"] or [])
    planned = (approval.artifact.get("analysis") or {}).get("planned_writes") or []
    entries = []
    for write in planned:
        channel = write.get("channel")
        if channel is None:
            continue  # named at run time: the code view says so
        limits = limits_for(channel)
        entries.append({
            "channel": channel,
            "value": "a computed value" if write.get("computed") else write.get("value"),
            "verification": limits.verification if limits else None,
            "readback_channel": (limits.readback_channel or channel)
            if limits and limits.verification == "readback" else None,
            "tolerance": limits.tolerance.model_dump(exclude_none=True)
            if limits and limits.tolerance else None})
    return entries


# -- runs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArtifactLink:
    name: str
    label: str
    figure: bool


def execution_artifacts(run: RunRecord) -> list[ArtifactLink]:
    """Figures, notebooks and results of the run's Python steps, named as the API's
    artifact route names them: relative to the home's ``executions`` folder."""
    links: list[ArtifactLink] = []
    for value in run.context.values():
        if not (isinstance(value, dict) and "code_sha256" in value and value.get("folder")):
            continue
        folder = Path(str(value["folder"]))
        for figure in value.get("figures") or []:
            links.append(ArtifactLink(_relative(figure, folder), Path(figure).name, True))
        if value.get("notebook"):
            links.append(ArtifactLink(_relative(value["notebook"], folder),
                                      "notebook (.ipynb)", False))
        results = folder / "results.json"
        links.append(ArtifactLink(_relative(str(results), folder), "results (JSON)", False))
    return links


def _relative(path: str, folder: Path) -> str:
    executions = next((parent for parent in folder.parents if parent.name == "executions"),
                      folder)
    try:
        return str(Path(path).relative_to(executions))
    except ValueError:
        return Path(path).name


@dataclass(frozen=True)
class EventView:
    id: int | None
    at: str
    kind: str
    details: str


def event_views(events: Iterable[Any]) -> list[EventView]:
    return [EventView(event.id, when(event.at, millis=True), event.kind,
                      ", ".join(f"{key}: {_shown(value)}" for key, value in event.data.items()))
            for event in events]


# -- channels ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadingView:
    channel: str
    value: str
    units: str
    severity: str
    at: str
    problem: str | None


def reading_views(names: Sequence[str], batch: ReadBatch) -> list[ReadingView]:
    views = []
    for name in names:
        read = batch.values.get(name)
        if read is None:
            error = batch.errors.get(name)
            views.append(ReadingView(name, "", "", "", "",
                                     f"{type(error).__name__}: {error}" if error else
                                     "no value"))
        else:
            views.append(ReadingView(name, _shown(read.value), read.units or "",
                                     read.severity.name, when(read.timestamp, millis=True),
                                     None))
    return views


def channel_names(text: str) -> list[str]:
    """Names typed into the channel form: separated by commas, spaces or new lines."""
    names: list[str] = []
    for name in text.replace(",", " ").split():
        if name not in names:
            names.append(name)
    return names
