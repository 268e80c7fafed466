"""The jail's interpreter: a world-readable copy of osprey's own Python, with the packages
generated code may import, plus the tiny ``osprey_core.sandbox`` shim the jail runs.

The copy is needed because the original prefix usually lives where the jail's unprivileged
uid cannot read (``/root`` is 0700). The jail mounts the copy at the original prefix's path,
so the interpreter's compiled-in paths still resolve.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from osprey_core.errors import OspreyError
from osprey_core.hookspecs.execution_backends import CheckItem

if TYPE_CHECKING:
    from osprey_core.settings import ExecutionSettings

#: What generated code may import besides the standard library.
DEFAULT_PACKAGES: tuple[str, ...] = ("numpy", "matplotlib", "pandas")
#: Written last into a prepared interpreter copy; its content is the copy's key.
MARKER = ".osprey-runtime.json"
#: Prefixes shared with the host system: copying or mounting them over is not supported.
SYSTEM_PREFIXES = ("/usr", "/usr/local", "/")
#: Seconds ``pip install`` may take before setup gives up.
PIP_TIMEOUT = 1800

Progress = Callable[[str], None]


class SandboxSetupError(OspreyError):
    """The jail's runtime could not be prepared or is not prepared."""


@dataclass(frozen=True)
class RuntimeInfo:
    """A prepared runtime: where its parts are on the host and where the jail sees them."""

    #: The interpreter copy on the host (world-readable).
    python_dir: Path
    #: Where the jail mounts the copy: the original prefix, so compiled-in paths resolve.
    jail_prefix: Path
    #: Holds the ``osprey_core/sandbox`` shim package; mounted read-only at the same path.
    lib_dir: Path
    #: Per-run work directories are created (and their tmpfs mounted) under here.
    scratch_dir: Path
    python_version: str
    packages: tuple[str, ...]

    @property
    def jail_python(self) -> str:
        """The interpreter's path inside the jail."""
        return str(self.jail_prefix / "bin" / f"python{self.python_version}")

    @property
    def seed_dir(self) -> Path:
        """Files copied into every run's work dir (matplotlib's font cache, built once in the
        jail at setup: building it costs ~0.17 s of every plotting run otherwise)."""
        return self.python_dir / "seed"

    def seed_files(self) -> dict[str, bytes]:
        """The seed, as ``SandboxJob.files`` (paths relative to the work dir). Every run
        needs it, so the files are read again only when one's size or time changes."""
        found = []
        for directory, _, files in os.walk(self.seed_dir):
            for name in files:
                path = os.path.join(directory, name)
                info = os.stat(path)
                found.append((os.path.relpath(path, self.seed_dir), info.st_mtime_ns,
                              info.st_size))
        return dict(_read_seed(self.seed_dir, tuple(sorted(found))))


@functools.lru_cache(maxsize=4)
def _read_seed(seed_dir: Path, files: tuple[tuple[str, int, int], ...]) -> dict[str, bytes]:
    return {name: (seed_dir / name).read_bytes() for name, _, _ in files}


def _python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _runtime_key() -> str:
    """Names one interpreter: its full version and its prefix (the copy is mounted there)."""
    digest = hashlib.sha256(sys.base_prefix.encode()).hexdigest()[:10]
    return f"{sys.version.split()[0]}-{digest}"


def _marker(packages: Sequence[str]) -> dict[str, object]:
    return {"prefix": sys.base_prefix, "version": sys.version.split()[0],
            "packages": sorted(packages)}


def runtime_paths(runtime_dir: Path) -> RuntimeInfo:
    """Where this interpreter's runtime is (or would be) under ``runtime_dir``."""
    runtime_dir = runtime_dir.absolute()
    return RuntimeInfo(
        python_dir=runtime_dir / "python" / _runtime_key(), jail_prefix=Path(sys.base_prefix),
        lib_dir=runtime_dir / "lib", scratch_dir=runtime_dir / "scratch",
        python_version=_python_version(), packages=())


def load_runtime(runtime_dir: Path) -> RuntimeInfo | None:
    """The prepared runtime for the running interpreter, or ``None`` if setup has not run."""
    info = runtime_paths(runtime_dir)
    try:
        marker = json.loads((info.python_dir / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if marker.get("prefix") != sys.base_prefix or not info.lib_dir.is_dir():
        return None
    return RuntimeInfo(**{**info.__dict__, "packages": tuple(marker.get("packages", ()))})


def shim_sources() -> dict[str, bytes]:
    """The shim package's files (relative path -> content), from the installed osprey."""
    import osprey_core.sandbox as package
    from osprey_core.sandbox import IN_JAIL_MODULES

    source_dir = Path(package.__file__).parent
    files = {"osprey_core/__init__.py": b"", "osprey_core/sandbox/__init__.py": b""}
    for name in IN_JAIL_MODULES:
        path = source_dir / name
        if path.is_file():
            files[f"osprey_core/sandbox/{name}"] = path.read_bytes()
    return files


def refresh_shim(lib_dir: Path) -> bool:
    """Write shim files whose content differs from osprey's; True if anything changed.

    Modules are compiled here too: the jail sees them read-only and could not cache them,
    so every run would compile them again.
    """
    import importlib.util
    import py_compile

    changed = False
    for relative, content in shim_sources().items():
        path = lib_dir / relative
        try:
            current = path.read_bytes() == content
        except OSError:
            current = False
        if not current:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            temporary = path.with_name(f".{path.name}.tmp")
            temporary.write_bytes(content)
            temporary.chmod(0o644)
            temporary.replace(path)
            changed = True
        if not current or not os.path.exists(importlib.util.cache_from_source(str(path))):
            py_compile.compile(str(path), doraise=True)
    return changed


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
    (info.python_dir / MARKER).write_text(json.dumps(_marker([*installed, *missing])))
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
    import asyncio
    import tempfile

    from osprey_core.hookspecs.execution_backends import ExitReason, SandboxJob
    from osprey_core.sandbox.nsjail_backend import NsjailBackend

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


def check_runtime(settings: ExecutionSettings) -> list[CheckItem]:
    """Whether the runtime is prepared for this interpreter (files only; no jail started)."""
    info = load_runtime(settings.runtime_dir)
    if info is None:
        where = runtime_paths(settings.runtime_dir).python_dir
        return [CheckItem("runtime prepared", False,
                          f"nothing at {where}: run `osprey sandbox setup`")]
    stale = any((info.lib_dir / relative).read_bytes() != content
                if (info.lib_dir / relative).is_file() else True
                for relative, content in shim_sources().items())
    return [
        CheckItem("runtime prepared", True,
                  f"Python {info.python_version} at {info.python_dir} (jail path "
                  f"{info.jail_prefix}); packages: {', '.join(info.packages) or 'none'}"),
        CheckItem("runtime shim", True, f"{info.lib_dir}" + (
            " (outdated: refreshed on the next run)" if stale else "")),
    ]

