"""User memory in real runs: only the relevant memories reach the planner's context.

The built-in ``memory`` plugin's provider is gathered by the orchestrator before planning;
a recording planner shows exactly what was injected. Memory on files and in PostgreSQL.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.orchestration import RecordingPlanner
from support.postgres import MemoryEngine

from osprey_core.api import Osprey
from osprey_core.config import load_config
from osprey_core.plugin_host import load_plugins
from osprey_core.run_machine import RunState
from osprey_core.settings import MemorySettings

TOPICS = ("vacuum gauge", "RF cavity", "kicker timing", "septum magnet", "cryo plant",
          "undulator gap", "injector gun", "beam dump", "orbit feedback", "top-up")


@pytest.fixture
def osprey(tmp_path: Path, memory_engine: MemoryEngine) -> Osprey:
    host = load_plugins(environ={"OSPREY_STRICT_PLUGINS": "1"})
    path = tmp_path / "osprey.yml"
    path.write_text(json.dumps({"home": "home", "memory": {"top_k": 4},
                                "store": memory_engine.config()}), encoding="utf-8")
    return Osprey(host=host, config=load_config(host, path, environ={}),
                  planner_factory=RecordingPlanner())


@pytest.mark.exercises_hook("register_data_providers")
def test_only_the_top_k_relevant_memories_reach_the_planner(
        osprey: Osprey, memory_engine: MemoryEngine) -> None:
    store = memory_engine.open(MemorySettings())
    for index in range(496):
        topic = TOPICS[index % len(TOPICS)]
        store.add("ana", f"note {index}: the {topic} was checked during shift {index % 7}")
    relevant = [store.add("ana", text).id for text in (
        "my default BPM set is BPM01 to BPM04",
        "always plot BPM orbits in mm",
        "the BPM03 readback is noisy at low current",
        "compare BPM readings with the reference orbit from Monday")]
    store.add("bob", "my default BPM set is BPM09 to BPM12")  # another user's memory

    recording: RecordingPlanner = osprey.runtime.planner_factory  # type: ignore[assignment]
    run = osprey.run("what do you remember about my default BPM set", user="ana")
    assert run.state is RunState.DONE, run.error

    [request] = recording.requests
    [block] = [block for block in request.context if block.provider == "user_memory"]
    injected = [item["id"] for item in block.items]
    assert sorted(injected) == sorted(relevant)  # exactly the top 4 of 500, and only ana's
    assert "provider_context" in request.context_keys
    stored = run.context["provider_context"]
    assert json.dumps(stored).count("mem-") == 4
    assert "BPM09" not in json.dumps(stored)
    osprey.close()
