"""Two ``osprey serve`` workers on one PostgreSQL database, sharing one simulated machine:
a run paused by worker A and approved through worker B continues on B, once; the event
streams of both workers see every event of it, in the same order; either worker answers
for runs the other started."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from support.postgres import shared_database
from support.service import Server, running_server
from support.store_workers import written_values
from test_service_events import Stream

WRITE = "set HCM1:SP to 0.5 A"


@pytest.fixture(scope="module")
def workers(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    """Workers A and B: one home (B's is a link to A's, so each keeps its own log file)
    and one database."""
    home = tmp_path_factory.mktemp("worker-a") / "home"
    home.mkdir()
    linked = tmp_path_factory.mktemp("worker-b") / "home"
    linked.symlink_to(home, target_is_directory=True)
    with shared_database(request.getfixturevalue("postgres_server")) as url, \
            running_server(home, OSPREY__STORE__URL=url) as first, \
            running_server(linked, OSPREY__STORE__URL=url) as second:
        yield first, second
    assert not (home / "osprey.db").exists()


def stream_until_done(server: Server, token: str, run_id: str) -> list[Any]:
    """Every message of ``run_id`` on ``server``'s stream, from the start to ``done``."""
    with server.client(token, timeout=httpx.Timeout(30, read=30)) as listener:
        stream = Stream(listener, params={"run": run_id, "after": "0-0"})
        seen = stream.until(lambda m: m[1] == "run" and m[2]["data"].get("to") == "done")
        stream.close()
    return [m for m in seen if m[1] in ("run", "approval")]


def test_paused_on_one_worker_approved_through_the_other_runs_once(
        workers: tuple[Server, Server]) -> None:
    first, second = workers
    before = len(written_values(first.home))
    with first.client(first.token("olga", "operator")) as olga:
        run = olga.post("/api/v1/runs", json={"query": WRITE}).json()
    assert run["state"] == "awaiting_step_approval"
    with second.client(second.token("anna", "approver")) as anna:
        pending = anna.get("/api/v1/approvals", params={"status": "pending"}).json()
        assert run["approval_id"] in {item["id"] for item in pending}
        decided = anna.post(f"/api/v1/approvals/{run['approval_id']}/approve",
                            json={"sha256": run["approval"]["artifact_sha256"]})
        assert decided.status_code == 200, decided.text
        again = anna.post(f"/api/v1/approvals/{run['approval_id']}/approve",
                          json={"sha256": run["approval"]["artifact_sha256"]})
        assert again.status_code == 409, again.text  # single-use, on every worker
    viewer = first.token("vera", "viewer")
    on_first = stream_until_done(first, viewer, run["id"])
    on_second = stream_until_done(second, second.token("vera", "viewer"), run["id"])
    assert on_first == on_second  # same events, same ids, same order
    approvals = [(m[2]["status"], m[2]["actor"]) for m in on_first if m[1] == "approval"]
    assert approvals == [("pending", "olga"), ("approved", "anna")]
    with first.client(viewer) as vera:
        done = vera.get(f"/api/v1/runs/{run['id']}").json()
    assert done["state"] == "done"
    assert written_values(first.home)[before:] == [0.5]  # executed exactly once


def test_each_worker_sees_the_runs_of_the_other(workers: tuple[Server, Server]) -> None:
    first, second = workers
    made = []
    for server in workers:
        with server.client(server.token("olga", "operator")) as olga:
            made.append(olga.post("/api/v1/runs", json={"query": "read SR:CURRENT"}).json())
    for server in (second, first):
        with server.client(server.token("vera", "viewer")) as vera:
            listed = {item["id"] for item in vera.get("/api/v1/runs").json()}
        assert {run["id"] for run in made} <= listed
    assert all(run["state"] == "done" for run in made), made

