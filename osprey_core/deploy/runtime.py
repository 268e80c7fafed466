"""The compose runtime (podman-compose, ``podman compose``, ``docker compose`` or the
standalone ``docker-compose``), the private ``containers.conf``, and the container engine
each runtime drives (:mod:`osprey_core.deploy.engine`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from osprey_core.deploy.catalog import Deployment
from osprey_core.deploy.engine import Engine, run
from osprey_core.deploy.settings import DeployError

#: Tried in this order by ``deploy.runtime: auto``.
RUNTIMES = ("podman-compose", "podman compose", "docker compose", "docker-compose")


@dataclass(frozen=True)
class Runtime:
    """How compose files are run, and which engine's CLI queries containers."""

    name: str
    argv: tuple[str, ...]
    version: str

    @property
    def engine(self) -> str:
        """The container CLI of this runtime: docker for docker's composes, else podman."""
        return engine_of(self.name)

    def open_engine(self, deployment: Deployment) -> Engine:
        """The engine with the environment every command of this deployment runs in."""
        return Engine(self.engine, engine_env(deployment))


def engine_of(name: str) -> str:
    return "docker" if name.startswith("docker") else "podman"


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
    if " " in name:  # a subcommand of the engine's CLI
        engine = name.split()[0]
        return [engine, "compose"] if shutil.which(engine) else None
    found = shutil.which(name)
    beside = Path(sys.executable).parent / name  # podman-compose in osprey's own venv
    return [found] if found else ([str(beside)] if beside.is_file() else None)


def detect_runtime(preferred: str = "auto") -> Runtime:
    """The configured runtime, or the first that works of :data:`RUNTIMES`."""
    tried = []
    for name in RUNTIMES if preferred == "auto" else (preferred,):
        argv = _candidate(name)
        version = _version(argv) if argv else None
        if argv is None:
            tried.append(f"{name}: not installed")
        elif version is None:
            tried.append(f"{name}: does not work here")
        elif shutil.which(engine_of(name)) is None:  # docker-compose 1.x runs without it
            tried.append(f"{name}: the {engine_of(name)} CLI it needs is not installed")
        else:
            return Runtime(name, tuple(argv), version)
    raise DeployError("no compose runtime found (" + "; ".join(tried) + "). Install "
                      "podman-compose: pip install 'osprey-core[deploy]' and "
                      "apt-get install -y podman runc")


def containers_conf(deployment: Deployment) -> Path:
    """Write the private containers.conf (the host's ulimits) into the build dir."""
    return write_containers_conf(deployment.build_dir / "containers.conf",
                                 deployment.settings.ulimits)


def write_containers_conf(path: Path, ulimits: list[str] | tuple[str, ...]) -> Path:
    """A containers.conf giving every container ``ulimits`` (unchanged files stay)."""
    limits = ", ".join(json.dumps(item) for item in ulimits)
    text = ("# Written by osprey deploy; given to podman through CONTAINERS_CONF.\n"
            f"[containers]\ndefault_ulimits = [{limits}]\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


def engine_env(deployment: Deployment) -> dict[str, str]:
    """The environment the engine and compose run with: ours plus the private config
    (read by podman; docker ignores it)."""
    return {**os.environ, "CONTAINERS_CONF": str(containers_conf(deployment))}


def compose(runtime: Runtime, deployment: Deployment, files: list[Path], *args: str,
            env: dict[str, str], what: str) -> subprocess.CompletedProcess[str]:
    """Run the compose runtime on this project's files (``-p`` pinned)."""
    argv = [*runtime.argv, "-p", deployment.project]
    for path in files:
        argv += ["-f", str(path)]
    return run([*argv, *args], env, check=what)
