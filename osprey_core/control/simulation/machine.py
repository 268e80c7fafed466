"""The running machine: values as functions of time and the setpoint log."""

from __future__ import annotations

import bisect
import difflib
import hashlib
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from osprey_core.control.errors import ChannelNotFoundError, ServerRejectedError
from osprey_core.control.simulation.log import SetpointLog
from osprey_core.control.simulation.settings import (
    STATE_FILE_NAME,
    coerce_settings,
    now_seconds,
    to_datetime,
    valid_name,
)
from osprey_core.control.simulation.spec import (
    ChannelSpec,
    MachineSpec,
    load_machine,
    undeclared_spec,
)
from osprey_core.control.types import ChannelMetadata, ChannelValue, Severity, is_number

# -- the running machine -------------------------------------------------------------


def _approach(start: Any, target: Any, elapsed: float, tau: float) -> Any:
    """First-order lag from ``start`` towards ``target`` after ``elapsed`` seconds."""
    if not (is_number(start) and is_number(target)):
        return target if elapsed >= tau else start
    if tau <= 0:
        return target
    value = target + (start - target) * math.exp(-elapsed / tau)
    return target if abs(value - target) <= 1e-12 * max(1.0, abs(target)) else value


def _unit_noise(channel: str, bucket: int) -> float:
    """Uniform in [-1, 1), a pure function of the channel and the time bucket."""
    digest = hashlib.blake2b(f"{channel}\0{bucket}".encode(), digest_size=8).digest()
    return int.from_bytes(digest) / 2**63 - 1.0


def _cast(spec: ChannelSpec, value: Any) -> Any:
    if spec.type == "int" and is_number(value):
        return round(value)
    if spec.type == "float" and is_number(value):
        return float(value)
    return value


