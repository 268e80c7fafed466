"""Retrieval quality of logbook search (``nox -s eval``): keyword, semantic and hybrid.

Two collections, each ingested into a fresh logbook in a temporary directory (removed
afterwards) through the same facade the CLI and the agent use
(``osprey_core.logbook.service.Logbook``):

(a) **SciFact** (BEIR), from ``../shared/benchdata/scifact`` (evaluation only: it is never
    copied into the package). The 5,183 abstracts become entries whose text is
    ``title + " " + text`` (as the BEIR runs index them); the 300 test queries are asked
    as written, and scored by nDCG@10 and Recall@100 against ``qrels/test.tsv``, beside
    the published baselines: BM25 0.665 (BEIR) / 0.679 (Pyserini), all-MiniLM-L6-v2 0.645
    (MTEB). Targets: keyword >= 0.68, semantic >= 0.645, hybrid >= 0.72.
(b) **The synthetic light-source logbook** of ``logbook_eval_data.py`` (seeded; judgments
    known by construction). Per query type nDCG@10 and Recall@100 (over the entries on
    the exact topic); for filtered and boolean queries also *violations*, hits that break
    a filter or an operator (must be 0), and for boolean queries whether the reported
    total equals the exact number of matching entries. Then answers (offline extractive
    unless an LLM is configured): citation precision (citations among the entries the
    answer was given: must be 1), abstention rate on unanswerable questions (should be
    about 1), answer rate and support accuracy (the gold entry cited) on answerable ones.

A mode the installation cannot run (semantic and hybrid without the ``search`` extra) is
reported as unavailable, never scored as the keyword fallback it returns.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import logbook_eval_data as synthetic  # beside this file

if TYPE_CHECKING:
    from osprey_core.logbook.models import LogEntry
    from osprey_core.logbook.service import Logbook

MODES = ("keyword", "semantic", "hybrid")
SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "benchdata" / "scifact"
#: Published SciFact nDCG@10 baselines and this issue's targets.
BASELINES = (("BM25 (BEIR paper)", 0.665), ("BM25 (Pyserini flat)", 0.679),
             ("all-MiniLM-L6-v2 (MTEB)", 0.645))
TARGETS = {"keyword": 0.68, "semantic": 0.645, "hybrid": 0.72}
DEPTH = 100


# -- metrics ------------------------------------------------------------------------------

def ndcg(ranking: Sequence[str], relevant: dict[str, int], k: int = 10) -> float:
    """nDCG@k with linear gains (trec_eval's, which BEIR uses): the ideal ranking puts
    every judged document first, best grade first."""
    gain = sum(relevant.get(doc, 0) / math.log2(rank + 2)
               for rank, doc in enumerate(ranking[:k]))
    ideal = sum(grade / math.log2(rank + 2)
                for rank, grade in enumerate(sorted(relevant.values(), reverse=True)[:k]))
    return gain / ideal if ideal else 0.0


def recall(ranking: Sequence[str], relevant: Iterable[str], k: int = DEPTH) -> float:
    wanted = set(relevant)
    return len(wanted & set(ranking[:k])) / len(wanted) if wanted else 0.0


def mean(values: Iterable[float]) -> float:
    numbers = list(values)
    return sum(numbers) / len(numbers) if numbers else float("nan")


# -- the logbook under test ---------------------------------------------------------------

def open_logbook(directory: Path, name: str) -> Logbook:
    from osprey_core.logbook.service import Logbook
    from osprey_core.plugin_host import load_plugins
    from osprey_core.settings import LogbookSettings

    return Logbook.open(directory / f"{name}.db", LogbookSettings(), load_plugins())


def fill(logbook: Logbook, entries: Iterable[LogEntry], label: str, *, embed: bool) -> float:
    """Store and index everything (embeddings too when ``embed``); returns seconds taken."""
    started = time.perf_counter()
    batch: list[LogEntry] = []
    for entry in entries:
        batch.append(entry)
        if len(batch) == 5000:
            logbook.add(batch)
            batch = []
    if batch:
        logbook.add(batch)
    shown = [0.0]

    def progress(done: int, total: int) -> None:
        if time.perf_counter() - shown[0] > 10 or done == total:
            shown[0] = time.perf_counter()
            print(f"  {label}: embedded {done}/{total}", file=sys.stderr, flush=True)

    if embed:
        for notice in logbook.refresh(semantic_progress=progress).notices:
            print(f"  {label}: {notice}", file=sys.stderr)
    else:  # keyword only: leave the embedding model alone
        logbook.docmeta.refresh()
        logbook.keyword.refresh()
    return time.perf_counter() - started


def available_modes(logbook: Logbook, modes: Sequence[str]) -> dict[str, str | None]:
    """Each mode and why it cannot run here (None: it can)."""
    problem = None
    if set(modes) - {"keyword"}:
        try:
            problem = None if logbook.semantic() is not None else (
                logbook.semantic_problem or "no embedding model")
        except ImportError as exc:  # an installation without semantic search at all
            problem = str(exc)
    return {"keyword": None, "semantic": problem, "hybrid": problem}


# -- SciFact ------------------------------------------------------------------------------

@dataclass
class Collection:
    entries: list[LogEntry]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def load_scifact(root: Path) -> Collection:
    from osprey_core.logbook.models import LogEntry

    epoch = datetime(2020, 1, 1, tzinfo=UTC)
    entries = []
    with (root / "corpus.jsonl").open(encoding="utf-8") as lines:
        for number, line in enumerate(lines):
            doc = json.loads(line)
            entries.append(LogEntry(source="scifact", native_id=doc["_id"],
                                    timestamp=epoch + timedelta(minutes=number),
                                    text=f"{doc['title']} {doc['text']}"))
    qrels: dict[str, dict[str, int]] = {}
    with (root / "qrels" / "test.tsv").open(encoding="utf-8") as lines:
        next(lines)
        for line in lines:
            query, doc, score = line.split()
            if int(score) > 0:
                qrels.setdefault(query, {})[doc] = int(score)
    with (root / "queries.jsonl").open(encoding="utf-8") as lines:
        queries = {item["_id"]: item["text"] for item in map(json.loads, lines)
                   if item["_id"] in qrels}
    return Collection(entries, queries, qrels)


def eval_scifact(root: Path, directory: Path, modes: Sequence[str]) -> dict[str, Any]:
    collection = load_scifact(root)
    print(f"\nSciFact: {len(collection.entries)} documents, {len(collection.queries)} test "
          f"queries ({root})")
    logbook = open_logbook(directory, "scifact")
    try:
        reasons = available_modes(logbook, modes)
        seconds = fill(logbook, collection.entries, "scifact",
                       embed=any(reasons[mode] is None for mode in modes if mode != "keyword"))
        print(f"  ingested and indexed in {seconds:.0f} s")
        results: dict[str, Any] = {}
        for mode in modes:
            if reasons[mode]:
                results[mode] = {"unavailable": reasons[mode]}
                continue
            scores, recalls, notices, latencies = [], [], 0, []
            for query_id, text in collection.queries.items():
                found = logbook.search(text, mode=mode, k=DEPTH)
                latencies.append(found.seconds)
                notices += bool(found.notices)
                ranking = [hit.entry.native_id for hit in found.hits]
                scores.append(ndcg(ranking, collection.qrels[query_id]))
                recalls.append(recall(ranking, collection.qrels[query_id]))
            results[mode] = {"ndcg@10": mean(scores), "recall@100": mean(recalls),
                             "queries_with_notices": notices,
                             "median_ms": sorted(latencies)[len(latencies) // 2] * 1e3}
    finally:
        logbook.close()
    print_scifact(results)
    return results


def print_scifact(results: dict[str, Any]) -> None:
    print(f"  {'mode':<9} {'nDCG@10':>8} {'R@100':>7} {'target':>8}  verdict   notes")
    for mode, figures in results.items():
        if "unavailable" in figures:
            print(f"  {mode:<9} {'-':>8} {'-':>7} {TARGETS[mode]:>8.3f}  n/a       "
                  f"unavailable: {figures['unavailable']}")
            continue
        met = figures["ndcg@10"] >= TARGETS[mode]
        print(f"  {mode:<9} {figures['ndcg@10']:>8.3f} {figures['recall@100']:>7.3f} "
              f"{TARGETS[mode]:>8.3f}  {'met' if met else 'MISSED':<9} "
              f"median {figures['median_ms']:.1f} ms/query"
              + (f", {figures['queries_with_notices']} queries with notices"
                 if figures["queries_with_notices"] else ""))
    print("  published nDCG@10: " + ", ".join(f"{name} {value:.3f}"
                                             for name, value in BASELINES))
    keyword = results.get("keyword", {}).get("ndcg@10")
    if keyword is not None:
        print("  keyword vs BM25: " + ", ".join(f"{keyword / value:.3f}x {name}"
                                               for name, value in BASELINES[:2]))


# -- the synthetic logbook ----------------------------------------------------------------

@dataclass
class TypeScores:
    ndcg: list[float] = field(default_factory=list)
    recall: list[float] = field(default_factory=list)
    violations: int = 0
    violating_queries: int = 0
    exact_totals: int = 0
    notices: int = 0

    def to_json(self, with_violations: bool, with_totals: bool) -> dict[str, Any]:
        figures: dict[str, Any] = {"queries": len(self.ndcg), "ndcg@10": mean(self.ndcg),
                                   "recall@100": mean(self.recall),
                                   "queries_with_notices": self.notices}
        if with_violations:
            figures |= {"violating_hits": self.violations,
                        "violating_queries": self.violating_queries}
        if with_totals:
            figures["exact_totals"] = self.exact_totals
        return figures


def violation(query: synthetic.Query, entry: LogEntry) -> bool:
    """The hit breaks a filter (filtered queries) or an operator (boolean ones)."""
    if query.expected is not None and entry.id not in query.expected:
        return True
    return query.constraint is not None and not query.constraint.allows(entry)


def score_queries(logbook: Logbook, queries: list[synthetic.Query], mode: str
                  ) -> dict[str, dict[str, Any]]:
    by_type: dict[str, TypeScores] = {}
    for query in queries:
        scores = by_type.setdefault(query.type, TypeScores())
        found = logbook.search(query.text, mode=mode, filters=query.filters, k=DEPTH)
        ranking = [hit.entry.id for hit in found.hits]
        top = max(query.relevant.values())
        scores.ndcg.append(ndcg(ranking, query.relevant))
        scores.recall.append(recall(ranking, [key for key, grade in query.relevant.items()
                                              if grade == top]))
        broken = sum(violation(query, hit.entry) for hit in found.hits)
        scores.violations += broken
        scores.violating_queries += bool(broken)
        scores.notices += bool(found.notices)
        if query.expected is not None:
            scores.exact_totals += found.total == len(query.expected)
    return {kind: scores.to_json(kind in ("filtered", "boolean"), kind == "boolean")
            for kind, scores in by_type.items()}


def score_answers(logbook: Logbook, questions: list[synthetic.Question]) -> dict[str, Any]:
    cited = outside = 0
    answerable = [q for q in questions if q.entry_id is not None]
    unanswerable = [q for q in questions if q.entry_id is None]
    answered = supported = stated = abstained = cited_when_abstaining = 0
    method = ""
    for question in questions:
        reply = logbook.ask(question.text)
        method = reply.method if reply.method != "none" else method
        cited += len(reply.citations)
        outside += sum(citation not in reply.used for citation in reply.citations)
        if question.entry_id is None:
            abstained += reply.abstained
            cited_when_abstaining += bool(reply.abstained and reply.citations)
        elif not reply.abstained:
            answered += 1
            supported += question.entry_id in reply.citations
            stated += question.answer is not None and question.answer in reply.text
    return {"method": method or "none", "questions": len(questions),
            "citations": cited, "citations_outside_given": outside,
            "citation_precision": (cited - outside) / cited if cited else float("nan"),
            "abstention_rate_unanswerable": abstained / len(unanswerable),
            "answer_rate_answerable": answered / len(answerable),
            "support_accuracy_answerable": supported / len(answerable),
            "answer_string_given": stated / len(answerable),
            "abstentions_citing": cited_when_abstaining}


def eval_synthetic(directory: Path, modes: Sequence[str], count: int, seed: int
                   ) -> dict[str, Any]:
    evaluation = synthetic.build(count=count, seed=seed)
    print(f"\nSynthetic logbook (seed {seed}): " + next(iter(synthetic.summary(evaluation))))
    logbook = open_logbook(directory, "synthetic")
    try:
        reasons = available_modes(logbook, modes)
        seconds = fill(logbook, evaluation.stream, "synthetic",
                       embed=any(reasons[mode] is None for mode in modes if mode != "keyword"))
        print(f"  ingested and indexed in {seconds:.0f} s")
        results: dict[str, Any] = {}
        for mode in modes:
            results[mode] = ({"unavailable": reasons[mode]} if reasons[mode]
                             else score_queries(logbook, evaluation.queries, mode))
        try:
            results["answers"] = score_answers(logbook, evaluation.questions)
        except ImportError as exc:  # answers retrieve in hybrid mode
            results["answers"] = {"unavailable": str(exc)}
    finally:
        logbook.close()
    print_synthetic(results)
    return results


def print_synthetic(results: dict[str, Any]) -> None:
    print(f"  {'type':<11} {'mode':<9} {'n':>4} {'nDCG@10':>8} {'R@100':>7} "
          f"{'violations':>11} {'exact total':>12}")
    for kind in synthetic.QUERY_TYPES:
        for mode in MODES:
            figures = results.get(mode)
            if figures is None:
                continue
            if "unavailable" in figures:
                if kind == synthetic.QUERY_TYPES[0]:
                    print(f"  {'(all)':<11} {mode:<9} unavailable: {figures['unavailable']}")
                continue
            row = figures.get(kind)
            if row is None:
                continue
            broken = (f"{row['violating_hits']} in {row['violating_queries']}"
                      if "violating_hits" in row else "-")
            exact = f"{row['exact_totals']}/{row['queries']}" if "exact_totals" in row else "-"
            print(f"  {kind:<11} {mode:<9} {row['queries']:>4} {row['ndcg@10']:>8.3f} "
                  f"{row['recall@100']:>7.3f} {broken:>11} {exact:>12}")
    answers = results["answers"]
    if "unavailable" in answers:
        print(f"  answers: unavailable: {answers['unavailable']}")
        return
    print(f"  answers ({answers['method']}, {answers['questions']} questions): citation "
          f"precision {answers['citation_precision']:.3f} "
          f"({answers['citations_outside_given']} of {answers['citations']} outside the "
          f"entries given), abstention on unanswerable "
          f"{answers['abstention_rate_unanswerable']:.2f}, answer rate on answerable "
          f"{answers['answer_rate_answerable']:.2f}, support accuracy "
          f"{answers['support_accuracy_answerable']:.2f} (answer string in the answer: "
          f"{answers['answer_string_given']:.2f})"
          + (f"; {answers['abstentions_citing']} abstentions cite entries"
             if answers["abstentions_citing"] else ""))


# -- main ---------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scifact", type=Path, default=SCIFACT,
                        help="BEIR SciFact directory (corpus.jsonl, queries.jsonl, qrels/)")
    parser.add_argument("--skip-scifact", action="store_true")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--modes", default=",".join(MODES),
                        help="comma-separated: keyword, semantic, hybrid")
    parser.add_argument("--count", type=int, default=synthetic.EVAL_COUNT,
                        help="entries in the synthetic logbook")
    parser.add_argument("--seed", type=int, default=synthetic.EVAL_SEED)
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args(argv)
    modes = [mode for mode in args.modes.split(",") if mode]
    if unknown := set(modes) - set(MODES):
        parser.error(f"unknown modes: {', '.join(sorted(unknown))}")
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="osprey-eval-") as scratch:
        directory = Path(scratch)
        if not args.skip_scifact:
            if (args.scifact / "corpus.jsonl").is_file():
                figures["scifact"] = eval_scifact(args.scifact, directory, modes)
            else:
                print(f"\nSciFact: not found at {args.scifact} (skipped; --scifact PATH)")
        if not args.skip_synthetic:
            figures["synthetic"] = eval_synthetic(directory, modes, args.count, args.seed)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
