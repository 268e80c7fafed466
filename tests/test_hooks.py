"""Every hook driven end to end: a plugin registers fakes, the core uses what it got."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer
from pydantic import BaseModel, ConfigDict
from typer.testing import CliRunner

from osprey_core.cli import build_app
from osprey_core.config import load_config
from osprey_core.errors import ConfigError, DuplicateNameError, PluginError
from osprey_core.hookspecs import hookimpl
from osprey_core.hookspecs.approval_policies import Verdict, Vote
from osprey_core.hookspecs.capabilities import Capability
from osprey_core.hookspecs.observers import ApprovalEvent, RunEvent
from osprey_core.hookspecs.services import ServiceSpec
from osprey_core.plugin_host import PluginHost
from osprey_core.testing import PluginRegistrar
from osprey_core.testing.fakes import (
    FakeApprovalPolicy,
    FakeArchiver,
    FakeCapability,
    FakeCodeGenerator,
    FakeConnector,
    FakeDataProvider,
    FakeEmbeddingModel,
    FakeLogbookAdapter,
    FakeObserver,
    fake_plugin,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


# -- capabilities ------------------------------------------------------------------------


@pytest.mark.exercises_hook("register_capabilities")
def test_capabilities_reach_the_registry_with_their_plugin(
    osprey_host: PluginHost, register_plugin: PluginRegistrar
) -> None:
    read = FakeCapability("read_channels", provides=("channel_values",), result={"I": 1.5})
    write = FakeCapability("write_channels", requires=("channel_values",), side_effects=True)
    info = register_plugin(fake_plugin(name="beam_tools", capabilities=[read, write]))

    registry = osprey_host.capabilities()
    assert info.hooks == ["register_capabilities"]
    assert registry.names() == ["read_channels", "write_channels"]
    assert registry.origin("write_channels") == "beam_tools"
    assert registry.get("write_channels").side_effects is True
    assert registry.get("write_channels").requires == ("channel_values",)
    assert asyncio.run(registry.get("read_channels").execute("step-1")) == {"I": 1.5}
    assert read.calls == ["step-1"]


@pytest.mark.exercises_hook("register_capabilities")
def test_duplicate_capability_names_both_plugins(
    osprey_host: PluginHost, register_plugin: PluginRegistrar
) -> None:
    register_plugin(fake_plugin(name="first", capabilities=[FakeCapability("respond")]))
    register_plugin(fake_plugin(name="second", capabilities=[FakeCapability("respond")]))

    with pytest.raises(DuplicateNameError) as caught:
        osprey_host.capabilities()
    assert "'first'" in str(caught.value)
    assert "'second'" in str(caught.value)


@pytest.mark.exercises_hook("register_capabilities")
def test_wrong_capability_type_is_attributed_to_the_plugin(
    osprey_host: PluginHost, register_plugin: PluginRegistrar, strict_host: PluginHost
) -> None:
    # A class where an instance is expected: tolerated but recorded, or fatal when strict.
    bad = fake_plugin(name="sloppy", capabilities=[FakeCapability])  # type: ignore[list-item]
    good = fake_plugin(name="tidy", capabilities=[FakeCapability("respond")])
    register_plugin(bad)
    register_plugin(good)

    assert osprey_host.capabilities().names() == ["respond"]
    errors = osprey_host.plugin("sloppy").hook_errors
    assert len(errors) == 1
    assert errors[0].startswith("register_capabilities:")
    assert "must be an instance of" in errors[0]

    strict_host.register(bad)
    with pytest.raises(PluginError, match="plugin 'sloppy' failed in register_capabilities"):
        strict_host.capabilities()


@pytest.mark.exercises_hook("register_capabilities")
def test_failing_capability_raises_its_error(
    osprey_host: PluginHost, register_plugin: PluginRegistrar
) -> None:
    broken = FakeCapability("explode", error=TimeoutError("IOC not answering"))
    register_plugin(fake_plugin(capabilities=[broken]))

    capability: Capability = osprey_host.capabilities().get("explode")
    with pytest.raises(TimeoutError, match="IOC not answering"):
        asyncio.run(capability.execute({"channel": "SR:CURRENT"}))
    assert broken.calls == [{"channel": "SR:CURRENT"}]


# -- data providers ----------------------------------------------------------------------


@pytest.mark.exercises_hook("register_data_providers")
def test_data_providers_are_fetched_in_parallel(
    osprey_host: PluginHost, register_plugin: PluginRegistrar
) -> None:
    memory = FakeDataProvider("user_memory", context_type="user_memory", context=["likes BPMs"],
                              delay=0.5)
    logbook = FakeDataProvider("logbook", context_type="logbook", context=["beam lost 03:00"],
                               delay=0.5)
    quiet = FakeDataProvider("archive", responds=lambda request: "history" in request)
    register_plugin(fake_plugin(data_providers=[memory, logbook, quiet]))

    providers = osprey_host.data_providers()
    request = "what happened last night?"
    chosen = [provider for provider in providers if provider.should_respond(request)]

    async def gather() -> tuple[list[object], float]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        results = await asyncio.gather(*(provider.retrieve(request) for provider in chosen))
        return list(results), loop.time() - started

    results, elapsed = asyncio.run(gather())
    assert [provider.name for provider in chosen] == ["logbook", "user_memory"]
    assert results == [["beam lost 03:00"], ["likes BPMs"]]
    assert elapsed < 0.9  # the two 0.5 s fetches overlapped
    assert quiet.requests == []
    assert memory.requests == [request]


@pytest.mark.exercises_hook("register_data_providers")
def test_slow_provider_times_out_on_its_own(
    osprey_host: PluginHost, register_plugin: PluginRegistrar
) -> None:
    slow = FakeDataProvider("slow", context="late", delay=5)
    fast = FakeDataProvider("fast", context="early")
    register_plugin(fake_plugin(data_providers=[slow, fast]))
    providers = {provider.name: provider for provider in osprey_host.data_providers()}

    async def fetch(name: str) -> object:
        try:
            return await asyncio.wait_for(providers[name].retrieve("q"), timeout=0.05)
        except TimeoutError:
            return "timed out"

    async def fetch_all() -> list[object]:
        return list(await asyncio.gather(fetch("slow"), fetch("fast")))

    assert asyncio.run(fetch_all()) == ["timed out", "early"]


# -- code generators ---------------------------------------------------------------------


@pytest.mark.exercises_hook("register_code_generators")
def test_code_generator_class_is_built_per_run(
    osprey_host: PluginHost, register_plugin: PluginRegistrar
) -> None:
    generator_class = FakeCodeGenerator.named(
        "scripted", script=["print(1 / 0)\n", "print('fixed')\n"]
    )
    register_plugin(fake_plugin(name="gen_plugin", code_generators=[generator_class]))

    registry = osprey_host.code_generators()
    assert registry.names() == ["scripted"]
    assert registry.origin("scripted") == "gen_plugin"
    generator = registry.get("scripted")({"temperature": 0})

    async def two_attempts() -> list[str]:
        first = await generator.generate("divide", [])
        second = await generator.generate("divide", ["ZeroDivisionError on line 1"])
        return [first, second]

    assert asyncio.run(two_attempts()) == ["print(1 / 0)\n", "print('fixed')\n"]
    assert generator.feedback == [[], ["ZeroDivisionError on line 1"]]
    assert generator_class.instances == [generator]
    assert generator.config == {"temperature": 0}


@pytest.mark.exercises_hook("register_code_generators")
def test_code_generator_instance_is_refused(strict_host: PluginHost) -> None:
    instance = FakeCodeGenerator.named("eager")()
    strict_host.register(fake_plugin(name="eager_plugin", code_generators=[instance]))  # type: ignore[list-item]

    with pytest.raises(PluginError, match=r"must be a subclass of .*\.CodeGenerator"):
        strict_host.code_generators()


# -- connectors --------------------------------------------------------------------------


@pytest.mark.exercises_hook("register_connectors")
def test_connector_class_moves_data(
    osprey_host: PluginHost, register_plugin: PluginRegistrar
) -> None:
    connector_class = FakeConnector.named(
        "sim", channels={"SR:CURRENT": 500.0, "HCM1:SP": 0.0},
        metadata={"HCM1:SP": {"units": "A", "writable": True}},
    )
    register_plugin(fake_plugin(name="sim_plugin", connectors=[connector_class]))
    assert osprey_host.connectors().origin("sim") == "sim_plugin"
    connector = osprey_host.connectors().get("sim")(None)
    seen: list[float] = []

    async def session() -> dict[str, object]:
        await connector.connect()
        await connector.subscribe("HCM1:SP", lambda reading: seen.append(reading.value))
        await connector.write("HCM1:SP", 2.0)
        batch = await connector.read_many(["SR:CURRENT", "HCM1:SP", "NOPE"])
        values = {name: reading.value for name, reading in batch.values.items()}
        assert list(batch.errors) == ["NOPE"]
        meta = await connector.metadata("HCM1:SP")
        await connector.close()
        return {"values": values, "meta": (meta.units, meta.writable)}

    outcome = asyncio.run(session())
    assert outcome == {
        "values": {"SR:CURRENT": 500.0, "HCM1:SP": 2.0},
        "meta": ("A", True),
    }
    assert seen == [2.0]
    assert connector.writes == [("HCM1:SP", 2.0)]
    assert connector.connected is False


@pytest.mark.exercises_hook("register_connectors")
def test_two_plugins_claiming_one_connector_name(
    osprey_host: PluginHost, register_plugin: PluginRegistrar
) -> None:
    register_plugin(fake_plugin(name="epics_a", connectors=[FakeConnector.named("epics")]))
    register_plugin(fake_plugin(name="epics_b", connectors=[FakeConnector.named("epics")]))

    with pytest.raises(DuplicateNameError, match="connector 'epics' is registered twice"):
        osprey_host.connectors()


# -- archivers ---------------------------------------------------------------------------


@pytest.mark.exercises_hook("register_archivers")
def test_archiver_returns_history_in_range(
    osprey_host: PluginHost, register_plugin: PluginRegistrar
) -> None:
    samples = [(T0 + timedelta(minutes=minute), float(minute)) for minute in (30, 0, 10, 20)]
    archiver_class = FakeArchiver.named("archive", history={"SR:CURRENT": samples})
    register_plugin(fake_plugin(archivers=[archiver_class]))

    archiver = osprey_host.archivers().get("archive")()
    start, end = T0 + timedelta(minutes=5), T0 + timedelta(minutes=20)
    result = asyncio.run(archiver.retrieve(["SR:CURRENT"], start, end, operator="mean_60"))

    assert {channel: [(sample.timestamp, sample.value) for sample in samples]
            for channel, samples in result.items()} == {"SR:CURRENT": [
                (T0 + timedelta(minutes=10), 10.0), (T0 + timedelta(minutes=20), 20.0)]}
    assert archiver.calls == [(("SR:CURRENT",), start, end, "mean_60")]


@pytest.mark.exercises_hook("register_archivers")
def test_archiver_registered_under_a_bad_name_is_reported(
    osprey_host: PluginHost, register_plugin: PluginRegistrar
) -> None:
    register_plugin(fake_plugin(name="shouty", archivers=[FakeArchiver.named("Archive Appliance")]))

    assert osprey_host.archivers().names() == []
    assert "invalid name 'Archive Appliance'" in osprey_host.plugin("shouty").hook_errors[0]


# -- approval policies -------------------------------------------------------------------


@pytest.mark.exercises_hook("register_approval_policies")
def test_every_policy_votes(osprey_host: PluginHost, register_plugin: PluginRegistrar) -> None:
    def limit(action: dict[str, float]) -> Verdict:
        if abs(action["value"]) > 5:
            return Verdict(Vote.DENY, "beyond 5 A")
        return Verdict(Vote.ALLOW, "within limits")

    ask = FakeApprovalPolicy("always_ask", verdict=Verdict(Vote.REQUIRE_APPROVAL, "writes"))
    limits = FakeApprovalPolicy("limits", verdict=limit)
    register_plugin(fake_plugin(name="policies", approval_policies=[ask, limits]))

    action = {"channel": "HCM1:SP", "value": 7.0}
    votes = {policy.name: policy.evaluate(action).vote
             for policy in osprey_host.approval_policies()}

    assert votes == {"always_ask": Vote.REQUIRE_APPROVAL, "limits": Vote.DENY}
    assert ask.actions == [action]
    assert osprey_host.approval_policies().origin("limits") == "policies"


# -- logbook adapters --------------------------------------------------------------------


@pytest.mark.exercises_hook("register_logbook_adapters")
def test_logbook_adapter_yields_entries_then_fails_at_bad_record(
    osprey_host: PluginHost, register_plugin: PluginRegistrar
) -> None:
    entries = [{"id": 1, "text": "beam lost"}, {"id": 2, "text": "RF trip"},
               ValueError("export.json: entry 3: missing 'timestamp'")]
    adapter_class = FakeLogbookAdapter.named("json", entries=entries)
    register_plugin(fake_plugin(logbook_adapters=[adapter_class]))

    adapter = osprey_host.logbook_adapters().get("json")()
    read: list[object] = []
    with pytest.raises(ValueError, match="entry 3"):
        read.extend(adapter.iter_entries("export.json"))
    assert read == entries[:2]
    assert adapter.sources == ["export.json"]


# -- embedding models --------------------------------------------------------------------


@pytest.mark.exercises_hook("register_embedding_models")
def test_embedding_model_class_ranks_related_text_higher(
    osprey_host: PluginHost, register_plugin: PluginRegistrar
) -> None:
    register_plugin(fake_plugin(embedding_models=[FakeEmbeddingModel.named("hash", dimension=64)]))

    model = osprey_host.embedding_models().get("hash")()
    query, related, unrelated = model.embed(
        ["beam current dropped", "the beam current dropped overnight", "coffee machine broken"]
    )

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert model.dimension == 64
    assert {len(query), len(related), len(unrelated)} == {64}
    assert cosine(query, related) > cosine(query, unrelated)


# -- services ----------------------------------------------------------------------------


@pytest.mark.exercises_hook("register_services")
def test_services_are_registered_by_hierarchical_name(
    osprey_host: PluginHost, register_plugin: PluginRegistrar
) -> None:
    db = ServiceSpec("osprey.database", "Run store", "image: postgres:16\n")
    ui = ServiceSpec("applications.als.console", "Console", "image: console\n",
                     depends_on=("osprey.database",))
    register_plugin(fake_plugin(name="deploy", services=[db, ui]))

    services = osprey_host.services()
    assert services.names() == ["applications.als.console", "osprey.database"]
    assert services.get("applications.als.console").depends_on == ("osprey.database",)
    assert services.origin("osprey.database") == "deploy"


@pytest.mark.exercises_hook("register_services")
def test_service_with_invalid_name_is_refused_in_strict_mode(strict_host: PluginHost) -> None:
    strict_host.register(fake_plugin(services=[ServiceSpec("Osprey DB", "bad", "")]))

    with pytest.raises(PluginError, match="invalid name 'Osprey DB'"):
        strict_host.services()


# -- config sections ---------------------------------------------------------------------


class BeamSettings(BaseModel):
    """Beam limits."""

    model_config = ConfigDict(extra="forbid")

    current_limit: float = 1.0


@pytest.mark.exercises_hook("register_config_sections")
def test_config_section_validates_the_yaml_file(
    osprey_host: PluginHost, register_plugin: PluginRegistrar, tmp_path: Path
) -> None:
    register_plugin(fake_plugin(name="beam", config_sections={"beam": BeamSettings}))
    assert osprey_host.config_sections() == {"beam": (BeamSettings, "beam")}

    good = tmp_path / "osprey.yml"
    good.write_text("beam:\n  current_limit: 2.5\n")
    assert load_config(osprey_host, good, environ={}).section("beam").current_limit == 2.5
    defaults = load_config(osprey_host, good, environ={"OSPREY__BEAM__CURRENT_LIMIT": "4"})
    assert defaults.section("beam").current_limit == 4.0

    bad = tmp_path / "bad.yml"
    bad.write_text("beam:\n  curent_limit: 2.5\n")
    with pytest.raises(ConfigError, match=r"bad.yml:2: beam.curent_limit: unknown key"):
        load_config(osprey_host, bad, environ={})


@pytest.mark.exercises_hook("register_config_sections")
def test_config_section_claimed_twice(
    osprey_host: PluginHost, register_plugin: PluginRegistrar
) -> None:
    register_plugin(fake_plugin(name="one", config_sections={"beam": BeamSettings}))
    register_plugin(fake_plugin(name="two", config_sections={"beam": BeamSettings}))

    with pytest.raises(DuplicateNameError, match=r"'one'.*'two'|'two'.*'one'"):
        osprey_host.config_sections()


# -- commands ----------------------------------------------------------------------------


@pytest.mark.exercises_hook("register_commands")
def test_plugin_commands_run_through_the_cli(
    osprey_host: PluginHost, register_plugin: PluginRegistrar
) -> None:
    def greet(name: str = typer.Option("operator", "--name")) -> None:
        """Say hello."""
        typer.echo(f"hello {name}")

    beam = typer.Typer(help="Beam tools.")

    @beam.command("status")
    def status() -> None:
        typer.echo("beam is on")

    info = register_plugin(fake_plugin(name="cli_plugin", commands={"greet": greet, "beam": beam}))
    assert info.hooks == ["register_commands"]
    app = build_app(osprey_host)
    runner = CliRunner()

    greeted = runner.invoke(app, ["greet", "--name", "Ada"])
    assert greeted.exit_code == 0, greeted.output
    assert greeted.output == "hello Ada\n"
    sub = runner.invoke(app, ["beam", "status"])
    assert sub.exit_code == 0, sub.output
    assert sub.output == "beam is on\n"
    assert "greet" in runner.invoke(app, ["--help"]).output


@pytest.mark.exercises_hook("register_commands")
def test_failing_command_hook_does_not_break_other_commands(
    osprey_host: PluginHost, register_plugin: PluginRegistrar
) -> None:
    class Broken:
        @hookimpl
        def register_commands(self, app: typer.Typer) -> None:
            raise RuntimeError("missing optional dependency")

    register_plugin(Broken(), name="broken")
    register_plugin(fake_plugin(commands={"ping": lambda: typer.echo("pong")}))

    result = CliRunner().invoke(build_app(osprey_host), ["ping"])
    assert result.exit_code == 0, result.output
    assert result.output == "pong\n"
    assert osprey_host.plugin("broken").hook_errors == [
        "register_commands: RuntimeError: missing optional dependency"
    ]


# -- observers ---------------------------------------------------------------------------


def approval_event(status: str) -> ApprovalEvent:
    return ApprovalEvent(
        approval_id="ap-1", run_id="run-1", kind="channel_write", status=status,
        artifact_sha256="ab" * 32, summary="HCM1:SP 0 -> 2 A", at=T0, actor="ada",
        interface="cli",
    )


@pytest.mark.exercises_hook("on_run_event")
def test_run_events_reach_every_observer(
    osprey_host: PluginHost, register_plugin: PluginRegistrar
) -> None:
    audit, chat = FakeObserver(), FakeObserver()
    register_plugin(audit, name="audit")
    register_plugin(chat, name="chat")
    event = RunEvent("run-1", "state_changed", T0, {"state": "planning"})

    osprey_host.notify_run_event(event)

    assert audit.run_events == [event]
    assert chat.run_events == [event]
    assert audit.approvals_requested == audit.approvals_decided == []


@pytest.mark.exercises_hook("on_run_event")
def test_broken_observer_never_raises_even_when_strict(
    strict_host: PluginHost, caplog: pytest.LogCaptureFixture
) -> None:
    broken, healthy = FakeObserver(error=OSError("mail server down")), FakeObserver()
    strict_host.register(broken, name="mailer")
    strict_host.register(healthy, name="audit")
    event = RunEvent("run-1", "step_finished", T0)

    strict_host.notify_run_event(event)

    assert healthy.run_events == [event]
    assert broken.run_events == [event]
    assert strict_host.plugin("mailer").hook_errors == ["on_run_event: OSError: mail server down"]
    assert "plugin 'mailer' failed in on_run_event" in caplog.text


@pytest.mark.exercises_hook("on_approval_requested")
def test_approval_requested_is_announced(
    osprey_host: PluginHost, register_plugin: PluginRegistrar
) -> None:
    observer = FakeObserver()
    failing = FakeObserver(error=RuntimeError("chat webhook 500"))
    register_plugin(observer, name="notifier")
    register_plugin(failing, name="chat")
    event = approval_event("pending")

    osprey_host.notify_approval_requested(event)

    assert observer.approvals_requested == [event]
    assert observer.approvals_decided == []
    assert osprey_host.plugin("chat").hook_errors == [
        "on_approval_requested: RuntimeError: chat webhook 500"
    ]


@pytest.mark.exercises_hook("on_approval_decided")
def test_approval_decision_is_exported(
    osprey_host: PluginHost, register_plugin: PluginRegistrar
) -> None:
    observer = FakeObserver()
    register_plugin(observer, name="audit_export")
    requested, decided = approval_event("pending"), approval_event("approved")

    osprey_host.notify_approval_requested(requested)
    osprey_host.notify_approval_decided(decided)

    assert observer.approvals_requested == [requested]
    assert observer.approvals_decided == [decided]
    assert observer.approvals_decided[0].artifact_sha256 == "ab" * 32
