"""What the static analyzer knows of control-system packages and dispatch helpers. Kept apart
from the visitor in :mod:`osprey_core.analysis`, which holds the mechanics.

Names are canonical dotted paths (``epics.PV.put``): a module function, or a method of an
object type that a known constructor returns. Any other callable of a control-system module,
or method of an object obtained from one, is *unknown* and calling it fails closed as a write
(see :func:`unknown_member`): the lists below only need the writes worth naming and every
read or harmless call that generated code commonly makes.
"""

from __future__ import annotations

RUNTIME = "osprey_core.sandbox.runtime"

#: Module prefixes rewritten to one canonical spelling before table look-ups.
CANONICAL: dict[str, str] = {
    "PyTango": "tango",
    "_operator": "operator",
    "caproto.threading.pyepics_compat": "epics",
    "epics.pv.PV": "epics.PV",
    "epics.pv.get_pv": "epics.get_pv",
    "epics.motor.Motor": "epics.Motor",
    "epics.device.Device": "epics.Device",
    "epics.caput": "epics.caput",
    "p4p.client.asyncio.Context": "p4p.client.thread.Context",
    "p4p.client.cothread.Context": "p4p.client.thread.Context",
    "caproto.asyncio.client": "caproto.threading.client",
    "caproto.threading.client.PV": "caproto.threading.client.PV",
    "ophyd.signal.EpicsSignal": "ophyd.EpicsSignal",
    "ophyd.signal.EpicsSignalRO": "ophyd.EpicsSignalRO",
    "ophyd.epics_motor.EpicsMotor": "ophyd.EpicsMotor",
    "httpx": "requests",
    "requests.api": "requests",
    "requests.sessions.Session": "requests.Session",
    "requests.Client": "requests.Session",
    "requests.AsyncClient": "requests.Session",
    "http.client.HTTPSConnection": "http.client.HTTPConnection",
    f"{RUNTIME}.write_channel": "write_channel",
    f"{RUNTIME}.write_channels": "write_channels",
    f"{RUNTIME}.read_channel": "read_channel",
    f"{RUNTIME}.read_channels": "read_channels",
    f"{RUNTIME}.read_archiver": "read_archiver",
}

#: Calls whose result is a channel (or client) object, mapped to that object's type.
#: ``list:`` marks a collection of such objects.
CONSTRUCTORS: dict[str, str] = {
    "epics.PV": "epics.PV",
    "epics.get_pv": "epics.PV",
    "epics.Motor": "epics.Motor",
    "epics.Motor.get_pv": "epics.PV",
    "epics.Device": "epics.Device",
    "epics.Device.PV": "epics.PV",
    "caproto.threading.client.Context": "caproto.threading.client.Context",
    "caproto.threading.client.Context.get_pvs": "list:caproto.threading.client.PV",
    "p4p.client.thread.Context": "p4p.client.thread.Context",
    "tango.DeviceProxy": "tango.DeviceProxy",
    "tango.get_device_proxy": "tango.DeviceProxy",
    "tango.AttributeProxy": "tango.AttributeProxy",
    "tango.get_attribute_proxy": "tango.AttributeProxy",
    "tango.AttributeProxy.get_device_proxy": "tango.DeviceProxy",
    "tango.Group": "tango.Group",
    "tango.Group.get_device": "tango.DeviceProxy",
    "tango.Group.get_group": "tango.Group",
    "tango.Database": "tango.Database",
    "tango.DeviceProxy.get_device_db": "tango.Database",
    "ophyd.EpicsSignal": "ophyd.EpicsSignal",
    "ophyd.EpicsSignalRO": "ophyd.EpicsSignalRO",
    "ophyd.EpicsMotor": "ophyd.EpicsMotor",
    "pvaccess.Channel": "pvaccess.Channel",
    "requests.Session": "requests.Session",
    "http.client.HTTPConnection": "http.client.HTTPConnection",
}

#: Control-system writes (functions and methods, canonical names).
WRITE_FUNCTIONS: frozenset[str] = frozenset(
    {
        "epics.caput",
        "epics.caput_many",
        "epics.ca.put",
        "epics.PV.put",
        "epics.Motor.put",
        "epics.Motor.move",
        "epics.Device.put",
        "caproto.sync.client.write",
        "caproto.threading.client.PV.write",
        "p4p.client.thread.Context.put",
        "p4p.client.thread.Context.rpc",
        "tango.DeviceProxy.write_attribute",
        "tango.DeviceProxy.write_attribute_asynch",
        "tango.DeviceProxy.write_attributes",
        "tango.DeviceProxy.write_attributes_asynch",
        "tango.DeviceProxy.write_read_attribute",
        "tango.DeviceProxy.write_read_attributes",
        "tango.DeviceProxy.command_inout",
        "tango.DeviceProxy.command_inout_asynch",
        "tango.DeviceProxy.write_pipe",
        "tango.DeviceProxy.put_property",
        "tango.DeviceProxy.delete_property",
        "tango.AttributeProxy.write",
        "tango.AttributeProxy.write_read",
        "tango.Group.write_attribute",
        "tango.Group.command_inout",
        "cothread.catools.caput",
        "aioca.caput",
        "ophyd.EpicsSignal.put",
        "ophyd.EpicsSignal.set",
        "ophyd.EpicsMotor.move",
        "ophyd.EpicsMotor.set",
        "pvaccess.Channel.put",
        "write_channel",
        "write_channels",
    }
)

