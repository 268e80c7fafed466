"""Liveness, readiness, Prometheus metrics and who am I.

The metrics are read from the store at each scrape (written by hand in the text
exposition format, no client library): they count what every process sharing the store
did, not only this server.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel

from osprey_core.run_machine import RunState
from osprey_core.service.auth import Identity, identity, require
from osprey_core.service.context import ServiceState, service_state
from osprey_core.service.errors import error_response
from osprey_core.service.settings import Role
from osprey_core.store import RunStore

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
    conn = state.osprey.runtime.store.conn
    try:
        await state.read(lambda: conn.execute("SELECT count(*) FROM runs").fetchone())
    except Exception as exc:  # any failure means "not ready"; say which
        return error_response(503, "not_ready", f"the run store does not answer: {exc}")
    return Health(status="ready")


@router.get("/api/v1/me", tags=["identity"], response_model=Me)
async def me(who: Identity = Depends(identity)) -> Me:
    """The caller's identity and roles (what they imply included)."""
    return Me.model_validate(who.to_json())


#: Upper bounds (seconds) of the decision latency histogram's buckets.
LATENCY_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400)
EXPOSITION = "text/plain; version=0.0.4; charset=utf-8"


@router.get("/metrics", tags=["health"], response_class=PlainTextResponse,
            responses={200: {"content": {EXPOSITION: {}}, "description": "Prometheus text"},
                       401: {"description": "no or bad credentials"}})
async def metrics(who: Identity = Depends(require(Role.VIEWER)),
                  state: ServiceState = Depends(service_state)) -> PlainTextResponse:
    """Runs by state, pending approvals, and how long approvals waited for a human."""
    text = await state.read(lambda: exposition(state.osprey.runtime.store, datetime.now(UTC)))
    return PlainTextResponse(text, media_type=EXPOSITION)


def exposition(store: RunStore, now: datetime) -> str:
    conn = store.conn
    counts = dict(conn.execute("SELECT state, count(*) FROM runs GROUP BY state").fetchall())
    pending = conn.execute("SELECT data FROM approvals WHERE status='pending'").fetchall()
    waiting = sum(1 for (data,) in pending if _moment(data, "expires_at") > now)
    lines = ["# HELP osprey_runs Runs in the store, by state.", "# TYPE osprey_runs gauge"]
    lines += [f'osprey_runs{{state="{run_state}"}} {counts.get(str(run_state), 0)}'
              for run_state in RunState]
    lines += ["# HELP osprey_pending_approvals Approval requests waiting for a decision.",
              "# TYPE osprey_pending_approvals gauge", f"osprey_pending_approvals {waiting}"]
    latencies = [(_moment(data, "decided_at") - _moment(data, "created_at")).total_seconds()
                 for (data,) in conn.execute("SELECT data FROM approvals WHERE status IN "
                                             "('approved', 'rejected')").fetchall()]
    lines += ["# HELP osprey_decision_latency_seconds Time from an approval request to a "
              "human's approve or reject.",
              "# TYPE osprey_decision_latency_seconds histogram"]
    lines += [f'osprey_decision_latency_seconds_bucket{{le="{bound}"}} '
              f"{sum(1 for latency in latencies if latency <= bound)}"
              for bound in LATENCY_BUCKETS]
    lines += [f'osprey_decision_latency_seconds_bucket{{le="+Inf"}} {len(latencies)}',
              f"osprey_decision_latency_seconds_sum {sum(latencies):.6f}",
              f"osprey_decision_latency_seconds_count {len(latencies)}"]
    return "\n".join(lines) + "\n"


def _moment(data: str, key: str) -> datetime:
    return datetime.fromisoformat(json.loads(data)[key])
