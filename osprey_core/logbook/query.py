"""The logbook query language: words, phrases, operators and field filters.

Grammar, loosest first::

    query     := sequence ("OR" sequence)*
    sequence  := conjunct+                 # side by side: natural language
    conjunct  := unary ("AND" unary)*
    unary     := ("NOT" | "-") unary | "(" query ")" | "phrase" | field:value | word

Side by side, plain words are OR'ed (natural language, ranked by BM25), while field
filters and negations beside them restrict the whole sequence: ``beam loss author:jane
-test`` is ``(beam OR loss) AND author:jane AND NOT test``. Several values of one field
side by side are alternatives (``author:jane author:bob``). ``AND``, ``OR`` and ``NOT`` are
operators only in capitals; lower-case "and", "or", "not" are words.

Nothing is refused: a stray quote, a dangling operator, an unbalanced parenthesis, an
empty or unreadable field value is read the most likely way, and a notice says how.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain

from osprey_core.logbook.models import Filters, parse_time
from osprey_core.logbook.tokenize import STOPWORDS, spans, tokens

#: Field names and the Filters attribute each one fills.
FIELDS = {"author": "authors", "logbook": "logbooks", "tag": "tags", "source": "sources",
          "since": "since", "until": "until"}
OPERATORS = ("AND", "OR", "NOT")
_QUOTES = '"“”'
_FIELD = re.compile(r"([A-Za-z]+):(.*)", re.DOTALL)
_WORDLIKE_PREFIX = re.compile(r"([a-z]{2,}):(\S+)")


# -- the expression -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Word:
    """A word or identifier: matches an entry holding ``whole`` (identifiers only) or all
    of ``parts`` (a plain word is its single, stemmed part)."""

    text: str
    whole: str | None
    parts: tuple[str, ...]

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class Phrase:
    """Words adjacent and in order (stemmed; identifiers by their parts)."""

    text: str
    words: tuple[str, ...]

    def __str__(self) -> str:
        return f'"{self.text}"'


@dataclass(frozen=True, slots=True)
class Field:
    """``name:value`` as the one-field :class:`Filters` every search arm applies."""

    name: str
    value: str
    filters: Filters

    def __str__(self) -> str:
        value = f'"{self.value}"' if re.search(r"[\s()\"]", self.value) else self.value
        return f"{self.name}:{value}"


@dataclass(frozen=True, slots=True)
class And:
    children: tuple[Node, ...]

    def __str__(self) -> str:
        return "(" + " AND ".join(map(str, self.children)) + ")"


@dataclass(frozen=True, slots=True)
class Or:
    children: tuple[Node, ...]

    def __str__(self) -> str:
        return "(" + " OR ".join(map(str, self.children)) + ")"


@dataclass(frozen=True, slots=True)
class Not:
    child: Node

    def __str__(self) -> str:
        return f"NOT {self.child}"


Node = Word | Phrase | Field | And | Or | Not


def walk_positive(node: Node | None) -> Iterator[Word | Phrase]:
    """The words and phrases that rank (those under a NOT only exclude)."""
    if isinstance(node, Word | Phrase):
        yield node
    elif isinstance(node, And | Or):
        for child in node.children:
            yield from walk_positive(child)


def ranking_weights(node: Node | None) -> Counter[str]:
    """The terms that rank, each counted as often as the query holds it: a word's parts
    (and an identifier whole), a phrase's words."""
    return Counter(chain.from_iterable(
        ((found.whole, *found.parts) if isinstance(found, Word) and found.whole is not None
         else found.parts if isinstance(found, Word) else found.words)
        for found in walk_positive(node)))


def is_restriction(node: Node) -> bool:
    """Only fields (and NOT/AND/OR over fields): a pure filter every search arm applies."""
    if isinstance(node, Field):
        return True
    if isinstance(node, Not):
        return is_restriction(node.child)
    if isinstance(node, And | Or):
        return all(is_restriction(child) for child in node.children)
    return False


def binds_words(node: Node | None) -> bool:
    """Whether the query says which words an entry must or must not hold (a phrase, a NOT
    of words, an AND of word groups), as opposed to words side by side that only rank.
    An arm that cannot read words exactly (semantic) may then rank only what matches."""
    if node is None or isinstance(node, Word | Field):
        return False
    if isinstance(node, Phrase):
        return True
    if isinstance(node, Not):
        return not is_restriction(node.child)
    if isinstance(node, Or):
        return any(binds_words(child) for child in node.children)
    words = [child for child in node.children if not is_restriction(child)]
    return len(words) > 1 or any(binds_words(child) for child in words)


@dataclass(frozen=True, slots=True)
class ParsedQuery:
    """A query as read. ``expression`` is the whole query (None: no words, no filters);
    ``filters`` and ``restrictions`` are what it says about fields, for arms that cannot
    read words exactly (semantic search masks with them)."""

    text: str
    expression: Node | None
    #: The field filters that apply to the whole query, as one Filters.
    filters: Filters
    #: How a malformed query was read (empty for a well-formed one).
    notices: list[str] = field(default_factory=list)
    #: The query's ranking words and phrases without operators or fields (semantic arm).
    free_text: str = ""
    #: The words and phrases to highlight, as typed.
    highlight_terms: tuple[str, ...] = ()
    #: Every top-level conjunct made only of fields (``NOT author:bot`` included).
    restrictions: tuple[Node, ...] = ()
    #: Operators were typed (AND, OR, NOT, -, parentheses, a phrase): the query is a
    #: boolean expression, not natural language, and every arm keeps to what it matches.
    boolean: bool = False