#: HTTP calls that can change state (LabVIEW web services and anything else over HTTP).
HTTP_WRITES: frozenset[str] = frozenset(
    {
        "requests.post",
        "requests.put",
        "requests.patch",
        "requests.delete",
        "requests.request",
        "requests.Session.post",
        "requests.Session.put",
        "requests.Session.patch",
        "requests.Session.delete",
        "requests.Session.request",
        "urllib.request.urlopen",
        "urllib.request.Request",
        "http.client.HTTPConnection.request",
        "http.client.HTTPConnection.putrequest",
        "urllib3.request",
        "urllib3.PoolManager.request",
    }
)

_TANGO_READS = ("read_attribute", "read_attributes", "read_attribute_asynch",
                "read_attributes_asynch", "read_attribute_reply", "read_attributes_reply")

#: Control-system reads.
READ_FUNCTIONS: frozenset[str] = frozenset(
    {
        "epics.caget",
        "epics.caget_many",
        "epics.cainfo",
        "epics.ca.get",
        "epics.ca.get_with_metadata",
        "epics.ca.get_complete",
        "epics.ca.get_complete_with_metadata",
        "epics.ca.get_ctrlvars",
        "epics.ca.get_timevars",
        "epics.ca.sg_get",
        "epics.PV.get",
        "epics.PV.get_ctrlvars",
        "epics.PV.get_timevars",
        "epics.PV.get_with_metadata",
        "epics.Motor.get",
        "epics.Motor.get_position",
        "epics.Motor.get_all",
        "epics.Motor.save_state",
        "epics.Device.get",
        "epics.Device.get_all",
        "epics.Device.save_state",
        "caproto.sync.client.read",
        "caproto.threading.client.PV.read",
        "p4p.client.thread.Context.get",
        "p4p.client.thread.Context.monitor",
        *(f"tango.DeviceProxy.{name}" for name in _TANGO_READS),
        "tango.DeviceProxy.read_pipe",
        "tango.DeviceProxy.attribute_history",
        "tango.DeviceProxy.command_history",
        "tango.AttributeProxy.read",
        "tango.AttributeProxy.read_asynch",
        "tango.AttributeProxy.read_reply",
        "tango.AttributeProxy.history",
        *(f"tango.Group.{name}" for name in _TANGO_READS),
        "cothread.catools.caget",
        "cothread.catools.cainfo",
        "aioca.caget",
        "aioca.cainfo",
        *(f"ophyd.{kind}.{name}" for kind in ("EpicsSignal", "EpicsSignalRO", "EpicsMotor")
          for name in ("get", "read", "read_configuration")),
        "pvaccess.Channel.get",
        "pydoocs.read",
        "read_channel",
        "read_channels",
        "read_archiver",
    }
)

#: Members of value-holding types that read the machine when fetched (not called).
READ_ATTRIBUTES: frozenset[str] = frozenset(
    {"epics.PV.value", "epics.PV.char_value", "epics.Motor.position"}
)

_TANGO_PASSIVE = (
    "state", "status", "ping", "name", "dev_name", "info", "description", "adm_name", "alias",
    "get_attribute_list", "get_command_list", "attribute_query", "attribute_list_query",
    "attribute_list_query_ex", "command_query", "command_list_query", "get_property",
    "get_property_list", "get_attribute_config", "get_attribute_config_ex",
    "get_command_config", "black_box", "get_timeout_millis", "set_timeout_millis",
    "is_locked", "is_locked_by_me", "locking_status", "get_locker", "get_source",
    "get_idl_version", "get_tango_lib_version", "get_db_host", "get_db_port",
    "get_db_port_num", "get_dev_host", "get_dev_port", "get_fqdn", "get_access_control",
    "get_access_right", "get_attribute_poll_period", "get_command_poll_period",
    "is_attribute_polled", "is_command_polled", "polling_status", "import_info",
    "get_logging_level", "get_logging_target", "get_green_mode", "is_dbase_used",
    "get_transparency_reconnection", "subscribe_event", "unsubscribe_event", "get_events",
    "event_queue_size", "is_event_queue_empty", "get_last_event_date", "connect", "reconnect",
)

