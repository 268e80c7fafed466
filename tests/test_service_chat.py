"""The OpenAI-compatible chat endpoint through the real ``openai`` client, against
``osprey serve`` on a free loopback port (a simulated machine with a writable corrector).

A read is answered with the text ``osprey run`` prints; a write pauses with the request,
its id, the exact replies and the console link; only an approver's explicit ``approve
<id>`` decides, never the submitter's own (separation of duties) nor a viewer's, and
every ambiguous reply decides nothing. Streaming and not; errors in OpenAI's format.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from support.service import Server, running_server

from osprey_core.models import AuditRecord
from osprey_core.replies import Reply, read_reply, sounds_like_decision

WRITE = "set HCM1:SP to 0.5 A"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("chat") / "home") as running:
        yield running


def chat(server: Server, name: str, *roles: str) -> openai.OpenAI:
    """The real OpenAI client, its API key one of the server's tokens."""
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.token(name, *roles),
                         max_retries=0, timeout=60)


def ask(client: openai.OpenAI, text: str, *, conversation: str | None = None,
        stream: bool = False) -> tuple[str, dict[str, str]]:
    """The assistant's answer to one user message, and the response headers."""
    headers = {"X-Conversation-Id": conversation} if conversation else {}
    messages: Any = [{"role": "user", "content": text}]
    if stream:
        with client.chat.completions.with_streaming_response.create(
                model="osprey", messages=messages, stream=True, extra_headers=headers) as raw:
            found = dict(raw.headers)
            pieces = [chunk.choices[0].delta.content or "" for chunk in raw.parse()
                      if chunk.choices]
        return "".join(pieces), found
    raw = client.chat.completions.with_raw_response.create(model="osprey", messages=messages,
                                                          extra_headers=headers)
    completion = raw.parse()
    assert completion.choices[0].finish_reason == "stop"
    return completion.choices[0].message.content or "", dict(raw.headers)


def approval_id(answer: str) -> str:
    found = re.search(r"`approve (apv-[0-9a-f]+)`", answer)
    assert found, answer
    return found.group(1)


def audit(server: Server, approval: str) -> list[AuditRecord]:
    """The audit rows about ``approval``, read from the server's store."""
    from osprey_core.store import RunStore

    store = RunStore(server.home / "osprey.db")
    try:
        return [row for row in store.audit() if row.approval_id == approval]
    finally:
        store.close()


def status(server: Server, approval: str) -> str:
    from osprey_core.store import RunStore

    store = RunStore(server.home / "osprey.db")
    try:
        return str(store.get_approval(approval).status)
    finally:
        store.close()


def test_one_model_is_listed_to_any_authenticated_caller(server: Server) -> None:
    models = chat(server, "vera", "viewer").models.list()
    assert [model.id for model in models.data] == ["osprey"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_read_request_is_answered_with_the_rendered_answer(server: Server,
                                                            stream: bool) -> None:
    answer, headers = ask(chat(server, "olga", "operator"), "read SR:CURRENT", stream=stream)
    assert "SR:CURRENT" in answer and " mA " in answer, answer
    assert answer.startswith("```\nchannel"), answer  # the table, fenced for Markdown
    assert "{" not in answer  # the rendering, not JSON
    assert headers["x-osprey-run"].startswith("run-")


def test_concurrent_conversations_are_all_answered(server: Server) -> None:
    from concurrent.futures import ThreadPoolExecutor

    olga = chat(server, "olga", "operator")
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda n: ask(olga, "read SR:CURRENT", conversation=f"p{n}",
                                              stream=n % 2 == 1)[0], range(6)))
    assert all("SR:CURRENT" in answer for answer in answers), answers


def test_a_stream_is_openai_chunks_ending_with_done(server: Server) -> None:
    token = server.token("olga", "operator")
    body = {"model": "osprey", "stream": True,
            "messages": [{"role": "user", "content": "read SR:CURRENT"}]}
    with server.client(token) as client, client.stream("POST", "/v1/chat/completions",
                                                       json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)
    assert '"object": "chat.completion.chunk"' in lines[0]
    assert '"finish_reason": "stop"' in lines[-2]


