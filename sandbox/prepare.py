"""Setting up the jail's interpreter: a world-readable copy of osprey's own Python, with the
packages generated code may import, plus the tiny ``osprey_core.sandbox`` shim the jail runs
(:mod:`osprey_core.sandbox.interpreter` says where they are and whether they are ready).

The copy is needed because the original prefix usually lives where the jail's unprivileged
uid cannot read (``/root`` is 0700). The jail mounts the copy at the original prefix's path,
so the interpreter's compiled-in paths still resolve.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from osprey_core.errors import OspreyError
from osprey_core.hookspecs.execution_backends import ExitReason, SandboxJob
from osprey_core.sandbox.interpreter import (
    MARKER,
    RuntimeInfo,
    load_runtime,
    marker,
    refresh_shim,
    runtime_paths,
)
from osprey_core.sandbox.nsjail_backend import NsjailBackend

if TYPE_CHECKING:
    from osprey_core.settings import ExecutionSettings

#: What generated code may import besides the standard library.
DEFAULT_PACKAGES: tuple[str, ...] = ("numpy", "matplotlib", "pandas")
#: Prefixes shared with the host system: copying or mounting them over is not supported.
SYSTEM_PREFIXES = ("/usr", "/usr/local", "/")
#: Seconds ``pip install`` may take before setup gives up.
PIP_TIMEOUT = 1800

Progress = Callable[[str], None]


class SandboxSetupError(OspreyError):
    """The jail's runtime could not be prepared or is not prepared."""


def _check_traversable(path: Path) -> None:
    """Every parent of ``path`` must let other users through, or the jail cannot mount it."""
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.stat().st_mode & 0o001:
            raise SandboxSetupError(
                f"{parent} is not traversable by other users (mode "
                f"{oct(parent.stat().st_mode & 0o777)}): the jail's uid cannot reach "
                f"{path}; choose another execution.runtime_dir")


def _make_world_readable(root: Path) -> None:
    """Directories 0o555 at least, files readable (and executable where the owner may)."""
    root.chmod(0o755)
    for directory, subdirs, files in os.walk(root):
        for name in subdirs:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode | 0o555)
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                mode = os.stat(path).st_mode
                os.chmod(path, mode | 0o444 | (0o111 if mode & 0o100 else 0))


def _run_pip(python: Path, packages: Sequence[str], progress: Progress) -> None:
    progress(f"installing {', '.join(packages)} into the jail's interpreter")
    command = [str(python), "-I", "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
               "--no-warn-script-location", *packages]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT,
                              check=False)
    except subprocess.TimeoutExpired:
        raise SandboxSetupError(f"pip install {' '.join(packages)}: no result in "
                                f"{PIP_TIMEOUT} s") from None
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise SandboxSetupError(f"pip install {' '.join(packages)} into {python} failed:\n{tail}")


def prepare_runtime(settings: ExecutionSettings, *, packages: Sequence[str] = DEFAULT_PACKAGES,
                    progress: Progress = lambda message: None) -> RuntimeInfo:
    """Copy the interpreter, install ``packages`` into the copy and write the shim.

    Idempotent: a prepared copy with the same interpreter and packages is kept as is, so a
    second call costs little more than refreshing the shim files.
    """
    prefix = Path(sys.base_prefix)
    if str(prefix) in SYSTEM_PREFIXES:
        raise SandboxSetupError(
            f"the interpreter's prefix is the system's ({prefix}): run osprey with a "
            "standalone Python (pyenv, uv python) so the jail can mount its own copy")
    info = runtime_paths(settings.runtime_dir)
    root = info.python_dir.parent.parent
    root.mkdir(parents=True, exist_ok=True)
    _check_traversable(root)
    for directory in (root, root / "python", info.lib_dir):
        directory.mkdir(exist_ok=True)
        directory.chmod(0o755)
    info.scratch_dir.mkdir(exist_ok=True)
    info.scratch_dir.chmod(0o711)
    if refresh_shim(info.lib_dir):
        progress(f"wrote the jail's osprey_core shim to {info.lib_dir}")
    existing = load_runtime(settings.runtime_dir)
    wanted = sorted(set(packages))
    if existing is not None and set(wanted) <= set(existing.packages):
        if "matplotlib" in existing.packages and not existing.seed_dir.is_dir():
            _seed_matplotlib(settings, existing, progress)
        progress(f"interpreter ready at {info.python_dir}")
        return existing
    if existing is None:
        partial = info.python_dir.with_name(info.python_dir.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        progress(f"copying {prefix} to {info.python_dir} (a few hundred MB)")
        shutil.copytree(prefix, partial, symlinks=True)
        partial.rename(info.python_dir)
        installed: list[str] = []
    else:
        installed = list(existing.packages)
    missing = [name for name in wanted if name not in installed]
    python = info.python_dir / "bin" / f"python{info.python_version}"
    if missing:
        _run_pip(python, missing, progress)
    _make_world_readable(info.python_dir)
    (info.python_dir / MARKER).write_text(json.dumps(marker([*installed, *missing])))
    ready = load_runtime(settings.runtime_dir)
    assert ready is not None
    if "matplotlib" in ready.packages:
        _seed_matplotlib(settings, ready, progress)
    progress(f"interpreter ready at {info.python_dir}")
    return ready


def _seed_matplotlib(settings: ExecutionSettings, runtime: RuntimeInfo,
                     progress: Progress) -> None:
    """Build matplotlib's font cache inside the jail (its paths are the jail's) and keep it
    as the seed of every run's ``.mpl`` directory. A failure only costs speed."""
    progress("building matplotlib's font cache in the jail")
    with tempfile.TemporaryDirectory() as tmp:
        # .mpl is not copied out of a run, so the code hands the cache over under another name.
        code = ("import glob, os, shutil\nimport matplotlib.font_manager\nos.mkdir('cache')\n"
                "for name in glob.glob('.mpl/fontlist-*.json'):\n    shutil.copy(name, 'cache')\n")
        job = SandboxJob(code, settings.limits, Path(tmp) / "out")
        outcome = asyncio.run(NsjailBackend(settings, Path(tmp)).run(job))
        caches = sorted((Path(tmp) / "out" / "cache").glob("fontlist-*.json"))
        if outcome.exit_reason is not ExitReason.OK or not caches:
            progress(f"no font cache ({outcome.exit_reason}): plots build it on each run")
            return
        target = runtime.seed_dir / ".mpl"
        target.mkdir(parents=True, exist_ok=True)
        for cache in caches:
            shutil.copy(cache, target / cache.name)
    _make_world_readable(runtime.seed_dir)
