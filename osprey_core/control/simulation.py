"""The simulated machine behind the ``mock`` connector and the ``mock`` archiver.

Every value is a deterministic function of the time and the setpoint log: readbacks
follow their setpoints through a first-order lag folded over the log, the beam current
decays between periodic top-up injections, BPMs respond linearly to corrector readbacks,
and noise is a hash of (channel, time bucket). So the archiver can evaluate any past time
and gets exactly what the connector read then. The log (channel, value, time) is the only
state; with a home it is a JSON file shared by every process using that home.

Channels are declared in a YAML machine file (the built-in one is ``machine.yml`` next to
this module; format in ``docs/control/mock.md``). Undeclared names read a plausible value
chosen by their name and accept writes; whether a write is allowed at all is decided by the
limits database in :mod:`osprey_core.control.system`, never here.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from osprey_core.control.errors import (
    ChannelNotFoundError,
    ControlSystemError,
    ServerRejectedError,
)
from osprey_core.control.types import ChannelMetadata, ChannelValue, Severity, is_number
from osprey_core.errors import ConfigError
from osprey_core.fileio import atomic_write_text
from osprey_core.yamlio import load_file

BUILTIN_MACHINE = Path(__file__).with_name("machine.yml")
STATE_FILE_NAME = "mock-machine.json"
STATE_FORMAT = "osprey-mock-machine-state"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# EPICS record-name characters, optionally followed by a ``.FIELD``; at most 128 characters.
_NAME = re.compile(r"[A-Za-z0-9_$][A-Za-z0-9_:+\-\[\]<>;{}$]{0,123}(?:\.[A-Z0-9_]{1,4})?\Z")


def valid_name(channel: object) -> bool:
    """Whether ``channel`` is an EPICS-like channel name (letters, digits, ``_:-+[]<>;``)."""
    return isinstance(channel, str) and bool(_NAME.match(channel))


def to_datetime(seconds: float) -> datetime:
    """Epoch seconds (already on the microsecond grid) as an aware UTC datetime."""
    return _EPOCH + timedelta(microseconds=round(seconds * 1_000_000))


def to_seconds(moment: datetime) -> float:
    """An aware datetime as epoch seconds, exactly inverse to :func:`to_datetime`."""
    return (moment - _EPOCH) / timedelta(microseconds=1) / 1_000_000


def now_seconds(clock: Callable[[], float] = time.time) -> float:
    """``clock()`` rounded to the microsecond, so timestamps round-trip through datetimes."""
    return round(clock() * 1_000_000) / 1_000_000


# -- configuration -------------------------------------------------------------------


class MockSettings(BaseModel):
    """The simulated machine (``mock`` connector and archiver)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    machine_file: Path | None = Field(
        None, description="Machine description (YAML, see docs/control/mock.md); default: "
        "the built-in demo storage ring.")
    state_file: Path | None = Field(
        None, description="Where written setpoints are kept (JSON); default: "
        "<home>/mock-machine.json, or memory only when there is no home.")
    update_interval: float = Field(
        0.1, gt=0, le=60, description="Seconds between subscription updates.")
    noise: bool = Field(True, description="Add the declared measurement noise to readings.")
    time_scale: float = Field(
        1.0, gt=0, le=10_000, description="Speed-up of the slow dynamics (beam decay, "
        "injections, drifts); readback lags are unaffected.")


def coerce_settings(settings: Any) -> MockSettings:
    """``None``, a mapping or a :class:`MockSettings` (or a model with the same fields)."""
    if isinstance(settings, MockSettings):
        return settings
    if settings is None:
        return MockSettings()
    data = settings if isinstance(settings, Mapping) else settings.model_dump()
    try:
        return MockSettings.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(f"mock settings: {_problems(exc)}") from None


# -- the machine file ----------------------------------------------------------------

Kind = Literal["constant", "setpoint", "readback", "beam_current", "lifetime", "response",
               "drift", "waveform"]
