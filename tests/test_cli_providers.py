"""``osprey providers list|test`` end to end, against a plugin installed the way pip would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.cli import assert_exit, json_of, osprey
from support.dist import osprey_env, write_distribution

from osprey_core.api import default_user

pytestmark = [pytest.mark.exercises_hook("register_commands"),
              pytest.mark.exercises_hook("register_data_providers")]

NOTES_PLUGIN = """
    import asyncio

    from osprey_core import hookimpl
    from osprey_core.hookspecs.data_providers import ContextBlock, DataProvider


    class ShiftNotes(DataProvider):
        name = "shift_notes"
        context_type = "shift_notes"

        async def retrieve(self, request):
            return ContextBlock("shift_notes", f"Notes for {request.user}",
                                [{"text": "RF trip in sector 4"}, {"text": "beam back 04:10"}])


    class Broken(DataProvider):
        name = "broken"
        context_type = "logbook"

        async def retrieve(self, request):
            raise ConnectionError("logbook database unreachable")


    class Slow(DataProvider):
        name = "slow"
        context_type = "archive"

        async def retrieve(self, request):
            await asyncio.sleep(30)


    @hookimpl
    def register_data_providers(register):
        for provider in (ShiftNotes(), Broken(), Slow()):
            register(provider)
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    site = write_distribution(tmp_path / "site", "osprey-plugin-notes",
                              entry_points={"notes": "notes_plugin"},
                              modules={"notes_plugin": NOTES_PLUGIN})
    # Only the essential built-ins and this plugin: no other provider joins the outcomes.
    return osprey_env(tmp_path / "home", pythonpath=site, OSPREY_STRICT_PLUGINS="1",
                      OSPREY_LOAD_PLUGINS="notes",
                      OSPREY__PROVIDERS__TIMEOUTS='{"slow": 0.3}',
                      OSPREY__PROVIDERS__DISABLED="[retired]")


def test_list_shows_each_provider_with_its_plugin_type_and_timeout(
    env: dict[str, str], tmp_path: Path
) -> None:
    listed = json_of("providers", "list", env=env, cwd=tmp_path)
    assert listed["providers"] == [
        {"name": "broken", "plugin": "notes", "context_type": "logbook",
         "timeout_seconds": 5.0, "disabled": False},
        {"name": "shift_notes", "plugin": "notes", "context_type": "shift_notes",
         "timeout_seconds": 5.0, "disabled": False},
        {"name": "slow", "plugin": "notes", "context_type": "archive",
         "timeout_seconds": 0.3, "disabled": False},
    ]
    assert listed["enabled"] is True

    table = osprey("providers", "list", env=env, cwd=tmp_path)
    assert_exit(table, 0)
    assert "shift_notes" in table.stdout and "0.3" in table.stdout
    assert "'retired', but no data provider has that name" in table.stderr


def test_test_reports_every_provider_and_exits_1_when_one_failed(
    env: dict[str, str], tmp_path: Path
) -> None:
    result = osprey("providers", "test", "why was the beam lost?", "--user", "alice", "--json",
                    env=env, cwd=tmp_path)
    assert_exit(result, 1)
    outcomes = {o["provider"]: o for o in json.loads(result.stdout)["outcomes"]}
    assert {name: outcome["status"] for name, outcome in outcomes.items()} == {
        "broken": "error", "shift_notes": "ok", "slow": "timeout"}
    assert outcomes["shift_notes"]["block"] == {
        "provider": "shift_notes", "context_type": "shift_notes", "title": "Notes for alice",
        "items": [{"text": "RF trip in sector 4"}, {"text": "beam back 04:10"}]}
    assert outcomes["broken"]["reason"] == (
        "retrieve raised ConnectionError: logbook database unreachable")
    assert outcomes["slow"]["reason"] == "no answer within 0.3 s"

    table = osprey("providers", "test", "why was the beam lost?", env=env, cwd=tmp_path)
    assert_exit(table, 1)
    # without --user, the request is the login name's, as for `osprey run`
    assert f'Notes for {default_user()} (2 items): {{"text": "RF trip in sector 4"}}' in \
        table.stdout
    assert "1 ok, 1 timeout, 1 error" in table.stdout


def test_only_asks_the_named_providers(env: dict[str, str], tmp_path: Path) -> None:
    data = json_of("providers", "test", "beam", "--only", "shift_notes", env=env, cwd=tmp_path)
    assert [(o["provider"], o["status"]) for o in data["outcomes"]] == [("shift_notes", "ok")]

    wrong = osprey("providers", "test", "beam", "--only", "shift_note", env=env, cwd=tmp_path)
    assert_exit(wrong, 2)
    assert "no data provider named 'shift_note' (did you mean 'shift_notes'?)" in wrong.stderr
