"""Channel names are parsed whole and refused whole, and errors quote long input short
(hardening issue, item 16)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.dist import osprey_env
from support.mounts import run_osprey

from osprey_core.api import Osprey
from osprey_core.control.capabilities import match_history, match_read, match_write
from osprey_core.control.errors import ControlSystemError
from osprey_core.run_machine import RunState

ACCENTED = ["SR:CÜRRENT", "SR:C\u0301URRENT", "HCM1:SPé", "BPM1:\uff38", "SR:CURRENT\u200b"]


@pytest.mark.parametrize("name", ACCENTED)
def test_the_offline_phrasings_take_a_name_whole(name: str) -> None:
    assert match_read(f"read {name}") == {"channels": [name]}
    assert match_read(f"read {name} and BPM1:X") == {"channels": [name, "BPM1:X"]}
    assert match_write(f"set {name} to 2 A") == {
        "writes": [{"channel": name, "value": 2, "units": "A"}]}
    found = match_history(f"history of {name} over the last hour")
    assert found is not None and found["channels"] == [name]


def test_ordinary_phrasings_are_unchanged() -> None:
    assert match_read("read SR:CURRENT and BPM1:X?") == {"channels": ["SR:CURRENT", "BPM1:X"]}
    assert match_read("what is sys/tg_test/1/double_scalar?") == {
        "channels": ["sys/tg_test/1/double_scalar"]}
    assert match_write("set HCM1:SP to 1.5 A, then set HCM2:SP to -0.5") == {"writes": [
        {"channel": "HCM1:SP", "value": 1.5, "units": "A"},
        {"channel": "HCM2:SP", "value": -0.5}]}


@pytest.fixture
def osprey(tmp_path: Path) -> Iterator[Osprey]:
    from osprey_core.config import load_config
    from osprey_core.plugin_host import load_plugins

    host = load_plugins(environ={})
    config = load_config(host, None, environ={"OSPREY_HOME": str(tmp_path / "home")})
    with Osprey(host=host, config=config) as instance:
        yield instance


@pytest.mark.parametrize("name", ACCENTED)
def test_the_simulated_machine_refuses_a_name_it_would_have_cut(osprey: Osprey,
                                                                 name: str) -> None:
    run = osprey.run(f"read {name}")
    assert run.state is RunState.FAILED
    assert "invalid channel name" in (run.error or "")
    assert "SR:C'" not in (run.error or "")
    write = osprey.run(f"set {name} to 1 A")
    assert write.state is RunState.FAILED and "invalid channel name" in (write.error or "")
    assert osprey.pending() == []  # refused before anyone was asked


def test_a_megabyte_of_name_is_quoted_short(osprey: Osprey) -> None:
    name = "SR:" + "Ü" * 1_000_000
    run = osprey.run(f"read {name}")
    assert run.state is RunState.FAILED
    assert len(run.error or "") < 600

    control = osprey.runtime.control_system
    with pytest.raises(ControlSystemError) as refused:
        asyncio.run(control.read(name))
    assert len(str(refused.value)) < 400


def test_the_command_line_quotes_a_long_name_short(tmp_path: Path) -> None:
    env = osprey_env(tmp_path / "home")
    result = run_osprey(["channels", "read", "SR:" + "é" * 60_000], env, tmp_path)
    assert result.returncode != 0
    assert "invalid channel name" in result.stderr
    assert len(result.stderr) < 1000 and "Traceback" not in result.stderr
