"""The plugin host in-process: validation at load, isolation of failures, typed hook calls.

Hosts here never discover entry points (``discover=False``) and get an explicit
``environ``, so neither installed plugins nor CI's ``OSPREY_STRICT_PLUGINS=1`` leak in.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field
from typer.testing import CliRunner

from osprey_core import hookimpl
from osprey_core.cli import build_app
from osprey_core.config import load_config
from osprey_core.errors import (
    ConfigError,
    DuplicateNameError,
    PluginError,
    UnknownNameError,
)
from osprey_core.hookspecs.approval_policies import ApprovalPolicy, Verdict, Vote
from osprey_core.hookspecs.capabilities import Capability
from osprey_core.hookspecs.connectors import ControlSystemConnector
from osprey_core.hookspecs.data_providers import DataProvider
from osprey_core.hookspecs.observers import ApprovalEvent, RunEvent
from osprey_core.hookspecs.services import ServiceSpec
from osprey_core.plugin_host import (
    ESSENTIAL_PLUGINS,
    FAMILIES,
    LoadSettings,
    PluginHost,
    Source,
    Status,
    get_plugin_manager,
    load_plugins,
)
from osprey_core.testing.fakes import (
    FakeArchiver,
    FakeCodeGenerator,
    FakeConnector,
    FakeEmbeddingModel,
    FakeLogbookAdapter,
)

REPO = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 1, 1, tzinfo=UTC)


# -- small plugin parts -------------------------------------------------------------------


class ReadChannels(Capability):
    name = "read_channels"
    description = "Read channels."

    async def execute(self, step: Any) -> Any:
        return step


class OtherCapability(Capability):
    name = "other"
    description = "Another capability."

    async def execute(self, step: Any) -> Any:
        return step


def connector_class(name: str) -> type[ControlSystemConnector]:
    """A concrete connector class (the testing kit's in-memory fake) under ``name``."""
    return FakeConnector.named(name)


def plugin(**hooks: Callable[..., Any]) -> SimpleNamespace:
    """A plugin object from plain functions, each marked as a hook implementation."""
    return SimpleNamespace(**{name: hookimpl(function) for name, function in hooks.items()})


def registers(*items: Any) -> Callable[..., None]:
    def register_all(register: Callable[[Any], None]) -> None:
        for item in items:
            register(item)

    return register_all


@pytest.fixture
def host(osprey_host: PluginHost) -> PluginHost:
    """A lenient host (not strict), whatever the caller's environment says."""
    return osprey_host


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on ``sys.path`` for plugin modules; they are unloaded afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if (getattr(sys.modules[name], "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


def entry_point(name: str, module: str) -> EntryPoint:
    return EntryPoint(name=name, value=module, group="osprey")


LENIENT = LoadSettings(allow=None, deny=frozenset(), strict=False)


# -- validation when a plugin is registered -----------------------------------------------


class Typo:
    @hookimpl
    def register_capabilitys(self, register: Callable[[Any], None]) -> None:
        register(ReadChannels())

    @hookimpl
    def register_connectors(self, register: Callable[[Any], None]) -> None:
        register(connector_class("epics"))


def test_misspelt_hook_is_refused_with_suggestion(host: PluginHost) -> None:
    with pytest.raises(PluginError) as caught:
        host.register(Typo(), "typo")
    message = str(caught.value)
    assert "plugin 'typo'" in message
    assert "unknown hook 'register_capabilitys'" in message
    assert "(did you mean 'register_capabilities'?)" in message
    # Refused as a whole: its correctly spelt hook does not half-register it.
    assert [info.name for info in host.plugins] == []
    assert len(host.connectors()) == 0
    # The name is free again for a fixed version.
    host.register(plugin(register_capabilities=registers(ReadChannels())), "typo")
    assert host.capabilities().origin("read_channels") == "typo"


def test_misspelt_hook_from_entry_point_is_recorded_not_raised(
    host: PluginHost, module_dir: Path
) -> None:
    (module_dir / "typo_plugin.py").write_text(
        "from osprey_core import hookimpl\n\n"
        "@hookimpl\ndef register_comands(app):\n    pass\n"
    )
    info = host.load_entry_point(entry_point("typo", "typo_plugin"), LENIENT)
    assert info.status is Status.FAILED
    assert info.source is Source.ENTRY_POINT
    assert info.error == ("implements unknown hook 'register_comands' "
                          "(did you mean 'register_commands'?)")
    assert host.failures() == [info]
    assert info.hooks == []


def test_optional_hook_of_a_newer_core_is_accepted(host: PluginHost) -> None:
    """Plugins may implement hooks a future osprey-core adds, if they mark them optional."""

    class Forward:
        @hookimpl(optionalhook=True)
        def register_time_machines(self, register: Callable[[Any], None]) -> None:
            raise AssertionError("never called: no such hook yet")

        @hookimpl
        def register_capabilities(self, register: Callable[[Any], None]) -> None:
            register(ReadChannels())

    info = host.register(Forward(), "forward")
    assert info.status is Status.LOADED
    assert host.capabilities().names() == ["read_channels"]


def test_check_pending_names_a_plugin_registered_behind_the_hosts_back() -> None:
    pm = get_plugin_manager()
    pm.register(Typo(), name="sneaky")
    with pytest.raises(PluginError, match=r"plugin 'sneaky'.*register_capabilitys"):
        load_plugins(pm, discover=False, environ={})


def test_bad_hookimpl_signature_is_refused(host: PluginHost, module_dir: Path) -> None:
    bad = plugin(register_capabilities=lambda registr: None)
    with pytest.raises(PluginError) as caught:
        host.register(bad, "bad_args")
    message = str(caught.value)
    assert "plugin 'bad_args'" in message and "registr" in message
    assert "bad_args" not in [info.name for info in host.plugins]

    (module_dir / "bad_args_plugin.py").write_text(
        "from osprey_core import hookimpl\n\n"
        "@hookimpl\ndef register_connectors(register, config):\n    pass\n"
    )
    info = host.load_entry_point(entry_point("bad_args", "bad_args_plugin"), LENIENT)
    assert info.status is Status.FAILED
    assert "'config'" in (info.error or "")


def test_hookimpl_may_take_fewer_arguments_than_the_spec(host: PluginHost) -> None:
    calls: list[str] = []
    host.register(plugin(on_run_event=lambda: calls.append("called")), "listener")
    host.notify_run_event(RunEvent("run-1", "state", NOW))
    assert calls == ["called"]
    assert host.plugin("listener").hook_errors == []


def test_plugin_name_clash_and_unknown_plugin(host: PluginHost) -> None:
    host.register(plugin(register_capabilities=registers(ReadChannels())), "facility")
    with pytest.raises(PluginError, match="a plugin named 'facility' is already registered"):
        host.register(plugin(register_capabilities=registers(OtherCapability())), "facility")
    assert host.capabilities().names() == ["read_channels"]
    with pytest.raises(PluginError, match=r"no plugin named 'facilty'.*did you mean 'facility'"):
        host.plugin("facilty")


def test_same_object_under_a_second_name_keeps_the_first(host: PluginHost) -> None:
    shared = plugin(register_capabilities=registers(ReadChannels()))
    host.register(shared, "first")
    with pytest.raises(PluginError, match="already registered as plugin 'first'"):
        host.register(shared, "second")
    assert host.capabilities().origin("read_channels") == "first"
    assert host.plugin("first").status is Status.LOADED


def test_two_entry_points_naming_one_module(host: PluginHost, module_dir: Path) -> None:
    (module_dir / "twice_plugin.py").write_text(
        "from osprey_core import hookimpl\n"
        "from osprey_core.hookspecs.services import ServiceSpec\n\n"
        "@hookimpl\ndef register_services(register):\n"
        "    register(ServiceSpec('applications.twice', 'twice', 'tmpl'))\n"
    )
    first = host.load_entry_point(entry_point("alpha", "twice_plugin"), LENIENT)
    second = host.load_entry_point(entry_point("beta", "twice_plugin"), LENIENT)
    assert first.status is Status.LOADED and first.hooks == ["register_services"]
    assert second.status is Status.FAILED
    assert "already registered as plugin 'alpha'" in (second.error or "")
    assert host.services().origin("applications.twice") == "alpha"


def test_import_failure_and_sys_exit_are_recorded(host: PluginHost, module_dir: Path) -> None:
    (module_dir / "raising_plugin.py").write_text("raise ImportError('needs pytango')\n")
    (module_dir / "exiting_plugin.py").write_text("import sys\nsys.exit('bye')\n")
    raising = host.load_entry_point(entry_point("raising", "raising_plugin"), LENIENT)
    exiting = host.load_entry_point(entry_point("exiting", "exiting_plugin"), LENIENT)
    assert raising.error == "import of 'raising_plugin' failed: ImportError: needs pytango"
    assert exiting.error == "import of 'exiting_plugin' failed: SystemExit: bye"
    assert [info.name for info in host.failures()] == ["exiting", "raising"]


def test_strict_load_of_a_broken_entry_point_raises(
    strict_host: PluginHost, module_dir: Path
) -> None:
    (module_dir / "raising_plugin2.py").write_text("raise RuntimeError('no tango host')\n")
    strict = LoadSettings(allow=None, deny=frozenset(), strict=True)
    with pytest.raises(PluginError, match=r"plugin 'raising2'.*RuntimeError: no tango host"):
        strict_host.load_entry_point(entry_point("raising2", "raising_plugin2"), strict)


def test_blocked_entry_point_is_never_imported(host: PluginHost, module_dir: Path) -> None:
    (module_dir / "blocked_plugin.py").write_text("raise RuntimeError('imported!')\n")
    settings = LoadSettings(allow=None, deny=frozenset({"blocked"}), strict=True)
    info = host.load_entry_point(entry_point("blocked", "blocked_plugin"), settings)
    assert info.status is Status.BLOCKED
    assert info.error is None
    assert "blocked_plugin" not in sys.modules


# -- failures inside hooks ----------------------------------------------------------------


def raising(*_: Any) -> None:
    raise RuntimeError("EPICS_CA_ADDR_LIST is not set")


@pytest.mark.exercises_hook("register_capabilities")
def test_raising_registration_hook_is_recorded_when_lenient(host: PluginHost) -> None:
    host.register(plugin(register_capabilities=registers(ReadChannels())), "good")
    host.register(plugin(register_capabilities=raising), "bad")
    host.register(plugin(register_capabilities=registers(object())), "wrong_type")

    capabilities = host.capabilities()
    assert capabilities.names() == ["read_channels"]
    assert capabilities.origin("read_channels") == "good"
    assert host.plugin("bad").hook_errors == [
        "register_capabilities: RuntimeError: EPICS_CA_ADDR_LIST is not set"]
    assert host.plugin("bad").status is Status.LOADED
    [wrong] = host.plugin("wrong_type").hook_errors
    assert wrong.startswith("register_capabilities: RegistryError: plugin 'wrong_type' "
                            "registered <object object")
    assert host.plugin("good").hook_errors == []
    # The registry is built once: asking again does not record the errors twice.
    host.capabilities()
    assert len(host.plugin("bad").hook_errors) == 1


@pytest.mark.exercises_hook("register_capabilities")
def test_raising_registration_hook_is_fatal_when_strict(strict_host: PluginHost) -> None:
    strict_host.register(plugin(register_capabilities=registers(ReadChannels())), "good")
    strict_host.register(plugin(register_capabilities=raising), "bad")
    with pytest.raises(PluginError) as caught:
        strict_host.capabilities()
    assert str(caught.value) == (
        "plugin 'bad' failed in register_capabilities: "
        "RuntimeError: EPICS_CA_ADDR_LIST is not set")
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert strict_host.plugin("bad").hook_errors != []


def test_sys_exit_inside_a_hook_does_not_end_the_host(host: PluginHost) -> None:
    host.register(plugin(register_data_providers=lambda register: sys.exit(4)), "quitter")
    assert len(host.data_providers()) == 0
    assert host.plugin("quitter").hook_errors == ["register_data_providers: SystemExit: 4"]


@pytest.mark.exercises_hook("register_connectors")
@pytest.mark.parametrize("strict", [False, True])
def test_duplicate_connector_names_across_plugins(strict: bool) -> None:
    host = load_plugins(discover=False, environ={"OSPREY_STRICT_PLUGINS": str(int(strict))})
    host.register(plugin(register_connectors=registers(connector_class("epics"))), "core_cs")
    host.register(plugin(register_connectors=registers(connector_class("epics"))), "facility")
    with pytest.raises(DuplicateNameError) as caught:
        host.connectors()
    message = str(caught.value)
    assert "connector 'epics' is registered twice" in message
    assert "plugin 'core_cs'" in message and "plugin 'facility'" in message

    host.unregister("facility")
    assert host.connectors().origin("epics") == "core_cs"


# -- every registration family through its hook -------------------------------------------


class Provider(DataProvider):
    name = "user_memory"
    context_type = "user_memory"

    async def retrieve(self, request: Any) -> Any:
        return None


class Policy(ApprovalPolicy):
    name = "deny_writes"

    def evaluate(self, action: Any) -> Verdict:
        return Verdict(Vote.DENY, "no writes")


@pytest.mark.parametrize(
    ("family", "item", "name"),
    [
        pytest.param("capabilities", ReadChannels(), "read_channels",
                     marks=pytest.mark.exercises_hook("register_capabilities")),
        pytest.param("data_providers", Provider(), "user_memory",
                     marks=pytest.mark.exercises_hook("register_data_providers")),
        pytest.param("code_generators", FakeCodeGenerator.named("mock"), "mock",
                     marks=pytest.mark.exercises_hook("register_code_generators")),
        pytest.param("connectors", connector_class("tango"), "tango",
                     marks=pytest.mark.exercises_hook("register_connectors")),
        pytest.param("archivers", FakeArchiver.named("mock_archiver"),
                     "mock_archiver", marks=pytest.mark.exercises_hook("register_archivers")),
        pytest.param("approval_policies", Policy(), "deny_writes",
                     marks=pytest.mark.exercises_hook("register_approval_policies")),
        pytest.param("logbook_adapters", FakeLogbookAdapter.named("json"),
                     "json", marks=pytest.mark.exercises_hook("register_logbook_adapters")),
        pytest.param("embedding_models", FakeEmbeddingModel.named("minilm"),
                     "minilm", marks=pytest.mark.exercises_hook("register_embedding_models")),
        pytest.param("services", ServiceSpec("osprey.logbook", "ARIEL", "tmpl"),
                     "osprey.logbook", marks=pytest.mark.exercises_hook("register_services")),
    ],
)
def test_each_family_is_filled_through_its_hook(
    strict_host: PluginHost, family: str, item: Any, name: str
) -> None:
    spec = FAMILIES[family]
    strict_host.register(plugin(**{spec.hook: registers(item)}), "contrib")
    registry = getattr(strict_host, family)()
    assert registry is strict_host.registry(family)
    assert registry.get(name) is item
    assert registry.origin(name) == "contrib"
    assert strict_host.plugin("contrib").hooks == [spec.hook]

    # A wrong kind in this family is refused, naming the plugin (strict: raised).
    strict_host.register(plugin(**{spec.hook: registers("not an item")}), "sloppy")
    with pytest.raises(PluginError, match=f"plugin 'sloppy' failed in {spec.hook}: "
                                          f"RegistryError: plugin 'sloppy' registered"):
        strict_host.registry(family)


def test_unknown_name_in_a_family_suggests(host: PluginHost) -> None:
    host.register(plugin(register_connectors=registers(connector_class("epics"))), "cs")
    with pytest.raises(UnknownNameError, match=r"no connector named 'epic'.*'epics'"):
        host.connectors().get("epic")


def test_registries_follow_registration_changes(host: PluginHost) -> None:
    host.register(plugin(register_capabilities=registers(ReadChannels())), "one")
    assert host.capabilities().names() == ["read_channels"]
    host.register(plugin(register_capabilities=registers(OtherCapability())), "two")
    assert host.capabilities().names() == ["other", "read_channels"]
    host.unregister("one")
    assert host.capabilities().names() == ["other"]
    assert [info.name for info in host.plugins] == ["two"]


# -- config sections and commands ---------------------------------------------------------


class BeamlineSettings(BaseModel):
    """Beamline settings."""

    model_config = ConfigDict(extra="forbid")
    energy_kev: float = Field(12.0, description="Photon energy in keV.")


@pytest.mark.exercises_hook("register_config_sections")
def test_config_sections_through_the_hook(strict_host: PluginHost) -> None:
    strict_host.register(
        plugin(register_config_sections=lambda register: register("beamline",
                                                                  BeamlineSettings)),
        "bl_plugin",
    )
    assert strict_host.config_sections() == {"beamline": (BeamlineSettings, "bl_plugin")}
    config = load_config(strict_host, None, environ={"OSPREY__BEAMLINE__ENERGY_KEV": "8.5"})
    assert config.section("beamline") == BeamlineSettings(energy_kev=8.5)

    strict_host.register(
        plugin(register_config_sections=lambda register: register("beamline", BaseModel)),
        "rival",
    )
    with pytest.raises(DuplicateNameError) as caught:
        strict_host.config_sections()
    assert "'bl_plugin'" in str(caught.value) and "'rival'" in str(caught.value)


@pytest.mark.exercises_hook("register_config_sections")
@pytest.mark.parametrize(
    ("name", "model", "expected"),
    [
        ("Beam Line", BeamlineSettings, "bad name 'Beam Line'"),
        ("beam.line", BeamlineSettings, "bad name 'beam.line'"),
        ("beamline", dict, "expected a pydantic BaseModel subclass"),
        ("beamline", BeamlineSettings(), "expected a pydantic BaseModel subclass"),
    ],
)
def test_bad_config_sections_are_refused(
    host: PluginHost, name: str, model: Any, expected: str
) -> None:
    host.register(plugin(register_config_sections=lambda register: register(name, model)), "p")
    assert host.config_sections() == {}
    [error] = host.plugin("p").hook_errors
    assert error.startswith("register_config_sections: RegistryError: plugin 'p'")
    assert expected in error


@pytest.mark.exercises_hook("register_commands")
def test_commands_through_the_hook(host: PluginHost) -> None:
    def add_hello(app: Any) -> None:
        @app.command("hello")
        def hello(name: str = "operator") -> None:
            print(f"hello {name}")

    host.register(plugin(register_commands=add_hello), "greeter")
    host.register(plugin(register_commands=raising), "broken_cli")
    app = build_app(host)
    result = CliRunner().invoke(app, ["hello", "--name", "control room"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "hello control room"
    assert host.plugin("broken_cli").hook_errors == [
        "register_commands: RuntimeError: EPICS_CA_ADDR_LIST is not set"]


# -- observers ----------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    @hookimpl
    def on_run_event(self, event: RunEvent) -> None:
        self.seen.append(("run", event))

    @hookimpl
    def on_approval_requested(self, event: ApprovalEvent) -> None:
        self.seen.append(("requested", event))

    @hookimpl
    def on_approval_decided(self, event: ApprovalEvent) -> None:
        self.seen.append(("decided", event))


class Exploding:
    @hookimpl
    def on_run_event(self, event: RunEvent) -> None:
        raise ConnectionError("smtp at 127.0.0.1:25 refused")

    @hookimpl
    def on_approval_requested(self, event: ApprovalEvent) -> None:
        raise SystemExit(2)

    @hookimpl
    def on_approval_decided(self, event: ApprovalEvent) -> None:
        raise ValueError("bad webhook")


@pytest.mark.exercises_hook("on_run_event")
@pytest.mark.exercises_hook("on_approval_requested")
@pytest.mark.exercises_hook("on_approval_decided")
def test_observers_never_raise_even_when_strict(strict_host: PluginHost) -> None:
    before, after = Recorder(), Recorder()
    strict_host.register(before, "before")
    strict_host.register(Exploding(), "exploding")
    strict_host.register(after, "after")

    run_event = RunEvent("run-1", "state_changed", NOW, {"to": "executing"})
    approval = ApprovalEvent("ap-1", "run-1", "code", "pending", "ab" * 32, "write", NOW)
    strict_host.notify_run_event(run_event)
    strict_host.notify_approval_requested(approval)
    strict_host.notify_approval_decided(approval)

    expected = [("run", run_event), ("requested", approval), ("decided", approval)]
    assert before.seen == expected
    assert after.seen == expected
    assert strict_host.plugin("exploding").hook_errors == [
        "on_run_event: ConnectionError: smtp at 127.0.0.1:25 refused",
        "on_approval_requested: SystemExit: 2",
        "on_approval_decided: ValueError: bad webhook",
    ]


# -- environment settings -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "allow", "deny", "strict"),
    [
        ({}, None, frozenset(), False),
        ({"OSPREY_LOAD_PLUGINS": ""}, frozenset(), frozenset(), False),
        ({"OSPREY_LOAD_PLUGINS": " a, b ,,"}, frozenset({"a", "b"}), frozenset(), False),
        ({"OSPREY_DISABLE_PLUGINS": "x,y"}, None, frozenset({"x", "y"}), False),
        ({"OSPREY_DISABLE_PLUGINS": ""}, None, frozenset(), False),
        ({"OSPREY_STRICT_PLUGINS": "1"}, None, frozenset(), True),
        ({"OSPREY_STRICT_PLUGINS": " TRUE "}, None, frozenset(), True),
        ({"OSPREY_STRICT_PLUGINS": "yes"}, None, frozenset(), True),
        ({"OSPREY_STRICT_PLUGINS": "on"}, None, frozenset(), True),
        ({"OSPREY_STRICT_PLUGINS": "0"}, None, frozenset(), False),
        ({"OSPREY_STRICT_PLUGINS": "false"}, None, frozenset(), False),
        ({"OSPREY_STRICT_PLUGINS": ""}, None, frozenset(), False),
    ],
)
def test_load_settings_from_environ(
    environ: dict[str, str], allow: frozenset[str] | None, deny: frozenset[str], strict: bool
) -> None:
    assert LoadSettings.from_environ(environ) == LoadSettings(allow, deny, strict)


def test_load_settings_blocks() -> None:
    none = LoadSettings.from_environ({"OSPREY_LOAD_PLUGINS": ""})
    assert none.blocks("example") and none.blocks("anything")
    only = LoadSettings.from_environ({"OSPREY_LOAD_PLUGINS": "example",
                                      "OSPREY_DISABLE_PLUGINS": "example"})
    assert only.blocks("example")  # deny wins over allow
    assert only.blocks("other")
    default = LoadSettings.from_environ({})
    assert not default.blocks("example")


@pytest.mark.parametrize("value", ["2", "maybe", "strict", "y"])
def test_bad_strict_value_is_a_config_error(value: str) -> None:
    with pytest.raises(ConfigError, match=f"OSPREY_STRICT_PLUGINS='{value}'") as caught:
        load_plugins(discover=False, environ={"OSPREY_STRICT_PLUGINS": value})
    assert caught.value.exit_code == 2


def test_load_plugins_reads_strictness(host: PluginHost, strict_host: PluginHost) -> None:
    assert host.strict is False and strict_host.strict is True


def core_entry_point(name: str) -> EntryPoint:
    """The built-in entry point as installed (the first, if installed more than once)."""
    return next(ep for ep in entry_points(group="osprey", name=name)
                if ep.dist is not None and ep.dist.metadata["Name"] == "osprey-core")


@pytest.mark.parametrize("name", sorted(ESSENTIAL_PLUGINS))
def test_essential_plugin_cannot_be_blocked(host: PluginHost, name: str) -> None:
    settings = LoadSettings(allow=frozenset(), deny=frozenset({name}), strict=False)
    info = host.load_entry_point(core_entry_point(name), settings)
    assert info.status is Status.LOADED
    assert info.essential is True
    assert info.source is Source.BUILTIN
    assert info.distribution == "osprey-core"
    assert info.hooks


def test_essential_plugin_failure_is_fatal_even_when_lenient(host: PluginHost) -> None:
    host.register(plugin(register_commands=lambda app: None), "core_commands")
    with pytest.raises(PluginError, match=r"plugin 'core_commands' \(osprey-core .*already used"):
        host.load_entry_point(core_entry_point("core_commands"), LENIENT)


def test_hook_names_are_the_spec_hooks(host: PluginHost) -> None:
    names = host.hook_names()
    assert {family.hook for family in FAMILIES.values()} <= set(names)
    assert {"register_commands", "register_config_sections", "on_run_event",
            "on_approval_requested", "on_approval_decided"} <= set(names)
    assert names == sorted(names)


# -- only the plugin host touches pm.hook -------------------------------------------------


SCANNED_TREES = ("osprey_core", "hookspecs", "plugins", "sandbox")
HOOK_OWNER = REPO / "osprey_core" / "plugin_host.py"


def hook_accesses(source: str) -> list[int]:
    """Lines that reach into a plugin manager's ``hook`` relay.

    Flags ``<x>.hook.<y>``, ``pm.hook`` / ``_pm.hook`` / ``*manager.hook`` and
    ``getattr(x, "hook")``; a plain attribute called ``hook`` elsewhere (``family.hook``)
    and mentions in strings or comments are fine.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            inner = node.value
            if isinstance(inner, ast.Attribute) and inner.attr == "hook":
                found.append(node.lineno)
            elif node.attr == "hook":
                owner = inner.id if isinstance(inner, ast.Name) else getattr(inner, "attr", "")
                if owner.lower().endswith(("pm", "manager")):
                    found.append(node.lineno)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in {"getattr", "hasattr", "vars"}
            and any(isinstance(arg, ast.Constant) and arg.value == "hook" for arg in node.args)
        ):
            found.append(node.lineno)
    return sorted(set(found))


def test_hook_access_detector_can_fail() -> None:
    flagged = "\n".join([
        "pm.hook.register_capabilities(register=f)",
        "self._pm.hook",
        "getattr(pm, 'hook')",
        "host.plugin_manager.hook",
        "something.hook.on_run_event(event=e)",
    ])
    assert hook_accesses(flagged) == [1, 2, 3, 4, 5]
    clean = "\n".join([
        "'''pm.hook is only used by the host'''",
        "spec.hook",
        "FAMILIES['x'].hook == name",
        "# self._pm.hook.on_run_event",
        "host.hook_names()",
    ])
    assert hook_accesses(clean) == []
    assert hook_accesses(HOOK_OWNER.read_text(encoding="utf-8")), "the host itself uses it"


def test_only_the_plugin_host_calls_pm_hook() -> None:
    offenders = []
    for tree in SCANNED_TREES:
        for path in sorted((REPO / tree).rglob("*.py")):
            if path == HOOK_OWNER:
                continue
            for line in hook_accesses(path.read_text(encoding="utf-8")):
                offenders.append(f"{path.relative_to(REPO)}:{line}")
    assert not offenders, f"only {HOOK_OWNER.name} may use a plugin manager's .hook: {offenders}"


@pytest.mark.exercises_hook("register_commands")
def test_same_command_name_from_two_plugins_is_refused_naming_both() -> None:
    import typer

    from osprey_core.errors import DuplicateNameError
    from osprey_core.plugin_host import load_plugins

    def command_plugin(label: str) -> object:
        class Plugin:
            @hookimpl
            def register_commands(self, app: typer.Typer) -> None:
                @app.command("status")
                def status() -> None:
                    print(label)

        return Plugin()

    host = load_plugins(discover=False, environ={})
    host.register(command_plugin("first"), name="first")
    host.register(command_plugin("second"), name="second")
    with pytest.raises(DuplicateNameError, match=r"'osprey status'.*'first'.*'second'"):
        host.add_commands(typer.Typer())
