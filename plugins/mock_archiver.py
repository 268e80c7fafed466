"""Built-in plugin: the ``mock`` archiver, the history of the simulated machine.

It evaluates the same model as the ``mock`` connector at past times, honouring the setpoint
log kept under the same home, so its history is what the connector read then. It shares
the ``mock`` config section (registered by the ``mock_connector`` plugin).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from osprey_core.control.types import Sample
from osprey_core.hookspecs import hookimpl
from osprey_core.hookspecs.archivers import ArchiverConnector
from osprey_core.threads import in_thread

if TYPE_CHECKING:
    from osprey_core.control.simulation import SimulatedMachine


class _LazySettingsModel:
    """``settings_model`` resolved on first access, keeping pydantic out of plugin loading."""

    def __get__(self, instance: object, owner: type) -> Any:
        from osprey_core.control.simulation import MockSettings

        return MockSettings


class MockArchiver(ArchiverConnector):
    """History of the simulated machine: raw samples or ``mean_N``/``min_N``/... bins."""

    name = "mock"
    description = ("History of the simulated machine, consistent with the mock connector "
                   "and its written setpoints.")
    settings_model = _LazySettingsModel()  # type: ignore[assignment]

    def __init__(self, settings: Any = None, *, timeout: float = 30.0,
                 home: Path | None = None) -> None:
        super().__init__(settings, timeout=timeout, home=home)
        self._machine: SimulatedMachine | None = None

    @property
    def machine(self) -> SimulatedMachine:
        if self._machine is None:
            from osprey_core.control.simulation import open_machine

            self._machine = open_machine(self.settings, home=self.home)
        return self._machine

    async def retrieve(
        self,
        channels: Sequence[str],
        start: datetime,
        end: datetime,
        *,
        operator: str | None = None,
    ) -> dict[str, list[Sample]]:
        from osprey_core.control.mock_archiver import retrieve_history

        machine = self.machine
        return await in_thread(retrieve_history, machine, list(channels), start, end, operator,
                               timeout=self.timeout)


@hookimpl
def register_archivers(register: Callable[[type[ArchiverConnector]], None]) -> None:
    register(MockArchiver)
