"""The machine file: channel declarations, checked and cached by :func:`load_machine`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from osprey_core.control.simulation.settings import problems, valid_name
from osprey_core.control.types import Severity, is_number
from osprey_core.errors import ConfigError
from osprey_core.yamlio import load_file

BUILTIN_MACHINE = Path(__file__).parent.parent / "machine.yml"

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
        raise ConfigError(f"machine file {path}: {problems(exc)}") from None
    _MODELS[path] = (stamp, spec)
    return spec




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
