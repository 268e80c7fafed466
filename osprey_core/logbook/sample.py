"""A synthetic light-source control-room logbook: seeded, fast, and exact about what it wrote.

The demo, the docs, the tests and the benchmarks need logbooks, and no facility's real one
can ship. This generator writes the entries a storage-ring control room writes (shift
summaries, RF trips, vacuum bursts, beam dumps, injection trouble, power-supply faults, BPM
and orbit-feedback issues, insertion devices, cryogenics, interlocks, software deployments,
tunnel access) with the identifiers operators type: PV names (``SR03C:BPM5:X``,
``RF:CAV2:FWD_PWR``), alarm codes, hosts, files, tickets, serial numbers, and numbers with
units. Timestamps cover about two years with shift patterns, daylight saving time and
writers in other time zones; some entries are long, some are edited later (the same id again
with a new text).

Besides the text, every generated entry carries :class:`Facts`: the events it reports
(kind and facet, such as ``("rf", "2")`` for a trip of cavity 2) and the statements it makes
that a question can ask for. Evaluation sets derive their relevance judgments from these
facts, so they are known by construction instead of judged after the fact.

It is pure Python and makes well over 100,000 entries a second (one ``random.Random`` per
stream), so a benchmark builds a million-entry logbook in seconds. The same seed always
gives the same stream, on every platform.
"""

from __future__ import annotations

import functools
import heapq
import json
import math
import random
import time
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any, NamedTuple

from osprey_core.logbook.models import LogEntry

#: The shipped sample: ``data/sample_logbook.jsonl``, made by :func:`write_jsonl` with these.
SAMPLE_SEED = 1904
SAMPLE_COUNT = 400
SAMPLE_FILE = "sample_logbook.jsonl"
#: The source name the demo ingests the sample under (entry ids ``demo/100001``...).
SAMPLE_SOURCE = "demo"

#: Where generated logbooks start (UTC) and how long they run by default.
START = datetime(2024, 1, 1, tzinfo=UTC)
DAYS = 730.0
FIRST_ID = 100001

SECTORS = 12
CAVITIES = 4

#: (name, group); groups decide which entries a person writes.
AUTHORS: tuple[tuple[str, str], ...] = (
    ("Maria Keller", "ops"), ("Ana Duarte", "ops"), ("Tomás Rivera", "ops"),
    ("Kenji Watanabe", "ops"), ("Priya Natarajan", "ops"), ("David Okafor", "ops"),
    ("Laura Chen", "ops"), ("Sam Patel", "ops"), ("Olivia Brooks", "ops"),
    ("Marcus Hill", "ops"), ("Elena Petrova", "ops"), ("Jamal Wright", "ops"),
    ("Hannah Schultz", "ops"), ("Diego Morales", "ops"), ("Grace Kim", "ops"),
    ("Robert Lang", "rf"), ("Sofia Marino", "rf"), ("Ivan Kuznetsov", "rf"),
    ("Claire Dubois", "vacuum"), ("Peter Novak", "vacuum"),
    ("Wei Zhang", "controls"), ("Aisha Bello", "controls"), ("Nils Andersson", "controls"),
    ("Rachel Adams", "magnets"), ("Tom Fischer", "diagnostics"), ("Yuki Sato", "diagnostics"),
    ("Carlos Mendes", "beamlines"), ("Fatima Haddad", "beamlines"), ("Ben Cohen", "beamlines"),
    ("Linda Park", "safety"), ("Jürgen Weiß", "cryo"),
    # a visiting expert who logs from Europe, and the deployment pipeline (logs in UTC)
    ("Lukas Brandt", "visitor"), ("deploy-bot", "bot"),
)
LOGBOOKS = ("Operations", "RF", "Vacuum", "Controls", "Beamlines", "Safety", "Injector",
            "Cryogenics", "Magnets", "Diagnostics")


class Facts(NamedTuple):
    """What the generator put into one entry, for judging searches and answers.

    ``topics``: the events reported, as ``(kind, facet)``; ``statements``: answerable facts
    as ``(question kind, key, answer)``, the answer written verbatim in the text.
    """

    kind: str
    topics: tuple[tuple[str, str], ...] = ()
    statements: tuple[tuple[str, str, str], ...] = ()


class Generated(NamedTuple):
    """One line of a generated logbook: the record as the ``jsonl`` adapter reads it, and
    its facts. An edit repeats an earlier id with a new text (``edit`` is True).
    (Named tuples, not dataclasses: they are made a million times a benchmark.)"""

    record: dict[str, Any]
    facts: Facts
    edit: bool = False


def _names(group: str) -> tuple[str, ...]:
    return tuple(name for name, kind in AUTHORS if kind == group)


_OPS = _names("ops")
_GROUPS = {group: _names(group) for _, group in AUTHORS}
_VISITOR = _GROUPS["visitor"][0]
_BOT = _GROUPS["bot"][0]

# ---------------------------------------------------------------------------------------
# Vocabulary. The words each kind's entries use are kept apart from the words its
# paraphrase queries use (see PARAPHRASES), so a paraphrase shares no content word with
# the entries it is about; tests check that.
# ---------------------------------------------------------------------------------------

RF_REASONS = ("arc detector", "reflected power interlock", "waveguide vacuum interlock",
              "klystron HVPS overcurrent", "tuner motor fault", "LLRF phase loop fault")
VAC_WHEN = ("during top-up", "after the ID gap change", "with no beam", "at injection",
            "while ramping the EPU", "right after the RF trip")
