"""``osprey deploy`` against real podman and podman-compose (loopback ports only): up waits
for health, status and down see only their own project, two projects run side by side, a
failing health check is reported with the service's logs, clean removes volumes."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.deploy import osprey, status, web_project, write_config

from osprey_core.deploy.images import busybox_base

pytestmark = pytest.mark.skipif(shutil.which("podman") is None,
                                reason="needs podman (nox -s tests installs it)")


@pytest.fixture
def projects(tmp_path: Path) -> Iterator[list[Path]]:
    """Configs the test creates; every one is cleaned at teardown, whatever happened."""
    configs: list[Path] = []
    yield configs
    for config in configs:
        osprey(config, "clean", check=False)


def test_two_projects_side_by_side_up_status_down(tmp_path: Path,
                                                  projects: list[Path]) -> None:
    first, first_port = web_project(tmp_path, "osprey-test-a", greeting="from-a")
    second, second_port = web_project(tmp_path, "osprey-test-b", greeting="from-b")
    projects += [first, second]
    stale = "localhost/osprey-test-web:stale"  # an older build nobody uses any more
    subprocess.run(["podman", "tag", busybox_base(), stale], check=True)
    built = osprey(first, "build", "--rebuild")
    assert "applications.demo.web: localhost/osprey-test-web:" in built.stdout
    assert f"removed older {stale}" in built.stdout
    assert "(cached)" in osprey(first, "build").stdout  # nothing changed: nothing built
    up = osprey(first, "up")
    assert "runtime: podman-compose" in up.stderr
    assert "applications.demo.web: healthy after" in up.stderr
    osprey(second, "up")
    for config, port, greeting in ((first, first_port, "from-a"),
                                   (second, second_port, "from-b")):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as answer:
            assert answer.read().decode().strip() == greeting
        report = status(config)
        [container] = report["containers"]  # type: ignore[misc]
        assert (container["service"], container["state"], container["health"]) == (
            "applications.demo.web", "running", "healthy")
        assert container["ports"] == f"127.0.0.1:{port}->8080/tcp"
        assert container["container"].startswith(report["project"])  # type: ignore[union-attr]
    conf = (tmp_path / "osprey-test-a" / "home" / "deploy" / "osprey-test-a"
            / "containers.conf").read_text()
    assert '"nofile=1024:1024", "nproc=1024:1024"' in conf
    down = osprey(first, "down")
    assert "removed 1 container(s)" in down.stdout
    assert status(first)["containers"] == []
    [survivor] = status(second)["containers"]  # type: ignore[misc]
    assert (survivor["state"], survivor["health"]) == ("running", "healthy")
    logs = osprey(second, "logs", "--tail", "5")
    assert "web osprey-test-b started" in logs.stdout
    restarted = osprey(second, "restart", "applications.demo.web")
    assert "applications.demo.web: healthy after" in restarted.stderr
    cleaned = osprey(second, "clean")
    assert "removed" in cleaned.stdout
    assert not (tmp_path / "osprey-test-b" / "home" / "deploy" / "osprey-test-b").exists()
    assert status(second)["containers"] == []
    volumes = subprocess.run(["podman", "volume", "ls", "-q", "--filter",
                              "label=io.osprey.project=osprey-test-b"], capture_output=True,
                             text=True, check=True).stdout
    assert volumes == ""


def test_a_failing_health_check_names_the_service_and_shows_its_logs(
        tmp_path: Path, projects: list[Path]) -> None:
    config, _ = web_project(tmp_path, "osprey-test-sick", fail=True, retries=3)
    projects.append(config)
    osprey(config, "build")
    up = osprey(config, "up", check=False)
    assert up.returncode == 1
    assert "service applications.demo.web is unhealthy (health check failed 3 times" \
        in up.stderr
    assert "refusing to serve: fail is set" in up.stderr  # its last log lines
    [container] = status(config)["containers"]  # type: ignore[misc]
    assert container["health"] in ("unhealthy", "starting")


def test_up_without_images_or_services_says_what_to_do(tmp_path: Path,
                                                       projects: list[Path]) -> None:
    config = write_config(tmp_path, "deploy: {project: osprey-test-empty}\n")
    projects.append(config)
    empty = osprey(config, "up", check=False)
    assert empty.returncode == 1
    assert "nothing to deploy: list services in deploy.deployed_services" in empty.stderr
    unknown = write_config(tmp_path, "deploy: {deployed_services: [osprey.nope]}\n")
    refused = osprey(unknown, "render", check=False)
    assert refused.returncode == 2
    assert f"{unknown}:1: deploy.deployed_services[0]: no service named 'osprey.nope'" \
        in refused.stderr