DataType = Literal["float", "int", "string", "enum", "array"]
_KIND_FIELDS: dict[str, frozenset[str]] = {
    "constant": frozenset(), "setpoint": frozenset(), "readback": frozenset({"setpoint", "tau"}),
    "beam_current": frozenset({"fill", "lifetime", "injection_interval", "enabled_by",
                               "enabled_values"}),
    "lifetime": frozenset({"beam"}), "response": frozenset({"inputs"}),
    "drift": frozenset({"amplitude", "period"}), "waveform": frozenset({"sources"}),
}
_SPECIFIC = frozenset().union(*_KIND_FIELDS.values())


class AlarmLimits(BaseModel):
    """EPICS-style alarm limits: outside low/high is MINOR, outside lolo/hihi is MAJOR."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lolo: float | None = None
    low: float | None = None
    high: float | None = None
    hihi: float | None = None

    def check(self, value: float) -> tuple[str, Severity]:
        if self.hihi is not None and value >= self.hihi:
            return "HIHI", Severity.MAJOR
        if self.lolo is not None and value <= self.lolo:
            return "LOLO", Severity.MAJOR
        if self.high is not None and value >= self.high:
            return "HIGH", Severity.MINOR
        if self.low is not None and value <= self.low:
            return "LOW", Severity.MINOR
        return "NO_ALARM", Severity.NO_ALARM


class ChannelSpec(BaseModel):
    """One declared channel: what it is, how it is shown, and how it evolves."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Kind = "constant"
    type: DataType = "float"
    description: str = ""
    units: str | None = None
    precision: int | None = Field(None, ge=0, le=17)
    display_limits: tuple[float, float] | None = None
    control_limits: tuple[float, float] | None = None
    alarm: AlarmLimits | None = None
    writable: bool | None = Field(None, description="Default: true for setpoints only.")
    enum_strings: tuple[str, ...] = ()
    value: float | str | list[float] = Field(0.0, description="Initial value, base or offset.")
    noise: float = Field(0.0, ge=0, description="Bound of the uniform noise added.")
    deadband: float = Field(0.0, ge=0, description="Smallest change a subscription reports.")
    setpoint: str | None = None
    tau: float = Field(0.2, ge=0, le=3600, description="Readback lag time constant, s.")
    fill: float = Field(500.0, gt=0)
    lifetime: float = Field(8.0, gt=0, description="Beam lifetime, hours.")
    injection_interval: float = Field(180.0, gt=0, description="Seconds between top-ups.")
    enabled_by: str | None = None
    enabled_values: tuple[str, ...] = ()
    beam: str | None = None
    inputs: dict[str, float] = Field(default_factory=dict)
    amplitude: float = 0.0
    period: float = Field(3600.0, gt=0)
    sources: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> ChannelSpec:
        stray = sorted((self.model_fields_set & _SPECIFIC) - _KIND_FIELDS[self.kind])
        if stray:
            raise ValueError(f"{', '.join(stray)} do(es) not apply to kind {self.kind}")
        for name, needed in (("setpoint", "readback"), ("beam", "lifetime")):
            if self.kind == needed and not getattr(self, name):
                raise ValueError(f"a {needed} channel needs '{name}'")
        if self.kind == "waveform" and not self.sources:
            raise ValueError("a waveform channel needs 'sources'")
        if bool(self.enabled_by) != bool(self.enabled_values):
            raise ValueError("enabled_by and enabled_values go together")
        if self.writable and self.kind != "setpoint":
            raise ValueError("only kind setpoint is writable")
        if self.type == "enum":
            if not self.enum_strings or self.kind not in ("setpoint", "constant"):
                raise ValueError("an enum needs enum_strings and kind setpoint or constant")
            if self.value not in self.enum_strings:
                raise ValueError(f"value {self.value!r} is not one of enum_strings")
        elif self.type in ("float", "int") and not is_number(self.value):
            raise ValueError(f"value {self.value!r} is not a number")
        for limits in (self.display_limits, self.control_limits):
            if limits is not None and not limits[0] <= limits[1]:
                raise ValueError(f"limits {list(limits)} are not ordered low, high")
        return self

    @property
    def is_writable(self) -> bool:
        return self.kind == "setpoint" and self.writable is not False

    def references(self) -> list[str]:
        return [name for name in (self.setpoint, self.beam, self.enabled_by) if name] + [
            *self.inputs, *self.sources]


