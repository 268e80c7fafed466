"""The ``osprey`` CLI end to end: real subprocesses, exit codes, no tracebacks on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.dist import osprey_env, run_osprey, write_distribution

from osprey_core.config import MASK

uses_commands = pytest.mark.exercises_hook("register_commands")

# A third-party plugin with its own config section, installed the way pip would.
BEAM_PLUGIN = """
    from pydantic import BaseModel, ConfigDict, SecretStr

    import osprey_core


    class BeamSettings(BaseModel):
        \"\"\"Beam service connection.\"\"\"

        model_config = ConfigDict(extra="forbid")

        url: str = "http://127.0.0.1:5064"
        password: SecretStr | None = None
        dsn: SecretStr | None = None
        max_tokens: int = 100


    @osprey_core.hookimpl
    def register_config_sections(register):
        register("beam", BeamSettings)
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return osprey_env(tmp_path / "home")


@pytest.fixture
def beam_env(tmp_path: Path) -> dict[str, str]:
    site = write_distribution(
        tmp_path / "site", "osprey-plugin-beamcfg",
        entry_points={"beamcfg": "beamcfg_plugin"}, modules={"beamcfg_plugin": BEAM_PLUGIN},
    )
    return osprey_env(tmp_path / "home", pythonpath=site, OSPREY_STRICT_PLUGINS="1")


def assert_clean_failure(result, code: int) -> None:
    assert result.returncode == code, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr


@uses_commands
def test_help_lists_core_commands(env, cwd):
    result = run_osprey("--help", env=env, cwd=cwd)
    assert result.returncode == 0, result.stderr
    for command in ("plugins", "config", "version"):
        assert command in result.stdout


def test_unknown_command_is_a_usage_error(env, cwd):
    result = run_osprey("frobnicate", env=env, cwd=cwd)
    assert_clean_failure(result, 2)
    assert "frobnicate" in result.stderr


@uses_commands
def test_config_show_typo_exits_2_naming_file_and_key(env, cwd):
    (cwd / "osprey.yml").write_text("# site config\nhom: /data\n", encoding="utf-8")
    result = run_osprey("config", "show", env=env, cwd=cwd)
    assert_clean_failure(result, 2)
    assert "osprey.yml:2: hom: unknown key (did you mean 'home'?)" in result.stderr
    assert result.stdout == ""


@uses_commands
@pytest.mark.exercises_hook("register_config_sections")
def test_config_show_wrong_type_in_plugin_section_exits_2(beam_env, cwd):
    (cwd / "osprey.yml").write_text("beam:\n  max_tokens: lots\n", encoding="utf-8")
    result = run_osprey("config", "show", env=beam_env, cwd=cwd)
    assert_clean_failure(result, 2)
    assert "osprey.yml:2: beam.max_tokens: expected int, got 'lots'" in result.stderr


@uses_commands
def test_env_override_error_names_the_variable(env, cwd):
    result = run_osprey("config", "show", env={**env, "OSPREY__HOME__X": "1"}, cwd=cwd)
    assert_clean_failure(result, 2)
    assert "environment variable OSPREY__HOME__X" in result.stderr


@uses_commands
@pytest.mark.exercises_hook("register_config_sections")
def test_config_show_json_masks_plugin_secrets(beam_env, cwd):
    (cwd / "osprey.yml").write_text(
        "beam:\n  url: http://ioc:5064\n  password: hunter2\n  dsn: pg://u:pw@db\n",
        encoding="utf-8")
    result = run_osprey("config", "show", "--json",
                        env={**beam_env, "OSPREY__BEAM__MAX_TOKENS": "7"}, cwd=cwd)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["beam"] == {"url": "http://ioc:5064", "password": MASK, "dsn": MASK,
                             "max_tokens": 7}
    assert shown["home"] == beam_env["OSPREY_HOME"]
    assert "hunter2" not in result.stdout and "pw@db" not in result.stdout


