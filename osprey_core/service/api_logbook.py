"""Logbook search and answers, through the same ``Logbook`` facade as ``osprey logbook``.

Each request opens the logbook in a worker thread (it has its own database, apart from
the run store; a semantic search embeds the query, which takes a while) and closes it.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import Field

from osprey_core.logbook.models import Filters, parse_time
from osprey_core.service.auth import Identity, require
from osprey_core.service.context import ServiceState, service_state
from osprey_core.service.errors import ServiceError
from osprey_core.service.schemas import Body
from osprey_core.service.settings import Role

router = APIRouter(prefix="/api/v1/logbook", tags=["logbook"])
Mode = Literal["hybrid", "keyword", "semantic"]
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "bad query or filter"}, 401: {"description": "no or bad credentials"},
    403: {"description": "role missing"}}


class AskRequest(Body):
    question: str = Field(min_length=1, max_length=4000)
    author: list[str] = Field(default_factory=list, description="Any of these authors.")
    logbook: list[str] = Field(default_factory=list)
    tag: list[str] = Field(default_factory=list)
    source: list[str] = Field(default_factory=list)
    since: str | None = Field(None, description="2026-11-01, ...T08:00 or 7d.")
    until: str | None = None


def filters(author: list[str], logbook: list[str], tag: list[str], source: list[str],
            since: str | None, until: str | None) -> Filters:
    """The filters ``osprey logbook`` takes as options; a bad time is a 400 naming it."""
    try:
        return Filters(tuple(author), tuple(logbook), tuple(tag), tuple(source),
                       parse_time(since) if since else None,
                       parse_time(until, end=True) if until else None)
    except ValueError as exc:
        raise ServiceError(400, "bad_filter", f"since/until: {exc}") from None


async def _with_logbook(state: ServiceState, work: Any) -> dict[str, Any]:
    from osprey_core.logbook.service import Logbook

    def call() -> dict[str, Any]:
        with Logbook.from_config(state.osprey.config, state.osprey.host) as logbook:
            result: dict[str, Any] = work(logbook).to_json()
            return result

    return await asyncio.to_thread(call)


@router.get("/search", responses=ERRORS)
async def search(q: str = Query(..., min_length=1, max_length=4000,
                                description='e.g. "RF trip" AND author:jane'),
                 mode: Mode | None = None, author: list[str] = Query([]),
                 logbook: list[str] = Query([]), tag: list[str] = Query([]),
                 source: list[str] = Query([]), since: str | None = None,
                 until: str | None = None, limit: int = Query(10, ge=1, le=1000),
                 who: Identity = Depends(require(Role.VIEWER)),
                 state: ServiceState = Depends(service_state)) -> dict[str, Any]:
    """Entries matching the query (the query syntax of ``osprey logbook search``), best
    first; filters apply inside the ranking."""
    chosen = filters(author, logbook, tag, source, since, until)
    return await _with_logbook(state, lambda book: book.search(q, mode=mode, filters=chosen,
                                                               k=limit))


@router.post("/ask", responses=ERRORS)
async def ask(body: AskRequest, who: Identity = Depends(require(Role.VIEWER)),
              state: ServiceState = Depends(service_state)) -> dict[str, Any]:
    """An answer from the logbook citing the entries used; it says so when the logbook
    does not hold the answer."""
    chosen = filters(body.author, body.logbook, body.tag, body.source, body.since, body.until)
    return await _with_logbook(state, lambda book: book.ask(body.question, filters=chosen))
