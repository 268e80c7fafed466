"""Core configuration sections: LLM endpoint, planning, approval, control system, archiver."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, SecretStr, field_validator

from osprey_core.control.limits import LimitsConfig

ApprovalMode = Literal["disabled", "control_writes", "all_code"]


@dataclass(frozen=True, slots=True)
class PluginChoice:
    """Marks a setting whose value (or, with ``keys``, whose mapping keys) names an entry
    of a plugin registry family, so a typo is a configuration error when the file is
    loaded, with its line, instead of a failure at first use. ``also`` lists values that
    are not plugins (``auto``)."""

    family: str
    also: tuple[str, ...] = ()
    keys: bool = False


class LLMSettings(BaseModel):
    """Any OpenAI-compatible endpoint. Without ``base_url`` the offline planner is used."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str | None = Field(
        None, description="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1. "
        "Unset: plan offline (no network, no key).")
    model: str = Field("gpt-4o-mini", description="Model name sent to the endpoint.")
    api_key: SecretStr | None = Field(
        None, description="API key; prefer api_key_env so the key stays out of files.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable with the key.")
    timeout_seconds: float = Field(60.0, gt=0, description="Per-request timeout.")
    max_attempts: int = Field(
        3, ge=1, le=10, description="Attempts at getting a valid plan before the run fails.")
    backoff_seconds: float = Field(
        0.5, ge=0, description="Wait before the first retry; doubles on each retry.")

    def resolved_key(self, environ: dict[str, str]) -> str:
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        # Local OpenAI-compatible servers usually accept any key.
        return environ.get(self.api_key_env, "not-needed")


#: Approval modes by capability name; every key must name a registered capability.
CapabilityModes = Annotated[dict[str, ApprovalMode], PluginChoice("capabilities", keys=True)]


class PlanningSettings(BaseModel):
    """How requests become plans."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        False, description="Planning mode by default: every plan waits for approval.")
    max_candidates: int = Field(
        8, ge=1, description="Capabilities shortlisted for the planner per request.")
    max_steps: int = Field(
        50, ge=1, le=10_000, description="Longest plan accepted (from a model, an edit or "
        "a caller); longer plans are refused, never cut.")
    max_plan_bytes: int = Field(
        262_144, ge=1024, le=16_777_216, description="Largest plan accepted, as JSON bytes "
        "(parameters included).")


class ApprovalSettings(BaseModel):
    """When a human must approve. Garbled settings are refused, never loosened."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: ApprovalMode = Field(
        "control_writes", description="disabled | control_writes (side-effecting steps) | "
        "all_code (side effects and generated code).")
    capabilities: CapabilityModes = Field(
        default_factory=dict, description="Per-capability mode, e.g. {python: all_code}.")
    expiry_seconds: float = Field(
        3600.0, gt=0, description="Unanswered requests expire (count as rejected) after this.")
    execution_window_seconds: float = Field(
        60.0, gt=0, description="An approved side effect must start before the request's "
        "expiry or this long after the decision, whichever is later (a crash in between "
        "asks again).")

    def mode_for(self, capability: str | None) -> ApprovalMode:
        return self.capabilities.get(capability or "", self.mode)


class ControlSystemSettings(BaseModel):
    """Which control system to talk to, and the rules every write obeys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Annotated[str, PluginChoice("connectors")] = Field(
        "mock", description="Connector name: mock (simulated machine, the "
                      "default), epics, tango, labview, or one a plugin adds.")
    writes_enabled: bool = Field(False, description="Master switch: no write reaches the "
                                 "control system while false.")
    connection_timeout: float = Field(2.0, gt=0, description="Seconds to wait for a channel "
                                      "to connect; a missing channel costs this long.")
    read_timeout: float = Field(2.0, gt=0, description="Seconds to wait for a value.")
    write_timeout: float = Field(5.0, gt=0, description="Seconds to wait for a write.")
    verify_timeout: float = Field(2.0, gt=0, description="Seconds a readback may take to "
                                  "settle within tolerance.")
    limits_file: Path | None = Field(None, description="Limits database (YAML); replaces "
                                     "the inline limits below.")
    limits: LimitsConfig = Field(default_factory=LimitsConfig,
                                 description="Inline limits database.")


class ArchiverSettings(BaseModel):
    """Where channel history comes from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Annotated[str, PluginChoice("archivers")] = Field(
        "mock", description="Archiver name: mock (history of the simulated "
                      "machine) or archiver_appliance.")
    timeout: float = Field(30.0, gt=0, description="Seconds to wait for a retrieval.")


