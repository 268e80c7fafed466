"""Errors of the HTTP service and how every error becomes the one body shape.

Every error answer is ``{"error": {"code": ..., "message": ...}}``; a 401 also carries
``WWW-Authenticate: Bearer``. Messages are written here or come from osprey's own errors,
which never hold a token (the token is only ever read from a header, never echoed).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from osprey_core.errors import ApprovalError, ConfigError, OspreyError, RunError

if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

log = logging.getLogger("osprey_core.service")

#: Status -> error code used when a plain HTTP error (404 route, 405 method) has none.
DEFAULT_CODES = {400: "bad_request", 401: "unauthenticated", 403: "forbidden",
                 404: "not_found", 405: "method_not_allowed", 409: "conflict",
                 413: "body_too_large", 422: "invalid_request", 500: "internal_error",
                 503: "unavailable"}


class ServiceError(Exception):
    """An answer other than success, with its status, code and a message for people."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def unauthenticated(message: str) -> ServiceError:
    return ServiceError(401, "unauthenticated", message,
                        {"WWW-Authenticate": 'Bearer realm="osprey"'})


def not_found(what: str) -> ServiceError:
    return ServiceError(404, "not_found", f"no {what}")


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    from fastapi.responses import JSONResponse

    from osprey_core.service.logs import mask_secrets

    # An error may quote what the caller sent (a path, an id): never a token back.
    return JSONResponse(error_body(code, mask_secrets(message)), status_code=status,
                        headers=headers)


def from_osprey_error(exc: OspreyError) -> ServiceError:
    """Osprey's own refusals as HTTP answers: an unknown id is a 404, a plan that breaks
    the rules a 422, a decision or run that cannot happen in the current state a conflict
    (409); anything else the caller asked wrongly is a 400."""
    if str(exc).startswith("unknown "):  # "unknown approval 'x'", "unknown run 'x'"
        return ServiceError(404, "not_found", str(exc))
    from osprey_core.planning.base import PlanValidationError

    if isinstance(exc, PlanValidationError):
        return ServiceError(422, "invalid_plan", str(exc))
    if isinstance(exc, ApprovalError | RunError):
        code = "approval_expired" if " expired at " in str(exc) else "conflict"
        return ServiceError(409, code, str(exc))
    if isinstance(exc, ConfigError):
        return ServiceError(500, "config_error", str(exc))
    from osprey_core.store_errors import StoreError

    if isinstance(exc, StoreError):
        return ServiceError(503, "store_error", str(exc))
    return ServiceError(400, "refused", str(exc))


def install_handlers(app: FastAPI) -> None:
    """Every way a request can fail answers with the same body shape."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    @app.exception_handler(ServiceError)
    async def _service(request: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(OspreyError)
    async def _osprey(request: Request, exc: OspreyError) -> JSONResponse:
        error = from_osprey_error(exc)
        return error_response(error.status, error.code, error.message)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        code = DEFAULT_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}"
        return error_response(exc.status_code, code, message, dict(exc.headers or {}) or None)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", validation_message(exc.errors()))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error in %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal_error", "internal error; the server log has "
                              "the details")


def validation_message(errors: Any) -> str:
    """Pydantic's errors as one line each: ``body.sha256: Field required``."""
    parts = []
    for error in list(errors)[:10]:
        where = ".".join(str(part) for part in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"
