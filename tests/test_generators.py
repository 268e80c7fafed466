"""The ``llm`` and ``agentic`` code generators through the real ``openai`` client.

Every test talks HTTP to :class:`FakeOpenAIServer`; the generators' code extraction and
prompt building are tested through the same path as far as possible.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from support.sleeps import Sleeps

from osprey_core.analysis import analyze
from osprey_core.errors import ConfigError, OspreyError
from osprey_core.execution.generation import GenerationError, extract_code, feedback_prompt
from osprey_core.execution.llm_code import MAX_DRY_RUN_CHARS, TOOLS
from osprey_core.execution.models import ExecutionMode, ExecutionRequest
from osprey_core.hookspecs.code_generators import CodeGenerator, DryRun, GeneratorContext
from osprey_core.plugins.llm_generators import AgenticGenerator, LLMGenerator
from osprey_core.settings import ExecutionSettings, LLMSettings
from osprey_core.testing.openai_server import FakeOpenAIServer

RUNTIME_API = "read_channel(name) -> value   (the test's runtime API)"
CODE = 'values = read_channels(["BPM1:X", "BPM2:X"])\nresults["values"] = values\n'
REQUEST = ExecutionRequest(
    query="read the horizontal BPMs", objective="Read BPM1:X and BPM2:X",
    capability_hints=["channels: BPM1:X, BPM2:X"],
    expected_results={"values": "BPM readings by name"})


class Callbacks:
    """The service's callbacks for agentic generators, recording how they were called."""

    def __init__(self, channels: Sequence[str] = ("BPM1:X", "BPM2:X"),
                 dry_run: DryRun | Exception | None = None) -> None:
        self.channels = list(channels)
        self.dry_run_result = dry_run or DryRun(ok=True, exit_reason="ok", stdout="",
                                                stderr="", results={}, findings=[])
        self.patterns: list[str] = []
        self.dry_runs: list[str] = []

    async def list_channels(self, pattern: str) -> list[str]:
        self.patterns.append(pattern)
        return self.channels

    async def dry_run(self, code: str) -> DryRun:
        self.dry_runs.append(code)
        if isinstance(self.dry_run_result, Exception):
            raise self.dry_run_result
        return self.dry_run_result


def make_context(server: FakeOpenAIServer | None, callbacks: Callbacks | None = None, *,
                 turns: int = 8, **llm: Any) -> GeneratorContext:
    settings = LLMSettings(base_url=server.base_url if server else None, model="code-model",
                           api_key="sk-test", **llm)
    return GeneratorContext(
        llm=settings, execution=ExecutionSettings(agentic_max_turns=turns),
        list_channels=callbacks.list_channels if callbacks else None,
        dry_run=callbacks.dry_run if callbacks else None, runtime_api=RUNTIME_API)


def run(generator: CodeGenerator, request: ExecutionRequest = REQUEST,
        feedback: Sequence[str] = ()) -> str:
    return asyncio.run(asyncio.wait_for(generator.generate(request, list(feedback)), 30))


def fenced(code: str, prose: str = "Here is the script:") -> str:
    return f"{prose}\n```python\n{code}```\nIt stores the readings in `results`."


def tool_call(name: str, arguments: Any) -> dict[str, Any]:
    return {"function": {"name": name, "arguments": arguments}}


def tool_messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    return [message for message in request["messages"] if message["role"] == "tool"]


# -- llm ------------------------------------------------------------------------------------


def test_llm_returns_the_fenced_code_and_sends_rules_task_and_key(
    server: FakeOpenAIServer,
) -> None:
    server.script(fenced(CODE))
    code = run(LLMGenerator(make_context(server)))
    assert code == CODE
    assert server.calls == 1
    assert server.headers[0]["authorization"] == "Bearer sk-test"
    request = server.requests[0]
    assert request["model"] == "code-model"
    assert "tools" not in request
    system, user = request["messages"]
    assert system["role"] == "system" and user["role"] == "user"
    assert system["content"].endswith(f"Runtime API:\n{RUNTIME_API}")
    assert "READ-ONLY: never call a write function" in system["content"]
    assert "Put every answer in the dict `results`" in system["content"]
    assert "matplotlib" in system["content"] and "No subprocesses" in system["content"]
    assert user["content"] == (
        "Request: read the horizontal BPMs\n\nObjective of this step: Read BPM1:X and BPM2:X"
        "\n\nPut these keys in `results`:\n- values: BPM readings by name\n\n"
        "Hints:\n- channels: BPM1:X, BPM2:X\n\nExecution mode: read.")


