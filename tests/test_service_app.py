"""``osprey serve`` answers over real HTTP: health without credentials, identity with a
token, the uniform error body, and a clean stop on Ctrl-C."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.service import Server, running_server


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


def test_ctrl_c_stops_the_server_cleanly(tmp_path: Path) -> None:
    with running_server(tmp_path / "home") as running:
        assert running.stop() == 0
        assert "osprey serve stopped." in running.logs()
        assert "Traceback" not in running.logs()
