"""Keyword search speed on generated logbooks: index build rate and query latency.

Entries are generated (seeded) to look like a light source's electronic logbook: a Zipf
mix of English and accelerator words, PV names, alarm codes, host and file names, numbers;
titles of 3-8 words, texts of 5-400 (about 45 on average); 6 logbooks, 200 authors,
30 tags. Targets (issue 11, two cores): keyword p50 <= 10 ms at 100k entries and <= 50 ms
at 1M.

At 100k the entries go through the SQLite store (ingest, then ``refresh``), and a naive
FTS5 OR query is timed beside ours. At 1M the index is built from the same generated rows
through a stand-in store (SQLite ingest of a million entries is the store's benchmark, not
this one's). Query kinds: common-word OR (natural language), rare identifier, AND, phrase,
filtered (fields and NOT); each kind runs its queries round-robin and reports p50 / p95.

    python benchmarks/bench_logbook_keyword.py [--sizes 100000 1000000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from osprey_core.logbook.keyword import KeywordIndex
from osprey_core.logbook.models import LogEntry
from osprey_core.logbook.query import parse_query
from osprey_core.logbook.store import Changes, DocRow, SQLiteLogbook

TARGET_MS = {100_000: 10.0, 1_000_000: 50.0}

_STOP_TEXT = """
the a to of and in was at for on is it with after before from by as be this that we not"""
_DOMAIN_TEXT = """
beam current injection storage ring booster linac rf cavity klystron vacuum pressure
valve gauge pump ion magnet corrector quadrupole sextupole dipole bend power supply trip
fault interlock reset orbit feedback bpm tune chromaticity lifetime loss dump kicker
septum timing trigger gun cathode laser undulator gap beamline shutter photon user shift
operator physicist machine study restart recovered tripped alarm temperature water flow
chiller cooling controller ioc server network reboot software update restore setpoint
readback drift noise oscillation spike glitch instability efficiency top-off fill
pattern bunch emittance coupling energy ramp ramped nominal degraded checked replaced
found investigating called expert on-call maintenance access search secured radiation
survey monitor level high low"""
STOPWORDS = _STOP_TEXT.split()
DOMAIN = _DOMAIN_TEXT.split()
SYLLABLES = ["ka", "to", "ri", "mo", "ne", "sa", "lu", "pe", "di", "go", "va", "ze", "chi",
             "tor", "mer", "lin", "ost", "ard"]

QUERIES = {
    "common OR": ["beam loss after injection", "rf cavity trip during fill",
                  "vacuum pressure spike in the ring", "orbit feedback oscillation",
                  "power supply fault reset by operator", "what happened to the beam current",
                  "water flow alarm chiller", "lifetime degraded after restart"],
    "identifier": ["SR03C:HCM2:SP", "ALM-2231", "ioc-sr-07.als.lbl.gov", "llrf_ctl.py",
                   "SR11C:BPM5:X", "/var/log/rf.log", "ALM-1870", "BTS:TUNE:X"],
    "AND": ["beam AND loss", "vacuum AND valve", "rf AND trip AND cavity",
            "kicker AND timing", "orbit AND feedback AND reset", "gun AND cathode"],
    "phrase": ['"beam loss"', '"power supply"', '"rf cavity"', '"vacuum pressure"',
               '"top-off"', '"orbit feedback"'],
    "filtered": ["beam loss author:author7", "vacuum logbook:vacuum since:2020-12-01",
                 "rf trip tag:tag3 -cavity", "kicker timing logbook:operations until:2021-02-01",
                 "orbit feedback NOT author:author1", "injection source:als tag:tag9"],
}


def generate(count: int, seed: int = 7) -> list[DocRow]:
    """``count`` log-like rows, rowids 1..count, one a minute from 2020-09-13."""
    rng = np.random.default_rng(seed)
    tail: set[str] = set()
    while len(tail) < 20_000:
        tail.add("".join(rng.choice(SYLLABLES, int(rng.integers(2, 5)))))
    words = np.array([*STOPWORDS, *DOMAIN, *sorted(tail)], dtype=object)
    weights = 1.0 / np.arange(1, len(words) + 1) ** 1.05
    sectors = [f"SR{sector:02d}C" for sector in range(1, 13)]
    identifiers = np.array(
        [f"{s}:HCM{i}:SP" for s in sectors for i in range(1, 5)]
        + [f"{s}:BPM{i}:X" for s in sectors for i in range(1, 9)]
        + [f"ALM-{i}" for i in range(1000, 3000)]
        + [f"ioc-sr-{i:02d}.als.lbl.gov" for i in range(40)]
        + ["/var/log/rf.log", "llrf_ctl.py", "SR:CURRENT", "BTS:TUNE:X"], dtype=object)
    text_words = np.clip(rng.lognormal(3.6, 0.6, count).astype(int), 5, 400)
    title_words = rng.integers(3, 9, count)
    total = int(text_words.sum() + title_words.sum())
    flat = rng.choice(words, total, p=weights / weights.sum())
    special = rng.random(total)
    picked = special < 0.04
    flat[picked] = rng.choice(identifiers, int(picked.sum()))
    numbers = special > 0.97
    flat[numbers] = np.char.mod("%.1f", rng.random(int(numbers.sum())) * 500).astype(object)
    logbooks = ("operations", "rf", "vacuum", "controls", "physics", "beamlines")
    tags = [f"tag{i}" for i in range(30)]
    tag_draws = rng.integers(0, 30, (count, 2))
    rows, at = [], 0
    start = 1.6e9
    for index in range(count):
        title_end = at + int(title_words[index])
        end = title_end + int(text_words[index])
        rows.append(DocRow(index + 1, "als", logbooks[index % 6], f"author{index * 7 % 200}",
                           " ".join(flat[at:title_end]).capitalize(),
                           " ".join(flat[title_end:end]),
                           tuple(tags[t] for t in tag_draws[index, :index % 3]),
                           start + index * 60.0))
        at = end
    return rows


class RowsStore:
    """The part of the store an index reads, over generated rows (for 1M entries)."""

    def __init__(self, rows: list[DocRow]) -> None:
        self.rows = rows

    def changes_since(self, seq: int) -> Changes:
        return Changes(len(self.rows), [row.rowid for row in self.rows[seq:]], [])

    def last_change(self) -> int:
        return len(self.rows)

    def docs(self, rowids: Iterable[int] | None = None, *,
             batch: int = 5000) -> Iterator[list[DocRow]]:
        wanted = [self.rows[rowid - 1] for rowid in (rowids or [])]
        for start in range(0, len(wanted), batch):
            yield wanted[start:start + batch]


def entries(rows: list[DocRow]) -> Iterator[LogEntry]:
    for row in rows:
        yield LogEntry.model_construct(
            source=row.source, native_id=str(row.rowid), timestamp=datetime.fromtimestamp(
                row.ts, UTC), text=row.text, title=row.title, logbook=row.logbook,
            author=row.author, tags=row.tags, linked_to=(), attachments=(),
            utc_offset_minutes=None)


def latency(index: KeywordIndex, repeat: int) -> dict[str, list[float]]:
    now = datetime(2021, 3, 1, tzinfo=UTC)
    timings: dict[str, list[float]] = {}
    for kind, queries in QUERIES.items():
        parsed = [parse_query(text, now=now) for text in queries]
        for query in parsed:  # warm the page cache of the mapped files
            index.search(query, k=10)
        samples = []
        for _ in range(repeat):
            for query in parsed:
                began = time.perf_counter()
                index.search(query, k=10)
                samples.append((time.perf_counter() - began) * 1000)
        timings[kind] = samples
    return timings


def report(size: int, timings: dict[str, list[float]]) -> None:
    target = TARGET_MS.get(size)
    every = [sample for samples in timings.values() for sample in samples]
    for kind, samples in [*timings.items(), ("all", every)]:
        ordered = sorted(samples)
        p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
        print(f"  {kind:12s} p50 {statistics.median(samples):7.2f} ms   p95 {p95:7.2f} ms")
    if target is not None:
        verdict = "meets" if statistics.median(every) <= target else "MISSES"
        print(f"  target p50 <= {target:.0f} ms: {verdict}")


def fts_baseline(store: SQLiteLogbook, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        for text in QUERIES["common OR"]:
            match = " OR ".join(f'"{word}"' for word in text.split())
            began = time.perf_counter()
            store.conn.execute("SELECT rowid FROM entries_fts WHERE entries_fts MATCH ? "
                               "ORDER BY bm25(entries_fts) LIMIT 10", [match]).fetchall()
            samples.append((time.perf_counter() - began) * 1000)
    return statistics.median(samples)


def through_store(rows: list[DocRow], folder: Path, repeat: int) -> None:
    store = SQLiteLogbook(folder / "logbook.db")
    began = time.perf_counter()
    batch = list(entries(rows))
    for start in range(0, len(batch), 5000):
        store.upsert(batch[start:start + 5000])
    ingest = time.perf_counter() - began
    index = KeywordIndex.open(store, folder / "logbook.index")
    began = time.perf_counter()
    index.refresh()
    build = time.perf_counter() - began
    print(f"{len(rows):,} entries through the SQLite store: store ingest "
          f"{len(rows) / ingest:,.0f}/s, index refresh {len(rows) / build:,.0f}/s "
          f"(both: {len(rows) / (ingest + build):,.0f}/s)")
    began = time.perf_counter()
    reopened = KeywordIndex.open(store, folder / "logbook.index")
    print(f"  open in a new process: {(time.perf_counter() - began) * 1000:.1f} ms")
    report(len(rows), latency(reopened, repeat))
    print(f"  naive FTS5 OR query p50: {fts_baseline(store, repeat):.1f} ms")
    store.close()


def direct(rows: list[DocRow], folder: Path, repeat: int) -> None:
    store = RowsStore(rows)
    index = KeywordIndex.open(store, folder / "logbook.index")  # type: ignore[arg-type]
    began = time.perf_counter()
    index.refresh()
    build = time.perf_counter() - began
    files = sum(path.stat().st_size for path in (folder / "logbook.index").rglob("*.npy"))
    print(f"{len(rows):,} entries (generated rows, no SQLite): index build "
          f"{len(rows) / build:,.0f}/s, {files / 2**20:,.0f} MiB of index files")
    report(len(rows), latency(KeywordIndex.open(store, folder / "logbook.index"),  # type: ignore[arg-type]
                              repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    for size in args.sizes:
        began = time.perf_counter()
        rows = generate(size)
        print(f"generated {size:,} entries in {time.perf_counter() - began:.1f} s")
        with tempfile.TemporaryDirectory() as folder:
            if size <= 200_000:
                through_store(rows, Path(folder), args.repeat)
            else:
                direct(rows, Path(folder), args.repeat)
        del rows


if __name__ == "__main__":
    main()