class SimulatedMachine:
    """A machine description, a setpoint log and the settings: reads, writes, history."""

    def __init__(self, spec: MachineSpec, log: SetpointLog, *, noise: bool = True,
                 time_scale: float = 1.0, any_name_reads: bool = False,
                 clock: Callable[[], float] = time.time) -> None:
        self.spec = spec
        self.any_name_reads = any_name_reads
        self.log = log
        self.noise = noise
        self.time_scale = time_scale
        self.clock = clock
        self._undeclared: dict[str, ChannelSpec] = {}
        self._folds: dict[tuple[str, float], tuple[int, list[float], list[tuple[Any, Any]]]] = {}

    def channel(self, name: str) -> ChannelSpec:
        """The declaration of ``name`` (or the plausible one of an undeclared name)."""
        if (spec := self.spec.channels.get(name)) is not None:
            return spec
        if not valid_name(name):
            raise ChannelNotFoundError(f"{name!r} is not a valid channel name of the "
                                       f"simulated machine", channel=str(name))
        if not self.any_name_reads:
            raise ChannelNotFoundError(self._not_declared(name), channel=name)
        if (spec := self._undeclared.get(name)) is None:
            spec = self._undeclared.setdefault(name, undeclared_spec(name))
        return spec

    def _not_declared(self, name: str) -> str:
        """Why ``name`` is not found, with the declared names it was probably meant as."""
        declared = {item.upper(): item for item in self.spec.channels}
        close = difflib.get_close_matches(name.upper(), declared, n=3, cutoff=0.6)
        hint = (f"; did you mean {' or '.join(declared[item] for item in close)}?" if close
                else f"; the machine file declares {len(declared)} channels")
        return (f"{name}: no such channel on the simulated machine{hint} (declare it in "
                "the machine file, or set mock.any_name_reads: true to let any name read)")

    # -- values ----------------------------------------------------------------------

    def now(self) -> float:
        """Current time; never before the last write, so a write is read back at once."""
        return max(now_seconds(self.clock), self.log.last_time)

    def value(self, name: str, at: float, *, noise: bool | None = None) -> Any:
        """The value of ``name`` at epoch second ``at``, from the model and the log."""
        spec = self.channel(name)
        noisy = self.noise if noise is None else noise
        if spec.kind == "setpoint":
            return _cast(spec, self.log.value_at(name, at, spec.value))
        if name not in self.spec.channels and self.log.changes(name):
            written = self.log.value_at(name, at, None)  # an undeclared channel written to
            if written is not None:
                return written
        if spec.kind == "waveform":
            return [self.value(source, at, noise=noisy) for source in spec.sources]
        base = self._base(name, spec, at)
        if noisy and spec.noise and is_number(base) and not (
                base == 0 and spec.kind in ("beam_current", "lifetime")):
            bucket = math.floor(at / self.spec.noise_interval)
            base += spec.noise * _unit_noise(name, bucket)
        return _cast(spec, base)

    def _base(self, name: str, spec: ChannelSpec, at: float) -> Any:
        scaled = at * self.time_scale
        match spec.kind:
            case "readback":
                return self._readback(spec.setpoint or "", spec.tau, at)
            case "beam_current":
                if spec.enabled_by and str(self.value(spec.enabled_by, at)) not in \
                        spec.enabled_values:
                    return 0.0
                since_injection = scaled % spec.injection_interval
                return spec.fill * math.exp(-since_injection / (spec.lifetime * 3600))
            case "lifetime":
                beam = self.channel(spec.beam or "")
                if self._base(spec.beam or "", beam, at) == 0:
                    return 0.0
                return beam.lifetime / self.time_scale
            case "response":
                return float(spec.value) + sum(  # type: ignore[arg-type]
                    coefficient * self.value(source, at, noise=False)
                    for source, coefficient in spec.inputs.items())
            case "drift":
                phase = _unit_noise(name, -1) * math.pi
                return float(spec.value) + spec.amplitude * math.sin(  # type: ignore[arg-type]
                    2 * math.pi * scaled / spec.period + phase)
        return spec.value

    def _readback(self, setpoint: str, tau: float, at: float) -> Any:
        """Fold the first-order lag over the setpoint's log (cached per log revision)."""
        initial = self.value(setpoint, -math.inf)
        cached = self._folds.get((setpoint, tau))
        if cached is None or cached[0] != self.log.revision:
            times: list[float] = []
            states: list[tuple[Any, Any]] = []  # (readback at the change, new target)
            readback, target, previous = initial, initial, -math.inf
            for changed, new_target in self.log.changes(setpoint):
                readback = _approach(readback, target, changed - previous, tau)
                times.append(changed)
                states.append((readback, new_target))
                target, previous = new_target, changed
            cached = self._folds[setpoint, tau] = (self.log.revision, times, states)
        _, times, states = cached
        index = bisect.bisect_right(times, at) - 1
        if index < 0:
            return initial
        start, target = states[index]
        return _approach(start, target, at - times[index], tau)

    def sample(self, name: str, at: float) -> ChannelValue:
        """A reading of ``name`` as it was (or is) at epoch second ``at``."""
        spec = self.channel(name)
        value = self.value(name, at)
        status, severity = self.alarm(spec, value)
        return ChannelValue(name, value, to_datetime(at), status, severity, spec.units)

    def read(self, name: str) -> ChannelValue:
        self.channel(name)
        self.log.refresh()
        return self.sample(name, self.now())

    @staticmethod
    def alarm(spec: ChannelSpec, value: Any) -> tuple[str, Severity]:
        if spec.alarm is None or not is_number(value):
            return "NO_ALARM", Severity.NO_ALARM
        return spec.alarm.check(value)

    # -- writes and metadata ---------------------------------------------------------

    def write(self, name: str, value: Any) -> Any:
        """Record a setpoint; ServerRejectedError if the machine refuses it. Returns it."""
        value = self.accept(name, value)
        self.log.refresh()
        self.log.record(name, value, now_seconds(self.clock))
        return value

    def accept(self, name: str, value: Any) -> Any:
        """``value`` as stored for ``name``, or ServerRejectedError saying why not."""
        def refuse(why: str) -> ServerRejectedError:
            return ServerRejectedError(f"{name}: {why}", channel=name)

        spec = self.channel(name)
        declared = name in self.spec.channels
        if declared and not spec.is_writable:
            raise refuse("read-only channel of the simulated machine")
        if spec.type == "enum":
            if is_number(value) and float(value).is_integer() \
                    and 0 <= value < len(spec.enum_strings):
                return spec.enum_strings[int(value)]
            if value not in spec.enum_strings:
                raise refuse(f"{value!r} is not one of {list(spec.enum_strings)}")
            return value
        if spec.type == "string" or (not declared and isinstance(value, str | bool)):
            if not isinstance(value, str) and (declared or not isinstance(value, bool)):
                raise refuse(f"expected text, got {type(value).__name__}")
            return value
        items = value if isinstance(value, list | tuple) else [value]
        if not all(is_number(item) and math.isfinite(item) for item in items) or (
                isinstance(value, list | tuple) and declared and spec.type != "array"):
            raise refuse(f"expected a finite number, got {value!r}")
        if spec.type == "int" and not all(float(item).is_integer() for item in items):
            raise refuse(f"expected an integer, got {value!r}")
        if spec.control_limits is not None:
            low, high = spec.control_limits
            if any(not low <= item <= high for item in items):
                raise refuse(f"{value!r} is outside the control limits [{low:g}, {high:g}]")
        if isinstance(value, list | tuple):
            return [float(item) for item in items]
        return _cast(spec, value)

    def metadata(self, name: str) -> ChannelMetadata:
        spec = self.channel(name)
        value = self.read(name).value
        status, severity = self.alarm(spec, value)
        kind = spec.type if spec.kind != "waveform" else "array"
        if name not in self.spec.channels and kind == "float" and isinstance(value, str):
            kind = "string"
        return ChannelMetadata(
            channel=name, data_type=kind, units=spec.units, precision=spec.precision,
            description=spec.description or None, display_limits=spec.display_limits,
            control_limits=spec.control_limits, enum_strings=spec.enum_strings,
            writable=spec.is_writable or name not in self.spec.channels,
            status=status, severity=severity)


def open_machine(settings: Any = None, *, home: Path | None = None,
                 clock: Callable[[], float] = time.time) -> SimulatedMachine:
    """The machine a ``mock`` connector or archiver uses for ``settings`` and ``home``."""
    options = coerce_settings(settings)
    state = options.state_file
    if state is None and home is not None:
        state = Path(home) / STATE_FILE_NAME
    log = SetpointLog(None if state is None else state.expanduser().absolute())
    return SimulatedMachine(load_machine(options.machine_file), log, noise=options.noise,
                            time_scale=options.time_scale,
                            any_name_reads=options.any_name_reads, clock=clock)
