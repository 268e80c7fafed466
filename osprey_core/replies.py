"""How a typed reply decides an approval request: the one rule ``osprey chat`` and the
chat endpoint share.

Only an exact decision word decides: ``yes``/``y``/``approve`` or ``no``/``n``/``reject``,
in any case, with nothing else around it. "ok", "sure" or "yes please" decide nothing.
In a terminal the prompt names the request the word answers. In a chat front-end, where
a message is free text in a thread, the word must be followed by the request's exact id
(``approve apv-0123456789ab``); a rejection may carry its reason after the id (``reject
apv-0123456789ab: wrong value``), an approval nothing at all: "approve apv-... but use
0.3" decides nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

YES = frozenset({"y", "yes", "approve"})
NO = frozenset({"n", "no", "reject"})


@dataclass(frozen=True, slots=True)
class Reply:
    """A decision a reply states exactly."""

    approve: bool
    #: The request it names; ``None`` for a bare word (it answers the prompt that asked).
    approval_id: str | None = None
    reason: str | None = None


def read_reply(text: str) -> Reply | None:
    """The decision ``text`` states exactly, or ``None`` when it states none."""
    words = text.split(maxsplit=2)
    if not words or words[0].lower() not in YES | NO:
        return None
    approve = words[0].lower() in YES
    if len(words) == 1:
        return Reply(approve=approve)
    reason = words[2].strip(" \t\n:,;-") if len(words) == 3 else ""
    if approve:
        return None if reason else Reply(approve=True, approval_id=words[1])
    # "reject apv-...: why" reads naturally; the colon is not part of the id.
    return Reply(approve=False, approval_id=words[1].rstrip(":,;"), reason=reason or None)


def sounds_like_decision(text: str) -> bool:
    """Whether ``text`` begins with a decision word ("yes please", "approve it"): a reply
    meant to decide, even where it does not decide exactly."""
    words = text.split(maxsplit=1)
    return bool(words) and words[0].lower().strip(".,!:;") in YES | NO
