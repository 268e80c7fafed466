"""Claims with a lease, on both engines: a worker on another host is taken for dead only
once its lease has run out, the lease is renewed while the run is worked on, and recovery
re-checks the lease in the transaction that takes the run over (issue 14, item 2)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from support.orchestration import Lab, ManualClock
from support.postgres import StoreEngine, lab_on

from osprey_core.models import Plan, PlanStep, RunRecord, StepRecord, StepStatus
from osprey_core.orchestration.controller import RunController
from osprey_core.orchestration.runtime import boot_id, host_name, owner_alive
from osprey_core.run_machine import RunState
from osprey_core.store import owner_key

START = datetime(2030, 1, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def lab(lab: Lab, run_store_engine: StoreEngine) -> Iterator[Lab]:
    yield from lab_on(lab, run_store_engine)


def remote_run(lease_until: datetime | None, *, host: str = "beamline-7") -> RunRecord:
    """A run in the middle of a side-effecting step, held by a worker on another host."""
    plan = Plan(steps=[PlanStep(capability="slow_write", output="ramp"),
                       PlanStep(capability="respond", inputs=["ramp"], output="answer")])
    return RunRecord(id="run-remote", session="s", user="alice", query="slow ramp",
                     state=RunState.EXECUTING, plan=plan, plan_sha256=plan.sha256(),
                     context={"query": "slow ramp"}, owner_pid=os.getpid(),
                     owner_boot="another-hosts-boot", owner_start=1, owner_host=host,
                     lease_until=lease_until, created_at=START, updated_at=START)


def insert(osprey: object, run: RunRecord) -> None:
    store = osprey.runtime.store  # type: ignore[attr-defined]
    with store.transaction() as tx:
        tx.insert_run(run)
        tx.save_step(StepRecord(run_id=run.id, index=0, capability="slow_write",
                                status=StepStatus.RUNNING, side_effects=True,
                                idempotency_key=f"{run.id}:0"))


def test_a_remote_owner_is_alive_until_its_lease_runs_out() -> None:
    run = remote_run(START + timedelta(seconds=30))
    assert owner_alive(run, START + timedelta(seconds=29))
    assert not owner_alive(run, START + timedelta(seconds=30))
    assert not owner_alive(run.model_copy(update={"lease_until": None}), START)
    # On its own host the process itself is checked, whatever the lease says.
    here = run.model_copy(update={"owner_host": host_name(), "owner_boot": boot_id()})
    assert not owner_alive(here, START)


def test_a_run_held_on_another_host_is_recovered_only_after_its_lease(lab: Lab) -> None:
    clock = ManualClock(START)
    osprey = lab.osprey(clock=clock)
    insert(osprey, remote_run(START + timedelta(seconds=30)))

    clock.advance(29)
    osprey.refresh()
    assert osprey.get_run("run-remote").state is RunState.EXECUTING

    clock.advance(2)
    osprey.refresh()
    recovered = osprey.get_run("run-remote")
    assert recovered.state is RunState.INTERRUPTED
    assert (recovered.owner_host, recovered.owner_pid) == (host_name(), os.getpid())
    assert [step.status for step in osprey.runtime.store.steps("run-remote")] == [
        StepStatus.INDETERMINATE]


def test_recovery_rechecks_the_lease_in_its_own_transaction(
    lab: Lab, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Listed with a lapsed lease, renewed by its owner before the take-over commits:
    the run stays with its owner."""
    clock = ManualClock(START + timedelta(seconds=60))
    recoverer, worker = lab.osprey(clock=clock), lab.osprey()
    lapsed = remote_run(START + timedelta(seconds=30))
    insert(worker, lapsed)
    stale = [worker.runtime.store.get_run(lapsed.id)]
    assert worker.runtime.store.renew_lease(lapsed.id, owner_key(lapsed), RunState.EXECUTING,
                                            START + timedelta(seconds=90))
    monkeypatch.setattr(recoverer.runtime.store, "list_runs", lambda **_: stale)

    recoverer.refresh()

    held = worker.get_run(lapsed.id)
    assert (held.state, held.owner_host) == (RunState.EXECUTING, "beamline-7")
    assert held.lease_until == START + timedelta(seconds=90)
    assert "run_interrupted" not in [entry.action for entry in worker.audit(run_id=lapsed.id)]


