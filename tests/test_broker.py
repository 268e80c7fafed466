"""The broker: the sandbox's only route to the control system, and its write rules.

Code runs through the real bootstrap in a subprocess and talks to the broker over a real
socket pair. Outcomes are checked on the machine itself: the simulated ``mock`` machine
read through its own control system, and a real EPICS IOC read with caproto's own client.
"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from typing import Any

import pytest
from support import iocs
from support.bootstrap import Ran, mock_machine, run_code, sha256
from support.iocs import IOC, direct_read, direct_write

from osprey_core.control.system import ControlSystem
from osprey_core.execution.models import ExecutionMode
from osprey_core.sandbox.broker import Broker, BrokerPolicy

ca_repeater = iocs.ca_repeater
softioc_ioc = iocs.softioc_ioc
caproto_ioc = iocs.caproto_ioc
epics_client_env = iocs.epics_client_env

CATCH = """
def attempt(channel, value):
    try:
        return write_channel(channel, value)
    except WriteBlocked as exc:
        assert isinstance(exc, PermissionError)
        return {"blocked": exc.reason, "message": str(exc)}
"""


def approved(code: str, *, allowed: frozenset[str] | None = frozenset({"HCM1:SP"}),
             **changes: Any) -> BrokerPolicy:
    """A write run whose exact code was approved (``changes`` spoil it)."""
    values: dict[str, Any] = {"mode": ExecutionMode.WRITE, "code_sha256": sha256(code),
                              "approved_sha256": sha256(code), "approval_id": "apv-1",
                              "allowed_writes": allowed, "run_id": "run-1", "actor": "ana"}
    return BrokerPolicy(**{**values, **changes})


class Audit(list[tuple[str, dict[str, Any]]]):
    def __call__(self, action: str, details: dict[str, Any]) -> None:
        self.append((action, details))

    def actions(self) -> list[str]:
        return [action for action, _ in self]


async def serve(code: str, root: Path, control: ControlSystem, policy: BrokerPolicy,
                audit: Audit | None = None, channel: str = "HCM1:SP", **options: Any
                ) -> tuple[Ran, Any]:
    """Run ``code`` with a broker; return the run and ``channel``'s value afterwards."""
    broker = Broker(control, None, policy, audit, **options)
    try:
        ran = await run_code(code, root, broker=broker)
        return ran, (await control.read(channel)).value
    finally:
        await control.close()


def on_mock(code: str, root: Path, policy: BrokerPolicy, audit: Audit | None = None,
            **control_system: Any) -> tuple[Ran, Any]:
    control, _ = mock_machine(root, **control_system)
    return asyncio.run(serve(CATCH + code, root, control, policy, audit))


# -- the mock machine ---------------------------------------------------------------------

def test_a_read_only_run_cannot_write(tmp_path: Path) -> None:
    code = CATCH + "results['write'] = attempt('HCM1:SP', 1.5)\n"
    audit = Audit()
    ran, value = on_mock(code, tmp_path, BrokerPolicy(ExecutionMode.READ, sha256(code),
                                                      sha256(code), run_id="run-1"), audit)
    assert ran.results()["write"] == {
        "blocked": "read_only_run", "message": "write to HCM1:SP blocked: read-only run"}
    assert value == 0.0
    assert ran.report is not None and ran.report.writes == []
    assert ran.report.blocked == [{"channel": "HCM1:SP", "requested": 1.5, "status": "blocked",
                                   "reason": "read_only_run", "message": "read-only run",
                                   "by": "broker"}]
    assert audit.actions() == ["sandbox_write_blocked", "sandbox_broker_summary"]
    blocked = audit[0][1]
    assert (blocked["run_id"], blocked["code_sha256"], blocked["reason"]) == (
        "run-1", sha256(code), "read_only_run")
    assert audit[1][1]["blocked"] == 1


def test_an_approved_write_run_writes_exactly_the_approved_values(tmp_path: Path) -> None:
    code = "results['write'] = write_channel('HCM1:SP', 1.5)\n"
    ran, value = on_mock(code, tmp_path, approved(CATCH + code))
    assert ran.returncode == 0, ran.stderr
    write = ran.results()["write"]
    assert (write["status"], write["requested"], write["verified"]) == ("ok", 1.5, True)
    assert write["readback"]["channel"] == "HCM1:RB"
    assert value == 1.5
    assert ran.report is not None and ran.report.blocked == []
    assert [(w["channel"], w["requested"], w["status"]) for w in ran.report.writes] == [
        ("HCM1:SP", 1.5, "ok")]