class MachineSpec(BaseModel):
    """A machine file: its name and its channels."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "simulated machine"
    description: str = ""
    noise_interval: float = Field(0.5, gt=0, description="Seconds each noise sample holds.")
    channels: dict[str, ChannelSpec] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _references(self) -> MachineSpec:
        for name, spec in self.channels.items():
            if not valid_name(name):
                raise ValueError(f"channel {name!r}: not a valid channel name")
            for ref in spec.references():
                if ref not in self.channels:
                    raise ValueError(f"channel {name}: refers to undeclared channel {ref!r}")
            if spec.kind == "readback" and self.channels[spec.setpoint or ""].kind != "setpoint":
                raise ValueError(f"channel {name}: {spec.setpoint} is not a setpoint")
            if spec.kind == "lifetime" and self.channels[spec.beam or ""].kind != "beam_current":
                raise ValueError(f"channel {name}: {spec.beam} is not a beam_current channel")
        for name in self.channels:
            self._acyclic(name, ())
        return self

    def _acyclic(self, name: str, path: tuple[str, ...]) -> None:
        if name in path:
            raise ValueError(f"channels depend on each other in a cycle: "
                             f"{' -> '.join((*path, name))}")
        for ref in self.channels[name].references():
            self._acyclic(ref, (*path, name))


_MODELS: dict[Path, tuple[tuple[int, int], MachineSpec]] = {}


def load_machine(path: Path | None = None) -> MachineSpec:
    """Parse and check a machine file (cached until the file changes); ConfigError if bad."""
    path = (path or BUILTIN_MACHINE).expanduser().absolute()
    try:
        stat = path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        if (cached := _MODELS.get(path)) and cached[0] == stamp:
            return cached[1]
        data = load_file(path)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"machine file {path}: cannot read it: {exc}") from None
    try:
        spec = MachineSpec.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(f"machine file {path}: {_problems(exc)}") from None
    _MODELS[path] = (stamp, spec)
    return spec


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(part) for part in error['loc']) or '(top)'}: "
                     f"{error['msg']}" for error in exc.errors())


def undeclared_spec(name: str) -> ChannelSpec:
    """A plausible channel for a name the machine file does not declare, by its pattern."""
    upper = name.upper()
    if upper.endswith((":SP", ":SETPOINT", ":SET")):
        return ChannelSpec(kind="setpoint", description="undeclared setpoint (simulated)")
    if upper.endswith((":RB", ":RBV")):
        return ChannelSpec(kind="readback", setpoint=name.rsplit(":", 1)[0] + ":SP",
                           noise=0.0001, description="undeclared readback (simulated)")
    for words, value, units, noise in (
        (("CURRENT", "DCCT"), 100.0, "mA", 0.01),
        (("TEMP",), 25.0, "degC", 0.02),
        (("PRES", "VAC", "GAUGE"), 1.0e-9, "Torr", 1.0e-11),
        (("VOLT",), 0.0, "V", 0.001),
        (("FREQ",), 0.0, "Hz", 0.0),
    ):
        if any(word in upper for word in words):
            return ChannelSpec(value=value, units=units, noise=noise,
                               description="undeclared channel (simulated)")
    return ChannelSpec(noise=0.001, description="undeclared channel (simulated)")


# -- the setpoint log ----------------------------------------------------------------


class SetpointLog:
    """Setpoint writes as (time, value) per channel; persisted as JSON when given a path.

    Reads pick up another process's writes (the file's identity is checked on every
    :meth:`refresh`); writes lock the file across processes, reload it, append and
    replace it atomically. A file that is not a valid state file is never replaced.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        #: Bumped whenever the content changes, for caches built on it.
        self.revision = 0
        self.last_time = -math.inf
        self._entries: dict[str, list[tuple[float, Any]]] = {}
        self._stamp: tuple[int, int, int] | None = None
        self.refresh()

    def refresh(self) -> None:
        """Reload the file if another process (or ours) replaced it."""
        if self.path is None:
            return
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            stamp = None
        except OSError as exc:
            raise ControlSystemError(f"mock machine state file {self.path}: {exc}") from None
        else:
            stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp and self.revision:
            return
        self._set(self._load() if stamp else [])
        self._stamp = stamp

    def _load(self) -> list[tuple[str, float, Any]]:
        assert self.path is not None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if not (isinstance(data, dict) and data.get("format") == STATE_FORMAT
                    and data.get("version") == 1 and isinstance(data.get("setpoints"), list)):
                raise ValueError("not an osprey mock machine state (format/version/setpoints)")
            entries = []
            for number, item in enumerate(data["setpoints"]):
                if not (isinstance(item, dict) and isinstance(item.get("channel"), str)
                        and is_number(item.get("time")) and math.isfinite(item["time"])
                        and "value" in item):
                    raise ValueError(f"setpoint #{number} is malformed: {item!r}")
                entries.append((item["channel"], float(item["time"]), item["value"]))
            return entries
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ControlSystemError(
                f"mock machine state file {self.path} is corrupt ({exc}); it was left as "
                f"is: repair it, or move it away to start from the declared values") from None

    def _set(self, entries: list[tuple[str, float, Any]]) -> None:
        # Built aside and swapped in, so a reader in another thread never sees half of it.
        table: dict[str, list[tuple[float, Any]]] = {}
        for channel, at, value in sorted(entries, key=lambda entry: entry[1]):
            table.setdefault(channel, []).append((at, value))
        self._entries = table
        self.last_time = max((entry[1] for entry in entries), default=-math.inf)
        self.revision += 1

    def _insert(self, channel: str, at: float, value: Any) -> None:
        changes = list(self._entries.get(channel, []))
        position = bisect.bisect_right(changes, at, key=lambda change: change[0])
        changes.insert(position, (at, value))
        self._entries = {**self._entries, channel: changes}
        self.last_time = max(self.last_time, at)

    def record(self, channel: str, value: Any, at: float) -> float:
        """Append a setpoint; returns the time recorded (never before the last one)."""
        with self._locked():
            if self.path is not None:
                self._stamp = None
                self._set(self._load())
            if at <= self.last_time:  # clock went back (or another host's clock): keep order
                at = (round(self.last_time * 1_000_000) + 1) / 1_000_000
            self._insert(channel, at, value)
            self.revision += 1
            if self.path is not None:
                atomic_write_text(self.path, self._dump())
                stat = os.stat(self.path)
                self._stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        return at

    def _dump(self) -> str:
        rows = sorted(((at, channel, value) for channel, changes in self._entries.items()
                       for at, value in changes), key=lambda row: row[0])
        return json.dumps({"format": STATE_FORMAT, "version": 1, "setpoints": [
            {"channel": channel, "value": value, "time": at} for at, channel, value in rows]},
            indent=1) + "\n"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self.path is None:
            yield
            return
        try:
            import fcntl
        except ImportError:  # not POSIX: one process per state file
            yield
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def changes(self, channel: str) -> list[tuple[float, Any]]:
        """The setpoints written to ``channel``, in time order."""
        return self._entries.get(channel, [])

    def value_at(self, channel: str, at: float, default: Any) -> Any:
        changes = self._entries.get(channel)
        if not changes:
            return default
        index = bisect.bisect_right(changes, at, key=lambda change: change[0]) - 1
        return default if index < 0 else changes[index][1]


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
                 time_scale: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        self.spec = spec
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
        if (spec := self._undeclared.get(name)) is None:
            spec = self._undeclared.setdefault(name, undeclared_spec(name))
        return spec

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
                            time_scale=options.time_scale, clock=clock)