def test_only_the_owner_renews_and_only_while_the_run_stays_in_its_state(lab: Lab) -> None:
    osprey = lab.osprey()
    run = remote_run(START + timedelta(seconds=30))
    insert(osprey, run)
    store, later = osprey.runtime.store, START + timedelta(seconds=45)
    assert not store.renew_lease(run.id, "someone/else/1@elsewhere", RunState.EXECUTING, later)
    assert not store.renew_lease(run.id, owner_key(run), RunState.RESPONDING, later)
    assert store.get_run(run.id).lease_until == START + timedelta(seconds=30)
    assert store.renew_lease(run.id, owner_key(run), RunState.EXECUTING, later)
    assert store.get_run(run.id).lease_until == later


def test_the_heartbeat_renews_the_lease_while_a_controller_works(lab: Lab) -> None:
    lab.environ["OSPREY__STORE__LEASE_SECONDS"] = "2"
    osprey = lab.osprey()
    insert(osprey, remote_run(None, host=host_name()).model_copy(
        update={"owner_boot": boot_id(), "owner_start": None}))
    store = osprey.runtime.store

    async def work() -> list[datetime]:
        seen: list[datetime] = []
        with RunController(osprey.runtime, store.get_run("run-remote")) as controller:
            controller.save("step_progress", {})  # claims the run, with a first lease
            seen.append(store.get_run("run-remote").lease_until)
            for _ in range(100):  # renewed every 2/3 s; give it up to 5 s
                await asyncio.sleep(0.05)
                if store.get_run("run-remote").lease_until != seen[0]:
                    break
            seen.append(store.get_run("run-remote").lease_until)
        return seen

    first, renewed = asyncio.run(work())
    assert renewed > first


def test_a_long_lived_instance_recovers_again_once_a_lease_has_passed(lab: Lab) -> None:
    """A worker that outlives another host's worker notices its lapsed runs by itself on
    its next call once a lease's time has passed, without an explicit refresh."""
    clock = ManualClock(START)
    osprey = lab.osprey(clock=clock)
    osprey.pending()  # the first call recovers (nothing yet)
    insert(osprey, remote_run(START + timedelta(seconds=30)))
    clock.advance(31)

    osprey.pending()  # recovered less than a lease ago: not yet looked at again
    assert osprey.get_run("run-remote").state is RunState.EXECUTING
    assert osprey._recovered_at is not None
    osprey._recovered_at -= 30  # this worker's own clock: a lease's time has passed
    osprey.pending()
    assert osprey.get_run("run-remote").state is RunState.INTERRUPTED


def test_a_worker_on_another_host_keeps_its_run_while_its_heartbeat_beats(lab: Lab) -> None:
    """A real worker process on "host-a" runs a slow side-effecting step for more than two
    leases; recovery from this host leaves it alone until the worker is killed, then takes
    it over once the lease has run out."""
    lab.configure(approval={"capabilities": {"slow_write": "disabled"}})
    lab.environ.update(OSPREY__STORE__LEASE_SECONDS="2", OSPREY_WORKER_HOST="host-a")
    runner = lab.start("run", "slow ramp the corrector")
    lab.ledger.wait_for("slow_write", process=runner)
    osprey = lab.osprey()
    [run] = osprey.runs()
    assert run.owner_host == "host-a" != host_name()

    first_lease = osprey.get_run(run.id).lease_until
    deadline = time.monotonic() + 5  # two and a half leases: only the heartbeat keeps it
    while time.monotonic() < deadline:
        osprey.refresh()
        assert osprey.get_run(run.id).state is RunState.EXECUTING
        time.sleep(0.25)
    assert osprey.get_run(run.id).lease_until > first_lease

    lab.kill(runner)
    deadline = time.monotonic() + 10
    while osprey.get_run(run.id).state is RunState.EXECUTING:
        assert time.monotonic() < deadline, "a dead worker's run was never recovered"
        osprey.refresh()
        time.sleep(0.1)
    assert osprey.get_run(run.id).state is RunState.INTERRUPTED
    assert [step.status for step in osprey.steps(run.id)] == [StepStatus.INDETERMINATE]
    assert lab.ledger.counts() == {"slow_write": 1}