def test_write_mode_is_stated_in_the_prompt(server: FakeOpenAIServer) -> None:
    server.script(fenced('write_channel("HCM1:SP", 1.0)\n'))
    request = ExecutionRequest(query="set HCM1:SP to 1", mode=ExecutionMode.WRITE)
    assert run(LLMGenerator(make_context(server)), request) == 'write_channel("HCM1:SP", 1.0)\n'
    system = server.requests[0]["messages"][0]["content"]
    assert "This run may WRITE" in system and "READ-ONLY" not in system


def test_feedback_of_a_failed_attempt_reaches_the_next_prompt(
    server: FakeOpenAIServer,
) -> None:
    fixed = CODE.replace("BPM2:X", "BPM3:X")
    server.script(fenced(CODE), fenced(fixed))
    generator = LLMGenerator(make_context(server))
    assert run(generator) == CODE
    problem = ("Attempt 1 failed (error).\nChannelError: could not read BPM2:X: no such "
               "channel\nanalyzer, line 1: reads read_channels")
    assert run(generator, feedback=[problem]) == fixed
    first, retry = (request["messages"] for request in server.requests)
    assert retry[:2] == first
    assert retry[2] == {"role": "assistant", "content": f"```python\n{CODE.rstrip()}\n```"}
    assert retry[3]["role"] == "user"
    assert retry[3]["content"] == feedback_prompt([problem])
    assert retry[3]["content"].startswith("Your script did not succeed. Fix these problems")
    assert retry[3]["content"].endswith(problem)


def test_feedback_without_earlier_code_still_reaches_the_model(
    server: FakeOpenAIServer,
) -> None:
    server.script(fenced(CODE))
    run(LLMGenerator(make_context(server)), feedback=["generation failed: no code"])
    messages = server.requests[0]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "user"]
    assert messages[2]["content"].endswith("generation failed: no code")


