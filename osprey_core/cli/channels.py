"""``osprey channels``: read, write, monitor and describe control-system channels.

Reads go straight to the configured control system. ``write`` is a run whose plan is
exactly one ``channel_write`` step: it stops for approval like ``osprey run`` and writes
through the same approval, limits, verification and audit path.
"""

from __future__ import annotations

import contextlib
import enum
import json
import math
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import typer

from osprey_core.cli.output import print_json, print_table
from osprey_core.cli.state import CliState, cli_state

if TYPE_CHECKING:
    from osprey_core.control.system import ControlSystem
    from osprey_core.control.types import ChannelValue

channels_app = typer.Typer(help="Read, write, monitor and describe control-system channels.",
                           no_args_is_help=True)

NAMES = typer.Argument(..., metavar="NAME...", help="Channel names, e.g. SR:CURRENT.")
JSON = typer.Option(False, "--json", help="Print JSON.")
#: Extra seconds allowed beyond the connector's own timeouts before a command gives up.
GRACE = 5.0


class ValueType(enum.StrEnum):
    FLOAT = "float"
    INT = "int"
    BOOL = "bool"
    STRING = "string"
    ENUM = "enum"
    ARRAY = "array"


def control_system(state: CliState) -> ControlSystem:
    """The configured control system; reads are not audited, so no store is opened."""
    from osprey_core.control.service import build_control_system

    return build_control_system(state.config(), state.host)


def _deadline(state: CliState) -> float:
    settings = state.config().section("control_system")
    return settings.connection_timeout + settings.read_timeout + GRACE


def run_async[T](coroutine: Coroutine[Any, Any, T], what: str) -> T:
    """Run a command's work; a timeout becomes an error naming what did not answer."""
    import asyncio  # here, like every heavy import: this module loads on `osprey --help`

    from osprey_core.errors import OspreyError

    try:
        return asyncio.run(coroutine)
    except TimeoutError:
        raise OspreyError(f"{what}: no answer in time (see control_system timeouts)") from None


def _check_names(system: ControlSystem, names: list[str]) -> None:
    from osprey_core.control.errors import ControlSystemError

    for name in names:
        try:
            system.check_name(name)
        except ControlSystemError as exc:
            raise typer.BadParameter(str(exc), param_hint="'NAME'") from None


