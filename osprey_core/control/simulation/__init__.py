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

from osprey_core.control.simulation.log import SetpointLog
from osprey_core.control.simulation.machine import SimulatedMachine, open_machine
from osprey_core.control.simulation.settings import (
    MockSettings,
    coerce_settings,
    to_datetime,
    to_seconds,
    valid_name,
)
from osprey_core.control.simulation.spec import BUILTIN_MACHINE, load_machine

__all__ = ["BUILTIN_MACHINE", "MockSettings", "SetpointLog", "SimulatedMachine",
           "coerce_settings", "load_machine", "open_machine", "to_datetime", "to_seconds",
           "valid_name"]
