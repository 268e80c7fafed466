"""The opt-in testing kit: its fixtures isolate tests, its fakes behave like the real thing."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from osprey_core.cli import build_app
from osprey_core.control.errors import ChannelNotFoundError, ControlSystemError
from osprey_core.errors import PluginError
from osprey_core.hookspecs.approval_policies import Verdict, Vote
from osprey_core.hookspecs.services import ServiceSpec
from osprey_core.plugin_host import PluginHost, Source, Status
from osprey_core.testing import PluginRegistrar
from osprey_core.testing.fakes import (
    FakeApprovalPolicy,
    FakeArchiver,
    FakeCapability,
    FakeCodeGenerator,
    FakeConnector,
    FakeDataProvider,
    FakeEmbeddingModel,
    FakeExecutionBackend,
    FakeLogbookAdapter,
    fake_plugin,
)

T0 = datetime(2025, 3, 1, tzinfo=UTC)


def run_pytest(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run pytest in a separate process, isolated from this project's configuration (and
    from options given to the outer session through PYTEST_ADDOPTS)."""
    (directory / "pytest.ini").write_text("[pytest]\n")
    environment = {key: value for key, value in os.environ.items() if key != "PYTEST_ADDOPTS"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=directory, capture_output=True, text=True, timeout=120, check=False,
        env=environment,
    )


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture
def hostile_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings that would change a host built from the real environment."""
    monkeypatch.setenv("OSPREY_STRICT_PLUGINS", "1")
    monkeypatch.setenv("OSPREY_LOAD_PLUGINS", "core_commands")


def test_osprey_host_ignores_installed_plugins_and_environment(
    hostile_environment: None, osprey_host: PluginHost
) -> None:
    assert osprey_host.plugins == []
    assert osprey_host.strict is False
    assert "register_capabilities" in osprey_host.hook_names()
    assert len(osprey_host.capabilities()) == 0


def test_register_plugin_names_and_records_the_plugin(
    osprey_host: PluginHost, register_plugin: PluginRegistrar
) -> None:
    default = register_plugin(fake_plugin(name="vacuum", services=[
        ServiceSpec("osprey.vacuum", "Vacuum gauges", "image: vacuum\n"),
    ]))
    renamed = register_plugin(fake_plugin(services=[
        ServiceSpec("osprey.rf", "RF", "image: rf\n"),
    ]), name="rf")

    assert (default.name, default.source, default.status) == (
        "vacuum", Source.REGISTERED, Status.LOADED
    )
    assert renamed.name == "rf"
    assert osprey_host.services().origin("osprey.rf") == "rf"
    with pytest.raises(PluginError, match="a plugin named 'rf' is already registered"):
        register_plugin(fake_plugin(), name="rf")


def test_registrar_close_unregisters_everything_it_added(osprey_host: PluginHost) -> None:
    registrar = PluginRegistrar(osprey_host)
    registrar(fake_plugin(name="one", capabilities=[FakeCapability("read")]))
    registrar(fake_plugin(name="two", capabilities=[FakeCapability("write")]))
    osprey_host.register(fake_plugin(name="kept", capabilities=[FakeCapability("plot")]))
    assert osprey_host.capabilities().names() == ["plot", "read", "write"]

    osprey_host.unregister("one")  # a test may already have removed one itself
    registrar.close()

    assert [info.name for info in osprey_host.plugins] == ["kept"]
    assert osprey_host.capabilities().names() == ["plot"]
    registrar.close()  # closing twice is harmless
    assert [info.name for info in osprey_host.plugins] == ["kept"]


def test_register_plugin_fixture_tears_down_through_pytest(tmp_path: Path) -> None:
    (tmp_path / "test_kit_user.py").write_text(textwrap.dedent("""
        from osprey_core.testing.fakes import FakeCapability, fake_plugin

        seen = {}

        def test_register(osprey_host, register_plugin):
            register_plugin(fake_plugin(name="p", capabilities=[FakeCapability("c")]))
            assert osprey_host.capabilities().names() == ["c"]
            seen["host"] = osprey_host

        def test_previous_plugin_is_gone(osprey_host):
            assert osprey_host is not seen["host"]
            assert seen["host"].plugins == []
            assert seen["host"].capabilities().names() == []
            assert osprey_host.plugins == []
    """))

    enabled = run_pytest(tmp_path, "-p", "osprey_core.testing", "-p", "no:randomly")
    assert enabled.returncode == 0, enabled.stdout + enabled.stderr
    assert "2 passed" in enabled.stdout

    disabled = run_pytest(tmp_path)  # the kit is opt-in: no fixtures without it
    assert disabled.returncode == 1
    assert "fixture 'osprey_host' not found" in disabled.stdout


def test_importing_the_kit_does_not_load_the_plugin_host() -> None:
    heavy = ("osprey_core.plugin_host", "osprey_core.testing.fakes", "pydantic", "typer")
    code = f"import sys, osprey_core.testing; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True,
                            check=True, timeout=60)
    assert result.stdout.strip() == "[]"


# -- fake_plugin -------------------------------------------------------------------------


class FakeSettings(BaseModel):
    """A config section for the fake plugin."""

    level: int = 1


def test_fake_plugin_implements_only_the_families_given(osprey_host: PluginHost) -> None:
    osprey_host.register(fake_plugin(name="empty"))
    connectors = osprey_host.register(fake_plugin(
        name="sim", connectors=[FakeConnector.named("sim")], config_sections={},
    ))
    everything = osprey_host.register(fake_plugin(
        name="all",
        capabilities=[FakeCapability()], data_providers=[FakeDataProvider()],
        code_generators=[FakeCodeGenerator], execution_backends=[FakeExecutionBackend],
        connectors=[FakeConnector],
        archivers=[FakeArchiver], approval_policies=[FakeApprovalPolicy()],
        logbook_adapters=[FakeLogbookAdapter], embedding_models=[FakeEmbeddingModel],
        services=[ServiceSpec("osprey.fake", "fake", "")],
        config_sections={"fake": FakeSettings}, commands={"noop": lambda: None},
    ))

    assert osprey_host.plugin("empty").hooks == []
    assert connectors.hooks == ["register_connectors"]
    registration_hooks = [name for name in osprey_host.hook_names()
                          if name.startswith("register_")]
    assert everything.hooks == registration_hooks
    assert osprey_host.config_sections() == {"fake": (FakeSettings, "all")}
    assert osprey_host.code_generators().names() == ["fake_generator"]


def test_plugins_command_reports_the_hooks_fakes_implement(osprey_host: PluginHost) -> None:
    osprey_host.register(importlib.import_module("osprey_core.plugins.core_commands"),
                         name="core_commands")
    osprey_host.register(fake_plugin(name="sim", connectors=[FakeConnector.named("sim")]))
    osprey_host.register(fake_plugin(name="memory", data_providers=[FakeDataProvider()]))

    result = CliRunner().invoke(build_app(osprey_host),
                                ["plugins", "--hook", "register_connectors", "--json"])

    assert result.exit_code == 0, result.output
    assert [plugin["name"] for plugin in json.loads(result.output)] == ["sim"]


# -- instance-family fakes ---------------------------------------------------------------


def test_fake_capability_prefers_handler_and_records_steps() -> None:
    capability = FakeCapability("double", result="ignored", handler=lambda step: step * 2)
    assert asyncio.run(capability.execute(21)) == 42
    assert capability.calls == [21]

    constant = FakeCapability(result={"ok": True})
    assert asyncio.run(constant.execute("s")) == {"ok": True}
    assert (constant.name, constant.side_effects, constant.provides, constant.terminal) == (
        "fake_capability", False, (), False
    )


def test_fake_capability_matches_queries_through_its_matcher() -> None:
    plot = FakeCapability(
        "plot", matcher=lambda query: {"what": query[5:]} if query.startswith("plot ") else None
    )
    assert plot.match("plot the BPMs") == {"what": "the BPMs"}
    assert plot.match("read the current") is None
    assert FakeCapability().match("plot anything") is None


def test_fake_data_provider_records_then_fails() -> None:
    provider = FakeDataProvider(context={"a": 1}, responds=False,
                                error=ConnectionRefusedError("db down"))
    assert provider.should_respond("anything") is False
    with pytest.raises(ConnectionRefusedError, match="db down"):
        asyncio.run(provider.retrieve("request"))
    assert provider.requests == ["request"]

    provider.error = None
    assert asyncio.run(provider.retrieve("again")) == {"a": 1}


def test_fake_approval_policy_default_abstains_and_records() -> None:
    policy = FakeApprovalPolicy()
    assert policy.evaluate("plan").vote is Vote.ABSTAIN
    deny = FakeApprovalPolicy("deny_all", verdict=Verdict(Vote.DENY, "frozen"))
    assert deny.evaluate({"write": 1}) == Verdict(Vote.DENY, "frozen")
    assert policy.actions == ["plan"]
    assert deny.actions == [{"write": 1}]


# -- class-family fakes ------------------------------------------------------------------


def test_named_subclasses_keep_their_own_state() -> None:
    first = FakeCodeGenerator.named("first", script=["a = 1\n"])
    second = FakeCodeGenerator.named("second")
    built = first()

    assert issubclass(first, FakeCodeGenerator)
    assert (first.name, second.name, FakeCodeGenerator.name) == (
        "first", "second", "fake_generator"
    )
    assert first.instances == [built]
    assert second.instances == []
    assert built not in FakeCodeGenerator.instances
    assert second.script == FakeCodeGenerator.script


def test_fake_code_generator_stops_at_the_end_of_its_script() -> None:
    generator = FakeCodeGenerator.named("once", script=["x = 1\n"])()
    assert asyncio.run(generator.generate("r", [])) == "x = 1\n"
    with pytest.raises(RuntimeError, match="attempt 2, but its script has only 1"):
        asyncio.run(generator.generate("r", ["SyntaxError"]))
    assert generator.feedback == [[]]


@pytest.fixture
def connector() -> Iterator[FakeConnector]:
    connector = FakeConnector.named("sim", channels={"A": 1.0, "B": 2.0},
                                    metadata={"A": {"units": "mA"}})()
    asyncio.run(connector.connect())
    yield connector
    asyncio.run(connector.close())


def test_fake_connector_subscription_fires_on_write_and_machine_change(
    connector: FakeConnector,
) -> None:
    a_values: list[float] = []
    b_values: list[float] = []

    async def scenario() -> None:
        handle = await connector.subscribe("A", lambda reading: a_values.append(reading.value))
        await connector.subscribe("B", lambda reading: b_values.append(reading.value))
        await connector.write("A", 5.0)
        connector.set_value("A", 6.0)  # the machine moved on its own
        await connector.unsubscribe(handle)
        await connector.write("A", 7.0)
        await connector.write("B", 3.0)
        with pytest.raises(KeyError, match="no subscription"):
            await connector.unsubscribe(handle)

    asyncio.run(scenario())
    assert a_values == [5.0, 6.0]
    assert b_values == [3.0]
    assert connector.writes == [("A", 5.0), ("A", 7.0), ("B", 3.0)]
    reading = asyncio.run(connector.read("A"))
    assert (reading.channel, reading.value, reading.units) == ("A", 7.0, "mA")


def test_fake_connector_refuses_what_a_real_one_would(connector: FakeConnector) -> None:
    with pytest.raises(ChannelNotFoundError, match="has no channel 'C'"):
        asyncio.run(connector.write("C", 1))
    meta_a = asyncio.run(connector.metadata("A"))
    assert (meta_a.units, meta_a.data_type) == ("mA", "float")
    assert asyncio.run(connector.metadata("B")).units is None
    assert connector.writes == []

    other = type(connector)()  # a fresh instance starts from the configured values
    with pytest.raises(ControlSystemError, match="not connected"):
        asyncio.run(other.read("A"))
    asyncio.run(connector.write("A", 9.0))
    assert other.channels == {"A": 1.0, "B": 2.0}
    assert type(connector).instances == [connector, other]


def test_fake_connector_close_drops_subscriptions(connector: FakeConnector) -> None:
    fired: list[float] = []
    asyncio.run(connector.subscribe("A", fired.append))
    asyncio.run(connector.close())
    connector.set_value("A", 4.0)
    assert fired == []
    assert connector.connected is False


def test_fake_archiver_filters_inclusive_range_and_refuses_bad_queries() -> None:
    samples = [(T0 + timedelta(hours=hour), hour) for hour in (3, 1, 2, 0)]
    archiver = FakeArchiver.named("arch", history={"X": samples, "Y": []})()

    result = asyncio.run(archiver.retrieve(["X", "Y"], T0 + timedelta(hours=1),
                                           T0 + timedelta(hours=2)))
    plain = {channel: [(sample.timestamp, sample.value) for sample in samples]
             for channel, samples in result.items()}
    assert plain == {"X": [(T0 + timedelta(hours=1), 1), (T0 + timedelta(hours=2), 2)],
                      "Y": []}
    with pytest.raises(ChannelNotFoundError, match="no history for Z"):
        asyncio.run(archiver.retrieve(["X", "Z"], T0, T0))
    with pytest.raises(ValueError, match="is after end"):
        asyncio.run(archiver.retrieve(["X"], T0 + timedelta(hours=1), T0))
    assert len(archiver.calls) == 3


def test_fake_logbook_adapter_can_be_read_again() -> None:
    adapter = FakeLogbookAdapter.named("book", entries=["e1", "e2"])()
    assert list(adapter.iter_entries("a.json")) == ["e1", "e2"]
    assert list(adapter.iter_entries("b.json")) == ["e1", "e2"]
    assert adapter.sources == ["a.json", "b.json"]


def test_fake_embedding_model_is_deterministic_and_normalised() -> None:
    model_class = FakeEmbeddingModel.named("hash", dimension=32)
    first, second = model_class(), model_class()
    texts = ["Beam lost at 03:00", "beam LOST at 03:00", "", "a b c d e f g h"]

    vectors = first.embed(texts)
    assert vectors.dtype == np.float32 and vectors.shape == (4, 32)
    assert np.array_equal(vectors, second.embed(texts))
    assert np.array_equal(vectors[0], vectors[1])  # case-insensitive words
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    assert first.embedded == texts
    assert FakeEmbeddingModel().dimension == 16
    with pytest.raises(ValueError, match="must be positive"):
        FakeEmbeddingModel.named("empty", dimension=0)


def test_self_contained_examples_in_the_docs_pass(tmp_path: Path) -> None:
    docs = Path(__file__).resolve().parent.parent / "docs" / "testing-kit.md"
    blocks = re.findall(r"^```python\n(.*?)^```$", docs.read_text(encoding="utf-8"),
                        flags=re.MULTILINE | re.DOTALL)
    runnable = [block for block in blocks if "def test_" in block and "osprey_plugin_" not in block]
    assert runnable
    for number, block in enumerate(runnable):
        (tmp_path / f"test_doc_example_{number}.py").write_text(block)

    result = run_pytest(tmp_path, "-p", "osprey_core.testing")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{sum(block.count('def test_') for block in runnable)} passed" in result.stdout
