"""The ``tango`` config section and Tango attribute names."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator

from osprey_core.control.errors import ControlSystemError
from osprey_core.control.types import safe_repr

# -- settings ------------------------------------------------------------------------------

_HOST_PORT = re.compile(r"(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?):(?P<port>\d{1,5})")


class TangoSettings(BaseModel):
    """Tango connector (control_system.type: tango); timeouts come from control_system."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tango_host: str | None = Field(
        None, description="host:port used for short names (domain/family/member/attribute). "
        "Unset: the TANGO_HOST environment variable, then Tango's own lookup.")
    database: bool = Field(
        True, description="Whether tango_host is a Tango database. false: it is a device "
        "server running without one (short names get #dbase=no).")
    max_workers: int = Field(
        8, ge=1, le=64, description="Threads for blocking Tango calls (each device call "
        "holds one until it returns or its timeout expires).")

    @field_validator("tango_host")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None:
            return None
        match = _HOST_PORT.fullmatch(value.strip())
        if match is None or not 0 < int(match["port"]) < 65536:
            raise ValueError(f"expected host:port (e.g. 127.0.0.1:10000), got {value!r}")
        return value.strip()


# -- names ---------------------------------------------------------------------------------

_PART = r"[A-Za-z0-9_][A-Za-z0-9_.+\-]*"
_DEVICE = rf"{_PART}/{_PART}/{_PART}"
_FULL_NAME = re.compile(
    rf"(?i:tango)://(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?):(?P<port>\d{{1,5}})"
    rf"/(?P<device>{_DEVICE})/(?P<attribute>{_PART})(?P<fragment>#(?i:dbase=(?:no|yes)))?")
_SHORT_NAME = re.compile(rf"(?P<device>{_DEVICE})/(?P<attribute>{_PART})")


@dataclass(frozen=True, slots=True)
class TangoName:
    """A parsed channel: the device address given to ``DeviceProxy`` and the attribute."""

    device: str  # address for DeviceProxy
    attribute: str

    @property
    def device_key(self) -> str:
        return self.device.lower()  # Tango names are case-insensitive

    @property
    def key(self) -> str:
        return f"{self.device_key}::{self.attribute.lower()}"


def parse_name(channel: str, tango_host: str | None, database: bool = True) -> TangoName:
    """Split a channel name; ``ControlSystemError`` when it is not a Tango attribute name."""
    if not isinstance(channel, str):
        raise ControlSystemError(f"invalid Tango attribute name {safe_repr(channel)}")
    full = _FULL_NAME.fullmatch(channel)
    if full is not None:
        if not 0 < int(full["port"]) < 65536:
            raise ControlSystemError(f"invalid port in Tango attribute name {safe_repr(channel)}",
                                     channel=channel)
        fragment = (full["fragment"] or "").lower()
        device = f"tango://{full['host']}:{full['port']}/{full['device']}{fragment}"
        return TangoName(device, full["attribute"])
    short = _SHORT_NAME.fullmatch(channel)
    if short is None:
        raise ControlSystemError(
            f"invalid Tango attribute name {safe_repr(channel)}: expected domain/family/member/"
            "attribute or tango://host:port/domain/family/member/attribute[#dbase=no]",
            channel=channel)
    if tango_host is None or "," in tango_host:
        # Let Tango resolve the database itself (TANGO_HOST, tangorc, several hosts).
        return TangoName(short["device"], short["attribute"])
    fragment = "" if database else "#dbase=no"
    return TangoName(f"tango://{tango_host}/{short['device']}{fragment}", short["attribute"])
