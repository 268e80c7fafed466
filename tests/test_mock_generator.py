"""The ``mock`` code generator: deterministic code for common requests, and scripts."""

from __future__ import annotations

import asyncio
import fnmatch
import json
import subprocess
import sys
from pathlib import Path

import pytest

from osprey_core.analysis import analyze
from osprey_core.control.simulation import load_machine
from osprey_core.execution.generation import GenerationError
from osprey_core.execution.mock_code import span_seconds
from osprey_core.execution.models import ExecutionMode, ExecutionRequest
from osprey_core.hookspecs.code_generators import CodeGenerator, GeneratorContext
from osprey_core.plugin_host import load_plugins
from osprey_core.plugins.llm_generators import AgenticGenerator, LLMGenerator
from osprey_core.plugins.mock_generator import MockGenerator
from osprey_core.settings import ExecutionSettings, LLMSettings

MACHINE_CHANNELS = sorted(load_machine().channels)


async def list_channels(pattern: str) -> list[str]:
    """Like the control system's: a case-insensitive glob over the mock machine's names."""
    return [name for name in MACHINE_CHANNELS if fnmatch.fnmatch(name.lower(), pattern.lower())]


CONTEXT = GeneratorContext(llm=LLMSettings(), execution=ExecutionSettings(),
                           list_channels=list_channels)


def generate(query: str, mode: ExecutionMode = ExecutionMode.READ,
             context: GeneratorContext | None = CONTEXT, generator: type[MockGenerator] =
             MockGenerator, feedback: list[str] | None = None) -> str:
    request = ExecutionRequest(query=query, mode=mode)
    return asyncio.run(generator(context).generate(request, feedback or []))


READS = {
    "read sr:current": ["read_channels(['SR:CURRENT'])"],
    "what are SR:CURRENT and BPM1:X?": ["read_channels(['SR:CURRENT', 'BPM1:X'])"],
    "mean and std of BPM*:X": ["read_channels(['BPM1:X', 'BPM2:X', 'BPM3:X', 'BPM4:X'])",
                               'results["statistics"] = summary('],
    "average of SR:CURRENT over the past 30 minutes": ["timedelta(seconds=1800)",
                                                       'results["statistics"]'],
    "statistics of SR:LIFETIME": ["timedelta(seconds=3600)", 'results["statistics"]'],
    "plot the last hour of SR:CURRENT": ["read_archiver(channels, timedelta(seconds=3600))",
                                         "plt.subplots", "'SR:CURRENT: last hour'"],
    "show the trend of bpm1:x and BPM2:X over the last 2 hours": [
        "channels = ['BPM1:X', 'BPM2:X']", "timedelta(seconds=7200)", "ax.plot"],
    "fit SR:CURRENT over the last 10 minutes": ["np.polyfit", "timedelta(seconds=600)",
                                                'results["fits"]'],
    "set HCM1:SP to 2.5 A": ["read_channels(['HCM1:SP'])", 'results["written"] = False',
                             "{'HCM1:SP': 2.5}"],
}


@pytest.mark.parametrize("query", READS)
def test_read_requests_give_code_that_only_reads(query: str) -> None:
    code = generate(query)
    compile(code, "code.py", "exec")
    for expected in READS[query]:
        assert expected in code
    analysis = analyze(code)
    assert analysis.reads
    assert not (analysis.writes or analysis.dangerous or analysis.parse_error)
    assert analysis.write_targets == frozenset()


def test_writes_are_written_only_in_write_mode() -> None:
    code = generate("set hcm1:sp to 2.5 A", ExecutionMode.WRITE)
    assert "write_channel('HCM1:SP', 2.5)" in code
    analysis = analyze(code)
    assert analysis.writes and not analysis.dangerous
    assert analysis.write_targets == {"HCM1:SP"}
    assert [(w.channel, w.value) for w in analysis.planned_writes] == [("HCM1:SP", 2.5)]

    both = analyze(generate("set HCM1:SP to 1 and VCM1:SP to -0.5", ExecutionMode.WRITE))
    assert [(w.channel, w.value) for w in both.planned_writes] == [("HCM1:SP", 1),
                                                                    ("VCM1:SP", -0.5)]


def test_write_mode_without_a_write_request_still_only_reads() -> None:
    assert not analyze(generate("read SR:CURRENT", ExecutionMode.WRITE)).writes


def test_same_request_same_code_whatever_the_feedback() -> None:
    for query in READS:
        assert generate(query) == generate(query, feedback=["Attempt 1 failed (error)."])


def test_without_a_channel_list_names_are_taken_as_written() -> None:
    code = generate("read XF:31IDA-OP{Tbl-Ax:X1}Mtr.RBV and BPM*:X", context=None)
    assert "read_channels(['XF:31IDA-OP{Tbl-Ax:X1}Mtr.RBV'])" in code