# -- reading ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Lexeme:
    kind: str  # word, phrase, field, (, ), AND, OR, NOT
    text: str
    position: int  # 1-based, for notices
    name: str = ""


class _Lexer:
    def __init__(self, text: str, notices: list[str]) -> None:
        self.text = text
        self.notices = notices

    def _quoted(self, start: int) -> tuple[str, int]:
        """The text from the quote at ``start`` to its closing quote (or the end)."""
        end = next((i for i in range(start + 1, len(self.text)) if self.text[i] in _QUOTES),
                   None)
        if end is None:
            self.notices.append(f"the quote at position {start + 1} was not closed; read to "
                                "the end of the query")
            return self.text[start + 1:], len(self.text)
        return self.text[start + 1:end], end + 1

    def lexemes(self) -> list[_Lexeme]:
        text, out, i = self.text, [], 0
        while i < len(text):
            char = text[i]
            if char.isspace():
                i += 1
            elif char in "()":
                out.append(_Lexeme(char, char, i + 1))
                i += 1
            elif char in _QUOTES:
                phrase, after = self._quoted(i)
                out.append(_Lexeme("phrase", phrase, i + 1))
                i = after
            elif (char == "-" and i + 1 < len(text) and not text[i + 1].isspace()
                  and not text[i + 1].isdigit() and text[i + 1] != "-"
                  and (i == 0 or text[i - 1].isspace() or text[i - 1] == "(")):
                out.append(_Lexeme("NOT", "-", i + 1))
                i += 1
            else:
                j = i
                while j < len(text) and not text[j].isspace() and text[j] not in "()" + _QUOTES:
                    j += 1
                out.append(self._word(text[i:j], i, j))
                i = j
                if out[-1].kind == "field" and not out[-1].text and j < len(text) \
                        and text[j] in _QUOTES:
                    value, i = self._quoted(j)
                    out[-1] = _Lexeme("field", value, out[-1].position, out[-1].name)
        return out

    def _word(self, word: str, start: int, end: int) -> _Lexeme:
        if word in OPERATORS:
            return _Lexeme(word, word, start + 1)
        found = _FIELD.fullmatch(word)
        if found and found[1].lower() in FIELDS:
            return _Lexeme("field", found[2], start + 1, found[1].lower())
        unknown = _WORDLIKE_PREFIX.fullmatch(word)
        if unknown:
            close = difflib.get_close_matches(unknown[1], FIELDS, n=1)
            hint = f" (did you mean {close[0]}:?)" if close else ""
            self.notices.append(f"{unknown[1]}: at position {start + 1} is not a field{hint}; "
                                f"{word} was searched as words (fields: "
                                f"{', '.join(f + ':' for f in FIELDS)})")
        return _Lexeme("word", word, start + 1)