def test_a_write_pauses_and_only_an_approvers_explicit_reply_decides(server: Server) -> None:
    olga = chat(server, "olga", "operator")
    paused, headers = ask(olga, WRITE, conversation="shift-1")
    approval = approval_id(paused)
    assert "HCM1:SP: 0.0 A -> 0.5 A" in paused
    assert f"`reject {approval} <reason>`" in paused
    assert f"{server.url}/console/approvals/{approval}" in paused
    session = headers["x-osprey-session"]

    # In the waiting conversation nothing but an exact decision of that id decides.
    for reply in ("ok", "yes please", "approve", "Approve it", f"approve {approval}.",
                  "approve apv-000000000000", f"approve {approval} but use 0.3"):
        answer, again = ask(olga, reply, conversation="shift-1")
        assert answer.startswith("Nothing was decided"), (reply, answer)
        assert f"`approve {approval}`" in answer
        assert again["x-osprey-session"] == session
    assert "waits for " + approval + ", not 'apv-000000000000'" in ask(
        olga, "approve apv-000000000000", conversation="shift-1")[0]
    assert status(server, approval) == "pending"

    # The submitter is no approver: refused, with the reason, and audited.
    with pytest.raises(openai.PermissionDeniedError) as refused:
        ask(olga, f"approve {approval}", conversation="shift-1")
    assert "needs the approver role; olga has operator, viewer" in str(refused.value)

    # An approver elsewhere ("approve" alone names nothing, so it decides nothing) ...
    anna = chat(server, "anna", "approver")
    answer, _ = ask(anna, "approve", conversation="anna-desk")
    assert answer.startswith("Nothing was decided: no approval waits in this conversation")
    answer, _ = ask(anna, "yes please", conversation="anna-desk")
    assert answer.startswith("Nothing was decided: there is no approval 'please'")
    assert status(server, approval) == "pending"
    # ... then an explicit reply: approved, written, done.
    done, headers = ask(anna, f"approve {approval}", conversation="anna-desk", stream=True)
    assert "HCM1:SP" in done and "0.5" in done, done
    assert status(server, approval) == "approved"
    decided = [row for row in audit(server, approval) if row.action == "approval_approved"]
    assert [(row.actor, row.interface) for row in decided] == [("anna", "chat")]
    refusals = [row for row in audit(server, approval) if row.action == "approval_refused"]
    assert [(row.actor, row.interface) for row in refusals] == [("olga", "chat")]

    value, _ = ask(olga, "read HCM1:SP")
    assert re.search(r"HCM1:SP\s+0\.5\s+A", value), value

    # Decided once: a second approval of the same id is a conflict.
    with pytest.raises(openai.ConflictError, match="already approved by anna"):
        ask(anna, f"approve {approval}", conversation="anna-desk")


def test_a_viewers_approve_is_refused_with_the_reason_and_audited(server: Server) -> None:
    approval = approval_id(ask(chat(server, "olga", "operator"), WRITE)[0])
    with pytest.raises(openai.PermissionDeniedError) as refused:
        ask(chat(server, "vera", "viewer"), f"approve {approval}")
    assert refused.value.status_code == 403
    assert "deciding an approval needs the approver role; vera has viewer" in str(refused.value)
    assert status(server, approval) == "pending"
    rows = [row for row in audit(server, approval) if row.action == "approval_refused"]
    assert [(row.actor, row.interface, row.details["attempted"]) for row in rows] == [
        ("vera", "chat", "approve")]
    assert "approver role" in rows[0].details["reason"]


def test_who_asked_for_a_write_cannot_approve_it_but_another_approver_can_reject_it(
        server: Server) -> None:
    sam = chat(server, "sam", "operator", "approver")
    approval = approval_id(ask(sam, WRITE, conversation="sam-1")[0])
    with pytest.raises(openai.PermissionDeniedError, match="separation of duties: sam asked"):
        ask(sam, f"approve {approval}", conversation="sam-1")
    assert status(server, approval) == "pending"

    answer, _ = ask(chat(server, "anna", "approver"), f"reject {approval}: wrong corrector")
    assert "rejected by anna: wrong corrector" in answer
    assert status(server, approval) == "rejected"
    refused = [row for row in audit(server, approval) if row.action == "approval_refused"]
    assert refused[0].details["reason"].startswith("separation of duties")


