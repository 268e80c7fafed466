"""PostgreSQL restarted under load (issue 14, acceptance): two ``osprey serve`` processes on
one database take runs with channel writes and their approvals from several clients while
the server is stopped and started again. During the outage every request is answered at
once with a clean 503 naming the database; afterwards both services work again without a
restart, every acknowledged run is there in the state it was acknowledged in (or moved on
from it), no run is stuck, no approved write ran twice (the simulated machine's setpoint
log), and the event stream carries on across the outage."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.postgres import PostgresServer, own_server
from support.service import Server, running_server
from support.store_workers import machine_env, query, value_of, written_values

from osprey_core.api import Osprey
from osprey_core.config import load_config
from osprey_core.hookspecs.observers import RunEvent
from osprey_core.models import StepStatus
from osprey_core.plugin_host import load_plugins
from osprey_core.run_machine import PAUSED, RunState
from osprey_core.store_errors import StoreUnavailableError

CONNECT_TIMEOUT = 2.0
#: How long the database stays away, at least (the scenario, not a synchronisation).
OUTAGE_SECONDS = 3.0
CLIENTS = 4
#: Runs the clients finish before the outage and after it.
RUNS_EACH_SIDE = 12
#: How long a client waits after a 503 before it tries again (as a real client would;
#: every submission takes a new setpoint, and they must stay inside the corrector's limits).
RETRY_SECONDS = 0.05


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    """A server of this module's own: stopping it disturbs no other test."""
    with own_server() as server:
        yield server


@dataclass
class Answer:
    """One request and how it was answered."""

    what: str
    started: float
    seconds: float
    status: int | None  # None: no HTTP answer at all
    body: Any


@dataclass
class Load:
    """Clients submitting writes and approving them through random services; what every
    run was last acknowledged as."""

    services: list[Server]
    operator: str
    approver: str
    answers: list[Answer] = field(default_factory=list)
    acknowledged: dict[str, dict[str, Any]] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)
    submitted: dict[str, float] = field(default_factory=dict)
    done: Counter[str] = field(default_factory=Counter)
    stopping: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    counter: Iterator[int] = field(default_factory=lambda: iter(range(10**6)))

    def call(self, client: httpx.Client, what: str, method: str, path: str,
             **kwargs: Any) -> Answer:
        started = time.monotonic()
        try:
            response = client.request(method, path, **kwargs)
            status, body = response.status_code, _json(response)
        except httpx.TransportError as exc:
            status, body = None, repr(exc)
        answer = Answer(what, started, time.monotonic() - started, status, body)
        with self.lock:
            self.answers.append(answer)
        if status == 503:
            time.sleep(RETRY_SECONDS)
        return answer

    def client(self, rng: random.Random) -> None:
        clients = [[service.client(token, timeout=30) for service in self.services]
                   for token in (self.operator, self.approver)]
        try:
            while not self.stopping.is_set():
                with self.lock:
                    index = next(self.counter)
                self.one_run(index, rng, *clients)
        finally:
            for client in clients[0] + clients[1]:
                client.close()

    def one_run(self, index: int, rng: random.Random, operators: list[httpx.Client],
                approvers: list[httpx.Client]) -> None:
        value = value_of(index)
        made = self.call(rng.choice(operators), "submit", "POST", "/api/v1/runs",
                         json={"query": query(value)})
        if made.status != 200:
            return
        run = made.body
        self.record(run, value)
        with self.lock:
            self.submitted[run["id"]] = made.started
        while not self.stopping.is_set():  # approve it, through any service, until answered
            approval = run["approval"]
            decided = self.call(rng.choice(approvers), "approve", "POST",
                                f"/api/v1/approvals/{approval['id']}/approve",
                                json={"sha256": approval["artifact_sha256"]})
            if decided.status == 200:
                self.record(decided.body, value)
                return
            if decided.status != 503:
                return  # refused (the run moved on in the outage): judged at the end

    def record(self, run: dict[str, Any], value: float) -> None:
        with self.lock:
            self.acknowledged[run["id"]] = run
            self.values[run["id"]] = value
            if run["state"] == "done":
                self.done["all"] += 1


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


