"""Tango devices served by ``DeviceTestContext`` for tests/test_tango.py (needs pytango)."""

from __future__ import annotations

import enum
import time
from typing import Any

from tango import AttrQuality, AttrWriteType, DevState
from tango.server import Device, attribute, command


class Mode(enum.IntEnum):
    OFF = 0
    STANDBY = 1
    ON = 2


class Corrector(Device):
    """A corrector power supply with one attribute of every kind the connector maps."""

    def init_device(self) -> None:
        super().init_device()
        self._current = 1.5
        self._label = "HCM01"
        self._mode = Mode.STANDBY
        self._waveform = [1.0, 2.0, 3.0]
        self._count = 7
        self._enabled = True
        self._quality = AttrQuality.ATTR_VALID
        self.set_state(DevState.ON)
        # implemented=True, detect=False: the device pushes every change itself.
        self.set_change_event("current", True, False)

    current = attribute(
        dtype=float, access=AttrWriteType.READ_WRITE, unit="A", format="%6.3f",
        min_value=-10, max_value=10, min_alarm=-8, max_alarm=8, min_warning=-5,
        max_warning=5, description="Horizontal corrector current", label="Current")

    def read_current(self) -> float:
        return self._current

    def write_current(self, value: float) -> None:
        self._current = value
        self.push_change_event("current", value)

    @attribute(dtype=float, unit="mA", description="Stored beam current")
    def beam(self) -> float:
        return 401.5

    label = attribute(dtype=str, access=AttrWriteType.READ_WRITE)

    def read_label(self) -> str:
        return self._label

    def write_label(self, value: str) -> None:
        self._label = value

    mode = attribute(dtype=Mode, access=AttrWriteType.READ_WRITE)

    def read_mode(self) -> Mode:
        return self._mode

    def write_mode(self, value: int) -> None:
        self._mode = Mode(value)

    waveform = attribute(dtype=(float,), max_dim_x=16, access=AttrWriteType.READ_WRITE,
                         unit="V")

    def read_waveform(self) -> list[float]:
        return self._waveform

    def write_waveform(self, value: Any) -> None:
        self._waveform = [float(item) for item in value]

    count = attribute(dtype=int, access=AttrWriteType.READ_WRITE)

    def read_count(self) -> int:
        return self._count

    def write_count(self, value: int) -> None:
        self._count = value

    enabled = attribute(dtype=bool, access=AttrWriteType.READ_WRITE)

    def read_enabled(self) -> bool:
        return self._enabled

    def write_enabled(self, value: bool) -> None:
        self._enabled = value

    @attribute(dtype=float)
    def probe(self) -> tuple[float, float, AttrQuality]:
        """A value whose quality is chosen with the SetQuality command."""
        return 3.25, time.time(), self._quality

    @command(dtype_in=str)
    def SetQuality(self, name: str) -> None:
        self._quality = AttrQuality[name]

    @attribute(dtype=float)
    def quiet(self) -> float:
        """Neither pushed nor polled: it publishes no change events."""
        return 0.0


class SlowSupply(Device):
    """Slow to read and slow to write, to tell the read and write timeouts apart."""

    def init_device(self) -> None:
        super().init_device()
        self._setpoint = 0.0

    @attribute(dtype=float)
    def sluggish(self) -> float:
        time.sleep(0.8)
        return 1.0

    setpoint = attribute(dtype=float, access=AttrWriteType.READ_WRITE)

    def read_setpoint(self) -> float:
        return self._setpoint

    def write_setpoint(self, value: float) -> None:
        time.sleep(0.5)
        self._setpoint = value
