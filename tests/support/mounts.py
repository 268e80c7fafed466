"""Running ``osprey`` in a private mount namespace, to give it a real read-only or full
file system (root only; tests that need it are skipped elsewhere)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def run_osprey(args: list[str], env: dict[str, str], cwd: Path,
               setup: str = "") -> subprocess.CompletedProcess[str]:
    """``osprey ARGS``; with ``setup``, in a private mount namespace after those mounts."""
    command = [sys.executable, "-m", "osprey_core", *args]
    if setup:
        command = ["unshare", "-m", "sh", "-ec", f'{setup}\nexec "$@"', "sh", *command]
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True,
                          encoding="utf-8", timeout=120, check=False,
                          stdin=subprocess.DEVNULL)


def can_mount() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs none /mnt"],
                           capture_output=True, check=False)
    return probe.returncode == 0


needs_mounts = pytest.mark.skipif(not can_mount(), reason="needs mount namespaces (root)")


def read_only(directory: Path) -> str:
    """Mount commands that make ``directory`` read-only inside the namespace."""
    return f"mount --bind '{directory}' '{directory}'\nmount -o remount,bind,ro '{directory}'"