DUMP_CAUSES = {
    "rf": ("an RF cavity trip", "RF"),
    "magnet": ("a magnet power supply fault", "PS fault"),
    "orbit": ("the orbit interlock", "orbit interlock"),
    "vacuum": ("a vacuum interlock on a gate valve", "vacuum interlock"),
    "manual": ("a manual dump requested by the beamline EPS", "manual"),
}
INJ_PARTS = {
    "gun": ("Gun cathode emission low, bias LN:GUN:BIAS readback unstable",
            "LN:GUN:BIAS"),
    "linac": ("Linac klystron LN:KLY1 phase drifting, energy jitter at the linac end",
              "LN:KLY1:PHASE"),
    "booster": ("Booster ramp BR:RAMP:TABLE tripped at extraction energy",
                "BR:RAMP:TABLE"),
    "kicker": ("Booster extraction kicker timing drifted, BR:EXT:KICK:DELAY adjusted",
               "BR:EXT:KICK:DELAY"),
    "bts": ("BTS transfer line steering off, BTS:HCM2:SP retuned", "BTS:HCM2:SP"),
}
MAGNET_FAMILIES = {  # family: (word in entries, PV element names)
    "corrector": ("Corrector", ("HCM1", "HCM2", "HCM3", "VCM1", "VCM2", "VCM3")),
    "quadrupole": ("Quadrupole", ("QF1", "QF2", "QD1", "QD2")),
    "sextupole": ("Sextupole", ("SF1", "SF2", "SD1")),
    "dipole": ("Dipole", ("BM1", "BM2")),
    "septum": ("Septum", ("SEPT1",)),
}
PS_REASONS = ("ground fault", "DCCT readback error", "overtemperature", "water flow switch",
              "regulation error", "AC phase loss")
ID_TYPES = {"epu": ("EPU", (4, 7, 11)), "ivu": ("IVU", (5, 8, 12)), "scw": ("SCW", (6, 9))}
CRYO_PARTS = {
    "compressor": "Cryo plant compressor C{n} tripped on {reason}, restarted by {who}.",
    "helium": "Helium level CRYO:HE:LEVEL in the SCW cryostat dropped to {pct}%, "
              "fill started from the dewar.",
    "coldbox": "Cold box turbine T{n} speed oscillating, CRYO:TURB{n}:SPEED between "
               "{lo} and {hi} krpm.",
}
CRYO_REASONS = ("high discharge temperature", "oil level low", "motor overload")
INTERLOCKS = {
    "pss": "PSS", "eps": "EPS", "mps": "MPS",
}
INTERLOCK_REASONS = ("door interlock chain broken", "flow switch on the front-end absorber",
                     "photon shutter position mismatch", "beam current limit exceeded",
                     "thermocouple over limit on the mask")
APPS = {  # app: (name in entries, hosts, config file stem)
    "fofb": ("orbit feedback", ("ioc-sr-fofb-01", "ioc-sr-fofb-02"), "fofb_config"),
    "archiver": ("archiver appliance", ("srv-archiver-01", "srv-archiver-02"), "archiver"),
    "alarms": ("alarm server", ("srv-alarm-01",), "alarm_tree"),
    "llrf": ("LLRF firmware", ("ioc-sr-rf-01", "ioc-sr-rf-02"), "llrf_fw"),
    "timing": ("timing system", ("ioc-timing-01",), "evg_sequence"),
}
ACCESS_WORK = ("replacing a BPM cable", "inspecting a water leak under a girder",
               "swapping a corrector PS card", "survey of the ID chamber",
               "fixing an ion pump cable")
ROOT_CAUSES = ("a cracked cooling-water hose on the klystron collector",
               "a loose BNC connector on the interlock chassis",
               "a failed fan in the PS rack", "a corrupted EEPROM on the timing card",
               "a worn relay in the door interlock chain", "condensation in the BPM button",
               "a firmware watchdog that fired too early", "an aging capacitor bank",
               "a mislabelled cable after the last shutdown", "a kinked waveguide bellows")
OPEN_TICKET = ("Vendor contacted, ticket {tkt} opened.", "Ticket {tkt} filed for follow-up.",
               "Opened {tkt}; to be looked at in the next maintenance day.")
FOLLOW_UP = ("Problem did not recur during the next fill.", "Checked again at shift change: "
             "all nominal.", "Expert on call agrees with the action taken.",
             "Added a note to the morning meeting agenda.")
MODES = ("top-up", "two-bunch", "multibunch", "low-alpha")
BL_REQUESTS = ("asked for a beam steering check", "requested a gap scan on their ID",
               "reported intensity drop on the sample", "asked for an extended fill pattern",
               "finished their run early and released the beamtime")
MEASUREMENTS = ("Tune measurement: SR:TUNE:X {qx}, SR:TUNE:Y {qy}.",
                "Lifetime measurement at {cur} mA: SR:LIFETIME {lt} h.",
                "Orbit correction applied, residual RMS {rms} um horizontal.",
                "Chromaticity measured at +{chrom} in both planes.",
                "Top-up resumed after the refill, SR:CURRENT back at {cur} mA.")

