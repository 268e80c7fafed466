"""How long does a durable 3-step run with one approval round trip take?

Baseline (issue): the same flow in LangGraph with its SQLite checkpointer on disk.
Target: osprey's median time per run at least 5x lower than LangGraph's.

The flow, in one process, each side with its own SQLite file in a temporary directory.
Both commit every state change; LangGraph (``synchronous=FULL``) syncs each commit to
disk, osprey (WAL) syncs the pause, side-effecting steps and the end, and lets the other
commits ride on the next sync (they survive a crash of the process, and a power cut rolls
the run back to its last synced point):

* osprey: ``Osprey.run("/planning ...")`` on a fresh home plans ``bench_fetch`` ->
  ``bench_scale`` -> ``respond`` with the offline planner and pauses for the plan approval
  (built-in ``approval_modes`` policy, the real run store); ``Osprey.approve(id)`` resumes
  the run, which runs the three steps and ends ``done``;
* LangGraph: a ``StateGraph`` of three nodes doing the same trivial work, compiled with
  ``SqliteSaver``; the first node calls ``interrupt()`` before doing anything.
  ``invoke(input)`` on a fresh ``thread_id`` stops there and ``invoke(Command(resume=...))``
  runs the three nodes to the end. The target is judged against ``durability="sync"``
  (each step persisted before the next starts, as osprey does); LangGraph's default
  (``"async"``: persisted while the next step runs) is printed beside it.

Runs of the two sides are interleaved after a warm-up, so drift hits both alike. Each run
is timed from the request to the answer, split into "to pause" (until the approval request
is stored) and "resume" (the decision until the answer). A run that does not pause once and
then finish stops the benchmark with an error.

LangGraph is installed only in the ``bench`` nox session, never as a dependency; without
it the osprey figures are printed alone.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import io
import json
import pstats
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict

from pydantic import BaseModel, ConfigDict

from osprey_core.hookspecs import hookimpl
from osprey_core.hookspecs.capabilities import Capability, StepContext
from osprey_core.models import StepStatus
from osprey_core.run_machine import RunState

if TYPE_CHECKING:
    from osprey_core.api import Osprey

TARGET_SPEEDUP = 5.0
QUERY = "/planning bench_fetch the beam current, then bench_scale it"
EXPECTED_STEPS = ["bench_fetch", "bench_scale", "respond"]
READING: dict[str, Any] = {"channel": "BENCH:CURRENT", "value": 1.5, "unit": "mA"}
FACTOR = 2.0

RoundTrip = Callable[[], tuple[float, float]]


# -- the trivial work, the same on both sides -----------------------------------------------


def fetch() -> dict[str, Any]:
    return dict(READING)


def scale(reading: dict[str, Any], factor: float) -> dict[str, Any]:
    return {**reading, "value": reading["value"] * factor}


# -- osprey ---------------------------------------------------------------------------------


class ScaleParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    factor: float


class BenchFetch(Capability):
    """Read-only: returns a fixed reading."""

    name: ClassVar[str] = "bench_fetch"
    description: ClassVar[str] = "Benchmark step: read a fixed channel value."
    provides: ClassVar[tuple[str, ...]] = ("bench_reading",)

    def match(self, query: str) -> dict[str, Any] | None:
        return {} if "bench_fetch" in query else None

    async def execute(self, step: StepContext) -> dict[str, Any]:
        return fetch()


class BenchScale(Capability):
    """Read-only: scales the reading of the step before."""

    name: ClassVar[str] = "bench_scale"
    description: ClassVar[str] = "Benchmark step: scale the reading of an earlier step."
    provides: ClassVar[tuple[str, ...]] = ("bench_scaled",)
    requires: ClassVar[tuple[str, ...]] = ("bench_reading",)
    parameters: ClassVar[type[BaseModel] | None] = ScaleParameters

    def match(self, query: str) -> dict[str, Any] | None:
        return {"factor": FACTOR} if "bench_scale" in query else None

    async def execute(self, step: StepContext) -> dict[str, Any]:
        (reading,) = step.inputs.values()
        return scale(reading, step.parameters.factor)


class BenchPlugin:
    """Registered in-process with ``host.register``, as an embedding application would."""

    @hookimpl
    def register_capabilities(self, register: Callable[[Capability], None]) -> None:
        register(BenchFetch())
        register(BenchScale())


@contextmanager
def osprey_instance(root: Path) -> Iterator[Osprey]:
    """Osprey with the installed plugins plus the bench plugin; OSPREY_HOME under ``root``."""
    from osprey_core.api import Osprey
    from osprey_core.config import load_config
    from osprey_core.plugin_host import load_plugins

    config_file = root / "osprey.yml"
    config_file.write_text("{}\n")  # explicit and empty: no ./osprey.yml or OSPREY__* leaks in
    host = load_plugins(environ={})
    host.register(BenchPlugin(), name="bench-orchestrator")
    config = load_config(host, config_file, environ={"OSPREY_HOME": str(root / "home")})
    with Osprey(host=host, config=config) as osprey:
        yield osprey


def osprey_round_trip(osprey: Osprey) -> tuple[float, float]:
    """request -> pause for the plan -> approve -> done; seconds to pause and to resume."""
    start = time.perf_counter()
    paused = osprey.run(QUERY, session="bench", user="bench-operator")
    mid = time.perf_counter()
    if paused.state is not RunState.AWAITING_PLAN_APPROVAL or paused.approval_id is None:
        sys.exit(f"osprey run {paused.id} did not pause for its plan: {paused.state} "
                 f"({paused.error})")
    done = osprey.approve(paused.approval_id, user="bench-shift-leader")
    end = time.perf_counter()
    if done.state is not RunState.DONE or not done.response:
        sys.exit(f"osprey run {done.id} ended {done.state}, not done: {done.error}")
    return mid - start, end - mid


def check_osprey_flow(osprey: Osprey) -> None:
    """One untimed run, checked in depth: the plan, the approval, every step's record."""
    paused = osprey.run(QUERY, session="bench", user="bench-operator")
    planned = None if paused.plan is None else [step.capability for step in paused.plan.steps]
    if planned != EXPECTED_STEPS or paused.approval_id is None:
        sys.exit(f"osprey planned {planned} ({paused.state}), expected {EXPECTED_STEPS} "
                 f"waiting for approval: {paused.error}")
    done = osprey.approve(paused.approval_id, user="bench-shift-leader")
    records = osprey.steps(done.id)
    statuses = [record.status for record in records]
    if done.state is not RunState.DONE or statuses != [StepStatus.SUCCEEDED] * 3:
        sys.exit(f"osprey run {done.id} ended {done.state} with steps {statuses}: {done.error}")
    if records[1].result != scale(READING, FACTOR) or not done.response:
        sys.exit(f"osprey computed {records[1].result}, answering {done.response!r}")