@pytest.mark.parametrize("reply, problem", [
    ("", "the model's reply was empty"),
    ("   \n", "the model's reply was empty"),
    ({"content": None}, "the model's reply was empty"),
    ("The BPMs look fine to me, nothing to compute.",
     "the model's reply contains no Python code: 'The BPMs look fine to me"),
    ('{"code": "values = read_channels([\\"BPM1:X\\"]', "contains no Python code: '{\"code\""),
    ('{"code": "print(1)"}', "contains no Python code"),
    ("I'm sorry, but I can't help with writing control-system code.",
     "the model refused: \"I'm sorry, but I can't help"),
    ({"content": None, "refusal": "I cannot assist with that."},
     "the model refused: 'I cannot assist with that.'"),
    ("Run this:\n```bash\ncaput HCM1:SP 5\n```",
     "no non-empty Python code block (found: bash)"),
    ("```python\n\n```", "no non-empty Python code block (found: python)"),
])
def test_malformed_replies_raise_a_clear_error_without_retrying(
    server: FakeOpenAIServer, reply: Any, problem: str
) -> None:
    server.script(reply)
    with pytest.raises(GenerationError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        run(LLMGenerator(make_context(server)))
    assert server.calls == 1


def test_long_prose_is_quoted_short(server: FakeOpenAIServer) -> None:
    server.script("Well, " + "the beam is stable and " * 100)
    with pytest.raises(GenerationError) as caught:
        run(LLMGenerator(make_context(server)))
    assert len(str(caught.value)) < 250
    assert str(caught.value).endswith("...'")


def test_server_errors_are_retried_with_backoff(server: FakeOpenAIServer) -> None:
    server.script(HTTPStatus.INTERNAL_SERVER_ERROR, HTTPStatus.TOO_MANY_REQUESTS, fenced(CODE))
    sleeps = Sleeps()
    assert run(LLMGenerator(make_context(server), sleep=sleeps)) == CODE
    assert server.calls == 3 and sleeps.seconds == [0.5, 1.0]
    assert server.requests[0] == server.requests[2]


def test_server_errors_exhaust_max_attempts(server: FakeOpenAIServer) -> None:
    sleeps = Sleeps()
    with pytest.raises(GenerationError, match=r"no answer from model 'code-model' at http://"
                       r"127\.0\.0\.1:\d+/v1 after 2 attempts; last error: InternalServerError"):
        run(LLMGenerator(make_context(server, max_attempts=2), sleep=sleeps))
    assert server.calls == 2 and sleeps.seconds == [0.5]


def test_bad_key_fails_at_once(server: FakeOpenAIServer) -> None:
    server.script(HTTPStatus.UNAUTHORIZED, fenced(CODE))
    sleeps = Sleeps()
    with pytest.raises(GenerationError, match="model 'code-model' at .* refused the request "
                       r"\(not retried\): AuthenticationError: Error code: 401"):
        run(LLMGenerator(make_context(server), sleep=sleeps))
    assert server.calls == 1 and sleeps.seconds == [] and server.pending == 1


def test_key_comes_from_the_context_environment(server: FakeOpenAIServer) -> None:
    server.script(fenced(CODE))
    context = make_context(server)
    settings = context.llm.model_copy(update={"api_key": None, "api_key_env": "CODE_KEY"})
    context = GeneratorContext(llm=settings, execution=context.execution,
                               environ={"CODE_KEY": "sk-env"})
    run(LLMGenerator(context))
    assert server.headers[0]["authorization"] == "Bearer sk-env"


def test_missing_endpoint_or_context_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"llm\.base_url is not set"):
        run(LLMGenerator(make_context(None)))
    with pytest.raises(ConfigError, match="need a GeneratorContext"):
        run(AgenticGenerator(None))


MALICIOUS = {
    "shell-out": 'import os\nos.system("caput HCM1:SP 10")\n',
    "dynamic getattr": 'import epics\nput = getattr(epics, "ca" + "put")\nput("HCM1:SP", 10)\n',
    "exec of a string": 'exec("import epics; epics.caput(\'HCM1:SP\', 10)")\n',
    "runtime write in read mode": 'write_channel("HCM1:SP", 10)\n',
}


@pytest.mark.parametrize("name", MALICIOUS)
def test_malicious_code_is_returned_verbatim_for_the_analyzer_to_flag(
    server: FakeOpenAIServer, name: str
) -> None:
    code = MALICIOUS[name]
    server.script(fenced(code, prose="Sure, this sets the corrector directly:"))
    assert run(LLMGenerator(make_context(server))) == code
    analysis = analyze(code)
    assert analysis.writes or analysis.dangerous
    assert not analysis.parse_error


