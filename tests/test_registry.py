"""Registry validation: type, instance vs class, names, duplicates, lookups, origin."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from osprey_core.errors import DuplicateNameError, RegistryError, UnknownNameError
from osprey_core.hookspecs.capabilities import Capability
from osprey_core.hookspecs.code_generators import CodeGenerator
from osprey_core.hookspecs.services import ServiceSpec
from osprey_core.registry import NAME_PATTERN, Registry, did_you_mean


class ReadChannels(Capability):
    name = "read_channels"
    description = "Read control-system channels."

    async def execute(self, step: Any) -> Any:
        return step


class PlotHistory(Capability):
    name = "plot_history"
    description = "Plot archived data."

    async def execute(self, step: Any) -> Any:
        return step


class MockGenerator(CodeGenerator):
    name = "mock"

    async def generate(self, request: Any, feedback: list[str]) -> str:
        return "print('hello')"


def capability_named(value: object) -> Capability:
    """A capability instance whose ``name`` is ``value`` (possibly invalid)."""
    cls = type("Named", (ReadChannels,), {"name": value})
    return cls()


@pytest.fixture
def capabilities() -> Registry[Capability]:
    return Registry("capability", Capability, "instance")


@pytest.fixture
def generators() -> Registry[type[CodeGenerator]]:
    return Registry("code generator", CodeGenerator, "class")


def test_add_and_lookup(capabilities: Registry[Capability]) -> None:
    read, plot = ReadChannels(), PlotHistory()
    capabilities.add(read, plugin="core")
    capabilities.add(plot, plugin="facility")
    assert capabilities.get("read_channels") is read
    assert capabilities.names() == ["plot_history", "read_channels"]
    assert list(capabilities) == [plot, read]  # sorted by name, not by insertion
    assert len(capabilities) == 2
    assert "plot_history" in capabilities and "write_channels" not in capabilities
    assert [(e.name, e.plugin) for e in capabilities.entries()] == [
        ("plot_history", "facility"), ("read_channels", "core")]


def test_origin_names_the_plugin(capabilities: Registry[Capability]) -> None:
    capabilities.add(ReadChannels(), plugin="osprey-core")
    capabilities.add(PlotHistory(), plugin="als_tools")
    assert capabilities.origin("plot_history") == "als_tools"
    assert capabilities.origin("read_channels") == "osprey-core"
    with pytest.raises(UnknownNameError, match="no capability named 'plot'"):
        capabilities.origin("plot")


@pytest.mark.parametrize("item", [object(), "read_channels", 42, None, MockGenerator])
def test_wrong_type_is_refused_naming_plugin_and_base(
    capabilities: Registry[Capability], item: object
) -> None:
    with pytest.raises(RegistryError) as caught:
        capabilities.add(item, plugin="sloppy")  # type: ignore[arg-type]
    message = str(caught.value)
    assert "plugin 'sloppy'" in message
    assert "an instance of osprey_core.hookspecs.capabilities.Capability" in message
    assert len(capabilities) == 0


def test_class_given_where_instance_expected(capabilities: Registry[Capability]) -> None:
    with pytest.raises(RegistryError, match="must be an instance of"):
        capabilities.add(ReadChannels, plugin="p")  # type: ignore[arg-type]


def test_instance_given_where_class_expected(
    generators: Registry[type[CodeGenerator]],
) -> None:
    with pytest.raises(RegistryError, match=r"must be a subclass of .*CodeGenerator"):
        generators.add(MockGenerator(), plugin="p")  # type: ignore[arg-type]
    with pytest.raises(RegistryError, match="must be a subclass of"):
        generators.add(ReadChannels, plugin="p")  # type: ignore[arg-type]
    generators.add(MockGenerator, plugin="p")
    assert generators.get("mock") is MockGenerator


def test_dataclass_items_are_validated_by_their_name_field() -> None:
    services: Registry[ServiceSpec] = Registry("service", ServiceSpec, "instance")
    services.add(ServiceSpec("osprey.logbook", "ARIEL", "tmpl"), plugin="core")
    services.add(ServiceSpec("applications.als.web-ui", "UI", "tmpl"), plugin="als")
    assert services.names() == ["applications.als.web-ui", "osprey.logbook"]
    with pytest.raises(RegistryError, match=r"invalid name 'Osprey\.Logbook'"):
        services.add(ServiceSpec("Osprey.Logbook", "x", "tmpl"), plugin="als")


@pytest.mark.parametrize(
    "name",
    ["", "ReadChannels", "read channels", "1read", "_private", "read!", "a..b", "a.", "-a",
     "read/channels", "rëad", None, 3, b"read"],
)
def test_bad_names_are_refused(capabilities: Registry[Capability], name: object) -> None:
    with pytest.raises(RegistryError) as caught:
        capabilities.add(capability_named(name), plugin="facility")
    message = str(caught.value)
    assert f"invalid name {name!r}" in message
    assert "plugin 'facility'" in message
    assert len(capabilities) == 0


@pytest.mark.parametrize("name", ["a", "read_channels", "epics", "osprey.logbook",
                                  "applications.als.web-ui", "bpm_2", "x.y-z_1"])
def test_good_names_are_accepted(capabilities: Registry[Capability], name: str) -> None:
    capabilities.add(capability_named(name), plugin="facility")
    assert capabilities.names() == [name]


@pytest.mark.parametrize("name", ["epics\n", "epics\r", "epics ", "\nepics"])
def test_whitespace_around_names_is_refused(
    capabilities: Registry[Capability], name: str
) -> None:
    # A regex ending in '$' matches before a final newline; names go into YAML and shells.
    assert NAME_PATTERN.match(name) is None
    with pytest.raises(RegistryError, match="invalid name"):
        capabilities.add(capability_named(name), plugin="p")


def test_duplicate_names_both_plugins_and_first_kept(
    capabilities: Registry[Capability],
) -> None:
    first = ReadChannels()
    capabilities.add(first, plugin="osprey-core")
    with pytest.raises(DuplicateNameError) as caught:
        capabilities.add(capability_named("read_channels"), plugin="shadow_plugin")
    message = str(caught.value)
    assert "capability 'read_channels' is registered twice" in message
    assert "plugin 'osprey-core'" in message and "plugin 'shadow_plugin'" in message
    assert "OSPREY_DISABLE_PLUGINS=shadow_plugin" in message
    # Never silently replaced or renamed.
    assert capabilities.get("read_channels") is first
    assert capabilities.origin("read_channels") == "osprey-core"
    assert capabilities.names() == ["read_channels"]


def test_same_plugin_registering_a_name_twice_is_also_refused(
    capabilities: Registry[Capability],
) -> None:
    capabilities.add(ReadChannels(), plugin="p")
    with pytest.raises(DuplicateNameError, match="by plugin 'p' and by plugin 'p'"):
        capabilities.add(ReadChannels(), plugin="p")


def test_unknown_name_suggests_close_match(capabilities: Registry[Capability]) -> None:
    capabilities.add(ReadChannels(), plugin="p")
    capabilities.add(PlotHistory(), plugin="p")
    with pytest.raises(UnknownNameError) as caught:
        capabilities.get("read_channel")
    message = str(caught.value)
    assert "no capability named 'read_channel'" in message
    assert "(did you mean 'read_channels'?)" in message
    assert "registered: plot_history, read_channels" in message
    assert isinstance(caught.value, LookupError)


def test_unknown_name_without_close_match(capabilities: Registry[Capability]) -> None:
    with pytest.raises(UnknownNameError) as caught:
        capabilities.get("anything")
    assert "did you mean" not in str(caught.value)
    assert "registered: none" in str(caught.value)


def test_did_you_mean() -> None:
    assert did_you_mean("epcs", ["epics", "tango"]) == " (did you mean 'epics'?)"
    assert did_you_mean("zzz", ["epics", "tango"]) == ""
    assert did_you_mean("x", []) == ""


def test_class_attribute_name_is_read_from_classes(
    generators: Registry[type[CodeGenerator]],
) -> None:
    class Nameless(CodeGenerator):
        name: ClassVar[str]

        async def generate(self, request: Any, feedback: list[str]) -> str:
            return ""

    with pytest.raises(RegistryError, match="invalid name None"):
        generators.add(Nameless, plugin="p")


def test_abstract_class_is_refused_naming_missing_methods(
    generators: Registry[type[CodeGenerator]],
) -> None:
    class HalfDone(CodeGenerator):
        name = "half_done"

    with pytest.raises(RegistryError, match=r"plugin 'p'.*HalfDone.*generate"):
        generators.add(HalfDone, plugin="p")
    assert "half_done" not in generators