#: Calls of control-system packages that neither write nor read a value (connections,
#: callbacks, metadata, types, enums, exceptions). A trailing ``*`` matches any suffix.
HARMLESS: frozenset[str] = frozenset(
    {
        "epics.poll",
        "epics.camonitor",
        "epics.camonitor_clear",
        "epics.Alarm",
        "epics.dbr.*",
        "epics.utils.*",
        *(f"epics.ca.{name}" for name in (
            "initialize_libca", "finalize_libca", "create_channel", "connect_channel",
            "clear_channel", "pend_io", "pend_event", "poll", "flush_io", "context_create",
            "create_context", "context_destroy", "destroy_context", "attach_context",
            "detach_context", "use_initial_context", "current_context", "client_status",
            "create_subscription", "clear_subscription", "name", "host_name",
            "element_count", "read_access", "write_access", "field_type", "state",
            "isConnected", "access", "get_timestamp", "get_severity", "get_precision",
            "get_enum_strings", "promote_type", "message", "version", "show_cache",
            "get_cache", "clear_cache", "test_io", "sg_create", "sg_delete", "sg_block",
            "sg_test", "sg_reset")),
        *(f"epics.PV.{name}" for name in (
            "wait_for_connection", "connect", "force_connect", "reconnect", "disconnect",
            "poll", "add_callback", "remove_callback", "clear_callbacks", "run_callback",
            "run_callbacks", "clear_auto_monitor")),
        *(f"epics.Motor.{name}" for name in (
            "check_limits", "within_limits", "get_info", "show_info", "show_all",
            "add_callback", "clear_callback", "set_callback", "remove_callbacks", "refresh",
            "read_state", "make_step_list")),
        *(f"epics.Device.{name}" for name in (
            "add_callback", "remove_callbacks", "read_state", "add_pv")),
        "caproto.sync.client.subscribe",
        "caproto.sync.client.block",
        *(f"caproto.threading.client.PV.{name}" for name in (
            "subscribe", "wait_for_connection", "go_idle", "unsubscribe_all")),
        "caproto.threading.client.Context.disconnect",
        "caproto.threading.client.Context.reconnect",
        "p4p.client.thread.Context.close",
        "p4p.client.thread.Context.disconnect",
        "p4p.nt.*",
        "p4p.Value",
        "p4p.Type",
        *(f"tango.DeviceProxy.{name}" for name in _TANGO_PASSIVE),
        *(f"tango.AttributeProxy.{name}" for name in (
            "get_config", "get_poll_period", "is_polled", "get_property", "state", "status",
            "ping", "name", "subscribe_event", "unsubscribe_event", "get_events",
            "event_queue_size", "is_event_queue_empty", "get_last_event_date",
            "get_transparency_reconnection")),
        *(f"tango.Group.{name}" for name in (
            "add", "remove", "remove_all", "enable", "disable", "contains", "is_enabled",
            "get_device_list", "get_size", "get_name", "get_fully_qualified_name",
            "name_equals", "name_matches", "ping", "set_timeout_millis")),
        "tango.Database.get_*",
        "tango.DevState*",
        "tango.DevFailed",
        "tango.AttrQuality*",
        "tango.AttrWriteType*",
        "tango.CmdArgType*",
        "tango.EventType*",
        "tango.GreenMode*",
        "cothread.catools.camonitor",
        "cothread.catools.connect",
        "aioca.camonitor",
        "aioca.connect",
        "aioca.run",
        *(f"ophyd.{kind}.{name}" for kind in ("EpicsSignal", "EpicsSignalRO", "EpicsMotor")
          for name in ("describe", "describe_configuration", "wait_for_connection",
                       "subscribe", "clear_sub", "unsubscribe")),
        *(f"{RUNTIME}.{name}" for name in (
            "list_channels", "BrokerError", "BrokerUnavailable", "ChannelError",
            "WriteBlocked", "WriteFailed")),
    }
)

_HARMLESS_PREFIXES: tuple[str, ...] = tuple(n[:-1] for n in HARMLESS if n.endswith("*"))

#: Packages that reach a control system (and the runtime API, which reaches the broker).
CONTROL_MODULES: tuple[str, ...] = (
    "epics", "caproto", "p4p", "tango", "cothread.catools", "aioca", "ophyd", "bluesky",
    "pydm", "pcaspy", "softioc", "pvaccess", "pvapy", "taurus", "sardana", "pydoocs",
    RUNTIME,
)
_CONTROL_PREFIXES: tuple[str, ...] = tuple(f"{m}." for m in CONTROL_MODULES)

#: Object types a constructor returns (collections and HTTP clients excluded).
OBJECT_TYPES: frozenset[str] = frozenset(
    v for v in CONSTRUCTORS.values() if not v.startswith(("list:", "requests.", "http."))
)

