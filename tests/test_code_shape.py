"""The shape of the code: no source file grows past what one person reads in one sitting.

A file over the limit is a sign that it holds more than one idea; split it along a real seam
(see how ``osprey_core/analysis/`` or ``osprey_core/logbook/keyword/`` are laid out).
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The folders that install as the ``osprey_core`` package.
SOURCE_FOLDERS = ("osprey_core", "hookspecs", "plugins", "sandbox")
MAX_LINES = 500


def line_counts() -> dict[str, int]:
    """Lines of every Python source file in the package folders, by path from the root."""
    counts = {}
    for folder in SOURCE_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            with path.open("rb") as source:
                counts[str(path.relative_to(ROOT))] = sum(1 for _ in source)
    return counts


def test_the_package_folders_hold_source_files() -> None:
    counts = line_counts()
    assert all(any(path.startswith(f"{folder}/") for path in counts)
               for folder in SOURCE_FOLDERS)


def test_no_source_file_is_over_500_lines() -> None:
    offenders = {path: lines for path, lines in line_counts().items() if lines > MAX_LINES}
    assert not offenders, f"files over {MAX_LINES} lines (split them along a seam): " + ", ".join(
        f"{path} ({lines})" for path, lines in sorted(offenders.items(), key=lambda i: -i[1]))
