"""The acceptance path of container deployment: ``osprey.postgresql`` + ``osprey.api`` built
locally and deployed together; a run submitted over HTTP pauses, an approver approves it
through the API, it completes, and its records are in the containerised PostgreSQL.

The first build on a fresh machine takes a few minutes (debootstrap, Debian packages, wheels
of osprey); podman keeps the images, so later runs start at ``up``."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.deploy import free_port, osprey, write_config

pytestmark = pytest.mark.skipif(shutil.which("podman") is None,
                                reason="needs podman (nox -s tests installs it)")
WRITE = "set HCM1:SP to 0.5 A"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    folder = tmp_path_factory.mktemp("stack")
    api_port, db_port = free_port(), free_port()
    config = write_config(folder, f"""\
        home: ./home
        deploy:
          project: osprey-test-stack
          deployed_services: [osprey.api, osprey.postgresql]
          services:
            osprey.api:
              ports: {{http: {api_port}}}
              config_file: {folder / "api.yml"}
              environment: {{OSPREY__CONTROL_SYSTEM__WRITES_ENABLED: "true"}}
            osprey.postgresql: {{ports: {{postgresql: {db_port}}}}}
        """)
    # the service's own config: the simulated machine with one writable corrector
    (folder / "api.yml").write_text(
        'control_system:\n  limits:\n    channels:\n'
        '      "HCM1:SP": {writable: true, type: float, min: -5.0, max: 5.0}\n')
    password = secrets.token_hex(12)
    osprey(config, "build", timeout=1200)
    try:
        up = osprey(config, "up", env={"POSTGRES_PASSWORD": password})
        yield {"config": config, "api": f"http://127.0.0.1:{api_port}", "up": up,
               "dsn": f"postgresql://osprey:{password}@127.0.0.1:{db_port}/osprey",
               "password": password}
    finally:
        osprey(config, "clean", check=False)


def in_api(stack: dict[str, object], *argv: str) -> str:
    """Run a command in the API's container; its standard output."""
    found = json.loads(osprey(stack["config"], "status", "--json").stdout)  # type: ignore[arg-type]
    api = next(c["container"] for c in found["containers"] if c["service"] == "osprey.api")
    return subprocess.run(["podman", "exec", api, *argv], capture_output=True, text=True,
                          check=True, timeout=60).stdout


def token(stack: dict[str, object], name: str, role: str) -> str:
    """A token made inside the API's container, stored in its PostgreSQL."""
    made = in_api(stack, "python3", "-m", "osprey_core", "tokens", "create", name, "--role",
                  role, "--json")
    return str(json.loads(made)["token"])


def test_the_image_holds_exactly_this_osprey(stack: dict[str, object]) -> None:
    from osprey_core.deploy.images import osprey_digest

    inside = in_api(stack, "python3", "-c", "from osprey_core.deploy.images import "
                    "osprey_digest; print(osprey_digest())")
    assert inside.strip() == osprey_digest()


@pytest.mark.timeout(1500)
def test_a_run_over_http_pauses_is_approved_and_lands_in_the_containers_postgresql(
        stack: dict[str, object]) -> None:
    import httpx
    import psycopg

    up = stack["up"]
    assert "osprey.postgresql: healthy" in up.stderr  # type: ignore[attr-defined]
    assert "osprey.api: healthy" in up.stderr  # type: ignore[attr-defined]
    olga, anna = token(stack, "olga", "operator"), token(stack, "anna", "approver")
    base = str(stack["api"])
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {olga}"},
                      timeout=30) as client:
        run = client.post("/api/v1/runs", json={"query": WRITE}).json()
    assert run.get("state") == "awaiting_step_approval", run.get("error", run)
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {anna}"},
                      timeout=30) as client:
        decided = client.post(f"/api/v1/approvals/{run['approval_id']}/approve",
                              json={"sha256": run["approval"]["artifact_sha256"]})
    assert decided.status_code == 200, decided.text
    assert decided.json()["state"] == "done"
    with psycopg.connect(str(stack["dsn"]), connect_timeout=10) as database:
        state = database.execute("SELECT state FROM runs WHERE id = %s",
                                 (run["id"],)).fetchone()
        actions = [row[0] for row in database.execute(
            "SELECT action FROM audit WHERE run_id = %s ORDER BY 1", (run["id"],))]
    assert state == ("done",)
    assert "approval_approved" in actions
    rendered = (Path(str(stack["config"])).parent / "home" / "deploy" / "osprey-test-stack"
                / "compose")
    assert not any(str(stack["password"]) in path.read_text() for path in rendered.iterdir())
