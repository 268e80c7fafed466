"""What ships: a small core install, lazy heavy imports, one top-level package."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
HEAVY_MODULES = ("openai", "epics", "tango", "torch", "sentence_transformers", "numpy",
                 "fastapi", "starlette", "uvicorn", "httpx", "jinja2", "psycopg", "psycopg_pool")


def core_closure(name: str = "osprey-core") -> set[str]:
    """Every distribution a plain ``pip install osprey-core`` brings, itself included."""
    environment = default_environment() | {"extra": ""}
    seen: set[str] = set()
    pending = [name]
    while pending:
        current = canonicalize_name(pending.pop())
        if current in seen:
            continue
        seen.add(current)
        for line in distribution(current).requires or ():
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate(environment):
                pending.append(requirement.name)
    return seen


def test_core_install_is_at_most_30_distributions() -> None:
    closure = core_closure()
    assert "osprey-core" in closure and "pluggy" in closure
    assert len(closure) <= 30, sorted(closure)


def test_extras_stay_out_of_the_core_install() -> None:
    closure = core_closure()
    for heavy in ("openai", "pyepics", "pytango", "torch", "sentence-transformers"):
        assert heavy not in closure


def imported_after(code: str) -> list[str]:
    """Heavy top-level modules present in ``sys.modules`` after running ``code``."""
    probe = (
        "import sys, json\n"
        f"{code}\n"
        "loaded = {name.split('.')[0] for name in sys.modules}\n"
        f"print(json.dumps(sorted(loaded & set({HEAVY_MODULES!r}))))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True, cwd=REPO / "tests")
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_loading_every_plugin_imports_no_heavy_library() -> None:
    code = (
        "from osprey_core.plugin_host import FAMILIES, load_plugins\n"
        "host = load_plugins()\n"
        "assert host.plugins and not host.failures(), host.failures()\n"
        "for family in FAMILIES: host.registry(family)\n"
        "host.config_sections()"
    )
    assert imported_after(code) == []


def test_osprey_help_imports_no_heavy_library() -> None:
    code = (
        "import contextlib, io\n"
        "from osprey_core.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])"
    )
    assert imported_after(code) == []


def test_only_osprey_core_is_installed_at_top_level() -> None:
    top_level = distribution("osprey-core").read_text("top_level.txt")
    assert top_level is not None
    assert top_level.split() == ["osprey_core"]


def test_mapped_folders_import_under_the_package_prefix() -> None:
    import osprey_core.hookspecs
    import osprey_core.plugins
    import osprey_core.sandbox

    assert Path(osprey_core.hookspecs.__file__).parent.name == "hookspecs"
    assert Path(osprey_core.plugins.__file__).parent.name == "plugins"
    assert Path(osprey_core.sandbox.__file__).parent.name == "sandbox"


def test_ruff_bans_bare_imports_of_mapped_folders() -> None:
    source = "import plugins\nfrom sandbox import runner\nfrom hookspecs import hookspec\n"
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--select", "TID251",
         "--stdin-filename", "osprey_core/probe.py", "-"],
        input=source, capture_output=True, text=True, cwd=REPO,
    )
    assert result.returncode == 1
    assert result.stdout.count("TID251") == 3, result.stdout


def test_osprey_help_loads_neither_pydantic_nor_the_orchestrator() -> None:
    """Every command module is imported for --help; their heavy imports must wait."""
    probe = (
        "import contextlib, io, json, sys\n"
        "from osprey_core.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "heavy = ('pydantic', 'osprey_core.orchestration.orchestrator', 'osprey_core.store',\n"
        "         'sqlite_utils', 'asyncio')\n"
        "print(json.dumps([name for name in heavy if name in sys.modules]))"
    )
    result = subprocess.run([sys.executable, "-P", "-c", probe], capture_output=True, text=True,
                            check=True, cwd=REPO / "tests")
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_every_package_folder_is_listed_in_pyproject() -> None:
    """A sub-package missing from the list works editable and breaks a real install."""
    import tomllib

    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setup["packages"])
    on_disk = set()
    for package, folder in setup["package-dir"].items():
        for init in (REPO / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO / folder)
            on_disk.add(".".join((package, *relative.parts)))
    assert on_disk <= listed, f"add to pyproject packages: {sorted(on_disk - listed)}"
