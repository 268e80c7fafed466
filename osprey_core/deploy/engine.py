"""Container commands through the engine the compose runtime drives (podman or docker).

This is the one place that knows how the two CLIs differ: ``ps --format json`` (podman:
one JSON array; docker: one object per line, with ``Names`` and ``Labels`` as strings),
health checks (podman's ``healthcheck run``; docker has none), ``rm -t`` (podman only).
Every query filters on the project label, so nothing here sees or touches another
project's containers."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from typing import Any

from osprey_core.deploy.settings import PROJECT_LABEL, SERVICE_LABEL, DeployError
from osprey_core.hookspecs.services import HealthCheck

INSTALL = {"podman": "Debian: apt-get install -y podman runc",
           "docker": "the docker CLI, from Docker's packages"}


def run(argv: list[str], env: dict[str, str], *, timeout: float = 600,
        check: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command; with ``check`` a failure is a DeployError starting with it."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        raise DeployError(f"{check or ' '.join(argv[:2])}: no answer within {timeout:g} s"
                          ) from None
    except FileNotFoundError:
        raise DeployError(f"{argv[0]} is not installed ({INSTALL.get(argv[0], 'not on PATH')})"
                          ) from None
    if check is not None and done.returncode:
        output = (done.stderr.strip() or done.stdout.strip())[-3000:]
        raise DeployError(f"{check} failed (exit {done.returncode}):\n{output}")
    return done


@dataclass(frozen=True)
class Container:
    """One of this project's containers, the same for either engine."""

    id: str
    name: str
    service: str
    state: str
    health: str
    ports: str

    def to_json(self) -> dict[str, str]:
        return {"service": self.service, "container": self.name, "state": self.state,
                "health": self.health, "ports": self.ports, "id": self.id}


#: podman: "Up 2 seconds (healthy)"; docker: "Up 2 seconds (health: starting)".
_HEALTH = re.compile(r"\((?:health: )?(unhealthy|healthy|starting)\)")


def _health(status: str) -> str:
    found = _HEALTH.search(status)
    return found.group(1) if found else "-"


def _podman_ports(ports: list[dict[str, Any]] | None) -> str:
    return ", ".join(f"{p.get('host_ip') or '0.0.0.0'}:{p.get('host_port')}->"
                     f"{p.get('container_port')}/{p.get('protocol', 'tcp')}"
                     for p in ports or [])


def docker_labels(text: str) -> dict[str, str]:
    """Docker's ``k=v,k=v``; a piece without ``=`` continues the value before it (a
    value's own comma, as in compose's ``config_files=a.yml,b.yml``)."""
    labels: dict[str, str] = {}
    key = None
    for piece in text.split(",") if text else []:
        if "=" in piece or key is None:
            key, _, value = piece.partition("=")
            labels[key] = value
        else:
            labels[key] += "," + piece
    return labels


def parse_ps(engine: str, output: str) -> list[Container]:
    """``<engine> ps -a --format json`` as Containers, by service then container name."""
    found = []
    if engine == "podman":
        for item in json.loads(output or "[]"):
            found.append(Container(
                id=item["Id"], name=(item.get("Names") or [item["Id"][:12]])[0],
                service=(item.get("Labels") or {}).get(SERVICE_LABEL, "?"),
                state=item.get("State", "?"), health=_health(item.get("Status", "")),
                ports=_podman_ports(item.get("Ports"))))
    else:
        for line in filter(str.strip, output.splitlines()):
            item = json.loads(line)
            found.append(Container(
                id=item["ID"], name=(item.get("Names") or item["ID"]).split(",")[0],
                service=docker_labels(item.get("Labels") or "").get(SERVICE_LABEL, "?"),
                state=item.get("State", "?"), health=_health(item.get("Status", "")),
                ports=item.get("Ports") or ""))
    return sorted(found, key=lambda c: (c.service, c.name))


@dataclass(frozen=True)
class Engine:
    """The container CLI (``podman`` or ``docker``) with the environment it runs in."""

    name: str
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 600,
            check: str | None = None) -> subprocess.CompletedProcess[str]:
        return run([self.name, *args], self.env, timeout=timeout,
                   check=check and f"{self.name} {check}")

    def containers(self, project: str, service: str | None = None) -> list[Container]:
        """This project's containers (running or not)."""
        filters = ["--filter", f"label={PROJECT_LABEL}={project}"]
        if service is not None:
            filters += ["--filter", f"label={SERVICE_LABEL}={service}"]
        done = self.run("ps", "-a", "--format", "json", *filters, check="ps")
        return parse_ps(self.name, done.stdout)

    def state(self, container: str) -> str:
        """running, exited, ... ('' once the container is gone)."""
        return self.run("inspect", "--format", "{{.State.Status}}", container).stdout.strip()

    def check_health(self, container: str, check: HealthCheck) -> str | None:
        """Run the service's check once: None when it passed, else its answer.

        podman has ``healthcheck run``, which also records the result. Docker has no such
        command, so its check is run here with ``docker exec``. Waiting for the engine's
        own ``.State.Health`` instead would work on a real Docker daemon but not behind
        podman's Docker API, where without systemd nothing ever runs the checks. ``exec``
        of the same command works on both, and ``up`` counts attempts the same way on
        every engine."""
        if self.name == "podman":
            argv, limit = ["healthcheck", "run", container], check.timeout_seconds + 30
        else:  # nothing enforces the check's timeout but ours (plus exec's start-up)
            argv, limit = ["exec", container, *check.test], check.timeout_seconds + 2
        try:
            done = self.run(*argv, timeout=limit)
        except DeployError as exc:  # no answer within the limit
            return str(exc)
        if done.returncode == 0:
            return None
        return (done.stdout + done.stderr).strip() or f"exit {done.returncode}"

    def remove(self, containers: list[str]) -> None:
        """Force-remove containers (podman waits ``-t`` for SIGTERM; docker kills)."""
        wait = ["-t", "1"] if self.name == "podman" else []
        self.run("rm", "-f", *wait, *containers, check="rm")

    def restart(self, containers: list[str]) -> None:
        self.run("restart", "-t", "1", *containers, check="restart")

    def labelled(self, kind: str, project: str) -> list[str]:
        """This project's volumes or networks (``kind``: volume | network)."""
        done = self.run(kind, "ls", "-q", "--filter", f"label={PROJECT_LABEL}={project}",
                        check=f"{kind} ls")
        return sorted(done.stdout.split())

    def remove_labelled(self, kind: str, names: list[str]) -> None:
        if names:
            self.run(kind, "rm", "-f", *names, check=f"{kind} rm")

    def logs(self, container: str, lines: int = 20) -> str:
        done = self.run("logs", "--tail", str(lines), container)
        return (done.stdout + done.stderr).rstrip() or "(no output)"

    def has_image(self, ref: str) -> bool:
        return self.run("image", "inspect", "--format", "{{.Id}}", ref).returncode == 0

    def tags(self, repository: str) -> list[str]:
        """Every ``repository:tag`` of ``repository``'s images."""
        done = self.run("images", "--format", "{{.Repository}}:{{.Tag}}", repository,
                        check="images")
        # the listing names every tag of each matching image (a shared base included)
        return [ref for ref in done.stdout.split() if ref.startswith(f"{repository}:")]

    def remove_image(self, ref: str) -> bool:
        """Remove a tag; False when the engine refuses (a container still uses it)."""
        return self.run("rmi", ref).returncode == 0
