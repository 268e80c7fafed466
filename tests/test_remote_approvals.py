"""``osprey approvals ... --server URL``: an approver on another host decides through
``osprey serve`` with a token from ``OSPREY_TOKEN`` and no database file of their own.

The remote commands print what the local ones print and exit with the same codes; an
unreachable server, a bad token, a missing role (with the reason) and a stale or
already-decided request are clear errors.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support.service import Server, cli, server_on_each_engine

from osprey_core.service.client import RemoteError, RemoteOsprey

WRITE = "set HCM1:SP to 0.5 A"


server = server_on_each_engine("remote")  # the server's store: SQLite, then PostgreSQL


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """The approver's home directory on another host: no osprey home, no database."""
    home = tmp_path / "approver"
    home.mkdir()
    return home


def remote(home: Path, server: Server | str, *args: str, token: str | None = None,
           via_env: bool = False) -> subprocess.CompletedProcess[str]:
    """``osprey ARGS`` as the approver elsewhere: ``--server URL`` (or OSPREY_SERVER),
    the token in OSPREY_TOKEN."""
    url = server if isinstance(server, str) else server.url
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("OSPREY", "XDG_"))}
    env.update(HOME=str(home), COLUMNS="250", PYTHONIOENCODING="utf-8")
    if token is not None:
        env["OSPREY_TOKEN"] = token
    if via_env:
        env["OSPREY_SERVER"] = url
    else:
        args = (*args, "--server", url)
    return subprocess.run([sys.executable, "-m", "osprey_core", *args], env=env, cwd=home,
                          capture_output=True, text=True, encoding="utf-8", timeout=120,
                          check=False, stdin=subprocess.DEVNULL)


def paused(server: Server, query: str = WRITE) -> dict[str, object]:
    """A run submitted on the server's host, waiting for approval; its JSON."""
    result = cli(server, "run", query, "--json")
    assert result.returncode == 3, result.stderr
    data: dict[str, object] = json.loads(result.stdout)
    return data


def no_database(home: Path) -> None:
    assert not [path for path in home.rglob("*") if path.name.startswith("osprey.db")]


def test_an_approver_elsewhere_sees_what_the_local_cli_shows(server: Server,
                                                             elsewhere: Path) -> None:
    approval = str(paused(server)["approval_id"])
    token = server.token("anna", "approver")
    for args in (("approvals", "list", "--pending"), ("approvals", "show", approval)):
        here, there = cli(server, *args), remote(elsewhere, server, *args, token=token)
        assert (there.returncode, there.stdout) == (here.returncode, here.stdout), there.stderr
    shown = remote(elsewhere, server, "approvals", "show", approval, "--json", token=token,
                   via_env=True)
    assert json.loads(shown.stdout) == json.loads(
        cli(server, "approvals", "show", approval, "--json").stdout)
    listed = remote(elsewhere, server, "approvals", "list", "--run",
                    str(paused(server)["id"]), "--json", token=token)
    assert [item["status"] for item in json.loads(listed.stdout)] == ["pending"]
    no_database(elsewhere)


def test_approving_remotely_prints_and_exits_as_approving_locally(server: Server,
                                                                  elsewhere: Path) -> None:
    def written_locally(query: str) -> subprocess.CompletedProcess[str]:
        return cli(server, "approvals", "approve", str(paused(server, query)["approval_id"]))

    approval = str(paused(server)["approval_id"])
    written_locally("set HCM1:SP to 0.0 A")  # the simulated machine keeps its values
    local = written_locally(WRITE)  # 0.0 -> 0.5
    assert local.returncode == 0, local.stderr
    assert written_locally("set HCM1:SP to 0.0 A").returncode == 0
    there = remote(elsewhere, server, "approvals", "approve", approval, "-r", "checked",
                   token=server.token("anna", "approver"))
    assert (there.returncode, there.stdout) == (0, local.stdout), there.stderr
    assert "ok, verified" in there.stdout
    decided = json.loads(cli(server, "approvals", "show", approval, "--json").stdout)
    assert (decided["status"], decided["decided_by"], decided["decided_via"],
            decided["decision_reason"]) == ("approved", "anna", "http", "checked")
    no_database(elsewhere)