class Events:
    """An event stream that reconnects with its last id whenever it ends."""

    def __init__(self, server: Server, token: str) -> None:
        self.server, self.token = server, token
        self.stopping = threading.Event()
        self.ids: list[str] = []
        self.runs: dict[str, set[str]] = {}
        self.connections = 0
        self.comments: list[str] = []
        self.thread = threading.Thread(target=self._listen, daemon=True)

    def _listen(self) -> None:
        last = "0-0"
        with self.server.client(self.token, timeout=httpx.Timeout(30, read=20)) as client:
            while not self.stopping.is_set():
                self.connections += 1
                try:
                    with client.stream("GET", "/api/v1/events",
                                       headers={"Last-Event-ID": last}) as response:
                        if response.status_code != 200:
                            time.sleep(0.2)  # a retry interval, as a browser's
                            continue
                        last = self._read(response.iter_lines(), last)
                except httpx.TransportError:
                    time.sleep(0.2)

    def _read(self, lines: Iterator[str], last: str) -> str:
        fields: dict[str, str] = {}
        for line in lines:
            if self.stopping.is_set():
                break
            if line.startswith(":"):
                self.comments.append(line)
            elif line:
                name, _, value = line.partition(": ")
                fields[name] = value
            elif "data" in fields:
                if fields.get("event") == "run":
                    data = json.loads(fields["data"])
                    self.runs.setdefault(data["run_id"], set()).add(
                        data["data"].get("to") or data["kind"])
                if fields.get("event") != "ready":
                    self.ids.append(fields["id"])
                last = fields.get("id", last)
                fields = {}
        return last


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_write_caught_by_the_outage_is_interrupted_in_doubt_never_run_again(
        postgres: PostgresServer, tmp_path: Path) -> None:
    """The database goes away after a write's step was durably marked running: the write
    is not made (it cannot be audited first), the call fails with the outage, and once the
    database is back the run is interrupted with the step indeterminate (this process
    still lives, but no longer works on it) for an operator to settle; the write is made
    once, after a fresh approval."""
    database = postgres.new_database()
    environ = machine_env(tmp_path / "home", postgres.url(database),
                          OSPREY__STORE__CONNECT_TIMEOUT=str(CONNECT_TIMEOUT))
    host = load_plugins(environ=environ)
    osprey = Osprey(host=host, config=load_config(host, None, environ=environ))
    try:
        paused = osprey.run(query(1.25), user="olga")
        assert paused.state is RunState.AWAITING_STEP_APPROVAL

        stopped: list[RunEvent] = []

        def vanish(event: object) -> None:  # between the step's start and its result
            if isinstance(event, RunEvent) and event.kind == "step_started" and not stopped:
                stopped.append(event)
                postgres.ctl("stop")

        osprey.observe(vanish)
        try:
            with pytest.raises(StoreUnavailableError, match="cannot reach the PostgreSQL"):
                osprey.approve(paused.approval_id or "", user="bob")
        finally:
            postgres.ctl("start")
        assert written_values(tmp_path / "home") == []

        osprey.refresh()  # any next call recovers it
        run = osprey.get_run(paused.id)
        assert run.state is RunState.INTERRUPTED
        assert [step.status for step in osprey.steps(run.id)] == [StepStatus.INDETERMINATE]
        asked = osprey.resume(run.id, user="olga", indeterminate="not_applied")
        assert asked.state is RunState.AWAITING_STEP_APPROVAL  # asked again, not re-run
        done = osprey.approve(asked.approval_id or "", user="bob")
        assert done.state is RunState.DONE
        assert written_values(tmp_path / "home") == [1.25]
    finally:
        osprey.close()
        postgres.drop_database(database)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_database_restart_under_load_fails_cleanly_and_recovers_by_itself(
        mode: str, postgres: PostgresServer, tmp_path: Path) -> None:
    database = postgres.new_database()
    url = postgres.url(database)
    settings = {"OSPREY__STORE__URL": url, "OSPREY__STORE__CONNECT_TIMEOUT": str(CONNECT_TIMEOUT),
                "OSPREY__MOCK__STATE_FILE": str(tmp_path / "mock-machine.json")}
    with ExitStack() as stack:
        services = [stack.enter_context(running_server(tmp_path / name, **settings))
                    for name in ("home-a", "home-b")]
        load = Load(services, services[0].token("olga", "operator"),
                    services[0].token("bob", "approver"))
        events = Events(services[1], services[0].token("vera", "viewer"))
        events.thread.start()
        clients = [threading.Thread(target=load.client, args=(random.Random(n),))
                   for n in range(CLIENTS)]
        for client in clients:
            client.start()
        try:
            wait_for(lambda: load.done["all"] >= RUNS_EACH_SIDE, "runs before the outage")
            outage = _restart(postgres, mode, load, services)
            wait_for(lambda: load.done["all"] >= outage["done"] + RUNS_EACH_SIDE,
                     "runs after the outage")
        finally:
            load.stopping.set()
            for client in clients:
                client.join(timeout=60)
        _check(load, services, events, outage, tmp_path, postgres.port)
        events.stopping.set()  # the stream ends when its server stops, below
    events.thread.join(timeout=30)
    postgres.drop_database(database)