class SandboxLimits(BaseModel):
    """Resource limits of one sandboxed run; each run may tighten (never loosen) them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    wall_seconds: float = Field(60.0, gt=0, le=3600, description="Wall-clock limit.")
    cpu_seconds: int = Field(30, ge=1, le=3600, description="CPU-time limit.")
    memory_mb: int = Field(1024, ge=64, le=65536, description="Address-space limit (MiB).")
    work_dir_mb: int = Field(64, ge=1, le=16384,
                             description="Size of the run's work directory (MiB).")
    file_mb: int = Field(32, ge=1, le=16384, description="Largest file the code may write.")
    open_files: int = Field(64, ge=16, le=4096, description="Open file descriptors.")
    output_bytes: int = Field(1_000_000, ge=1024, le=100_000_000,
                              description="stdout+stderr kept; the run is stopped past it.")

    def tightened(self, overrides: dict[str, float] | None) -> SandboxLimits:
        """These limits with ``overrides`` applied where they are stricter."""
        if not overrides:
            return self
        unknown = sorted(set(overrides) - set(type(self).model_fields))
        if unknown:
            raise ValueError(f"unknown sandbox limit(s): {', '.join(unknown)}")
        current = self.model_dump()
        merged = {key: min(current[key], value) for key, value in overrides.items()}
        return self.model_validate({**current, **merged})


class ExecutionSettings(BaseModel):
    """Generated Python: who writes it, how often it may retry, and where it runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    generator: Annotated[str, PluginChoice("code_generators", also=("auto",))] = Field(
        "auto", description="Code generator: mock, llm, agentic, a plugin's "
                           "name, or auto (llm when llm.base_url is set, else mock).")
    max_attempts: int = Field(3, ge=1, le=10, description="Generate/run attempts per request; "
                              "errors and findings of a failed attempt go back to the generator.")
    agentic_max_turns: int = Field(8, ge=1, le=50,
                                   description="Tool-call turns the agentic generator may take.")
    backend: Annotated[str, PluginChoice("execution_backends")] = Field(
        "nsjail", description="Execution backend: nsjail (isolated, default), podman "
                         "(isolated, a container per run) or local (no isolation, development "
                         "only, refused for write mode).")
    limits: SandboxLimits = Field(default_factory=SandboxLimits,
                                  description=SandboxLimits.__doc__)
    runtime_dir: Path = Field(Path("/opt/osprey-sandbox"), description="World-readable "
                              "directory holding the jail's interpreter (osprey sandbox setup).")
    require_work_dir_quota: bool = Field(True, description="Refuse to run when the work "
                                         "directory's size cannot be capped (needs root).")


class ProvidersSettings(BaseModel):
    """Context gathered from data providers before planning."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="Gather provider context before planning.")
    timeout_seconds: float = Field(5.0, gt=0, description="Default per-provider timeout.")
    timeouts: dict[str, PositiveFloat] = Field(default_factory=dict,
                                       description="Per-provider timeouts, by provider name.")
    disabled: list[str] = Field(default_factory=list, description="Providers never asked.")


class MemorySettings(BaseModel):
    """Per-user persistent memory."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="Offer the memory provider and capability.")
    top_k: int = Field(5, ge=1, le=100, description="Memories injected per request, most "
                       "relevant first.")
    max_entry_chars: int = Field(2000, ge=1, description="Longest memory text accepted.")
    max_entries: int = Field(5000, ge=1, description="Entries kept per user.")
    max_user_bytes: int = Field(5_000_000, ge=1024, description="Largest memory file per user.")
    approve_saves: bool = Field(True, description="Saving a memory needs a human's approval.")