def test_a_write_the_analyzer_did_not_predict_is_blocked(tmp_path: Path) -> None:
    code = ("results['mode'] = attempt('SR:MODE', 'Shutdown')\n"
            "results['hcm'] = attempt('HCM1:SP', 1.0)['status']\n")
    ran, value = on_mock(code, tmp_path, approved(CATCH + code))
    assert ran.results() == {"mode": {"blocked": "unpredicted_write", "message":
                                      "write to SR:MODE blocked: write the analyzer did not "
                                      "predict"}, "hcm": "ok"}
    assert value == 1.0


@pytest.mark.parametrize("approval", [None, sha256("write_channel('HCM1:SP', 1.5)\n")])
def test_code_other_than_the_approved_code_cannot_write(tmp_path: Path,
                                                        approval: str | None) -> None:
    code = "results['write'] = attempt('HCM1:SP', 1.5)\n"
    ran, value = on_mock(code, tmp_path, approved(CATCH + code, approved_sha256=approval))
    assert ran.results()["write"]["blocked"] == "not_approved"
    assert "no approval for this exact code" in ran.results()["write"]["message"]
    assert value == 0.0


def test_without_predicted_channels_any_channel_may_be_tried(tmp_path: Path) -> None:
    code = ("results['hcm'] = attempt('HCM1:SP', -2.0)['status']\n"
            "results['other'] = attempt('QF1:SP', 1.0)\n")
    ran, value = on_mock(code, tmp_path, approved(CATCH + code, allowed=None))
    assert ran.results()["hcm"] == "ok" and value == -2.0
    assert ran.results()["other"]["blocked"] == "unlisted_channel"  # the limits database


@pytest.mark.parametrize(("value", "reason"), [(9.0, "above_max"), (-4.0, "step_too_large"),
                                               (float("nan"), "not_finite")])
def test_limits_apply_to_writes_from_the_sandbox(tmp_path: Path, value: float,
                                                 reason: str) -> None:
    code = f"results['write'] = attempt('HCM1:SP', float('{value}'))\n"
    ran, after = on_mock(code, tmp_path, approved(CATCH + code))
    assert ran.results()["write"]["blocked"] == reason
    assert after == 0.0
    assert ran.report is not None
    assert [(b["reason"], b["by"]) for b in ran.report.blocked] == [(reason, "control_system")]


def test_writes_disabled_in_the_config_block_sandbox_writes(tmp_path: Path) -> None:
    code = "results['write'] = attempt('HCM1:SP', 1.0)\n"
    ran, value = on_mock(code, tmp_path, approved(CATCH + code), writes_enabled=False)
    assert ran.results()["write"]["blocked"] == "writes_disabled"
    assert value == 0.0


def test_a_batch_with_one_refused_write_writes_nothing(tmp_path: Path) -> None:
    code = ("try:\n    write_channels({'HCM1:SP': 1.0, 'SR:MODE': 'Shutdown'})\n"
            "except WriteBlocked as exc:\n"
            "    results['error'] = [exc.reason, str(exc), exc.result]\n"
            "results['pairs'] = write_channels([('HCM1:SP', 0.5), ('HCM1:SP', 1.0)])\n")
    ran, value = on_mock(code, tmp_path, approved(CATCH + code))
    reason, message, outcome = ran.results()["error"]
    assert reason == "unpredicted_write" and "nothing was written" in message
    assert [item["reason"] for item in outcome] == ["skipped", "unpredicted_write"]
    assert [item["status"] for item in ran.results()["pairs"]] == ["ok", "ok"]
    assert value == 1.0


# -- a child that misbehaves ----------------------------------------------------------------

RAW = """
import json, os, socket
sock = socket.socket(fileno=int(os.environ["OSPREY_BROKER_FD"]))
replies = sock.makefile("rb")

def ask(data):
    sock.sendall(data)
    return json.loads(replies.readline())
"""

MALFORMED = RAW + """
requests = [b"not json", b"[1, 2]", b'{"id": 1, "op": "format_disk"}',
            b'{"id": 2, "op": "read", "args": []}',
            b'{"id": 3, "op": "read", "args": {"channel": 5}}',
            b'{"id": 4, "op": "write", "args": {"channel": "HCM1:SP"}}',
            b'{"id": 5, "op": "read", "args": {"channel": "SR:ENERGY", "timeout": -1}}',
            b"\\xff\\xfe", b'{"id": 6, "op": "read_many", "args": {"channels": []}}',
            b'{"id": 7, "op": "archiver", "args": {"channels": ["SR:ENERGY"], "start": 1}}',
            b"x" * 3_000_000,
            b'{"id": 8, "op": "read", "args": {"channel": "SR:ENERGY"}}']
results["answers"] = [ask(request + b"\\n") for request in requests]
"""


