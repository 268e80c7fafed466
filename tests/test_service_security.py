"""Security of ``osprey serve`` over real HTTP: the proxy header believed only from a
configured proxy, bodies over the limit refused, revoked and expired tokens refused, and
no token in any log line or error."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.service import Server, running_server

from osprey_core.service.settings import Role
from osprey_core.service.tokens import TokenStore
from osprey_core.store import RunStore

LIMIT = 4096


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("security") / "home",
                        OSPREY__SERVICE__TRUSTED_PROXIES="[127.0.0.1]",
                        OSPREY__SERVICE__PROXY_ROLES="{pat: [approver, operator]}",
                        OSPREY__SERVICE__MAX_BODY_BYTES=str(LIMIT)) as running:
        yield running


def test_a_trusted_proxy_names_the_user_and_roles_come_from_config(server: Server) -> None:
    with server.client() as client:
        pat = client.get("/api/v1/me", headers={"X-Remote-User": "pat"}).json()
        kim = client.get("/api/v1/me", headers={"X-Remote-User": "kim"}).json()
        nobody = client.get("/api/v1/me", headers={"X-Remote-User": ""})
        refused = client.post("/api/v1/runs", json={"query": "read SR:CURRENT"},
                              headers={"X-Remote-User": "kim"})
    assert pat == {"name": "pat", "roles": ["approver", "operator", "viewer"], "via": "proxy",
                   "token_id": None}
    assert kim["roles"] == ["viewer"]
    assert nobody.status_code == 401
    assert refused.status_code == 403


def test_the_proxy_header_from_any_other_peer_is_ignored(tmp_path: Path) -> None:
    with running_server(tmp_path / "home", OSPREY__SERVICE__TRUSTED_PROXIES="[10.9.8.7]",
                        OSPREY__SERVICE__PROXY_DEFAULT_ROLES="[admin]") as server:
        with server.client() as client:
            ignored = client.get("/api/v1/me", headers={"X-Remote-User": "mallory"})
        with server.client(server.token("vera", "viewer")) as client:
            token_wins = client.get("/api/v1/me", headers={"X-Remote-User": "mallory"})
    assert ignored.status_code == 401
    assert token_wins.json()["name"] == "vera"


def test_bodies_over_the_limit_are_refused_declared_or_streamed(server: Server) -> None:
    token = server.token("olga", "operator")
    big = b'{"query": "' + b"x" * LIMIT + b'"}'
    with server.client(token) as client:
        declared = client.post("/api/v1/runs", content=big,
                               headers={"content-type": "application/json"})
        streamed = client.post("/api/v1/runs", content=iter([big[:1000], big[1000:]]),
                               headers={"content-type": "application/json"})
        small = client.post("/api/v1/memory", json={"text": "fits"})
    for response in (declared, streamed):
        assert response.status_code == 413, response.text
        assert response.json()["error"]["code"] == "body_too_large"
        assert str(LIMIT) in response.json()["error"]["message"]
    assert small.status_code == 201


def test_revoked_and_expired_tokens_are_refused(server: Server) -> None:
    store = RunStore(server.home / "osprey.db")
    try:
        tokens = TokenStore(store)
        revoked, revoked_secret = tokens.create("rex", [Role.ADMIN], created_by="tests")
        _, expired_secret = tokens.create("old", [Role.ADMIN], created_by="tests",
                                          expires_in=timedelta(seconds=1),
                                          now=datetime.now(UTC) - timedelta(seconds=5))
        with server.client(revoked_secret) as client:
            assert client.get("/api/v1/me").status_code == 200
            tokens.revoke(revoked.id, actor="tests")
            assert client.get("/api/v1/me").status_code == 401
    finally:
        store.close()
    with server.client(expired_secret) as client:
        answer = client.get("/api/v1/me")
    assert answer.status_code == 401
    assert answer.json()["error"]["message"] == "the token is invalid, expired or revoked"
    with server.client() as client:
        malformed = client.get("/api/v1/me", headers={"Authorization": "Basic dXNlcg=="})
    assert malformed.status_code == 401
    assert malformed.headers["www-authenticate"].startswith("Bearer")


def test_no_token_appears_in_any_log_line_or_error(tmp_path: Path) -> None:
    with running_server(tmp_path / "home") as server:
        good = server.token("olga", "operator")
        secrets = [good, good[:-1] + ("A" if good[-1] != "A" else "B"),
                   "osp_0123456789ab_" + "z" * 43]
        answers = []
        with server.client() as client:
            for secret in secrets:
                headers = {"Authorization": f"Bearer {secret}"}
                answers += [
                    client.get("/api/v1/me", headers=headers),
                    client.get(f"/api/v1/runs?token={secret}", headers=headers),
                    client.post("/api/v1/runs", headers=headers, json={"query": secret}),
                    client.get(f"/api/v1/approvals/{secret}", headers=headers),
                    client.get("/api/v1/me", headers={"Authorization": secret}),
                    client.get(f"/nowhere/{secret}"),
                ]
        assert server.stop() == 0
        logs = server.logs()
    assert "POST /api/v1/runs" in logs  # the access log was on
    errors = [answer.text for answer in answers if answer.status_code >= 400]
    assert len(errors) > len(secrets) * 4
    for secret in secrets:
        private = secret.split("_", 2)[2]
        assert private not in logs, f"a token leaked into the log:\n{logs}"
        assert not [text for text in errors if private in text]


def test_json_logs_are_one_object_a_line_with_tokens_masked(tmp_path: Path) -> None:
    with running_server(tmp_path / "home", "--json-logs") as server:
        token = server.token("olga", "operator")
        with server.client(token) as client:
            assert client.get(f"/api/v1/me?token={token}").status_code == 200
        assert server.stop() == 0
        lines = [line for line in server.logs().splitlines() if line.startswith("{")]
    entries = [json.loads(line) for line in lines]
    access = [entry for entry in entries if entry["logger"] == "uvicorn.access"]
    assert access and all({"at", "level", "logger", "message"} <= set(e) for e in entries)
    assert any("/api/v1/me?token=osp_" in entry["message"] for entry in access)
    assert token.split("_", 2)[2] not in "\n".join(lines)
