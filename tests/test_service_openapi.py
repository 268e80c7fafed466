"""The schema ``osprey serve`` publishes at ``/openapi.json`` is the one committed in
``docs/openapi.json``, so an API change is always a visible change of that file."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from support.service import running_server

from osprey_core.service.schema import dumps

COMMITTED = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"
REGENERATE = "python -m osprey_core.service.schema > docs/openapi.json"


def test_the_published_schema_is_the_committed_one(tmp_path: Path) -> None:
    with running_server(tmp_path / "home") as server:
        live = httpx.get(f"{server.url}/openapi.json", timeout=30)
    assert live.status_code == 200
    schema = live.json()
    committed = COMMITTED.read_text(encoding="utf-8")
    assert dumps(schema) == committed, (
        f"the live OpenAPI schema differs from {COMMITTED}; if the API change is meant, "
        f"regenerate it with: {REGENERATE}")
    operations = {(method.upper(), path) for path, item in schema["paths"].items()
                  for method in item}
    documented = json.loads(committed)["paths"]
    assert ("POST", "/api/v1/approvals/{approval_id}/approve") in operations
    assert schema["components"]["schemas"]["DecisionRequest"]["required"] == ["sha256"]
    assert all(path.startswith(("/api/v1/", "/v1/")) or path in
               ("/healthz", "/readyz", "/metrics") for path in documented)