def shown_value(value: Any) -> str:
    """A value for people: text as is, floats to 10 significant digits, lists as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        text = f"{value:.10g}"
        return text if any(char in text for char in ".eni") else f"{text}.0"
    if isinstance(value, list):
        return "[" + ", ".join(shown_value(item) for item in value) + "]"
    return json.dumps(value)


def _row(value: ChannelValue) -> list[Any]:
    from osprey_core.display.text import when

    stamp = when(value.timestamp, millis=True)
    return [value.channel, shown_value(value.value), value.units or "", value.severity.name,
            stamp]


@channels_app.command("read")
def read(ctx: typer.Context, names: list[str] = NAMES, as_json: bool = JSON) -> None:
    """Read channels: value, units, alarm severity and timestamp. Exit 1 if any failed."""
    from osprey_core.control.capabilities import reading

    state = cli_state(ctx)
    system = control_system(state)
    _check_names(system, names)
    names = list(dict.fromkeys(names))

    async def go() -> Any:
        import asyncio

        async with system:
            return await asyncio.wait_for(system.read_many(names), _deadline(state))

    batch = run_async(go(), f"reading {', '.join(names)}")
    if as_json:
        data: dict[str, Any] = {name: reading(batch.values[name]) for name in batch.values}
        data |= {name: {"error": str(error)} for name, error in batch.errors.items()}
        print_json({name: data[name] for name in names})
    else:
        rows = [_row(batch.values[name]) for name in names if name in batch.values]
        if rows:
            print_table("channels", ("channel", "value", "units", "severity", "timestamp"),
                        rows)
        for name, error in batch.errors.items():
            message = str(error)  # connectors' errors usually name the channel already
            typer.echo(f"Error: {message if message.startswith(name) else f'{name}: {message}'}",
                       err=True)
    if batch.errors:
        raise typer.Exit(1)


@channels_app.command("info")
def info(ctx: typer.Context, name: str = typer.Argument(..., metavar="NAME"),
         as_json: bool = JSON) -> None:
    """What the control system says about a channel, and its limits-database entry."""
    state = cli_state(ctx)
    system = control_system(state)
    _check_names(system, [name])

    async def go() -> Any:
        import asyncio

        async with system:
            return await asyncio.wait_for(system.metadata(name), _deadline(state))

    metadata = run_async(go(), f"describing {name}")
    limits = system.limits_for(name)
    limits_data = None if limits is None else limits.model_dump(mode="json", exclude_none=True)
    if as_json:
        print_json({"channel": name, "connector": system.connector.name,
                    "metadata": metadata.to_json(), "limits": limits_data,
                    "writes_enabled": system.writes_enabled})
        return
    rows: list[tuple[str, Any]] = [("connector", system.connector.name)]
    rows += [(key, _shown(value)) for key, value in metadata.to_json().items()
             if key != "channel"]
    if limits_data is None:
        rows.append(("limits", "not in the limits database: not writable"))
    else:
        rows += [(f"limits.{key}", _shown(value)) for key, value in limits_data.items()]
    rows.append(("writes_enabled", _shown(system.writes_enabled)))
    print_table(name, ("field", "value"), rows)


def _shown(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


@channels_app.command("monitor")
def monitor(
    ctx: typer.Context,
    names: list[str] = NAMES,
    count: int | None = typer.Option(None, "--count", "-n", min=1, help="Stop after N "
                                     "values (the current ones included)."),
    duration: float | None = typer.Option(None, "--duration", "-d", min=0.0, help="Stop "
                                          "after S seconds."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """Print each channel's current value, then every change, until --count, --duration
    or Ctrl-C."""
    state = cli_state(ctx)
    system = control_system(state)
    _check_names(system, names)
    names = list(dict.fromkeys(names))
    # Ctrl-C is how a monitor without --count or --duration ends: not an error.
    with contextlib.suppress(KeyboardInterrupt):
        run_async(_monitor(system, names, count, duration, as_json, _deadline(state)),
                  f"monitoring {', '.join(names)}")


async def _monitor(system: ControlSystem, names: list[str], count: int | None,
                   duration: float | None, as_json: bool, deadline: float) -> None:
    import asyncio

    from osprey_core.control.capabilities import ChannelReadError, reading

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[ChannelValue] = asyncio.Queue()
    last: dict[str, tuple[Any, Any]] = {}
    printed = 0

    def show(value: ChannelValue) -> bool:
        nonlocal printed
        if last.get(value.channel) == (value.value, value.timestamp):
            return False  # a monitor's first event repeats the value just read
        last[value.channel] = (value.value, value.timestamp)
        if as_json:
            typer.echo(json.dumps({"channel": value.channel, **reading(value)}))
        else:
            channel, shown, units, severity, stamp = _row(value)
            typer.echo(f"{stamp}  {channel}  {shown}{' ' + units if units else ''}  {severity}")
        printed += 1
        return count is not None and printed >= count

    async with system:
        batch = await asyncio.wait_for(system.read_many(names), deadline)
        if batch.errors:
            raise ChannelReadError("; ".join(f"{name}: {error}"
                                             for name, error in batch.errors.items()))
        handles = []
        try:
            for name in names:
                handles.append(await asyncio.wait_for(system.subscribe(
                    name, lambda value: loop.call_soon_threadsafe(queue.put_nowait, value)),
                    deadline))
            if any(show(batch.values[name]) for name in names):
                return
            end = None if duration is None else loop.time() + duration
            while True:
                remaining = None if end is None else end - loop.time()
                if remaining is not None and remaining <= 0:
                    return
                try:
                    value = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    return
                if show(value):
                    return
        finally:
            for handle in handles:
                try:
                    await system.unsubscribe(handle)
                except Exception as exc:  # the connection closes next anyway
                    typer.echo(f"warning: unsubscribe failed: {exc}", err=True)


# -- writing --------------------------------------------------------------------------------


def parse_cli_value(text: str, kind: ValueType | None) -> Any:
    """VALUE as typed: JSON when it parses (2, 2.0, true, "text", [1, 2]), else text."""
    from osprey_core.control.capabilities import parse_value

    def bad(message: str) -> typer.BadParameter:
        return typer.BadParameter(message, param_hint="'VALUE'")

    if kind is None:
        value = parse_value(text)
        if isinstance(value, str):
            # Not JSON but a number to Python ('nan', 'inf', '1_000'): a number, not text,
            # so a non-finite one is refused here instead of reaching an approval request.
            with contextlib.suppress(ValueError):
                value = float(text)
        if value is None or isinstance(value, dict):
            raise bad(f"{text!r} is not a value to write; use --type string to write it "
                      "as text")
    elif kind in (ValueType.STRING, ValueType.ENUM):
        value = int(text) if kind is ValueType.ENUM and text.strip().isdigit() else text
    elif kind is ValueType.FLOAT:
        try:
            value = float(text)
        except ValueError:
            raise bad(f"{text!r} is not a number") from None
    elif kind is ValueType.INT:
        try:
            value = int(text)
        except ValueError:
            raise bad(f"{text!r} is not an integer") from None
    elif kind is ValueType.BOOL:
        lowered = text.strip().lower()
        if lowered not in ("true", "false", "1", "0"):
            raise bad(f"{text!r} is not true/false")
        value = lowered in ("true", "1")
    else:
        parsed = parse_value(text if text.lstrip().startswith("[") else f"[{text}]")
        if not isinstance(parsed, list) or not all(
                isinstance(item, int | float) and not isinstance(item, bool) for item in parsed):
            raise bad(f"{text!r} is not a list of numbers (e.g. '[1, 2.5]' or '1,2.5')")
        value = parsed
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, float) and not math.isfinite(item):
            raise bad(f"{text!r} is not a finite number")
    return value


# Negative values (-1.5) must reach VALUE instead of being taken for options.
@channels_app.command("write", context_settings={"ignore_unknown_options": True})
def write(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="Channel to write."),
    value: str = typer.Argument(..., metavar="VALUE", help="Value: JSON (2.0, 3, true, "
                                "\"text\", [1, 2]) or plain text (an enum label such as USER)."),
    value_type: ValueType | None = typer.Option(None, "--type", "-t", help="Read VALUE as "
                                                "this type instead of guessing."),
    units: str | None = typer.Option(None, "--units", help="Units VALUE is in; refused if "
                                     "the channel's units differ."),
    session: str = typer.Option("default", "--session", "-s", help="Conversation/thread id."),
    user: str | None = typer.Option(None, "--user", "-u", help="Who asks, for the audit log "
                                    "(default: your login name)."),
    as_json: bool = JSON,
) -> None:
    """Write one value through approval, limits and verification, like `osprey run`.

    Exit 0 written and verified, 3 waiting for approval, 1 refused, blocked or failed.
    """
    from osprey_core.cli.render import show_run
    from osprey_core.models import Plan, PlanStep

    state = cli_state(ctx)
    _check_names(control_system(state), [name])
    parsed = parse_cli_value(value, value_type)
    item: dict[str, Any] = {"channel": name, "value": parsed}
    if units:
        item["units"] = units
    step = PlanStep(capability="channel_write", parameters={"writes": [item]},
                    output="channel_write")
    plan = Plan(steps=[step], reasoning="osprey channels write")
    query = f"set {name} to {value if isinstance(parsed, str) else json.dumps(parsed)}"
    if units:
        query += f" {units}"
    osprey = state.osprey()
    run = osprey.run(query, session=session, user=user, interface="cli", plan=plan)
    show_run(osprey, run, as_json=as_json)
