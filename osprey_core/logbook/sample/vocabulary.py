"""What the generated logbook is made of: who writes, in which logbooks, the words each kind of
entry uses and the different words queries use for them (see PARAPHRASES), how often each
kind is written, and the facts an entry carries for evaluation sets."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any, NamedTuple

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


OPS = _names("ops")
GROUPS = {group: _names(group) for _, group in AUTHORS}
VISITOR = GROUPS["visitor"][0]
BOT = GROUPS["bot"][0]

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
HOUR_WEIGHT = tuple(0.45 if hour < 8 else 1.45 if hour < 16 else 1.1 for hour in range(24))
BUSIEST = max(HOUR_WEIGHT)


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

