"""Configuration that must never be guessed: switches take only true/false, YAML aliases
cannot explode, plugin-chosen names are checked at load (hardening issue, items 10, 15,
17)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict
from support.dist import osprey_env

from osprey_core.config import load_config
from osprey_core.control.limits import LimitsDatabase
from osprey_core.control.simulation import load_machine
from osprey_core.errors import ConfigError
from osprey_core.hookspecs import hookimpl
from osprey_core.plugin_host import PluginHost, load_plugins
from osprey_core.yamlio import MAX_ALIASES, YAMLBombError, safe_load


@pytest.fixture(scope="module")
def host() -> PluginHost:
    """Every built-in plugin, as an operator's osprey has them."""
    return load_plugins(environ={"OSPREY_LOAD_PLUGINS": ",".join([
        "mock_connector", "mock_archiver", "epics", "execution_backends", "mock_generator",
        "llm_generators", "python", "channel_capabilities", "memory"])})


def error_of(host: PluginHost, tmp_path: Path, text: str,
             environ: dict[str, str] | None = None) -> str:
    path = tmp_path / "osprey.yml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(host, path, environ=environ or {})
    assert info.value.exit_code == 2
    return str(info.value)


# -- item 10: a safety switch is true or false, nothing else -----------------------------


@pytest.mark.parametrize("value", ['"yes"', "yes", "on", "'on'", "1", "0", '"true"', "Yes",
                                   "y", "[true]", "{}", "null"])
def test_writes_enabled_takes_only_true_or_false(host: PluginHost, tmp_path: Path,
                                                 value: str) -> None:
    message = error_of(host, tmp_path, f"control_system:\n  writes_enabled: {value}\n")
    assert "osprey.yml:2: control_system.writes_enabled: expected true or false" in message


@pytest.mark.parametrize(("text", "expected"), [("true", True), ("false", False),
                                                 ("True", True), ("FALSE", False)])
def test_real_booleans_still_work(host: PluginHost, tmp_path: Path, text: str,
                                  expected: bool) -> None:
    path = tmp_path / "osprey.yml"
    path.write_text(f"control_system:\n  writes_enabled: {text}\n", encoding="utf-8")
    config = load_config(host, path, environ={})
    assert config.section("control_system").writes_enabled is expected


def test_an_environment_switch_is_held_to_the_same_rule(host: PluginHost,
                                                        tmp_path: Path) -> None:
    environ = {"OSPREY__CONTROL_SYSTEM__WRITES_ENABLED": "yes"}
    message = error_of(host, tmp_path, "", environ)
    assert ("environment variable OSPREY__CONTROL_SYSTEM__WRITES_ENABLED: "
            "control_system.writes_enabled: expected true or false, got 'yes'") in message
    path = tmp_path / "osprey.yml"
    config = load_config(host, path, environ={"OSPREY__CONTROL_SYSTEM__WRITES_ENABLED": "true"})
    assert config.section("control_system").writes_enabled is True


def test_every_boolean_is_strict_including_nested_and_plugin_ones(tmp_path: Path) -> None:
    class Section(BaseModel):
        model_config = ConfigDict(extra="forbid")
        armed: bool = False

    class Plugin:
        @hookimpl
        def register_config_sections(self, register):  # type: ignore[no-untyped-def]
            register("interlock", Section)

    own = load_plugins(discover=False, environ={})
    own.register(Plugin(), "interlock_plugin")
    message = error_of(own, tmp_path, "planning:\n  enabled: on\ninterlock:\n  armed: 1\n"
                       "control_system:\n  limits:\n    channels:\n      HCM1:SP:\n"
                       "        writable: 'yes'\n")
    assert "osprey.yml:2: planning.enabled: expected true or false, got 'on'" in message
    assert "osprey.yml:4: interlock.armed: expected true or false, got 1" in message
    assert ("osprey.yml:9: control_system.limits.channels.HCM1:SP.writable: expected true or "
            "false") in message


# -- item 15: YAML aliases cannot explode ----------------------------------------------


def billion_laughs(levels: int = 9) -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, levels):
        name, previous = chr(ord("a") + level), chr(ord("a") + level - 1)
        lines.append(f"{name}: &{name} [" + ",".join(f"*{previous}" for _ in range(9)) + "]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_in_the_config_is_refused_at_once_and_briefly(
        host: PluginHost, tmp_path: Path) -> None:
    bomb = billion_laughs()
    assert len(bomb) < 800
    message = error_of(host, tmp_path, bomb)
    assert "expands to more than" in message and "aliases" in message
    assert len(message) < 500


def test_too_many_aliases_are_refused_even_when_each_is_small(tmp_path: Path) -> None:
    text = "a: &x 1\nb: [" + ", ".join("*x" for _ in range(MAX_ALIASES + 1)) + "]\n"
    with pytest.raises(YAMLBombError, match=f"more than {MAX_ALIASES} aliases"):
        safe_load(text)


def test_alias_bombs_in_limits_and_machine_files_are_refused(tmp_path: Path) -> None:
    limits = tmp_path / "limits.yml"
    limits.write_text("channels:\n  X:\n" + "".join(
        f"    {line}\n" for line in billion_laughs().splitlines()), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"limits file .*expands to more than"):
        LimitsDatabase.load(limits)
    machine = tmp_path / "machine.yml"
    machine.write_text(billion_laughs(), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"machine file .*expands to more than"):
        load_machine(machine)


def test_ordinary_anchors_and_merge_keys_still_work() -> None:
    data = safe_load("base: &b {timeout: 2, retries: 3}\nepics:\n  <<: *b\n  timeout: 5\n")
    assert data["epics"] == {"timeout": 5, "retries": 3}


# -- item 17: names that choose a plugin are checked when the file is read --------------


@pytest.mark.parametrize(("text", "line", "expected"), [
    ("control_system:\n  type: epcis\n", 2,
     "control_system.type: no connector named 'epcis' (did you mean 'epics'?)"),
    ("archiver:\n  type: archiver_appliances\n", 2, "archiver.type: no archiver named"),
    ("execution:\n  backend: nsjial\n", 2,
     "execution.backend: no execution backend named 'nsjial' (did you mean 'nsjail'?)"),
    ("execution:\n  generator: agentik\n", 2, "execution.generator: no code generator named"),
    ("approval:\n  capabilities:\n    pyton: all_code\n", 3,
     "approval.capabilities.pyton: no capability named 'pyton' (did you mean 'python'?)"),
])
def test_an_unknown_plugin_name_is_a_config_error_with_its_line(
        host: PluginHost, tmp_path: Path, text: str, line: int, expected: str) -> None:
    message = error_of(host, tmp_path, text)
    assert f"osprey.yml:{line}: {expected}" in message


def test_config_show_refuses_an_unknown_connector(tmp_path: Path) -> None:
    home = tmp_path / "home"
    path = tmp_path / "osprey.yml"
    path.write_text("control_system:\n  type: epcis\n", encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "osprey_core", "--config", str(path),
                             "config", "show"], env=osprey_env(home), capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stdout
    assert "osprey.yml:2: control_system.type: no connector named 'epcis'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("value", ["yes", "'yes'", "on", "1"])
def test_a_limits_file_switch_takes_only_true_or_false(tmp_path: Path, value: str) -> None:
    limits = tmp_path / "limits.yml"
    limits.write_text(f"channels:\n  HCM1:SP:\n    writable: {value}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"limits file .*channels\.HCM1:SP\.writable"):
        LimitsDatabase.load(limits)
    limits.write_text("allow_unlisted: on\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="allow_unlisted"):
        LimitsDatabase.load(limits)
