"""What every code generator shares: the prompt, and getting code out of a model's reply.

Generated code is untrusted whatever its source. Nothing here sanitizes, rewrites or runs
it: code is returned exactly as the model wrote it, because the AST analyzer, the approval
engine and the sandbox are what stand between it and the machine, and they must see what
the model really wrote.

A reply whose code does not compile is still returned as code. The service's analyzer fails
closed on unparsable code (a critical ``parse_error`` finding) and the loop feeds the
syntax error back to the generator, so there is one path for every kind of broken code.
``compile()`` is only used here to tell code from prose and to choose between blocks.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from osprey_core.errors import OspreyError
from osprey_core.execution.models import ExecutionMode

if TYPE_CHECKING:
    from osprey_core.execution.models import ExecutionRequest

#: Longest piece of feedback (one earlier attempt's errors and findings) sent to a model.
MAX_FEEDBACK_CHARS = 4000
#: Longest excerpt of a reply quoted in an error message.
EXCERPT_CHARS = 160

_FENCE = re.compile(r"```[ \t]*(?P<language>[\w+.-]*)[^\n]*\n(?P<body>.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_LABELS = frozenset({"python", "python3", "py", "py3", "ipython"})
_REFUSAL = re.compile(r"\W*(?:sorry|unfortunately|as an ai|i(?:'m| am) (?:sorry|unable|not able)"
                      r"|i (?:can't|cannot|can not|won't|will not))\b", re.IGNORECASE)


class GenerationError(OspreyError):
    """A generator could not produce code; the message says why and quotes the model."""


# -- prompts ------------------------------------------------------------------------------


def default_runtime_api() -> str:
    """The sandbox runtime's own description, for contexts that bring none."""
    from osprey_core.sandbox.runtime import RUNTIME_API_DOC

    return RUNTIME_API_DOC


def system_prompt(request: ExecutionRequest, runtime_api: str = "") -> str:
    """The rules of the sandbox, the execution mode and the runtime API."""
    if request.mode is ExecutionMode.WRITE:
        mode = ("- This run may WRITE: write only what the request asks for, with the runtime "
                "API's write functions. A human approves the exact code first, and channel "
                "limits apply.")
    else:
        mode = ("- This run is READ-ONLY: never call a write function; any write is blocked "
                "and fails the run.")
    return f"""\
You write one Python script that runs in an isolated sandbox to answer a particle \
accelerator operator's request.

Rules:
- Reach the control system only through the runtime API below. No other control-system \
or network clients (pyepics, caproto, p4p, tango, requests, sockets).
- Put every answer in the dict `results` (already defined; JSON-serializable values: \
numbers, strings, lists, dicts). It is saved automatically.
- Plot with matplotlib (`import matplotlib.pyplot as plt`); open figures are saved \
automatically, do not call plt.show() or savefig.
- numpy is available. No subprocesses or shell commands, no exec/eval, no dynamic imports, \
no files outside the current directory.
{mode}
- Keep it short and plain; print a one-line summary at the end.

Reply with the complete script in a single ```python block.

Runtime API:
{runtime_api.strip() or default_runtime_api()}"""


def request_prompt(request: ExecutionRequest) -> str:
    """The task: query, objective, the keys ``results`` should have, the planner's hints."""
    parts = [f"Request: {request.query}"]
    if request.objective and request.objective != request.query:
        parts.append(f"Objective of this step: {request.objective}")
    if request.expected_results:
        keys = "\n".join(f"- {key}: {meaning}" for key, meaning in request.expected_results.items())
        parts.append(f"Put these keys in `results`:\n{keys}")
    if request.capability_hints:
        hints = "\n".join(f"- {hint}" for hint in request.capability_hints)
        parts.append(f"Hints:\n{hints}")
    parts.append(f"Execution mode: {request.mode}.")
    return "\n\n".join(parts)


def feedback_prompt(feedback: Sequence[str]) -> str:
    """Earlier attempts' errors and findings, framed as problems the next script must fix."""
    attempts = "\n\n".join(trim(text, MAX_FEEDBACK_CHARS) for text in feedback)
    return ("Your script did not succeed. Fix these problems and reply with the complete "
            f"corrected script in a single ```python block.\n\n{attempts}")


