"""Logbook query language: operators and their precedence, phrases, fields, and how a
malformed query is read (never refused, always explained)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from osprey_core.logbook.models import Filters
from osprey_core.logbook.query import And, Field, Not, Or, Phrase, Word, parse_query

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def read(text: str) -> str:
    return str(parse_query(text, now=NOW).expression)


@pytest.mark.parametrize(("text", "reading"), [
    ("beam loss", "(beam OR loss)"),
    ("beam AND loss", "(beam AND loss)"),
    ("a AND b OR c", "((a AND b) OR c)"),
    ("a OR b AND c", "(a OR (b AND c))"),
    ("x y AND z", "(x OR (y AND z))"),
    ("NOT a AND b", "(NOT a AND b)"),
    ("NOT (a OR b) c", "(c AND NOT (a OR b))"),
    ("(a OR b) AND c", "((a OR b) AND c)"),
    ("vacuum -valve", "(vacuum AND NOT valve)"),
    ("vacuum NOT valve", "(vacuum AND NOT valve)"),
    ("a OR NOT b", "(a OR NOT b)"),
    ("NOT NOT a", "NOT NOT a"),
    ("beam and loss", "(beam OR loss)"),  # lower-case operators are words (here stopwords)
    ("-5 V", "(5 OR V)"),  # a minus before a digit is a sign, not NOT
])
def test_operators_and_precedence(text: str, reading: str) -> None:
    assert read(text) == reading
    assert parse_query(text, now=NOW).notices == []


def test_adjacent_words_are_natural_language_without_stopwords() -> None:
    query = parse_query("what is the lifetime of the beam", now=NOW)
    assert str(query.expression) == "(what OR lifetime OR beam)"
    assert read("the") == "the"  # a query of stopwords alone keeps them
    assert read("the AND beam") == "(the AND beam)"  # so does an explicit operator


def test_words_are_stemmed_and_identifiers_kept_whole() -> None:
    expression = parse_query("Losses HCM1:SP,", now=NOW).expression
    assert expression == Or((Word("Losses", None, ("loss",)),
                             Word("HCM1:SP", "hcm1:sp", ("hcm1", "sp"))))


def test_phrases_keep_word_order() -> None:
    query = parse_query('"Beam  losses at" HCM1:SP', now=NOW)
    phrase = query.expression.children[0]  # type: ignore[union-attr]
    assert phrase == Phrase("Beam losses at", ("beam", "loss", "at"))
    assert parse_query('"HCM1:SP tripped"', now=NOW).expression == Phrase(
        "HCM1:SP tripped", ("hcm1", "sp", "trip"))


def test_fields_quoted_or_not_and_times() -> None:
    query = parse_query('author:"Jane Doe" logbook:RF tag:vacuum source:als '
                        'since:2026-11-01 until:2026-11-20 beam', now=NOW)
    assert query.notices == []
    assert query.filters == Filters(
        authors=("Jane Doe",), logbooks=("RF",), tags=("vacuum",), sources=("als",),
        since=datetime(2026, 11, 1, tzinfo=UTC),
        until=datetime(2026, 11, 21, tzinfo=UTC) - timedelta(microseconds=1))
    assert query.free_text == "beam"
    assert len(query.restrictions) == 6


def test_relative_times_and_field_names_in_any_case() -> None:
    query = parse_query("Since:7d UNTIL:12h", now=NOW)
    assert query.filters.since == NOW - timedelta(days=7)
    assert query.filters.until == NOW - timedelta(hours=12)


def test_values_of_one_field_side_by_side_are_alternatives() -> None:
    query = parse_query("author:jane author:bob beam", now=NOW)
    assert str(query.expression) == "(beam AND (author:jane OR author:bob))"
    assert query.filters.authors == ("jane", "bob")


def test_fields_and_negations_restrict_the_words_beside_them() -> None:
    query = parse_query("rf trip -author:bot tag:rf", now=NOW)
    assert str(query.expression) == "((rf OR trip) AND NOT author:bot AND tag:rf)"
    # Filters cannot say NOT: the restriction carries it for arms that cannot read words
    assert query.filters == Filters(tags=("rf",))
    assert query.restrictions == (Not(Field("author", "bot", Filters(authors=("bot",)))),
                                  Field("tag", "rf", Filters(tags=("rf",))))


def test_fields_under_or_are_not_whole_query_filters() -> None:
    query = parse_query("beam OR author:jane", now=NOW)
    assert query.filters == Filters()
    assert query.restrictions == ()
    assert isinstance(query.expression, Or)


def test_field_only_query() -> None:
    query = parse_query("author:jane since:2026-11-01", now=NOW)
    assert isinstance(query.expression, And)
    assert query.free_text == "" and query.highlight_terms == ()


@pytest.mark.parametrize(("text", "notice", "reading"), [
    ('beam "loss at', "the quote at position 6 was not closed; read to the end of the query",
     '(beam OR "loss at")'),
    ("beam AND", "AND at position 6 has nothing after it; ignored", "beam"),
    ("AND beam", "AND at position 1 has nothing before it; ignored", "beam"),
    ("beam OR", "OR at position 6 has nothing after it; ignored", "beam"),
    ("OR beam", "OR at position 1 has nothing before it; ignored", "beam"),
    ("beam NOT", "NOT at position 6 has nothing after it; ignored", "beam"),
    ("beam -", None, "beam"),
    ("(beam OR loss", "the parenthesis at position 1 was not closed; closed at the end of the "
     "query", "(beam OR loss)"),
    ("beam) loss", "the parenthesis at position 5 has no opening one; ignored",
     "(beam OR loss)"),
    ("author: beam", "author: at position 1 has no value; ignored", "beam"),
    ('author:"" beam', "author: at position 1 has no value; ignored", "beam"),
    ("since:yesterday beam", "since: at position 1: 'yesterday' is not a time", "beam"),
    ('"" beam', "the quotes at position 1 hold no words; ignored", "beam"),
    ("foo:bar", "foo: at position 1 is not a field; foo:bar was searched as words",
     "foo:bar"),
    ("athor:jane", "athor: at position 1 is not a field (did you mean author:?)",
     "athor:jane"),
])
def test_malformed_queries_answer_with_a_notice(text: str, notice: str | None,
                                                reading: str) -> None:
    query = parse_query(text, now=NOW)
    assert str(query.expression) == reading
    if notice is None:
        assert query.notices == []
    else:
        assert any(line.startswith(notice) for line in query.notices), query.notices
        assert query.notices[-1] == f"read as: {reading}"


def test_unknown_prefixes_in_capitals_are_identifiers_without_notice() -> None:
    query = parse_query("SR:CURRENT HCM1:SP", now=NOW)
    assert query.notices == []
    assert [node.whole for node in query.expression.children] == [  # type: ignore[union-attr]
        "sr:current", "hcm1:sp"]


def test_nothing_searchable() -> None:
    assert parse_query("", now=NOW).expression is None
    query = parse_query("NOT", now=NOW)
    assert query.expression is None
    assert query.notices[-1] == "nothing searchable was left"
    assert parse_query("--- !!", now=NOW).expression is None


def test_free_text_and_highlights_leave_out_operators_fields_and_negations() -> None:
    query = parse_query('"beam loss" AND HCM1:SP author:jane -vacuum', now=NOW)
    assert query.free_text == "beam loss HCM1:SP"
    assert query.highlight_terms == ("beam loss", "HCM1:SP")


_PIECES = st.sampled_from(["beam", "loss", "HCM1:SP", "AND", "OR", "NOT", "(", ")", '"', "-",
                           "author:", "jane", "since:", "7d", "tag:rf", "foo:bar", "the", " "])


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=14).map(" ".join), st.text(max_size=30))
def test_any_text_is_read_and_its_reading_reads_back_the_same(pieces: str, noise: str) -> None:
    for text in (pieces, noise):
        query = parse_query(text, now=NOW)
        if query.expression is not None:
            again = parse_query(str(query.expression), now=NOW)
            if text is pieces:  # pieces never hold a comma or a quote inside a value
                assert again.expression == query.expression
                assert all("is not a field" in line or line.startswith("read as")
                           for line in again.notices)
