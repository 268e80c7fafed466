"""Test configuration: the opt-in osprey testing kit provides the host fixtures."""

import os
from pathlib import Path

import pytest

pytest_plugins = ["osprey_core.testing"]

# Child Python processes must import the installed package, never the source tree in
# their working directory (it lacks the mapped hookspecs/plugins/sandbox folders). An
# editable install hides the difference; CI's real install does not.
os.environ["PYTHONSAFEPATH"] = "1"


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    """A working directory outside the repository, so subprocesses cannot import the
    source tree (or pick up an ./osprey.yml) instead of what is installed."""
    work = tmp_path / "work"
    work.mkdir()
    return work
