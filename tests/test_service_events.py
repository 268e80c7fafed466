"""``GET /api/v1/events`` over real HTTP: run events and approval changes in store order,
from this server and from a CLI process sharing the home, resumed exactly after
``Last-Event-ID`` on reconnect; on both store engines."""

from __future__ import annotations

import json
from typing import Any

import httpx
from support.service import Server, cli, server_on_each_engine

WRITE = "set HCM1:SP to 0.5 A"


server = server_on_each_engine("events")


class Stream:
    """One SSE connection: messages as ``(id, event, data)``, read as they arrive."""

    def __init__(self, client: httpx.Client, **kwargs: Any) -> None:
        self._context = client.stream("GET", "/api/v1/events", **kwargs)
        self.response = self._context.__enter__()
        self._lines = self.response.iter_lines()
        self.comments: list[str] = []
        self.seen: list[tuple[str | None, str, dict[str, Any]]] = []

    def next(self) -> tuple[str | None, str, dict[str, Any]]:
        fields: dict[str, str] = {}
        for line in self._lines:
            if not line:
                if "data" in fields:
                    self.seen.append((fields.get("id"), fields.get("event", "message"),
                                      json.loads(fields["data"])))
                    return self.seen[-1]
                continue
            if line.startswith(":"):
                self.comments.append(line)
                continue
            name, _, value = line.partition(": ")
            fields[name] = value
        raise AssertionError("the stream ended")

    def until(self, stop: Any) -> list[tuple[str | None, str, dict[str, Any]]]:
        """Messages up to and including the first for which ``stop(message)`` holds."""
        seen = []
        while True:
            seen.append(self.next())
            if stop(seen[-1]):
                return seen

    def close(self) -> None:
        self._context.__exit__(None, None, None)


def paused_and_asked(seen: list[tuple[str | None, str, dict[str, Any]]]) -> bool:
    """The run paused and its approval request arrived (they commit together; the
    request is stamped first, so it may come first)."""
    return (any(kind == "approval" and data["status"] == "pending" for _, kind, data in seen)
            and any(kind == "run" and data["data"].get("to") == "awaiting_step_approval"
                    for _, kind, data in seen))


def cursor(text: str | None) -> tuple[int, int]:
    assert text is not None
    first, second = text.split("-")
    return int(first), int(second)


def test_events_arrive_in_store_order_and_resume_after_last_event_id(server: Server) -> None:
    token = server.token("olga", "operator")
    with server.client(token, timeout=httpx.Timeout(30, read=30)) as listener, \
            server.client(token) as actor:
        stream = Stream(listener)
        _, kind, ready = stream.next()
        assert kind == "ready"
        run = actor.post("/api/v1/runs", json={"query": WRITE}).json()
        first = stream.until(lambda m: paused_and_asked(stream.seen))
        stream.close()
        by_cli = cli(server, "run", "read SR:CURRENT", "--json", "--user", "carl")
        assert by_cli.returncode == 0, by_cli.stderr
        cli_run = json.loads(by_cli.stdout)["id"]
        # Reconnect after the second message: everything after it, nothing before.
        resumed = Stream(listener, headers={"Last-Event-ID": first[1][0] or ""})
        assert resumed.next()[1:] == ("ready", {"cursor": first[1][0]})
        replay = resumed.until(lambda m: m[1] == "run" and m[2]["run_id"] == cli_run
                               and m[2]["data"].get("to") == "done")
        resumed.close()
    assert cursor(ready["cursor"]) <= cursor(first[0][0])
    ours = [m for m in first if m[1] == "run"]
    assert ours[0][2]["kind"] == "submitted" and ours[0][2]["run_id"] == run["id"]
    assert ours[-1][2]["data"]["to"] == "awaiting_step_approval"
    pending = next(m[2] for m in first if m[1] == "approval")
    assert pending["approval_id"] == run["approval_id"]
    assert pending["sha256"] == run["approval"]["artifact_sha256"]
    assert pending["action"] == "channel_write" and "HCM1:SP" in pending["summary"]
    assert replay[:len(first) - 2] == first[2:]
    ids = [cursor(m[0]) for m in first + replay[len(first) - 2:]]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    event_ids = [m[2]["id"] for m in first + replay[len(first) - 2:] if m[1] == "run"]
    assert event_ids == sorted(event_ids)
    assert any(m[2]["run_id"] == cli_run and m[2]["kind"] == "submitted" for m in replay
               if m[1] == "run")


def test_a_decision_is_streamed_as_an_approval_change(server: Server) -> None:
    run = None
    with server.client(server.token("olga", "operator")) as actor:
        run = actor.post("/api/v1/runs", json={"query": WRITE}).json()
    with server.client(server.token("vera", "viewer"), timeout=30) as listener:
        stream = Stream(listener, params={"run": run["id"], "after": "0-0"})
        with server.client(server.token("anna", "approver")) as anna:
            anna.post(f"/api/v1/approvals/{run['approval_id']}/approve",
                      json={"sha256": run["approval"]["artifact_sha256"]})
        seen = stream.until(lambda m: m[1] == "run" and m[2]["data"].get("to") == "done")
        stream.close()
    assert {m[2]["run_id"] for m in seen if m[1] in ("run", "approval")} == {run["id"]}
    changes = [(m[2]["status"], m[2]["actor"], m[2]["interface"]) for m in seen
               if m[1] == "approval"]
    assert changes == [("pending", "olga", "http"), ("approved", "anna", "http")]


def test_the_stream_needs_a_viewer_and_a_well_formed_cursor(server: Server) -> None:
    with server.client() as anonymous:
        assert anonymous.get("/api/v1/events").status_code == 401
    with server.client(server.token("vera", "viewer")) as viewer:
        bad = viewer.get("/api/v1/events", headers={"Last-Event-ID": "yesterday"})
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "bad_cursor"
