"""The synthetic logbook and the evaluation sets made with it: deterministic, valid, and
honest (what the judgments claim is what the generated text says)."""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest

from osprey_core.logbook import sample
from osprey_core.logbook.models import LogEntry
from osprey_core.logbook.sample.formats import utc_offset

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _benchmark_module(name: str) -> ModuleType:
    """benchmarks/ is no package: load a module from its file."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _eval_data() -> ModuleType:
    return _benchmark_module("logbook_eval_data")


@pytest.fixture(scope="module")
def evaluation():
    return _eval_data().build(count=1500, seed=5)


# -- the generator -----------------------------------------------------------------------

def test_same_seed_same_stream_other_seed_another():
    first = list(sample.records(800, seed=3))
    assert first == list(sample.records(800, seed=3))
    assert first != list(sample.records(800, seed=4))


def test_entries_are_valid_in_time_order_with_the_writers_offsets():
    records = list(sample.records(3000, seed=8))
    entries = [sample.to_entry(record) for record in records]
    assert all(isinstance(entry, LogEntry) for entry in entries)
    assert {entry.utc_offset_minutes for entry in entries} == {-480, -420, 0, 60, 120}
    times = [sample.to_entry(record).utc for record in _first_versions(records)]
    assert times == sorted(times)
    assert times[0] >= sample.START
    assert timedelta(days=690) < times[-1] - times[0] < timedelta(days=770)


def _first_versions(records: list[dict]) -> list[dict]:
    seen: set[int] = set()
    firsts = []
    for record in records:
        if record["id"] not in seen:
            seen.add(record["id"])
            firsts.append(record)
    return firsts


def test_facility_clock_follows_daylight_saving_time():
    """The facility writes in US Pacific time: -07:00 in July, -08:00 in January."""
    by_month: dict[int, set[str]] = {}
    for record in sample.records(4000, seed=2):
        if record["author"] not in ("deploy-bot", "Lukas Brandt"):
            by_month.setdefault(int(record["timestamp"][5:7]), set()).add(
                record["timestamp"][-6:])
    assert by_month[7] == {"-07:00"}
    assert by_month[1] == {"-08:00"}


def test_day_shifts_write_more_than_owl_shifts():
    hours = Counter(int(record["timestamp"][11:13]) // 8
                    for record in sample.records(6000, seed=9)
                    if record["timestamp"].endswith(("-07:00", "-08:00")))
    assert hours[1] > 2 * hours[0]


def test_edits_repeat_an_earlier_id_later_with_more_text():
    items = list(sample.generate(3000, seed=6))
    position = {}
    edits = 0
    for index, item in enumerate(items):
        number = item.record["id"]
        if item.edit:
            edits += 1
            original = items[position[number]].record
            assert index > position[number]
            assert item.record["text"].startswith(original["text"])
            assert "\n\nUpdate " in item.record["text"]
            assert {**item.record, "text": ""} == {**original, "text": ""}
        else:
            assert number not in position
            position[number] = index
    assert 20 <= edits <= 110
    assert len(sample.latest(items)) == 3000


def test_there_are_long_multi_paragraph_entries():
    texts = [record["text"] for record in sample.records(3000, seed=1)]
    long = [text for text in texts if len(text.split()) > 250]
    assert len(long) >= 5
    assert all("\n\n" in text for text in long)


def test_identifiers_operators_type_are_in_the_text():
    text = "\n".join(record["text"] for record in sample.records(2000, seed=1))
    for pattern in (r"SR\d\dC:BPM\d:[XY]", r"SR\d\dC:[HV]CM\d:SP", r"SR:CURRENT",
                    r"RF:CAV\d:FWD_PWR", r"ALM-\d{4}", r"ioc-sr-rf-0\d", r"TKT-\d+",
                    r"SN-\d{6}", r"pm_\d{8}_\d{6}\.h5", r"\d\.\de-\d Torr", r"\d+\.\d mA"):
        assert re.search(pattern, text), pattern


def test_one_alarm_code_per_condition():
    assert len(set(sample.ALARMS.values())) == len(sample.ALARMS)


# -- the shipped sample ------------------------------------------------------------------

def test_shipped_sample_is_what_the_generator_makes():
    """So it can be made again: python -m osprey_core.logbook.sample."""
    shipped = sample.sample_path().read_text(encoding="utf-8")
    assert shipped == sample.sample_text()
    assert 300 <= len(shipped.splitlines()) <= 600


def test_shipped_sample_reads_through_the_jsonl_adapter():
    from osprey_core.logbook.adapters.generic import JsonLinesAdapter

    adapter = JsonLinesAdapter.create(sample.SAMPLE_SOURCE)
    read = list(adapter.iter_entries(str(sample.sample_path())))
    made = [sample.to_entry(record)
            for record in sample.records(sample.SAMPLE_COUNT, seed=sample.SAMPLE_SEED)]
    assert read == made


# -- the facts agree with the text -------------------------------------------------------

def _evidence(kind: str, facet: str) -> str:
    """A pattern the text must hold for the generator to claim it reports (kind, facet)."""
    match kind:
        case "rf":
            return rf"(?i:cavity) {facet}\b|CAV{facet}\b"
        case "vacuum" | "access":
            return rf"sector {facet}\b"
        case "orbit":
            return rf"SR{int(facet):02d}C:BPM"
        case "dump":  # a dump entry names the cause; an RF trip says it lost the beam
            return (re.escape(sample.DUMP_CAUSES[facet][0])
                    + ("|Cavity \\d tripped .* Beam was lost" if facet == "rf" else ""))
        case "injection":
            return re.escape(sample.INJ_PARTS[facet][0])
        case "magnet":
            return sample.MAGNET_FAMILIES[facet][0] + " supply"
        case "id":
            return sample.ID_TYPES[facet][0] + r"\d+ gap motion fault"
        case "cryo":
            return {"compressor": "compressor C\\d tripped", "helium": "Helium level",
                    "coldbox": "Cold box turbine"}[facet]
        case "interlock":
            return sample.INTERLOCKS[facet] + " interlock on beamline"
        case "software":
            return "Deployed " + sample.APPS[facet][0]
    raise AssertionError(kind)


def test_every_topic_claimed_is_written_in_the_entry(evaluation):
    for key, facts in evaluation.facts.items():
        entry = evaluation.entries[key]
        for kind, facet in facts.topics:
            assert re.search(_evidence(kind, facet), entry.text), (key, kind, facet)
        for kind, subject, answer in facts.statements:
            assert _stated(kind, subject, answer) in f"{entry.title}: {entry.text}", key


def _stated(kind: str, subject: str, answer: str) -> str:
    """How the generator words a statement (what a question about ``subject`` asks)."""
    if kind == "serial":
        return f"replaced the {subject} power supply; the new unit has serial number {answer}."
    if kind == "root_cause":
        return f"Ticket {subject} closed: root cause was {answer}."
    if kind == "version":
        name, rest = subject.split(" replaced ")
        old, host = rest.split(" on ")
        return f"Deployed {name} {answer} on {host}, replacing {old}."
    date, shift = subject.split()
    return f"{shift.capitalize()} shift summary {date}: Delivered"


# -- the evaluation sets hold by construction --------------------------------------------

def test_every_query_type_is_there(evaluation):
    data = _eval_data()
    for kind in data.QUERY_TYPES:
        assert len(evaluation.of_type(kind)) >= 20, kind
    answerable = [q for q in evaluation.questions if q.entry_id]
    assert len(answerable) >= 30
    assert len(evaluation.questions) - len(answerable) >= 25


def test_identifier_judgments_are_the_entries_that_hold_it(evaluation):
    for query in evaluation.of_type("identifier"):
        pattern = re.compile(r"(?<![\w:.-])" + re.escape(query.text) + r"(?=$|[\s,;)(]|:|\.(?!\w))",
                             re.IGNORECASE)
        holding = {key for key, entry in evaluation.entries.items()
                   if pattern.search(f"{entry.title}\n{entry.text}")}
        assert set(query.relevant) == holding, query.text
        assert 1 <= len(holding) <= 12


def test_paraphrases_share_no_content_word_with_their_kinds_entries(evaluation):
    data = _eval_data()
    for query in evaluation.of_type("paraphrase"):
        kind = query.qid.split("-")[1]
        content = {word for word in data.words(query.text)
                   if word not in data.STOPWORDS and not word.isdigit()}
        exact = [key for key, grade in query.relevant.items() if grade == 2]
        assert exact
        for key in exact:
            assert (kind, query.qid.split("-", 2)[2]) in evaluation.facts[key].topics
            if evaluation.facts[key].kind == kind:
                entry = evaluation.entries[key]
                shared = content & set(data.words(f"{entry.title} {entry.text}"))
                assert not shared, (query.text, key, shared)


def test_filtered_judgments_meet_their_filters(evaluation):
    for query in evaluation.of_type("filtered"):
        assert query.constraint
        assert query.relevant
        assert all(query.constraint.allows(evaluation.entries[key]) for key in query.relevant)
        in_text = bool(re.search(r"\b(author|logbook|tag|since|until):", query.text))
        assert in_text != bool(query.filters), query.text
        if in_text:
            for author in query.constraint.authors:
                assert f"author:{author}" in query.text.replace('"', "")
            for logbook in query.constraint.logbooks:
                assert f"logbook:{logbook}" in query.text
            for tag in query.constraint.tags:
                assert f"tag:{tag}" in query.text


def _evaluate(text: str, entry: LogEntry) -> bool:
    """An independent reading of a boolean query, by regular expressions on the raw text:
    terms and phrases as whole words (any non-alphanumeric character separates), AND, OR,
    AND NOT and parentheses."""
    fields = (entry.title, entry.text)

    def has(words: list[str]) -> bool:
        pattern = r"(?<![^\W_])" + r"[\W_]+".join(map(re.escape, words)) + r"(?![^\W_])"
        return any(re.search(pattern, field, re.IGNORECASE) for field in fields)

    tokens = re.findall(r'\(|\)|"[^"]*"|[^\s()"]+', text)
    position = 0

    def atom() -> bool:
        nonlocal position
        token = tokens[position]
        position += 1
        if token == "(":
            value = disjunction()
            position += 1  # ")"
            return value
        return has(token.strip('"').split())

    def conjunction() -> bool:
        nonlocal position
        value = atom()
        while position < len(tokens) and tokens[position] == "AND":
            position += 1
            negate = tokens[position] == "NOT"
            position += negate
            operand = atom()
            value = value and (not operand if negate else operand)
        return value

    def disjunction() -> bool:
        nonlocal position
        value = conjunction()
        while position < len(tokens) and tokens[position] == "OR":
            position += 1
            value = conjunction() or value
        return value

    return disjunction()


def test_boolean_expected_sets_agree_with_an_independent_reading(evaluation):
    for query in evaluation.of_type("boolean"):
        assert query.expected is not None and 1 <= len(query.expected) <= 100
        found = {key for key, entry in evaluation.entries.items() if _evaluate(query.text, entry)}
        assert found == set(query.expected), query.text


def test_boolean_words_cannot_be_read_two_ways(evaluation):
    """Boolean queries use only words whose matching set no tokenizer choice changes."""
    data = _eval_data()
    safe = data._safe_words(data.Corpus(evaluation.entries))
    for query in evaluation.of_type("boolean"):
        assert set(re.findall(r"[a-z]+", query.text)) <= safe, query.text


def test_safe_words_leave_out_identifier_parts_names_and_stem_neighbours():
    data = _eval_data()
    moment = datetime(2025, 3, 1, tzinfo=UTC)
    texts = ("Orbit drift, reloaded orbit_ref.sdds", "cavity tripped; trip counter reset",
             "vacuum pressure steady", "Handed over to Maria Keller")
    corpus = data.Corpus({f"t/{n}": LogEntry(source="t", native_id=str(n), timestamp=moment,
                                             text=text, logbook="Vacuum", author="Ana Duarte")
                          for n, text in enumerate(texts)})
    assert data._safe_words(corpus) == {"drift", "reloaded", "cavity", "counter", "reset",
                                        "pressure", "steady", "handed"}


def test_answerable_questions_are_answered_in_exactly_one_entry(evaluation):
    for question in evaluation.questions:
        if question.entry_id is None:
            continue
        assert question.answer in evaluation.entries[question.entry_id].text
        stating = [key for key, facts in evaluation.facts.items()
                   if any(_asks_about(question.text, subject)
                          for _kind, subject, _answer in facts.statements)]
        assert stating == [question.entry_id], question.text


def _asks_about(question: str, subject: str) -> bool:
    if re.fullmatch(r"\d{4}-\d\d-\d\d \w+", subject):
        date, shift = subject.split()
        return f"{shift} shift on {date}" in question
    return subject in question


def test_unanswerable_questions_have_no_answer_in_the_logbook(evaluation):
    texts = [f"{entry.title}\n{entry.text}" for entry in evaluation.entries.values()]
    for question in evaluation.questions:
        if question.entry_id is not None:
            continue
        assert question.answer is None
        text = question.text
        if match := re.search(r"for (SR\d\dC:\w+)\?", text):
            assert not any(match[1] in body and "serial number" in body for body in texts)
        elif match := re.search(r"ticket (TKT-\d+)\?", text):
            assert not any(f"{match[1]} closed" in body for body in texts)
        elif match := re.search(r"the (.+) replaced (v[\d.]+) on (\S+)\?", text):
            assert not any(f"replacing {match[2]}" in body and match[3] in body
                           for body in texts)
        elif match := re.search(r"the (\w+) shift on (\S+)\?", text):
            assert not _written_in_shift(evaluation.entries.values(), match[2], match[1])
        else:
            assert question.qid.startswith("unans-offlog")


def _written_in_shift(entries, date: str, shift: str) -> bool:
    first = {"owl": 0, "day": 8, "swing": 16}[shift]
    for entry in entries:
        offset = utc_offset(entry.utc.timestamp(), "pacific")
        local = entry.utc + timedelta(minutes=offset)
        if local.strftime("%Y-%m-%d") == date and first <= local.hour < first + 8:
            return True
    return False


# -- the metrics of nox -s eval ----------------------------------------------------------

def test_ndcg_and_recall_by_hand():
    metrics = _benchmark_module("eval_logbook")
    assert metrics.ndcg(["a", "b"], {"a": 1, "b": 1}) == pytest.approx(1.0)
    assert metrics.ndcg(["x", "b", "c"], {"b": 1}) == pytest.approx(1 / math.log2(3))
    # graded, linear gains: ideal is a (2) then b (1)
    assert metrics.ndcg(["x", "a"], {"a": 2, "b": 1}) == pytest.approx(
        (2 / math.log2(3)) / (2 + 1 / math.log2(3)))
    assert metrics.ndcg(["b"] + ["x"] * 20, {"b": 1}, k=10) == pytest.approx(1.0)
    assert metrics.ndcg(["x"] * 10 + ["b"], {"b": 1}, k=10) == 0.0
    assert metrics.ndcg(["x"], {}) == 0.0
    assert metrics.recall(["a", "b", "x"], {"a", "c"}) == 0.5
    assert metrics.recall(["x"] * 100 + ["a"], {"a"}, k=100) == 0.0


def test_a_violation_is_a_hit_outside_the_filters_or_the_operators(evaluation):
    metrics = _benchmark_module("eval_logbook")
    filtered = evaluation.of_type("filtered")[0]
    boolean = evaluation.of_type("boolean")[0]
    for key, entry in list(evaluation.entries.items())[:300]:
        assert metrics.violation(filtered, entry) == (not filtered.constraint.allows(entry))
        assert metrics.violation(boolean, entry) == (key not in boolean.expected)