#: How queries say what entries of a kind say differently: per kind, query templates
#: (``{f}`` is the facet's query wording) and, per facet, that wording.
PARAPHRASES: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "rf": (("radio-frequency station {f} went down",
            "accelerating structure number {f} shut off unexpectedly",
            "microwave drive to resonator {f} dropped out"),
           {str(c): str(c) for c in range(1, CAVITIES + 1)}),
    "vacuum": (("outgassing spike in ring section {f}",
                "gas load climbed inside the electron pipe near section {f}",
                "suspected air ingress in the chamber around section {f}"),
               {str(s): str(s) for s in range(1, SECTORS + 1)}),
    "dump": (("circulating electrons vanished because of {f}",
              "ring emptied without warning following {f}"),
             {"rf": "a radio-frequency failure", "magnet": "an electromagnet driver failure",
              "orbit": "the position protection logic", "vacuum": "a chamber pressure guard",
              "manual": "a deliberate operator abort"}),
    "injection": (("struggled to accumulate charge, {f} misbehaving",
                   "weak accumulation because of the {f}"),
                  {"gun": "electron source", "linac": "straight pre-accelerator",
                   "booster": "ramping synchrotron", "kicker": "pulsed ejection magnet",
                   "bts": "particle transport between the two synchrotrons"}),
    "magnet": (("{f} driver stopped working", "lost excitation on a {f}"),
               {"corrector": "steering coil", "quadrupole": "focusing lens",
                "sextupole": "chromatic correction element", "dipole": "bending electromagnet",
                "septum": "thin-wall deflector"}),
    "orbit": (("position monitor glitch in section {f} upset the closed-loop steering",
               "pickup electrode readings near section {f} misbehaved, stabilisation loop "
               "ignored them"),
              {str(s): str(s) for s in range(1, SECTORS + 1)}),
    "id": (("{f} would not open or close", "jaws of the {f} froze in place"),
           {"epu": "elliptical undulator", "ivu": "in-vacuum undulator",
            "scw": "superconducting wiggler magnet"}),
    "cryo": (("{f} in the refrigeration facility",
              "an issue with the {f} at the cooling facility"),
             {"compressor": "gas pump shutdown", "helium": "liquid coolant reservoir nearly empty",
              "coldbox": "expansion engine instability"}),
    "interlock": (("{f} stopped operation", "the {f} latched off"),
                  {"pss": "personnel protection scheme", "eps": "hardware safeguard logic",
                   "mps": "machine safeguard logic"}),
    "software": (("new {f} release rolled out", "upgraded the {f}"),
                 {"fofb": "position stabilisation code", "archiver": "history logging service",
                  "alarms": "alert handling daemon", "llrf": "low-level controller image",
                  "timing": "event synchronisation framework"}),
    "access": (("people entered the enclosure at section {f}",
                "personnel went into the shielded vault near section {f}"),
               {str(s): str(s) for s in range(1, SECTORS + 1)}),
}

#: How often each kind is written (relative weights).
KIND_WEIGHTS = (("shift", 13), ("rf", 8), ("vacuum", 7), ("dump", 5), ("injection", 7),
                ("magnet", 8), ("orbit", 7), ("id", 6), ("cryo", 4), ("interlock", 5),
                ("software", 6), ("access", 4), ("beamline", 8), ("routine", 12),
                ("report", 1))
#: Which logbook a kind goes to (or Operations, a third of the time), and who writes it.
KIND_HOME = {"shift": ("Operations", "ops"), "rf": ("RF", "rf"), "vacuum": ("Vacuum", "vacuum"),
             "dump": ("Operations", "ops"), "injection": ("Injector", "ops"),
             "magnet": ("Magnets", "magnets"), "orbit": ("Diagnostics", "diagnostics"),
             "id": ("Beamlines", "beamlines"), "cryo": ("Cryogenics", "cryo"),
             "interlock": ("Safety", "safety"), "software": ("Controls", "controls"),
             "access": ("Safety", "safety"), "beamline": ("Beamlines", "beamlines"),
             "routine": ("Operations", "ops"), "report": ("Operations", "ops")}
#: What a weekly report retells.
REPORTED = ("rf", "vacuum", "dump", "injection", "magnet", "orbit", "id", "cryo", "interlock",
            "access")

#: Entries per local hour (owl shifts write least), for the time between entries.
_HOUR_WEIGHT = tuple(0.45 if hour < 8 else 1.45 if hour < 16 else 1.1 for hour in range(24))
_BUSIEST = max(_HOUR_WEIGHT)


def _alarm_codes() -> dict[tuple[str, ...], str]:
    """A fixed alarm code per alarm condition, as an alarm system assigns them: the same
    condition raises the same code every time."""
    conditions = ([("rf", str(c), reason) for c in range(1, CAVITIES + 1)
                   for reason in RF_REASONS]
                  + [("ps", family, reason) for family in MAGNET_FAMILIES
                     for reason in PS_REASONS]
                  + [("cryo", reason) for reason in CRYO_REASONS]
                  + [("interlock", system, reason) for system in INTERLOCKS
                     for reason in INTERLOCK_REASONS])
    codes = random.Random(2231).sample(range(1000, 10000), len(conditions))
    return {tuple(condition): f"ALM-{code}" for condition, code in zip(conditions, codes,
                                                                       strict=True)}


ALARMS = _alarm_codes()


def _us_pacific_transitions(first: int, last: int) -> list[float]:
    """UTC instants at which the facility's clock changes (US rules: the second Sunday in
    March at 02:00 PST, the first Sunday in November at 02:00 PDT)."""
    instants = []
    for year in range(first, last + 1):
        march = datetime(year, 3, 8, 10, tzinfo=UTC)
        march += timedelta(days=(6 - march.weekday()) % 7)
        november = datetime(year, 11, 1, 9, tzinfo=UTC)
        november += timedelta(days=(6 - november.weekday()) % 7)
        instants += [march.timestamp(), november.timestamp()]
    return instants