#: Types whose plain attributes hold machine values (``dev.Current``, ``pv.value``): what
#: hangs off such an attribute is data, not a control-system function.
VALUE_TYPES: frozenset[str] = frozenset(
    {"epics.PV", "epics.Motor", "epics.Device", "tango.DeviceProxy", "tango.AttributeProxy"}
)

#: Types whose unknown plain attributes are device attributes (a fetch reads the device).
ATTRIBUTE_READ_TYPES: frozenset[str] = frozenset({"tango.DeviceProxy"})

_KNOWN: frozenset[str] = WRITE_FUNCTIONS | READ_FUNCTIONS | HARMLESS | frozenset(CONSTRUCTORS)

#: Method names that write when they are dispatched by name (``methodcaller('put', 1)``).
WRITE_METHOD_NAMES: frozenset[str] = frozenset(
    name.rsplit(".", 1)[-1] for name in WRITE_FUNCTIONS | HTTP_WRITES
)

#: Callables taking ``(object, name)`` that fetch the named attribute.
GETTERS: frozenset[str] = frozenset(
    {"getattr", "inspect.getattr_static", "object.__getattribute__", "type.__getattribute__"}
)

#: Helpers whose target is chosen by a name given at run time when they are passed around.
DISPATCHERS: frozenset[str] = GETTERS | {
    "setattr", "delattr", "operator.attrgetter", "operator.methodcaller",
}

#: Calls that call (or schedule) the callables they are given.
CALLERS: frozenset[str] = frozenset(
    {
        "map", "filter", "functools.partial",
        "functools.partialmethod", "functools.reduce", "itertools.starmap",
        "itertools.filterfalse", "itertools.takewhile", "itertools.dropwhile",
        "itertools.accumulate", "itertools.groupby", "threading.Thread", "threading.Timer",
        "multiprocessing.Process", "asyncio.to_thread", "atexit.register", "operator.call",
        "weakref.finalize", "sched.scheduler",
    }
)

#: Method names of executors, pools, event loops and exit stacks that call what they get.
CALLER_METHODS: frozenset[str] = frozenset(
    {
        "submit", "map", "starmap", "imap", "imap_unordered", "map_async", "starmap_async",
        "apply", "apply_async", "run_in_executor", "call_soon", "call_soon_threadsafe",
        "call_later", "call_at", "add_done_callback", "callback", "push", "enter",
        "enterabs", "register",
    }
)

#: Callers that call their function once per element of the iterables that follow it.
MAPPERS: frozenset[str] = frozenset(
    {"map", "filter", "imap", "imap_unordered", "map_async", "itertools.filterfalse"}
)

#: Keyword arguments that hand a callable to be called later.
CALLBACK_KEYWORDS: frozenset[str] = frozenset(
    {"target", "callback", "func", "fn", "function", "key", "initializer"}
)


def canonical(name: str) -> str:
    """Rewrite known prefixes of ``name`` to their canonical spelling, to a fixed point."""
    for _ in range(4):
        if name.startswith("builtins."):
            name = name[len("builtins.") :]
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):
            prefix = ".".join(parts[:cut])
            if prefix in CANONICAL and CANONICAL[prefix] != prefix:
                name = ".".join([CANONICAL[prefix], *parts[cut:]])
                break
        else:
            return name
    return name


def in_control_namespace(name: str) -> bool:
    """Whether ``name`` is a control-system module or lives in one (objects included)."""
    return name in CONTROL_MODULES or name.startswith(_CONTROL_PREFIXES)


def known(name: str) -> bool:
    """Whether the tables classify ``name`` (write, read, constructor or harmless)."""
    return name in _KNOWN or name.startswith(_HARMLESS_PREFIXES)


def object_type(name: str) -> tuple[str, str] | None:
    """``(type, rest)`` when ``name`` is an attribute path on a known object type."""
    head, _, rest = name.partition(".")
    while rest:
        part, _, remainder = rest.partition(".")
        head = f"{head}.{part}"
        if head in OBJECT_TYPES and remainder:
            return head, remainder
        rest = remainder
    return None


def unknown_member(name: str) -> str | None:
    """The owner (object type or module) of ``name`` when it is a control-system callable the
    tables do not know: calling it fails closed as a write. ``None`` otherwise."""
    if name in CONTROL_MODULES or not in_control_namespace(name) or known(name):
        return None
    if ".__dict__" in name:
        return None  # namespaces are judged where they are looked into
    typed = object_type(name)
    if typed is not None:
        owner, rest = typed
        return None if "." in rest and owner in VALUE_TYPES else owner
    head, _, rest = name.partition(".")
    while rest:  # an attribute of a known function is not a function of the package
        if head in _KNOWN:
            return None
        part, _, rest = rest.partition(".")
        head = f"{head}.{part}"
    return name.rpartition(".")[0] or name
