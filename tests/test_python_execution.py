"""Generated Python end to end: plan step → analysis → approval → real nsjail → broker.

Every run here goes through the real sandbox (nsjail, the prepared runtime, a per-run tmpfs)
and the broker on the host, against the simulated ``mock`` machine (its setpoints persist
under the test's home) or a real EPICS IOC. Approvals go through the orchestrator and the
store, exactly as ``osprey approvals`` would decide them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from support import iocs
from support.cli import assert_exit, osprey
from support.dist import osprey_env
from support.iocs import IOC, direct_read, direct_write
from support.sandbox import SANDBOX_DIR

from osprey_core.api import Osprey
from osprey_core.config import load_config
from osprey_core.hookspecs.execution_backends import ExitReason
from osprey_core.models import Plan, PlanStep
from osprey_core.plugin_host import PluginHost, load_plugins
from osprey_core.plugins.mock_generator import MockGenerator
from osprey_core.run_machine import RunState
from osprey_core.sandbox.prepare import prepare_runtime
from osprey_core.settings import ExecutionSettings
from osprey_core.testing.fakes import FakeExecutionBackend, fake_plugin
from osprey_core.testing.openai_server import FakeOpenAIServer

ca_repeater = iocs.ca_repeater
caproto_ioc = iocs.caproto_ioc
softioc_ioc = iocs.softioc_ioc
epics_client_env = iocs.epics_client_env

LIMITS = {"channels": {
    "HCM1:SP": {"writable": True, "type": "float", "min": -5.0, "max": 5.0, "max_step": 3.0,
                "verification": "readback", "readback_channel": "HCM1:RB",
                "tolerance": {"absolute": 0.01}},
    "HCM2:SP": {"writable": True, "type": "float", "min": -5.0, "max": 5.0}}}


@pytest.fixture(scope="session")
def runtime_dir() -> Path:
    prepare_runtime(ExecutionSettings(runtime_dir=SANDBOX_DIR))
    return SANDBOX_DIR


class Lab:
    """An osprey on the simulated machine with the real sandbox, in its own home."""

    def __init__(self, root: Path, runtime_dir: Path, *, scripts: list[str] | None = None,
                 control_system: dict[str, Any] | None = None, plugins: tuple[Any, ...] = (),
                 **execution: Any) -> None:
        self.host: PluginHost = load_plugins(environ={"OSPREY_STRICT_PLUGINS": "1"})
        for plugin in plugins:  # before the osprey is built: the plugin set is then frozen
            self.host.register(plugin)
        self.generator = None
        if scripts is not None:
            self.generator = MockGenerator.scripted(scripts)
            self.host.register(fake_plugin(name="scripted_code",
                                           code_generators=[self.generator]))
            execution.setdefault("generator", "scripted")
        settings = {"home": "home",
                    "control_system": control_system or {
                        "type": "mock", "writes_enabled": True, "verify_timeout": 5.0,
                        "limits": LIMITS},
                    "archiver": {"type": "mock"},
                    "execution": {"runtime_dir": str(runtime_dir), **execution}}
        path = root / "osprey.yml"
        path.write_text(json.dumps(settings), encoding="utf-8")
        self.osprey = Osprey(host=self.host, config=load_config(self.host, path, environ={}))

    def ask(self, query: str) -> Any:
        return self.osprey.run(query, user="ana", session="s1", interface="test")

    def code(self, code: str | None, *, write: bool = False, objective: str = "test") -> Any:
        """A one-step run of ``code`` (``None``: the generator writes it for ``objective``)."""
        parameters = {"objective": objective, "code": code}
        step = PlanStep(capability="python_write" if write else "python", output="execution",
                        parameters=parameters)
        return self.osprey.run(objective, user="ana", session="s1", interface="test",
                               plan=Plan(steps=[step]))

    def reconfigure(self, root: Path, **sections: Any) -> None:
        """Replace whole configuration sections and reopen."""
        self.osprey.close()
        path = root / "osprey.yml"
        path.write_text(json.dumps({**json.loads(path.read_text()), **sections}))
        self.osprey = Osprey(host=self.host, config=load_config(self.host, path, environ={}))

    def use_llm(self, root: Path, base_url: str) -> None:
        """Point the configuration at an OpenAI-compatible endpoint."""
        self.reconfigure(root, llm={"base_url": base_url, "model": "fake-model"})

    def approve(self, approval_id: str | None) -> Any:
        return self.osprey.approve(approval_id or "", user="shift-leader", interface="test")

    def read(self, channel: str) -> Any:
        return self.ask(f"read {channel}").context["channel_read"][channel]["value"]

    def execution(self, run: Any) -> dict[str, Any]:
        return next(value for key, value in run.context.items()
                    if isinstance(value, dict) and "code_sha256" in value)


@pytest.fixture(params=["nsjail", "podman"])
def lab(request: pytest.FixtureRequest, tmp_path: Path, runtime_dir: Path) -> Iterator[Lab]:
    """The lab on each isolated backend: the same suite runs in nsjail and in podman."""
    instance = Lab(tmp_path, runtime_dir, backend=request.param)
    yield instance
    instance.osprey.close()


def test_an_analysis_request_runs_in_the_jail_and_leaves_its_artifacts(lab: Lab) -> None:
    run = lab.ask("plot SR:CURRENT over the last hour")
    assert run.state is RunState.DONE, run.error
    result = run.context["python"]
    assert result["ok"] and result["exit_reason"] == "ok"
    assert result["approval"]["reasons"] == ["allowed by policy"]  # read-only: no human
    folder = Path(result["folder"])
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["exit_reason"] == "ok"
    assert metadata["backend"] == lab.osprey.config.section("execution").backend
    assert metadata["isolated"] is True
    assert result["figures"] and all(Path(name).is_file() for name in result["figures"])
    assert Path(result["figures"][0]).read_bytes().startswith(b"\x89PNG")
    nbformat.validate(nbformat.read(result["notebook"], as_version=4))
    assert (folder / "code.py").read_text() == result["code"]
    assert json.loads((folder / "results.json").read_text()) == result["results"]
    assert result["results"], "the mock generator's plot code reports what it plotted"
    assert result["broker"]["reads"] >= 1


def test_a_failed_attempt_goes_back_to_the_generator(tmp_path: Path, runtime_dir: Path) -> None:
    lab = Lab(tmp_path, runtime_dir, scripts=[
        "raise ValueError('the fit did not converge')\n",
        "results['mean'] = read_channel('SR:CURRENT')\n"])
    run = lab.ask("compute the mean of SR:CURRENT")
    assert run.state is RunState.DONE, run.error
    result = run.context["python"]
    assert [attempt["exit_reason"] for attempt in result["attempts"]] == ["error", "ok"]
    assert "ValueError: the fit did not converge" in result["attempts"][0]["error"]
    assert any("the fit did not converge" in text for text in lab.generator.feedback_seen[1])
    assert isinstance(result["results"]["mean"], float)
    lab.osprey.close()


def test_code_a_person_wrote_is_never_regenerated(lab: Lab) -> None:
    run = lab.code("raise ValueError('wrong sign')\n")
    assert run.state is RunState.FAILED
    assert "ValueError: wrong sign after 1 attempt(s)" in (run.error or "")


def test_a_sandbox_that_cannot_start_ends_the_loop_at_once(tmp_path: Path) -> None:
    lab = Lab(tmp_path, tmp_path / "not-prepared")
    run = lab.ask("compute the mean of SR:CURRENT")
    assert run.state is RunState.FAILED
    assert "start_failed" in (run.error or "") and "osprey sandbox setup" in (run.error or "")
    assert "after 1 attempt(s)" in (run.error or "")
    lab.osprey.close()


def test_regenerated_code_that_needs_a_human_ends_the_loop(tmp_path: Path,
                                                           runtime_dir: Path) -> None:
    lab = Lab(tmp_path, runtime_dir, scripts=[
        "raise RuntimeError('first try fails')\n", "write_channel('HCM1:SP', 1.0)\n"])
    run = lab.ask("compute something about HCM1:SP")
    assert run.state is RunState.FAILED
    assert "not run" in (run.error or "") and "needs a human's approval" in (run.error or "")
    assert lab.read("HCM1:SP") == 0.0
    lab.osprey.close()


def test_an_approved_write_run_writes_exactly_the_approved_values(lab: Lab) -> None:
    code = "write_channel('HCM1:SP', 1.5)\nresults['readback'] = read_channel('HCM1:RB')\n"
    run = lab.code(code, write=True)
    assert run.state is RunState.AWAITING_STEP_APPROVAL
    approval = lab.osprey.approval(run.approval_id or "")
    assert approval.action == "python_write" and approval.artifact["code"] == code
    assert "Writes HCM1:SP = 1.5 (line 1)" in approval.summary
    assert lab.read("HCM1:SP") == 0.0  # nothing touched the machine before the approval

    done = lab.approve(run.approval_id)
    assert done.state is RunState.DONE, done.error
    assert lab.read("HCM1:SP") == 1.5
    result = lab.execution(done)
    assert result["results"]["readback"] == pytest.approx(1.5, abs=0.01)
    assert [write["status"] for write in result["broker"]["writes"]] == ["ok"]
    writes = [entry for entry in lab.osprey.audit(run_id=run.id)
              if entry.action.startswith("channel_write")]
    assert writes and all(entry.approval_id == approval.id for entry in writes)


def test_a_read_only_run_cannot_write_even_when_approved(lab: Lab) -> None:
    code = ("try:\n    write_channel('HCM1:SP', 2.0)\n"
            "except PermissionError as exc:\n    results['refused'] = str(exc)\n")
    run = lab.code(code)
    assert run.state is RunState.AWAITING_STEP_APPROVAL  # the analyzer saw a write
    done = lab.approve(run.approval_id)
    assert done.state is RunState.DONE, done.error
    result = lab.execution(done)
    assert "read-only" in result["results"]["refused"]
    assert [blocked["channel"] for blocked in result["broker"]["blocked"]] == ["HCM1:SP"]
    assert lab.read("HCM1:SP") == 0.0


def test_a_write_the_analyzer_did_not_predict_is_blocked(lab: Lab) -> None:
    # The runtime's write is predicted; a hand-made request on the broker socket is not.
    code = ("write_channel('HCM1:SP', 1.0)\n"
            "import json, socket\n"
            "raw = socket.socket(fileno=3)\n"
            "request = {'id': 99, 'op': 'write',\n"
            "           'args': {'channel': 'HCM2:SP', 'value': 2.0}}\n"
            "raw.sendall(json.dumps(request).encode() + b'\\n')\n"
            "results['answer'] = raw.recv(65536).decode()\n")
    run = lab.code(code, write=True)
    approval = lab.osprey.approval(run.approval_id or "")
    assert approval.artifact["analysis"]["write_targets"] == ["HCM1:SP"]
    done = lab.approve(run.approval_id)
    assert done.state is RunState.DONE, done.error
    answer = lab.execution(done)["results"]["answer"]
    assert "blocked" in answer and "did not predict" in answer
    assert lab.read("HCM1:SP") == 1.0
    assert lab.read("HCM2:SP") == 0.5


def test_code_other_than_the_authorized_code_cannot_write(lab: Lab) -> None:
    import asyncio

    from osprey_core.analysis import analyze
    from osprey_core.execution.models import ExecutionMode, ExecutionRequest
    from osprey_core.execution.service import (
        Authorization,
        Decision,
        ExecutionService,
        Proposal,
        code_hash,
    )

    runtime = lab.osprey.runtime
    service = ExecutionService(runtime.config, runtime.host,
                               control_system=lambda: runtime.control_system)
    code = ("try:\n    write_channel('HCM1:SP', 1.0)\n"
            "except PermissionError as exc:\n    results['refused'] = str(exc)\n")
    request = ExecutionRequest(query="test", mode=ExecutionMode.WRITE, code=code)
    approved_elsewhere = Authorization(Decision.RUN, ["approved"], "apv-x",
                                       code_hash(code + "# the approved version\n"))
    result = asyncio.run(service.execute(Proposal(request, code, analyze(code), [], "given"),
                                         approved_elsewhere))
    assert "no approval for this exact code" in result.results["refused"]
    assert lab.read("HCM1:SP") == 0.0


def test_limits_apply_to_writes_from_the_sandbox(lab: Lab) -> None:
    code = ("try:\n    write_channel('HCM1:SP', 4.9)\n"
            "except PermissionError as exc:\n    results['refused'] = str(exc)\n")
    done = lab.approve(lab.code(code, write=True).approval_id)  # max_step is 3.0
    assert done.state is RunState.DONE, done.error
    assert "step" in lab.execution(done)["results"]["refused"]
    assert lab.read("HCM1:SP") == 0.0


def test_edited_code_is_analyzed_and_approved_again(lab: Lab) -> None:
    run = lab.code("write_channel('HCM1:SP', 2.5)\n", write=True)
    first = lab.osprey.approval(run.approval_id or "")
    edited = lab.osprey.edit(first.id, {"code": "write_channel('HCM1:SP', 0.5)\n"},
                             user="ana", interface="test")
    assert edited.id != first.id and edited.artifact_sha256 != first.artifact_sha256
    assert "Writes HCM1:SP = 0.5" in edited.summary
    assert lab.osprey.approval(first.id).status == "superseded"
    with pytest.raises(Exception, match="already superseded"):
        lab.approve(first.id)
    done = lab.approve(edited.id)
    assert done.state is RunState.DONE, done.error
    assert lab.read("HCM1:SP") == 0.5


def test_malicious_llm_code_waits_for_a_human_with_its_findings(
        tmp_path: Path, runtime_dir: Path) -> None:
    with FakeOpenAIServer() as server:
        server.script("```python\nimport os\nos.system('caput HCM1:SP 5')\n```")
        lab = Lab(tmp_path, runtime_dir, generator="llm")
        lab.use_llm(tmp_path, server.base_url)
        run = lab.code(None, objective="plot the trend of HCM1:SP")
    assert run.state is RunState.AWAITING_STEP_APPROVAL
    approval = lab.osprey.approval(run.approval_id or "")
    assert "os.system" in approval.artifact["code"]
    findings = approval.artifact["analysis"]["findings"]
    assert {finding["category"] for finding in findings} >= {"dangerous", "control_write"}
    assert "shell-out runs a control-system write command" in approval.summary
    rejected = lab.osprey.reject(approval.id, user="shift-leader", interface="test")
    assert rejected.state is RunState.REJECTED
    assert not (tmp_path / "home" / "executions").exists()  # nothing ran
    lab.osprey.close()


def test_the_agentic_generator_dry_runs_in_the_real_sandbox(tmp_path: Path,
                                                           runtime_dir: Path) -> None:
    draft = "results['current'] = read_channel('SR:CURRENT')\nwrite_channel('HCM1:SP', 1)\n"
    final = "results['current'] = read_channel('SR:CURRENT')\n"
    with FakeOpenAIServer() as server:
        server.script(
            {"tool_calls": [{"function": {"name": "dry_run",
                                          "arguments": json.dumps({"code": draft})}}]},
            {"tool_calls": [{"function": {"name": "submit",
                                          "arguments": json.dumps({"code": final})}}]})
        lab = Lab(tmp_path, runtime_dir, generator="agentic")
        lab.use_llm(tmp_path, server.base_url)
        run = lab.code(None, objective="compute the mean of SR:CURRENT")
        dry_run_report = json.loads(next(message for message in server.requests[1]["messages"]
                                     if message["role"] == "tool")["content"])
    assert run.state is RunState.DONE, run.error
    assert lab.execution(run)["code"] == final
    # The dry run really ran in the jail: it read the machine, and its write was blocked.
    assert "read-only" in json.dumps(dry_run_report), dry_run_report
    assert not dry_run_report["ok"]
    lab.osprey.close()


@pytest.mark.exercises_hook("register_execution_backends")
def test_a_generator_that_repeats_failed_code_ends_the_loop(tmp_path: Path,
                                                           runtime_dir: Path) -> None:
    failing = FakeExecutionBackend.named("always_fails", exit_reason=ExitReason.ERROR)
    lab = Lab(tmp_path, runtime_dir, backend="always_fails", max_attempts=3,
              plugins=(fake_plugin(name="failing_backend", execution_backends=[failing]),))
    run = lab.ask("compute the mean of SR:CURRENT")
    assert run.state is RunState.FAILED
    assert "the generator returned the same code again" in (run.error or "")
    [backend] = failing.instances
    assert len(backend.jobs) == 1  # the identical second proposal was not run again
    lab.osprey.close()


@pytest.mark.parametrize(("mode", "read_code_asks", "write_code_asks"), [
    ("all_code", True, True), ("control_writes", False, True), ("disabled", False, False)])
def test_approval_modes_decide_who_looks_at_code(tmp_path: Path, runtime_dir: Path, mode: str,
                                                 read_code_asks: bool,
                                                 write_code_asks: bool) -> None:
    lab = Lab(tmp_path, runtime_dir)
    lab.reconfigure(tmp_path, approval={"mode": mode})
    read = lab.code("results['i'] = read_channel('SR:CURRENT')\n")
    assert (read.state is RunState.AWAITING_STEP_APPROVAL) is read_code_asks, read.error
    write = lab.code("write_channel('HCM1:SP', 0.25)\n", write=True)
    assert (write.state is RunState.AWAITING_STEP_APPROVAL) is write_code_asks, write.error
    if not write_code_asks:  # disabled: the policy's allow authorizes this exact code
        assert write.state is RunState.DONE, write.error
        assert lab.read("HCM1:SP") == 0.25
    lab.osprey.close()


def test_the_local_backend_is_refused_for_write_mode(tmp_path: Path, runtime_dir: Path) -> None:
    lab = Lab(tmp_path, runtime_dir, backend="local")
    done = lab.approve(lab.code("write_channel('HCM1:SP', 1.0)\n", write=True).approval_id)
    assert done.state is RunState.FAILED
    assert "no isolation; write mode is refused" in (done.error or "")
    assert lab.read("HCM1:SP") == 0.0
    lab.osprey.close()


@pytest.mark.usefixtures("epics_client_env")
def test_approved_sandbox_writes_reach_a_real_ioc_within_limits(
        tmp_path: Path, runtime_dir: Path, caproto_ioc: IOC) -> None:
    channel = caproto_ioc.pv("FLOAT")
    direct_write(caproto_ioc, channel, 1.5)
    limits = {"channels": {channel: {"writable": True, "type": "float", "min": -5.0,
                                     "max": 5.0, "verification": "readback",
                                     "tolerance": {"absolute": 0.001}}}}
    lab = Lab(tmp_path, runtime_dir, control_system={
        "type": "epics", "writes_enabled": True, "limits": limits})
    try:
        # 7.0 is computed, so the analyzer cannot see it is out of limits: the broker does.
        code = (f"write_channel({channel!r}, 2.25)\n"
                f"try:\n    write_channel({channel!r}, 3.5 * 2)\n"
                "except PermissionError as exc:\n    results['refused'] = str(exc)\n"
                f"results['after'] = read_channel({channel!r})\n")
        done = lab.approve(lab.code(code, write=True).approval_id)
        assert done.state is RunState.DONE, done.error
        result = lab.execution(done)
        assert result["results"]["after"] == pytest.approx(2.25)
        assert "above" in result["results"]["refused"] or "max" in result["results"]["refused"]
        assert direct_read(caproto_ioc, channel) == pytest.approx(2.25)
    finally:
        direct_write(caproto_ioc, channel, 1.5)
        lab.osprey.close()


def test_cli_analyze_and_run_with_approval(tmp_path: Path, runtime_dir: Path, cwd: Path) -> None:
    config = tmp_path / "osprey.yml"
    config.write_text(json.dumps({
        "control_system": {"type": "mock", "writes_enabled": True, "limits": LIMITS},
        "execution": {"runtime_dir": str(runtime_dir)}}), encoding="utf-8")
    env = osprey_env(tmp_path / "home", OSPREY_CONFIG=str(config))
    script = cwd / "nudge.py"
    script.write_text("import epics as e\nw = e.caput\nwrite_channel('HCM1:SP', 0.75)\n")
    analyzed = osprey("python", "analyze", "nudge.py", "--json", env=env, cwd=cwd)
    assert_exit(analyzed, 1)
    report = json.loads(analyzed.stdout)
    assert report["writes"] and report["write_targets"] == ["HCM1:SP"]
    assert any(finding["symbol"] == "epics.caput" for finding in report["findings"])

    script.write_text("write_channel('HCM1:SP', 0.75)\nresults['done'] = True\n")
    paused = osprey("python", "run", "nudge.py", "--mode", "write", "--json", env=env, cwd=cwd)
    assert_exit(paused, 3)
    approval = json.loads(paused.stdout)["approval"]
    assert approval["artifact"]["code_sha256"]
    approved = osprey("approvals", "approve", approval["id"], env=env, cwd=cwd)
    assert_exit(approved, 0)
    check = osprey("channels", "read", "HCM1:SP", "--json", env=env, cwd=cwd)
    assert json.loads(check.stdout)["HCM1:SP"]["value"] == 0.75
