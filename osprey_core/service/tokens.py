"""API tokens: random secrets handed out once, kept only as their sha256.

A token reads ``osp_<id>_<secret>``. The id finds the row (and names the token in lists
and the audit log); the sha256 of the whole token must match the stored one. Nothing
here writes a secret anywhere: the caller of :meth:`TokenStore.create` prints it once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from osprey_core.errors import OspreyError
from osprey_core.models import AuditRecord
from osprey_core.service.settings import Role
from osprey_core.store import RunStore
from osprey_core.store_errors import translating

PREFIX = "osp"
_TOKEN = re.compile(r"^osp_([0-9a-f]{12})_([A-Za-z0-9_-]{20,200})$")
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
#: ``last_used_at`` is written at most this often per token, so a busy client does not
#: turn every request into a write transaction.
LAST_USED_RESOLUTION = timedelta(seconds=60)


class TokenError(OspreyError):
    """A token cannot be created, found or revoked as asked."""


class TokenRecord(BaseModel):
    """A token as stored: everything but the secret."""

    id: str
    name: str
    roles: list[Role]
    created_at: datetime
    created_by: str
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None

    def status(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``2w`` or ``45s`` as a duration (positive)."""
    match = _DURATION.match(text)
    if not match or int(match.group(1)) <= 0:
        raise TokenError(f"expiry {text!r} is not a duration such as 30d, 12h, 90m or 2w")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def looks_like_token(text: str) -> bool:
    """Whether ``text`` has the shape of an osprey token (for scrubbing logs)."""
    return _TOKEN.match(text) is not None


class TokenStore:
    """The ``api_tokens`` table of a run store's database."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.path = store.path  # named by errors (see ``translating``)

    @translating
    def create(self, name: str, roles: list[Role], *, created_by: str,
               expires_in: timedelta | None = None,
               now: datetime | None = None) -> tuple[TokenRecord, str]:
        """A new token and its secret (returned once, never stored)."""
        if not name.strip():
            raise TokenError("a token needs a name (who or what uses it)")
        if not roles:
            raise TokenError("a token needs at least one role (--role viewer, operator, "
                             "approver or admin)")
        now = now or datetime.now(UTC)
        token_id = secrets.token_hex(6)
        secret = f"{PREFIX}_{token_id}_{secrets.token_urlsafe(32)}"
        record = TokenRecord(id=token_id, name=name.strip(), roles=sorted(set(roles)),
                             created_at=now, created_by=created_by,
                             expires_at=now + expires_in if expires_in else None)
        with self.store.transaction() as tx:
            tx.conn.execute(
                "INSERT INTO api_tokens (id, name, sha256, roles, created_at, created_by, "
                "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [record.id, record.name, digest(secret), json.dumps(record.roles),
                 _iso(record.created_at), created_by, _iso(record.expires_at)])
            tx.append_audit(AuditRecord(at=now, actor=created_by, interface="cli",
                                        action="token_created",
                                        details={"token": record.id, "name": record.name,
                                                 "roles": list(record.roles)}))
        return record, secret

    @translating
    def list(self) -> list[TokenRecord]:
        rows = self.store.conn.execute(f"SELECT {_COLUMNS} FROM api_tokens ORDER BY created_at")
        return [_record(row) for row in rows.fetchall()]

    @translating
    def get(self, token_id: str) -> TokenRecord:
        row = self.store.conn.execute(f"SELECT {_COLUMNS} FROM api_tokens WHERE id=?",
                                      [token_id]).fetchone()
        if row is None:
            raise TokenError(f"no token with id {token_id!r} (osprey tokens list shows them)")
        return _record(row)

    @translating
    def revoke(self, token_id: str, *, actor: str, interface: str = "cli",
               now: datetime | None = None) -> TokenRecord:
        """Refuse the token from now on (idempotent: revoking twice keeps the first time)."""
        now = now or datetime.now(UTC)
        record = self.get(token_id)
        if record.revoked_at is not None:
            return record
        with self.store.transaction() as tx:
            tx.conn.execute("UPDATE api_tokens SET revoked_at=? WHERE id=? AND revoked_at IS "
                            "NULL", [_iso(now), token_id])
            tx.append_audit(AuditRecord(at=now, actor=actor, interface=interface,
                                        action="token_revoked",
                                        details={"token": token_id, "name": record.name}))
        return self.get(token_id)

    @translating
    def verify(self, token: str, *, now: datetime | None = None) -> TokenRecord | None:
        """The active token ``token`` is, else ``None`` (malformed, unknown, wrong secret,
        revoked or expired: the caller says only "invalid")."""
        match = _TOKEN.match(token)
        if match is None:
            return None
        row = self.store.conn.execute(f"SELECT {_COLUMNS}, sha256 FROM api_tokens WHERE id=?",
                                      [match.group(1)]).fetchone()
        if row is None or not hmac.compare_digest(row[-1], digest(token)):
            return None
        record = _record(row[:-1])
        now = now or datetime.now(UTC)
        if record.status(now) != "active":
            return None
        if record.last_used_at is None or now - record.last_used_at >= LAST_USED_RESOLUTION:
            with self.store.transaction(durable=False) as tx:
                tx.conn.execute("UPDATE api_tokens SET last_used_at=? WHERE id=?",
                                [_iso(now), record.id])
            record = record.model_copy(update={"last_used_at": now})
        return record


_COLUMNS = "id, name, roles, created_at, created_by, expires_at, revoked_at, last_used_at"


def _record(row: Any) -> TokenRecord:
    token_id, name, roles, created_at, created_by, expires_at, revoked_at, last_used = row
    return TokenRecord(id=token_id, name=name, roles=json.loads(roles), created_at=created_at,
                       created_by=created_by, expires_at=expires_at, revoked_at=revoked_at,
                       last_used_at=last_used)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
