"""``osprey deploy`` through docker: the standalone ``docker-compose`` runtime and the docker
CLI for every container command (``deploy.runtime: docker-compose``).

No Docker daemon runs here. podman's Docker-compatible API stands in for one
(``podman system service``) with a storage of its own, so the engine the docker CLI talks
to really lacks the images podman builds: ``build`` must hand them over
(``podman save | docker load``) and ``up`` must look for them in docker. Containers made
through it are invisible to the host's podman, which shows no podman command was used.

The parsing of ``docker ps``'s JSON lines is unit-tested without any engine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.deploy import osprey, status, web_project

from osprey_core.deploy.engine import docker_labels, parse_ps
from osprey_core.deploy.runtime import RUNTIMES, detect_runtime, write_containers_conf
from osprey_core.deploy.settings import DEFAULT_ULIMITS, DeployError

needs_docker = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in ("docker", "docker-compose", "podman")),
    reason="needs the docker CLI, docker-compose and podman (its Docker API stands in for "
           "a Docker daemon)")
RUNTIME = "runtime: docker-compose (docker-compose version"


@pytest.fixture(scope="module")
def docker_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """DOCKER_HOST of a podman service with its own storage, run with the private
    containers.conf (this host's two ulimits); stopped at teardown."""
    folder = tmp_path_factory.mktemp("engine")
    conf = write_containers_conf(folder / "containers.conf", DEFAULT_ULIMITS)
    sockets = Path(tempfile.mkdtemp(prefix="osprey-pd-"))  # a socket path has 107 bytes
    env = {"DOCKER_HOST": f"unix://{sockets / 'podman.sock'}"}
    with (folder / "service.log").open("w") as log:
        service = subprocess.Popen(
            # vfs: overlay would leave its storage folder mounted on itself after the stop
            ["podman", "--root", str(folder / "storage"), "--runroot", str(folder / "run"),
             "--tmpdir", str(folder / "tmp"), "--storage-driver", "vfs", "system", "service",
             "--time=0", env["DOCKER_HOST"]],
            env={**os.environ, "CONTAINERS_CONF": str(conf)}, stdout=log,
            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(["docker", "version"], env={**os.environ, **env},
                             capture_output=True, check=False).returncode:
            assert service.poll() is None, (folder / "service.log").read_text()
            assert time.monotonic() < deadline, "podman's Docker API did not answer in 60 s"
            time.sleep(0.1)
        yield env
    finally:
        service.terminate()
        try:
            service.wait(timeout=30)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
        shutil.rmtree(sockets, ignore_errors=True)


@pytest.fixture
def projects(docker_env: dict[str, str]) -> Iterator[list[Path]]:
    """Configs the test creates; every one is cleaned at teardown, whatever happened."""
    configs: list[Path] = []
    yield configs
    for config in configs:
        osprey(config, "clean", check=False, env=docker_env)


def docker(env: dict[str, str], *args: str) -> str:
    return subprocess.run(["docker", *args], env={**os.environ, **env}, capture_output=True,
                          text=True, check=True).stdout


@needs_docker
def test_docker_compose_two_projects_up_status_down_clean(
        tmp_path: Path, docker_env: dict[str, str], projects: list[Path]) -> None:
    first, first_port = web_project(tmp_path, "osprey-dk-a", greeting="from-a",
                                    runtime="docker-compose")
    second, second_port = web_project(tmp_path, "osprey-dk-b", greeting="from-b",
                                      runtime="docker-compose")
    projects += [first, second]
    built = osprey(first, "build", env=docker_env)
    assert RUNTIME in built.stderr
    assert "loaded into docker in" in built.stdout  # docker's own store lacked it
    [image] = docker(docker_env, "images", "--format", "{{.Repository}}:{{.Tag}}",
                     "localhost/osprey-test-web").split()
    assert image in built.stdout
    assert "(cached)" in osprey(first, "build", env=docker_env).stdout  # docker has it now
    stale = "localhost/osprey-test-web:stale"  # an older build, in docker only
    docker(docker_env, "tag", image, stale)
    rebuilt = osprey(first, "build", "--rebuild", env=docker_env)
    assert "(built and loaded into docker in" in rebuilt.stdout
    assert f"removed older {stale}" in rebuilt.stdout
    assert docker(docker_env, "images", "-q", stale) == ""
    up = osprey(first, "up", env=docker_env)
    assert RUNTIME in up.stderr
    assert "with docker-compose" in up.stderr
    assert "applications.demo.web: healthy after" in up.stderr
    osprey(second, "up", env=docker_env)
    for config, port, greeting in ((first, first_port, "from-a"),
                                   (second, second_port, "from-b")):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as answer:
            assert answer.read().decode().strip() == greeting
        report = status(config, docker_env)
        assert report["runtime"] == "docker-compose"
        [container] = report["containers"]  # type: ignore[misc]
        assert set(container) == {"service", "container", "state", "health", "ports", "id"}
        assert (container["service"], container["state"]) == ("applications.demo.web",
                                                              "running")
        # podman's Docker API records no health (nothing runs the checks without systemd)
        assert container["health"] == "-"
        assert container["ports"] == f"127.0.0.1:{port}->8080/tcp"
        assert container["container"].startswith(report["project"])  # type: ignore[union-attr]
    on_host_podman = subprocess.run(["podman", "ps", "-aq", "--filter",
                                     "label=io.osprey.project=osprey-dk-a"],
                                    capture_output=True, text=True, check=True).stdout
    assert on_host_podman == ""  # every container command went to docker's engine
    table = osprey(first, "status", env=docker_env).stdout
    assert "osprey-dk-a" in table and "osprey-dk-b" not in table
    down = osprey(first, "down", env=docker_env)
    assert "removed 1 container(s)" in down.stdout
    assert status(first, docker_env)["containers"] == []
    [survivor] = status(second, docker_env)["containers"]  # type: ignore[misc]
    assert survivor["state"] == "running"
    with urllib.request.urlopen(f"http://127.0.0.1:{second_port}/", timeout=5) as answer:
        assert answer.read().decode().strip() == "from-b"
    assert "web osprey-dk-b started" in osprey(second, "logs", "--tail", "5",
                                               env=docker_env).stdout
    restarted = osprey(second, "restart", env=docker_env)
    assert "applications.demo.web: healthy after" in restarted.stderr
    assert docker(docker_env, "volume", "ls", "-q", "--filter",
                  "label=io.osprey.project=osprey-dk-b").split() == ["osprey-dk-b_data"]
    osprey(second, "clean", env=docker_env)
    assert status(second, docker_env)["containers"] == []
    for kind in ("volume", "network"):
        assert docker(docker_env, kind, "ls", "-q", "--filter",
                      "label=io.osprey.project=osprey-dk-b") == ""


@needs_docker
def test_docker_compose_failing_health_check_is_named_with_its_logs(
        tmp_path: Path, docker_env: dict[str, str], projects: list[Path]) -> None:
    config, _ = web_project(tmp_path, "osprey-dk-sick", fail=True, retries=3,
                            runtime="docker-compose")
    projects.append(config)
    if loaded := docker(docker_env, "images", "-q", "localhost/osprey-test-web").split():
        docker(docker_env, "rmi", "-f", *loaded)  # from the test before
    unbuilt = osprey(config, "up", check=False, env=docker_env)
    assert unbuilt.returncode == 1
    assert ("images not in docker: applications.demo.web (localhost/osprey-test-web:"
            in unbuilt.stderr)
    assert "(it builds them with podman and loads them into docker)" in unbuilt.stderr
    osprey(config, "build", env=docker_env)
    up = osprey(config, "up", check=False, env=docker_env)
    assert up.returncode == 1
    assert "service applications.demo.web is unhealthy (health check failed 3 times" \
        in up.stderr
    assert "wget: can't connect to remote host" in up.stderr  # the check's last answer
    assert "refusing to serve: fail is set" in up.stderr  # its last log lines
    [container] = status(config, docker_env)["containers"]  # type: ignore[misc]
    assert container["state"] == "running"


def test_docker_ps_json_lines_are_parsed_like_podman_arrays() -> None:
    labels = ("com.docker.compose.project.config_files=/b/00-base.yml,/b/01-web.yml,"
              "io.osprey.project=p,io.osprey.service=applications.demo.web,empty=")
    lines = (
        '{"ID":"bbb","Names":"p_web_2","Labels":"' + labels + '","State":"exited",'
        '"Status":"Exited (0) 1 second ago","Ports":""}\n'
        '{"ID":"aaa","Names":"p_web_1,alias","Labels":"' + labels + '","State":"running",'
        '"Status":"Up 2 minutes (health: starting)",'
        '"Ports":"127.0.0.1:18080->8080/tcp"}\n\n')
    assert docker_labels(labels) == {
        "com.docker.compose.project.config_files": "/b/00-base.yml,/b/01-web.yml",
        "io.osprey.project": "p", "io.osprey.service": "applications.demo.web", "empty": ""}
    docker_found = [c.to_json() for c in parse_ps("docker", lines)]
    podman_array = (
        '[{"Id":"aaa","Names":["p_web_1"],"Labels":{"io.osprey.service":'
        '"applications.demo.web"},"State":"running","Status":"Up 2 minutes (starting)",'
        '"Ports":[{"host_ip":"127.0.0.1","container_port":8080,"host_port":18080,'
        '"range":1,"protocol":"tcp"}]},'
        '{"Id":"bbb","Names":["p_web_2"],"Labels":{"io.osprey.service":'
        '"applications.demo.web"},"State":"exited","Status":"Exited (0) 1 second ago",'
        '"Ports":null}]')
    assert docker_found == [c.to_json() for c in parse_ps("podman", podman_array)]
    assert docker_found == [
        {"service": "applications.demo.web", "container": "p_web_1", "state": "running",
         "health": "starting", "ports": "127.0.0.1:18080->8080/tcp", "id": "aaa"},
        {"service": "applications.demo.web", "container": "p_web_2", "state": "exited",
         "health": "-", "ports": "", "id": "bbb"}]
    healths = [parse_ps("docker", json.dumps({"ID": "x", "Status": f"Up 1 hour ({word})"})
                        )[0].health for word in ("healthy", "unhealthy", "health: starting")]
    assert healths == ["healthy", "unhealthy", "starting"]
    assert parse_ps("docker", "") == parse_ps("podman", "") == []


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="needs docker-compose")
def test_docker_compose_is_detected_and_needs_the_docker_cli(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert RUNTIMES.index("docker-compose") == RUNTIMES.index("docker compose") + 1
    if shutil.which("docker") is not None:
        runtime = detect_runtime("docker-compose")
        assert (runtime.name, runtime.engine) == ("docker-compose", "docker")
        assert runtime.version.startswith("docker-compose version ")
    (tmp_path / "docker-compose").symlink_to(str(shutil.which("docker-compose")))
    monkeypatch.setenv("PATH", str(tmp_path))  # docker-compose 1.x runs without docker
    with pytest.raises(DeployError, match=r"\(docker-compose: the docker CLI it needs is not "
                                          r"installed\)"):
        detect_runtime("docker-compose")
