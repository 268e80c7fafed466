"""The ``store`` section: which database holds runs, approvals, audit and events."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class StoreSettings(BaseModel):
    """Where runs, approvals, the audit log and events are stored (default: SQLite in the
    osprey home; a ``postgresql://`` URL shares one database between workers)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: SecretStr | None = Field(
        None,
        description="Unset: the SQLite file OSPREY_HOME/osprey.db. postgresql://USER@HOST:"
        "PORT/DB: a PostgreSQL database (needs the 'postgres' extra); keep the password "
        "out of it with PGPASSWORD or ~/.pgpass. Env: OSPREY__STORE__URL.",
    )
    connect_timeout: float = Field(
        10.0, gt=0, le=300,
        description="Seconds to wait for a PostgreSQL connection before an operation fails "
        "with an error naming the server (never a silent fallback).",
    )
    operation_timeout: float = Field(
        30.0, gt=0, le=3600,
        description="Seconds one PostgreSQL operation (a statement or a transaction) may wait "
        "on the server before its connection is cut and it fails as unavailable: a server "
        "that stops answering without closing anything (frozen, a silent network) never "
        "holds a worker longer. Migrations and store copies have no such limit.",
    )
    pool_size: int = Field(8, ge=1, le=200,
                           description="Most PostgreSQL connections one process keeps open.")
    lease_seconds: float = Field(
        30.0, ge=2, le=3600,
        description="How long a worker's claim on a run it is executing lasts without being "
        "renewed (renewed every third of it while the run is worked on). A worker on "
        "another host whose lease ran out is taken for dead and its run is recovered.",
    )
