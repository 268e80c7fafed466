"""The parts of logbook answers and fusion that need no index: citation checks, abstention,
reciprocal rank fusion, the offline phrasings and the step's parameters."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from osprey_core.logbook.agent import SearchParameters, match_search
from osprey_core.logbook.answers import ABSTAIN, CITATION, checked_answer
from osprey_core.logbook.service import convex_fusion, reciprocal_rank_fusion

USED = ["als/1", "als/2", "ops/77"]


def test_citations_of_given_entries_pass() -> None:
    answer = checked_answer("q", "The RF cavity tripped twice [#als/1]. Vacuum recovered "
                            "by noon [#ops/77].", USED, [])
    assert answer.citations == ["als/1", "ops/77"]
    assert not answer.abstained and answer.notices == []


def test_a_statement_citing_an_entry_not_given_is_removed() -> None:
    answer = checked_answer("q", "The RF cavity tripped [#als/1]. The kicker was replaced "
                            "[#als/999].", USED, [])
    assert "kicker" not in answer.text
    assert answer.citations == ["als/1"]
    assert "1 statement(s) citing entries the answer was not given were removed" in (
        answer.notices)


def test_an_answer_with_nothing_verifiable_left_is_refused() -> None:
    for reply in ("The kicker was replaced [#als/999].", "The kicker was replaced.",
                  "It happened on 12 May [# als/1]."):
        answer = checked_answer("q", reply, USED, [])
        assert answer.citations == [] and not answer.abstained
        assert "could not be checked" in answer.text


@pytest.mark.parametrize("reply", [ABSTAIN, "The logbook does not say. [#als/1]",
                                   "I am sorry, the entries do not contain that.", "  "])
def test_an_abstention_cites_nothing(reply: str) -> None:
    answer = checked_answer("q", reply, USED, [])
    assert answer.abstained and answer.citations == [] and answer.text == ABSTAIN


@given(st.lists(st.sampled_from(["als/1", "als/2", "ops/77", "als/9", "x/../y", "als/1]",
                                 "als/2 "]), max_size=6), st.text(max_size=40))
def test_no_citation_outside_the_given_entries_ever_survives(cited: list[str],
                                                             filler: str) -> None:
    reply = " ".join(f"Statement {n} {filler}. [#{entry_id}]" for n, entry_id in
                     enumerate(cited)) or filler
    answer = checked_answer("q", reply, USED, [])
    assert set(answer.citations) <= set(USED)
    assert set(CITATION.findall(answer.text)) <= set(USED)


def test_reciprocal_rank_fusion_rewards_agreement_and_is_deterministic() -> None:
    fused = reciprocal_rank_fusion({"keyword": [1, 2, 3], "semantic": [3, 4, 1]}, 60)
    assert [rowid for rowid, _ in fused] == [1, 3, 2, 4]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 63)


def test_convex_fusion_weighs_bm25_over_its_ceiling_and_cosines_as_they_are() -> None:
    fused = convex_fusion([(1, 6.0), (2, 3.0), (3, 1.0)], 10.0,
                          [(3, 0.9), (4, 0.5), (1, -0.2)], 0.3)
    scores = dict(fused)
    assert scores[1] == pytest.approx(0.7 * 0.6)  # a negative cosine adds nothing
    assert scores[2] == pytest.approx(0.7 * 0.3)
    assert scores[3] == pytest.approx(0.7 * 0.1 + 0.3 * 0.9)
    assert scores[4] == pytest.approx(0.3 * 0.5)
    assert [rowid for rowid, _ in fused] == [1, 3, 2, 4]


def test_a_weak_keyword_match_does_not_outrank_a_close_meaning() -> None:
    # one word of five matched (a fifth of the ceiling) against a cosine of 0.7
    fused = convex_fusion([(1, 2.0)], 10.0, [(2, 0.7), (1, 0.1)], 0.3)
    assert [rowid for rowid, _ in fused] == [2, 1]


def test_convex_fusion_without_ranking_words_keeps_the_keyword_order() -> None:
    fused = convex_fusion([(5, 0.0), (6, 0.0), (7, 0.0)], 0.0, [], 0.3)
    assert [rowid for rowid, _ in fused] == [5, 6, 7]
    assert convex_fusion([], 0.0, [], 0.3) == []


@pytest.mark.parametrize(("query", "expected"), [
    ("search the logbook for RF trips on cavity 2", {"query": "RF trips on cavity 2"}),
    ("Search elog for HCM1:SP?", {"query": "HCM1:SP"}),
    ("find logbook entries about the vacuum leak in sector 3",
     {"query": "the vacuum leak in sector 3"}),
    ("has the injection kicker misfired before?", {"query": "the injection kicker misfired"}),
    ("when did the orbit feedback last trip", {"query": "the orbit feedback trip"}),
    ("what did the last shift write about the BPM glitches?",
     {"query": "the BPM glitches", "since": "12h"}),
])
def test_offline_phrasings(query: str, expected: dict[str, str]) -> None:
    assert match_search(query) == expected


def test_ordinary_requests_are_not_logbook_searches() -> None:
    for query in ("read SR:CURRENT", "set HCM1:SP to 2 A", "plot the beam current"):
        assert match_search(query) is None


def test_step_parameters_check_their_times() -> None:
    parameters = SearchParameters(query="RF trip", author="jane", since="7d", until="2026-11-30")
    filters = parameters.filters()
    assert filters.authors == ("jane",) and filters.since is not None
    assert filters.until is not None and filters.until.hour == 23
    with pytest.raises(ValueError, match="not a time"):
        SearchParameters(query="RF trip", since="last tuesday")
