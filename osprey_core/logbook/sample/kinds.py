"""One method per kind of entry, each returning (title, text, tags, facts); they read the
state the writer keeps (:class:`~osprey_core.logbook.sample.writer.Writer`)."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from typing import Any

from osprey_core.logbook.sample.formats import (
    AMPS,
    CHROMATICITY,
    COUNTS,
    D2,
    DOSE,
    KRPM,
    KW_FORWARD,
    KW_REFLECTED,
    LIFETIME_MEASURED,
    LIFETIMES,
    MM,
    MS,
    NS,
    PRESSURE,
    RMS,
    SETPOINT,
    SURVIVED,
    TUNE_X,
    TUNE_Y,
    UM,
    WEEKDAYS,
)
from osprey_core.logbook.sample.vocabulary import (
    ACCESS_WORK,
    ALARMS,
    APPS,
    BL_REQUESTS,
    CAVITIES,
    CRYO_PARTS,
    CRYO_REASONS,
    DUMP_CAUSES,
    FOLLOW_UP,
    GROUPS,
    ID_TYPES,
    INJ_PARTS,
    INTERLOCK_REASONS,
    INTERLOCKS,
    MAGNET_FAMILIES,
    MEASUREMENTS,
    MODES,
    OPEN_TICKET,
    OPS,
    PS_REASONS,
    REPORTED,
    RF_REASONS,
    ROOT_CAUSES,
    SECTORS,
    VAC_WHEN,
    Facts,
)


@functools.cache
def _about(kind: str, facet: str) -> Facts:
    """The facts of an entry about one event (made once each: entries repeat them)."""
    return Facts(kind, ((kind, facet),))


@functools.cache
def _rf_facts(cavity: str, lost: bool) -> Facts:
    return Facts("rf", (("rf", cavity), ("dump", "rf")) if lost else (("rf", cavity),))


_BEAMLINE_FACTS = Facts("beamline")
_ROUTINE_FACTS = Facts("routine")



class EntryKinds:
    """The entries' texts, drawn from the vocabulary at the writer's current time."""

    rng: random.Random
    #: Closures over the random source (see Writer): an item of a sequence, an integer as text.
    pick: Callable[[Sequence[Any]], Any]
    count_below: Callable[[int, int], str]
    long_rate: float
    tickets: int
    #: The facility's local time of the current entry.
    date: str
    compact: str
    hhmm: str
    hour: int
    minute: int
    second: int

    def ticket(self) -> str:
        self.tickets += 1 + int(self.rng.random() * 37)
        return f"TKT-{self.tickets}"


    def _shift(self) -> tuple[str, str, list[str], Facts]:
        rng, pick = self.rng, self.pick
        shift = "owl" if self.hour < 8 else "day" if self.hour < 16 else "swing"
        lifetime = f"{pick(LIFETIMES)} h"
        text = (f"Delivered {pick(MODES)} beam at {pick(AMPS)} mA on SR:CURRENT, lifetime "
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
                events.append(f"FOFB dropped SR{D2[int(facet)]}C:BPM"
                              f"{self.count_below(1, 9)}:X for a few minutes.")
            elif kind == "injection":
                facet = pick(tuple(INJ_PARTS))
                events.append(f"Injection efficiency dipped: {INJ_PARTS[facet][0]}.")
            else:
                events.append(pick(("Quiet otherwise.", "Beamlines happy.",
                                    "No alarms outstanding.", "Top-up steady all shift.")))
                continue
            topics.append((kind, facet))
        handover = f"Handed over to {pick(OPS)}."
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
        text = (f"Cavity {cavity} tripped on {reason} at {self.hhmm} with {pick(AMPS)} mA "
                f"stored, alarm {alarm}. "
                + ("Beam was lost. " if lost else f"Beam survived at {pick(SURVIVED)} mA. ")
                + f"Forward power RF:CAV{cavity}:FWD_PWR was {pick(KW_FORWARD)} kW, "
                f"reflected RF:CAV{cavity}:REV_PWR peaked at {pick(KW_REFLECTED)} kW. "
                + pick((f"Reset from ioc-sr-rf-0{klystron}, back on in "
                        f"{self.count_below(2, 27)} minutes.",
                        f"Klystron KLY{klystron} HVPS reset by {pick(GROUPS['rf'])}; RF back "
                        f"in {self.count_below(3, 43)} min.")))
        if rng.random() < self.long_rate:
            text += (f"\n\nLooked at the fast buffers: the trip started at the "
                     f"{pick(('cavity probe', 'klystron output', 'circulator load'))}, "
                     f"{pick(MS)} ms before the interlock. Same signature as earlier "
                     f"{reason} events on this cavity. "
                     + pick(OPEN_TICKET).format(tkt=self.ticket()))
        tags = ["rf", "trip", "beam-loss"] if lost else ["rf", "trip"]
        # a trip that lost the beam is a beam dump caused by RF as well
        return title, text, tags, _rf_facts(COUNTS[cavity], lost)

    def _vacuum(self) -> tuple[str, str, list[str], Facts]:
        rng, pick = self.rng, self.pick
        sector = 1 + int(rng.random() * SECTORS)
        ring = f"SR{D2[sector]}"
        pump = self.count_below(1, 7)
        title = pick(("Pressure burst in sector {0}", "{1} vacuum excursion",
                      "Ion pump IP{2} sector {0}")).format(sector, ring, pump)
        action = pick((f"Gate valve {ring}:VAC:GV{self.count_below(1, 3)} closed "
                       "automatically.",
                       f"Ion pump controller on ioc-sr{D2[sector]}-vac rebooted.",
                       f"Ran a helium leak check around the flange at girder "
                       f"{self.count_below(1, 4)}; no leak found."))
        text = (f"Pressure in sector {sector} rose to {pick(PRESSURE)}e-"
                f"{self.count_below(7, 10)} Torr on {ring}:VAC:IP{pump}:PRES {pick(VAC_WHEN)}. "
                f"{action} Recovered to base pressure after {self.count_below(5, 95)} min.")
        return title, text, ["vacuum"], _about("vacuum", COUNTS[sector])

    def _dump(self) -> tuple[str, str, list[str], Facts]:
        pick = self.pick
        cause = pick(tuple(DUMP_CAUSES))
        words, short = DUMP_CAUSES[cause]
        stamp = f"{self.compact}_{D2[self.hour]}{D2[self.minute]}{D2[self.second]}"
        title = pick(("Beam dump ({0})", "Beam lost at {1}", "Unplanned beam dump")).format(
            short, self.hhmm)
        text = (f"Beam dumped from {pick(AMPS)} mA at {self.hhmm}, caused by {words}. "
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
                + pick((f"Adjusted by {pick(NS)} ns and efficiency recovered.",
                        "Called the injector expert.",
                        f"Efficiency back above 90% after {self.count_below(2, 32)} min.")))
        return title, text, ["injection"], _about("injection", part)

    def _magnet(self) -> tuple[str, str, list[str], Facts]:
        rng, pick = self.rng, self.pick
        family = pick(tuple(MAGNET_FAMILIES))
        word, elements = MAGNET_FAMILIES[family]
        sector = 1 + int(rng.random() * SECTORS)
        magnet = f"SR{D2[sector]}C:{pick(elements)}"
        reason = pick(PS_REASONS)
        alarm = ALARMS[("ps", family, reason)]
        title = pick(("{0} power supply fault", "{1} PS trip in sector {2}",
                      "{3}: {0} PS")).format(magnet, word, sector, alarm)
        text = (f"{word} supply {magnet} tripped on {reason} ({alarm}); reset via "
                f"ioc-sr{D2[sector]}-ps. Setpoint {magnet}:SP restored to "
                f"{pick(SETPOINT)} A.")
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
        bpm = f"SR{D2[sector]}C:BPM{self.count_below(1, 9)}:{pick('XY')}"
        title = pick(("BPM {0} jumping", "Orbit feedback dropped a BPM",
                      "FOFB excluded BPM in sector {1}")).format(bpm, sector)
        text = (f"BPM {bpm} jumped by {pick(UM)} um; fast orbit feedback (FOFB) removed it "
                f"from the correction. Orbit RMS {pick(RMS)} um. "
                + pick((f"Button cable checked in sector {sector}, reseated.",
                        f"Reference orbit file orbit_ref_{self.compact}.sdds reloaded.",
                        "Will swap the electronics at the next access.")))
        facts = _about("orbit", COUNTS[sector])
        return title, text, ["bpm", "orbit", "feedback"], facts

    def _id(self) -> tuple[str, str, list[str], Facts]:
        pick = self.pick
        family = pick(tuple(ID_TYPES))
        prefix, sectors = ID_TYPES[family]
        sector = pick(sectors)
        device = f"{prefix}{sector}"
        title = pick((f"{device} gap motion fault", f"{device} stuck",
                      f"Beamline {sector}.0.{self.count_below(1, 4)} lost its ID"))
        text = (f"{device} gap motion fault: ID{D2[sector]}:GAP:SP reached but readback stuck "
                f"at {pick(MM)} mm. Beamline {sector}.0.1 informed. "
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
                                       who=pick(GROUPS["cryo"] + OPS[:3]),
                                       pct=self.count_below(30, 70), lo=KRPM[low],
                                       hi=KRPM[low + 30 + int(self.rng.random() * 10)])
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
                      "Access for repairs")).format(sector, D2[sector])
        text = (f"Controlled access to the SR tunnel, sector {sector}, for {pick(ACCESS_WORK)}. "
                f"Search and secure completed by {pick(GROUPS['safety'] + OPS)} at "
                f"{self.hhmm}; radiation survey {pick(DOSE)} uSv/h at the "
                f"{pick(('septum', 'ID chamber', 'girder', 'ratchet wall'))}.")
        return title, text, ["access", "safety"], _about("access", COUNTS[sector])

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
            paragraphs.append(f"{pick(WEEKDAYS)}: {title}. {text}")
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
            qx=pick(TUNE_X), qy=pick(TUNE_Y), cur=pick(AMPS), lt=pick(LIFETIME_MEASURED),
            rms=pick(RMS), chrom=pick(CHROMATICITY))
        title = pick(("Measurement", "Routine check", "Machine status"))
        return title, text, ["measurement"], _ROUTINE_FACTS

