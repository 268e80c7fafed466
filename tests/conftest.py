"""Test configuration: the opt-in osprey testing kit provides the host fixtures."""

from pathlib import Path

import pytest

pytest_plugins = ["osprey_core.testing"]


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    """A working directory outside the repository, so subprocesses cannot import the
    source tree (or pick up an ./osprey.yml) instead of what is installed."""
    work = tmp_path / "work"
    work.mkdir()
    return work
