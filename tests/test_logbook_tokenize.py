"""Logbook tokenizer: words stemmed, identifiers whole and by their parts."""

from __future__ import annotations

import pytest

from osprey_core.logbook.tokenize import (
    ANALYZER_VERSION,
    STOPWORDS,
    analyze_raw,
    spans,
    term_hash,
    tokens,
)


def test_words_are_lower_cased_and_stemmed() -> None:
    assert [token.terms for token in tokens("Beam LOSSES tripped")] == [
        ("beam",), ("loss",), ("trip",)]


def test_words_with_digits_are_not_stemmed() -> None:
    assert tokens("BPM1s 2nd")[0].terms == ("bpm1s",)
    assert tokens("BPM1s 2nd")[1].terms == ("2nd",)


@pytest.mark.parametrize(("text", "whole", "parts"), [
    ("HCM1:SP", "hcm1:sp", ("hcm1", "sp")),
    ("BPM1:X", "bpm1:x", ("bpm1", "x")),
    ("SR:CURRENT", "sr:current", ("sr", "current")),
    ("ALM-2231", "alm-2231", ("alm", "2231")),
    ("ioc-sr-01.als.lbl.gov", "ioc-sr-01.als.lbl.gov", ("ioc", "sr", "01", "al", "lbl", "gov")),
    ("/var/log/rf.log", "var/log/rf.log", ("var", "log", "rf", "log")),
    ("llrf_ctl.py", "llrf_ctl.py", ("llrf", "ctl", "py")),
    ("jane@lbl.gov", "jane@lbl.gov", ("jane", "lbl", "gov")),
])
def test_identifiers_whole_and_by_parts(text: str, whole: str, parts: tuple[str, ...]) -> None:
    [token] = tokens(text)
    assert token.whole == whole
    assert token.parts == parts
    assert token.terms == (whole, *parts)


def test_identifier_whole_is_never_stemmed_but_its_word_parts_are() -> None:
    [token] = tokens("beam_losses")
    assert token.whole == "beam_losses"
    assert token.parts == ("beam", "loss")


def test_punctuation_around_tokens_is_not_part_of_them() -> None:
    found = tokens("(HCM1:SP), end. 'quoted' -x- e.g.")
    assert [token.raw for token in found] == ["hcm1:sp", "end", "quoted", "x", "e.g"]


def test_apostrophes_split_like_fts5() -> None:
    assert [token.raw for token in tokens("operator's log")] == ["operator", "s", "log"]


def test_spans_point_into_the_text() -> None:
    shown, found = spans("Trip at HCM1:SP, again")
    assert [(shown[start:end], token.raw) for start, end, token in found] == [
        ("Trip", "trip"), ("at", "at"), ("HCM1:SP", "hcm1:sp"), ("again", "again")]


def test_term_hash_marks_whole_identifiers_in_the_lowest_bit() -> None:
    assert term_hash("hcm1:sp", whole=True) & 1 == 1
    assert term_hash("hcm1") & 1 == 0
    assert term_hash("beam") == term_hash("beam")
    assert term_hash("beam") != term_hash("bean")


def test_long_words_are_not_stemmed_and_stopwords_are_plain_words() -> None:
    code = "a" * 40 + "ing"
    assert analyze_raw(code).parts == (code,)
    assert "the" in STOPWORDS and tokens("the")[0].terms == ("the",)
    assert "snowball" in ANALYZER_VERSION
