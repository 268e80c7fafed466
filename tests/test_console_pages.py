"""The web console over real HTTP (no browser): sign-in and its cookies, CSRF on every
change, refusals shown with their reason, the sha256 binding, and what the pages show.

The browser scenarios (live updates, countdowns, screenshots) are in
``test_console_browser.py``; these check what a browser cannot be trusted to enforce.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.browser import console_server, submit
from support.service import Server, cli


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with console_server(tmp_path_factory.mktemp("console") / "home") as running:
        yield running


@contextmanager
def signed_in(server: Server, name: str, *roles: str) -> Iterator[httpx.Client]:
    """A client holding a console session (cookies, no Authorization header)."""
    with httpx.Client(base_url=server.url, timeout=60) as client:
        answer = sign_in(client, server.token(name, *roles))
        assert answer.status_code == 303, answer.text
        yield client


def sign_in(client: httpx.Client, token: str, **fields: str) -> httpx.Response:
    """Open the sign-in form (its CSRF cookie) and submit it with ``token``."""
    form = client.get("/console/signin")
    field = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert field and field.group(1) == client.cookies.get("osprey_csrf"), form.text
    return client.post("/console/signin",
                       data={"token": token, "csrf_token": field.group(1), **fields})


def csrf(client: httpx.Client) -> str:
    token = client.cookies.get("osprey_csrf")
    assert token
    return token


def write_request(server: Server, user: str = "ana") -> dict[str, Any]:
    """A run waiting for approval of a write to HCM1:SP, asked for by ``user``."""
    run = submit(server, server.token(user, "operator"), "set HCM1:SP to 1.5 A")
    assert run["state"] == "awaiting_step_approval", run
    approval: dict[str, Any] = run["approval"]
    return approval


def text_of(page: str) -> str:
    """What a person reads: the tags dropped, white space collapsed."""
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))
    return html.unescape(text).replace(" :", ":")


def status_of(server: Server, approval_id: str) -> str:
    with server.client(server.token("viewer-vic", "viewer")) as client:
        status: str = client.get(f"/api/v1/approvals/{approval_id}").json()["status"]
    return status


def test_the_root_and_every_page_lead_to_sign_in(server: Server) -> None:
    with httpx.Client(base_url=server.url) as client:
        root = client.get("/")
        assert root.status_code == 307
        assert root.headers["location"].endswith("/console/approvals")
        page = client.get("/console/runs?x=1")
        assert page.status_code == 303
        assert page.headers["location"] == "/console/signin?next=/console/runs%3Fx%3D1"
        fragment = client.get("/console/fragments/approvals")  # the script reloads on 401
        assert fragment.status_code == 401
        form = client.get("/console/signin")
        assert form.status_code == 200
        assert 'type="password"' in form.text and 'name="token"' in form.text


def test_sign_in_sets_an_httponly_strict_session_and_sign_out_needs_csrf(
        server: Server) -> None:
    with httpx.Client(base_url=server.url) as client:
        forged = client.post("/console/signin", data={"token": server.token("sam", "viewer")})
        assert forged.status_code == 403  # a form posted from elsewhere has no CSRF token
        assert "Not signed in: missing or wrong CSRF token" in forged.text
        assert "osprey_session" not in forged.headers.get("set-cookie", "")
        bad = sign_in(client, "osp_nope_nope")
        assert bad.status_code == 401
        assert "Not signed in: the token is invalid, expired or revoked." in bad.text
        assert "osp_nope_nope" not in bad.text
        good = sign_in(client, server.token("sam", "viewer"),
                       next="https://elsewhere.example/")
        assert good.status_code == 303
        assert good.headers["location"] == "/console/approvals"  # never off-site
        cookies = good.headers.get_list("set-cookie")
        session = next(c for c in cookies if c.startswith("osprey_session="))
        assert "HttpOnly" in session and "SameSite=strict" in session
        assert any(c.startswith("osprey_csrf=") and "HttpOnly" not in c for c in cookies)
        assert "Signed in as <strong id=\"identity\">sam</strong>" in client.get(
            "/console/approvals").text
        forged = client.post("/console/signout", data={"csrf_token": "wrong"})
        assert forged.status_code == 403
        assert "missing or wrong CSRF token" in forged.text
        out = client.post("/console/signout", data={"csrf_token": csrf(client)})
        assert out.status_code == 303
        assert client.get("/console/approvals").status_code == 303


def test_a_decision_without_the_csrf_token_is_refused_and_decides_nothing(
        server: Server) -> None:
    approval = write_request(server)
    with signed_in(server, "lea", "approver") as client:
        answer = client.post(f"/console/approvals/{approval['id']}/approve",
                             data={"sha256": approval["artifact_sha256"]})
        assert answer.status_code == 403
        assert "missing or wrong CSRF token" in answer.text
    assert status_of(server, str(approval["id"])) == "pending"


def test_a_stale_page_cannot_approve_a_changed_artifact(server: Server) -> None:
    approval = write_request(server)
    with signed_in(server, "lea", "approver") as client:
        answer = client.post(f"/console/approvals/{approval['id']}/approve",
                             data={"sha256": "0" * 64, "csrf_token": csrf(client)})
    assert answer.status_code == 409
    assert f"Not approved: approval {approval['id']} is for sha256 " \
           f"{approval['artifact_sha256']}, not {'0' * 64}" in answer.text
    assert status_of(server, str(approval["id"])) == "pending"


def test_without_the_approver_role_the_button_is_refused_with_the_reason(
        server: Server) -> None:
    approval = write_request(server)
    with signed_in(server, "otto", "operator") as client:
        page = client.get(f"/console/approvals/{approval['id']}")
        reason = ("deciding an approval needs the approver role; otto has operator, "
                  "viewer")
        assert f"You cannot approve this: {reason}." in page.text
        assert re.search(r'<button type="submit" class="approve" id="approve" '
                         r'data-expiring\s+disabled', page.text)
        forced = client.post(f"/console/approvals/{approval['id']}/approve",
                             data={"sha256": approval["artifact_sha256"],
                                   "csrf_token": csrf(client)})
    assert forced.status_code == 403
    assert f"Not approved: {reason}" in forced.text
    assert status_of(server, str(approval["id"])) == "pending"


def test_who_asked_for_a_write_cannot_approve_it(server: Server) -> None:
    server.token("max", "operator", "approver")  # tokens are cached by name
    approval = write_request(server, user="max")
    with signed_in(server, "max", "operator", "approver") as client:
        page = client.get(f"/console/approvals/{approval['id']}")
        assert ("You cannot approve this: separation of duties: max asked for this "
                "channel_write") in page.text
        forced = client.post(f"/console/approvals/{approval['id']}/approve",
                             data={"sha256": approval["artifact_sha256"],
                                   "csrf_token": csrf(client)})
    assert forced.status_code == 403
    assert "Not approved: separation of duties" in forced.text


def test_a_reject_needs_a_reason(server: Server) -> None:
    approval = write_request(server)
    with signed_in(server, "lea", "approver") as client:
        answer = client.post(f"/console/approvals/{approval['id']}/reject",
                             data={"sha256": approval["artifact_sha256"], "reason": "  ",
                                   "csrf_token": csrf(client)})
        assert answer.status_code == 422
        assert "Not rejected: give a reason for rejecting." in answer.text
        assert status_of(server, str(approval["id"])) == "pending"
        done = client.post(f"/console/approvals/{approval['id']}/reject",
                           data={"sha256": approval["artifact_sha256"],
                                 "reason": "beam in the machine", "csrf_token": csrf(client)})
        assert done.status_code == 303
        run = text_of(client.get(done.headers["location"]).text)
    assert "Rejected. The run is cancelled and will not be replanned." in run
    assert "rejected by lea via console: beam in the machine" in run


def test_a_plan_edit_is_validated_and_asks_again(server: Server) -> None:
    run = submit(server, server.token("ana", "operator"), "read SR:CURRENT", planning=True)
    approval = run["approval"]
    url = f"/console/approvals/{approval['id']}"
    with signed_in(server, "lea", "approver") as client:
        box = re.search(r'<textarea id="edit-text"[^>]*>(.*?)</textarea>',
                        client.get(url).text, flags=re.S)
        assert box
        plan = json.loads(html.unescape(box.group(1)))
        assert plan == approval["artifact"]

        def send(text: str) -> httpx.Response:
            return client.post(f"{url}/edit", data={
                "sha256": approval["artifact_sha256"], "artifact": text,
                "csrf_token": csrf(client)})

        broken = send('{"steps": [')
        assert broken.status_code == 422
        assert "Not edited: line 1, column 12: not valid JSON" in broken.text
        plan["steps"][0]["capability"] = "no_such_capability"
        unknown = send(json.dumps(plan))
        assert unknown.status_code == 422
        assert ("Not edited: the plan is invalid (1 problem): - step 1 (capability "
                "'no_such_capability'): no capability named 'no_such_capability' is "
                "registered") in text_of(unknown.text)
        assert status_of(server, approval["id"]) == "pending"
        plan["steps"][0] = {**plan["steps"][0], "capability": "channel_read",
                            "parameters": {"channels": ["SR:CURRENT", "BPM1:X"]}}
        edited = send(json.dumps(plan))
        assert edited.status_code == 303
        assert edited.headers["location"].endswith("?notice=edited")
        page = text_of(client.get(edited.headers["location"]).text)
    assert "Your edit was analysed; it needs approval again (below)." in page
    assert 'channels ["SR:CURRENT", "BPM1:X"]' in page
    assert status_of(server, approval["id"]) == "superseded"


def test_the_write_page_shows_current_requested_limits_and_verification(
        server: Server) -> None:
    approval = write_request(server)
    with signed_in(server, "vic", "viewer") as client:
        page = client.get(f"/console/approvals/{approval['id']}").text
    table = page[page.index('<table class="writes"'):page.index("</table>", page.index(
        '<table class="writes"'))]
    text = text_of(table)
    assert "HCM1:SP" in text
    assert "0.0 A → 1.5 A" in text
    assert "min -5.0 max 5.0 max step 3.0" in text
    assert "readback of HCM1:SP within ±0.01" in text
    assert approval["artifact_sha256"] in page


def test_code_that_writes_shows_its_writes_and_findings_on_their_lines(
        server: Server, tmp_path: Path) -> None:
    source = tmp_path / "nudge.py"
    source.write_text("before = read_channels(['HCM1:SP'])\n"
                      "write_channel('HCM1:SP', 1.25)\n", encoding="utf-8")
    ran = cli(server, "python", "run", str(source), "--mode", "write", "--user", "ana",
              "--json")
    assert ran.returncode == 3, ran.stderr
    approval_id = json.loads(ran.stdout)["approval_id"]
    with signed_in(server, "vic", "viewer") as client:
        page = client.get(f"/console/approvals/{approval_id}").text
    writes = text_of(page[page.index('<table class="writes"'):page.index("</table>")])
    assert "Channel writes the analyzer read off the code" in text_of(page)
    assert "HCM1:SP 0.0 A → 1.25 A min -5.0 max 5.0 max step 3.0 readback of HCM1:SP " \
           "within ±0.01" in writes
    code = page[page.index('<table class="code"'):]
    line = text_of(code[code.index('id="line-2"'):code.index('id="line-3"')
                        if 'id="line-3"' in code else code.index("</table>")])
    assert "write_channel('HCM1:SP', 1.25)" in line
    assert "line 2: critical control write: call to write_channel" in line
    assert "line 2: writes HCM1:SP = 1.25" in line


def test_the_channel_page_reads_values_and_says_which_failed(server: Server) -> None:
    with signed_in(server, "vic", "viewer") as client:
        page = client.get("/console/channels", params={"names": "SR:CURRENT, NO:SUCH"}).text
        assert 'value="SR:CURRENT NO:SUCH"' in page
        rows = re.findall(r"<tr><td class=\"mono\"><strong>([^<]+)</strong></td>\s*(.*?)</tr>",
                          page, flags=re.S)
        assert [name for name, _ in rows] == ["SR:CURRENT", "NO:SUCH"]
        assert re.search(r"\d+\.\d+ mA", rows[0][1])
        assert 'class="refusal"' in rows[1][1]
        many = " ".join(f"BPM{i}:X" for i in range(30))
        refused = client.get("/console/channels", params={"names": many})
    assert refused.status_code == 422
    assert "30 channels asked; read at most 20 at a time." in refused.text


def test_pages_load_nothing_from_elsewhere_and_are_not_in_the_api_schema(
        server: Server) -> None:
    with signed_in(server, "vic", "viewer") as client:
        page = client.get("/console/approvals")
        for asset in ("/console/static/console.css", "/console/static/console.js"):
            assert client.get(asset).status_code == 200
        schema = client.get("/openapi.json").json()
    for url in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        assert url.startswith((server.url, "/", "#")), url
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["cache-control"] == "no-store"
    assert not [path for path in schema["paths"] if path.startswith("/console")]
