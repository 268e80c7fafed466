"""What a run store offers, whatever the engine: the contract the orchestrator, the API,
the HTTP service and the token store are written against.

Both engines implement it: :class:`osprey_core.store.RunStore` (SQLite, the embedded
default) and :class:`osprey_core.stores.postgres.PostgresRunStore`. The same test suites
run against both.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from datetime import datetime

    from osprey_core.models import (
        ApprovalRecord,
        ApprovalStatus,
        AuditRecord,
        EventRecord,
        Plan,
        RunRecord,
        StepRecord,
    )
    from osprey_core.run_machine import RunState


class Rows(Protocol):
    """The result of :meth:`StoreConnection.execute`: rows and how many were changed."""

    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


@runtime_checkable
class StoreConnection(Protocol):
    """Raw SQL for the few callers that need it (the token store, the service's event
    stream and metrics). Statements are written in SQLite's dialect with ``?``
    placeholders; the PostgreSQL engine translates them (see its module)."""

    @property
    def in_transaction(self) -> bool: ...

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Rows: ...


@runtime_checkable
class RunStoreProtocol(Protocol):
    """Runs, steps, plans and context, approvals, the append-only audit log and events.

    Writes that belong together go through one :meth:`transaction`. Compare-and-set
    (``update_run`` with ``expect_state`` / ``expect_owner``, ``close_approval`` on a
    pending approval) decides races: exactly one writer wins, the others get
    :class:`~osprey_core.store_errors.ConflictError` and their transaction writes nothing.
    """

    #: Where the store is, for messages (a file, or a URL without its password).
    path: Path | str

    @property
    def conn(self) -> StoreConnection: ...

    @property
    def schema_version(self) -> int: ...

    def close(self) -> None: ...

    def transaction(self, *, durable: bool = True,
                    deadline: bool = True) -> AbstractContextManager[Any]: ...

    # runs
    def insert_run(self, run: RunRecord) -> None: ...

    def update_run(self, run: RunRecord, *, expect_state: RunState | None = None,
                   expect_owner: str | Literal[False] | None = False) -> None: ...

    def renew_lease(self, run_id: str, owner: str | None, state: RunState,
                    until: datetime) -> bool: ...

    def put_plan(self, run_id: str, plan: Plan) -> None: ...

    def put_context(self, run_id: str, key: str, value: Any) -> None: ...

    def get_run(self, run_id: str) -> RunRecord: ...

    def list_runs(self, *, session: str | None = None, states: set[RunState] | None = None,
                  limit: int = 100) -> list[RunRecord]: ...

    # steps
    def save_step(self, step: StepRecord) -> None: ...

    def steps(self, run_id: str) -> list[StepRecord]: ...

    # approvals
    def insert_approval(self, approval: ApprovalRecord) -> None: ...

    def close_approval(self, approval: ApprovalRecord) -> None: ...

    def get_approval(self, approval_id: str) -> ApprovalRecord: ...

    def list_approvals(self, *, status: ApprovalStatus | None = None,
                       session: str | None = None,
                       run_id: str | None = None) -> list[ApprovalRecord]: ...

    # audit and events
    def append_audit(self, record: AuditRecord) -> None: ...

    def audit(self, *, run_id: str | None = None) -> list[AuditRecord]: ...

    def append_event(self, event: EventRecord) -> None: ...

    def events(self, run_id: str) -> list[EventRecord]: ...