# -- LangGraph ------------------------------------------------------------------------------


class FlowState(TypedDict, total=False):
    query: str
    reading: dict[str, Any]
    scaled: dict[str, Any]
    response: str


def lg_fetch(state: FlowState) -> FlowState:
    from langgraph.types import interrupt

    decision = interrupt({"plan": ["fetch", "scale", "respond"], "query": state["query"]})
    if decision != "approved":
        raise RuntimeError(f"plan not approved: {decision!r}")
    return {"reading": fetch()}


def lg_scale(state: FlowState) -> FlowState:
    return {"scaled": scale(state["reading"], FACTOR)}


def lg_respond(state: FlowState) -> FlowState:
    return {"response": json.dumps({"reading": state["reading"], "scaled": state["scaled"]})}


def have_langgraph() -> bool:
    try:
        for module in ("langgraph.graph", "langgraph.types", "langgraph.checkpoint.sqlite"):
            importlib.import_module(module)
    except ImportError:
        return False
    return True


@contextmanager
def langgraph_app(root: Path) -> Iterator[Any]:
    """The compiled three-node graph, checkpointing with ``SqliteSaver`` to a file."""
    import sqlite3

    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import END, START, StateGraph

    conn = sqlite3.connect(root / "langgraph.db", check_same_thread=False)
    try:
        conn.execute("PRAGMA synchronous=FULL")  # SQLite's default; osprey sets it explicitly
        builder = StateGraph(FlowState)
        builder.add_node("fetch", lg_fetch)
        builder.add_node("scale", lg_scale)
        builder.add_node("respond", lg_respond)
        builder.add_edge(START, "fetch")
        builder.add_edge("fetch", "scale")
        builder.add_edge("scale", "respond")
        builder.add_edge("respond", END)
        yield builder.compile(checkpointer=SqliteSaver(conn))
    finally:
        conn.close()


def langgraph_round_trip(app: Any, durability: str) -> tuple[float, float]:
    """invoke -> interrupt -> resume -> end on a new thread; seconds to pause and resume."""
    from langgraph.types import Command

    config = {"configurable": {"thread_id": uuid.uuid4().hex}}
    start = time.perf_counter()
    paused = app.invoke({"query": QUERY}, config, durability=durability)
    mid = time.perf_counter()
    if not paused.get("__interrupt__") or "reading" in paused:
        sys.exit(f"LangGraph did not stop at the approval interrupt: {paused}")
    done = app.invoke(Command(resume="approved"), config, durability=durability)
    end = time.perf_counter()
    if "__interrupt__" in done or not done.get("response"):
        sys.exit(f"LangGraph did not finish after the approval: {done}")
    return mid - start, end - mid


