"""Requests to and results from the Python execution service."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ExecutionMode(StrEnum):
    """Read-only runs can never write; write runs may, after approval of the exact code."""

    READ = "read"
    WRITE = "write"


class ExecutionRequest(BaseModel):
    """What the operator wants computed, and under which rules."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    query: str = Field(description="The operator's request, as asked.")
    objective: str = Field("", description="The task objective for this step, if narrower.")
    capability_hints: list[str] = Field(
        default_factory=list, description="Hints from the planner (channels, methods).")
    expected_results: dict[str, str] = Field(
        default_factory=dict, description="Keys the code should put in `results`, with meaning.")
    mode: ExecutionMode = Field(ExecutionMode.READ, description="read (default) or write.")
    limits: dict[str, float] = Field(
        default_factory=dict, description="Sandbox limits to tighten for this request.")
    code: str | None = Field(None, description="Run this code instead of generating it.")

    @property
    def text(self) -> str:
        """The most specific description of the task."""
        return self.objective or self.query


class AttemptRecord(BaseModel):
    """One generate/analyze/run round."""

    number: int
    code_sha256: str
    findings: list[dict[str, Any]] = Field(default_factory=list)
    exit_reason: str | None = None
    error: str | None = None


class ExecutionResult(BaseModel):
    """Everything a run of generated code produced."""

    ok: bool
    code: str
    code_sha256: str
    mode: ExecutionMode
    analysis: dict[str, Any]
    approval: dict[str, Any] | None = None
    results: dict[str, Any] = Field(default_factory=dict)
    stdout: str = ""
    stderr: str = ""
    output_truncated: bool = False
    exit_reason: str
    error: str | None = None
    figures: list[str] = Field(default_factory=list)
    notebook: str | None = None
    folder: str
    attempts: list[AttemptRecord] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict)
    broker: dict[str, Any] = Field(default_factory=dict)