def test_malformed_requests_get_error_answers_and_the_host_carries_on(tmp_path: Path) -> None:
    policy = BrokerPolicy(ExecutionMode.READ, sha256(MALFORMED))
    control, _ = mock_machine(tmp_path)
    ran, _ = asyncio.run(serve(MALFORMED, tmp_path, control, policy))
    assert ran.returncode == 0, ran.stderr
    *refused, last = ran.results()["answers"]
    assert [(answer["id"], answer["error"]["kind"]) for answer in refused] == [
        (None, "protocol"), (None, "protocol"), (1, "protocol"), (2, "protocol"),
        (3, "protocol"), (4, "protocol"), (5, "protocol"), (None, "protocol"),
        (6, "protocol"), (7, "unavailable"), (None, "limit")]
    assert "unknown operation 'format_disk'" in refused[2]["error"]["message"]
    assert "over 1048576 bytes" in refused[-1]["error"]["message"]
    assert (last["id"], last["ok"], last["result"]["value"]) == (8, True, 1.9)
    assert ran.report is not None and ran.report.error_count == 11
    assert ran.report.writes == [] and ran.report.blocked == []


def test_calls_past_the_limit_are_refused(tmp_path: Path) -> None:
    code = ("for n in range(5):\n    try:\n        read_channel('SR:ENERGY')\n"
            "        results[n] = 'ok'\n    except BrokerError as exc:\n"
            "        results[n] = str(exc)\n")
    control, _ = mock_machine(tmp_path)
    policy = BrokerPolicy(ExecutionMode.READ, sha256(code))
    ran, _ = asyncio.run(serve(code, tmp_path, control, policy, max_calls=3))
    assert list(ran.results().values()) == ["ok"] * 3 + ["more than 3 calls in one run"] * 2


def test_a_child_dying_mid_request_ends_the_session(tmp_path: Path) -> None:
    code = RAW + ("sock.sendall(b'{\"id\": 1, \"op\": \"read\", \"args\": {\"channel\": "
                  "\"SR:ENERGY\"}}\\n{\"id\": 2, \"op\": \"re')\nos._exit(7)\n")
    control, _ = mock_machine(tmp_path)
    ran, _ = asyncio.run(serve(code, tmp_path, control,
                               BrokerPolicy(ExecutionMode.READ, sha256(code))))
    assert ran.returncode == 7  # and run_code saw serve() end by itself
    assert ran.report is not None and ran.report.calls == 1


def test_a_failing_audit_is_reported_and_the_write_stays_blocked(tmp_path: Path) -> None:
    def broken(action: str, details: dict[str, Any]) -> None:
        raise OSError("audit log unavailable")

    code = "results['write'] = attempt('HCM1:SP', 1.0)\n"
    control, _ = mock_machine(tmp_path)
    broker_policy = BrokerPolicy(ExecutionMode.READ, sha256(CATCH + code))
    ran, value = asyncio.run(serve(CATCH + code, tmp_path, control, broker_policy,
                                   broken))  # type: ignore[arg-type]
    assert ran.results()["write"]["blocked"] == "read_only_run" and value == 0.0
    assert ran.report is not None
    assert "could not audit sandbox_write_blocked: OSError" in ran.report.errors[0]


def test_a_broker_serves_one_run() -> None:
    broker = Broker(None, None, BrokerPolicy(ExecutionMode.READ, "0"))  # type: ignore[arg-type]
    fd = broker.open()
    with pytest.raises(RuntimeError, match="already open"):
        broker.open()
    report = asyncio.run(broker.close())
    assert report.calls == 0
    with pytest.raises(OSError):
        import os
        os.fstat(fd)  # the host's copy of the child's end is closed


# -- a real EPICS IOC ---------------------------------------------------------------------

needs_epics = pytest.mark.skipif(
    not all(importlib.util.find_spec(name) for name in ("epics", "caproto", "softioc")),
    reason="needs pyepics, caproto and pythonSoftIOC")


@pytest.fixture
def ioc(softioc_ioc: IOC, epics_client_env: dict[str, str]) -> IOC:
    direct_write(softioc_ioc, softioc_ioc.pv("AO"), 1.0)
    direct_write(softioc_ioc, softioc_ioc.pv("LONG"), 7)
    return softioc_ioc


