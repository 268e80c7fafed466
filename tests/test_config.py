"""Config loading: one YAML file plus environment overrides, errors that say where and what."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr

import osprey_core
from osprey_core.config import MASK, load_config, starter_yaml
from osprey_core.errors import ConfigError
from osprey_core.plugin_host import PluginHost, load_plugins

uses_sections = pytest.mark.exercises_hook("register_config_sections")


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    port: int = 22


class Tuning(BaseModel):
    """Fine tuning of the beam model."""

    model_config = ConfigDict(extra="forbid")

    depth: int = 3
    tags: list[str] = ["a", "b"]


class BeamSettings(BaseModel):
    """Settings of the test beam plugin."""

    model_config = ConfigDict(extra="forbid")

    units: str = Field("mm", description="Length units for beam positions.")
    port: int = 8080
    rate_hz: float = 1.5
    api_key: SecretStr | None = Field(None, description="Key for the beam service.")
    dsn: SecretStr | None = None  # a secret whose name does not say so
    token: str = ""
    max_tokens: int = 100
    tuning: Tuning = Tuning(depth=7)
    targets: list[Target] = [Target(name="ioc1")]


class Lenient(BaseModel):
    """A plugin model that forgot ``extra="forbid"``: osprey still refuses unknown keys."""

    level: int = 1


class BeamPlugin:
    @osprey_core.hookimpl
    def register_config_sections(self, register):
        register("beam", BeamSettings)
        register("lenient", Lenient)


@pytest.fixture
def host() -> PluginHost:
    host = load_plugins(discover=False, environ={})
    host.register(BeamPlugin(), "beam_plugin")
    return host


def write(tmp_path: Path, text: str, name: str = "osprey.yml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(host: PluginHost, path: Path | None, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(host, path, environ=environ or {})
    assert info.value.exit_code == 2
    return str(info.value)


# -- validation errors -----------------------------------------------------------------------


@uses_sections
def test_typo_names_file_line_key_and_suggestion(host, tmp_path):
    path = write(tmp_path, "beam:\n  units: cm\n  prot: 9000\n")
    message = config_error(host, path)
    assert f"{path}:3: beam.prot: unknown key (did you mean 'port'?)" in message


@uses_sections
def test_unknown_key_without_close_match_lists_allowed_keys(host, tmp_path):
    message = config_error(host, write(tmp_path, "zzz: 1\n"))
    assert ("zzz: unknown key (allowed: approval, archiver, beam, control_system, execution, "
            "home, lenient, llm, logbook, memory, planning, providers, service, store)"
            ) in message


@uses_sections
def test_wrong_type_names_key_path_expected_type_and_value(host, tmp_path):
    path = write(tmp_path, "beam:\n  port: not-a-port\n")
    message = config_error(host, path)
    assert f"{path}:2: beam.port: expected int, got 'not-a-port'" in message


@uses_sections
def test_nested_key_paths_and_list_items(host, tmp_path):
    path = write(tmp_path, (
        "beam:\n"
        "  tuning:\n"
        "    depth: deep\n"
        "    tagz: [x]\n"
        "  targets:\n"
        "    - name: a\n"
        "      port: q\n"
        "    - port: 1\n"
    ))
    message = config_error(host, path)
    assert f"{path}:3: beam.tuning.depth: expected int, got 'deep'" in message
    assert f"{path}:4: beam.tuning.tagz: unknown key (did you mean 'tags'?)" in message
    assert f"{path}:7: beam.targets[0].port: expected int, got 'q'" in message
    assert f"{path}:8: beam.targets[1].name: required key is missing (expected str)" in message


@uses_sections
def test_plugin_model_without_extra_forbid_still_refuses_unknown_keys(host, tmp_path):
    message = config_error(host, write(tmp_path, "lenient:\n  levle: 2\n"))
    assert "lenient.levle: unknown key (did you mean 'level'?)" in message


@uses_sections
def test_section_that_is_not_a_mapping(host, tmp_path):
    message = config_error(host, write(tmp_path, "beam: 5\n"))
    assert "osprey.yml:1: beam: expected a mapping of keys, got 5" in message


@uses_sections
def test_wrong_type_of_a_secret_does_not_print_it(host, tmp_path):
    message = config_error(host, write(tmp_path, "beam:\n  api_key: 987654321\n"))
    assert "beam.api_key: expected str | null, got int (value hidden)" in message
    assert "987654321" not in message


def test_duplicate_key_refused_with_both_lines(osprey_host, tmp_path):
    path = write(tmp_path, "# comment\nhome: /a\nhome: /b\n")
    message = config_error(osprey_host, path)
    assert message == f"{path}:3: duplicate key 'home' (first defined on line 2)"


@uses_sections
def test_nested_duplicate_key(host, tmp_path):
    path = write(tmp_path, "beam:\n  port: 1\n  units: m\n  port: 2\n")
    assert "osprey.yml:4: duplicate key 'beam.port' (first defined on line 2)" in config_error(
        host, path)


def test_invalid_yaml_reports_line_and_column(osprey_host, tmp_path):
    path = write(tmp_path, "home: /a\nbeam:\n  port: [1, 2\n")
    message = config_error(osprey_host, path)
    assert message.startswith(f"{path}:4:1: invalid YAML:")


def test_yaml_tab_indentation_reports_position(osprey_host, tmp_path):
    path = write(tmp_path, "home: /a\n\tport: 1\n")
    assert config_error(osprey_host, path).startswith(f"{path}:2:1: invalid YAML:")


@uses_sections
def test_yaml_anchors_and_merge_keys_work(host, tmp_path):
    path = write(tmp_path, (
        "beam:\n"
        "  targets:\n"
        "    - &ioc {name: ioc1, port: 5064}\n"
        "    - {<<: *ioc, name: ioc2}\n"
    ))
    targets = load_config(host, path, environ={}).section("beam").targets
    assert targets == [Target(name="ioc1", port=5064), Target(name="ioc2", port=5064)]


def test_recursive_yaml_alias_refused(osprey_host, tmp_path):
    path = write(tmp_path, "home: &h [1, *h]\n")
    message = config_error(osprey_host, path)
    assert message == (f"{path}:1:7: invalid YAML: an alias refers to the collection that "
                       "contains it (an infinitely deep value)")


def test_top_level_list_refused(osprey_host, tmp_path):
    path = write(tmp_path, "- home\n- beam\n")
    message = config_error(osprey_host, path)
    assert message == (f"{path}:1: the top level must be a mapping of sections (key: value), "
                       "not a list")


def test_yaml_boolean_key_refused(osprey_host, tmp_path):
    # ``true:`` is a boolean key; pydantic would report a baffling one.
    path = write(tmp_path, "true: 1\n")
    assert "osprey.yml:1: key 'true' reads as true/false in YAML" in config_error(osprey_host, path)


def test_yes_and_on_are_words_not_booleans(osprey_host, tmp_path):
    # YAML 1.2, not 1.1: ``on:`` is a key like any other.
    path = write(tmp_path, "on: 1\n")
    assert "osprey.yml:1: on: unknown key" in config_error(osprey_host, path)


@pytest.mark.parametrize("text", ["", "# nothing but comments\n", "---\n"])
def test_empty_file_means_defaults(host, tmp_path, text):
    config = load_config(host, write(tmp_path, text), environ={})
    assert config.section("beam").port == 8080
    assert config.path == tmp_path / "osprey.yml"


@uses_sections
def test_section_with_every_key_commented_out_means_defaults(host, tmp_path):
    config = load_config(host, write(tmp_path, "beam:\n  # port: 1\n"), environ={})
    assert config.section("beam").port == 8080


def test_unknown_section_lookup_suggests(host, tmp_path):
    config = load_config(host, None, environ={})
    with pytest.raises(ConfigError, match="no config section named 'bean' \\(did you mean 'beam'"):
        config.section("bean")


# -- finding the file ------------------------------------------------------------------------


def test_missing_explicit_file_is_an_error(osprey_host, tmp_path):
    missing = tmp_path / "nope.yml"
    assert config_error(osprey_host, missing) == (
        f"config file {missing} (from --config) does not exist")


def test_osprey_config_env_names_its_source(osprey_host, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "home: /from/cwd\n")  # ignored: OSPREY_CONFIG wins over ./osprey.yml
    chosen = write(tmp_path, "home: /from/env\n", name="site.yml")
    config = load_config(osprey_host, environ={"OSPREY_CONFIG": str(chosen)})
    assert config.path == chosen
    assert config.home == Path("/from/env")
    message = config_error(osprey_host, None, {"OSPREY_CONFIG": "gone.yml"})
    assert message == "config file gone.yml (from OSPREY_CONFIG) does not exist"


def test_explicit_path_beats_osprey_config(osprey_host, tmp_path):
    explicit = write(tmp_path, "home: /explicit\n", name="a.yml")
    config = load_config(osprey_host, explicit, environ={"OSPREY_CONFIG": str(tmp_path / "x")})
    assert config.home == Path("/explicit")


def test_discovers_osprey_yml_in_cwd(osprey_host, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config(osprey_host, environ={}).path is None
    write(tmp_path, "home: /here\n")
    config = load_config(osprey_host, environ={})
    assert config.path == Path("osprey.yml")
    assert config.home == Path("/here")


def test_config_path_that_is_a_directory(osprey_host, tmp_path):
    assert "is not a file" in config_error(osprey_host, tmp_path)


# -- environment -----------------------------------------------------------------------------


@uses_sections
def test_env_overrides_are_typed_like_yaml(host, tmp_path):
    path = write(tmp_path, "beam:\n  port: 1\n  units: m\n")
    config = load_config(host, path, environ={
        "OSPREY__BEAM__PORT": "9000",
        "OSPREY__BEAM__RATE_HZ": "2.5",
        "OSPREY__BEAM__TUNING__TAGS": "[x, y]",
        "OSPREY__BEAM__TARGETS": "[{name: ioc9, port: 5064}]",
    })
    beam = config.section("beam")
    assert beam.port == 9000
    assert beam.rate_hz == 2.5
    assert beam.tuning.tags == ["x", "y"]
    assert beam.targets == [Target(name="ioc9", port=5064)]
    assert beam.units == "m"  # untouched keys keep the file's value
    assert config.env_overrides["OSPREY__BEAM__PORT"] == "beam.port"


@uses_sections
def test_env_text_fields_keep_the_value_verbatim(host):
    # YAML would turn these into True, an int and a string cut at '#'.
    config = load_config(host, None, environ={
        "OSPREY__BEAM__UNITS": "on",
        "OSPREY__BEAM__TOKEN": "0123",
        "OSPREY__BEAM__API_KEY": "s3cr3t #1",
    })
    beam = config.section("beam")
    assert (beam.units, beam.token) == ("on", "0123")
    assert beam.api_key.get_secret_value() == "s3cr3t #1"


@uses_sections
def test_env_override_into_section_left_empty_in_file(host, tmp_path):
    path = write(tmp_path, "beam:\n")
    config = load_config(host, path, environ={"OSPREY__BEAM__PORT": "7"})
    assert config.section("beam").port == 7


@uses_sections
def test_env_errors_name_the_variable(host, tmp_path):
    path = write(tmp_path, "beam:\n  port: 1\n")
    message = config_error(host, path, {"OSPREY__BEAM__PORT": "fast"})
    assert "environment variable OSPREY__BEAM__PORT: beam.port: expected int, got 'fast'" in message
    message = config_error(host, path, {"OSPREY__BEAM__PROT": "1"})
    assert ("environment variable OSPREY__BEAM__PROT: beam.prot: unknown key "
            "(did you mean 'port'?)") in message
    message = config_error(host, None, {"OSPREY__BAEM__PORT": "1"})
    assert "environment variable OSPREY__BAEM__PORT: baem: unknown key (did you mean 'beam'?)" in (
        message)


@uses_sections
def test_env_override_below_a_scalar_is_refused(host, tmp_path):
    message = config_error(host, write(tmp_path, "beam:\n  port: 1\n"),
                           {"OSPREY__BEAM__PORT__X": "1"})
    assert message == "environment variable OSPREY__BEAM__PORT__X: 'beam.port' is not a section"
    message = config_error(host, None, {"OSPREY__BEAM__PORT__X": "1"})
    assert "environment variable OSPREY__BEAM__PORT__X: beam.port: expected int" in message
    message = config_error(host, None, {"OSPREY__BEAM____PORT": "1"})
    assert "OSPREY__BEAM____PORT: empty key segment" in message


def test_osprey_home_env(osprey_host, tmp_path):
    path = write(tmp_path, "home: /from/file\n")
    config = load_config(osprey_host, path, environ={"OSPREY_HOME": str(tmp_path / "h")})
    assert config.home == tmp_path / "h"
    assert config.env_overrides == {"OSPREY_HOME": "home"}
    # Without a configured home, OSPREY_HOME and XDG_DATA_HOME come from the given environ.
    assert load_config(osprey_host, None, environ={"XDG_DATA_HOME": "/xdg"}).home == Path(
        "/xdg/osprey")


def test_relative_home_in_file_is_relative_to_the_file(osprey_host, tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    path = write(tmp_path, "home: data\n")
    assert load_config(osprey_host, path, environ={}).home == tmp_path / "data"


# -- display ---------------------------------------------------------------------------------


@uses_sections
def test_to_display_masks_secrets(host, tmp_path):
    path = write(tmp_path, (
        "beam:\n"
        "  api_key: hunter2\n"
        "  dsn: postgresql://osprey:pw@db/osprey\n"
        "  token: tok-123\n"
        "  max_tokens: 500\n"
    ))
    shown = load_config(host, path, environ={}).to_display()
    assert shown["beam"]["api_key"] == MASK  # a SecretStr field
    assert shown["beam"]["dsn"] == MASK  # a SecretStr field, masked by type not name
    assert shown["beam"]["token"] == MASK  # a plain str under a secret-looking key
    assert shown["beam"]["max_tokens"] == 500  # a limit, not a secret
    assert not [secret for secret in ("hunter2", "tok-123", "pw@db") if secret in repr(shown)]
    assert shown["beam"]["tuning"] == {"depth": 7, "tags": ["a", "b"]}


@uses_sections
def test_to_display_leaves_unset_secrets_visible_as_unset(host):
    shown = load_config(host, None, environ={}).to_display()
    assert shown["beam"]["api_key"] is None
    assert shown["beam"]["token"] == ""


# -- plugin sections -------------------------------------------------------------------------


@uses_sections
def test_plugin_section_colliding_with_core_key(osprey_host):
    class Squatter:
        @osprey_core.hookimpl
        def register_config_sections(self, register):
            register("home", BeamSettings)

    osprey_host.register(Squatter(), "squatter")
    message = config_error(osprey_host, None)
    assert message == ("plugin 'squatter' registered config section 'home', "
                       "which is a core setting")


@uses_sections
def test_plugin_section_with_required_key_must_be_written(osprey_host, tmp_path):
    class Needs(BaseModel):
        url: str

    class NeedsPlugin:
        @osprey_core.hookimpl
        def register_config_sections(self, register):
            register("needs", Needs)

    osprey_host.register(NeedsPlugin(), "needs_plugin")
    assert "needs: required key is missing" in config_error(osprey_host, None)
    config = load_config(osprey_host, write(tmp_path, "needs:\n  url: http://x\n"), environ={})
    assert config.section("needs").url == "http://x"


# -- starter file ----------------------------------------------------------------------------


@uses_sections
def test_starter_yaml_round_trips(host, tmp_path):
    text = starter_yaml(host)
    path = write(tmp_path, text)
    config = load_config(host, path, environ={})
    default = load_config(host, None, environ={})
    assert config.settings.model_dump() == default.settings.model_dump()
    assert "# [plugin beam_plugin] Settings of the test beam plugin." in text
    assert "  # Length units for beam positions.\n  units: mm\n" in text
    assert "  # Fine tuning of the beam model.\n  tuning:\n    depth: 7\n" in text
    assert "  # api_key: null  # str | null\n" in text
    data = yaml.safe_load(text)
    assert data["beam"]["targets"] == [{"name": "ioc1", "port": 22}]
    assert "home" not in data  # unset by default: left commented out


def test_starter_yaml_without_plugins_validates(osprey_host, tmp_path):
    text = starter_yaml(osprey_host)
    assert "# home: null" in text
    load_config(osprey_host, write(tmp_path, text), environ={})


@uses_sections
def test_starter_yaml_marks_required_keys_and_points_at_them(osprey_host, tmp_path):
    class Needs(BaseModel):
        url: str = Field(description="Where the service listens.")

    class NeedsPlugin:
        @osprey_core.hookimpl
        def register_config_sections(self, register):
            register("needs", Needs)

    osprey_host.register(NeedsPlugin(), "needs_plugin")
    text = starter_yaml(osprey_host)
    assert "needs:\n  # Where the service listens.\n  url:  # required: str\n" in text
    path = write(tmp_path, text)
    line = text.splitlines().index("  url:  # required: str") + 1
    assert f"{path}:{line}: needs.url: expected str, got None" in config_error(osprey_host, path)


@uses_sections
def test_problems_found_after_loading_name_file_line_or_variable(host, tmp_path):
    """A plugin checking its section after loading reports like the loader does."""
    from osprey_core.config.loading import describe_problems

    path = write(tmp_path, "beam:\n  units: cm\n  port: 9000\n")
    config = load_config(host, path, environ={"OSPREY__BEAM__UNITS": "mm"})
    message = describe_problems(config, [(("beam", "port"), "already taken"),
                                         (("beam", "units"), "not allowed here")])
    assert f"{path}:3: beam.port: already taken" in message
    assert "OSPREY__BEAM__UNITS: beam.units: not allowed here" in message
