"""``osprey.jupyter`` deployed for real: healthy, the execution folders listed to whoever
holds the token and to nobody else, and read-only from inside the container."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.deploy import free_port, osprey, write_config

pytestmark = pytest.mark.skipif(shutil.which("podman") is None,
                                reason="needs podman (nox -s tests installs it)")


@pytest.fixture(scope="module")
def notebooks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    folder = tmp_path_factory.mktemp("jupyter")
    run_folder = folder / "home" / "executions" / "20261207T120000-run-0123456789ab"
    run_folder.mkdir(parents=True)
    (run_folder / "notebook.ipynb").write_text(json.dumps(
        {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    port = free_port()
    config = write_config(folder, f"""\
        home: ./home
        deploy:
          project: osprey-test-jupyter
          deployed_services: [osprey.jupyter]
          services:
            osprey.jupyter: {{ports: {{http: {port}}}}}
        """)
    token = secrets.token_hex(16)
    osprey(config, "build", timeout=1200)
    try:
        up = osprey(config, "up", env={"JUPYTER_TOKEN": token}, timeout=600)
        yield {"config": config, "url": f"http://127.0.0.1:{port}", "token": token,
               "up": up, "run": run_folder.name}
    finally:
        osprey(config, "clean", check=False)


def get(url: str, token: str | None = None) -> tuple[int, object]:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"}
                                     if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as refused:
        return refused.code, None


@pytest.mark.timeout(1500)
def test_the_notebook_server_lists_the_runs_to_token_holders_only(
        notebooks: dict[str, object]) -> None:
    assert "osprey.jupyter: healthy" in notebooks["up"].stderr  # type: ignore[attr-defined]
    url, token = str(notebooks["url"]), str(notebooks["token"])
    code, listing = get(f"{url}/api/contents", token)
    assert code == 200
    assert [item["name"] for item in listing["content"]] == [notebooks["run"]]  # type: ignore[index]
    code, inside = get(f"{url}/api/contents/{notebooks['run']}", token)
    assert code == 200 and [i["name"] for i in inside["content"]] == ["notebook.ipynb"]  # type: ignore[index]
    assert get(f"{url}/api/contents")[0] in (401, 403)
    assert get(f"{url}/api/contents", "not-the-token")[0] in (401, 403)


def test_the_execution_folders_are_read_only_inside(notebooks: dict[str, object]) -> None:
    found = json.loads(osprey(Path(str(notebooks["config"])), "status", "--json").stdout)
    [container] = [item["container"] for item in found["containers"]
                   if item["service"] == "osprey.jupyter"]
    attempt = subprocess.run(["podman", "exec", container, "touch", "/executions/planted"],
                             capture_output=True, text=True, timeout=60)
    assert attempt.returncode != 0 and "Read-only file system" in attempt.stderr
