"""The web console in a real browser (Debian's Chromium through Playwright, headless),
against ``osprey serve`` on a loopback port: what a shift leader does at the console.

Runs are submitted by another client through the JSON API while the pages are open;
decisions are made by clicking and typing in the pages. The screenshots in
``docs/screenshots/`` are written here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.browser import Console, chromium, console_server, submit
from support.service import Server

playwright = pytest.importorskip("playwright.sync_api",
                                 reason="Playwright (the dev extra) is not installed")
expect = playwright.expect

People = Callable[..., Console]


# Module scope, not session: Playwright's sync API runs an event loop in this thread until
# it stops, and every later test calling asyncio.run() would fail while it lives.
@pytest.fixture(scope="module")
def browser() -> Iterator[playwright.Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with console_server(tmp_path_factory.mktemp("console") / "home") as running:
        yield running


@pytest.fixture
def people(browser: playwright.Browser, server: Server) -> Iterator[People]:
    """``people(name, *roles)``: that person signed in at a console of their own."""
    opened: list[Console] = []

    def sign_in(name: str, *roles: str) -> Console:
        console = Console(browser, server)
        opened.append(console)
        console.sign_in(server.token(name, *roles))
        return console

    yield sign_in
    for console in opened:
        console.close()


def asked(server: Server, query: str, *, planning: bool = False,
          user: str = "ana") -> dict[str, str]:
    """A run submitted by ``user`` that paused; its ids."""
    run = submit(server, server.token(user, "operator"), query, planning=planning)
    assert run["state"] in {"awaiting_step_approval", "awaiting_plan_approval"}, run
    return {"run": run["id"], "approval": run["approval_id"],
            "sha256": run["approval"]["artifact_sha256"]}


def api(server: Server, path: str) -> dict[str, object]:
    with server.client(server.token("viewer-vic", "viewer")) as client:
        answer = client.get(path)
    assert answer.status_code == 200, answer.text
    data: dict[str, object] = answer.json()
    return data


def test_a_planning_mode_run_approved_in_the_console_runs_to_done(
        server: Server, people: People) -> None:
    ids = asked(server, "read SR:CURRENT", planning=True)
    page = people("shift", "approver").open(f"/console/approvals/{ids['approval']}")
    expect(page.locator("#steps")).to_contain_text("channel_read")
    expect(page.locator("#steps")).to_contain_text('["SR:CURRENT"]')
    expect(page.locator("#sha256")).to_have_text(ids["sha256"])
    page.locator("#approve-reason").fill("plan checked")
    page.keyboard.press("Tab")
    expect(page.locator("#approve")).to_be_focused()
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/console/runs/{ids['run']}?notice=approved")
    expect(page.locator("#run-state")).to_have_text("done")
    expect(page.locator("#answer")).to_contain_text("SR:CURRENT")
    approval = api(server, f"/api/v1/approvals/{ids['approval']}")
    assert (approval["status"], approval["decided_by"], approval["decided_via"],
            approval["decision_reason"]) == ("approved", "shift", "console", "plan checked")


def test_a_reject_cancels_the_run_and_nothing_is_written(
        server: Server, people: People) -> None:
    before = api(server, "/api/v1/channels/HCM1:SP")["value"]
    ids = asked(server, "set HCM1:SP to 2.5 A")
    page = people("shift", "approver").open(f"/console/approvals/{ids['approval']}")
    page.locator("#reject").click()  # no reason: the browser keeps the form
    expect(page.locator("#status")).to_have_text("pending")
    page.locator("#reject-reason").fill("injection in progress")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/console/runs/{ids['run']}?notice=rejected")
    expect(page.locator("#run-state")).to_have_text("rejected")
    expect(page.locator("main")).to_contain_text("rejected by shift via console: "
                                                 "injection in progress")
    assert api(server, "/api/v1/channels/HCM1:SP")["value"] == before


def test_a_code_edit_is_analysed_and_asks_again(server: Server, people: People) -> None:
    ids = asked(server, "plot the last hour of SR:CURRENT")
    console = people("shift", "approver")
    page = console.open(f"/console/approvals/{ids['approval']}")
    code = page.locator("#edit-text").input_value()
    lines = code.splitlines()
    edited = "\n".join(["import os", *lines, "os.system('true')"]) + "\n"
    page.locator("#edit-text").fill(edited)
    page.locator("#edit").click()
    page.wait_for_url("**/console/approvals/*?notice=edited")
    assert ids["approval"] not in page.url
    expect(page.locator(".notice")).to_have_text(
        "Your edit was analysed; it needs approval again (below).")
    expect(page.locator("#status")).to_have_text("pending")
    expect(page.locator("#reasons")).to_contain_text("the code uses dangerous constructs")
    expect(page.locator("#reasons")).to_contain_text("edited by shift")
    shell_line = len(lines) + 2
    finding = page.locator(f"#line-{shell_line} + tr.finding")
    expect(finding).to_contain_text(f"line {shell_line}: critical dangerous: "
                                    "shell-out via os.system")
    expect(page.locator(f"#line-{shell_line}")).to_contain_text("os.system('true')")
    assert page.locator("#sha256").inner_text() != ids["sha256"]
    console.screenshot("code-approval")
    old = console.open(f"/console/approvals/{ids['approval']}")
    expect(old.locator("#status")).to_have_text("superseded")
    expect(old.locator("#approve")).to_have_count(0)


def test_an_operator_without_the_approver_role_sees_approval_refused(
        server: Server, people: People) -> None:
    ids = asked(server, "set HCM1:SP to 1.0 A")
    page = people("otto", "operator").open(f"/console/approvals/{ids['approval']}")
    reason = "deciding an approval needs the approver role; otto has operator, viewer"
    expect(page.locator("#approve")).to_be_disabled()
    expect(page.locator("#approve-refusal")).to_have_text(f"You cannot approve this: {reason}.")
    expect(page.locator("#reject")).to_be_disabled()
    # A page tampered with (the button re-enabled) is refused by the server all the same.
    page.evaluate("document.getElementById('approve').disabled = false")
    page.locator("#approve").click()
    expect(page.locator("#problem")).to_have_text(f"Not approved: {reason}")
    expect(page.locator("#status")).to_have_text("pending")


def test_a_new_approval_and_run_states_appear_without_a_reload(
        server: Server, people: People) -> None:
    console = people("shift", "approver")
    page = console.open("/console/approvals")
    expect(page.locator("#live-status")).to_have_text("live")
    page.evaluate("window.notReloaded = true")
    ids = asked(server, "set HCM1:SP to 0.5 A")
    row = page.locator(f'tr[data-approval="{ids["approval"]}"]')
    expect(row).to_contain_text("channel write")
    expect(row).to_contain_text("HCM1:SP")
    runs = console.open("/console/runs")
    expect(runs.locator("#live-status")).to_have_text("live")
    runs.evaluate("window.notReloaded = true")
    state = runs.locator(f'tr[data-run="{ids["run"]}"] [data-state]')
    expect(state).to_have_text("awaiting step approval")
    request = console.context.new_page()
    request.goto(f"/console/approvals/{ids['approval']}")
    expect(request.locator("#live-status")).to_have_text("live")
    with server.client(server.token("lea", "approver")) as client:
        decided = client.post(f"/api/v1/approvals/{ids['approval']}/approve",
                              json={"sha256": ids["sha256"]})
    assert decided.status_code == 200, decided.text
    expect(state).to_have_text("done")
    assert runs.evaluate("window.notReloaded") is True
    expect(request.locator("#changed")).to_have_text(
        "This request changed while the page was open. Reload to see it.")


def test_the_countdown_follows_the_servers_clock_not_the_browsers(
        server: Server, people: People) -> None:
    ids = asked(server, "set HCM1:SP to 0.25 A")
    console = people("shift", "approver")
    console.page.clock.set_fixed_time(time.time() - 7200)  # a browser two hours behind
    page = console.open(f"/console/approvals/{ids['approval']}")
    expect(page.locator("#countdown")).to_contain_text(re.compile(r"^in (59|60) min "))


def test_every_decision_is_reachable_with_the_keyboard_and_focus_is_visible(
        server: Server, people: People) -> None:
    ids = asked(server, "plot the last hour of SR:CURRENT")
    page = people("shift", "approver").open(f"/console/approvals/{ids['approval']}")
    reached: list[str] = []
    for _ in range(40):
        page.keyboard.press("Tab")
        focused = page.evaluate("document.activeElement.id")
        reached.append(focused)
        if focused == "edit":
            break
    for control in ("approve-reason", "approve", "reject-reason", "reject", "edit-text",
                    "edit"):
        assert control in reached, reached
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineWidth")
    assert float(outline.removesuffix("px")) >= 3


def test_screenshots_of_the_main_pages(server: Server, people: People,
                                       browser: playwright.Browser) -> None:
    visitor = Console(browser, server)
    visitor.open("/console/signin")
    visitor.screenshot("sign-in")
    visitor.close()
    asked(server, "/planning read SR:CURRENT and BPM1:X")
    write = asked(server, "set HCM1:SP to 1.2 A")
    plot = asked(server, "plot the last hour of SR:CURRENT")
    console = people("shift", "approver")
    console.open("/console/approvals")
    console.screenshot("approvals")
    page = console.open(f"/console/approvals/{write['approval']}")
    expect(page.locator("#writes")).to_contain_text("HCM1:SP")
    console.screenshot("channel-write-approval")
    page = console.open(f"/console/approvals/{plot['approval']}")
    page.locator("#approve").click()
    page.wait_for_url(f"**/console/runs/{plot['run']}?notice=approved")
    expect(page.locator("#run-state")).to_have_text("done")
    figure = page.locator("img.figure")
    expect(figure).to_have_count(1)
    assert figure.evaluate("image => image.complete && image.naturalWidth > 0")
    notebook = page.get_by_role("link", name="Download the notebook (.ipynb)")
    downloaded = page.request.get(notebook.get_attribute("href") or "")
    assert downloaded.status == 200 and b'"cells"' in downloaded.body()
    console.screenshot("run-with-figure")
    console.open("/console/runs")
    console.screenshot("runs")
    for name in ("sign-in", "approvals", "channel-write-approval", "code-approval",
                 "run-with-figure", "runs"):
        assert (Path(__file__).parents[1] / "docs" / "screenshots" / f"{name}.png").stat().st_size


@pytest.fixture
def short_lived(tmp_path: Path) -> Iterator[Server]:
    """A server whose requests expire six seconds after they are made."""
    with console_server(tmp_path / "home", OSPREY__APPROVAL__EXPIRY_SECONDS="6") as running:
        yield running


def test_an_expired_approval_cannot_be_approved(short_lived: Server,
                                                browser: playwright.Browser) -> None:
    console = Console(browser, short_lived)
    console.sign_in(short_lived.token("shift", "approver"))
    ids = asked(short_lived, "set HCM1:SP to 2.0 A")
    page = console.open(f"/console/approvals/{ids['approval']}")
    expect(page.locator("#approve")).to_be_enabled()
    expect(page.locator("#countdown")).to_contain_text("expired", timeout=15_000)
    expect(page.locator("#approve")).to_be_disabled()
    expect(page.locator("#approve-expired")).to_have_text(
        "This request has expired: it can no longer be approved or edited.")
    page.evaluate("document.getElementById('approve').disabled = false")
    page.locator("#approve").click()
    expect(page.locator("#problem")).to_contain_text("Not approved:")
    expect(page.locator("#problem")).to_contain_text("expired")
    expect(page.locator("#status")).to_have_text("expired")
    console.close()