def _eu_transitions(first: int, last: int) -> list[float]:
    """UTC instants of European summer time: last Sundays of March and October, 01:00 UTC."""
    instants = []
    for year in range(first, last + 1):
        for month in (3, 10):
            day = datetime(year, month, 31, 1, tzinfo=UTC)
            day -= timedelta(days=(day.weekday() + 1) % 7)
            instants.append(day.timestamp())
    return instants


_PACIFIC = _us_pacific_transitions(2000, 2100)
_EUROPE = _eu_transitions(2000, 2100)


def _offset(instant: float, zone: str) -> int:
    """Minutes east of UTC for a writer's clock: the facility (US Pacific), Europe, or UTC."""
    if zone == "utc":
        return 0
    if zone == "pacific":
        return -420 if bisect_right(_PACIFIC, instant) % 2 else -480
    return 120 if bisect_right(_EUROPE, instant) % 2 else 60


def _iso(instant: float, offset: int) -> str:
    local = time.gmtime(int(instant) + offset * 60)
    return (f"{local.tm_year:04d}-{local.tm_mon:02d}-{local.tm_mday:02d}T{local.tm_hour:02d}:"
            f"{local.tm_min:02d}:{local.tm_sec:02d}{_OFFSET_TEXT[offset]}")


_OFFSET_TEXT = {minutes: f"{'+' if minutes >= 0 else '-'}{abs(minutes) // 60:02d}:"
                f"{abs(minutes) % 60:02d}" for minutes in (-480, -420, 0, 60, 120)}
_D2 = tuple(f"{number:02d}" for number in range(100))


def _numbers(low: float, high: float, step: float, digits: int = 1) -> tuple[str, ...]:
    """Numbers as text, made once: formatting floats per entry costs more than all the
    rest of an entry."""
    return tuple(f"{low + i * step:.{digits}f}" for i in range(round((high - low) / step) + 1))


_AMPS = _numbers(380, 500, 0.1)
_LIFETIMES = _numbers(5.5, 9.5, 0.1)
_KW_FORWARD = _numbers(80, 140, 0.1)
_KW_REFLECTED = _numbers(5, 35, 0.1)
_SURVIVED = _numbers(150, 350, 1, 0)
_MS = _numbers(0, 3, 0.01, 2)
_PRESSURE = _numbers(1, 9, 0.1)
_NS = _numbers(0, 4, 0.01, 2)
_SETPOINT = _numbers(-60, 60, 0.001, 3)
_UM = _numbers(5, 85, 0.1)
_RMS = _numbers(0, 5, 0.01, 2)
_MM = _numbers(10, 100, 0.01, 2)
_DOSE = _numbers(0, 4, 0.1)
_TUNE_X = _numbers(0.15, 0.25, 0.0001, 4)
_TUNE_Y = _numbers(0.2, 0.3, 0.0001, 4)
_LIFETIME_MEASURED = _numbers(5, 10, 0.01, 2)
_CHROMATICITY = _numbers(1, 3, 0.1)
_KRPM = _numbers(20, 30, 0.1)
_COUNTS = tuple(str(number) for number in range(1000))
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@functools.cache
def _about(kind: str, facet: str) -> Facts:
    """The facts of an entry about one event (made once each: entries repeat them)."""
    return Facts(kind, ((kind, facet),))


@functools.cache
def _rf_facts(cavity: str, lost: bool) -> Facts:
    return Facts("rf", (("rf", cavity), ("dump", "rf")) if lost else (("rf", cavity),))


_BEAMLINE_FACTS = Facts("beamline")
_ROUTINE_FACTS = Facts("routine")