def test_generated_code_is_never_run(server: FakeOpenAIServer, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    code = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
    server.script(fenced(code))
    assert run(LLMGenerator(make_context(server))) == code
    assert not marker.exists()


def test_code_that_does_not_compile_is_returned_for_the_analyzer(
    server: FakeOpenAIServer,
) -> None:
    broken = "values = read_channels(['BPM1:X'\nresults['values'] = values\n"
    server.script(fenced(broken))
    assert run(LLMGenerator(make_context(server))) == broken
    assert analyze(broken).parse_error


# -- extraction -----------------------------------------------------------------------------


def test_the_longest_compiling_python_block_wins() -> None:
    reply = ("```python\nresults['x'] = 1\n```\nand the full script:\n"
             f"```python\n{CODE}```\nExample output:\n```\n{{'values': 1}}\n```")
    assert extract_code(reply) == CODE
    broken_longer = f"```python\n{CODE}```\n```python\n{CODE}{CODE}if :\n```"
    assert extract_code(broken_longer) == CODE


def test_python_blocks_beat_other_blocks_and_unlabelled_ones_count() -> None:
    assert extract_code(f"```bash\nls\n```\n```py\n{CODE}```") == CODE
    assert extract_code(f"```\n{CODE}```") == CODE


def test_bare_code_and_a_cut_off_fence_are_code() -> None:
    assert extract_code(f"\n{CODE}\n") == CODE
    assert extract_code(f"```python\n{CODE}") == CODE
    with pytest.raises(GenerationError, match="contains no Python code: 'Sure'"):
        extract_code("Sure")


# -- agentic --------------------------------------------------------------------------------


def test_agentic_conversation_lists_dry_runs_and_submits(server: FakeOpenAIServer) -> None:
    draft = 'results["values"] = read_channels(["BPM1:X", "BPM9:X"])\n'
    failed = DryRun(ok=False, exit_reason="error", stdout="",
                    stderr="ChannelError: could not read BPM9:X: no such channel",
                    results={"partial": [1, 2]},
                    findings=[{"category": "control_read", "line": 1, "reason": "reads"}])
    callbacks = Callbacks(dry_run=failed)
    server.script(
        {"content": "Let me look up the BPM names.",
         "tool_calls": [tool_call("list_channels", {"pattern": "BPM*:X"})]},
        {"tool_calls": [tool_call("dry_run", {"code": draft})]},
        {"tool_calls": [tool_call("submit", {"code": CODE})]},
    )
    code = run(AgenticGenerator(make_context(server, callbacks)))
    assert code == CODE
    assert callbacks.patterns == ["BPM*:X"] and callbacks.dry_runs == [draft]
    assert server.calls == 3
    names = [tool["function"]["name"] for tool in TOOLS]
    assert names == ["list_channels", "runtime_api", "dry_run", "submit"]
    for request in server.requests:
        assert request["tools"] == TOOLS
    second, third = server.requests[1]["messages"], server.requests[2]["messages"]
    assert second[2]["role"] == "assistant"
    assert second[2]["content"] == "Let me look up the BPM names."
    assert second[2]["tool_calls"][0]["function"] == {
        "name": "list_channels", "arguments": '{"pattern": "BPM*:X"}'}
    assert second[3] == {"role": "tool", "tool_call_id": "call_1", "content": json.dumps(
        {"count": 2, "channels": ["BPM1:X", "BPM2:X"]})}
    report = json.loads(third[-1]["content"])
    assert third[-1]["role"] == "tool"
    assert report == {"ok": False, "exit_reason": "error", "stdout": "",
                      "stderr": failed.stderr, "results": {"partial": [1, 2]},
                      "findings": failed.findings}
    assert "call submit with the complete final script" in second[0]["content"]


def test_malformed_tool_calls_get_error_messages_and_the_loop_goes_on(
    server: FakeOpenAIServer,
) -> None:
    callbacks = Callbacks()
    server.script(
        {"tool_calls": [tool_call("dry_run", '{"code": "print(1)"')]},
        {"tool_calls": [tool_call("rm_rf", {"path": "/"})]},
        {"tool_calls": [tool_call("list_channels", "[1, 2]"),
                        tool_call("dry_run", {"code": 42})]},
        {"tool_calls": [tool_call("submit", {"code": "def broken(:\n"})]},
        {"tool_calls": [tool_call("submit", {"code": "   "})]},
        {"tool_calls": [tool_call("submit", {"code": CODE})]},
    )
    assert run(AgenticGenerator(make_context(server, callbacks))) == CODE
    assert callbacks.dry_runs == [] and callbacks.patterns == []
    errors = [json.loads(message["content"])["error"]
              for message in tool_messages(server.requests[-1])]
    assert errors[0].startswith("the arguments of 'dry_run' are not JSON (")
    assert errors[1] == ("unknown tool 'rm_rf'; the tools are: list_channels, runtime_api, "
                         "dry_run, submit")
    assert errors[2] == "the arguments of 'list_channels' must be a JSON object"
    assert errors[3] == "argument 'code' must be a string"
    assert errors[4].startswith("the script does not compile: SyntaxError at line 1")
    assert errors[5] == "argument 'code' is empty"


def test_turn_limit_ends_with_a_generation_error(server: FakeOpenAIServer) -> None:
    server.default_reply = {"tool_calls": [tool_call("runtime_api", {})]}
    with pytest.raises(GenerationError, match=r"did not submit code within 3 turns \(execution"
                       r"\.agentic_max_turns\); last: 'runtime_api -> "):
        run(AgenticGenerator(make_context(server, Callbacks(), turns=3)))
    assert server.calls == 3
    answer = json.loads(tool_messages(server.requests[-1])[-1]["content"])
    assert answer == {"runtime_api": RUNTIME_API}


def test_a_plain_reply_with_code_is_the_submission(server: FakeOpenAIServer) -> None:
    server.script("Let me think about which channels to use.", fenced(CODE))
    assert run(AgenticGenerator(make_context(server, Callbacks()))) == CODE
    nudge = server.requests[1]["messages"][-1]
    assert nudge["role"] == "user" and nudge["content"].startswith("No script found.")


def test_a_plain_refusal_ends_at_once(server: FakeOpenAIServer) -> None:
    server.script("I'm sorry, I cannot write code that touches the machine.", fenced(CODE))
    with pytest.raises(GenerationError, match="the model refused"):
        run(AgenticGenerator(make_context(server, Callbacks())))
    assert server.calls == 1


def test_missing_or_failing_callbacks_are_reported_to_the_model(
    server: FakeOpenAIServer,
) -> None:
    server.script(
        {"tool_calls": [tool_call("list_channels", {"pattern": "*"}),
                        tool_call("dry_run", {"code": CODE})]},
        {"tool_calls": [tool_call("submit", {"code": CODE})]},
    )
    assert run(AgenticGenerator(make_context(server))) == CODE
    errors = [json.loads(m["content"])["error"] for m in tool_messages(server.requests[1])]
    assert errors == ["list_channels is not available here", "dry_run is not available here"]

    failing = Callbacks(dry_run=OspreyError("the sandbox interpreter is missing"))
    server.script({"tool_calls": [tool_call("dry_run", {"code": CODE}),
                                  tool_call("submit", {"code": CODE})]})
    assert run(AgenticGenerator(make_context(server, failing))) == CODE
    assert failing.dry_runs == [CODE]


def test_dry_run_output_is_trimmed_for_the_model(server: FakeOpenAIServer) -> None:
    flood = "x" * 50_000
    callbacks = Callbacks(dry_run=DryRun(ok=True, exit_reason="ok", stdout=flood, stderr="",
                                         results={"big": list(range(10_000))},
                                         findings=[{"reason": str(n)} for n in range(100)]))
    server.script({"tool_calls": [tool_call("dry_run", {"code": CODE})]},
                  {"tool_calls": [tool_call("submit", {"code": CODE})]})
    run(AgenticGenerator(make_context(server, callbacks)))
    report = json.loads(tool_messages(server.requests[1])[0]["content"])
    assert len(report["stdout"]) <= MAX_DRY_RUN_CHARS
    assert "characters cut" in report["stdout"]
    assert isinstance(report["results"], str) and len(report["results"]) <= MAX_DRY_RUN_CHARS
    assert len(report["findings"]) == 20


def test_agentic_retries_transport_errors_and_sees_feedback(server: FakeOpenAIServer) -> None:
    server.script(HTTPStatus.BAD_GATEWAY, {"tool_calls": [tool_call("submit", {"code": CODE})]})
    sleeps = Sleeps()
    code = run(AgenticGenerator(make_context(server, Callbacks()), sleep=sleeps),
               feedback=["Attempt 1 failed (timeout)."])
    assert code == CODE and sleeps.seconds == [0.5]
    assert server.requests[1]["messages"][-1]["content"].endswith("Attempt 1 failed (timeout).")


@pytest.mark.parametrize("name", MALICIOUS)
def test_agentic_submits_malicious_code_verbatim(server: FakeOpenAIServer, name: str) -> None:
    server.script({"tool_calls": [tool_call("submit", {"code": MALICIOUS[name]})]})
    callbacks = Callbacks()
    assert run(AgenticGenerator(make_context(server, callbacks))) == MALICIOUS[name]
    assert callbacks.dry_runs == []