@uses_commands
@pytest.mark.exercises_hook("register_config_sections")
def test_config_show_yaml_names_sources_and_masks(beam_env, cwd):
    (cwd / "osprey.yml").write_text("beam:\n  password: hunter2\n", encoding="utf-8")
    result = run_osprey("config", "show", env={**beam_env, "OSPREY__BEAM__URL": "http://x"},
                        cwd=cwd)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"# file: {cwd / 'osprey.yml'}" in out
    assert "# beam.url <- OSPREY__BEAM__URL" in out
    assert "# plugin beamcfg\nbeam:\n  url: http://x\n" in out
    assert f"password: '{MASK}'" in out
    assert "hunter2" not in out


@uses_commands
@pytest.mark.exercises_hook("register_config_sections")
def test_config_init_writes_valid_file_and_never_clobbers(beam_env, cwd):
    target = cwd / "osprey.yml"
    first = run_osprey("config", "init", env=beam_env, cwd=cwd)
    assert first.returncode == 0, first.stderr
    text = target.read_text(encoding="utf-8")
    assert "beam:\n" in text and "# [plugin beamcfg] Beam service connection." in text
    assert target.stat().st_mode & 0o077 == 0  # it will hold passwords
    shown = run_osprey("config", "show", "--json", env=beam_env, cwd=cwd)
    assert shown.returncode == 0, shown.stderr  # the starter validates as written

    edited = text + "# my site notes\n"
    target.write_text(edited, encoding="utf-8")
    before = target.read_bytes()
    again = run_osprey("config", "init", env=beam_env, cwd=cwd)
    assert_clean_failure(again, 1)
    assert "already exists; use --force" in again.stderr
    assert target.read_bytes() == before

    forced = run_osprey("config", "init", "--force", env=beam_env, cwd=cwd)
    assert forced.returncode == 0, forced.stderr
    assert target.read_text(encoding="utf-8") == text


@uses_commands
def test_config_init_writes_where_config_points(env, cwd):
    result = run_osprey("--config", "site.yml", "config", "init", env=env, cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert (cwd / "site.yml").is_file() and not (cwd / "osprey.yml").exists()
    shown = run_osprey("--config", "site.yml", "config", "show", env=env, cwd=cwd)
    assert shown.returncode == 0, shown.stderr


@uses_commands
def test_missing_config_file_exits_2(env, cwd):
    result = run_osprey("--config", "missing.yml", "config", "show", env=env, cwd=cwd)
    assert_clean_failure(result, 2)
    assert "missing.yml (from --config) does not exist" in result.stderr
    result = run_osprey("config", "show", env={**env, "OSPREY_CONFIG": "gone.yml"}, cwd=cwd)
    assert_clean_failure(result, 2)
    assert "gone.yml (from OSPREY_CONFIG) does not exist" in result.stderr


@uses_commands
def test_invalid_yaml_exits_2_with_position(env, cwd):
    (cwd / "osprey.yml").write_text("home: [unclosed\n", encoding="utf-8")
    result = run_osprey("config", "show", env=env, cwd=cwd)
    assert_clean_failure(result, 2)
    assert "osprey.yml:2:1: invalid YAML" in result.stderr


@uses_commands
def test_plugins_filtered_by_hook_as_json(env, cwd):
    result = run_osprey("plugins", "--hook", "register_commands", "--json", env=env, cwd=cwd)
    assert result.returncode == 0, result.stderr
    plugins = json.loads(result.stdout)
    names = [entry["name"] for entry in plugins]
    assert "core_commands" in names
    assert all("register_commands" in entry["hooks"] for entry in plugins)


@uses_commands
def test_plugins_unknown_hook_exits_2_with_suggestion(env, cwd):
    result = run_osprey("plugins", "--hook", "register_comands", env=env, cwd=cwd)
    assert_clean_failure(result, 2)
    assert "unknown hook 'register_comands' (did you mean 'register_commands'?)" in result.stderr
    result = run_osprey("plugins", "--hook", "nope", env=env, cwd=cwd)
    assert_clean_failure(result, 2)
    assert "unknown hook 'nope'" in result.stderr


@uses_commands
def test_version_json(env, cwd):
    from importlib.metadata import version

    result = run_osprey("version", "--json", env=env, cwd=cwd)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["osprey-core"] == version("osprey-core")
    assert info["python"].count(".") == 2
