"""The generator's state: the random source, the clock in the facility's local time, the
stream of entries with their edits to come."""

from __future__ import annotations

import heapq
import math
import random
import time
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from osprey_core.logbook.sample.formats import (
    COUNTS,
    D2,
    OFFSET_TEXT,
    PACIFIC,
    local_iso,
    utc_offset,
)
from osprey_core.logbook.sample.kinds import EntryKinds
from osprey_core.logbook.sample.vocabulary import (
    BOT,
    BUSIEST,
    FIRST_ID,
    FOLLOW_UP,
    GROUPS,
    HOUR_WEIGHT,
    KIND_HOME,
    KIND_WEIGHTS,
    OPEN_TICKET,
    OPS,
    VISITOR,
    Generated,
)


class Writer(EntryKinds):
    """The stream's state: the random source, the clock (and the facility's local time),
    the next ticket number, edits to come."""

    def __init__(self, seed: int, count: int, start: datetime, days: float,
                 edit_rate: float, long_rate: float) -> None:
        self.rng = random.Random(seed)
        self.count = count
        self.clock = start.timestamp()
        self.gap = days * 86400.0 / max(count, 1) * sum(HOUR_WEIGHT) / 24 / BUSIEST
        self.edit_rate = edit_rate
        self.long_rate = long_rate
        kinds, weights = zip(*KIND_WEIGHTS, strict=True)
        self.kinds = kinds
        self.cumulative = [sum(weights[:i + 1]) / sum(weights) for i in range(len(weights))]
        self.tickets = 40000
        # the facility's local time of the current entry, kept up to date by advance()
        self.offset = utc_offset(self.clock, "pacific")
        self.next_change = PACIFIC[bisect_right(PACIFIC, self.clock)]
        self.day = -1
        self.date = self.compact = ""
        self.hour = self.minute = self.second = 0
        self.hhmm = ""
        draw = self.rng.random

        def pick(items: Sequence[Any]) -> Any:
            return items[int(draw() * len(items))]

        def count_below(low: int, high: int) -> str:
            """An integer in [low, high) as text."""
            return COUNTS[low + int(draw() * (high - low))]

        # closures over the random source, not methods: these run ten times an entry
        self.pick, self.count_below = pick, count_below

    def author(self, group: str) -> str:
        rnd = self.rng.random()
        if group == "ops" or rnd < 0.35:
            return self.pick(OPS)
        if group in ("rf", "magnets") and rnd > 0.93:
            return VISITOR
        if group == "controls" and rnd > 0.7:
            return BOT
        return self.pick(GROUPS[group])

    def advance(self) -> None:
        """The next entry's time: busier by day than by night. A Poisson stream whose rate
        follows the local hour, drawn by thinning (candidates at the busiest rate, each
        kept with the hour's share of it), which stays exact however sparse the stream."""
        draw = self.rng.random
        while True:
            self.clock += -math.log(1.0 - draw()) * self.gap
            while self.clock >= self.next_change:
                self.offset = utc_offset(self.clock, "pacific")
                self.next_change = PACIFIC[bisect_right(PACIFIC, self.clock)]
            local = int(self.clock) + self.offset * 60
            if draw() * BUSIEST < HOUR_WEIGHT[local // 3600 % 24]:
                break
        day, second = divmod(local, 86400)
        if day != self.day:
            self.day = day
            moment = time.gmtime(day * 86400)
            self.date = f"{moment.tm_year:04d}-{moment.tm_mon:02d}-{moment.tm_mday:02d}"
            self.compact = self.date.replace("-", "")
        self.hour, second = divmod(second, 3600)
        self.minute, self.second = divmod(second, 60)
        self.hhmm = f"{D2[self.hour]}:{D2[self.minute]}"

    def stream(self) -> Iterator[Generated]:
        draw, advance, author_of = self.rng.random, self.advance, self.author
        kinds, cumulative, edit_rate = self.kinds, self.cumulative, self.edit_rate
        pending: list[tuple[int, int, Generated]] = []
        builders = {kind: (getattr(self, "_" + kind), *KIND_HOME[kind]) for kind in kinds}
        for index in range(self.count):
            advance()
            build, home, group = builders[kinds[bisect_right(cumulative, draw())]]
            logbook = home if draw() < 0.67 else "Operations"
            author = author_of(group)
            title, text, tags, facts = build()
            if author in (VISITOR, BOT):
                stamp = local_iso(self.clock, utc_offset(self.clock,
                                                 "europe" if author == VISITOR else "utc"))
            else:
                stamp = f"{self.date}T{self.hhmm}:{D2[self.second]}{OFFSET_TEXT[self.offset]}"
            item = Generated({"id": FIRST_ID + index, "timestamp": stamp, "author": author,
                              "title": title, "text": text, "logbook": logbook, "tags": tags},
                             facts)
            yield item
            if draw() < edit_rate:
                due = index + 1 + int(draw() * 40)
                heapq.heappush(pending, (due, index, self._edited(item)))
            while pending and pending[0][0] <= index:
                yield heapq.heappop(pending)[2]
        while pending:
            yield heapq.heappop(pending)[2]

    def _edited(self, item: Generated) -> Generated:
        """The same entry, amended later: a follow-up, or a ticket for it."""
        rng = self.rng
        hour = f"{D2[int(rng.random() * 24)]}:{D2[int(rng.random() * 60)]}"
        extra = (self.pick(FOLLOW_UP) if rng.random() < 0.5
                 else self.pick(OPEN_TICKET).format(tkt=self.ticket()))
        record = dict(item.record, text=f"{item.record['text']}\n\nUpdate {hour}: {extra}")
        return Generated(record, item.facts, edit=True)
