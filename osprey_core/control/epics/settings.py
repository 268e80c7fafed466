"""The ``epics`` config section and the rules for EPICS channel names."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

_ADDRESS = re.compile(r"^(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?)"
                      r"(?::(?P<port>\d{1,5}))?$")


def _address_list(value: Any) -> Any:
    if isinstance(value, str):  # the environment-variable form: "10.0.0.1 10.0.0.2:5066"
        value = value.split()
    if isinstance(value, list | tuple):
        for entry in value:
            match = _ADDRESS.match(entry) if isinstance(entry, str) else None
            if match is None:
                raise ValueError(f"{entry!r} is not host[:port]")
            if match["port"] is not None and not 0 < int(match["port"]) < 65536:
                raise ValueError(f"{entry!r}: port must be 1..65535")
        return list(value)
    return value


class EpicsSettings(BaseModel):
    """The ``epics`` config section: where Channel Access looks for channels."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    addr_list: list[str] | None = Field(
        None, description="EPICS_CA_ADDR_LIST for reads, monitors and metadata: host[:port] "
        "entries (a read-only gateway goes here). Unset: taken from the environment.")
    auto_addr_list: bool | None = Field(
        None, description="EPICS_CA_AUTO_ADDR_LIST: also search the broadcast addresses of "
        "the local interfaces. Unset: environment (EPICS default: yes). Use false with a "
        "gateway.")
    server_port: int | None = Field(
        None, ge=1, le=65535, description="EPICS_CA_SERVER_PORT: port of address entries "
        "without one (EPICS default 5064).")
    max_array_bytes: int | None = Field(
        None, ge=16384, description="EPICS_CA_MAX_ARRAY_BYTES: largest array transfer. "
        "Unset: environment, else 16 MiB.")
    write_gateway: list[str] | None = Field(
        None, description="Address list used for writes only (a read-write gateway), "
        "searched in a separate CA context without auto addresses. Unset: writes use "
        "addr_list like reads.")
    put_timeout: float | None = Field(
        None, gt=0, description="Seconds to wait for the IOC to report a put complete. "
        "Unset: control_system.write_timeout (which also bounds the whole write).")
    use_put_callback: bool = Field(
        True, description="Put with completion callback: the IOC reports when processing "
        "finished, or that it refused the value. Off: fire-and-forget puts, confirmed only "
        "by readback verification.")

    _check_lists = field_validator("addr_list", "write_gateway", mode="before")(
        staticmethod(_address_list))

    def read_environment(self) -> dict[str, str | None]:
        """Variables for the read context (``None``: keep the process's own value)."""
        return {
            "EPICS_CA_ADDR_LIST": None if self.addr_list is None else " ".join(self.addr_list),
            "EPICS_CA_AUTO_ADDR_LIST": None if self.auto_addr_list is None else
            ("YES" if self.auto_addr_list else "NO"),
            **self._common(),
        }

    def write_environment(self) -> dict[str, str | None]:
        """Variables for the write context: the write gateway only."""
        return {"EPICS_CA_ADDR_LIST": " ".join(self.write_gateway or ()),
                "EPICS_CA_AUTO_ADDR_LIST": "NO", **self._common()}

    def _common(self) -> dict[str, str | None]:
        return {
            "EPICS_CA_SERVER_PORT": None if self.server_port is None else str(self.server_port),
            "EPICS_CA_MAX_ARRAY_BYTES": None if self.max_array_bytes is None
            else str(self.max_array_bytes),
        }


# -- names ----------------------------------------------------------------------------------

#: Record name characters: the EPICS recommended set plus the braces, '#', '$', '%' and
#: '/' some facilities use; then an optional ``.FIELD`` (``$`` for long strings) and an
#: optional JSON channel filter (``rec.VAL{"dbnd":{"abs":1}}``).
PV_NAME = re.compile(r"^(?P<record>[A-Za-z0-9_\-+:\[\]<>;{}#$%/]+)"
                      r"(?P<field>\.[A-Z][A-Z0-9_]*\$?)?"
                      r"(?P<filter>\.?\{[ -~]*\})?$")
MAX_NAME_LENGTH = 1000
