"""Runs over real HTTP: submit, list, show (steps, rendered answer, artifacts), events,
artifact downloads that cannot leave the run's folder, resume and cancel, each with its
roles and errors."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from support.service import Server, server_on_each_engine

WRITE = "set HCM1:SP to 0.5 A"


server = server_on_each_engine("runs")


def test_submitting_needs_the_operator_role(server: Server) -> None:
    with server.client() as anonymous:
        assert anonymous.post("/api/v1/runs", json={"query": "read SR:CURRENT"}
                              ).status_code == 401
    with server.client(server.token("vera", "viewer")) as viewer:
        refused = viewer.post("/api/v1/runs", json={"query": "read SR:CURRENT"})
    assert refused.status_code == 403
    assert refused.json()["error"] == {
        "code": "forbidden", "message": "this needs the operator role; vera has viewer"}


def test_a_read_request_runs_to_done_with_its_answer_rendered(server: Server) -> None:
    with server.client(server.token("olga", "operator")) as client:
        run = client.post("/api/v1/runs", json={"query": "read SR:CURRENT",
                                                "session": "shift-1"}).json()
        assert run["state"] == "done"
        assert run["user"] == "olga" and run["interface"] == "http"
        assert run["approval"] is None
        detail = client.get(f"/api/v1/runs/{run['id']}").json()
        listed = client.get("/api/v1/runs", params={"session": "shift-1"}).json()
        by_state = client.get("/api/v1/runs", params={"state": "failed"}).json()
        events = client.get(f"/api/v1/runs/{run['id']}/events").json()
    assert [step["capability"] for step in detail["steps"]] == ["channel_read", "respond"]
    assert "SR:CURRENT" in detail["answer"] and "mA" in detail["answer"]
    assert detail["artifacts"] == []
    assert [item["id"] for item in listed] == [run["id"]]
    assert run["id"] not in [item["id"] for item in by_state]
    assert events[0]["kind"] == "submitted"
    assert events[-1]["data"] == {"from": "responding", "to": "done"}
    assert [event["id"] for event in events] == sorted(event["id"] for event in events)


def test_a_write_pauses_with_the_approval_it_waits_for(server: Server) -> None:
    with server.client(server.token("olga", "operator")) as client:
        run = client.post("/api/v1/runs", json={"query": WRITE}).json()
    assert run["state"] == "awaiting_step_approval"
    assert run["approval"]["id"] == run["approval_id"]
    assert run["approval"]["artifact"]["writes"][0]["channel"] == "HCM1:SP"
    assert len(run["approval"]["artifact_sha256"]) == 64


def test_unknown_runs_and_bad_bodies_answer_in_the_uniform_shape(server: Server) -> None:
    with server.client(server.token("olga", "operator")) as client:
        missing = client.get("/api/v1/runs/run-000000000000")
        empty = client.post("/api/v1/runs", json={"query": ""})
        extra = client.post("/api/v1/runs", json={"query": "read SR:CURRENT", "user": "root"})
        not_json = client.post("/api/v1/runs", content=b"{", headers={
            "content-type": "application/json"})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    for response in (empty, extra, not_json):
        assert response.status_code == 422, response.text
        assert set(response.json()) == {"error"}
        assert response.json()["error"]["code"] == "invalid_request"
    assert "body.user" in extra.json()["error"]["message"]


def test_execution_artifacts_are_listed_and_downloaded_never_outside(server: Server) -> None:
    with server.client(server.token("olga", "operator")) as client:
        run = client.post("/api/v1/runs",
                          json={"query": "plot SR:CURRENT over the last 1 hours"}).json()
        assert run["state"] == "done", run["error"]
        artifacts = client.get(f"/api/v1/runs/{run['id']}").json()["artifacts"]
        names = {item["name"].rsplit("/", 1)[-1]: item for item in artifacts}
        assert {"figure_1.png", "notebook.ipynb", "results.json", "code.py"} <= set(names)
        figure = names["figure_1.png"]
        assert figure["media_type"] == "image/png"
        image = client.get(f"/api/v1/runs/{run['id']}/artifacts/{figure['name']}")
        assert image.status_code == 200
        assert image.headers["content-type"] == "image/png"
        assert image.content.startswith(b"\x89PNG") and len(image.content) == figure["size"]
        folder = figure["name"].split("/")[0]
        (server.home / "secret.txt").write_text("not an artifact", encoding="utf-8")
        for name in (f"{folder}/../../secret.txt", f"{folder}/%2e%2e/%2e%2e/secret.txt",
                     "../secret.txt", f"{folder}/attempt-1/../../../osprey.db",
                     "/etc/passwd", f"{folder}"):
            refused = client.get(f"/api/v1/runs/{run['id']}/artifacts/{name}")
            assert refused.status_code == 404, (name, refused.text)
            assert b"not an artifact" not in refused.content
        other = client.post("/api/v1/runs", json={"query": "read SR:CURRENT"}).json()
        foreign = client.get(f"/api/v1/runs/{other['id']}/artifacts/{figure['name']}")
        assert foreign.status_code == 404


def test_cancel_and_resume_are_for_the_submitter_or_an_admin(server: Server) -> None:
    with server.client(server.token("olga", "operator")) as olga:
        run = olga.post("/api/v1/runs", json={"query": WRITE}).json()
    with server.client(server.token("otto", "operator")) as otto:
        refused = otto.post(f"/api/v1/runs/{run['id']}/cancel", json={})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "not_your_run"
    with server.client(server.token("root-admin", "admin")) as admin:
        cancelled = admin.post(f"/api/v1/runs/{run['id']}/cancel",
                               json={"reason": "shift change"})
        again = admin.post(f"/api/v1/runs/{run['id']}/cancel")
        resumed = admin.post(f"/api/v1/runs/{run['id']}/resume", json={})
        approval = admin.get(f"/api/v1/approvals/{run['approval_id']}").json()
    assert cancelled.status_code == 200
    assert cancelled.json()["state"] == "cancelled"
    assert approval["status"] == "withdrawn"
    assert again.status_code == 409
    assert "already ended" in again.json()["error"]["message"]
    assert resumed.status_code == 409
    assert "only interrupted runs resume" in resumed.json()["error"]["message"]


def test_reading_never_waits_for_a_moving_run(server: Server) -> None:
    token = server.token("olga", "operator")
    with ThreadPoolExecutor(max_workers=1) as pool, server.client(token) as client:
        submitted = pool.submit(lambda: client.post("/api/v1/runs", json={
            "query": "plot SR:CURRENT over the last 1 hours", "session": "slow"}).json())
        with server.client(token) as reader:
            while not (moving := reader.get("/api/v1/runs", params={
                    "session": "slow", "state": "executing"}).json()):
                assert not submitted.done(), submitted.result()
            shown = reader.get(f"/api/v1/runs/{moving[0]['id']}").json()
        assert shown["state"] == "executing"  # read while the run held the lock
        assert submitted.result()["state"] == "done"
