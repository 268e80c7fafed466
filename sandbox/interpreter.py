"""Where the jail's interpreter copy and the shim live, and whether they are ready.

The backends need only this: find the prepared runtime, refresh the tiny
``osprey_core.sandbox`` shim the jail runs, and report what is there. Making the copy
(``osprey sandbox setup``) is :mod:`osprey_core.sandbox.prepare`'s work.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from osprey_core.hookspecs.execution_backends import CheckItem
from osprey_core.sandbox import IN_JAIL_MODULES

if TYPE_CHECKING:
    from osprey_core.settings import ExecutionSettings

#: Written last into a prepared interpreter copy; its content is the copy's key.
MARKER = ".osprey-runtime.json"


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


def marker(packages: Sequence[str]) -> dict[str, object]:
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
    source_dir = Path(__file__).parent
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
