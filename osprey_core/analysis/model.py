"""What the analyzer reports: findings, planned writes, and their summary for one piece of code."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Category(StrEnum):
    """What a finding is about."""

    CONTROL_WRITE = "control_write"
    CONTROL_READ = "control_read"
    DANGEROUS = "dangerous"
    PARSE_ERROR = "parse_error"


class Severity(StrEnum):
    """How much attention a finding deserves."""

    INFO = "info"
    WARNING = "warning"
    HIGH = "high"
    CRITICAL = "critical"


@dataclass(frozen=True)
class Finding:
    """One thing the analyzer noticed, at a source position."""

    category: Category
    severity: Severity
    line: int
    column: int
    reason: str
    symbol: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain dict for audit records and API answers."""
        data = asdict(self)
        data["category"] = str(self.category)
        data["severity"] = str(self.severity)
        return data


@dataclass(frozen=True)
class PlannedWrite:
    """A runtime-API write the code will make, with what could be read off the source."""

    line: int
    #: The channel name when it is a literal, ``None`` when it is computed at run time.
    channel: str | None
    #: The value when it is a literal (``computed`` is true otherwise).
    value: Any = None
    computed: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Analysis:
    """All findings for one piece of code; the approval engine decides what they mean."""

    findings: list[Finding] = field(default_factory=list)
    #: Writes through the sandbox runtime API, one per call site.
    planned_writes: list[PlannedWrite] = field(default_factory=list)
    #: True when a runtime write is made in a way whose channel cannot be read off the
    #: source (a reference passed around, nested ``exec`` code, a computed name).
    dynamic_writes: bool = False

    @property
    def write_targets(self) -> frozenset[str] | None:
        """Channels the code may write through the broker; ``None``: any (not predictable)."""
        if self.dynamic_writes or any(w.channel is None for w in self.planned_writes):
            return None
        return frozenset(w.channel for w in self.planned_writes if w.channel is not None)

    def _has(self, category: Category) -> bool:
        return any(f.category is category for f in self.findings)

    @property
    def writes(self) -> bool:
        """Any control-system write (call, reference, attribute assignment, HTTP mutation)."""
        return self._has(Category.CONTROL_WRITE)

    @property
    def reads(self) -> bool:
        """Any control-system read."""
        return self._has(Category.CONTROL_READ)

    @property
    def dangerous(self) -> bool:
        """Any dangerous construct (dynamic code, shell-out, dunder walking...)."""
        return self._has(Category.DANGEROUS)

    @property
    def parse_error(self) -> bool:
        """The code could not be analyzed; callers must treat it as unsafe."""
        return self._has(Category.PARSE_ERROR)

    def to_json(self) -> dict[str, Any]:
        """Plain dict for audit records and API answers."""
        return {
            "writes": self.writes,
            "reads": self.reads,
            "dangerous": self.dangerous,
            "parse_error": self.parse_error,
            "findings": [f.to_json() for f in self.findings],
            "planned_writes": [w.to_json() for w in self.planned_writes],
            "write_targets": None if self.write_targets is None else sorted(self.write_targets),
        }

