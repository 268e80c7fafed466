"""Built-in plugin: the ``mock`` code generator, deterministic code without any model.

It writes code for common requests against the control system (read, statistics, plot the
history, a straight-line fit, and writes in write mode only); the phrasings and templates
live in :mod:`osprey_core.execution.mock_code`, imported on first use. Feedback is ignored:
the same request always gets the same code. :meth:`MockGenerator.scripted` builds
generators that return given code, attempt by attempt, for tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Self

from osprey_core.hookspecs import hookimpl
from osprey_core.hookspecs.code_generators import CodeGenerator


class MockGenerator(CodeGenerator):
    name = "mock"
    description = ("Deterministic code for common requests (read, statistics, plot history, "
                   "fit, set in write mode); works offline, no LLM.")
    #: Code to return instead, one entry per attempt (see :meth:`scripted`).
    script: ClassVar[tuple[str, ...] | None] = None
    #: The feedback each ``generate`` call of a scripted class got, oldest first.
    feedback_seen: ClassVar[list[list[str]]] = []

    @classmethod
    def scripted(cls, codes: Iterable[str], *, name: str = "scripted") -> type[Self]:
        """A subclass returning ``codes`` in order: attempt N (N-1 failures fed back) gets
        entry N, so a generator rebuilt after an approval, perhaps in another process,
        carries on where the run is.

        Asking past the end raises ``GenerationError``, so an unexpected retry is noticed;
        ``feedback_seen`` records what the loop fed back.
        """
        return type(f"Scripted{cls.__name__}", (cls,), {
            "name": name, "description": "Returns scripted code, one entry per attempt.",
            "script": tuple(codes), "feedback_seen": []})

    async def generate(self, request: Any, feedback: list[str]) -> str:
        from osprey_core.execution.generation import GenerationError
        from osprey_core.execution.mock_code import mock_code

        if self.script is None:
            return await mock_code(request, self.context)
        type(self).feedback_seen.append(list(feedback))
        attempt = len(feedback) + 1
        if attempt > len(self.script):
            raise GenerationError(f"code generator '{self.name}' was asked for attempt "
                                  f"{attempt}, but its script has only {len(self.script)}")
        return self.script[attempt - 1]


@hookimpl
def register_code_generators(register: Callable[[type[CodeGenerator]], None]) -> None:
    register(MockGenerator)