def test_a_viewer_cannot_ask_and_an_unknown_key_is_refused(server: Server) -> None:
    with pytest.raises(openai.PermissionDeniedError, match="needs the operator role"):
        ask(chat(server, "vera", "viewer"), "read SR:CURRENT")
    bad = openai.OpenAI(base_url=f"{server.url}/v1", api_key="osp_000000000000_" + "x" * 30,
                        max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="invalid, expired or revoked"):
        ask(bad, "read SR:CURRENT")


@pytest.mark.parametrize(("body", "status_code", "code"), [
    ({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}, 404,
     "model_not_found"),
    ({"model": "osprey", "messages": [{"role": "system", "content": "be brief"}]}, 400,
     "no_user_message"),
    ({"model": "osprey", "messages": []}, 422, "invalid_request"),
    ({"model": "osprey"}, 422, "invalid_request"),
], ids=["unknown-model", "no-user-message", "no-messages", "missing-field"])
def test_errors_answer_in_openais_format(server: Server, body: dict[str, Any],
                                         status_code: int, code: str) -> None:
    with server.client(server.token("olga", "operator")) as client:
        response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == status_code
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert error["type"].endswith("_error")


def test_without_credentials_the_answer_is_401_in_openais_format(server: Server) -> None:
    response = httpx.get(f"{server.url}/v1/models")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"]["type"] == "authentication_error"


def test_a_conversation_maps_to_one_session_per_user(server: Server) -> None:
    olga, sam = chat(server, "olga", "operator"), chat(server, "sam", "operator", "approver")
    first = ask(olga, "read SR:CURRENT", conversation="c-42")[1]["x-osprey-session"]
    again = ask(olga, "read SR:LIFETIME", conversation="c-42")[1]["x-osprey-session"]
    other = ask(sam, "read SR:CURRENT", conversation="c-42")[1]["x-osprey-session"]
    assert first == again != other
    assert first.startswith("chat-olga-") and other.startswith("chat-sam-")
    # No key: the first user message names the conversation.
    history: Any = [{"role": "user", "content": "read SR:CURRENT"},
                    {"role": "assistant", "content": "..."},
                    {"role": "user", "content": "read SR:LIFETIME"}]
    raw = olga.chat.completions.with_raw_response.create(model="osprey", messages=history)
    start = olga.chat.completions.with_raw_response.create(model="osprey",
                                                           messages=history[:1])
    assert raw.headers["x-osprey-session"] == start.headers["x-osprey-session"] != first
    # The request's user field is a key too.
    keyed = olga.chat.completions.with_raw_response.create(model="osprey", messages=history,
                                                           user="thread-7")
    assert keyed.headers["x-osprey-session"] not in (first, raw.headers["x-osprey-session"])


def test_the_server_socket_sends_small_responses_at_once() -> None:
    """``osprey serve`` binds its own socket; asyncio must see it as TCP to set
    TCP_NODELAY on each connection, else every keep-alive answer waited ~40 ms."""
    import asyncio
    import socket

    from osprey_core.cli.serve import _bind

    async def nodelay() -> int:
        listener = _bind("127.0.0.1", 0)
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                sock = transport.get_extra_info("socket")
                accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await asyncio.get_running_loop().create_server(Probe, sock=listener)
        async with server:
            _, writer = await asyncio.open_connection(*listener.getsockname())
            flag = await asyncio.wait_for(accepted, 10)
            writer.close()
        return flag

    assert asyncio.run(nodelay()) == 1


@pytest.mark.parametrize(("text", "expected"), [
    ("approve", Reply(True)),
    ("YES", Reply(True)),
    ("n", Reply(False)),
    ("approve apv-1", Reply(True, "apv-1")),
    ("  Reject apv-1:  wrong value ", Reply(False, "apv-1", "wrong value")),
    ("approve apv-1 but use 0.3", None),
    ("ok", None),
    ("", None),
    ("approved", None),
])
def test_the_reply_rule(text: str, expected: Reply | None) -> None:
    assert read_reply(text) == expected


def test_what_sounds_like_a_decision() -> None:
    assert sounds_like_decision("Yes, please")
    assert sounds_like_decision("approve it")
    assert not sounds_like_decision("read SR:CURRENT")
    assert not sounds_like_decision("")
