"""A fast keyword pre-filter: which capabilities the planner gets to see for a query."""

from __future__ import annotations

import re
from collections.abc import Iterable

from osprey_core.hookspecs.capabilities import Capability
from osprey_core.words import STOP_WORDS, fold

_WORD = re.compile(r"[a-z0-9_]+")


def tokenize(text: str) -> list[str]:
    """Lower-case words without common ones, endings folded (:func:`osprey_core.words.fold`);
    ``read_channels`` also yields ``read`` and ``channel``."""
    tokens = []
    for word in _WORD.findall(text.lower()):
        if word in STOP_WORDS:
            continue
        tokens.append(fold(word))
        parts = [part for part in word.split("_") if part]
        if len(parts) > 1:
            tokens.extend(fold(part) for part in parts if part not in STOP_WORDS)
    return tokens


def rank_capabilities(
    query: str, capabilities: Iterable[Capability], limit: int
) -> list[Capability]:
    """The ``limit`` best BM25 matches for ``query``, best first, then every terminal one.

    Terminal capabilities (respond, clarify) are always included and do not count toward
    ``limit``: a plan must be able to answer even when nothing else fits. Ties (including
    queries that share no word with any description) keep the input order, so the same
    registry and query always give the same shortlist.
    """
    candidates = list(capabilities)
    terminal = [capability for capability in candidates if capability.terminal]
    others = [capability for capability in candidates if not capability.terminal]
    if not others or limit <= 0:
        return terminal
    from rank_bm25 import BM25Okapi

    corpus = [tokenize(f"{item.name} {item.description}") for item in others]
    scores = BM25Okapi(corpus).get_scores(tokenize(query))
    order = sorted(range(len(others)), key=lambda index: (-float(scores[index]), index))
    return [others[index] for index in order[:limit]] + terminal