def on_ioc(ioc: IOC, code: str, root: Path, policy: BrokerPolicy) -> Ran:
    from osprey_core.control.epics import EpicsConnector, EpicsSettings
    from osprey_core.control.limits import LimitsConfig, LimitsDatabase

    connector = EpicsConnector(EpicsSettings(addr_list=[ioc.address], auto_addr_list=False),
                               connection_timeout=2.0, read_timeout=2.0, write_timeout=3.0)
    limits = LimitsDatabase(LimitsConfig.model_validate({"channels": {
        ioc.pv("AO"): {"writable": True, "min": -5, "max": 5, "verification": "readback",
                       "tolerance": {"absolute": 0.001}},
        ioc.pv("LONG"): {"writable": True}}}))
    control = ControlSystem(connector, limits, writes_enabled=True, verify_timeout=2.0)
    ran, _ = asyncio.run(serve(CATCH + code, root, control, policy, channel=ioc.pv("AO")))
    return ran


@needs_epics
def test_on_an_ioc_a_read_only_run_reads_but_cannot_write(ioc: IOC, tmp_path: Path) -> None:
    pv = ioc.pv("AO")
    code = f"results['before'] = read_channel('{pv}')\nresults['w'] = attempt('{pv}', 2.5)\n"
    ran = on_ioc(ioc, code, tmp_path, BrokerPolicy(ExecutionMode.READ, sha256(CATCH + code)))
    assert ran.results()["before"] == 1.0
    assert ran.results()["w"]["blocked"] == "read_only_run"
    assert direct_read(ioc, pv) == 1.0


@needs_epics
def test_on_an_ioc_an_approved_run_writes_exactly_its_values(ioc: IOC, tmp_path: Path) -> None:
    pv = ioc.pv("AO")
    code = (f"write_channel('{pv}', 2.5)\n"
            f"results['w'] = write_channel('{pv}', 3.25)\n"
            f"results['other'] = attempt('{ioc.pv('LONG')}', 9)\n"
            f"results['high'] = attempt('{pv}', 7.5)\n")
    ran = on_ioc(ioc, code, tmp_path, approved(CATCH + code, allowed=frozenset({pv})))
    assert ran.returncode == 0, ran.stderr
    assert (ran.results()["w"]["status"], ran.results()["w"]["verified"]) == ("ok", True)
    assert ran.results()["other"]["blocked"] == "unpredicted_write"
    assert ran.results()["high"]["blocked"] == "above_max"
    assert direct_read(ioc, pv) == 3.25
    assert direct_read(ioc, ioc.pv("LONG")) == 7
    assert ran.report is not None
    assert [(w["requested"], w["status"]) for w in ran.report.writes] == [
        (2.5, "ok"), (3.25, "ok"), (7.5, "blocked")]


# -- hostile arguments from the jail ---------------------------------------------------------

@pytest.mark.parametrize("value", [10 ** 400, -(10 ** 400), float("nan"), float("inf"), "5",
                                   True, 0])
def test_a_timeout_beyond_any_float_is_a_protocol_refusal(value: Any) -> None:
    from osprey_core.sandbox import broker

    with pytest.raises(broker._Refused, match="'timeout' must be a positive number"):
        broker._timeout({"timeout": value})


@pytest.mark.parametrize("value", [10 ** 400, 1e300, -1, float("nan")])
def test_a_start_too_far_back_is_a_protocol_refusal(value: Any) -> None:
    from datetime import UTC, datetime

    from osprey_core.sandbox import broker

    with pytest.raises(broker._Refused, match="ISO 8601 time or seconds before now"):
        broker._moment(value, datetime.now(UTC), "start")


def test_a_blocked_value_the_store_cannot_hold_is_reported_and_audited_safely(
        tmp_path: Path) -> None:
    import json

    control, _ = mock_machine(tmp_path)
    audit = Audit()
    broker = Broker(control, None, BrokerPolicy(ExecutionMode.READ, "a", "a", run_id="r"),
                    audit)
    entry = broker._block("HCM1:SP", "bad \udcff text", "read_only_run", "read-only run")
    json.dumps(entry, ensure_ascii=False).encode("utf-8")  # storable: no lone surrogate left
    json.dumps(audit[0][1], ensure_ascii=False).encode("utf-8")
    assert audit.actions() == ["sandbox_write_blocked"]
