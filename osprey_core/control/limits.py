"""The limits database: what may be written to which channel, and how to verify it.

Per channel: min, max, max step (from the current value), writable, expected type or
allowed values, verification level and tolerance. A ``defaults`` block applies to every
entry (and to unlisted channels when ``allow_unlisted`` is on); unlisted channels are
otherwise not writable. Exact entries win over glob ``patterns``.
"""

from __future__ import annotations

import fnmatch
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, model_validator

from osprey_core.control.types import Reason, is_number, safe_repr, type_name, value_text
from osprey_core.errors import ConfigError

Verification = Literal["none", "callback", "readback"]
ValueType = Literal["float", "int", "bool", "string", "enum", "array"]


class Tolerance(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    absolute: float | None = Field(None, ge=0, description="Largest allowed |readback - value|.")
    relative: float | None = Field(None, ge=0, description="Allowed fraction of |value|.")

    def accepts(self, target: Any, actual: Any) -> bool:
        if isinstance(target, list | tuple):
            return (isinstance(actual, list | tuple) and len(actual) == len(target)
                    and all(self.accepts(t, a) for t, a in zip(target, actual, strict=True)))
        if is_number(target) and is_number(actual):
            allowed = max(self.absolute or 0.0, (self.relative or 0.0) * abs(target))
            if self.absolute is None and self.relative is None:
                return math.isclose(target, actual, rel_tol=1e-9, abs_tol=1e-12)
            return abs(actual - target) <= allowed
        return str(actual) == str(target)


class ChannelLimits(BaseModel):
    """One entry; unset fields fall back to the ``defaults`` block."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Strict: a limits file's ``writable: "yes"`` is an error, never a guess.
    writable: StrictBool | None = None
    type: ValueType | None = None
    min: float | None = None
    max: float | None = None
    max_step: float | None = Field(None, gt=0, description="Largest change from the current "
                                   "value in one write.")
    allowed: list[str | float] | None = Field(None, description="Allowed values (enum/string).")
    verification: Verification | None = None
    tolerance: Tolerance | None = None
    readback_channel: str | None = Field(None, description="Channel to verify against "
                                         "(default: the written channel).")

    @model_validator(mode="after")
    def _ordered(self) -> ChannelLimits:
        for bound in (self.min, self.max):
            if bound is not None and not math.isfinite(bound):
                raise ValueError("min and max must be finite numbers")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self

    def merged(self, defaults: ChannelLimits) -> ChannelLimits:
        own = self.model_dump(exclude_none=True)
        return ChannelLimits.model_validate(defaults.model_dump(exclude_none=True) | own)


class LimitsConfig(BaseModel):
    """The limits database (inline under ``control_system.limits`` or in a YAML file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    defaults: ChannelLimits = Field(
        default_factory=lambda: ChannelLimits(writable=False, verification="readback"),
        description="Applied to every entry; entries override field by field.")
    allow_unlisted: StrictBool = Field(
        False, description="Let channels without an entry be written under the defaults.")
    channels: dict[str, ChannelLimits] = Field(default_factory=dict)
    patterns: dict[str, ChannelLimits] = Field(
        default_factory=dict, description="Glob patterns (e.g. 'HCM*:SP'), first match wins.")


class LimitsDatabase:
    def __init__(self, config: LimitsConfig) -> None:
        self.config = config

    @classmethod
    def load(cls, path: Path) -> LimitsDatabase:
        import yaml

        from osprey_core.yamlio import load_file

        try:
            data = load_file(path) or {}
            return cls(LimitsConfig.model_validate(data))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(f"limits file {path}: cannot read it: {exc}") from None
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
                for error in exc.errors())
            raise ConfigError(f"limits file {path}: {problems}") from None

    def channel_names(self) -> list[str]:
        """Channels with an entry of their own (patterns are not names)."""
        return list(self.config.channels)

    def lookup(self, channel: str) -> ChannelLimits | None:
        """Effective limits of ``channel``; ``None`` when it is unlisted and not allowed."""
        entry = self.config.channels.get(channel)
        if entry is None:
            entry = next((limits for pattern, limits in self.config.patterns.items()
                          if fnmatch.fnmatchcase(channel, pattern)), None)
        if entry is None:
            return self.config.defaults if self.config.allow_unlisted else None
        return entry.merged(self.config.defaults)


def check_value(value: Any, limits: ChannelLimits) -> tuple[Reason, str] | None:
    """Why ``value`` may not be written under ``limits``, or ``None`` if it may.

    ``value`` is a plain value (:func:`~osprey_core.control.types.plain_value`): anything
    that is not a bool, number, text or list of them is refused by its type.
    """
    kind = limits.type or ("float" if limits.min is not None or limits.max is not None
                           else None)
    if kind in ("string", "enum"):
        if kind == "enum" and is_number(value) and _whole(value) and limits.allowed:
            if not 0 <= value < len(limits.allowed):
                return Reason.NOT_ALLOWED_VALUE, f"enum index {value_text(value)} is out of range"
            return None
        if not isinstance(value, str):
            return Reason.WRONG_TYPE, f"expected text, got {type_name(value)}"
        if limits.allowed is not None and value not in [str(item) for item in limits.allowed]:
            return Reason.NOT_ALLOWED_VALUE, f"{safe_repr(value)} is not one of {limits.allowed}"
        return None
    if kind == "bool":
        return None if isinstance(value, bool) else (
            Reason.WRONG_TYPE, f"expected true/false, got {type_name(value)}")
    is_sequence = isinstance(value, list | tuple)
    if kind == "array" and not is_sequence:
        return Reason.WRONG_TYPE, f"expected a list of numbers, got {type_name(value)}"
    if kind in ("float", "int") and is_sequence:
        return Reason.WRONG_TYPE, f"expected one number, got a {type_name(value)}"
    items = value if is_sequence else [value]
    if kind is None and isinstance(value, str):
        return None  # untyped channel: text goes through, the connector decides
    for item in items:
        if not is_number(item):
            return Reason.WRONG_TYPE, (f"expected a number, got {type_name(item)} "
                                       f"{safe_repr(item)}")
        if isinstance(item, float) and not math.isfinite(item):  # ints are always finite
            return Reason.NOT_FINITE, f"{item} is not a finite number"
        if kind == "int" and not _whole(item):
            return Reason.WRONG_TYPE, f"expected an integer, got {item}"
        if limits.min is not None and item < limits.min:
            return Reason.BELOW_MIN, f"{value_text(item)} is below the minimum {limits.min}"
        if limits.max is not None and item > limits.max:
            return Reason.ABOVE_MAX, f"{value_text(item)} is above the maximum {limits.max}"
    return None


def _whole(number: float) -> bool:
    """An integer value (``float(10**400)`` would overflow, so ints are not converted)."""
    return isinstance(number, int) or number.is_integer()


def step_size(current: float, target: float) -> float:
    """``|target - current|``, exact; infinite when an int and a float are too far apart
    to subtract."""
    try:
        return abs(target - current)
    except OverflowError:
        return math.inf