class _Writer:
    """The stream's state: the random source, the clock (and the facility's local time),
    the next ticket number, edits to come."""

    def __init__(self, seed: int, count: int, start: datetime, days: float,
                 edit_rate: float, long_rate: float) -> None:
        self.rng = random.Random(seed)
        self.count = count
        self.clock = start.timestamp()
        self.gap = days * 86400.0 / max(count, 1) * sum(_HOUR_WEIGHT) / 24 / _BUSIEST
        self.edit_rate = edit_rate
        self.long_rate = long_rate
        kinds, weights = zip(*KIND_WEIGHTS, strict=True)
        self.kinds = kinds
        self.cumulative = [sum(weights[:i + 1]) / sum(weights) for i in range(len(weights))]
        self.tickets = 40000
        # the facility's local time of the current entry, kept up to date by advance()
        self.offset = _offset(self.clock, "pacific")
        self.next_change = _PACIFIC[bisect_right(_PACIFIC, self.clock)]
        self.day = -1
        self.date = self.compact = ""
        self.hour = self.minute = self.second = 0
        self.hhmm = ""
        draw = self.rng.random

        def pick(items: Sequence[Any]) -> Any:
            return items[int(draw() * len(items))]

        def count_below(low: int, high: int) -> str:
            """An integer in [low, high) as text."""
            return _COUNTS[low + int(draw() * (high - low))]

        # closures over the random source, not methods: these run ten times an entry
        self.pick, self.count_below = pick, count_below


    def ticket(self) -> str:
        self.tickets += 1 + int(self.rng.random() * 37)
        return f"TKT-{self.tickets}"

    def author(self, group: str) -> str:
        rnd = self.rng.random()
        if group == "ops" or rnd < 0.35:
            return self.pick(_OPS)
        if group in ("rf", "magnets") and rnd > 0.93:
            return _VISITOR
        if group == "controls" and rnd > 0.7:
            return _BOT
        return self.pick(_GROUPS[group])

    def advance(self) -> None:
        """The next entry's time: busier by day than by night. A Poisson stream whose rate
        follows the local hour, drawn by thinning (candidates at the busiest rate, each
        kept with the hour's share of it), which stays exact however sparse the stream."""
        draw = self.rng.random
        while True:
            self.clock += -math.log(1.0 - draw()) * self.gap
            while self.clock >= self.next_change:
                self.offset = _offset(self.clock, "pacific")
                self.next_change = _PACIFIC[bisect_right(_PACIFIC, self.clock)]
            local = int(self.clock) + self.offset * 60
            if draw() * _BUSIEST < _HOUR_WEIGHT[local // 3600 % 24]:
                break
        day, second = divmod(local, 86400)
        if day != self.day:
            self.day = day
            moment = time.gmtime(day * 86400)
            self.date = f"{moment.tm_year:04d}-{moment.tm_mon:02d}-{moment.tm_mday:02d}"
            self.compact = self.date.replace("-", "")
        self.hour, second = divmod(second, 3600)
        self.minute, self.second = divmod(second, 60)
        self.hhmm = f"{_D2[self.hour]}:{_D2[self.minute]}"

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
            if author in (_VISITOR, _BOT):
                stamp = _iso(self.clock, _offset(self.clock,
                                                 "europe" if author == _VISITOR else "utc"))
            else:
                stamp = f"{self.date}T{self.hhmm}:{_D2[self.second]}{_OFFSET_TEXT[self.offset]}"
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
        hour = f"{_D2[int(rng.random() * 24)]}:{_D2[int(rng.random() * 60)]}"
        extra = (self.pick(FOLLOW_UP) if rng.random() < 0.5
                 else self.pick(OPEN_TICKET).format(tkt=self.ticket()))
        record = dict(item.record, text=f"{item.record['text']}\n\nUpdate {hour}: {extra}")
        return Generated(record, item.facts, edit=True)

    # -- one method per kind: (title, text, tags, facts) -----------------------------------

    def _shift(self) -> tuple[str, str, list[str], Facts]:
        rng, pick = self.rng, self.pick
        shift = "owl" if self.hour < 8 else "day" if self.hour < 16 else "swing"
        lifetime = f"{pick(_LIFETIMES)} h"
        text = (f"Delivered {pick(MODES)} beam at {pick(_AMPS)} mA on SR:CURRENT, lifetime "
                f"{lifetime} at end of shift. {self.count_below(3, 43)} injections, "
                f"efficiency {self.count_below(80, 99)}%.")
        topics: list[tuple[str, str]] = []
        events = []
        for _ in range(1 + int(rng.random() * (5 if rng.random() < self.long_rate else 2))):
            kind = pick(("rf", "vacuum", "orbit", "injection", "none", "none"))
            if kind == "rf":
                facet = str(1 + int(rng.random() * CAVITIES))
                events.append(f"Cavity {facet} tripped once ({pick(RF_REASONS)}), back "
                              f"within {self.count_below(2, 22)} min.")
            elif kind == "vacuum":
                facet = str(1 + int(rng.random() * SECTORS))
                events.append(f"Small pressure burst in sector {facet} {pick(VAC_WHEN)}, "
                              "no action needed.")
            elif kind == "orbit":
                facet = str(1 + int(rng.random() * SECTORS))
                events.append(f"FOFB dropped SR{_D2[int(facet)]}C:BPM"
                              f"{self.count_below(1, 9)}:X for a few minutes.")
            elif kind == "injection":
                facet = pick(tuple(INJ_PARTS))
                events.append(f"Injection efficiency dipped: {INJ_PARTS[facet][0]}.")
            else:
                events.append(pick(("Quiet otherwise.", "Beamlines happy.",
                                    "No alarms outstanding.", "Top-up steady all shift.")))
                continue
            topics.append((kind, facet))
        handover = f"Handed over to {pick(_OPS)}."
        if len(events) > 2:
            listed = "\n".join(f"- {event}" for event in events)
            text = f"{text}\n\nEvents:\n{listed}\n\n{pick(FOLLOW_UP)} {handover}"
        else:
            text = f"{text} {' '.join(events)} {handover}"
        title = f"{shift.capitalize()} shift summary {self.date}"
        facts = Facts("shift", tuple(topics), (("lifetime", f"{self.date} {shift}", lifetime),))
        return title, text, ["shift-summary"], facts

    def _rf(self) -> tuple[str, str, list[str], Facts]:
        rng, pick = self.rng, self.pick
        cavity = 1 + int(rng.random() * CAVITIES)
        klystron = 1 + (cavity - 1) // 2
        reason = pick(RF_REASONS)
        alarm = ALARMS[("rf", str(cavity), reason)]
        lost = rng.random() < 0.6
        title = pick(("RF cavity {0} trip", "CAV{0} tripped",
                      "RF trip on cavity {0} ({1})")).format(cavity, alarm)
        text = (f"Cavity {cavity} tripped on {reason} at {self.hhmm} with {pick(_AMPS)} mA "
                f"stored, alarm {alarm}. "
                + ("Beam was lost. " if lost else f"Beam survived at {pick(_SURVIVED)} mA. ")
                + f"Forward power RF:CAV{cavity}:FWD_PWR was {pick(_KW_FORWARD)} kW, "
                f"reflected RF:CAV{cavity}:REV_PWR peaked at {pick(_KW_REFLECTED)} kW. "
                + pick((f"Reset from ioc-sr-rf-0{klystron}, back on in "
                        f"{self.count_below(2, 27)} minutes.",
                        f"Klystron KLY{klystron} HVPS reset by {pick(_GROUPS['rf'])}; RF back "
                        f"in {self.count_below(3, 43)} min.")))
        if rng.random() < self.long_rate:
            text += (f"\n\nLooked at the fast buffers: the trip started at the "
                     f"{pick(('cavity probe', 'klystron output', 'circulator load'))}, "
                     f"{pick(_MS)} ms before the interlock. Same signature as earlier "
                     f"{reason} events on this cavity. "
                     + pick(OPEN_TICKET).format(tkt=self.ticket()))
        tags = ["rf", "trip", "beam-loss"] if lost else ["rf", "trip"]
        # a trip that lost the beam is a beam dump caused by RF as well
        return title, text, tags, _rf_facts(_COUNTS[cavity], lost)

    def _vacuum(self) -> tuple[str, str, list[str], Facts]:
        rng, pick = self.rng, self.pick
        sector = 1 + int(rng.random() * SECTORS)
        ring = f"SR{_D2[sector]}"
        pump = self.count_below(1, 7)
        title = pick(("Pressure burst in sector {0}", "{1} vacuum excursion",
                      "Ion pump IP{2} sector {0}")).format(sector, ring, pump)
        action = pick((f"Gate valve {ring}:VAC:GV{self.count_below(1, 3)} closed "
                       "automatically.",
                       f"Ion pump controller on ioc-sr{_D2[sector]}-vac rebooted.",
                       f"Ran a helium leak check around the flange at girder "
                       f"{self.count_below(1, 4)}; no leak found."))
        text = (f"Pressure in sector {sector} rose to {pick(_PRESSURE)}e-"
                f"{self.count_below(7, 10)} Torr on {ring}:VAC:IP{pump}:PRES {pick(VAC_WHEN)}. "
                f"{action} Recovered to base pressure after {self.count_below(5, 95)} min.")
        return title, text, ["vacuum"], _about("vacuum", _COUNTS[sector])

    def _dump(self) -> tuple[str, str, list[str], Facts]:
        pick = self.pick
        cause = pick(tuple(DUMP_CAUSES))
        words, short = DUMP_CAUSES[cause]
        stamp = f"{self.compact}_{_D2[self.hour]}{_D2[self.minute]}{_D2[self.second]}"
        title = pick(("Beam dump ({0})", "Beam lost at {1}", "Unplanned beam dump")).format(
            short, self.hhmm)
        text = (f"Beam dumped from {pick(_AMPS)} mA at {self.hhmm}, caused by {words}. "
                f"Post-mortem buffer saved to /data/postmortem/pm_{stamp}.h5. "
                + pick(("Refilled to nominal in 6 minutes.", "Refill delayed until the cause "
                        "was understood.", "Beamlines notified, refill at the next top-up.")))
        return title, text, ["beam-dump", "beam-loss"], _about("dump", cause)

    def _injection(self) -> tuple[str, str, list[str], Facts]:
        pick = self.pick
        part = pick(tuple(INJ_PARTS))
        detail, pv = INJ_PARTS[part]
        title = pick(("Injection efficiency low", f"Poor injection ({pv})",
                      "Top-up struggling"))
        text = (f"Injection efficiency dropped to {self.count_below(20, 70)}%. {detail}. "
                + pick((f"Adjusted by {pick(_NS)} ns and efficiency recovered.",
                        "Called the injector expert.",
                        f"Efficiency back above 90% after {self.count_below(2, 32)} min.")))
        return title, text, ["injection"], _about("injection", part)

    def _magnet(self) -> tuple[str, str, list[str], Facts]:
        rng, pick = self.rng, self.pick
        family = pick(tuple(MAGNET_FAMILIES))
        word, elements = MAGNET_FAMILIES[family]
        sector = 1 + int(rng.random() * SECTORS)
        magnet = f"SR{_D2[sector]}C:{pick(elements)}"
        reason = pick(PS_REASONS)
        alarm = ALARMS[("ps", family, reason)]
        title = pick(("{0} power supply fault", "{1} PS trip in sector {2}",
                      "{3}: {0} PS")).format(magnet, word, sector, alarm)
        text = (f"{word} supply {magnet} tripped on {reason} ({alarm}); reset via "
                f"ioc-sr{_D2[sector]}-ps. Setpoint {magnet}:SP restored to "
                f"{pick(_SETPOINT)} A.")
        statements: tuple[tuple[str, str, str], ...] = ()
        if rng.random() < 0.25:
            serial = f"SN-{100000 + int(rng.random() * 900000)}"
            text += (f" Tripped again after the reset, so we replaced the {magnet} power "
                     f"supply; the new unit has serial number {serial}. Old unit sent for "
                     f"repair, ticket {self.ticket()}.")
            statements = (("serial", magnet, serial),)
        tags = ["power-supply", "magnets"]
        return title, text, tags, Facts("magnet", (("magnet", family),), statements)

    def _orbit(self) -> tuple[str, str, list[str], Facts]:
        rng, pick = self.rng, self.pick
        sector = 1 + int(rng.random() * SECTORS)
        bpm = f"SR{_D2[sector]}C:BPM{self.count_below(1, 9)}:{pick('XY')}"
        title = pick(("BPM {0} jumping", "Orbit feedback dropped a BPM",
                      "FOFB excluded BPM in sector {1}")).format(bpm, sector)
        text = (f"BPM {bpm} jumped by {pick(_UM)} um; fast orbit feedback (FOFB) removed it "
                f"from the correction. Orbit RMS {pick(_RMS)} um. "
                + pick((f"Button cable checked in sector {sector}, reseated.",
                        f"Reference orbit file orbit_ref_{self.compact}.sdds reloaded.",
                        "Will swap the electronics at the next access.")))
        facts = _about("orbit", _COUNTS[sector])
        return title, text, ["bpm", "orbit", "feedback"], facts

    def _id(self) -> tuple[str, str, list[str], Facts]:
        pick = self.pick
        family = pick(tuple(ID_TYPES))
        prefix, sectors = ID_TYPES[family]
        sector = pick(sectors)
        device = f"{prefix}{sector}"
        title = pick((f"{device} gap motion fault", f"{device} stuck",
                      f"Beamline {sector}.0.{self.count_below(1, 4)} lost its ID"))
        text = (f"{device} gap motion fault: ID{_D2[sector]}:GAP:SP reached but readback stuck "
                f"at {pick(_MM)} mm. Beamline {sector}.0.1 informed. "
                + pick(("Motion controller power cycled, gap moves again.",
                        "Encoder error cleared from the ID panel.",
                        "Left at the parked gap until the ID group comes in.")))
        return title, text, ["insertion-device"], _about("id", family)

    def _cryo(self) -> tuple[str, str, list[str], Facts]:
        pick = self.pick
        part = pick(tuple(CRYO_PARTS))
        reason = pick(CRYO_REASONS)
        low = int(self.rng.random() * 60)
        text = CRYO_PARTS[part].format(n=self.count_below(1, 4), reason=reason,
                                       who=pick(_GROUPS["cryo"] + _OPS[:3]),
                                       pct=self.count_below(30, 70), lo=_KRPM[low],
                                       hi=_KRPM[low + 30 + int(self.rng.random() * 10)])
        if part == "compressor":
            text += f" Alarm {ALARMS[('cryo', reason)]}."
        title = pick(("Cryo plant trouble", f"Cryogenics: {part}", "SCW cryo alarm"))
        return title, text, ["cryo"], _about("cryo", part)

    def _interlock(self) -> tuple[str, str, list[str], Facts]:
        rng, pick = self.rng, self.pick
        system = pick(tuple(INTERLOCKS))
        reason = pick(INTERLOCK_REASONS)
        alarm = ALARMS[("interlock", system, reason)]
        beamline = f"{self.count_below(1, SECTORS + 1)}.{self.count_below(0, 4)}.1"
        title = pick(("{0} trip on BL {1}", "{2} interlock", "{0} interlock")).format(
            INTERLOCKS[system], beamline, alarm)
        text = (f"{INTERLOCKS[system]} interlock on beamline {beamline} front end: {reason} "
                f"({alarm}). Shutter closed, beamline staff called. "
                + pick((f"Reset at {self.hhmm} after a walk-through.",
                        "Chain made up again after the door was reclosed.",
                        pick(OPEN_TICKET).format(tkt=self.ticket()))))
        statements: tuple[tuple[str, str, str], ...] = ()
        if rng.random() < 0.3:
            ticket, cause = self.ticket(), pick(ROOT_CAUSES)
            text += f" Ticket {ticket} closed: root cause was {cause}."
            statements = (("root_cause", ticket, cause),)
        return title, text, ["interlock"], Facts("interlock", (("interlock", system),),
                                                 statements)

    def _software(self) -> tuple[str, str, list[str], Facts]:
        pick = self.pick
        app = pick(tuple(APPS))
        name, hosts, stem = APPS[app]
        host = pick(hosts)
        version = (f"v{self.count_below(1, 6)}.{self.count_below(0, 12)}."
                   f"{self.count_below(0, 20)}")
        title = pick(("Deployed {0} {1}", "{0} update on {2}", "Software: {0}")).format(
            name, version, host)
        old = (f"v{self.count_below(1, 6)}.{self.count_below(0, 12)}."
               f"{self.count_below(0, 20)}")
        text = (f"Deployed {name} {version} on {host}, replacing {old}. Config file "
                f"{stem}_{version[1:]}.yaml, previous one kept for rollback. "
                + pick(("IOC restarted, all PVs reconnected.", "No beam interruption.",
                        "Operators asked to report anything odd.")))
        facts = Facts("software", (("software", app),),
                      (("version", f"{name} replaced {old} on {host}", version),))
        return title, text, ["software", "deployment"], facts

    def _access(self) -> tuple[str, str, list[str], Facts]:
        pick = self.pick
        sector = 1 + int(self.rng.random() * SECTORS)
        title = pick(("Tunnel access sector {0}", "Controlled access SR{1}",
                      "Access for repairs")).format(sector, _D2[sector])
        text = (f"Controlled access to the SR tunnel, sector {sector}, for {pick(ACCESS_WORK)}. "
                f"Search and secure completed by {pick(_GROUPS['safety'] + _OPS)} at "
                f"{self.hhmm}; radiation survey {pick(_DOSE)} uSv/h at the "
                f"{pick(('septum', 'ID chamber', 'girder', 'ratchet wall'))}.")
        return title, text, ["access", "safety"], _about("access", _COUNTS[sector])

    def _beamline(self) -> tuple[str, str, list[str], Facts]:
        pick = self.pick
        beamline = (f"{self.count_below(1, SECTORS + 1)}.{self.count_below(0, 4)}."
                    f"{self.count_below(1, 4)}")
        title = pick(("Beamline {0} request", "BL {0}", "User request")).format(beamline)
        text = (f"Beamline {beamline} {pick(BL_REQUESTS)}. "
                + pick(("Done, they are happy.", "Will look at it after the next fill.",
                        "Passed to the beamline scientist on call.")))
        return title, text, ["beamline", "users"], _BEAMLINE_FACTS

    def _report(self) -> tuple[str, str, list[str], Facts]:
        """A long entry: the week's events retold, one paragraph each, then actions."""
        pick = self.pick
        topics: list[tuple[str, str]] = []
        statements: list[tuple[str, str, str]] = []
        paragraphs = [f"Week ending {self.date}. Availability {self.count_below(90, 100)}%, "
                      f"{self.count_below(0, 9)} beam dumps, mean time between failures "
                      f"{self.count_below(20, 160)} h."]
        for _ in range(3 + int(self.rng.random() * 14)):
            title, text, _tags, facts = getattr(self, "_" + pick(REPORTED))()
            paragraphs.append(f"{pick(_WEEKDAYS)}: {title}. {text}")
            topics += facts.topics
            statements += facts.statements
        paragraphs.append("Actions:\n" + "\n".join(
            f"- {pick(FOLLOW_UP)}" for _ in range(1 + int(self.rng.random() * 3))))
        facts = Facts("report", tuple(dict.fromkeys(topics)), tuple(statements))
        return f"Weekly operations report {self.date}", "\n\n".join(paragraphs), [
            "report", "weekly"], facts

    def _routine(self) -> tuple[str, str, list[str], Facts]:
        pick = self.pick
        template = pick(MEASUREMENTS)
        text = template.format(
            qx=pick(_TUNE_X), qy=pick(_TUNE_Y), cur=pick(_AMPS), lt=pick(_LIFETIME_MEASURED),
            rms=pick(_RMS), chrom=pick(_CHROMATICITY))
        title = pick(("Measurement", "Routine check", "Machine status"))
        return title, text, ["measurement"], _ROUTINE_FACTS


def generate(count: int, *, seed: int = 0, start: datetime = START, days: float = DAYS,
             edit_rate: float = 0.02, long_rate: float = 0.15) -> Iterator[Generated]:
    """``count`` entries (ids ``FIRST_ID`` on) over ``days`` from ``start``, in time order,
    with about ``edit_rate`` of them edited later in the stream (repeated with a new text).
    The same arguments always give the same stream."""
    return _Writer(seed, count, start, days, edit_rate, long_rate).stream()


def records(count: int, *, seed: int = 0, **options: Any) -> Iterator[dict[str, Any]]:
    """The generated lines as plain dicts in the ``jsonl`` adapter's default field names."""
    for item in generate(count, seed=seed, **options):
        yield item.record


def to_entry(record: dict[str, Any], source: str = SAMPLE_SOURCE) -> LogEntry:
    """A generated record as a :class:`LogEntry` (what the ``jsonl`` adapter makes of it)."""
    return LogEntry.with_offset(
        source=source, native_id=record["id"],
        timestamp=datetime.fromisoformat(record["timestamp"]), author=record["author"],
        title=record["title"], text=record["text"], logbook=record["logbook"],
        tags=tuple(record["tags"]))


def entries(count: int, *, seed: int = 0, source: str = SAMPLE_SOURCE,
            **options: Any) -> Iterator[LogEntry]:
    """The generated lines as entries (edits included: the store keeps the last)."""
    for record in records(count, seed=seed, **options):
        yield to_entry(record, source)


def latest(items: Iterable[Generated]) -> dict[int, Generated]:
    """The logbook a stream leaves behind: each id's last version, in id order."""
    final: dict[int, Generated] = {}
    for item in items:
        final[item.record["id"]] = item
    return dict(sorted(final.items()))


#: One encoder for every line (``json.dumps`` with options builds a new one per call).
jsonl_line = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def write_jsonl(path: Path, count: int, *, seed: int = 0, **options: Any) -> int:
    """Write a generated logbook as JSONL (UTF-8); returns the number of lines."""
    lines = 0
    with path.open("w", encoding="utf-8", newline="\n") as out:
        batch: list[str] = []
        for record in records(count, seed=seed, **options):
            batch.append(jsonl_line(record))
            if len(batch) == 4096:
                out.write("\n".join(batch) + "\n")
                lines += len(batch)
                batch.clear()
        if batch:
            out.write("\n".join(batch) + "\n")
            lines += len(batch)
    return lines


def sample_path() -> Path:
    """The shipped sample logbook (``osprey demo`` ingests it as source ``demo``)."""
    return Path(str(files("osprey_core.logbook") / "data" / SAMPLE_FILE))


def sample_text() -> str:
    """What :func:`sample_path` holds, made again from the generator."""
    return "".join(jsonl_line(record) + "\n"
                   for record in records(SAMPLE_COUNT, seed=SAMPLE_SEED))


if __name__ == "__main__":  # python -m osprey_core.logbook.sample: rewrite the sample
    target = Path(__file__).parent / "data" / SAMPLE_FILE
    target.parent.mkdir(exist_ok=True)
    target.write_text(sample_text(), encoding="utf-8", newline="\n")
    print(f"wrote {target}")
