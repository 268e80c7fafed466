"""``osprey serve`` answers over real HTTP: health, readiness and metrics, identity, the
uniform error body, channel reads, own memory, the logbook, many concurrent clients, and a
clean stop on Ctrl-C."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from support.service import Server, cli, running_server

SAMPLE = Path(__file__).resolve().parents[1] / "osprey_core/logbook/data/sample_logbook.jsonl"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("serve") / "home") as running:
        yield running


def test_health_needs_no_credentials_and_identity_needs_a_token(server: Server) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    refused = httpx.get(f"{server.url}/api/v1/me")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert refused.json()["error"]["code"] == "unauthenticated"
    token = server.token("alice", "approver")
    with server.client(token) as client:
        me = client.get("/api/v1/me").json()
    assert me["name"] == "alice"
    assert me["roles"] == ["approver", "viewer"]


def test_ctrl_c_stops_the_server_cleanly_even_with_an_event_stream_open(tmp_path: Path
                                                                        ) -> None:
    with running_server(tmp_path / "home") as running:
        with running.client(running.token("vera", "viewer"), timeout=30) as client, \
                client.stream("GET", "/api/v1/events") as stream:
            lines = stream.iter_lines()
            assert next(lines).startswith("retry:")
            assert running.stop() == 0
            assert "event: ready" in list(lines)  # and then the stream ended
        logs = running.logs()
    assert "osprey serve stopped." in logs
    assert "Traceback" not in logs and "graceful shutdown exceeded" not in logs


def test_readiness_and_metrics(server: Server) -> None:
    assert httpx.get(f"{server.url}/readyz").json() == {"status": "ready"}
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    with server.client(server.token("olga", "operator")) as client:
        run = client.post("/api/v1/runs", json={"query": "set HCM1:SP to 0.5 A"}).json()
    with server.client(server.token("vera", "viewer")) as client:
        before = client.get("/metrics")
        with server.client(server.token("anna", "approver")) as anna:
            anna.post(f"/api/v1/approvals/{run['approval_id']}/approve",
                      json={"sha256": run["approval"]["artifact_sha256"]})
        after = client.get("/metrics").text
    assert before.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "osprey_pending_approvals 1" in before.text
    assert 'osprey_runs{state="awaiting_step_approval"} 1' in before.text
    assert "osprey_pending_approvals 0" in after
    assert 'osprey_runs{state="done"} 1' in after
    assert "osprey_decision_latency_seconds_count 1" in after
    assert 'osprey_decision_latency_seconds_bucket{le="+Inf"} 1' in after
    assert "# TYPE osprey_decision_latency_seconds histogram" in after


def test_unknown_routes_and_methods_answer_in_the_uniform_shape(server: Server) -> None:
    with server.client(server.token("vera", "viewer")) as client:
        missing = client.get("/api/v1/nothing")
        wrong = client.delete("/api/v1/runs")
    assert missing.status_code == 404
    assert missing.json() == {"error": {"code": "not_found",
                                        "message": "no route GET /api/v1/nothing"}}
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


def test_channel_reads_need_a_viewer_and_a_valid_name(server: Server) -> None:
    with server.client() as anonymous:
        assert anonymous.get("/api/v1/channels/SR:CURRENT").status_code == 401
    with server.client(server.token("vera", "viewer")) as client:
        value = client.get("/api/v1/channels/SR:CURRENT").json()
        bad = client.get("/api/v1/channels/no such channel!")
        missing = client.get("/api/v1/channels/NO:SUCH:CHANNEL")
    assert value["channel"] == "SR:CURRENT" and value["units"] == "mA"
    assert isinstance(value["value"], float) and value["severity"] == "NO_ALARM"
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_channel"
    assert missing.status_code == 502
    assert "NO:SUCH:CHANNEL" in missing.json()["error"]["message"]


def test_memory_is_the_callers_own(server: Server) -> None:
    with server.client(server.token("vera", "viewer")) as viewer:
        assert viewer.get("/api/v1/memory").status_code == 403
    with server.client(server.token("olga", "operator")) as olga, \
            server.client(server.token("otto", "operator")) as otto:
        saved = olga.post("/api/v1/memory", json={"text": "BPM 3 reads 0.2 mm high",
                                                  "tags": ["bpm"]})
        assert saved.status_code == 201
        entry = saved.json()
        assert [item["id"] for item in olga.get("/api/v1/memory").json()] == [entry["id"]]
        assert olga.get("/api/v1/memory", params={"q": "BPM"}).json()[0]["score"] > 0
        assert otto.get("/api/v1/memory").json() == []
        assert otto.get(f"/api/v1/memory/{entry['id']}").status_code == 404
        assert otto.delete(f"/api/v1/memory/{entry['id']}").status_code == 404
        assert olga.get(f"/api/v1/memory/{entry['id']}").json()["text"] == entry["text"]
        assert olga.delete(f"/api/v1/memory/{entry['id']}").json()["id"] == entry["id"]
        assert olga.get("/api/v1/memory").json() == []
        empty = olga.post("/api/v1/memory", json={"text": " "})
    assert empty.status_code == 400 and empty.json()["error"]["code"] == "refused"
    listed = cli(server, "memory", "list", "--user", "olga", "--json")
    assert json.loads(listed.stdout) == []


def test_logbook_search_and_ask_through_the_logbook_facade(server: Server) -> None:
    ingested = cli(server, "logbook", "ingest", "--adapter", "jsonl", "--location",
                   str(SAMPLE), "--source", "als", "--no-embed")
    assert ingested.returncode == 0, ingested.stderr
    with server.client(server.token("vera", "viewer")) as client:
        found = client.get("/api/v1/logbook/search", params={
            "q": "PSS interlock", "mode": "keyword", "author": "Grace Kim", "limit": 3}).json()
        answer = client.post("/api/v1/logbook/ask", json={
            "question": "What happened with the PSS interlock on beamline 9.3.1?"}).json()
        bad = client.get("/api/v1/logbook/search", params={"q": "x", "since": "someday"})
    assert found["mode"] == "keyword" and found["hits"]
    assert {hit["author"] for hit in found["hits"]} == {"Grace Kim"}
    assert "als/100001" in [hit["id"] for hit in found["hits"]]
    assert "als/100001" in answer["used"]
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_filter"


def test_many_concurrent_clients_each_run_ends_where_it_should(server: Server) -> None:
    """Runs that overlap (sandboxed analysis takes a while) all finish: without the
    service's run lock, a run triggered during another's transition stays 'received'."""
    olga, anna = server.token("olga", "operator"), server.token("anna", "approver")

    def analyse(index: int) -> str:
        with server.client(olga) as client:
            return client.post("/api/v1/runs", json={
                "query": "plot SR:CURRENT over the last 1 hours",
                "session": f"calc-{index}"}).json()["state"]

    def submit_and_approve(index: int) -> tuple[str, str]:
        with server.client(olga) as client:
            run = client.post("/api/v1/runs", json={"query": "set HCM1:SP to 0.5 A",
                                                    "session": f"load-{index}"}).json()
        with server.client(anna) as client:
            decided = client.post(f"/api/v1/approvals/{run['approval_id']}/approve",
                                  json={"sha256": run["approval"]["artifact_sha256"]})
        return run["state"], decided.json()["state"]

    with ThreadPoolExecutor(max_workers=12) as pool:
        analyses = [pool.submit(analyse, index) for index in range(3)]
        writes = list(pool.map(submit_and_approve, range(8)))
    assert [future.result() for future in analyses] == ["done"] * 3
    assert writes == [("awaiting_step_approval", "done")] * 8


def test_every_api_route_refuses_the_unauthenticated_and_the_wrong_role(server: Server) -> None:
    schema = httpx.get(f"{server.url}/openapi.json").json()
    routes = [(method.upper(), path) for path, item in schema["paths"].items()
              for method in item if path.startswith("/api/v1/") or path == "/metrics"]
    assert len(routes) >= 20
    viewer = server.token("vera", "viewer")
    for method, path in routes:
        url = path.replace("{name}", "SR:CURRENT").replace("{run_id}", "run-1").replace(
            "{approval_id}", "apv-1").replace("{entry_id}", "mem-1")
        with server.client() as anonymous:
            refused = anonymous.request(method, url)
        assert refused.status_code == 401, (method, path, refused.text)
        assert refused.json()["error"]["code"] == "unauthenticated"
        assert refused.headers["www-authenticate"].startswith("Bearer")
    sha = "0" * 64
    needs_more = [("POST", "/api/v1/runs", {"query": "read SR:CURRENT"}),
                  ("POST", "/api/v1/runs/run-1/resume", {}),
                  ("POST", "/api/v1/runs/run-1/cancel", {}),
                  ("GET", "/api/v1/memory", None), ("POST", "/api/v1/memory", {"text": "x"}),
                  ("GET", "/api/v1/memory/mem-1", None), ("DELETE", "/api/v1/memory/mem-1", None),
                  ("POST", "/api/v1/approvals/apv-1/approve", {"sha256": sha}),
                  ("POST", "/api/v1/approvals/apv-1/reject", {"sha256": sha}),
                  ("POST", "/api/v1/approvals/apv-1/edit", {"sha256": sha, "artifact": {}})]
    assert {(method, path.replace("run-1", "{run_id}").replace("apv-1", "{approval_id}")
             .replace("mem-1", "{entry_id}")) for method, path, _ in needs_more} <= set(routes)
    with server.client(viewer) as client:
        for method, url, body in needs_more:
            answer = client.request(method, url, json=body)
            assert answer.status_code == 403, (method, url, answer.text)
            assert answer.json()["error"]["code"] == "forbidden"
