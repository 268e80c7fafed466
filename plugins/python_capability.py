"""Built-in plugin: generated Python as plan steps, and the policy that reads its analysis.

``python`` runs read-only analysis code; ``python_write`` may write through the sandbox
broker and always needs approval of its exact code (see ``docs/python-execution.md``).
The steps are imported when registered, so ``osprey --help`` never pays for them.
"""

from __future__ import annotations

from typing import Any

from osprey_core.hookspecs import hookimpl


@hookimpl
def register_capabilities(register: Any) -> None:
    from osprey_core.execution.steps import PythonStep, PythonWriteStep

    register(PythonStep())
    register(PythonWriteStep())


@hookimpl
def register_approval_policies(register: Any) -> None:
    from osprey_core.execution.steps import CodePolicy

    register(CodePolicy())