class LogbookSourceSettings(BaseModel):
    """One logbook to ingest: which adapter reads it, from where, and how."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    adapter: Annotated[str, PluginChoice("logbook_adapters")] = Field(
        description="Adapter name: json, jsonl, csv, als, jlab, ornl or one a plugin adds.")
    location: str = Field(description="A file, a glob of files, or the logbook's URL.")
    options: dict[str, Any] = Field(default_factory=dict, description="Adapter options "
                                    "(field mapping, TLS, time windows); see the adapter.")
    overlap_seconds: float = Field(3600.0, ge=0, description="Incremental ingest re-reads "
                                   "this much before the newest entry it has, so late and "
                                   "edited entries are not missed (duplicates are skipped).")
    on_bad_record: Literal["skip", "fail"] = Field(
        "skip", description="A record that cannot be read: report it and go on, or stop.")


class EmbeddingSettings(BaseModel):
    """How entries become vectors for semantic search."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Annotated[str, PluginChoice("embedding_models")] = Field(
        "minilm", description="minilm (offline, the 'search' extra) or openai (an "
        "OpenAI-compatible /v1/embeddings endpoint), or one a plugin adds.")
    base_url: str | None = Field(None, description="Endpoint of the openai model (default: "
                                 "llm.base_url).")
    api_model: str = Field("text-embedding-3-small", description="Model name sent to it.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable with its key.")
    batch_size: int = Field(64, ge=1, le=2048, description="Texts embedded per call.")
    chunk_words: int = Field(200, ge=16, le=4096, description="Longer entries are split into "
                             "chunks of about this many words.")
    chunk_overlap_words: int = Field(40, ge=0, le=1024,
                                     description="Words shared by neighbouring chunks.")


class LogbookSettings(BaseModel):
    """Logbook search (ARIEL): where entries live, how they are found and answered."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path | None = Field(None, description="The logbook database (default: "
                              "<home>/logbook.db); its indexes live beside it.")
    default_mode: Literal["hybrid", "keyword", "semantic"] = Field(
        "hybrid", description="Search mode when none is asked for.")
    fusion: Literal["convex", "rrf"] = Field(
        "convex", description="How hybrid search fuses its arms: convex (BM25 over the "
        "query's highest possible score and cosine, weighted) or rrf (reciprocal rank "
        "fusion).")
    semantic_weight: float = Field(0.3, ge=0, le=1, description="The semantic arm's share "
                                   "in convex fusion (the keyword arm has the rest).")
    rrf_k: float = Field(60.0, gt=0, description="Reciprocal rank fusion constant (fusion: "
                         "rrf).")
    embeddings: EmbeddingSettings = Field(default_factory=EmbeddingSettings,
                                          description=EmbeddingSettings.__doc__)
    sources: dict[str, LogbookSourceSettings] = Field(
        default_factory=dict, description="Logbooks to ingest, by source name (the name "
        "prefixes entry ids: als/12345).")
    answer_top_k: int = Field(8, ge=1, le=50, description="Entries an answer is built from.")
    answer_max_context_tokens: int = Field(3000, ge=200, le=100_000,
                                           description="Budget for entry text in an answer's "
                                           "prompt (about 4 characters a token).")
    provider: bool = Field(False, description="Offer the most relevant entries to the "
                           "planner as context for every request.")
    provider_top_k: int = Field(3, ge=1, le=20, description="Entries the provider offers.")

    @field_validator("sources")
    @classmethod
    def _source_names(cls, value: dict[str, LogbookSourceSettings]
                      ) -> dict[str, LogbookSourceSettings]:
        from osprey_core.logbook.models import SOURCE_PATTERN

        for name in value:
            if not SOURCE_PATTERN.match(name):
                raise ValueError(f"source name {name!r} must be lower-case letters, digits, "
                                 "'_' and '-' (it prefixes entry ids)")
        return value