def test_rejecting_remotely(server: Server, elsewhere: Path) -> None:
    run = paused(server)
    result = remote(elsewhere, server, "approvals", "reject", str(run["approval_id"]),
                    "--reason", "wrong corrector", token=server.token("anna", "approver"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"rejected {run['approval_id']}; run {run['id']} is rejected\n"


def test_an_edited_plan_is_sent_and_asks_again(server: Server, elsewhere: Path) -> None:
    token = server.token("anna", "approver")
    approval = str(paused(server, "/planning read SR:CURRENT")["approval_id"])
    shown = json.loads(remote(elsewhere, server, "approvals", "show", approval, "--json",
                              token=token).stdout)
    plan = shown["artifact"]
    plan["steps"][0]["parameters"]["channels"].append("SR:LIFETIME")
    edited = elsewhere / "plan.json"
    edited.write_text(json.dumps(plan), encoding="utf-8")

    result = remote(elsewhere, server, "approvals", "edit", approval, str(edited), token=token)
    assert result.returncode == 3, result.stderr
    assert f"{approval} is superseded" in result.stdout
    new = result.stdout.split("osprey approvals approve ")[1].split()[0]
    done = remote(elsewhere, server, "approvals", "approve", new, token=token)
    assert done.returncode == 0, done.stderr
    assert "SR:CURRENT" in done.stdout and "SR:LIFETIME" in done.stdout
    no_database(elsewhere)


def test_refusals_say_why_and_exit_as_locally(server: Server, elsewhere: Path) -> None:
    run = paused(server)
    approval = str(run["approval_id"])
    viewer = server.token("vic", "viewer")
    refused = remote(elsewhere, server, "approvals", "approve", approval, token=viewer)
    assert refused.returncode == 1
    assert (f"Error: refused by the osprey server at {server.url}: deciding an approval "
            "needs the approver role; vic has viewer") in refused.stderr

    asker = server.token(str(run["user"]), "approver")  # who asked for the write
    refused = remote(elsewhere, server, "approvals", "approve", approval, token=asker)
    assert refused.returncode == 1
    assert f"separation of duties: {run['user']} asked for this channel_write" in refused.stderr

    wrong = remote(elsewhere, server, "approvals", "approve", approval, "--session", "other",
                   token=server.token("anna", "approver"))
    assert wrong.returncode == 1
    assert f"approval {approval} belongs to another session, not 'other'" in wrong.stderr

    token = server.token("anna", "approver")
    assert remote(elsewhere, server, "approvals", "approve", approval, token=token
                  ).returncode == 0
    again = remote(elsewhere, server, "approvals", "approve", approval, token=token)
    assert again.returncode == 1
    assert f"Error: approval {approval} is already approved by anna" in again.stderr
    unknown = remote(elsewhere, server, "approvals", "show", "apv-nope", token=token)
    assert unknown.returncode == 1
    assert "no approval 'apv-nope'" in unknown.stderr


def test_a_stale_sha256_is_refused(server: Server) -> None:
    approval = str(paused(server)["approval_id"])
    with RemoteOsprey(server.url, server.token("anna", "approver")) as client, \
            pytest.raises(RemoteError, match=f"approval {approval} is for sha256 [0-9a-f]{{64}}, "
                          f"not 0000"):
        client.approve(approval, sha256="0" * 64)
    with RemoteOsprey(server.url, server.token("anna", "approver")) as client:
        assert client.approval(approval).status == "pending"


def test_credentials_and_the_server_address_are_checked(server: Server,
                                                        elsewhere: Path) -> None:
    bad = "osp_0123456789ab_" + "s3cret" * 5
    result = remote(elsewhere, server, "approvals", "list", token=bad)
    assert result.returncode == 1
    assert ("did not accept the token in OSPREY_TOKEN: the token is invalid, expired or "
            "revoked") in result.stderr
    assert "s3cret" not in result.stderr + result.stdout

    result = remote(elsewhere, server, "approvals", "list")
    assert result.returncode == 1
    assert "set OSPREY_TOKEN to an API token" in result.stderr

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    result = remote(elsewhere, closed, "approvals", "list", token=bad)
    assert result.returncode == 1
    assert f"Error: cannot reach the osprey server at {closed}" in result.stderr
    assert "Traceback" not in result.stderr

    result = remote(elsewhere, server, "approvals", "approve", "apv-1", "--user", "bob",
                    token=bad)
    assert result.returncode == 2
    assert "--user applies to the local store only" in result.stderr
    no_database(elsewhere)
