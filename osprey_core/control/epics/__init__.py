"""EPICS Channel Access connector, built on pyepics (the ``epics`` extra).

How it talks to Channel Access
------------------------------
* Each connector owns its CA client contexts: one for reads, monitors and metadata, and a
  second one for writes when ``write_gateway`` is set. libca reads ``EPICS_CA_ADDR_LIST``
  and friends when a context creates its first channel, so the connector creates each
  context with the variables of its settings in place (under a process-wide lock, then
  restores the environment). Two connectors with different address lists therefore work
  side by side in one process, and writes can go to a read-write gateway while reads go
  to a read-only one.
* Channels are cached ``epics.PV`` objects, one per name and context (no auto-monitor).
  A channel is *ready* once it is connected and its control fields (units, enum
  strings) have arrived; waiting for that costs at most ``connection_timeout``, so a
  missing channel fails in that time, not in pyepics' 5 s default.
* Reads, puts and monitors use libca's asynchronous calls with completion callbacks
  (``ca_array_get_callback``, ``ca_array_put_callback``, ``ca_create_subscription``):
  requests are queued from the event loop without blocking, the CA threads decode the
  reply and hand it to the loop with ``call_soon_threadsafe``. Nothing waits by polling,
  user callbacks never run on a CA thread, and a batch of 1000 channels costs one flush.
* Every read asks the IOC (no monitor cache): the value the core checks ``max_step``
  against and verifies a write with is the IOC's, not a possibly stale copy.
* A put with callback reports the IOC's verdict: a refused value (a caproto putter
  raising, no write access) raises :class:`ServerRejectedError`. A clamped value (a
  softIOC record with DRVH) is *accepted* by the IOC; only a readback shows it, which
  the core's ``readback`` verification does.

The connector only moves data: limits, ``writes_enabled`` and verification are applied by
:class:`osprey_core.control.system.ControlSystem` around every write.
"""

from osprey_core.control.epics.codec import UnsupportedValueError
from osprey_core.control.epics.connector import EpicsConnector
from osprey_core.control.epics.settings import EpicsSettings

__all__ = ["EpicsConnector", "EpicsSettings", "UnsupportedValueError"]
