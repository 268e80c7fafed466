"""LabVIEW connector: LabVIEW Web Services over HTTP.

A LabVIEW web service exposes *web method VIs* as HTTP endpoints. There is no standard
"read variable" call, so the configuration maps each channel (an exact name or a glob
pattern) to the method VI that reads it and, optionally, the one that writes it: HTTP
method, URL template, query parameters or body template, and the JSON path of the value
in the answer. For example::

    labview:
      base_url: http://lv-server:8001
      auth: {type: basic, username: operator, password_env: LABVIEW_PASSWORD}
      channels:
        - pattern: "SR:*:Current"          # {1} is what the '*' matched
          read: {url: "/SR/ReadValue", params: {name: "{channel}"}, value_path: data.value}
          write: {url: "/SR/WriteValue", body: {name: "{channel}", value: "{value}"}}
          units: A

HTTP goes through httpx (the ``http`` extra), one pooled client per event loop:
``connection_timeout`` bounds opening a connection (and the TLS handshake),
``read_timeout`` (``write_timeout`` for writes) every wait for the answer, and the whole
exchange is cut off after the sum of the two.
Subscriptions poll at ``poll_interval`` and call back on change. The connector only moves
data: limits, readback verification (which re-reads through :meth:`read`) and audit are
applied by :class:`~osprey_core.control.system.ControlSystem`.
"""

from osprey_core.control.labview.codec import AuthenticationError, NotWritableError
from osprey_core.control.labview.connector import LabviewConnector
from osprey_core.control.labview.paths import extract, parse_json_path
from osprey_core.control.labview.settings import LabviewSettings

__all__ = ["AuthenticationError", "LabviewConnector", "LabviewSettings", "NotWritableError",
           "extract", "parse_json_path"]
