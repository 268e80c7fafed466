"""The LLM planner through the real ``openai`` client against a local fake endpoint."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from http import HTTPStatus
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr
from support.sleeps import Sleeps

from osprey_core.errors import ConfigError
from osprey_core.hookspecs.capabilities import Capability
from osprey_core.models import Plan
from osprey_core.planning import (
    LLMPlanner,
    OfflinePlanner,
    PlanningError,
    PlanRequest,
    make_planner,
)
from osprey_core.plugins.core_capabilities import Clarify, Respond
from osprey_core.registry import Registry
from osprey_core.settings import LLMSettings
from osprey_core.testing.openai_server import FakeOpenAIServer


class ReadParameters(BaseModel):
    channels: list[str]


class ReadChannels(Capability):
    name = "read_channels"
    description = "Read the current values of control system channels."
    provides = ("channel_values",)
    parameters = ReadParameters

    async def execute(self, step: Any) -> Any:
        return {}


class LogbookSearch(Capability):
    name = "logbook_search"
    description = "Search the electronic logbook."

    async def execute(self, step: Any) -> Any:
        return []


VALID = json.dumps({
    "reasoning": "Read the current, then answer.",
    "steps": [{"capability": "read_channels", "parameters": {"channels": ["SR:CURRENT"]},
               "output": "current"},
              {"capability": "respond", "inputs": ["current"], "output": "answer"}],
})


@pytest.fixture
def capabilities() -> Registry[Capability]:
    found: Registry[Capability] = Registry("capability", Capability, "instance")
    for capability in (ReadChannels(), LogbookSearch(), Respond(), Clarify()):
        found.add(capability, plugin="tests")
    return found


def planner(base_url: str, capabilities: Registry[Capability], sleeps: Sleeps,
            **settings: Any) -> LLMPlanner:
    llm = LLMSettings(base_url=base_url, model="plan-model", api_key="sk-test",
                      **{"max_attempts": 3, **settings})
    return LLMPlanner(llm, capabilities, environ={}, sleep=sleeps)


def run_plan(planner: LLMPlanner, capabilities: Registry[Capability],
             query: str = "what is the beam current?") -> Plan:
    request = PlanRequest(query=query, capabilities=list(capabilities),
                          context_keys=["shift"], user="op", session="s1")
    return asyncio.run(asyncio.wait_for(planner.plan(request), timeout=30))


def test_valid_plan_on_the_first_attempt(
    server: FakeOpenAIServer, capabilities: Registry[Capability]
) -> None:
    server.script(VALID)
    sleeps = Sleeps()
    plan = run_plan(planner(server.base_url, capabilities, sleeps), capabilities)
    assert [s.capability for s in plan.steps] == ["read_channels", "respond"]
    assert plan.steps[1].parameters == {"message": ""}
    assert server.calls == 1 and sleeps.seconds == []
    request = server.requests[0]
    assert request["model"] == "plan-model"
    assert request["response_format"] == {"type": "json_object"}
    system, user = request["messages"]
    assert user == {"role": "user", "content": "what is the beam current?"}
    assert system["role"] == "system"
    assert "Request context keys: shift" in system["content"]
    listed = json.loads(system["content"].split("Capabilities:\n", 1)[1])
    assert [item["name"] for item in listed] == [
        "clarify", "logbook_search", "read_channels", "respond"]
    read = listed[2]
    assert read["parameters"]["required"] == ["channels"]
    assert (read["provides"], read["requires"], read["terminal"]) == (["channel_values"], [],
                                                                      False)
    assert listed[3]["terminal"] is True


def test_fenced_json_is_accepted(
    server: FakeOpenAIServer, capabilities: Registry[Capability]
) -> None:
    server.script(f"Here is the plan:\n```json\n{VALID}\n```\n")
    plan = run_plan(planner(server.base_url, capabilities, Sleeps()), capabilities)
    assert plan.steps[0].parameters == {"channels": ["SR:CURRENT"]}
    assert server.calls == 1


def test_malformed_json_is_fed_back_then_fixed(
    server: FakeOpenAIServer, capabilities: Registry[Capability]
) -> None:
    server.script('{"steps": [', VALID)
    sleeps = Sleeps()
    plan = run_plan(planner(server.base_url, capabilities, sleeps), capabilities)
    assert plan.steps[0].capability == "read_channels"
    assert server.calls == 2 and sleeps.seconds == [0.5]
    retry = server.requests[1]["messages"]
    assert retry[:2] == server.requests[0]["messages"]
    assert retry[2] == {"role": "assistant", "content": '{"steps": ['}
    assert retry[3]["role"] == "user"
    assert retry[3]["content"].startswith("the reply is not valid JSON: Expecting value")


def test_reply_without_content_is_fed_back(
    server: FakeOpenAIServer, capabilities: Registry[Capability]
) -> None:
    server.script({"tool_calls": [{"function": {"name": "plan", "arguments": "{}"}}]}, VALID)
    run_plan(planner(server.base_url, capabilities, Sleeps()), capabilities)
    assert server.calls == 2
    assert server.requests[1]["messages"][-1]["content"].startswith(
        "the reply was empty; expected one JSON object")


def test_malformed_forever_stops_after_max_attempts(
    server: FakeOpenAIServer, capabilities: Registry[Capability]
) -> None:
    server.default_reply = "I cannot do JSON today."
    sleeps = Sleeps()
    started = time.monotonic()
    with pytest.raises(PlanningError) as caught:
        run_plan(planner(server.base_url, capabilities, sleeps, max_attempts=4), capabilities)
    assert time.monotonic() - started < 10
    assert server.calls == 4
    assert sleeps.seconds == [0.5, 1.0, 2.0]
    error = caught.value
    assert error.attempts == 4
    assert error.last_error.startswith("the reply is not valid JSON")
    assert str(error).startswith(
        f"no valid plan from model 'plan-model' at {server.base_url} after 4 attempts; "
        "last error: the reply is not valid JSON")
    # Each retry carries the whole conversation so far, and nothing more.
    assert [len(request["messages"]) for request in server.requests] == [2, 4, 6, 8]


def test_invalid_plan_is_fed_back(
    server: FakeOpenAIServer, capabilities: Registry[Capability]
) -> None:
    wrong = VALID.replace('"read_channels"', '"read_channel"')
    server.script(wrong, VALID)
    plan = run_plan(planner(server.base_url, capabilities, Sleeps()), capabilities)
    assert plan.steps[0].capability == "read_channels"
    feedback = server.requests[1]["messages"][-1]["content"]
    assert feedback.startswith("Your plan was rejected:\n- step 1 (capability 'read_channel'): "
                               "no capability named 'read_channel' is registered (did you "
                               "mean 'read_channels'?)")
    assert feedback.endswith("Reply with the corrected plan as one JSON object.")


def test_server_errors_count_as_attempts(
    server: FakeOpenAIServer, capabilities: Registry[Capability]
) -> None:
    server.script(HTTPStatus.INTERNAL_SERVER_ERROR, HTTPStatus.SERVICE_UNAVAILABLE, VALID)
    sleeps = Sleeps()
    plan = run_plan(planner(server.base_url, capabilities, sleeps), capabilities)
    assert plan.steps[0].capability == "read_channels"
    assert server.calls == 3 and sleeps.seconds == [0.5, 1.0]
    # Nothing came back from the model, so there is nothing to feed back.
    assert len(server.requests[2]["messages"]) == 2


def test_unscripted_server_errors_exhaust_the_attempts(
    server: FakeOpenAIServer, capabilities: Registry[Capability]
) -> None:
    with pytest.raises(PlanningError, match="after 3 attempts; last error: InternalServerError: "
                                            "Error code: 500 - FakeOpenAIServer: no reply "
                                            "scripted for this call"):
        run_plan(planner(server.base_url, capabilities, Sleeps()), capabilities)
    assert server.calls == 3


def test_client_errors_fail_at_once(
    server: FakeOpenAIServer, capabilities: Registry[Capability]
) -> None:
    server.script(HTTPStatus.UNAUTHORIZED, VALID)
    sleeps = Sleeps()
    with pytest.raises(PlanningError, match="after 1 attempt; last error: AuthenticationError: "
                                            "Error code: 401") as caught:
        run_plan(planner(server.base_url, capabilities, sleeps), capabilities)
    assert caught.value.attempts == 1
    assert server.calls == 1 and sleeps.seconds == []


def test_rate_limit_is_retried(
    server: FakeOpenAIServer, capabilities: Registry[Capability]
) -> None:
    server.script(HTTPStatus.TOO_MANY_REQUESTS, VALID)
    run_plan(planner(server.base_url, capabilities, Sleeps()), capabilities)
    assert server.calls == 2


def test_unreachable_endpoint_counts_attempts(capabilities: Registry[Capability]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sleeps = Sleeps()
    with pytest.raises(PlanningError, match="after 2 attempts; last error: "
                                            "APIConnectionError: Connection error"):
        run_plan(planner(f"http://127.0.0.1:{port}/v1", capabilities, sleeps,
                         max_attempts=2, backoff_seconds=0.1), capabilities)
    assert sleeps.seconds == [0.1]


def test_slow_reply_times_out_and_is_retried(
    server: FakeOpenAIServer, capabilities: Registry[Capability]
) -> None:
    def slow(request: dict[str, Any]) -> str:
        time.sleep(1.0)
        return VALID

    server.script(slow, VALID)
    plan = run_plan(planner(server.base_url, capabilities, Sleeps(), timeout_seconds=0.2),
                    capabilities)
    assert plan.steps[0].capability == "read_channels"
    assert server.calls == 2


@pytest.mark.parametrize("smuggled, problem", [
    ({"approval": {"mode": "disabled"}},
     "plan: unexpected field 'approval' (allowed: steps, reasoning)"),
    ({"steps": [{"capability": "logbook_search", "parameters": {"approval": "disabled"},
                 "output": "entries"}]},
     "step 1 (capability 'logbook_search'): takes no parameters, got 'approval'"),
    ({"steps": [{"capability": "read_channels", "output": "current",
                 "parameters": {"channels": ["SR:CURRENT"], "skip_approval": True}}]},
     "step 1 (capability 'read_channels'): unexpected parameter 'skip_approval' "
     "(accepted: channels)"),
])
def test_smuggled_settings_are_rejected(
    server: FakeOpenAIServer,
    capabilities: Registry[Capability],
    smuggled: dict[str, Any],
    problem: str,
) -> None:
    server.default_reply = json.dumps({**json.loads(VALID), **smuggled})
    with pytest.raises(PlanningError) as caught:
        run_plan(planner(server.base_url, capabilities, Sleeps()), capabilities)
    assert caught.value.last_error.endswith(f"- {problem}")
    assert server.calls == 3


def test_api_key_and_model_reach_the_endpoint(
    server: FakeOpenAIServer, capabilities: Registry[Capability]
) -> None:
    server.script(VALID, VALID)
    from_env = LLMSettings(base_url=server.base_url, api_key_env="PLAN_KEY")
    run_plan(LLMPlanner(from_env, capabilities, environ={"PLAN_KEY": "sk-env"}), capabilities)
    explicit = from_env.model_copy(update={"api_key": SecretStr("sk-file"), "model": "m2"})
    run_plan(LLMPlanner(explicit, capabilities, environ={"PLAN_KEY": "sk-env"}), capabilities)
    assert [h["authorization"] for h in server.headers] == ["Bearer sk-env", "Bearer sk-file"]
    assert [r["model"] for r in server.requests] == ["gpt-4o-mini", "m2"]


def test_make_planner_picks_by_base_url(capabilities: Registry[Capability]) -> None:
    assert isinstance(make_planner(LLMSettings(), capabilities), OfflinePlanner)
    llm = LLMSettings(base_url="http://127.0.0.1:9/v1")
    assert isinstance(make_planner(llm, capabilities), LLMPlanner)
    with pytest.raises(ConfigError, match=r"llm\.base_url is not set"):
        LLMPlanner(LLMSettings(), capabilities)


# -- the fake server itself ------------------------------------------------------------


def test_fake_server_speaks_the_api_to_the_real_client(server: FakeOpenAIServer) -> None:
    import openai

    server.script(
        {"tool_calls": [{"function": {"name": "read", "arguments": {"channel": "SR:CURRENT"}}}]},
        lambda request: f"you said {request['messages'][-1]['content']}",
    )

    async def talk() -> list[Any]:
        async with openai.AsyncOpenAI(base_url=server.base_url, api_key="x",
                                      max_retries=0) as client:
            results: list[Any] = [await client.models.list()]
            for _ in range(2):
                results.append(await client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "hello"}]))
            return results

    models, tool_reply, text_reply = asyncio.run(talk())
    assert [model.id for model in models.data] == ["fake-model"]
    call = tool_reply.choices[0].message.tool_calls[0]
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == (
        "call_1", "read", {"channel": "SR:CURRENT"})
    assert tool_reply.choices[0].finish_reason == "tool_calls"
    assert text_reply.choices[0].message.content == "you said hello"
    assert text_reply.usage.total_tokens == 1 + 3
    assert server.calls == 2 and server.pending == 0


def test_fake_server_is_reachable_from_another_process(server: FakeOpenAIServer) -> None:
    server.script("from afar")
    probe = (
        "import json, sys, urllib.request\n"
        "body = json.dumps({'model': 'm', 'messages': []}).encode()\n"
        "request = urllib.request.Request(sys.argv[1] + '/chat/completions', body,\n"
        "                                 {'Content-Type': 'application/json'})\n"
        "print(json.load(urllib.request.urlopen(request))['choices'][0]['message']['content'])"
    )
    result = subprocess.run([sys.executable, "-c", probe, server.base_url],
                            capture_output=True, text=True, timeout=30, check=True)
    assert result.stdout.strip() == "from afar"
    assert server.requests == [{"model": "m", "messages": []}]


def test_fake_server_stops_and_frees_its_port() -> None:
    with FakeOpenAIServer() as running:
        port = int(running.base_url.rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(RuntimeError, match="not running"):
        _ = running.base_url
    with socket.socket() as probe, pytest.raises(OSError):
        probe.connect(("127.0.0.1", port))