class _Parser:
    def __init__(self, lexemes: list[_Lexeme], notices: list[str], now: datetime | None):
        self.lexemes = lexemes
        self.at = 0
        self.notices = notices
        self.now = now

    def peek(self) -> _Lexeme | None:
        return self.lexemes[self.at] if self.at < len(self.lexemes) else None

    def _starts_operand(self) -> bool:
        lexeme = self.peek()
        return lexeme is not None and lexeme.kind in ("word", "phrase", "field", "(", "NOT")

    def query(self) -> Node | None:
        parts = [self.sequence()]
        while (lexeme := self.peek()) is not None and lexeme.kind != ")":
            self.at += 1  # an OR: nothing else ends a sequence
            if parts[-1] is None:
                self.notices.append(f"OR at position {lexeme.position} has nothing before "
                                    "it; ignored")
            elif not self._starts_operand():
                self.notices.append(f"OR at position {lexeme.position} has nothing after "
                                    "it; ignored")
            parts.append(self.sequence())
        return _combine(Or, [part for part in parts if part is not None])

    def sequence(self) -> Node | None:
        ranked: list[Node] = []
        restricting: list[Node] = []
        while (lexeme := self.peek()) is not None and lexeme.kind not in (")", "OR"):
            if lexeme.kind == "AND":
                self.at += 1
                self.notices.append(f"AND at position {lexeme.position} has nothing before "
                                    "it; ignored")
                continue
            node = self.conjunct()
            if node is None:
                continue
            (restricting if isinstance(node, Not) or is_restriction(node) else ranked
             ).append(node)
        if len(ranked) > 1:  # words that match nearly everything only slow a ranking down
            kept = [node for node in ranked if not _is_stop(node)]
            ranked = kept or ranked
        return _combine(And, [*([_combine(Or, ranked)] if ranked else []),
                              *_group_fields(restricting)])

    def conjunct(self) -> Node | None:
        parts = [self.unary()]
        while (lexeme := self.peek()) is not None and lexeme.kind == "AND":
            self.at += 1
            if not self._starts_operand():
                self.notices.append(f"AND at position {lexeme.position} has nothing after it; "
                                    "ignored")
                break
            parts.append(self.unary())
        return _combine(And, [part for part in parts if part is not None])

    def unary(self) -> Node | None:
        lexeme = self.peek()
        assert lexeme is not None
        self.at += 1
        if lexeme.kind == "NOT":
            if not self._starts_operand():
                self.notices.append(f"{lexeme.text} at position {lexeme.position} has nothing "
                                    "after it; ignored")
                return None
            child = self.unary()
            return None if child is None else Not(child)
        if lexeme.kind == "(":
            inner = self.query()
            if self.peek() is None:
                self.notices.append(f"the parenthesis at position {lexeme.position} was not "
                                    "closed; closed at the end of the query")
            else:
                self.at += 1
            return inner
        if lexeme.kind == "phrase":
            words = tuple(part for token in tokens(lexeme.text) for part in token.parts)
            if not words:
                self.notices.append(f"the quotes at position {lexeme.position} hold no words; "
                                    "ignored")
                return None
            return Phrase(" ".join(lexeme.text.split()), words)
        if lexeme.kind == "field":
            return self.field(lexeme)
        shown, found = spans(lexeme.text)
        return _combine(Or, [Word(shown[start:end], token.whole, token.parts)
                             for start, end, token in found])

    def field(self, lexeme: _Lexeme) -> Field | None:
        value = " ".join(lexeme.text.split())
        name = lexeme.name
        if not value:
            self.notices.append(f"{name}: at position {lexeme.position} has no value; ignored")
            return None
        if name in ("since", "until"):
            try:
                moment = parse_time(value, now=self.now, end=name == "until")
            except ValueError as exc:
                self.notices.append(f"{name}: at position {lexeme.position}: {exc}; ignored")
                return None
            return Field(name, value, Filters(**{name: moment}))
        return Field(name, value, Filters(**{FIELDS[name]: (value,)}))


def _is_stop(node: Node) -> bool:
    return isinstance(node, Word) and node.whole is None and node.text.lower() in STOPWORDS


def _combine(kind: type[And] | type[Or], nodes: list[Node]) -> Node | None:
    """One node for ``nodes`` (flattening nested nodes of the same kind)."""
    flat: list[Node] = []
    for node in nodes:
        flat.extend(node.children if isinstance(node, kind) else (node,))
    if not flat:
        return None
    return flat[0] if len(flat) == 1 else kind(tuple(flat))


def _group_fields(nodes: list[Node]) -> list[Node]:
    """Side-by-side values of one field are alternatives; times and negations all hold."""
    out: list[Node | list[Node]] = []
    where: dict[str, int] = {}
    for node in nodes:
        if isinstance(node, Field) and node.name not in ("since", "until"):
            if node.name in where:
                out[where[node.name]].append(node)  # type: ignore[union-attr]
                continue
            where[node.name] = len(out)
            out.append([node])
        else:
            out.append(node)
    return [_combine(Or, item) if isinstance(item, list) else item  # type: ignore[misc]
            for item in out]


def _filters_of(node: Node) -> Filters | None:
    """``node`` as one Filters, when it is a field or alternatives of one field."""
    if isinstance(node, Field):
        return node.filters
    if isinstance(node, Or) and all(isinstance(child, Field) for child in node.children):
        names = {child.name for child in node.children}  # type: ignore[union-attr]
        if len(names) == 1 and not names & {"since", "until"}:
            merged = Filters()
            for child in node.children:
                merged = merged.merged(child.filters)  # type: ignore[union-attr]
            return merged
    return None


def parse_query(text: str, *, now: datetime | None = None) -> ParsedQuery:
    """Read ``text`` (never raises). ``now`` anchors relative times such as ``since:7d``."""
    notices: list[str] = []
    lexemes = _Lexer(text, notices).lexemes()
    parser = _Parser(lexemes, notices, now)
    parts = []
    while parser.peek() is not None:
        parts.append(parser.query())
        if (stray := parser.peek()) is not None:  # only a ")" stops query() early
            notices.append(f"the parenthesis at position {stray.position} has no opening "
                           "one; ignored")
            parser.at += 1
    expression = _combine(Or, [part for part in parts if part is not None])
    if notices:
        notices.append(f"read as: {expression}" if expression is not None
                       else "nothing searchable was left")
    conjuncts = expression.children if isinstance(expression, And) else (
        () if expression is None else (expression,))
    filters = Filters()
    for conjunct in conjuncts:
        if (found := _filters_of(conjunct)) is not None:
            filters = filters.merged(found)
    positive = list(walk_positive(expression))
    return ParsedQuery(
        text=text, expression=expression, filters=filters, notices=notices,
        free_text=" ".join(node.text for node in positive),
        highlight_terms=tuple(dict.fromkeys(node.text for node in positive)),
        restrictions=tuple(node for node in conjuncts if is_restriction(node)),
        boolean=any(lexeme.kind in ("AND", "OR", "NOT", "(", "phrase") for lexeme in lexemes))
