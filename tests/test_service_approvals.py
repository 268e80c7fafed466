"""Approvals over real HTTP: the exact artifact and its sha256, decisions bound to it,
roles, separation of duties, expiry, edits, and a run paused by the CLI in another
process decided through the API; on both store engines (the server and every CLI process
given the same store.url)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from support.service import Server, cli, running_server, server_on_each_engine

from osprey_core.models import AuditRecord

WRITE = "set HCM1:SP to 0.5 A"


server = server_on_each_engine("approvals")


def audit(server: Server, run_id: str) -> list[AuditRecord]:
    store = server.store()
    try:
        return store.audit(run_id=run_id)
    finally:
        store.close()


def paused(server: Server, who: str = "olga", query: str = WRITE) -> dict[str, Any]:
    with server.client(server.token(who, "operator")) as client:
        run = client.post("/api/v1/runs", json={"query": query}).json()
    assert run["state"].startswith("awaiting_"), run
    return run


def decide(server: Server, token: str, approval_id: str, verb: str = "approve",
           **body: Any) -> Any:
    with server.client(token) as client:
        return client.post(f"/api/v1/approvals/{approval_id}/{verb}", json=body)


def test_an_approval_shows_the_exact_artifact_and_what_a_decider_needs(server: Server) -> None:
    run = paused(server)
    with server.client(server.token("vera", "viewer")) as viewer:
        shown = viewer.get(f"/api/v1/approvals/{run['approval_id']}").json()
        pending = viewer.get("/api/v1/approvals", params={"status": "pending"}).json()
        of_run = viewer.get("/api/v1/approvals", params={"run": run["id"]}).json()
    assert shown["artifact"] == run["approval"]["artifact"]
    assert shown["artifact_sha256"] == run["approval"]["artifact_sha256"]
    assert shown["action"] == "channel_write" and shown["status"] == "pending"
    assert "HCM1:SP" in shown["summary"] and shown["reasons"]
    assert shown["expires_at"] and shown["requested_by"] == "olga"
    assert shown["editable"] is False and shown["changes_machine"] is True
    assert run["approval_id"] in [item["id"] for item in pending]
    assert [item["id"] for item in of_run] == [run["approval_id"]]


def test_a_viewer_cannot_decide_and_the_attempt_is_audited(server: Server) -> None:
    run = paused(server)
    sha = run["approval"]["artifact_sha256"]
    refused = decide(server, server.token("vera", "viewer"), run["approval_id"], sha256=sha)
    assert refused.status_code == 403
    assert "approver role" in refused.json()["error"]["message"]
    entry = audit(server, run["id"])[-1]
    assert (entry.action, entry.actor, entry.interface) == ("approval_refused", "vera", "http")


def test_a_stale_sha256_is_refused_and_nothing_runs(server: Server) -> None:
    run = paused(server)
    anna = server.token("anna", "approver")
    stale = decide(server, anna, run["approval_id"], sha256="0" * 64)
    assert stale.status_code == 409
    assert stale.json()["error"]["code"] == "stale_sha256"
    malformed = decide(server, anna, run["approval_id"], sha256="abc")
    assert malformed.status_code == 422
    with server.client(anna) as client:
        assert client.get(f"/api/v1/runs/{run['id']}").json()["state"] == run["state"]


def test_separation_of_duties_then_another_approver_runs_it_to_done(server: Server) -> None:
    sam = server.token("sam", "operator", "approver")
    with server.client(sam) as client:
        run = client.post("/api/v1/runs", json={"query": WRITE}).json()
    sha = run["approval"]["artifact_sha256"]
    own = decide(server, sam, run["approval_id"], sha256=sha)
    assert own.status_code == 403
    assert own.json()["error"]["code"] == "separation_of_duties"
    refused = audit(server, run["id"])[-1]
    assert (refused.action, refused.actor, refused.interface) == (
        "approval_refused", "sam", "http")
    approved = decide(server, server.token("anna", "approver"), run["approval_id"],
                      sha256=sha, reason="checked the orbit")
    assert approved.status_code == 200
    assert approved.json()["state"] == "done"
    decision = next(e for e in audit(server, run["id"]) if e.action == "approval_approved")
    assert (decision.actor, decision.interface, decision.sha256) == ("anna", "http", sha)
    again = decide(server, server.token("anna", "approver"), run["approval_id"], sha256=sha)
    assert again.status_code == 409
    assert "already approved by anna" in again.json()["error"]["message"]


def test_reject_ends_the_run_and_unknown_ids_are_404(server: Server) -> None:
    run = paused(server)
    anna = server.token("anna", "approver")
    rejected = decide(server, anna, run["approval_id"], "reject",
                      sha256=run["approval"]["artifact_sha256"], reason="not now")
    assert rejected.json()["state"] == "rejected"
    assert rejected.json()["error"] == "rejected by anna: not now"
    unknown = decide(server, anna, "apv-000000000000", sha256="0" * 64)
    assert unknown.status_code == 404
    with server.client(anna) as client:
        assert client.get("/api/v1/approvals/apv-000000000000").status_code == 404


def test_a_plan_edit_is_validated_and_asks_again(server: Server) -> None:
    run = paused(server, query="/planning read SR:CURRENT")
    assert run["state"] == "awaiting_plan_approval"
    plan, sha = run["approval"]["artifact"], run["approval"]["artifact_sha256"]
    plan["steps"][0]["parameters"]["channels"] = ["SR:CURRENT", "HCM1:SP"]
    anna = server.token("anna", "approver")
    with server.client(anna) as client:
        bad = client.post(f"/api/v1/approvals/{run['approval_id']}/edit",
                          json={"sha256": sha, "artifact": {"steps": [{"capability": "nope",
                                                                       "output": "x"}]}})
        stale = client.post(f"/api/v1/approvals/{run['approval_id']}/edit",
                            json={"sha256": "1" * 64, "artifact": plan})
        edited = client.post(f"/api/v1/approvals/{run['approval_id']}/edit",
                             json={"sha256": sha, "artifact": plan})
    assert bad.status_code == 422, bad.text
    assert bad.json()["error"]["code"] == "invalid_plan"
    assert "nope" in bad.json()["error"]["message"]
    assert stale.status_code == 409
    assert edited.status_code == 200, edited.text
    new = edited.json()["approval"]
    assert edited.json()["superseded"] == run["approval_id"]
    assert new["artifact"]["steps"][0]["parameters"]["channels"] == ["SR:CURRENT", "HCM1:SP"]
    done = decide(server, anna, new["id"], sha256=new["artifact_sha256"])
    assert done.json()["state"] == "done", done.text
    old = decide(server, anna, run["approval_id"], sha256=sha)
    assert old.status_code == 409 and "superseded" in old.json()["error"]["message"]


def test_an_expired_approval_cannot_be_approved(tmp_path: Path) -> None:
    with running_server(tmp_path / "home", OSPREY__APPROVAL__EXPIRY_SECONDS="1") as server:
        run = paused(server)
        expires = run["approval"]["expires_at"]
        while time.time() < _epoch(expires) + 0.05:
            time.sleep(0.05)  # waiting for the clock itself: nothing else to poll
        refused = decide(server, server.token("anna", "approver"), run["approval_id"],
                         sha256=run["approval"]["artifact_sha256"])
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "approval_expired"
        with server.client(server.token("anna", "approver")) as client:
            assert client.get(f"/api/v1/runs/{run['id']}").json()["state"] == "expired"


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_a_run_the_cli_paused_is_approved_through_the_api(server: Server) -> None:
    paused_by_cli = cli(server, "run", WRITE, "--json", "--user", "carl")
    assert paused_by_cli.returncode == 3, paused_by_cli.stderr
    run = json.loads(paused_by_cli.stdout)
    approved = decide(server, server.token("anna", "approver"), run["approval_id"],
                      sha256=run["approval"]["artifact_sha256"])
    assert approved.status_code == 200, approved.text
    assert approved.json()["state"] == "done"
    shown = cli(server, "runs", "show", run["id"], "--json")
    assert json.loads(shown.stdout)["state"] == "done"
    decision = next(e for e in audit(server, run["id"]) if e.action == "approval_approved")
    assert (decision.actor, decision.interface) == ("anna", "http")


def test_a_run_the_api_paused_is_approved_by_the_cli(server: Server) -> None:
    run = paused(server)
    approved = cli(server, "approvals", "approve", run["approval_id"], "--user", "carl",
                   "--json")
    assert approved.returncode == 0, approved.stderr
    with server.client(server.token("vera", "viewer")) as client:
        assert client.get(f"/api/v1/runs/{run['id']}").json()["state"] == "done"


def test_saving_ones_own_memory_is_no_duty_to_separate(server: Server) -> None:
    sam = server.token("sam", "operator", "approver")
    with server.client(sam) as client:
        run = client.post("/api/v1/runs",
                          json={"query": "remember that RF station 2 trips when warm"}).json()
        shown = client.get(f"/api/v1/approvals/{run['approval_id']}").json()
    assert shown["action"] == "memory_save" and shown["changes_machine"] is False
    own = decide(server, sam, run["approval_id"], sha256=shown["artifact_sha256"])
    assert own.status_code == 200, own.text
    assert own.json()["state"] == "done"
