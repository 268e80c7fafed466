"""Liveness, readiness and who am I."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from osprey_core.service.auth import Identity, identity
from osprey_core.service.context import ServiceState, service_state
from osprey_core.service.errors import error_response

router = APIRouter()


class Health(BaseModel):
    status: str


class Me(BaseModel):
    name: str
    roles: list[str]
    via: str
    token_id: str | None = None


@router.get("/healthz", tags=["health"], response_model=Health)
async def healthz() -> Health:
    """The process is up (no authentication)."""
    return Health(status="ok")


@router.get("/readyz", tags=["health"], response_model=Health,
            responses={503: {"description": "the store does not answer"}})
async def readyz(state: ServiceState = Depends(service_state)) -> Health | JSONResponse:
    """The run store opens and answers a query (503 otherwise; no authentication)."""
    try:
        state.osprey.runtime.store.conn.execute("SELECT count(*) FROM runs").fetchone()
    except Exception as exc:  # any failure means "not ready"; say which
        return error_response(503, "not_ready", f"the run store does not answer: {exc}")
    return Health(status="ready")


@router.get("/api/v1/me", tags=["identity"], response_model=Me)
async def me(who: Identity = Depends(identity)) -> Me:
    """The caller's identity and roles (what they imply included)."""
    return Me.model_validate(who.to_json())
