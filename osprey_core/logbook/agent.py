"""What the agent does with the logbook: the ``logbook_search`` step, the ``logbook``
context provider, and the phrasings the offline planner understands.

The plugin (:mod:`osprey_core.plugins.logbook`) holds thin classes that call these, so
loading it for ``osprey --help`` imports none of the search machinery.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from osprey_core.logbook.models import Filters, parse_time

if TYPE_CHECKING:
    from osprey_core.hookspecs.data_providers import ContextBlock, ProviderRequest
    from osprey_core.logbook.service import Logbook


class SearchParameters(BaseModel):
    """A logbook search as a plan step: the query (which may hold the query syntax) and
    filters as separate fields a model can fill."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=2000, description="What to look for; may use "
                       "AND, OR, NOT, \"phrases\", author:, logbook:, tag:, since:, until:.")
    mode: Literal["keyword", "semantic", "hybrid"] | None = Field(
        None, description="Search mode (default: logbook.default_mode, normally hybrid).")
    author: str | None = None
    logbook: str | None = None
    tag: str | None = None
    since: str | None = Field(None, description="e.g. 2026-11-01 or 7d (seven days ago).")
    until: str | None = None
    k: int = Field(10, ge=1, le=50, description="How many entries to return.")

    @field_validator("since", "until")
    @classmethod
    def _time(cls, value: str | None) -> str | None:
        if value is not None:
            parse_time(value)  # ValueError with what was not understood
        return value

    def filters(self) -> Filters:
        return Filters(
            authors=(self.author,) if self.author else (),
            logbooks=(self.logbook,) if self.logbook else (),
            tags=(self.tag,) if self.tag else (),
            since=parse_time(self.since) if self.since else None,
            until=parse_time(self.until, end=True) if self.until else None)


def open_logbook(config: Any, plugins: Any) -> Logbook:
    from osprey_core.logbook.service import Logbook

    return Logbook.from_config(config, plugins)


def search(config: Any, plugins: Any, parameters: SearchParameters) -> dict[str, Any]:
    """Run the search and return JSON for the run's context (and the answer's text)."""
    with open_logbook(config, plugins) as logbook:
        result = logbook.search(parameters.query, mode=parameters.mode,
                                filters=parameters.filters(), k=parameters.k)
    return result.to_json()


def provider_responds(request: ProviderRequest) -> bool:
    config = request.config
    if config is None or not config.section("logbook").provider:
        return False
    from osprey_core.logbook.engines import may_hold_entries

    return bool(request.query.strip()) and may_hold_entries(config)


def provider_block(request: ProviderRequest, plugins: Any) -> ContextBlock | None:
    """The few most relevant entries, keyword-ranked (no model is loaded on this path:
    it runs before every plan)."""
    from osprey_core.hookspecs.data_providers import ContextBlock

    settings = request.config.section("logbook")
    with open_logbook(request.config, plugins) as logbook:
        result = logbook.search(request.query, mode="keyword", k=settings.provider_top_k)
    if not result.hits:
        return None
    items = [{"id": hit.entry.id, "time": hit.entry.utc.isoformat(),
              "author": hit.entry.author, "logbook": hit.entry.logbook,
              "title": hit.entry.title, "snippet": hit.snippet} for hit in result.hits]
    return ContextBlock("logbook_entries", f"Logbook entries related to: {request.query}",
                        items)


# -- offline phrasings --------------------------------------------------------------------

_PHRASINGS = (
    # "search the logbook for RF trips", "search elog for HCM1:SP"
    re.compile(r"\b(?:search|look\s+up|look|check|find)\s+(?:in\s+)?(?:the\s+)?"
               r"(?:e-?log(?:book)?|logbook|log\s*book)s?\s+(?:for|about|on)\s+(?P<q>.+)",
               re.IGNORECASE),
    # "find logbook entries about the vacuum leak"
    re.compile(r"\b(?:find|show|list|get)\s+(?:me\s+)?(?:the\s+)?(?:e-?log|logbook)\s+"
               r"entries\s+(?:about|on|for|mentioning)\s+(?P<q>.+)", re.IGNORECASE),
    # "has the RF cavity tripped before?", "has this happened before"
    re.compile(r"\bhas\s+(?P<q>.+?)\s+(?:happened|occurred|been seen|been reported)?\s*"
               r"(?:before|previously|in the past)\b", re.IGNORECASE),
    # "when did the kicker last fail?"
    re.compile(r"\bwhen\s+(?:did|was|were)\s+(?P<q>.+?)\s+last\b(?P<rest>.*)", re.IGNORECASE),
)
# "what did the last shift write about the orbit feedback?"
_LAST_SHIFT = re.compile(r"\bwhat\s+did\s+(?:the\s+)?(?:last|previous|night|day|owl)\s+"
                         r"shift\s+(?:write|say|log|report)\s+(?:about|on)\s+(?P<q>.+)",
                         re.IGNORECASE)


def match_search(query: str) -> dict[str, Any] | None:
    """Search parameters for phrasings such as "search the logbook for ...", "has ...
    happened before", "when did ... last ...", "what did the last shift write about ..."."""
    if found := _LAST_SHIFT.search(query):
        return {"query": _clean(found["q"]), "since": "12h"}
    for pattern in _PHRASINGS:
        if found := pattern.search(query):
            text = found["q"] + (" " + found["rest"] if "rest" in found.groupdict()
                                 and found["rest"] else "")
            if cleaned := _clean(text):
                return {"query": cleaned}
    return None


def _clean(text: str) -> str:
    return " ".join(text.split()).rstrip("?.!").strip()
