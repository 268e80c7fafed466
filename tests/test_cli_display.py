"""The display layer on its own: plain text without JSON or cuts, series summaries, local
times, the default render hook, and a plugin whose renderer breaks."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from osprey_core.display.console import emit, make_console
from osprey_core.display.runs import answer, render_result
from osprey_core.display.text import arguments, plain_text, series_summary, use_utc, when
from osprey_core.hookspecs.capabilities import Capability, StepContext
from osprey_core.models import Plan, PlanStep, RunRecord
from osprey_core.run_machine import RunState

T0 = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


def to_text(item: Any) -> str:
    """What a renderable looks like in a pipe, without styles."""
    from rich.console import Console

    buffer = io.StringIO()
    Console(file=buffer, width=100, color_system=None).print(item)
    return buffer.getvalue().rstrip()


def series(count: int) -> list[list[Any]]:
    return [[(T0 + timedelta(seconds=index)).isoformat(), float(index)]
            for index in range(count)]


class Gauge(Capability):
    name = "gauge"
    description = "A test capability with the default render."

    async def execute(self, step: StepContext) -> Any:
        return None


class Broken(Gauge):
    name = "broken"

    def render(self, result: Any) -> str:
        raise RuntimeError("renderer bug")


def test_a_long_series_is_summarised_never_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    text = plain_text({"SR:CURRENT": {"count": 5000, "samples": series(5000),
                                      "operator": None, "ok": True}})
    assert text == (
        "SR:CURRENT:\n"
        "  count: 5000\n"
        "  samples: 5000 samples from 2026-01-15 12:00:00 +00:00 to 2026-01-15 13:23:19 +00:00;"
        " min 0, mean 2499.5, max 4999; first 0, last 4999\n"
        "  operator: —\n"
        "  ok: yes")
    assert series_summary([]) == "no samples"
    assert plain_text(list(range(40))).startswith("40 items; min 0, mean 19.5, max 39")


def test_times_are_local_with_their_offset_or_utc(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        assert when("2026-01-15T12:00:00+00:00") == "2026-01-15 17:30:00 +05:30"
        assert when(T0, seconds=False) == "2026-01-15 17:30 +05:30"
        use_utc(True)
        assert when(T0) == "2026-01-15 12:00:00 +00:00"
    finally:
        use_utc(False)
        monkeypatch.undo()
        time.tzset()
    assert when("not a time") == "not a time" and when(None) == ""


def test_the_default_render_is_text_and_a_broken_one_falls_back() -> None:
    assert Gauge().render({"a": [1, 2], "b": {"c": None}}) == "a: 1, 2\nb:\n  c: —"
    assert render_result(Broken(), {"x": 1}) == "x: 1"
    assert render_result(None, "plain") == "plain"


def test_a_run_answer_is_the_message_then_each_input_rendered() -> None:
    plan = Plan(steps=[
        PlanStep(capability="gauge", output="first"),
        PlanStep(capability="broken", output="second"),
        PlanStep(capability="respond", parameters={"message": "Two results:"},
                 inputs=["first", "second"], output="response")])
    run = RunRecord(id="run-000000000001", session="s", user="u", query="q",
                    state=RunState.DONE, plan=plan, created_at=T0, updated_at=T0,
                    context={"first": {"v": 1}, "second": {"w": 2}}, response="raw")

    class Respond(Gauge):
        name = "respond"
        terminal = True

    found = {"gauge": Gauge(), "broken": Broken(), "respond": Respond()}
    assert answer(run, found.get) == ["Two results:", "first:", "v: 1", "second:", "w: 2"]


def test_no_color_and_plain_width_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("COLUMNS", raising=False)
    console = make_console()
    assert console.no_color and console.width == 200  # pytest's stdout is not a terminal
    buffer = io.StringIO()
    from rich.console import Console

    emit("[bold]kept literally[/bold]", console=Console(file=buffer))
    assert buffer.getvalue() == "[bold]kept literally[/bold]\n"


def test_memories_and_logbook_hits_read_as_tables() -> None:
    from osprey_core.display.records import logbook_hits, memories, memory_saved

    saved = {"user": "ana", "saved": {"id": "mem-1", "text": "plot in mm", "tags": ["units"]}}
    assert memory_saved(saved) == "Saved to the memory of ana as mem-1: “plot in mm” (tags: units)"
    recalled = to_text(memories({"user": "ana", "topic": "plots", "memories": [
        {"id": "mem-1", "text": "plot in mm", "tags": [], "updated_at": T0.isoformat()}]}))
    assert recalled.startswith("Memories of ana about “plots”")
    assert "mem-1" in recalled and "plot in mm" in recalled and "{" not in recalled
    assert memories({"user": "ana", "topic": "", "memories": []}) == "No memories of ana."
    found = to_text(logbook_hits({"query": "RF trip", "mode": "keyword", "total": 7,
                                  "notices": ["read as keywords"], "hits": [
        {"id": "ops/1", "timestamp": T0.isoformat(), "author": "Maria", "title": "RF trip",
         "snippet": "cavity  tripped\non vacuum"}]}))
    assert found.startswith("1 of 7 logbook entries matching “RF trip” (keyword search)")
    assert "note: read as keywords" in found and "cavity tripped on vacuum" in found


def test_step_parameters_read_as_an_operator_says_them() -> None:
    assert arguments({"channels": ["SR:CURRENT", "BPM1:X"], "timeout": 2.0, "note": ""}) == (
        "channels=SR:CURRENT, BPM1:X timeout=2")
    writes = {"writes": [{"channel": "HCM1:SP", "units": "A", "value": 0.5},
                         {"channel": "HCM2:SP", "value": -1.25}]}
    assert arguments(writes) == "writes=HCM1:SP → 0.5 A; HCM2:SP → -1.25"
    assert arguments({"query": "x" * 100}, width=20) == "query=" + "x" * 19 + "…"
    assert "{" not in arguments({"options": {"mode": "fast", "depth": [1, 2]}})