def test_unknown_channels_are_a_generation_error() -> None:
    with pytest.raises(GenerationError, match=r"no known channel name in 'read NOPE:CHANNEL "
                                              r"please'; it understands: read X, Y"):
        generate("read NOPE:CHANNEL please")
    with pytest.raises(GenerationError, match="cannot write 'NOPE:SP'"):
        generate("set NOPE:SP to 1", ExecutionMode.WRITE)


def test_channel_names_cannot_inject_code() -> None:
    async def hostile(pattern: str) -> list[str]:
        return ["EVIL:X\nimport os; os.system('caput HCM1:SP 9')  # "]

    context = GeneratorContext(llm=LLMSettings(), execution=ExecutionSettings(),
                               list_channels=hostile)
    code = generate("plot EVIL:* over the last hour", context=context)
    assert 'channels = ["EVIL:X\\nimport os;' in code
    analysis = analyze(code)
    assert not (analysis.dangerous or analysis.writes or analysis.parse_error)


@pytest.mark.parametrize("text, seconds", [
    ("the last hour", 3600), ("past 2 hours", 7200), ("last 90 min", 5400),
    ("last 1.5 days", 129600), ("last week", 604800), ("right now", None),
])
def test_spans(text: str, seconds: float | None) -> None:
    assert span_seconds(text) == seconds


def test_scripted_generators_return_their_code_in_order() -> None:
    scripted = MockGenerator.scripted(["x = 1\n", "x = 2\n"])
    other = MockGenerator.scripted(["y = 1\n"], name="other")
    assert issubclass(scripted, MockGenerator) and scripted.name == "scripted"
    generator = scripted(None)
    request = ExecutionRequest(query="anything")
    assert asyncio.run(generator.generate(request, [])) == "x = 1\n"
    assert asyncio.run(generator.generate(request, ["it failed"])) == "x = 2\n"
    with pytest.raises(GenerationError, match="asked for attempt 3, but its script has only 2"):
        asyncio.run(generator.generate(request, ["it failed", "again"]))
    assert scripted.feedback_seen == [[], ["it failed"], ["it failed", "again"]]
    assert asyncio.run(scripted(None).generate(request, [])) == "x = 1\n"  # per instance
    assert other.feedback_seen == [] and MockGenerator.feedback_seen == []


def test_the_builtin_generators_are_registered() -> None:
    generators = load_plugins(environ={}).code_generators()
    expected: dict[str, type[CodeGenerator]] = {
        "mock": MockGenerator, "llm": LLMGenerator, "agentic": AgenticGenerator}
    for name, cls in expected.items():
        assert generators.get(name) is cls


# -- the code runs ------------------------------------------------------------------------

#: Runs code.py the way the sandbox does (runtime API and ``results`` as globals, open
#: figures saved), with a stand-in runtime that returns made-up numbers.
DRIVER = """\
import json
from datetime import datetime, timedelta, timezone

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

def value(name):
    return sum(map(ord, name)) / 10

def read_channels(names):
    return {name: value(name) for name in names}

def read_archiver(channels, start, end=None):
    assert isinstance(start, timedelta)
    now = datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
    return {name: [((now - timedelta(minutes=60 - i)).isoformat(), value(name) + 0.1 * i)
                   for i in range(61)] for name in channels}

namespace = {"results": {}, "read_channels": read_channels, "read_archiver": read_archiver,
             "read_channel": value}
with open("code.py") as handle:
    exec(compile(handle.read(), "code.py", "exec"), namespace)
with open("results.json", "w") as handle:
    json.dump(namespace["results"], handle)
for number in plt.get_fignums():
    plt.figure(number).savefig(f"figure_{number}.png")
"""


def run_code(code: str, folder: Path) -> dict:
    (folder / "code.py").write_text(code)
    (folder / "driver.py").write_text(DRIVER)
    subprocess.run([sys.executable, "-I", "driver.py"], cwd=folder, check=True, timeout=60,
                   capture_output=True, text=True)
    return json.loads((folder / "results.json").read_text())


def test_generated_code_runs_and_produces_results_and_a_figure(cwd: Path) -> None:
    plot, read, fit = (cwd / name for name in ("plot", "read", "fit"))
    for folder in (plot, read, fit):
        folder.mkdir()
    results = run_code(generate("plot the last hour of SR:CURRENT and BPM1:X"), plot)
    assert set(results["statistics"]) == {"SR:CURRENT", "BPM1:X"}
    assert results["statistics"]["BPM1:X"]["samples"] == 61
    assert results["statistics"]["BPM1:X"]["mean"] == pytest.approx(41.8 + 3.0)
    assert (plot / "figure_1.png").read_bytes().startswith(b"\x89PNG")

    assert run_code(generate("read SR:CURRENT"), read) == {"values": {"SR:CURRENT": 77.0}}

    fits = run_code(generate("fit BPM1:X over the last hour"), fit)["fits"]
    assert fits["BPM1:X"]["slope_per_hour"] == pytest.approx(6.0)
    assert (fit / "figure_1.png").exists()
