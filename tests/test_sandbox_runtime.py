"""The in-jail bootstrap and runtime API, run as real subprocesses (no nsjail needed).

Reads go through the real broker to the simulated ``mock`` machine; the write rules are
in ``test_broker.py``.
"""

from __future__ import annotations

import ast
import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.bootstrap import mock_machine, run_code, sha256

from osprey_core.execution.models import ExecutionMode
from osprey_core.hookspecs.execution_backends import EXIT_CODE_CPU, EXIT_CODE_MEMORY
from osprey_core.sandbox import outputs, runtime
from osprey_core.sandbox.broker import Broker, BrokerPolicy


def run(code: str, root: Path, **options: object):
    return asyncio.run(run_code(code, root, **options))  # type: ignore[arg-type]


# -- results.json -------------------------------------------------------------------------

CONVERSIONS = """
import datetime, decimal
import numpy as np
import pandas as pd

results["array"] = np.arange(3)
results["matrix"] = np.array([[1.5, np.nan], [np.inf, 2.0]])
results["scalars"] = [np.float32(1.5), np.int64(7), np.bool_(True)]
results["when"] = datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.timezone.utc)
results["day"] = datetime.date(2024, 5, 1)
results["span"] = datetime.timedelta(minutes=2)
results["stamps"] = np.array(["2024-05-01T00:00:00.123456789"], dtype="datetime64[ns]")
results["frame"] = pd.DataFrame({"x": [1, 2], "y": [np.nan, 3.0]},
                                index=pd.date_range("2024-05-01", periods=2, tz="UTC"))
results["series"] = pd.Series([10.0, 20.0], index=["a", "b"], name="current")
results["missing"] = [pd.NaT, pd.NA, float("nan"), float("inf"), float("-inf")]
results["tags"] = {"b", "a"}
results["raw"] = [b"text", b"\\xff\\x00"]
results["price"] = decimal.Decimal("1.10")
results[3] = "key made a string"
loop = []
loop.append(loop)
results["loop"] = loop
"""


def test_results_are_converted_to_json_with_notes_for_what_was_changed(tmp_path: Path) -> None:
    ran = run(CONVERSIONS, tmp_path)
    assert ran.returncode == 0, ran.stderr
    results = ran.results()
    assert results["array"] == [0, 1, 2]
    assert results["matrix"] == [[1.5, None], ["Infinity", 2.0]]
    assert results["scalars"] == [1.5, 7, True]
    assert results["when"] == "2024-05-01T12:30:00+00:00"
    assert (results["day"], results["span"]) == ("2024-05-01", 120.0)
    assert results["stamps"] == ["2024-05-01T00:00:00.123456"]
    assert results["frame"] == {"columns": ["x", "y"],
                                "index": ["2024-05-01T00:00:00+00:00",
                                          "2024-05-02T00:00:00+00:00"],
                                "data": [[1, None], [2, 3.0]]}
    assert results["series"] == {"name": "current", "index": ["a", "b"], "data": [10.0, 20.0]}
    assert results["missing"] == [None, None, None, "Infinity", "-Infinity"]
    assert results["tags"] == ["a", "b"]
    assert results["raw"] == ["text", {"base64": "/wA="}]
    assert results["price"] == "Decimal('1.10')" and results["3"] == "key made a string"
    assert results["loop"] == ["[[...]]"]
    assert "results['price'] (Decimal) is not a JSON value: stored as text" in ran.stderr
    assert "results['loop'][0] (list) nested too deeply or contains itself" in ran.stderr


def test_results_over_the_size_limit_are_left_out_by_key_with_a_note(tmp_path: Path) -> None:
    code = ("results['small'] = 1\n"
            f"results['huge'] = ['x' * 1000] * {outputs.MAX_RESULTS_BYTES // 1000 + 10}\n"
            "results['after'] = 'kept'\n"
            "results['other'] = 'a' * 200_000\n")
    ran = run(code, tmp_path)
    results = ran.results()
    assert results["small"] == 1 and results["after"] == "kept"
    assert results["huge"].startswith("<left out:")
    assert "results['huge'] (" in ran.stderr and "results limit" in ran.stderr
    assert len(results["other"]) == outputs.MAX_STRING
    assert "text of 200000 characters cut" in ran.stderr


def test_results_that_are_not_a_dict_are_kept_under_a_key(tmp_path: Path) -> None:
    ran = run("results = [1, 2]\n", tmp_path)
    assert ran.results() == {"results": [1, 2]}
    assert "results is a list, not a dict" in ran.stderr


# -- figures, errors, exits -----------------------------------------------------------------

def test_open_figures_are_saved_as_png_without_show_warnings(tmp_path: Path) -> None:
    code = ("import matplotlib.pyplot as plt\n"
            "for n in range(3):\n    plt.figure()\n    plt.plot([0, n])\n"
            "plt.show()\nresults['backend'] = plt.get_backend()\n")
    ran = run(code, tmp_path)
    assert ran.returncode == 0, ran.stderr
    figures = sorted(path.name for path in (ran.work / "figures").iterdir())
    assert figures == ["figure_1.png", "figure_2.png", "figure_3.png"]
    assert (ran.work / "figures" / "figure_1.png").read_bytes().startswith(b"\x89PNG")
    assert ran.results()["backend"].lower() == "agg"
    assert "non-interactive" not in ran.stderr


