"""``RemoteOsprey``: the approvals part of the ``Osprey`` API over HTTP, for ``osprey
approvals ... --server URL``.

An approver on another host decides through a running ``osprey serve`` with an API token
and no database file of their own. The records come back as the store's own models, so
the command line shows them exactly as it shows local ones. The token is read from the
``OSPREY_TOKEN`` environment variable (never a command-line argument, which ``ps`` would
show) and never appears in an error message.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from osprey_core.errors import OspreyError
from osprey_core.models import ApprovalRecord, RunRecord

if TYPE_CHECKING:
    from osprey_core.plugin_host import PluginHost

SERVER_ENV = "OSPREY_SERVER"
TOKEN_ENV = "OSPREY_TOKEN"
#: A decision runs the rest of the run before the server answers: allow for long steps.
TIMEOUT = httpx.Timeout(600.0, connect=10.0)


class RemoteError(OspreyError):
    """The server could not be reached, or refused what was asked (the message says why)."""


class RemoteInterrupted(RemoteError):
    """Ctrl-C while the server worked: the server carries on with what it was sent."""

    exit_code = 130


class RemoteOsprey:
    """Approvals on an ``osprey serve`` at ``url``, as the holder of ``token``."""

    def __init__(self, url: str, token: str, *, host: PluginHost | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise RemoteError(f"the server must be a URL such as http://127.0.0.1:8750, not "
                              f"{url!r}")
        if not token.strip():
            raise RemoteError(f"set {TOKEN_ENV} to an API token for {url} (on the server: "
                              "osprey tokens create NAME --role approver)")
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=TIMEOUT, transport=transport,
                                  headers={"Authorization": f"Bearer {token.strip()}"})
        self._host = host
        self._seen: dict[str, dict[str, Any]] = {}  # approvals as the server last showed them

    @classmethod
    def from_env(cls, url: str, *, host: PluginHost | None = None) -> RemoteOsprey:
        """A client of ``url`` with the token in ``OSPREY_TOKEN``."""
        return cls(url, os.environ.get(TOKEN_ENV, ""), host=host)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RemoteOsprey:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def host(self) -> PluginHost:
        """This host's plugins, which render results as the terminal shows them."""
        if self._host is None:
            from osprey_core.plugin_host import load_plugins

            self._host = load_plugins()
        return self._host

    # -- reading ---------------------------------------------------------------------------

    def refresh(self) -> None:
        """Nothing to do here: the server expires overdue approvals before it lists them."""

    def approvals(self, *, status: str | None = None, session: str | None = None,
                  run_id: str | None = None) -> list[ApprovalRecord]:
        params = {key: value for key, value in
                  {"status": status, "session": session, "run": run_id}.items() if value}
        return [self._record(item) for item in self._call("GET", "/api/v1/approvals",
                                                          params=params)]

    def approval(self, approval_id: str) -> ApprovalRecord:
        return self._record(self._call("GET", f"/api/v1/approvals/{_segment(approval_id)}"))

    def editable(self, approval: ApprovalRecord) -> bool:
        if approval.id not in self._seen:
            self.approval(approval.id)
        return bool(self._seen[approval.id].get("editable"))

    def get_run(self, run_id: str) -> RunRecord:
        return self._run(self._call("GET", f"/api/v1/runs/{_segment(run_id)}"))

    def plan_file(self, run_id: str) -> Path:
        """A local copy of the run's plan (the server's plan file is on the server), to
        edit and give to ``osprey approvals edit``."""
        from osprey_core.fileio import atomic_write_text

        plan = self.get_run(run_id).plan
        path = Path.home() / ".cache" / "osprey" / "plans" / f"{Path(run_id).name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, (plan.model_dump_json(indent=2) if plan else "null") + "\n")
        return path

    # -- deciding --------------------------------------------------------------------------

    def approve(self, approval_id: str, *, reason: str | None = None,
                session: str | None = None, sha256: str | None = None) -> RunRecord:
        """Approve the artifact the server shows now (or exactly ``sha256``); the run goes
        on to its next pause or its end before the server answers."""
        return self._decide("approve", approval_id, reason, session, sha256)

    def reject(self, approval_id: str, *, reason: str | None = None,
               session: str | None = None, sha256: str | None = None) -> RunRecord:
        return self._decide("reject", approval_id, reason, session, sha256)

    def edit(self, approval_id: str, artifact: Any, *,
             session: str | None = None) -> ApprovalRecord:
        """Replace a pending plan or editable artifact; returns the new request."""
        current = self._current(approval_id, session)
        body = {"sha256": current.artifact_sha256, "artifact": artifact}
        outcome = self._call("POST", f"/api/v1/approvals/{_segment(approval_id)}/edit",
                             json=body, moving=approval_id)
        return self._record(outcome["approval"])

    def _decide(self, verb: str, approval_id: str, reason: str | None, session: str | None,
                sha256: str | None) -> RunRecord:
        if sha256 is None:
            sha256 = self._current(approval_id, session).artifact_sha256
        payload = self._call("POST", f"/api/v1/approvals/{_segment(approval_id)}/{verb}",
                             json={"sha256": sha256, "reason": reason}, moving=approval_id)
        return self._run(payload)

    def _current(self, approval_id: str, session: str | None) -> ApprovalRecord:
        approval = self.approval(approval_id)
        if session is not None and approval.session != session:
            raise RemoteError(f"approval {approval.id} belongs to another session, not "
                              f"'{session}'")
        return approval

    # -- HTTP ------------------------------------------------------------------------------

    def _record(self, data: dict[str, Any]) -> ApprovalRecord:
        self._seen[data["id"]] = data
        return ApprovalRecord.model_validate({key: data[key] for key in data
                                              if key in ApprovalRecord.model_fields})

    def _run(self, data: dict[str, Any]) -> RunRecord:
        if data.get("approval"):
            self._record(data["approval"])
        return RunRecord.model_validate({key: data[key] for key in data
                                         if key in RunRecord.model_fields})

    def _call(self, method: str, path: str, *, moving: str | None = None,
              **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except KeyboardInterrupt:
            if moving is None:
                raise
            raise RemoteInterrupted(
                f"interrupted while {self.url} worked on {moving}; the server carries on "
                f"with what it was sent: osprey approvals show {moving} --server "
                f"{self.url}") from None
        except httpx.TimeoutException:
            raise RemoteError(f"the osprey server at {self.url} did not answer in time "
                              f"({method} {path})") from None
        except httpx.TransportError as exc:
            raise RemoteError(f"cannot reach the osprey server at {self.url}: "
                              f"{exc or type(exc).__name__}") from None
        if response.is_success:
            return response.json()
        raise self._refusal(response)

    def _refusal(self, response: httpx.Response) -> RemoteError:
        try:
            message = str(response.json()["error"]["message"])
        except (ValueError, KeyError, TypeError):
            message = f"{response.status_code} {response.reason_phrase}"
        if response.status_code == 401:
            return RemoteError(f"the osprey server at {self.url} did not accept the token in "
                               f"{TOKEN_ENV}: {message}")
        if response.status_code == 403:
            return RemoteError(f"refused by the osprey server at {self.url}: {message}")
        if response.status_code in (404, 409):
            return RemoteError(message)
        return RemoteError(f"the osprey server at {self.url} answered "
                           f"{response.status_code}: {message}")


def _segment(name: str) -> str:
    """``name`` as one path segment (an id typed by a person may hold anything)."""
    from urllib.parse import quote

    return quote(name, safe="")
