"""Synthetic evaluation sets for logbook search, with judgments known by construction.

A seeded logbook from :mod:`osprey_core.logbook.sample` and, made with it, queries of the
types operators ask and the issue names, each with its judgments:

- **identifier**: a PV name, alarm code, ticket, serial number, host or file name that
  appears in few entries. Relevant: the entries whose text holds it as a whole token (or,
  for a PV, as the start of a longer PV name: ``SR03C:QF1`` in ``SR03C:QF1:SP``).
- **paraphrase**: an event said in words its entries do not use ("radio-frequency station
  2 went down" for "Cavity 2 tripped on arc detector"). Relevant: the entries the generator
  wrote about that event and facet (grade 2), and about the event kind at all (grade 1).
- **filtered**: words of an event kind with ``author:`` / ``logbook:`` / ``tag:`` /
  ``since:`` / ``until:`` restrictions, in the query text or as API filters. Relevant: the
  entries about that kind that meet them; every hit must meet them.
- **boolean**: ``AND`` / ``OR`` / ``NOT`` / quoted phrases over plain words. The exact set
  the operators admit is computed by brute force over the corpus; every hit must be in it.
  Its words are chosen so that no tokenizer choice changes that set: never part of an
  identifier (``orbit`` in ``orbit_ref.sdds``), a name, a logbook or a tag, and with no
  other word in the corpus that a stemmer could fold into it.
- **questions**: answerable ones (the answer is written in exactly one entry; its id and
  the answer string are recorded) and unanswerable ones (plausible, about keys the logbook
  never answers: a ticket opened but never closed, a magnet never replaced, a shift
  nobody wrote in, a version never deployed).

Run ``python benchmarks/logbook_eval_data.py`` for a summary of the sets.
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise

from osprey_core.logbook import sample
from osprey_core.logbook.models import Filters, LogEntry, parse_time
from osprey_core.logbook.sample.formats import utc_offset

EVAL_SEED = 11
EVAL_COUNT = 3000
SOURCE = "eval"

QUERY_TYPES = ("identifier", "paraphrase", "filtered", "boolean")

#: Common English words: a query may share them with any entry without giving its topic
#: away, and boolean queries avoid them (a keyword index may drop them).
STOPWORDS = frozenset((
    "a", "about", "above", "after", "again", "against", "all", "am", "an", "and", "any", "are",
    "as", "at", "be", "because", "been", "before", "being", "below", "between", "both", "but",
    "by", "can", "could", "did", "do", "does", "doing", "down", "during", "each", "few", "for",
    "from", "further", "had", "has", "have", "having", "he", "her", "here", "hers", "him", "his",
    "how", "i", "if", "in", "into", "is", "it", "its", "itself", "just", "me", "more", "most",
    "my", "near", "no", "nor", "not", "now", "of", "off", "on", "once", "only", "or", "other",
    "our", "out", "over", "own", "same", "she", "should", "so", "some", "such", "than", "that",
    "the", "their", "them", "then", "there", "these", "they", "this", "those", "through", "to",
    "too", "under", "until", "up", "very", "was", "we", "were", "what", "when", "where", "which",
    "while", "who", "whom", "why", "will", "with", "would", "you", "your", "around", "following",
    "got"))

_WORD = re.compile(r"[^\W_]+")
_IDENTIFIER = re.compile(r"[A-Za-z0-9]+(?:[:_./-][A-Za-z0-9]+)+")


def words(text: str) -> list[str]:
    """Lower-case runs of letters and digits: every separator splits (``SR03C:QF1`` is
    ``sr03c``, ``qf1``), as any tokenizer that finds identifiers by their parts does."""
    return _WORD.findall(text.casefold())


def identifiers(text: str) -> set[str]:
    """Identifier-like tokens (``SR03C:QF1:SP``, ``ALM-2231``, ``pm_2024.h5``), lower
    case; a path also gives its file name."""
    found = set()
    for match in _IDENTIFIER.findall(text):
        token = match.casefold()
        found.add(token)
        if "/" in token:
            found.add(token.rsplit("/", 1)[1])
    return found


@dataclass(frozen=True)
class Query:
    """One search and its judgments."""

    qid: str
    type: str
    text: str
    #: Filters passed as API parameters (filtered queries put some in ``text`` instead).
    filters: Filters = field(default_factory=Filters)
    #: Entry id -> grade (2: on the exact topic, 1: on the kind).
    relevant: dict[str, int] = field(default_factory=dict)
    #: What every hit must satisfy: all filters, from the text and the parameters.
    constraint: Filters | None = None
    #: Boolean queries: exactly the entries the operators admit.
    expected: frozenset[str] | None = None


@dataclass(frozen=True)
class Question:
    qid: str
    text: str
    #: The answer as the gold entry writes it, and that entry's id (None: unanswerable).
    answer: str | None = None
    entry_id: str | None = None


@dataclass
class EvalSet:
    #: What to ingest, in order (edits repeat an id later with a new text).
    stream: list[LogEntry]
    #: The logbook that leaves: each id's last version.
    entries: dict[str, LogEntry]
    facts: dict[str, sample.Facts]
    queries: list[Query]
    questions: list[Question]

    def of_type(self, kind: str) -> list[Query]:
        return [query for query in self.queries if query.type == kind]


# -- brute force over the corpus ---------------------------------------------------------

class Corpus:
    """The final logbook as token lists, for exact judgments."""

    def __init__(self, entries: dict[str, LogEntry]) -> None:
        self.entries = entries
        self.fields = {key: (words(entry.title), words(entry.text))
                       for key, entry in entries.items()}
        self.tokens = {key: set(title) | set(text) for key, (title, text) in self.fields.items()}
        self.identifiers = {key: identifiers(f"{entry.title}\n{entry.text}")
                            for key, entry in entries.items()}

    def with_word(self, word: str) -> set[str]:
        return {key for key, tokens in self.tokens.items() if word in tokens}

    def with_phrase(self, first: str, second: str) -> set[str]:
        """Entries with the two words adjacent, within the title or within the text (a
        phrase never spans fields)."""
        found = set()
        for key, columns in self.fields.items():
            if any(a == first and b == second
                   for column in columns for a, b in pairwise(column)):
                found.add(key)
        return found

    def with_identifier(self, identifier: str) -> set[str]:
        wanted = identifier.casefold()
        prefix = wanted + ":"
        return {key for key, found in self.identifiers.items()
                if wanted in found or any(token.startswith(prefix) for token in found)}


# -- identifier queries ------------------------------------------------------------------

_ID_CLASSES: tuple[tuple[str, Callable[[str], bool], int], ...] = (
    ("pv", lambda token: ":" in token and "/" not in token, 16),
    ("alarm", lambda token: re.fullmatch(r"alm-\d+", token) is not None, 8),
    ("ticket", lambda token: re.fullmatch(r"tkt-\d+", token) is not None, 6),
    ("serial", lambda token: re.fullmatch(r"sn-\d+", token) is not None, 5),
    ("host", lambda token: re.fullmatch(r"(ioc|srv)-[a-z0-9-]+", token) is not None, 6),
    ("file", lambda token: re.fullmatch(r"[a-z0-9_.]+\.(h5|sdds|yaml)", token) is not None,
     9),
)


def _display(corpus: Corpus, token: str) -> str:
    """An identifier as the entries spell it (they are searched case-blind)."""
    pattern = re.compile(re.escape(token), re.IGNORECASE)
    for entry in corpus.entries.values():
        match = pattern.search(f"{entry.title}\n{entry.text}")
        if match:
            return match.group(0)
    return token


def identifier_queries(corpus: Corpus, rng: random.Random) -> list[Query]:
    counts: Counter[str] = Counter()
    for found in corpus.identifiers.values():
        counts.update(found)
    queries = []
    for name, belongs, wanted in _ID_CLASSES:
        pool = sorted(token for token, count in counts.items()
                      if belongs(token) and count <= 12)
        for token in rng.sample(pool, min(wanted, len(pool))):
            relevant = corpus.with_identifier(token)
            if 1 <= len(relevant) <= 12:
                queries.append(Query(f"id-{name}-{len(queries)}", "identifier",
                                     _display(corpus, token), relevant=dict.fromkeys(
                                         relevant, 1)))
    return queries


# -- paraphrase queries ------------------------------------------------------------------

def paraphrase_queries(corpus: Corpus, facts: dict[str, sample.Facts],
                       rng: random.Random) -> list[Query]:
    queries = []
    for kind, (templates, facets) in sample.PARAPHRASES.items():
        of_kind = {key for key, fact in facts.items()
                   if any(topic == kind for topic, _ in fact.topics)}
        chosen = rng.sample(sorted(facets), min(3, len(facets)))
        for number, facet in enumerate(chosen):
            exact = {key for key, fact in facts.items() if (kind, facet) in fact.topics}
            if not 1 <= len(exact) <= 100:
                continue
            text = templates[number % len(templates)].format(f=facets[facet])
            relevant = dict.fromkeys(of_kind, 1) | dict.fromkeys(exact, 2)
            queries.append(Query(f"para-{kind}-{facet}", "paraphrase", text,
                                 relevant=relevant))
    return queries


# -- filtered queries --------------------------------------------------------------------

#: Words of each kind's own entries, for the word part of a filtered query.
KIND_WORDS = {"rf": "RF cavity trip", "vacuum": "vacuum pressure", "dump": "beam dump",
              "injection": "injection efficiency", "magnet": "power supply tripped",
              "orbit": "BPM orbit feedback", "id": "gap motion fault",
              "cryo": "cryo helium compressor", "interlock": "interlock shutter",
              "software": "deployed", "access": "tunnel access"}


def _quoted(value: str) -> str:
    return f'"{value}"' if " " in value else value


def filtered_queries(corpus: Corpus, facts: dict[str, sample.Facts],
                     rng: random.Random) -> list[Query]:
    entries = corpus.entries
    first = min(entry.utc for entry in entries.values())
    last = max(entry.utc for entry in entries.values())
    queries: list[Query] = []
    shapes = ("author", "logbook", "tag", "window", "author+window", "logbook+tag",
              "tag+author", "until")
    for kind in sorted(KIND_WORDS):
        of_kind = [key for key, fact in facts.items()
                   if any(topic == kind for topic, _ in fact.topics)]
        own = [key for key in of_kind if facts[key].kind == kind]  # where choices come from
        for number in range(5):
            shape = shapes[(len(queries) + number) % len(shapes)]
            parts: dict[str, str] = {}
            window: tuple[datetime | None, datetime | None] = (None, None)
            for part in shape.split("+"):
                if part == "author":
                    parts["author"] = rng.choice(sorted({entries[key].author or ""
                                                         for key in own}))
                elif part == "logbook":
                    parts["logbook"] = rng.choice(sorted({entries[key].logbook or ""
                                                          for key in own}))
                elif part == "tag":
                    parts["tag"] = rng.choice(sorted({tag for key in own
                                                      for tag in entries[key].tags}))
                else:
                    days = (last - first).days
                    start = first + timedelta(days=rng.randrange(max(days - 90, 1)))
                    since = start.strftime("%Y-%m-%d")
                    until = (start + timedelta(days=30 + rng.randrange(90))).strftime("%Y-%m-%d")
                    if part == "until":
                        since = None
                    window = (since, until)
            since_text, until_text = window
            constraint = Filters(
                authors=(parts["author"],) if "author" in parts else (),
                logbooks=(parts["logbook"],) if "logbook" in parts else (),
                tags=(parts["tag"],) if "tag" in parts else (),
                since=parse_time(since_text) if since_text else None,
                until=parse_time(until_text, end=True) if until_text else None)
            relevant = {key for key in of_kind if constraint.allows(entries[key])}
            if not 1 <= len(relevant) <= 100:
                continue
            in_text = (len(queries) % 2) == 0  # alternate: query syntax, API parameters
            text = KIND_WORDS[kind]
            if in_text:
                for name in ("author", "logbook", "tag"):
                    if name in parts:
                        text += f" {name}:{_quoted(parts[name])}"
                if since_text:
                    text += f" since:{since_text}"
                if until_text:
                    text += f" until:{until_text}"
            queries.append(Query(f"filter-{kind}-{shape}-{'text' if in_text else 'api'}",
                                 "filtered", text, Filters() if in_text else constraint,
                                 relevant=dict.fromkeys(relevant, 1), constraint=constraint))
    return queries


# -- boolean queries ---------------------------------------------------------------------

def _safe_words(corpus: Corpus) -> set[str]:
    """Words whose matching set no tokenizer choice changes (see the module doc)."""
    vocabulary: Counter[str] = Counter()
    for tokens in corpus.tokens.values():
        vocabulary.update(tokens)
    unsafe: set[str] = set()
    for found in corpus.identifiers.values():
        for token in found:
            unsafe.update(words(token))
    for entry in corpus.entries.values():
        unsafe.update(words(f"{entry.author} {entry.logbook} {' '.join(entry.tags)}"))
    for name, _group in sample.AUTHORS:
        unsafe.update(words(name))
    safe = set()
    for word in vocabulary:
        if (len(word) < 3 or not word.isalpha() or not word.isascii() or word in STOPWORDS
                or word in unsafe):
            continue
        stem = word[:max(4, len(word) - 3)]
        if any(other != word and (other.startswith(stem) or word.startswith(other[:max(
                4, len(other) - 3)])) for other in vocabulary if other[:3] == word[:3]):
            continue
        safe.add(word)
    return safe


def boolean_queries(corpus: Corpus, rng: random.Random, wanted: int = 60) -> list[Query]:
    safe = sorted(_safe_words(corpus))
    sets = {word: corpus.with_word(word) for word in safe}
    terms = [word for word in safe if 2 <= len(sets[word]) <= 600]
    rare = [word for word in terms if len(sets[word]) <= 60]
    keys = sorted(corpus.entries)
    phrases: list[tuple[str, str]] = []
    for key in rng.sample(keys, min(400, len(keys))):
        for column in corpus.fields[key]:
            pairs = [(a, b) for a, b in pairwise(column)
                     if a in sets and b in sets]
            if pairs:
                phrases.append(rng.choice(pairs))
    phrases = sorted(set(phrases))

    def phrase() -> tuple[str, set[str]]:
        first, second = rng.choice(phrases)
        return f'"{first} {second}"', corpus.with_phrase(first, second)

    def term(pool: list[str]) -> tuple[str, set[str]]:
        word = rng.choice(pool)
        return word, sets[word]

    def _and() -> tuple[str, set[str]]:
        (a, sa), (b, sb) = term(terms), term(terms)
        return f"{a} AND {b}", sa & sb

    def _or() -> tuple[str, set[str]]:
        (a, sa), (b, sb) = term(rare), term(rare)
        return f"{a} OR {b}", sa | sb

    def _not() -> tuple[str, set[str]]:
        (a, sa), (b, sb) = term(rare), term(terms)
        return f"{a} AND NOT {b}", sa - sb

    def _phrase() -> tuple[str, set[str]]:
        return phrase()

    def _phrase_and() -> tuple[str, set[str]]:
        (p, sp), (c, sc) = phrase(), term(terms)
        return f"{p} AND {c}", sp & sc

    def _or_not() -> tuple[str, set[str]]:
        (a, sa), (b, sb), (c, sc) = term(rare), term(rare), term(terms)
        return f"({a} OR {b}) AND NOT {c}", (sa | sb) - sc

    def _phrase_not() -> tuple[str, set[str]]:
        (p, sp), (c, sc) = phrase(), term(terms)
        return f"{p} AND NOT {c}", sp - sc

    def _and3() -> tuple[str, set[str]]:
        (a, sa), (b, sb), (c, sc) = term(terms), term(terms), term(terms)
        return f"{a} AND {b} AND {c}", sa & sb & sc

    forms = {"and": _and, "or": _or, "not": _not, "phrase": _phrase, "phrase-and": _phrase_and,
             "or-not": _or_not, "phrase-not": _phrase_not, "and3": _and3}
    queries: list[Query] = []
    seen: set[str] = set()
    per_form = max(1, wanted // len(forms))
    for name, make in forms.items():
        made = 0
        for _ in range(2000):
            if made == per_form:
                break
            text, expected = make()
            if text in seen or not 1 <= len(expected) <= 100:
                continue
            seen.add(text)
            made += 1
            queries.append(Query(f"bool-{name}-{made}", "boolean", text,
                                 relevant=dict.fromkeys(expected, 1),
                                 expected=frozenset(expected)))
    return queries


# -- questions ---------------------------------------------------------------------------

QUESTION_TEMPLATES = {
    "serial": "What is the serial number of the new power supply installed for {key}?",
    "root_cause": "What was the root cause found for ticket {key}?",
    "version": "Which version of the {key}?",
    "lifetime": "What was the beam lifetime at the end of the {shift} shift on {date}?",
}
#: Plausible questions about what this logbook never records.
OFF_LOG = ("Which vendor supplied the replacement klystron for KLY3?",
           "What did the safety committee decide about the new undulator budget?",
           "How many people attended the annual user meeting?",
           "What was the stored current during the fire drill in sector 14?",
           "Who approved the purchase of the new cryogenic plant?",
           "What is the warranty period of the BPM electronics?")


def _ask(kind: str, key: str) -> str:
    if kind == "lifetime":
        date, shift = key.split()
        return QUESTION_TEMPLATES[kind].format(shift=shift, date=date)
    return QUESTION_TEMPLATES[kind].format(key=key)


def questions(corpus: Corpus, facts: dict[str, sample.Facts], rng: random.Random,
              per_kind: int = 10) -> list[Question]:
    stated: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for key, fact in facts.items():
        for kind, subject, answer in fact.statements:
            stated[(kind, subject)].append((key, answer))
    made: list[Question] = []
    for kind in QUESTION_TEMPLATES:
        unique = sorted((subject, found[0]) for (k, subject), found in stated.items()
                        if k == kind and len(found) == 1)
        for subject, (key, answer) in rng.sample(unique, min(per_kind, len(unique))):
            made.append(Question(f"ans-{kind}-{len(made)}", _ask(kind, subject), answer, key))
    made += [Question(f"unans-{kind}-{number}", _ask(kind, subject))
             for kind, subjects in _unanswered(corpus, stated, rng, per_kind - 2).items()
             for number, subject in enumerate(subjects)]
    made += [Question(f"unans-offlog-{number}", text) for number, text in enumerate(OFF_LOG)]
    return made


def _unanswered(corpus: Corpus, stated: dict[tuple[str, str], list[tuple[str, str]]],
                rng: random.Random, count: int) -> dict[str, list[str]]:
    """Keys of each question kind that the logbook mentions (or could) but never answers."""
    mentioned: set[str] = set()
    for found in corpus.identifiers.values():
        mentioned |= found
    answered = {(kind, subject.casefold()) for kind, subject in stated}
    magnets = sorted({token.upper() for token in mentioned
                      if re.fullmatch(r"sr\d\dc:(hcm|vcm|qf|qd|sf|sd|bm|sept)\d", token)
                      and ("serial", token.upper().casefold()) not in answered})
    tickets = sorted({token.upper() for token in mentioned if re.fullmatch(r"tkt-\d+", token)
                      and ("root_cause", token) not in answered})
    versions = [f"{name} replaced v{9 - rng.randrange(3)}.{rng.randrange(12)}."
                f"{rng.randrange(20)} on {rng.choice(hosts)}"
                for name, hosts, _stem in sample.APPS.values()]
    return {"serial": rng.sample(magnets, min(count, len(magnets))),
            "root_cause": rng.sample(tickets, min(count, len(tickets))),
            "version": versions[:count],
            "lifetime": _silent_shifts(corpus, rng, count)}


def _silent_shifts(corpus: Corpus, rng: random.Random, count: int) -> list[str]:
    """Shifts (local date and name) in which nobody wrote anything at all."""
    busy = set()
    for entry in corpus.entries.values():
        local = entry.utc + timedelta(minutes=utc_offset(entry.utc.timestamp(), "pacific"))
        busy.add((local.strftime("%Y-%m-%d"), ("owl", "day", "swing")[local.hour // 8]))
    first = min(entry.utc for entry in corpus.entries.values())
    silent = []
    for _ in range(10000):
        day = (first + timedelta(days=rng.randrange(700))).strftime("%Y-%m-%d")
        shift = rng.choice(("owl", "day", "swing"))
        if (day, shift) not in busy and f"{day} {shift}" not in silent:
            silent.append(f"{day} {shift}")
        if len(silent) == count:
            break
    return silent


# -- the set -----------------------------------------------------------------------------

def build(count: int = EVAL_COUNT, seed: int = EVAL_SEED) -> EvalSet:
    """The corpus and every query set, all from ``seed``."""
    generated = list(sample.generate(count, seed=seed))
    stream = [sample.to_entry(item.record, SOURCE) for item in generated]
    final = sample.latest(generated)
    entries = {f"{SOURCE}/{number}": sample.to_entry(item.record, SOURCE)
               for number, item in final.items()}
    facts = {f"{SOURCE}/{number}": item.facts for number, item in final.items()}
    corpus = Corpus(entries)
    rng = random.Random(seed)
    queries = (identifier_queries(corpus, rng) + paraphrase_queries(corpus, facts, rng)
               + filtered_queries(corpus, facts, rng) + boolean_queries(corpus, rng))
    return EvalSet(stream, entries, facts, queries, questions(corpus, facts, rng))


def summary(evaluation: EvalSet) -> Iterable[str]:
    yield (f"{len(evaluation.entries)} entries ({len(evaluation.stream)} lines with edits), "
           f"{len(evaluation.queries)} queries, {len(evaluation.questions)} questions")
    for kind in QUERY_TYPES:
        chosen = evaluation.of_type(kind)
        sizes = [sum(1 for grade in query.relevant.values() if grade == max(
            query.relevant.values())) for query in chosen]
        yield (f"  {kind:<11} {len(chosen):>3} queries, top-grade relevant per query "
               f"{min(sizes, default=0)}-{max(sizes, default=0)}")
        for query in chosen[:3]:
            yield f"      {query.text}  [{query.filters.to_json() if query.filters else ''}]"
    answerable = [q for q in evaluation.questions if q.entry_id]
    yield (f"  questions   {len(answerable)} answerable, "
           f"{len(evaluation.questions) - len(answerable)} unanswerable")
    for question in evaluation.questions[:: max(1, len(evaluation.questions) // 6)]:
        yield f"      {question.text}  -> {question.answer!r}"


if __name__ == "__main__":
    started = datetime.now(UTC)
    built = build()
    for line in summary(built):
        print(line)
    print(f"built in {(datetime.now(UTC) - started).total_seconds():.1f} s")
