"""``GET /api/v1/events``: Server-Sent Events for every run and approval, in store order.

The stream polls the store, so events written by any process sharing it (the CLI, another
server) arrive too. Two kinds of message:

* ``event: run`` — a stored run event (``submitted``, ``state``, ``artifact_edited``...);
* ``event: approval`` — an approval requested or decided (approved, rejected, expired,
  withdrawn, superseded), from the audit log, with the request's summary and sha256.

Each message's ``id:`` is a cursor ``<event id>-<audit id>`` naming everything sent so
far; a client that reconnects with ``Last-Event-ID`` (or ``?after=``) gets exactly what
came after it. Without either, the stream starts at the present (the first message,
``event: ready``, carries the cursor). A comment line is sent as a heartbeat when idle.
While the store cannot be reached the stream stays open, says so once in a comment, and
goes on from its cursor when the store is back: nothing is skipped or sent twice.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import StreamingResponse

from osprey_core.models import ApprovalRecord
from osprey_core.service.auth import Identity, require
from osprey_core.service.context import ServiceState, service_state
from osprey_core.service.errors import ServiceError
from osprey_core.service.settings import Role
from osprey_core.store import RunStore
from osprey_core.store_errors import StoreStorageError

router = APIRouter(prefix="/api/v1", tags=["events"])

POLL_SECONDS = 0.2
HEARTBEAT_SECONDS = 15.0
RETRY_MILLISECONDS = 2000
BATCH = 500
#: Audit actions that change an approval's status, and the status they set.
APPROVAL_ACTIONS = {"approval_requested": "pending", "approval_approved": "approved",
                    "approval_rejected": "rejected", "approval_expired": "expired",
                    "approval_withdrawn": "withdrawn", "approval_superseded": "superseded"}
_CURSOR = re.compile(r"^\s*(\d{1,18})-(\d{1,18})\s*$")


@dataclass(frozen=True)
class Cursor:
    """How far a stream has got: the last event id and the last audit id sent."""

    event: int
    audit: int

    def __str__(self) -> str:
        return f"{self.event}-{self.audit}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        match = _CURSOR.match(text)
        if match is None:
            raise ServiceError(400, "bad_cursor", f"event id {text[:40]!r} is not a cursor "
                               "such as 120-45 (the id of a message this stream sent)")
        return cls(int(match.group(1)), int(match.group(2)))

    @classmethod
    def now(cls, store: RunStore) -> Cursor:
        conn = store.conn
        return cls(conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0],
                   conn.execute("SELECT coalesce(max(id), 0) FROM audit").fetchone()[0])


def _run_messages(store: RunStore, after: int, run_id: str | None
                  ) -> list[tuple[str, int, str, dict[str, Any]]]:
    sql = "SELECT id, run_id, at, kind, data FROM events WHERE id > ?"
    params: list[Any] = [after]
    if run_id is not None:
        sql += " AND run_id = ?"
        params.append(run_id)
    rows = store.conn.execute(sql + " ORDER BY id LIMIT ?", [*params, BATCH]).fetchall()
    return [(at, row_id, "run", {"id": row_id, "run_id": run, "at": at, "kind": kind,
                                 "data": json.loads(data).get("data", {})})
            for row_id, run, at, kind, data in rows]


def _approval_messages(store: RunStore, after: int, run_id: str | None
                       ) -> list[tuple[str, int, str, dict[str, Any]]]:
    marks = ", ".join("?" for _ in APPROVAL_ACTIONS)
    sql = (f"SELECT id, at, action, approval_id, data FROM audit WHERE id > ? "
           f"AND action IN ({marks})")
    params: list[Any] = [after, *APPROVAL_ACTIONS]
    if run_id is not None:
        sql += " AND run_id = ?"
        params.append(run_id)
    rows = store.conn.execute(sql + " ORDER BY id LIMIT ?", [*params, BATCH]).fetchall()
    records = _approvals(store, {row[3] for row in rows if row[3]})
    messages = []
    for row_id, at, action, approval_id, data in rows:
        entry = json.loads(data)
        record = records.get(approval_id)
        messages.append((at, row_id, "approval", {
            "approval_id": approval_id, "run_id": entry.get("run_id"),
            "status": APPROVAL_ACTIONS[action], "at": at, "actor": entry.get("actor"),
            "interface": entry.get("interface"), "sha256": entry.get("sha256"),
            "reason": entry.get("details", {}).get("reason"),
            "action": record.action if record else None,
            "summary": record.summary if record else None,
            "session": record.session if record else None,
            "expires_at": record.expires_at.isoformat() if record else None}))
    return messages


def _approvals(store: RunStore, ids: set[str]) -> dict[str, ApprovalRecord]:
    if not ids:
        return {}
    marks = ", ".join("?" for _ in ids)
    rows = store.conn.execute(f"SELECT data FROM approvals WHERE id IN ({marks})", sorted(ids))
    records = (ApprovalRecord.model_validate_json(row[0]) for row in rows.fetchall())
    return {record.id: record for record in records}


def pending_messages(store: RunStore, cursor: Cursor, run_id: str | None
                     ) -> list[tuple[Cursor, str, dict[str, Any]]]:
    """What the store holds after ``cursor``: run events and approval changes merged by
    time, each table in its own id order; with the cursor after each message. Read
    whole, so the reading can run in a worker thread."""
    runs = _run_messages(store, cursor.event, run_id)
    approvals = _approval_messages(store, cursor.audit, run_id)
    merged = []
    while runs or approvals:
        take_run = bool(runs) and (not approvals or runs[0][0] <= approvals[0][0])
        _, row_id, kind, data = (runs if take_run else approvals).pop(0)
        cursor = Cursor(row_id, cursor.audit) if take_run else Cursor(cursor.event, row_id)
        merged.append((cursor, kind, data))
    return merged


def sse(kind: str, data: dict[str, Any], cursor: Cursor) -> str:
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"id: {cursor}\nevent: {kind}\ndata: {payload}\n\n"


async def stream(state: ServiceState, cursor: Cursor, run_id: str | None
                 ) -> AsyncIterator[str]:
    """The messages after ``cursor`` as they are stored, until the client goes away or
    the server stops (the client then reconnects with its last id)."""
    store = state.osprey.runtime.store
    yield f"retry: {RETRY_MILLISECONDS}\n\n"
    yield sse("ready", {"cursor": str(cursor)}, cursor)
    quiet_since = time.monotonic()
    away: str | None = None
    while not state.stopping:
        sent = False
        try:
            messages = await state.read(
                functools.partial(pending_messages, store, cursor, run_id))
        except StoreStorageError as exc:
            messages = []
            if away is None:
                away = str(exc)
                yield f": {away.splitlines()[0]}; waiting for it\n\n"
        else:
            away = None
        for after, kind, data in messages:
            yield sse(kind, data, after)
            cursor, sent = after, True
        if sent:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= HEARTBEAT_SECONDS:
            yield ": keepalive\n\n"
            quiet_since = time.monotonic()
        await asyncio.sleep(POLL_SECONDS)


@router.get("/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "the event stream"},
                       400: {"description": "bad cursor"},
                       401: {"description": "no or bad credentials"},
                       403: {"description": "role missing"}})
async def events(run: str | None = Query(None, description="Only this run's events."),
                 after: str | None = Query(None, description="Start after this cursor "
                                           "(0-0: everything stored)."),
                 last_event_id: str | None = Header(None),
                 who: Identity = Depends(require(Role.VIEWER)),
                 state: ServiceState = Depends(service_state)) -> StreamingResponse:
    """Run events and approval changes as Server-Sent Events, in store order; resumes
    after ``Last-Event-ID``."""
    given = last_event_id or after
    cursor = (Cursor.parse(given) if given
              else await state.read(lambda: Cursor.now(state.osprey.runtime.store)))
    return StreamingResponse(stream(state, cursor, run), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache",
                                      "X-Accel-Buffering": "no"})
