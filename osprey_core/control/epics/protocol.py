"""libca glue: the ctypes callbacks, CA client contexts, and one-shot request batches."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import logging
import os
import threading
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any, ClassVar, Protocol

from osprey_core.control.errors import ControlSystemError, ServerRejectedError

logger = logging.getLogger(__name__)


class Listener(Protocol):
    """What a live monitor offers libca's subscription callback."""

    def on_event(self, args: Any) -> None: ...


#: CA message numbers (status >> 3) that mean "we lost the IOC", not "the IOC said no".
_IO_MESSAGES = frozenset({10, 13, 17, 24, 55, 59, 60})
NORMAL = 1  # ECA_NORMAL

_api_lock = threading.Lock()
_api: SimpleNamespace | None = None
_env_lock = threading.Lock()
#: One-shot completion handlers (gets and puts) and live monitors, by token. The token
#: travels through libca as the callback's ``usr`` pointer: a plain integer, so a late
#: callback after a timeout finds nothing and is dropped safely.
handlers: dict[int, Callable[[Any], None]] = {}
monitors: dict[int, Listener] = {}
tokens = itertools.count(1)


def api_loaded() -> bool:
    return _api is not None


def import_pyepics() -> None:
    """Import pyepics (about 150 ms: worth a worker thread)."""
    try:
        import epics  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ControlSystemError("the EPICS connector needs pyepics: pip install "
                                 f"'osprey-core[epics]' ({exc})") from None


def load_api() -> SimpleNamespace:
    """Initialise libca and build the ctypes callbacks (first use only).

    Called on the event loop's thread: libca threads spawned from a Python worker
    thread complain about scheduling parameters.
    """
    global _api
    with _api_lock:
        if _api is not None:
            return _api
        import_pyepics()
        from epics import PV, ca, dbr

        if ca.libca is None:
            ca.initialize_libca()

        class EventArgs(ctypes.Structure):
            # struct event_handler_args, with usr as a plain pointer-sized integer
            _fields_: ClassVar = [("usr", ctypes.c_void_p), ("chid", dbr.chid_t),
                                  ("type", dbr.long_t), ("count", dbr.long_t),
                                  ("raw_dbr", ctypes.c_void_p), ("status", dbr.int_t)]

        def on_completion(args: Any) -> None:
            handler = handlers.pop(args.usr or 0, None)
            if handler is not None:
                try:
                    handler(args)
                except Exception:  # never let an exception into libca
                    logger.exception("EPICS completion handler failed")

        def on_monitor(args: Any) -> None:
            monitor = monitors.get(args.usr or 0)
            if monitor is not None:
                try:
                    monitor.on_event(args)
                except Exception:
                    logger.exception("EPICS monitor handler failed")

        libca = ca.libca
        libca.ca_array_get_callback.restype = ctypes.c_int
        libca.ca_array_put_callback.restype = ctypes.c_int
        libca.ca_array_put.restype = ctypes.c_int
        libca.ca_create_subscription.restype = ctypes.c_int
        _api = SimpleNamespace(
            ca=ca, dbr=dbr, libca=libca, PV=PV,
            on_completion=dbr.make_callback(on_completion, EventArgs),
            on_monitor=dbr.make_callback(on_monitor, EventArgs),
            mask=dbr.DBE_VALUE | dbr.DBE_ALARM,
        )
        return _api