def check_langgraph_flow(app: Any) -> None:
    """One untimed run, checked in depth: paused on disk, then finished with the answer."""
    from langgraph.types import Command

    config = {"configurable": {"thread_id": uuid.uuid4().hex}}
    app.invoke({"query": QUERY}, config, durability="sync")
    waiting = app.get_state(config)
    if waiting.next != ("fetch",) or not waiting.interrupts:
        sys.exit(f"LangGraph is not waiting at the approval: next={waiting.next}")
    app.invoke(Command(resume="approved"), config, durability="sync")
    final = app.get_state(config)
    if final.next or final.values.get("scaled") != scale(READING, FACTOR):
        sys.exit(f"LangGraph did not finish with the scaled reading: {final.values}")
    stored = app.checkpointer.conn.execute(
        "SELECT count(*) FROM checkpoints WHERE thread_id=?",
        [config["configurable"]["thread_id"]]).fetchone()[0]
    if stored < 4:
        sys.exit(f"LangGraph stored only {stored} checkpoints for the run")


# -- measuring ------------------------------------------------------------------------------


@dataclass
class Flow:
    name: str
    round_trip: RoundTrip
    pauses: list[float] = field(default_factory=list)
    resumes: list[float] = field(default_factory=list)

    @property
    def totals(self) -> list[float]:
        return [pause + resume for pause, resume in zip(self.pauses, self.resumes, strict=True)]

    @property
    def median(self) -> float:
        return statistics.median(self.totals)

    @property
    def p90(self) -> float:
        return statistics.quantiles(self.totals, n=10, method="inclusive")[-1]

    def row(self) -> str:
        return (f"{self.name:38}{self.median * 1e3:9.2f}{self.p90 * 1e3:9.2f}"
                f"{statistics.median(self.pauses) * 1e3:10.2f}"
                f"{statistics.median(self.resumes) * 1e3:9.2f}")


def measure(flows: list[Flow], runs: int, warmup: int) -> None:
    """Warm every flow up, then time them in turn, one run each per round."""
    for flow in flows:
        for _ in range(warmup):
            flow.round_trip()
    for _ in range(runs):
        for flow in flows:
            pause, resume = flow.round_trip()
            flow.pauses.append(pause)
            flow.resumes.append(resume)


def profile_osprey(runs: int, top: int) -> None:
    """cProfile over ``runs`` osprey round trips: where its time goes."""
    with tempfile.TemporaryDirectory(prefix="osprey-bench-profile-") as tmp, \
            osprey_instance(Path(tmp)) as osprey:
        for _ in range(5):
            osprey_round_trip(osprey)
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(runs):
            osprey_round_trip(osprey)
        profiler.disable()
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(top)
        print(f"\nosprey profile, {runs} runs, top {top} by {order}:")
        print(out.getvalue().rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200, help="timed runs per flow")
    parser.add_argument("--warmup", type=int, default=20, help="untimed runs per flow first")
    parser.add_argument("--profile", action="store_true",
                        help="then print a cProfile of the osprey flow")
    args = parser.parse_args()
    if args.runs < 2 or args.warmup < 0:
        parser.error("--runs must be at least 2 and --warmup at least 0")

    baseline = have_langgraph()
    with tempfile.TemporaryDirectory(prefix="osprey-bench-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        (root / "osprey").mkdir()
        osprey = stack.enter_context(osprey_instance(root / "osprey"))
        check_osprey_flow(osprey)
        flows = [Flow("osprey", lambda: osprey_round_trip(osprey))]
        if baseline:
            (root / "langgraph").mkdir()
            app = stack.enter_context(langgraph_app(root / "langgraph"))
            check_langgraph_flow(app)
            flows += [
                Flow("LangGraph, durability=sync", lambda: langgraph_round_trip(app, "sync")),
                Flow("LangGraph, durability=async (default)",
                     lambda: langgraph_round_trip(app, "async")),
            ]
        measure(flows, args.runs, args.warmup)

    print(f"3-step run with 1 approval round trip, SQLite on disk (osprey: synced at the "
          f"pause and the end; LangGraph: every checkpoint synced): "
          f"{args.runs} timed runs per flow after {args.warmup} warm-up, interleaved; "
          f"Python {sys.version.split()[0]}")
    print(f"{'ms per run':38}{'median':>9}{'p90':>9}{'to pause':>10}{'resume':>9}")
    for flow in flows:
        print(flow.row())
    if baseline:
        ours, like_for_like, default = flows
        ratio = like_for_like.median / ours.median
        print(f"LangGraph / osprey, median: {ratio:.2f}x (sync), "
              f"{default.median / ours.median:.2f}x (async default); "
              f"p90: {like_for_like.p90 / ours.p90:.2f}x (sync)")
        print(f"target: osprey >= {TARGET_SPEEDUP:.0f}x faster than LangGraph (sync): "
              f"{'met' if ratio >= TARGET_SPEEDUP else 'MISSED'}")
    else:
        print("LangGraph is not installed here: `nox -s bench` installs it and prints the "
              f"baseline and the >= {TARGET_SPEEDUP:.0f}x target check")
    if args.profile:
        profile_osprey(min(args.runs, 100), 30)


if __name__ == "__main__":
    main()
