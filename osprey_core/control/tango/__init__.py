"""Tango connector: attributes of Tango devices through pytango (extra ``tango``).

Channel names are Tango attribute names:

* ``tango://host:port/domain/family/member/attribute`` (add ``#dbase=no`` for a device
  server running without a Tango database, as ``DeviceTestContext`` gives them), or
* ``domain/family/member/attribute``, resolved through ``tango.tango_host`` or, when that
  is unset, by Tango itself from ``TANGO_HOST``.

pytango is imported when the connector connects, never when the plugin loads. Its calls
block, so they run on a small thread pool owned by the connector; every wait is bounded
on the asyncio side as well as by the proxy timeout. Two proxies per device keep the
read and write timeouts separate. Change events arrive on Tango's own threads and are
handed to the subscriber's event loop with ``call_soon_threadsafe``: user callbacks
always run on the loop.
"""

from osprey_core.control.tango.codec import (
    TangoChannelMetadata,
    TangoEnumError,
    TangoValueError,
    precision_of,
)
from osprey_core.control.tango.connector import TangoConnector
from osprey_core.control.tango.protocol import translate_error
from osprey_core.control.tango.settings import TangoSettings, parse_name

__all__ = ["TangoChannelMetadata", "TangoConnector", "TangoEnumError", "TangoSettings",
           "TangoValueError", "parse_name", "precision_of", "translate_error"]
