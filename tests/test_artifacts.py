"""Collecting a run's artifacts: results, errors, figures, logs, metadata, notebook.

The folders come from real bootstrap runs; planted symlinks stand for what code in the
jail could leave behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from support.bootstrap import run_code, sha256

from osprey_core.execution.models import ExecutionRequest
from osprey_core.hookspecs.execution_backends import ExitReason, SandboxOutcome
from osprey_core.sandbox.artifacts import MAX_RESULTS_BYTES, write_artifacts
from osprey_core.sandbox.broker import BrokerReport
from osprey_core.settings import SandboxLimits

PLOT = """
import matplotlib.pyplot as plt
print("fitting")
plt.plot([1, 2, 3])
results["slope"] = 1.0
"""


def outcome(ran_stdout: str = "", ran_stderr: str = "", reason: ExitReason = ExitReason.OK,
            returncode: int = 0) -> SandboxOutcome:
    return SandboxOutcome(reason, returncode, ran_stdout, ran_stderr, False, 1.25, "local",
                          False, ["no isolation"])


def ran_folder(code: str, root: Path) -> tuple[Path, SandboxOutcome]:
    ran = asyncio.run(run_code(code, root))
    reason = ExitReason.OK if ran.returncode == 0 else ExitReason.ERROR
    return ran.work, outcome(ran.stdout, ran.stderr, reason, ran.returncode)


def test_a_run_becomes_results_figures_logs_metadata_and_a_valid_notebook(tmp_path: Path
                                                                           ) -> None:
    folder, result = ran_folder(PLOT, tmp_path)
    (folder / "code.py").write_text("print('swapped by the code')\n")
    broker = BrokerReport(calls=1, reads=1, channels_read={"SR:CURRENT"})
    analysis = {"writes": [], "reads": ["SR:CURRENT"], "dangerous": False,
                "parse_error": None, "findings": [{"category": "read", "line": 2}]}
    artifacts = write_artifacts(folder, code=PLOT, outcome=result, analysis=analysis,
                                  broker=broker, timings={"run": 1.25},
                                  limits=SandboxLimits(),
                                  request=ExecutionRequest(query="Plot the slope",
                                                           objective="Fit a line"))
    assert artifacts.results == {"slope": 1.0} and artifacts.error is None
    assert artifacts.figures == ["figures/figure_1.png"]
    assert (folder / "code.py").read_text() == PLOT  # the host's copy wins
    assert (folder / "stdout.log").read_text() == "fitting\n"
    metadata = json.loads(artifacts.metadata.read_text())
    assert (metadata["exit_reason"], metadata["backend"], metadata["isolated"]) == (
        "ok", "local", False)
    assert metadata["code_sha256"] == sha256(PLOT)
    assert metadata["limits"]["wall_seconds"] == SandboxLimits().wall_seconds
    assert metadata["timings"] == {"run": 1.25} and metadata["broker"] == broker.to_json()
    assert metadata["analysis"] == {"writes": [], "reads": ["SR:CURRENT"], "dangerous": False,
                                    "parse_error": None, "findings": 1,
                                    "categories": ["read"]}
    assert artifacts.notebook == folder / "notebook.ipynb"
    notebook = nbformat.read(artifacts.notebook, as_version=4)
    nbformat.validate(notebook)
    request, cell = notebook.cells
    assert request.cell_type == "markdown"
    assert request.source == ("## Request\n\nPlot the slope\n\n**Objective:** Fit a line"
                              "\n\nMode: read")
    assert cell.source == PLOT
    kinds = [(output.output_type, output.get("name") or sorted(output.get("data", {})))
             for output in cell.outputs]
    assert kinds == [("stream", "stdout"), ("display_data", ["image/png", "text/plain"]),
                     ("display_data", ["application/json", "text/plain"])]
    assert cell.outputs[2].data["application/json"] == {"slope": 1.0}


def test_an_error_run_shows_the_error_in_the_notebook(tmp_path: Path) -> None:
    code = "print('start')\nraise ValueError('bad fit')\n"
    folder, result = ran_folder(code, tmp_path)
    artifacts = write_artifacts(folder, code=code, outcome=result)
    assert artifacts.error is not None
    assert (artifacts.error["type"], artifacts.error["line"]) == ("ValueError", 2)
    assert "bad fit" in (folder / "stderr.log").read_text()
    assert artifacts.notebook is not None
    [cell] = nbformat.read(artifacts.notebook, as_version=4).cells
    error = next(output for output in cell.outputs if output.output_type == "error")
    assert (error.ename, error.evalue) == ("ValueError", "bad fit")
    assert json.loads(artifacts.metadata.read_text())["exit_reason"] == "error"


def test_planted_symlinks_are_never_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text('{"password": "hunter2"}')
    outside_png = tmp_path / "outside.png"
    outside_png.write_bytes(b"\x89PNG\r\n\x1a\nsecret")
    outside_log = tmp_path / "outside.log"
    outside_log.write_text("keep me")
    folder = tmp_path / "run"
    (folder / "figures").mkdir(parents=True)
    (folder / "results.json").symlink_to(secret)
    (folder / "error.json").symlink_to("/etc/shadow")
    (folder / "figures" / "figure_1.png").symlink_to(outside_png)
    (folder / "figures" / "figure_2.png").write_bytes(b"not a png")
    (folder / "stdout.log").symlink_to(outside_log)
    artifacts = write_artifacts(folder, code="pass\n", outcome=outcome("hello\n"))
    assert artifacts.results == {} and artifacts.error is None and artifacts.figures == []
    assert "results.json: symlink not followed" in artifacts.notes
    assert "error.json: symlink not followed" in artifacts.notes
    assert "figures/figure_1.png: symlink not followed" in artifacts.notes
    assert "figures/figure_2.png: not a PNG image" in artifacts.notes
    assert outside_log.read_text() == "keep me"
    assert not (folder / "stdout.log").is_symlink()
    assert (folder / "stdout.log").read_text() == "hello\n"
    assert "hunter2" not in artifacts.metadata.read_text()


def test_a_symlinked_figures_folder_is_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "figure_1.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "figures").symlink_to(elsewhere)
    artifacts = write_artifacts(folder, code="pass\n", outcome=outcome())
    assert artifacts.figures == []
    assert any("figures: not a directory" in note for note in artifacts.notes)


@pytest.mark.parametrize(("content", "note"), [
    (b"{not json", "results.json is not valid JSON"),
    (b"[1, 2]", "results.json holds a list, not an object"),
    (b" " * (MAX_RESULTS_BYTES + 1), f"over the {MAX_RESULTS_BYTES} byte limit"),
])
def test_unusable_results_are_noted_not_raised(tmp_path: Path, content: bytes,
                                               note: str) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "results.json").write_bytes(content)
    os.mkfifo(folder / "error.json")  # would block a plain open()
    artifacts = write_artifacts(folder, code="pass\n", outcome=outcome())
    assert any(note in item for item in artifacts.notes), artifacts.notes
    assert "error.json: not a regular file" in artifacts.notes


def test_without_nbformat_there_is_no_notebook_and_a_note(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.setitem(sys.modules, "nbformat", None)
    folder = tmp_path / "run"
    artifacts = write_artifacts(folder, code="pass\n", outcome=outcome(),
                                  skipped=["big.bin: over the collection limit"])
    assert artifacts.notebook is None and not (folder / "notebook.ipynb").exists()
    assert artifacts.notes[0] == "big.bin: over the collection limit"
    assert "nbformat is not installed" in artifacts.notes[1]
    assert json.loads(artifacts.metadata.read_text())["notebook"] is False