def conversation(
    request: ExecutionRequest,
    runtime_api: str,
    feedback: Sequence[str],
    previous_code: str | None = None,
    *,
    system_extra: str = "",
) -> list[dict[str, str]]:
    """Chat messages for one generation: rules, task, and (on retries) what went wrong."""
    system = system_prompt(request, runtime_api)
    messages = [{"role": "system", "content": f"{system}\n\n{system_extra}".strip()},
                {"role": "user", "content": request_prompt(request)}]
    if feedback:
        if previous_code is not None:
            previous = f"```python\n{previous_code.rstrip()}\n```"
            messages.append({"role": "assistant", "content": previous})
        messages.append({"role": "user", "content": feedback_prompt(feedback)})
    return messages


# -- replies ------------------------------------------------------------------------------


def trim(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, keeping both ends (a traceback's end
    matters most)."""
    if len(text) <= limit:
        return text
    room = limit - len(f"\n[... {len(text)} characters cut ...]\n")
    head, tail = room // 2, room - room // 2
    cut = len(text) - head - tail
    return f"{text[:head]}\n[... {cut} characters cut ...]\n{text[len(text) - tail:]}"


def excerpt(text: str) -> str:
    """A short one-line quotation of a reply, for error messages."""
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= EXCERPT_CHARS else flat[:EXCERPT_CHARS - 3] + "...")


def looks_like_refusal(text: str) -> bool:
    """Whether a reply opens like a refusal ("I'm sorry, but I can't...")."""
    return bool(_REFUSAL.match(text.replace("\u2019", "'")))


def compile_error(code: str) -> str | None:
    """Why ``code`` does not compile (``SyntaxError at line 3: ...``), or ``None``."""
    try:
        compile(code, "<generated>", "exec", dont_inherit=True)
    except SyntaxError as exc:
        return f"SyntaxError at line {exc.lineno}: {exc.msg}"
    except (ValueError, RecursionError, MemoryError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def compiles(code: str) -> bool:
    return compile_error(code) is None


def _is_script(code: str) -> bool:
    """Whether unfenced text is code rather than prose: it parses and does something.

    ``Sure`` or ``{"code": "..."}`` parse too, as lone expressions; a script has at least
    one statement, or a call.
    """
    if not compiles(code):
        return False
    body = ast.parse(code).body
    return any(not isinstance(node, ast.Expr) or isinstance(node.value, ast.Call | ast.Await)
               for node in body)


def extract_code(reply: str | None) -> str:
    """The Python code in a model's reply, verbatim (never sanitized, never run).

    Fenced blocks labelled Python (or unlabelled) win; among several, the longest one that
    compiles (models add short usage examples), else the longest. An unfenced reply counts
    as code only if it parses as a script. An unterminated fence (a cut-off reply) yields
    what is there. Empty replies, prose and refusals raise :class:`GenerationError`.
    """
    if reply is None or not reply.strip():
        raise GenerationError("the model's reply was empty; expected a ```python block")
    blocks = [(match["language"].lower(), match["body"]) for match in _FENCE.finditer(reply)]
    filled = [(language, body) for language, body in blocks if body.strip()]
    candidates = ([body for language, body in filled if language in _PYTHON_LABELS]
                  or [body for language, body in filled if not language])
    if candidates:
        compiling = [body for body in candidates if compiles(body)] or candidates
        return max(reversed(compiling), key=len)
    if looks_like_refusal(reply):
        raise GenerationError(f"the model refused: {excerpt(reply)}")
    if not blocks and _is_script(reply):
        return reply.strip("\n") + "\n"
    if blocks:
        labels = ", ".join(language or "unlabelled" for language, _ in blocks)
        raise GenerationError(f"the model's reply has no non-empty Python code block (found: "
                              f"{labels}): {excerpt(reply)}")
    raise GenerationError(f"the model's reply contains no Python code: {excerpt(reply)}")