def test_an_uncaught_exception_gives_a_trimmed_traceback_and_error_json(tmp_path: Path
                                                                        ) -> None:
    code = "results['before'] = 1\n\ndef divide(x):\n    return x / 0\n\ndivide(3)\n"
    ran = run(code, tmp_path)
    assert ran.returncode == 1
    error = json.loads((ran.work / "error.json").read_text())
    assert (error["type"], error["message"], error["line"]) == (
        "ZeroDivisionError", "division by zero", 4)
    assert "bootstrap" not in error["traceback"] and "bootstrap" not in ran.stderr
    assert 'File "code.py", line 6, in <module>' in ran.stderr
    assert "return x / 0" in error["traceback"]
    assert ran.results() == {"before": 1}  # what was computed before the error is kept


def test_a_syntax_error_names_its_line(tmp_path: Path) -> None:
    ran = run("x = 1\ny = (\n", tmp_path)
    error = json.loads((ran.work / "error.json").read_text())
    assert (ran.returncode, error["type"], error["line"]) == (1, "SyntaxError", 2)


def test_system_exit_keeps_its_code_and_the_results(tmp_path: Path) -> None:
    ran = run("import sys\nresults['done'] = True\nsys.exit(3)\n", tmp_path)
    assert ran.returncode == 3
    assert ran.results() == {"done": True}
    assert not (ran.work / "error.json").exists()


@pytest.mark.parametrize(("code", "status"), [
    ("raise MemoryError\n", EXIT_CODE_MEMORY),
    ("import os, signal\nos.kill(os.getpid(), signal.SIGXCPU)\n", EXIT_CODE_CPU),
])
def test_memory_and_cpu_limits_have_their_exit_statuses(tmp_path: Path, code: str,
                                                        status: int) -> None:
    assert run(code, tmp_path).returncode == status


def test_startup_imports_only_what_a_bare_run_needs(tmp_path: Path) -> None:
    code = ("import sys\n"
            "from osprey_core.sandbox.runtime import read_channel as imported\n"
            "results['modules'] = sorted(sys.modules)\n"
            "results['same'] = imported is read_channel\n"
            "results['runtime'] = sys.modules[imported.__module__].__file__\n")
    ran = run(code, tmp_path)
    assert ran.results()["same"] is True
    bare = subprocess.run([sys.executable, "-I", "-c", "import sys; print(sorted(sys.modules))"],
                          capture_output=True, text=True, check=True, cwd=tmp_path)
    added = set(ran.results()["modules"]) - set(ast.literal_eval(bare.stdout))
    # resource: the bootstrap sets the soft CPU limit below the hard one (exit 91 on SIGXCPU)
    assert added == {"osprey_core", "osprey_core.sandbox", "osprey_core.sandbox.runtime",
                     "resource"}
    assert ran.results()["runtime"] == str(tmp_path / "lib/osprey_core/sandbox/runtime.py")


def test_the_api_doc_names_every_function() -> None:
    for name in runtime.__all__:
        if name[0].islower():
            assert f"{name}(" in runtime.RUNTIME_API_DOC, name


# -- the runtime API against the broker ------------------------------------------------------

def test_without_a_broker_the_api_says_so(tmp_path: Path) -> None:
    code = ("try:\n    read_channel('SR:CURRENT')\n"
            "except BrokerUnavailable as exc:\n    results['error'] = str(exc)\n")
    assert "no control-system access" in run(code, tmp_path).results()["error"]


READS = """
from datetime import timedelta
results["current"] = read_channel("SR:CURRENT")
results["details"] = read_channel("SR:CURRENT", timeout=5, details=True)
results["many"] = read_channels(["SR:CURRENT", "SR:ENERGY"])
history = read_archiver("SR:CURRENT", timedelta(minutes=10))
results["history"] = [len(history["SR:CURRENT"]), type(history["SR:CURRENT"][0]).__name__]
results["listed"] = list_channels("SR:*")
for call in (read_channel, read_channels):
    try:
        call("NO SUCH")
    except ChannelError as exc:
        results[call.__name__ + " error"] = [type(exc).__name__, str(exc)]
"""


def test_reads_return_values_from_the_machine(tmp_path: Path) -> None:
    control, archiver = mock_machine(tmp_path)

    async def names(pattern: str) -> list[str]:
        import fnmatch
        return fnmatch.filter(["SR:CURRENT", "SR:ENERGY", "HCM1:SP"], pattern)

    broker = Broker(control, archiver, BrokerPolicy(ExecutionMode.READ, sha256(READS)),
                    list_channels=names)

    async def scenario():
        ran = await run_code(READS, tmp_path, broker=broker)
        energy = (await control.read("SR:ENERGY")).value
        await control.close()
        return ran, energy

    ran, energy = asyncio.run(scenario())
    assert ran.returncode == 0, ran.stderr
    results = ran.results()
    assert 0 <= results["current"] <= 550
    details = results["details"]
    assert (details["channel"], details["units"]) == ("SR:CURRENT", "mA")
    assert datetime.fromisoformat(details["timestamp"]) > datetime.now(UTC) - timedelta(
        minutes=5)
    assert results["many"]["SR:ENERGY"] == energy == 1.9
    assert results["history"][0] > 0 and results["history"][1] == "tuple"
    assert results["listed"] == ["SR:CURRENT", "SR:ENERGY"]
    for call in ("read_channel", "read_channels"):
        kind, message = results[f"{call} error"]
        assert kind == "ChannelError" and "invalid channel name 'NO SUCH'" in message
    assert ran.report is not None
    assert (ran.report.calls, ran.report.reads) == (7, 5)
    assert ran.report.channels_read == {"SR:CURRENT", "SR:ENERGY"}
    assert ran.report.writes == [] and ran.report.blocked == []
