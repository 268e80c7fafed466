"""Logbook search speed on generated light-source logbooks (part of ``nox -s bench``).

For each size (100,000 and 1,000,000 entries by default) a logbook is generated with
:mod:`osprey_core.logbook.sample` (seeded) into a JSONL file in a temporary directory, and
then, through the code the ``osprey logbook`` commands run:

(a) **keyword-only ingest**: the ``jsonl`` adapter and the ingest pipeline into the SQLite
    store, then the keyword index and document metadata brought up to date. Entries per
    second over both. Target: >= 20,000/s.
(b) **keyword query latency** through ``Logbook.search(mode="keyword", k=10)`` (ranking,
    entries read back, snippets), p50 and p95 per kind: common-word OR (natural language),
    identifiers, AND, phrases, filtered. Target: p50 <= 10 ms at 100k and <= 50 ms at 1M.
    Beside it, a naive FTS5 OR query (``MATCH 'w1 OR w2 ...' ORDER BY rank LIMIT 10``) on
    the same database, measured here, and the issue's figures for it (52 ms, 692 ms).
(c) at the largest size, **semantic top-10 latency** over random unit vectors of
    dimension 384 (MiniLM's), filled through the semantic index by a stand-in embedding
    model (embedding a million entries with MiniLM takes hours on two cores), against
    numpy brute force (one matrix product and a partial sort) on a matrix of the same
    size. Target: p50 <= 60 ms (the issue's brute force: 58 ms).

Then (d) the **MiniLM embedding rate** in log entries per second: the ``minilm`` model
filling the semantic index of 1,000 generated entries, against sentence-transformers out
of the box (``SentenceTransformer(...).encode`` with its defaults) on the same texts.
Target: >= 96 entries/s (out of the box: about 48/s).

Everything lives in one temporary directory, removed at the end. Run alone::

    python benchmarks/bench_logbook.py [--sizes 100000,1000000] [--runs 20]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from osprey_core.logbook import sample

if TYPE_CHECKING:
    import numpy as np

    from osprey_core.logbook.models import LogEntry
    from osprey_core.logbook.service import Logbook

SEED = 2026
INGEST_TARGET = 20_000.0
KEYWORD_TARGET_MS = {100_000: 10.0, 1_000_000: 50.0}
NAIVE_FTS_ISSUE_MS = {100_000: 52.0, 1_000_000: 692.0}
SEMANTIC_TARGET_MS = 60.0
NUMPY_ISSUE_MS = 58.0
EMBED_TARGET = 96.0
EMBED_OUT_OF_BOX_ISSUE = 48.0
DIMENSION = 384
EMBED_ENTRIES = 1000

#: Keyword queries by kind, in the generator's vocabulary (so they find entries at any size).
QUERIES: dict[str, tuple[str, ...]] = {
    "common OR": ("beam lost after the cavity trip", "pressure rose in the sector",
                  "injection efficiency dropped", "power supply tripped and reset",
                  "orbit feedback removed the BPM", "lifetime at end of shift"),
    "identifier": ("SR03C:BPM5:X", "RF:CAV2:FWD_PWR", sample.ALARMS[("rf", "2", "arc detector")],
                   "ioc-sr-rf-01", "SR07C:QF1", "BR:EXT:KICK:DELAY"),
    "AND": ("vacuum AND pressure AND sector", "cavity AND reflected", "kicker AND timing",
            "beam AND lost AND klystron", "helium AND cryostat"),
    "phrase": ('"beam was lost"', '"gate valve"', '"fast orbit feedback"',
               '"search and secure"', '"radiation survey"'),
    "filtered": ('trip author:"Sofia Marino"', "pressure logbook:Vacuum since:2025-01-01",
                 "cavity tag:beam-loss", "injection until:2024-06-30",
                 "interlock logbook:Safety NOT PSS"),
}
SEMANTIC_QUERIES = ("radio-frequency station went down", "gas burst in the ring",
                    "position monitor glitch", "people entered the enclosure",
                    "refrigeration plant problem", "upgraded the history logging service")


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def percentile(samples: Sequence[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def timed(call: Callable[[], object], runs: int) -> list[float]:
    """Seconds of each of ``runs`` calls, after one warm-up call."""
    call()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def plugins() -> Any:
    from osprey_core.plugin_host import load_plugins

    return load_plugins()


# -- (a) ingest ---------------------------------------------------------------------------

def build(size: int, directory: Path, host: Any) -> tuple[Logbook, Path]:
    from osprey_core.logbook.ingest import ingest
    from osprey_core.logbook.service import Logbook
    from osprey_core.logbook.store import SQLiteLogbook
    from osprey_core.settings import LogbookSettings, LogbookSourceSettings

    source = directory / f"logbook-{size}.jsonl"
    started = time.perf_counter()
    lines = sample.write_jsonl(source, size, seed=SEED)
    made = time.perf_counter() - started
    print(f"  generated {lines:,} JSONL lines ({size:,} entries and their edits, "
          f"{source.stat().st_size / 1e6:,.0f} MB) in {made:.1f} s: {size / made:,.0f} "
          "entries/s")
    database = directory / f"logbook-{size}.db"
    settings = LogbookSourceSettings(adapter="jsonl", location=str(source))
    adapter = host.logbook_adapters().get("jsonl").create("bench")
    store = SQLiteLogbook(database)
    try:
        report = ingest(store, "bench", settings, adapter)
    finally:
        store.close()
    if report.bad or report.added != size:
        sys.exit(f"ingest went wrong: {report.added} added, {report.bad} bad records")
    logbook = Logbook.open(database, LogbookSettings(), host)
    started = time.perf_counter()
    logbook.docmeta.refresh()
    logbook.keyword.refresh()
    indexed = time.perf_counter() - started
    rate = size / (report.seconds + indexed)
    print(f"  keyword-only ingest: store {report.seconds:.1f} s ({size / report.seconds:,.0f}"
          f"/s), keyword index {indexed:.1f} s ({size / indexed:,.0f}/s); together "
          f"{rate:,.0f} entries/s, target >= {INGEST_TARGET:,.0f}/s: "
          f"{verdict(rate >= INGEST_TARGET)}")
    return logbook, database


# -- (b) keyword latency ------------------------------------------------------------------

def keyword_latency(logbook: Logbook, database: Path, size: int, runs: int) -> None:
    target = KEYWORD_TARGET_MS.get(size)
    print(f"  keyword search, k=10, {runs} runs per query: p50 / p95 ms (hits of the first "
          "query)")
    by_kind: dict[str, list[float]] = {}
    for kind, queries in QUERIES.items():
        found = logbook.search(queries[0], mode="keyword", k=10)
        if not found.hits:
            sys.exit(f"no hit for {queries[0]!r}: the benchmark's queries are broken")
        samples = by_kind[kind] = [
            seconds for query in queries
            for seconds in timed(lambda q=query: logbook.search(q, mode="keyword", k=10), runs)]
        print(f"    {kind:<11} {percentile(samples, 0.5) * 1e3:7.2f} / "
              f"{percentile(samples, 0.95) * 1e3:7.2f}   ({found.total:,} matching "
              f"{queries[0]!r})")
    everything = [seconds for samples in by_kind.values() for seconds in samples]
    p50 = percentile(everything, 0.5) * 1e3
    line = f"    all kinds   {p50:7.2f} / {percentile(everything, 0.95) * 1e3:7.2f}"
    if target is not None:
        line += f"   target p50 <= {target:.0f} ms: {verdict(p50 <= target)}"
    print(line)
    naive = naive_fts(database, QUERIES["common OR"], runs)
    ours = percentile(by_kind["common OR"], 0.5)
    issue = NAIVE_FTS_ISSUE_MS.get(size)
    print(f"    naive FTS5 OR query (top 10 by bm25), same data and queries: p50 "
          f"{naive * 1e3:.1f} ms" + (f" (issue: {issue:.0f} ms)" if issue else "")
          + f"; ours {ours * 1e3:.2f} ms: {naive / ours:.1f}x faster")


def naive_fts(database: Path, queries: Sequence[str], runs: int) -> float:
    """p50 seconds of the obvious FTS5 query: the words OR'ed, ranked by bm25."""
    from osprey_core.logbook.tokenize import STOPWORDS

    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        samples: list[float] = []
        for query in queries:
            words = [word for word in query.split() if word.casefold() not in STOPWORDS]
            match = " OR ".join(f'"{word}"' for word in words)
            samples += timed(lambda m=match: connection.execute(
                "SELECT rowid FROM entries_fts WHERE entries_fts MATCH ? ORDER BY rank "
                "LIMIT 10", [m]).fetchall(), max(3, runs // 4))
        return statistics.median(samples)
    finally:
        connection.close()


# -- (c) semantic latency -----------------------------------------------------------------

def random_unit(count: int, seed: int) -> np.ndarray:
    import numpy as np

    vectors = np.random.default_rng(seed).standard_normal((count, DIMENSION), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def random_model() -> type:
    """An embedding model of random unit vectors (MiniLM's dimension): the semantic
    index's own work at a million entries without hours of embedding."""
    import zlib

    from osprey_core.hookspecs.embedding_models import EmbeddingModel

    class RandomUnit(EmbeddingModel):
        name = "bench-random"

        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(None)  # built like any model; needs none of it

        @property
        def dimension(self) -> int:
            return DIMENSION

        @property
        def fingerprint(self) -> str:
            return f"bench-random-{DIMENSION}"

        def embed(self, texts: Sequence[str]) -> np.ndarray:
            return random_unit(len(texts), zlib.crc32("\x00".join(texts).encode()))

    return RandomUnit


class _WithModel:
    """The plugin registries, plus the stand-in embedding model."""

    def __init__(self, host: Any, model: type) -> None:
        self.host = host
        self.models = {model.name: model}

    def embedding_models(self) -> dict[str, type]:
        return self.models

    def logbook_adapters(self) -> Any:
        return self.host.logbook_adapters()


def semantic_latency(database: Path, host: Any, size: int, runs: int) -> None:
    import numpy as np

    from osprey_core.logbook.service import Logbook
    from osprey_core.settings import EmbeddingSettings, LogbookSettings

    model = random_model()
    # the largest batches: a stand-in model gains nothing from small ones
    settings = LogbookSettings(embeddings=EmbeddingSettings(model=model.name, batch_size=2048))
    logbook = Logbook.open(database, settings, _WithModel(host, model))
    try:
        started = time.perf_counter()
        try:
            report = logbook.refresh()
        except ImportError as exc:  # an osprey without semantic search
            print(f"  semantic search unavailable: {exc}")
            return
        filled = time.perf_counter() - started
        if report.notices:
            print(f"  semantic search unavailable: {'; '.join(report.notices)}")
            return
        print(f"  semantic index filled with {report.semantic:,} random unit vectors "
              f"(dimension {DIMENSION}) in {filled:.0f} s")
        samples: list[float] = []
        for query in SEMANTIC_QUERIES:
            samples += timed(lambda q=query: logbook.search(q, mode="semantic", k=10),
                             max(3, runs // 2))
        filtered = timed(lambda: logbook.search("gas burst logbook:Vacuum", mode="semantic",
                                                k=10), max(3, runs // 2))
    finally:
        logbook.close()
    matrix = random_unit(size, 1)
    queries = random_unit(len(SEMANTIC_QUERIES), 2)

    def brute_force(vector: np.ndarray) -> np.ndarray:
        scores = matrix @ vector
        top = np.argpartition(scores, -10)[-10:]
        return top[np.argsort(-scores[top])]

    baseline: list[float] = []
    for vector in queries:
        baseline += timed(lambda v=vector: brute_force(v), max(3, runs // 2))
    ours, numpy_p50 = percentile(samples, 0.5) * 1e3, percentile(baseline, 0.5) * 1e3
    print(f"  semantic search, k=10, {size:,} vectors: p50 {ours:.1f} ms, p95 "
          f"{percentile(samples, 0.95) * 1e3:.1f} ms (with a logbook filter: p50 "
          f"{percentile(filtered, 0.5) * 1e3:.1f} ms); numpy brute force here {numpy_p50:.1f}"
          f" ms (issue: {NUMPY_ISSUE_MS:.0f} ms), ratio {numpy_p50 / ours:.2f}x; target "
          f"p50 <= {SEMANTIC_TARGET_MS:.0f} ms: {verdict(ours <= SEMANTIC_TARGET_MS)}")


# -- (d) embedding rate -------------------------------------------------------------------

def embedding_rate(directory: Path, host: Any, rounds: int = 2) -> None:
    """Both sides in turn, ``rounds`` times each (the best round of each counts), so a
    busy moment on the machine weighs on both alike; model loading is left out of both."""
    entries = list(sample.entries(EMBED_ENTRIES, seed=SEED + 1, source="embed", edit_rate=0))
    texts = [f"{entry.title}\n{entry.text}" for entry in entries]
    baseline = out_of_box(texts)
    ours: list[float] = []
    theirs: list[float] = []
    for number in range(rounds):
        rate = fill_with_minilm(directory / f"embed-{number}", host, entries)
        if rate is None:
            return
        ours.append(rate)
        if baseline is not None:
            theirs.append(baseline())
    best = max(ours)
    print(f"  MiniLM embedding (the minilm model filling the semantic index of "
          f"{len(entries):,} entries, best of {rounds}): {best:.0f} entries/s, target >= "
          f"{EMBED_TARGET:.0f}/s: {verdict(best >= EMBED_TARGET)}")
    if theirs:
        print(f"    sentence-transformers out of the box, same texts: {max(theirs):.0f} "
              f"entries/s (issue: about {EMBED_OUT_OF_BOX_ISSUE:.0f}/s) -> "
              f"{best / max(theirs):.2f}x")


def fill_with_minilm(directory: Path, host: Any, entries: list[LogEntry]) -> float | None:
    """Entries per second of a semantic index fill, model already loaded."""
    from osprey_core.logbook.service import Logbook
    from osprey_core.settings import LogbookSettings

    directory.mkdir()
    logbook = Logbook.open(directory / "embed.db", LogbookSettings(), host)
    try:
        logbook.add(entries)
        logbook.docmeta.refresh()
        logbook.keyword.refresh()
        try:
            index = logbook.semantic()
        except ImportError as exc:  # an osprey without semantic search
            index, problem = None, str(exc)
        else:
            problem = logbook.semantic_problem
        if index is None:
            print(f"  MiniLM embedding: unavailable ({problem})")
            return None
        index.model.embed(["warm-up: the model loads on first use"])
        started = time.perf_counter()
        logbook.refresh()
        return len(entries) / (time.perf_counter() - started)
    finally:
        logbook.close()


def out_of_box(texts: list[str]) -> Callable[[], float] | None:
    """Entries per second of ``SentenceTransformer(path).encode(texts)`` with every
    default, on the packaged all-MiniLM-L6-v2 weights (loaded once, warmed up)."""
    try:
        from sentence_transformers import SentenceTransformer

        from osprey_core.logbook.embeddings import minilm_path
    except ImportError as exc:
        print(f"    out-of-the-box baseline unavailable: {exc}")
        return None
    os.environ["HF_HUB_OFFLINE"] = "1"  # the weights are local; never ask the hub
    model = SentenceTransformer(str(minilm_path()), device="cpu")
    model.encode(texts[:32])

    def rate() -> float:
        started = time.perf_counter()
        model.encode(texts)
        return len(texts) / (time.perf_counter() - started)

    return rate


# -- main ---------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000",
                        help="comma-separated logbook sizes (entries)")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per query")
    parser.add_argument("--skip-embedding", action="store_true",
                        help="leave out the MiniLM embedding rate")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",") if size]
    host = plugins()
    with tempfile.TemporaryDirectory(prefix="osprey-bench-logbook-") as scratch:
        directory = Path(scratch)
        for size in sizes:
            print(f"\nLogbook of {size:,} generated entries")
            logbook, database = build(size, directory, host)
            try:
                keyword_latency(logbook, database, size, args.runs)
            finally:
                logbook.close()
            if size == max(sizes):
                semantic_latency(database, host, size, args.runs)
            for leftover in directory.glob(f"logbook-{size}*"):  # keep the disk use low
                remove(leftover)
        if not args.skip_embedding:
            print("\nEmbedding")
            embedding_rate(directory, host)
    return 0


def remove(path: Path) -> None:
    import shutil

    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


if __name__ == "__main__":
    sys.exit(main())
