"""One turn of a chat conversation: which session it belongs to, and what osprey answers.

The chat endpoint's wire format lives in :mod:`osprey_core.service.chat`; this module
decides what a message means. The last user message is either a decision (``approve
<id>`` / ``reject <id> [reason]``, the rule of :mod:`osprey_core.replies`) or a request
run through :meth:`Osprey.arun`; answers are the text ``osprey run`` prints.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from osprey_core.errors import ApprovalError, shorten
from osprey_core.replies import read_reply, sounds_like_decision
from osprey_core.run_machine import PAUSED, RunState
from osprey_core.service.decisions import decide
from osprey_core.service.errors import ServiceError
from osprey_core.service.settings import Role

if TYPE_CHECKING:
    from osprey_core.api import Osprey
    from osprey_core.models import ApprovalRecord, RunRecord
    from osprey_core.service.auth import Identity
    from osprey_core.service.context import ServiceState

INTERFACE = "chat"
#: Headers a front-end may send to name the conversation (OpenWebUI forwards the second
#: with ENABLE_FORWARD_USER_INFO_HEADERS).
CONVERSATION_HEADERS = ("X-Conversation-Id", "X-OpenWebUI-Chat-Id")
ASK_BY_ID = "A reply decides only by naming the request: 'approve <id>' or 'reject <id> [reason]'"


def session_for(user: str, *, header: str | None, field: str | None,
                first_message: str) -> str:
    """The session a conversation maps to: stable for one user and one conversation key
    (a conversation header, else the request's ``user`` field, else the first user
    message), and never shared between users: ``chat-<user>-<16 hex>``."""
    if header:
        key = f"header:{header}"
    elif field:
        key = f"user:{field}"
    else:
        key = f"first:{first_message}"
    digest = hashlib.sha256(f"{user}\n{key}".encode()).hexdigest()[:16]
    label = re.sub(r"[^A-Za-z0-9_.@-]+", "_", user)[:40]
    return f"chat-{label}-{digest}"


@dataclass(frozen=True)
class Answer:
    """What the assistant says, and the run it is about (``None`` when nothing ran)."""

    text: str
    run_id: str | None = None


async def take_turn(state: ServiceState, who: Identity, text: str, session: str) -> Answer:
    """Decide or run what ``text`` asks in ``session``, as ``who``: one call that moves
    runs, so it holds the service's run lock throughout (see ``ServiceState.driving``)."""
    async with state.driving() as osprey:
        return await _turn(state, osprey, who, text, session)


async def _turn(state: ServiceState, osprey: Osprey, who: Identity, text: str,
                session: str) -> Answer:
    public_url = state.settings.url()
    waiting = await osprey.apending(session=session)
    reply = read_reply(text)
    if reply is not None and reply.approval_id is not None and (
            not waiting or reply.approval_id in {item.id for item in waiting}):
        if not known(osprey, reply.approval_id):
            return Answer(f"Nothing was decided: there is no approval "
                          f"'{shorten(reply.approval_id, 80)}'. {ASK_BY_ID} (the id is in the "
                          f"message that asked, and in the console: {public_url}/console).")
        run = await decide(state, who, reply.approval_id, approve=reply.approve,
                           interface=INTERFACE, reason=reply.reason)
        return Answer(outcome(osprey, run, public_url), run.id)
    if waiting:
        return Answer(nothing_decided(text, waiting[-1], public_url))
    if sounds_like_decision(text):
        return Answer(f"Nothing was decided: no approval waits in this conversation. "
                      f"{ASK_BY_ID} (the id is in the message that asked, and in the "
                      f"console: {public_url}/console).")
    if not who.has(Role.OPERATOR):
        held = ", ".join(sorted(who.roles)) or "none"
        raise ServiceError(403, "forbidden", f"asking osprey needs the operator role; "
                           f"{who.name} has {held}")
    run = await osprey.arun(text, session=session, user=who.name, interface=INTERFACE)
    return Answer(outcome(osprey, run, public_url), run.id)


def known(osprey: Osprey, approval_id: str) -> bool:
    try:
        osprey.approval(approval_id)
    except ApprovalError:
        return False
    return True


def outcome(osprey: Osprey, run: RunRecord, public_url: str) -> str:
    """A run as the chat shows it: the rendered answer, the request it waits for, or how
    it ended."""
    if run.state is RunState.DONE:
        return answer_text(osprey, run)
    if run.state in PAUSED and run.approval_id:
        return pause_text(osprey.approval(run.approval_id), public_url)
    return f"run {run.id} {run.state}: {run.error or 'no details'}"


def answer_text(osprey: Osprey, run: RunRecord) -> str:
    """What ``osprey run`` prints for a done run; tables and other layouts are fenced,
    so a Markdown front-end keeps their columns."""
    from osprey_core.display.console import as_text
    from osprey_core.display.runs import answer, lookup

    parts = []
    for part in answer(run, lookup(osprey.host)):
        shown = as_text(part)
        parts.append(shown if isinstance(part, str) else f"```\n{shown}\n```")
    return "\n\n".join(part for part in parts if part.strip()) or "(no answer)"


def pause_text(approval: ApprovalRecord, public_url: str) -> str:
    """The request a run waits for, its id, the exact replies that decide it and the
    console page where it can be reviewed."""
    from osprey_core.display.approvals import approval_lines

    shown = "\n".join(approval_lines(approval))
    return (f"Run {approval.run_id} is waiting for approval {approval.id}:\n\n"
            f"```\n{shown}\n```\n\n{how_to_decide(approval, public_url)}")


def how_to_decide(approval: ApprovalRecord, public_url: str) -> str:
    return (f"An approver decides by replying exactly `approve {approval.id}` or "
            f"`reject {approval.id} <reason>`; anything else decides nothing. "
            f"Review it in the console: {console_link(public_url, approval.id)}")


def nothing_decided(text: str, approval: ApprovalRecord, public_url: str) -> str:
    """Why a reply in a waiting conversation decided nothing, and what would."""
    reply = read_reply(text)
    if reply is not None and reply.approval_id is not None:
        why = f"this conversation waits for {approval.id}, not '{shorten(reply.approval_id, 80)}'"
    elif reply is not None:
        why = "the reply does not name the request it decides"
    else:
        why = "the reply is not an exact decision"
    return (f"Nothing was decided: {why}. Run {approval.run_id} is still waiting for "
            f"approval {approval.id} ({approval.action}). {how_to_decide(approval, public_url)}")


def console_link(public_url: str, approval_id: str) -> str:
    return f"{public_url.rstrip('/')}/console/approvals/{approval_id}"
