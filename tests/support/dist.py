"""Build real (if tiny) installed distributions, and run the ``osprey`` CLI against them.

``write_distribution`` writes what an installer would: a ``<name>-<version>.dist-info``
folder with ``METADATA`` and ``entry_points.txt`` beside the plugin's modules. Putting the
folder on ``PYTHONPATH`` makes ``importlib.metadata`` find it exactly as it finds a pip
install, so discovery is tested through the real code path, not a mock.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ENTRY_POINT_GROUP = "osprey"


def write_distribution(
    site: Path,
    name: str,
    *,
    version: str = "1.0",
    entry_points: Mapping[str, str],
    modules: Mapping[str, str],
) -> Path:
    """Write distribution ``name`` into ``site`` and return ``site`` (for ``PYTHONPATH``).

    ``entry_points`` maps plugin names to module paths in the ``osprey`` group;
    ``modules`` maps dotted module names to their source (dedented). A dotted name
    becomes a package path (``pkg.mod`` -> ``pkg/__init__.py`` + ``pkg/mod.py``).
    """
    site.mkdir(parents=True, exist_ok=True)
    normalized = re.sub(r"[-_.]+", "_", name).lower()
    dist_info = site / f"{normalized}-{version}.dist-info"
    dist_info.mkdir()
    written = []
    for module, source in modules.items():
        parts = module.split(".")
        for depth in range(1, len(parts)):
            init = site.joinpath(*parts[:depth], "__init__.py")
            if not init.exists():
                init.parent.mkdir(parents=True, exist_ok=True)
                init.write_text("", encoding="utf-8")
                written.append(init)
        path = site.joinpath(*parts[:-1], f"{parts[-1]}.py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source), encoding="utf-8")
        written.append(path)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        f"Requires-Dist: osprey-core\n",
        encoding="utf-8",
    )
    lines = [f"[{ENTRY_POINT_GROUP}]"] + [f"{ep} = {target}" for ep, target in entry_points.items()]
    (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (dist_info / "INSTALLER").write_text("osprey-tests\n", encoding="utf-8")
    record = [f"{path.relative_to(site).as_posix()},," for path in written]
    record += [f"{dist_info.name}/{leaf},," for leaf in ("METADATA", "entry_points.txt",
                                                          "INSTALLER", "RECORD")]
    (dist_info / "RECORD").write_text("\n".join(record) + "\n", encoding="utf-8")
    return site


def osprey_env(
    home: Path, *, pythonpath: Path | None = None, **settings: str
) -> dict[str, str]:
    """A subprocess environment free of the caller's ``OSPREY*`` settings.

    CI exports ``OSPREY_STRICT_PLUGINS=1``; a test that wants it must pass it here.
    Keyword ``settings`` are added verbatim (``OSPREY_DISABLE_PLUGINS="example"``).
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("OSPREY")}
    env["OSPREY_HOME"] = str(home)
    env["PYTHONIOENCODING"] = "utf-8"
    env["COLUMNS"] = "250"  # keep rich tables from wrapping error texts mid-word
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            part for part in (str(pythonpath), env.get("PYTHONPATH", "")) if part
        )
    env.update(settings)
    return env


def run_osprey(
    *args: str, env: Mapping[str, str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m osprey_core ARGS`` with this interpreter, capturing text output."""
    return subprocess.run(
        [sys.executable, "-m", "osprey_core", *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
        check=False,
    )


def plugins_json(
    env: Mapping[str, str], cwd: Path, *extra: str
) -> list[dict[str, Any]]:
    """``osprey plugins --json`` parsed; fails with the CLI's output if it did not exit 0."""
    result = run_osprey("plugins", "--json", *extra, env=env, cwd=cwd)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout)


def by_name(plugins: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Index ``osprey plugins --json`` output by name (asserting names are unique)."""
    index = {entry["name"]: entry for entry in plugins}
    assert len(index) == len(plugins), f"duplicate names in {plugins}"
    return index
