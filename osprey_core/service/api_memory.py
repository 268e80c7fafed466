"""The caller's own memory, through the same store as ``osprey memory``
(:func:`~osprey_core.memory.factory.open_memory_store`).

The user is always the authenticated identity: nobody reads or changes another user's
memory over HTTP. The store's work (file locks and rewrites, or database round trips) runs
in a worker thread; a database that cannot be reached answers 503 (``store_error``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import Field

from osprey_core.memory.errors import MemoryCorruptError, MemoryNotFoundError, MemoryStoreError
from osprey_core.memory.factory import open_memory_store
from osprey_core.memory.protocol import MemoryBackend
from osprey_core.service.auth import Identity, require
from osprey_core.service.context import ServiceState, service_state
from osprey_core.service.errors import ServiceError
from osprey_core.service.schemas import Body
from osprey_core.service.settings import Role

router = APIRouter(prefix="/api/v1/memory", tags=["memory"])
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "refused (too long, too many, malformed)"},
    401: {"description": "no or bad credentials"}, 403: {"description": "role missing"},
    404: {"description": "no such memory"}, 409: {"description": "the memory file is damaged"}}


class MemoryRequest(Body):
    text: str = Field(min_length=1, description="What to remember.")
    tags: list[str] = Field(default_factory=list)


async def _memory[T](state: ServiceState, work: Callable[[MemoryBackend], T]) -> T:
    config = state.osprey.config

    def call() -> T:
        return work(open_memory_store(config))

    try:
        return await asyncio.to_thread(call)
    except MemoryNotFoundError as exc:
        raise ServiceError(404, "not_found", str(exc)) from None
    except MemoryCorruptError as exc:
        raise ServiceError(409, "memory_damaged", str(exc)) from None
    except MemoryStoreError as exc:
        raise ServiceError(400, "refused", str(exc)) from None


@router.get("", responses=ERRORS)
async def list_memories(q: str | None = Query(None, description="Only the most relevant "
                                              "to this, best first."),
                        limit: int = Query(10, ge=1, le=1000),
                        who: Identity = Depends(require(Role.OPERATOR)),
                        state: ServiceState = Depends(service_state)) -> list[dict[str, Any]]:
    """Your memories, oldest first; with ``q``, those relevant to it, best first."""
    if q is not None and q.strip():
        hits = await _memory(state, lambda store: store.search(who.name, q, limit))
        return [hit.to_json() for hit in hits]
    entries = await _memory(state, lambda store: store.entries(who.name))
    return [entry.to_json() for entry in entries]


@router.post("", status_code=201, responses=ERRORS)
async def add(body: MemoryRequest, who: Identity = Depends(require(Role.OPERATOR)),
              state: ServiceState = Depends(service_state)) -> dict[str, Any]:
    """Save a memory (no approval: you are saving your own)."""
    entry = await _memory(state, lambda store: store.add(who.name, body.text, body.tags,
                                                         source="http"))
    return entry.to_json()


@router.get("/{entry_id}", responses=ERRORS)
async def show(entry_id: str, who: Identity = Depends(require(Role.OPERATOR)),
               state: ServiceState = Depends(service_state)) -> dict[str, Any]:
    """One of your memories."""
    return (await _memory(state, lambda store: store.get(who.name, entry_id))).to_json()


@router.delete("/{entry_id}", responses=ERRORS)
async def delete(entry_id: str, who: Identity = Depends(require(Role.OPERATOR)),
                 state: ServiceState = Depends(service_state)) -> dict[str, Any]:
    """Forget one of your memories; the deleted entry is returned."""
    return (await _memory(state, lambda store: store.delete(who.name, entry_id))).to_json()
