"""The public API type-checks under ``mypy --strict``, and a misspelt keyword does not.

mypy cannot follow setuptools' ``package-dir`` table (``hookspecs/`` installs as
``osprey_core.hookspecs``), so the check runs on a tree of symbolic links laid out as the
installed package. ``python tests/test_typing.py`` runs the strict check alone (``nox -s
lint``); the settings live under ``[tool.mypy]`` in ``pyproject.toml``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The installed package's folders and where their source lives (pyproject's package-dir).
MAPPED = {"hookspecs": "hookspecs", "plugins": "plugins", "sandbox": "sandbox"}
STRICT = ("-p", "osprey_core.api", "-p", "osprey_core.hookspecs")

#: A user's script with one misspelt keyword per public surface; each must be reported.
TYPOS = '''
from osprey_core import Osprey
from osprey_core.plugins.embedding_models import MiniLM


async def main(osprey: Osprey) -> None:
    osprey.run("read SR:CURRENT", sesion="ops")
    await osprey.aapprove("apv-1", usr="ana")
    osprey.resume("run-1", indeterminate="maybe")
    MiniLM(enviro={})
    MiniLM().embed_query(text=1)
'''
EXPECTED = ('Unexpected keyword argument "sesion"', 'Unexpected keyword argument "usr"',
            '"indeterminate" to "resume"', 'Unexpected keyword argument "enviro"',
            '"text" to "embed_query"')


def package_tree(dest: Path) -> Path:
    """``dest/osprey_core`` laid out as installed, made of links into the source tree."""
    package = dest / "osprey_core"
    package.mkdir(parents=True)
    for entry in (ROOT / "osprey_core").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    for name, source in MAPPED.items():
        (package / name).symlink_to(ROOT / source)
    return dest


def mypy(tree: Path, *targets: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
         "--cache-dir", str(tree / ".mypy_cache"), "--no-error-summary", *targets],
        cwd=tree, capture_output=True, text=True)


@pytest.mark.timeout(900)
def test_the_public_api_is_strictly_typed_and_rejects_misspelt_keywords(
        tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    tree = package_tree(tmp_path)
    (tree / "typos.py").write_text(TYPOS)
    result = mypy(tree, *STRICT, "-m", "typos")
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert [line for line in errors if not line.startswith("typos.py")] == []
    for expected in EXPECTED:
        assert any(expected in line for line in errors), (expected, result.stdout)
    assert len(errors) == len(EXPECTED), result.stdout


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as scratch:
        checked = mypy(package_tree(Path(scratch)), *STRICT)
    print(checked.stdout + checked.stderr, end="")
    sys.exit(checked.returncode)
