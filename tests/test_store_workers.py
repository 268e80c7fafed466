"""Several worker processes on one store, each posing as its own host (so only leases tell
them whether another is alive): approvals raced through random workers run each approved
write exactly once, and workers killed with SIGKILL at random points leave no duplicated
write and no run that is neither done nor waiting for an operator (issue 14, acceptance;
the kill test on SQLite too). The simulated machine's setpoint log is the witness."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.store_workers import Worker, machine_env, query, value_of, written_values

from osprey_core.models import StepStatus
from osprey_core.run_machine import ACTIVE, PAUSED, RunState
from osprey_core.stores.factory import open_url


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop()


def submit(pool: list[Worker], values: list[float]) -> dict[str, float]:
    """Submit one write per value, spread over the pool; approval id -> value."""
    for index, value in enumerate(values):
        pool[index % len(pool)].send({"op": "run", "query": query(value)})
    approvals = {}
    for index, value in enumerate(values):
        reply = pool[index % len(pool)].receive()
        assert reply["ok"] and reply["state"] == "awaiting_step_approval", reply
        approvals[reply["approval"]] = value
    return approvals


@pytest.mark.parametrize("count", [2, 4])
def test_approvals_raced_through_random_workers_write_exactly_once(
    count: int, home: Path, postgres_url: str, workers: list[Worker],
) -> None:
    rng = random.Random(count)
    env = machine_env(home, postgres_url)
    workers += [Worker(env, f"host-{number}") for number in range(count)]
    values = [value_of(index) for index in range(200)]
    approvals = submit(workers, values)

    # Each approval goes to two different random workers at once: one wins, one is refused.
    sent = []
    for approval in approvals:
        for worker in rng.sample(workers, 2):
            worker.send({"op": "approve", "approval": approval})
            sent.append((worker, approval))
    outcomes: dict[str, list[dict[str, object]]] = {approval: [] for approval in approvals}
    for worker, approval in sent:
        outcomes[approval].append(worker.receive())

    for approval, replies in outcomes.items():
        won = [reply for reply in replies if reply["ok"]]
        assert len(won) == 1 and won[0]["state"] == "done", (approval, replies)
        refused = next(reply for reply in replies if not reply["ok"])
        assert str(refused["error"]).startswith("ApprovalError: "), refused
    assert Counter(written_values(home)) == Counter(values)
    store = open_url(postgres_url)
    try:
        states = Counter(run.state for run in store.list_runs(limit=1000))
    finally:
        store.close()
    assert states == {RunState.DONE: 200}


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_workers_killed_at_random_points_duplicate_nothing_and_lose_no_run(
    engine: str, home: Path, workers: list[Worker], request: pytest.FixtureRequest,
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    url = request.getfixturevalue("postgres_url") if engine == "postgresql" else None
    env = machine_env(home, url, OSPREY__STORE__LEASE_SECONDS="2")
    operator = Worker(env, "operator-host")
    workers.append(operator)
    values = [value_of(index) for index in range(50)]
    approvals = list(submit([operator], values).items())

    # Five victims, each killed with SIGKILL at a random point of approving ten writes.
    for round_ in range(5):
        victim = Worker(env, f"victim-{round_}")
        workers.append(victim)
        for approval, _ in approvals[round_ * 10:(round_ + 1) * 10]:
            victim.send({"op": "approve", "approval": approval})
        for _ in range(rng.randrange(10)):
            victim.receive()
        time.sleep(rng.uniform(0, 0.01))  # a random moment, not a synchronisation
        victim.kill()

    # Leases run out after 2 s; then recovery interrupts what the victims held.
    store = open_url(url or f"sqlite:{home / 'osprey.db'}")
    try:
        deadline = time.monotonic() + 30
        while store.list_runs(states=set(ACTIVE), limit=1000):
            assert time.monotonic() < deadline, "runs still held after their leases ran out"
            assert operator.ask({"op": "refresh"})["ok"]
            time.sleep(0.2)
        runs = store.list_runs(limit=1000)
        written = Counter(written_values(home))
        assert max(written.values(), default=1) == 1, (seed, written)
        value_of_run = {run.id: float(run.query.split()[3]) for run in runs}
        print(f"seed {seed}:", Counter(str(run.state) for run in runs),
              Counter(str(step.status) for run in runs for step in store.steps(run.id)))
        for run in runs:
            assert run.state in {RunState.DONE, RunState.INTERRUPTED} | PAUSED, (seed, run)
            if run.state is RunState.DONE:
                assert written[value_of_run[run.id]] == 1, (seed, run.id)
            if run.state in PAUSED:
                assert written[value_of_run[run.id]] == 0, (seed, run.id)
            if run.state is RunState.INTERRUPTED:
                steps = store.steps(run.id)
                # A write that took effect is recorded as done (the worker died after the
                # step's commit) or in doubt (before it): never as something to run again.
                if written[value_of_run[run.id]]:
                    assert steps[0].status in {StepStatus.SUCCEEDED,
                                               StepStatus.INDETERMINATE}, (seed, steps)
                else:  # not written: not started, or stopped before the put
                    assert all(step.status is not StepStatus.SUCCEEDED
                               for step in steps[:1]), (seed, steps)

        # The operator settles each one: every run ends done, every write made once.
        for run in runs:
            reply: dict[str, object] = {"ok": True, "state": str(run.state),
                                        "approval": run.approval_id}
            if run.state is RunState.INTERRUPTED:
                in_doubt = any(step.status is StepStatus.INDETERMINATE
                               for step in store.steps(run.id))
                settled = ("applied" if written[value_of_run[run.id]] else "not_applied")
                reply = operator.ask({"op": "resume", "run": run.id,
                                      "indeterminate": settled if in_doubt else None})
                assert reply["ok"], (seed, reply)
            if reply["state"] != "done":
                approval = reply["approval"] or store.get_run(run.id).approval_id
                reply = operator.ask({"op": "approve", "approval": approval})
            assert reply["ok"] and reply["state"] == "done", (seed, run.id, reply)
        assert Counter(written_values(home)) == Counter(values), seed
    finally:
        store.close()