def _restart(postgres: PostgresServer, mode: str, load: Load,
             services: list[Server]) -> dict[str, Any]:
    """Stop the database until every client has been refused and ``OUTAGE_SECONDS`` have
    passed, start it again, and measure how long until requests succeed."""
    done_before = load.done["all"]
    postgres.ctl("stop", mode=mode)
    down = time.monotonic()
    with httpx.Client(timeout=30) as probe:
        health = [(probe.get(f"{service.url}/healthz"), probe.get(f"{service.url}/readyz"))
                  for service in services]
    wait_for(lambda: sum(1 for answer in load.answers
                         if answer.started > down and answer.status == 503) >= 2 * CLIENTS,
             "clients refused during the outage")
    wait_for(lambda: time.monotonic() - down >= OUTAGE_SECONDS, "the outage's length")
    starting = time.monotonic()  # it may answer before pg_ctl returns
    postgres.ctl("start")
    back = time.monotonic()
    wait_for(lambda: any(answer.started > back and answer.status == 200
                         for answer in load.answers), "a request answered after the restart")
    first = min(answer.started + answer.seconds for answer in load.answers
                if answer.started > back and answer.status == 200)
    figures = {"down": down, "starting": starting, "back": back, "done": done_before,
               "recovered_after": first - back, "health": health}
    print(f"\n{mode}: down {back - down:.1f} s; first success {first - back:.2f} s after "
          "the start")
    return figures


def _check(load: Load, services: list[Server], events: Events, outage: dict[str, Any],
           tmp_path: Path, port: int) -> None:
    answers = load.answers
    # Every request was answered: success, a clean 503 naming the database, or a refusal
    # of a decision the outage overtook; never a crash, never a hang.
    for alive, ready in outage["health"]:  # up, though not ready, during the outage
        assert alive.status_code == 200 and ready.status_code == 503, (alive, ready)
        assert ready.json()["error"]["code"] == "not_ready"
    assert outage["recovered_after"] < 5  # no restart, no manual step
    failed = [answer for answer in answers if answer.status != 200]
    for answer in failed:
        assert answer.status in (503, 409), answer
        if answer.status == 503:
            error = answer.body["error"]
            assert error["code"] == "store_error", answer
            assert f"PostgreSQL store at 127.0.0.1:{port}" in error["message"], answer
        assert answer.seconds < CONNECT_TIMEOUT + 1.5, answer
    during = [answer for answer in answers if outage["down"] <= answer.started
              and answer.started + answer.seconds < outage["starting"]]
    assert not [answer for answer in during if answer.status != 503], (outage, during[:3])
    print(f"{len(answers)} requests, {Counter(answer.status for answer in answers)}; "
          f"{len(during)} during the outage, slowest "
          f"{max(answer.seconds for answer in during):.2f} s")
    for service in services:  # nothing leaked a token
        logs = service.logs()
        assert all(secret not in logs for secret in service.tokens.values())
    for answer in answers:
        assert all(secret not in str(answer.body) for secret in services[0].tokens.values())

    store = services[0].store()
    try:
        # Both services list (and so recover) first, as any caller would.
        for service in services:
            with service.client(load.operator) as client:
                assert client.get("/api/v1/runs", params={"limit": 1000}).status_code == 200
        runs = {run.id: run for run in store.list_runs(limit=1000)}
        written = Counter(written_values(tmp_path))
        assert max(written.values()) == 1, written  # no write ran twice
        states = Counter(str(run.state) for run in runs.values())
        print("runs:", states, "written:", len(written))
        for run in runs.values():  # none stuck
            assert run.state in {RunState.DONE, RunState.INTERRUPTED} | PAUSED, run
        for run_id, acked in load.acknowledged.items():  # none lost
            run, value = runs[run_id], load.values[run_id]
            if acked["state"] == "done":
                assert run.state is RunState.DONE and written[value] == 1, (acked, run)
            elif run.state is RunState.DONE:
                assert written[value] == 1, run
            elif run.state in PAUSED:
                assert written[value] == 0, run
        for run in runs.values():  # an interrupted write is never one to run again blindly
            if run.state is RunState.INTERRUPTED:
                steps = store.steps(run.id)
                if written[float(run.query.split()[3])]:  # done, or in doubt
                    assert steps[0].status in {"succeeded", "indeterminate"}, steps
                else:  # not started, stopped before the put, or in doubt
                    assert all(step.status != "succeeded" for step in steps), steps
    finally:
        store.close()
    # The stream went on (or came back) across the outage: every run acknowledged after
    # the restart is seen ending, with no message twice.
    after = [run_id for run_id, run in load.acknowledged.items()
             if run["state"] == "done" and load.submitted[run_id] > outage["back"]]
    assert after
    wait_for(lambda: all("done" in events.runs.get(run_id, set()) for run_id in after),
             "the event stream to show the runs done after the restart")
    assert len(events.ids) == len(set(events.ids))
    assert any("cannot reach the PostgreSQL store" in line for line in events.comments)
    print(f"event stream: {events.connections} connection(s), {len(events.ids)} messages")

