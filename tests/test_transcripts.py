"""What an operator reads for each common request, through the real command line.

Each test runs ``osprey`` in a subprocess on the simulated machine (the analysis in the
real nsjail sandbox) and checks the human output: results as tables and sentences, never
JSON braces, never a "(N more characters…)" cut, and ``--json`` still the full data.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from support.cli import assert_exit, osprey
from support.dist import osprey_env

pytestmark = pytest.mark.exercises_hook("register_commands")

#: The demo's machine: the simulated one, with one writable corrector.
CONFIG = {
    "control_system": {
        "type": "mock", "writes_enabled": True, "verify_timeout": 5.0,
        "limits": {"channels": {"HCM1:SP": {
            "writable": True, "type": "float", "min": -5.0, "max": 5.0, "max_step": 2.0,
            "verification": "readback", "readback_channel": "HCM1:RB",
            "tolerance": {"absolute": 0.01}}}}},
    "archiver": {"type": "mock"},
}
APPROVAL_ID = re.compile(r"apv-[0-9a-f]{12}")


@pytest.fixture
def env(tmp_path: Path, cwd: Path) -> dict[str, str]:
    (cwd / "osprey.yml").write_text(json.dumps(CONFIG), encoding="utf-8")
    environment = osprey_env(tmp_path / "home", TZ="UTC")
    environment.pop("COLUMNS")  # as in a pipe: the plain wide width applies
    return environment


def readable(text: str) -> str:
    """``text`` if it reads like prose and tables; fails on JSON or a truncation marker."""
    assert '{"' not in text and "{'" not in text, text
    assert "more characters" not in text and "(none)" not in text, text
    assert "stderr:" not in text and "error:" not in text, text
    return text


def ask(env: dict[str, str], cwd: Path, *args: str, code: int = 0, timeout: float = 60) -> str:
    result = osprey(*args, env=env, cwd=cwd, timeout=timeout)
    assert_exit(result, code)
    return result.stdout


def approve_pending(env: dict[str, str], cwd: Path, out: str) -> str:
    """Approve the request ``out`` stopped at; the approved run's output."""
    [approval_id] = set(APPROVAL_ID.findall(out))
    return ask(env, cwd, "approvals", "approve", approval_id)


def test_read(env, cwd):
    out = readable(ask(env, cwd, "run", "read SR:CURRENT and BPM1:X"))
    assert re.search(r"SR:CURRENT +\d+\.\d+ +mA +\d{4}-\d\d-\d\d [\d:]{8} \+00:00\n",
                     out), out
    assert re.search(r"BPM1:X +-?\d+\.\d+ +mm ", out), out
    data = json.loads(ask(env, cwd, "run", "read SR:CURRENT", "--json"))
    assert set(data["context"]["channel_read"]["SR:CURRENT"]) == {
        "value", "units", "severity", "timestamp"}


def test_write(env, cwd):
    paused = ask(env, cwd, "run", "set HCM1:SP to 1.5 A", code=3)
    assert "HCM1:SP: 0.0 A -> 1.5 A" in paused
    out = readable(approve_pending(env, cwd, paused))
    assert re.search(r"HCM1:SP +1\.5 +0 +1\.\d+ +ok, verified \(readback\)", out), out


def test_history(env, cwd):
    out = readable(ask(env, cwd, "run", "history of SR:CURRENT over the last hour"))
    row = re.search(r"SR:CURRENT +(\d+) +(.+?) → (.+?00:00) +([\d.]+) +([\d.]+) +([\d.]+) ",
                    out)
    assert row, out
    count, low, mean, high = int(row[1]), float(row[4]), float(row[5]), float(row[6])
    assert count > 1000 and low <= mean <= high
    assert len(out) < 3000  # a summary, not the samples
    data = json.loads(ask(env, cwd, "run", "history of SR:CURRENT over the last hour",
                          "--json"))
    assert len(data["context"]["archiver_retrieval"]["SR:CURRENT"]["samples"]) > 1000


def test_plot(env, cwd):
    out = ask(env, cwd, "run", "plot SR:CURRENT over the last hour", timeout=180)
    readable(re.sub(r"(?m)^ +\d+ .*\n", "", out))  # all but the numbered code lines
    assert out.startswith("Python (read-only) ran in ")
    assert "    if len(values) == 0:\n" in out  # the code keeps its indentation
    assert re.search(r"SR:CURRENT +\d+ +[\d.]+ +[\d.]+", out)  # statistics as a table
    figure = Path(re.search(r"figure: +(\S+)", out)[1])
    notebook = Path(re.search(r"notebook: +(\S+)", out)[1])
    assert figure.is_file() and figure.suffix == ".png" and notebook.is_file()


def test_memory(env, cwd):
    paused = ask(env, cwd, "run", "remember that my default BPM set is BPM01-BPM04", code=3)
    saved = readable(approve_pending(env, cwd, paused))
    assert re.match(r"Saved to the memory of \S+ as mem-\w+: “my default BPM set is "
                    r"BPM01-BPM04”", saved), saved
    out = readable(ask(env, cwd, "run", "what do you remember about BPMs"))
    assert "Memories of" in out and "  my default BPM set is BPM01-BPM04" in out


def test_planning(env, cwd):
    paused = ask(env, cwd, "run", "/planning read SR:CURRENT", code=3)
    assert "Plan for: read SR:CURRENT" in paused
    out = readable(approve_pending(env, cwd, paused))
    assert re.search(r"SR:CURRENT +\d+\.\d+ +mA", out), out


def test_what_can_you_do_and_not_understood(env, cwd):
    out = readable(ask(env, cwd, "run", "what can you do"))
    assert "What I can do" in out and re.search(r"channel_read +Read the current", out)
    out = ask(env, cwd, "run", "brew some coffee", code=4)
    assert out.startswith("I did not understand: no capability matched the request")


def test_runs_show_renders_the_answer(env, cwd):
    ask(env, cwd, "run", "read SR:CURRENT")
    [run] = json.loads(ask(env, cwd, "runs", "list", "--json"))
    out = readable(ask(env, cwd, "runs", "show", run["id"]))
    assert "1. [succeeded] channel_read channels=SR:CURRENT -> channel_read" in out
    assert re.search(r"answer:\n.*\n.*\nSR:CURRENT ", out), out