@contextlib.contextmanager
def _environment(values: dict[str, str | None]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    try:
        for key, value in values.items():
            if value is not None:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def release_thread(api: SimpleNamespace) -> int | None:
    """Detach the calling thread's own CA context (returned, to re-attach it later).

    A non-preemptive context cannot be re-attached once detached (libca refuses), so a
    thread holding one is refused instead of losing its context.
    """
    libca = api.libca
    current = libca.ca_current_context()
    if current:
        if not libca.ca_preemtive_callback_is_enabled():
            raise ControlSystemError(
                "this thread holds a non-preemptive Channel Access context (pyepics with "
                "PREEMPTIVE_CALLBACK = False, or an in-process IOC such as pythonSoftIOC); "
                "run the EPICS connector's event loop in a thread without one")
        libca.ca_detach_context()
    return current


def create_context(api: SimpleNamespace, environment: dict[str, str | None]) -> int:
    """A new preemptive CA context whose search list comes from ``environment``.

    libca reads the address list when a context creates its first channel, so a
    throw-away channel is created (and cleared) while the variables are in place.
    """
    libca = api.libca
    previous = release_thread(api)
    try:
        with _env_lock, _environment(environment):
            status = libca.ca_context_create(1)
            if status != NORMAL:
                raise ControlSystemError(f"cannot create a Channel Access context: "
                                         f"{api.ca.message(status)}")
            context = libca.ca_current_context()
            chid = api.dbr.chid_t()
            if libca.ca_create_channel(b"osprey:address-list-probe", None, None, 0,
                                       ctypes.byref(chid)) == NORMAL:
                libca.ca_clear_channel(chid)
        libca.ca_detach_context()
    finally:
        if previous:
            libca.ca_attach_context(previous)
    return int(context)


def destroy_context(api: SimpleNamespace, context: int) -> None:
    libca = api.libca
    previous = release_thread(api)
    libca.ca_attach_context(context)
    try:
        api.ca.context_destroy()  # destroys the calling thread's context, drops its cache
    finally:
        if previous and previous != context:
            libca.ca_attach_context(previous)


def status_error(api: SimpleNamespace, status: int, what: str) -> ControlSystemError:
    text = api.ca.message(status)
    if (status >> 3) in _IO_MESSAGES:
        return ControlSystemError(f"{what} failed: {text}")
    return ServerRejectedError(f"{what} refused by the server: {text}")


# -- channels and contexts ------------------------------------------------------------------

class Channel:
    """One cached channel of one context; mutated on the event loop only."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pv: Any = None
        self.chid: Any = None
        self.connected = False
        self.ever_connected = False
        self.ready = asyncio.Event()
        self.generation = 0
        self.native: int = -1
        self.count = 1
        self.ctrl: dict[str, Any] = {}
        self.description: str | None = None
        self.description_known = False

    @property
    def units(self) -> str | None:
        return self.ctrl.get("units") or None

    @property
    def enum_strings(self) -> tuple[str, ...]:
        return tuple(self.ctrl.get("enum_strings", ()))

    def text(self, api: SimpleNamespace) -> bool:
        """Char waveforms are read and written as text."""
        return self.native == api.dbr.CHAR and self.count > 1

    def read_type(self, api: SimpleNamespace) -> int:
        # enums are read as their state string (the IOC converts)
        native = api.dbr.STRING if self.native == api.dbr.ENUM else self.native
        return api.dbr.TIME_STRING + native

    def ctrl_type(self, api: SimpleNamespace) -> int:
        return api.dbr.CTRL_STRING + self.native

    def decode_options(self, api: SimpleNamespace) -> dict[str, bool]:
        return {"text": self.text(api), "scalar": self.count == 1}


class Batch:
    """Completion of several one-shot requests, signalled to the loop once."""

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self.loop = loop
        self.results: list[Any] = [None] * size
        self.remaining = size
        self.lock = threading.Lock()
        self.future: asyncio.Future[None] = loop.create_future()
        self.tokens: list[int] = []
        if size == 0:
            self.future.set_result(None)

    def complete(self, index: int, result: Any) -> None:  # any thread
        with self.lock:
            if self.results[index] is not None:
                return
            self.results[index] = result
            self.remaining -= 1
            done = self.remaining == 0
        if done:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                self.loop.call_soon_threadsafe(self._finish)

    def _finish(self) -> None:
        if not self.future.done():
            self.future.set_result(None)

    def finish_now(self) -> None:  # on the loop, for failures found while issuing
        with self.lock:
            done = self.remaining == 0
        if done:
            self._finish()


def complete(batch: Batch, index: int, decode: Callable[[Any], Any], args: Any) -> None:
    try:
        result = decode(args)
    except Exception as exc:
        result = ControlSystemError(f"cannot decode the reply: {exc}")
    batch.complete(index, result)
