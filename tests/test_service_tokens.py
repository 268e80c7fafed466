"""API tokens: only the sha256 is kept, roles and what they imply, expiry, revocation,
``last_used_at``; the ``osprey tokens`` commands; the store migration that adds them
keeps everything an older store held; the ``service`` settings."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.dist import osprey_env, run_osprey
from support.postgres import StoreEngine

from osprey_core.cli.serve import address_notice
from osprey_core.errors import ConfigError
from osprey_core.service.settings import Role, ServiceSettings, implied_roles, is_loopback
from osprey_core.service.tokens import TokenError, TokenStore, parse_duration
from osprey_core.store import RunStore
from osprey_core.store_schema import API_TOKENS, MIGRATIONS

NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def tokens(run_store_engine: StoreEngine) -> Iterator[TokenStore]:
    """A token store in each run-store engine in turn."""
    store = run_store_engine.open()
    yield TokenStore(store)
    store.close()


def test_only_the_sha256_is_stored_and_the_secret_verifies(tokens: TokenStore) -> None:
    record, secret = tokens.create("alice", [Role.APPROVER, Role.OPERATOR],
                                   created_by="root", now=NOW)
    assert secret.startswith(f"osp_{record.id}_") and len(secret) > 50
    rows = tokens.store.conn.execute("SELECT * FROM api_tokens").fetchall()
    assert secret not in repr(rows)
    assert hashlib.sha256(secret.encode()).hexdigest() in repr(rows)
    verified = tokens.verify(secret, now=NOW)
    assert verified is not None and verified.roles == [Role.APPROVER, Role.OPERATOR]
    assert verified.last_used_at == NOW
    for wrong in (secret[:-1] + ("x" if secret[-1] != "x" else "y"), secret + "x",
                  secret.replace(record.id, "0" * 12), "osp_", "", "Bearer " + secret):
        assert tokens.verify(wrong, now=NOW) is None
    audit = tokens.store.audit()
    assert [(entry.action, entry.actor) for entry in audit] == [("token_created", "root")]
    assert secret not in audit[0].model_dump_json()


def test_expiry_revocation_and_last_used(tokens: TokenStore) -> None:
    record, secret = tokens.create("ci", [Role.VIEWER], created_by="root",
                                   expires_in=parse_duration("30d"), now=NOW)
    assert record.expires_at == NOW + timedelta(days=30)
    assert tokens.verify(secret, now=NOW + timedelta(days=29)) is not None
    assert tokens.verify(secret, now=NOW + timedelta(days=29, seconds=30)).last_used_at == (
        NOW + timedelta(days=29))  # written at most once a minute
    assert tokens.verify(secret, now=NOW + timedelta(days=30)) is None
    assert tokens.get(record.id).status(NOW + timedelta(days=31)) == "expired"
    other, other_secret = tokens.create("ops", [Role.ADMIN], created_by="root", now=NOW)
    revoked = tokens.revoke(other.id, actor="root", now=NOW + timedelta(hours=1))
    assert revoked.revoked_at == NOW + timedelta(hours=1)
    assert tokens.revoke(other.id, actor="root").revoked_at == revoked.revoked_at
    assert tokens.verify(other_secret, now=NOW + timedelta(hours=2)) is None
    assert [item.id for item in tokens.list()] == [record.id, other.id]
    with pytest.raises(TokenError, match="no token with id 'nope'"):
        tokens.revoke("nope", actor="root")


def test_bad_names_roles_and_durations_are_refused(tokens: TokenStore) -> None:
    with pytest.raises(TokenError, match="needs a name"):
        tokens.create(" ", [Role.VIEWER], created_by="root")
    with pytest.raises(TokenError, match="at least one role"):
        tokens.create("x", [], created_by="root")
    for text in ("30", "0d", "-1d", "1y", "soon"):
        with pytest.raises(TokenError, match="not a duration"):
            parse_duration(text)
    assert parse_duration("12h") == timedelta(hours=12)
    assert parse_duration("2w") == timedelta(weeks=2)


def test_roles_imply_what_the_contract_says() -> None:
    assert implied_roles(frozenset({Role.ADMIN})) == frozenset(Role)
    assert implied_roles(frozenset({Role.OPERATOR})) == {Role.OPERATOR, Role.VIEWER}
    assert implied_roles(frozenset({Role.APPROVER})) == {Role.APPROVER, Role.VIEWER}
    assert implied_roles(frozenset()) == frozenset()


def test_a_version_2_store_gains_the_token_table_and_keeps_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "osprey.db"
    old = RunStore(path)
    old.conn.execute("DROP TABLE api_tokens")
    old.conn.execute("UPDATE meta SET value='2' WHERE key='schema_version'")
    old.close()
    before = sqlite3.connect(path)
    before.execute("INSERT INTO runs (id, session, state, created_at, updated_at, data) "
                   "VALUES ('run-1', 's', 'done', 't', 't', '{}')")
    before.commit()
    before.close()
    store = RunStore(path)
    try:
        assert store.schema_version == len(MIGRATIONS) == 3 and MIGRATIONS[2] is API_TOKENS
        assert store.conn.execute("SELECT id FROM runs").fetchall() == [("run-1",)]
        assert TokenStore(store).list() == []
    finally:
        store.close()


def test_the_tokens_commands(tmp_path: Path) -> None:
    env = osprey_env(tmp_path / "home")
    created = run_osprey("tokens", "create", "alice", "--role", "approver", "--role",
                         "operator", "--expires", "30d", "--json", env=env, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    token = json.loads(created.stdout)
    assert token["roles"] == ["approver", "operator"] and token["status"] == "active"
    listed = run_osprey("tokens", "list", "--json", env=env, cwd=tmp_path)
    assert token["token"] not in listed.stdout
    assert [item["name"] for item in json.loads(listed.stdout)] == ["alice"]
    table = run_osprey("tokens", "list", env=env, cwd=tmp_path)
    assert "alice" in table.stdout and token["token"] not in table.stdout
    revoked = run_osprey("tokens", "revoke", token["id"], env=env, cwd=tmp_path)
    assert revoked.returncode == 0 and f"revoked token {token['id']}" in revoked.stdout
    bad = run_osprey("tokens", "create", "bob", "--role", "root", env=env, cwd=tmp_path)
    assert bad.returncode == 2 and "'root' is not one of" in bad.stderr
    unknown = run_osprey("tokens", "revoke", "nope", env=env, cwd=tmp_path)
    assert unknown.returncode == 1 and "no token with id 'nope'" in unknown.stderr


def test_service_settings_are_strict_and_loopback_by_default(tmp_path: Path) -> None:
    from osprey_core.config import load_config

    assert ServiceSettings().host == "127.0.0.1"
    assert ServiceSettings().url() == "http://127.0.0.1:8750"
    assert ServiceSettings(host="::1", port=9).url() == "http://[::1]:9"
    assert is_loopback("127.0.0.1") and is_loopback("::1") and not is_loopback("0.0.0.0")
    assert address_notice("127.0.0.1") is None and address_notice("localhost") is None
    assert "other machines can reach" in (address_notice("0.0.0.0") or "")
    assert ServiceSettings(trusted_proxies=["10.0.0.0/8"]).trusts("10.1.2.3")
    assert not ServiceSettings(trusted_proxies=["10.0.0.0/8"]).trusts("127.0.0.1")
    path = tmp_path / "osprey.yml"
    for text, problem in (("separation_of_duties: 'no'", f"{path}:2: service.separation_of_"
                           "duties: expected true or false"),
                          ("trusted_proxies: [proxy]", "'proxy' is not an IP address")):
        path.write_text(f"service:\n  {text}\n", encoding="utf-8")
        with pytest.raises(ConfigError) as refused:
            load_config(None, path)
        assert problem in str(refused.value)


def test_osprey_store_check_knows_the_token_table(tmp_path: Path) -> None:
    from osprey_core.store_maintenance import check_store

    path = tmp_path / "osprey.db"
    store = RunStore(path)
    TokenStore(store).create("ci", [Role.VIEWER], created_by="root")
    store.close()
    assert check_store(path).counts["api_tokens"] == 1
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE api_tokens")
    assert "table 'api_tokens' is missing" in check_store(path).problems
