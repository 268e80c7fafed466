"""The setpoint log: the only state of the simulated machine, shared through a file."""

from __future__ import annotations

import bisect
import contextlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from osprey_core.control.errors import ControlSystemError
from osprey_core.control.simulation.settings import STATE_FORMAT
from osprey_core.control.types import is_number
from osprey_core.fileio import atomic_write_text

# -- the setpoint log ----------------------------------------------------------------


class SetpointLog:
    """Setpoint writes as (time, value) per channel; persisted as JSON when given a path.

    Reads pick up another process's writes (the file's identity is checked on every
    :meth:`refresh`); writes lock the file across processes, reload it, append and
    replace it atomically. A file that is not a valid state file is never replaced.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        #: Bumped whenever the content changes, for caches built on it.
        self.revision = 0
        self.last_time = -math.inf
        self._entries: dict[str, list[tuple[float, Any]]] = {}
        self._stamp: tuple[int, int, int] | None = None
        self.refresh()

    def refresh(self) -> None:
        """Reload the file if another process (or ours) replaced it."""
        if self.path is None:
            return
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            stamp = None
        except OSError as exc:
            raise ControlSystemError(f"mock machine state file {self.path}: {exc}") from None
        else:
            stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp and self.revision:
            return
        self._set(self._load() if stamp else [])
        self._stamp = stamp

    def _load(self) -> list[tuple[str, float, Any]]:
        assert self.path is not None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if not (isinstance(data, dict) and data.get("format") == STATE_FORMAT
                    and data.get("version") == 1 and isinstance(data.get("setpoints"), list)):
                raise ValueError("not an osprey mock machine state (format/version/setpoints)")
            entries = []
            for number, item in enumerate(data["setpoints"]):
                if not (isinstance(item, dict) and isinstance(item.get("channel"), str)
                        and is_number(item.get("time")) and math.isfinite(item["time"])
                        and "value" in item):
                    raise ValueError(f"setpoint #{number} is malformed: {item!r}")
                entries.append((item["channel"], float(item["time"]), item["value"]))
            return entries
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ControlSystemError(
                f"mock machine state file {self.path} is corrupt ({exc}); it was left as "
                f"is: repair it, or move it away to start from the declared values") from None

    def _set(self, entries: list[tuple[str, float, Any]]) -> None:
        # Built aside and swapped in, so a reader in another thread never sees half of it.
        table: dict[str, list[tuple[float, Any]]] = {}
        for channel, at, value in sorted(entries, key=lambda entry: entry[1]):
            table.setdefault(channel, []).append((at, value))
        self._entries = table
        self.last_time = max((entry[1] for entry in entries), default=-math.inf)
        self.revision += 1

    def _insert(self, channel: str, at: float, value: Any) -> None:
        changes = list(self._entries.get(channel, []))
        position = bisect.bisect_right(changes, at, key=lambda change: change[0])
        changes.insert(position, (at, value))
        self._entries = {**self._entries, channel: changes}
        self.last_time = max(self.last_time, at)

    def record(self, channel: str, value: Any, at: float) -> float:
        """Append a setpoint; returns the time recorded (never before the last one)."""
        with self._locked():
            if self.path is not None:
                self._stamp = None
                self._set(self._load())
            if at <= self.last_time:  # clock went back (or another host's clock): keep order
                at = (round(self.last_time * 1_000_000) + 1) / 1_000_000
            self._insert(channel, at, value)
            self.revision += 1
            if self.path is not None:
                atomic_write_text(self.path, self._dump())
                stat = os.stat(self.path)
                self._stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        return at

    def _dump(self) -> str:
        rows = sorted(((at, channel, value) for channel, changes in self._entries.items()
                       for at, value in changes), key=lambda row: row[0])
        return json.dumps({"format": STATE_FORMAT, "version": 1, "setpoints": [
            {"channel": channel, "value": value, "time": at} for at, channel, value in rows]},
            indent=1) + "\n"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self.path is None:
            yield
            return
        try:
            import fcntl
        except ImportError:  # not POSIX: one process per state file
            yield
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def changes(self, channel: str) -> list[tuple[float, Any]]:
        """The setpoints written to ``channel``, in time order."""
        return self._entries.get(channel, [])

    def value_at(self, channel: str, at: float, default: Any) -> Any:
        changes = self._entries.get(channel)
        if not changes:
            return default
        index = bisect.bisect_right(changes, at, key=lambda change: change[0]) - 1
        return default if index < 0 else changes[index][1]
