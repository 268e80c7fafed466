"""The embedding API's surface: sync twins typed like their async methods, ``async with``
and ``aclose()``, and the public errors importable from ``osprey_core`` without cost."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import osprey_core
from osprey_core.api import Osprey
from osprey_core.config import load_config
from osprey_core.errors import OspreyError
from osprey_core.plugin_host import load_plugins
from osprey_core.run_machine import RunState

SYNC_TWINS = ("run", "pending", "approve", "reject", "edit", "resume", "cancel")


def make(tmp_path: Path) -> Osprey:
    host = load_plugins(environ={})
    return Osprey(host=host, config=load_config(
        host, None, environ={"OSPREY_HOME": str(tmp_path / "home")}))


@pytest.mark.parametrize("name", SYNC_TWINS)
def test_each_sync_method_takes_exactly_its_async_twins_parameters(name: str) -> None:
    sync = inspect.signature(getattr(Osprey, name))
    twin = inspect.signature(getattr(Osprey, f"a{name}"))
    assert not any(p.kind is p.VAR_KEYWORD for p in sync.parameters.values())
    assert [(p.name, p.kind, p.default) for p in sync.parameters.values()] == [
        (p.name, p.kind, p.default) for p in twin.parameters.values()]


def test_a_misspelt_keyword_fails_at_the_call_not_deep_inside(tmp_path: Path) -> None:
    with make(tmp_path) as osprey, pytest.raises(TypeError, match="sesion"):
        osprey.run("read SR:CURRENT", sesion="ops")  # type: ignore[call-arg]


def test_async_with_runs_and_closes_on_the_callers_loop(tmp_path: Path) -> None:
    async def main() -> tuple[Osprey, RunState]:
        async with make(tmp_path) as osprey:
            run = await osprey.arun("read SR:CURRENT", session="ops")
            assert "control_system" in osprey.runtime.__dict__  # connected on this loop
        return osprey, run.state

    osprey, state = asyncio.run(main())
    assert state is RunState.DONE
    assert "control_system" not in osprey.runtime.__dict__
    with pytest.raises(Exception, match="closed"):
        osprey.runtime.store.list_runs()


def test_concurrent_calls_on_one_instance_each_run_to_their_end(tmp_path: Path) -> None:
    """A facility tool may gather requests and decisions on one Osprey: none is dropped."""
    async def main() -> list[RunState]:
        async with make(tmp_path) as osprey:
            reads = [osprey.arun(f"read SR:CURRENT ({n})", session=f"s{n}") for n in range(4)]
            memory = await osprey.arun("remember that the RF is warm", session="m")
            done = await asyncio.gather(*reads, osprey.aapprove(memory.approval_id or ""))
            stored = [osprey.get_run(run.id).state for run in done]
            assert stored == [run.state for run in done]
            return stored

    assert asyncio.run(main()) == [RunState.DONE] * 5


def test_aclose_also_closes_the_loop_the_sync_methods_used(tmp_path: Path) -> None:
    osprey = make(tmp_path)
    assert osprey.run("read SR:CURRENT").state is RunState.DONE
    asyncio.run(osprey.aclose())
    assert osprey._loop is None


def test_public_errors_import_from_the_package_and_share_one_base() -> None:
    from osprey_core import ApprovalError, ConfigError
    from osprey_core import OspreyError as Exported

    assert Exported is OspreyError
    assert issubclass(ApprovalError, OspreyError) and issubclass(ConfigError, OspreyError)
    for name in osprey_core.__all__:
        value = getattr(osprey_core, name)
        assert name in dir(osprey_core)
        if name.endswith("Error"):
            assert issubclass(value, OspreyError), name
    with pytest.raises(AttributeError, match="NoSuchError"):
        osprey_core.NoSuchError  # noqa: B018


def test_importing_the_package_imports_neither_the_api_nor_the_errors(cwd: Path) -> None:
    code = ("import sys, osprey_core; "
            "print(sorted(m for m in sys.modules if m.startswith('osprey_core')))")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True,
                            text=True, check=True).stdout
    assert "osprey_core.api" not in loaded and "osprey_core.errors" not in loaded
    assert "orchestrat" not in loaded


def test_step_services_offered_by_a_harness_say_what_is_missing() -> None:
    from osprey_core.hookspecs.capabilities import StepContext, StepServices

    services = StepServices.offering(control_system="cs")
    assert services.control_system == "cs" and services["control_system"] == "cs"
    with pytest.raises(KeyError, match=r"no 'archiver' here.*offered: control_system"):
        services.archiver  # noqa: B018
    step = StepContext(run_id="r", index=0, query="q", user="u", session="s", parameters={})
    with pytest.raises(KeyError, match="offered: none"):
        step.services.config  # noqa: B018


def test_the_event_reference_lists_exactly_the_kinds_the_run_emits() -> None:
    import re

    from osprey_core.hookspecs.observers import RUN_EVENT_KINDS

    root = Path(__file__).resolve().parents[1]
    source = "\n".join(path.read_text() for path in
                       sorted((root / "osprey_core" / "orchestration").glob("*.py")))
    emitted = set(re.findall(r'(?:\.save\(|event=\(|RunEvent\([^()]*?, |EventRecord\([^()]*?'
                             r'kind=)\s*"(\w+)"', source, re.S))
    assert emitted == set(RUN_EVENT_KINDS)
    documented = re.findall(r"^\| `(\w+)` \|", (root / "docs" / "events.md").read_text(),
                            re.M)
    assert documented == list(RUN_EVENT_KINDS)
