"""The compose runtime (podman-compose, ``podman compose`` or ``docker compose``), the
private ``containers.conf`` and what podman says about this project's containers.

Every query filters on the project label, so nothing here sees or touches another
project's containers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from osprey_core.deploy.catalog import Deployment
from osprey_core.deploy.settings import PROJECT_LABEL, SERVICE_LABEL, DeployError

RUNTIMES = ("podman-compose", "podman compose", "docker compose")


@dataclass(frozen=True)
class Runtime:
    """How compose files are run, and which engine's CLI queries containers."""

    name: str
    argv: tuple[str, ...]
    version: str

    @property
    def engine(self) -> str:
        return "docker" if self.name == "docker compose" else "podman"


def _version(argv: list[str]) -> str | None:
    try:
        done = subprocess.run([*argv, "version"], capture_output=True, text=True, timeout=30,
                              check=False)
    except OSError:
        return None
    if done.returncode:
        return None
    lines = [line for line in done.stdout.splitlines() if "version" in line.lower()]
    return lines[0].strip() if lines else done.stdout.strip()


def _candidate(name: str) -> list[str] | None:
    if name == "podman-compose":
        found = shutil.which("podman-compose")
        beside = Path(sys.executable).parent / "podman-compose"  # in osprey's own venv
        return [found] if found else ([str(beside)] if beside.is_file() else None)
    engine = name.split()[0]
    return [engine, "compose"] if shutil.which(engine) else None


def detect_runtime(preferred: str = "auto") -> Runtime:
    """The configured runtime, or the first that works of :data:`RUNTIMES`."""
    tried = []
    for name in RUNTIMES if preferred == "auto" else (preferred,):
        argv = _candidate(name)
        version = _version(argv) if argv else None
        if argv and version is not None:
            return Runtime(name, tuple(argv), version)
        tried.append(f"{name}: {'not installed' if argv is None else 'does not work here'}")
    raise DeployError("no compose runtime found (" + "; ".join(tried) + "). Install "
                      "podman-compose: pip install 'osprey-core[deploy]' and "
                      "apt-get install -y podman runc")


def containers_conf(deployment: Deployment) -> Path:
    """Write the private containers.conf (the host's ulimits) into the build dir."""
    path = deployment.build_dir / "containers.conf"
    limits = ", ".join(json.dumps(item) for item in deployment.settings.ulimits)
    text = ("# Written by osprey deploy; given to podman through CONTAINERS_CONF.\n"
            f"[containers]\ndefault_ulimits = [{limits}]\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


def engine_env(deployment: Deployment) -> dict[str, str]:
    """The environment podman and compose run with: ours plus the private config."""
    return {**os.environ, "CONTAINERS_CONF": str(containers_conf(deployment))}


def run(argv: list[str], env: dict[str, str], *, timeout: float = 600,
        check: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command; with ``check`` a failure is a DeployError starting with it."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        raise DeployError(f"{check or argv[0]}: no answer within {timeout:.0f} s") from None
    if check is not None and done.returncode:
        output = (done.stderr.strip() or done.stdout.strip())[-3000:]
        raise DeployError(f"{check} failed (exit {done.returncode}):\n{output}")
    return done


def compose(runtime: Runtime, deployment: Deployment, files: list[Path], *args: str,
            env: dict[str, str], what: str) -> subprocess.CompletedProcess[str]:
    """Run the compose runtime on this project's files (``-p`` pinned)."""
    argv = [*runtime.argv, "-p", deployment.project]
    for path in files:
        argv += ["-f", str(path)]
    return run([*argv, *args], env, check=what)


@dataclass(frozen=True)
class Container:
    """One of this project's containers, as podman lists it."""

    id: str
    name: str
    service: str
    state: str
    health: str
    ports: str

    def to_json(self) -> dict[str, str]:
        return {"service": self.service, "container": self.name, "state": self.state,
                "health": self.health, "ports": self.ports, "id": self.id}


def _health(status: str) -> str:
    for word in ("unhealthy", "healthy", "starting"):
        if f"({word})" in status:
            return word
    return "-"


def _ports(item: dict[str, Any]) -> str:
    ports = item.get("Ports") or []
    return ", ".join(f"{p.get('host_ip') or '0.0.0.0'}:{p.get('host_port')}->"
                     f"{p.get('container_port')}/{p.get('protocol', 'tcp')}" for p in ports)


def containers(deployment: Deployment, env: dict[str, str], engine: str = "podman",
               service: str | None = None) -> list[Container]:
    """This project's containers (running or not), by service name then container name."""
    argv = [engine, "ps", "-a", "--format", "json", "--filter",
            f"label={PROJECT_LABEL}={deployment.project}"]
    if service is not None:
        argv += ["--filter", f"label={SERVICE_LABEL}={service}"]
    listed = json.loads(run(argv, env, check=f"{engine} ps").stdout or "[]")
    found = [Container(id=item["Id"], name=(item.get("Names") or [item["Id"][:12]])[0],
                       service=(item.get("Labels") or {}).get(SERVICE_LABEL, "?"),
                       state=item.get("State", "?"), health=_health(item.get("Status", "")),
                       ports=_ports(item)) for item in listed]
    return sorted(found, key=lambda c: (c.service, c.name))


def labelled(kind: str, deployment: Deployment, env: dict[str, str]) -> list[str]:
    """Names of this project's volumes or networks (``kind``: volume | network)."""
    done = run(["podman", kind, "ls", "-q", "--filter",
                f"label={PROJECT_LABEL}={deployment.project}"], env, check=f"podman {kind} ls")
    return sorted(done.stdout.split())


def last_log_lines(container: str, env: dict[str, str], lines: int = 20) -> str:
    done = run(["podman", "logs", "--tail", str(lines), container], env)
    return (done.stdout + done.stderr).rstrip() or "(no output)"
