"""The shape of a memory entry and of the file (and export) holding a user's entries."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

FORMAT = "osprey-memory"
VERSION = 1
MAX_TAGS = 20
MAX_TAG_CHARS = 40


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


UtcTime = Annotated[AwareDatetime, AfterValidator(_utc)]
#: Checked in Rust, not Python: every entry is validated each time a file is loaded.
Tag = Annotated[str, StringConstraints(max_length=MAX_TAG_CHARS,
                                       pattern=r"^[^,\s](?:[^,]*[^,\s])?$")]


def clean_tags(tags: Any) -> tuple[str, ...]:
    """Stripped, de-duplicated tags; refuses empty, over-long or comma-holding ones."""
    if not isinstance(tags, list | tuple) or not all(isinstance(tag, str) for tag in tags):
        raise ValueError("tags must be a list of strings")
    cleaned = list(dict.fromkeys(tag.strip() for tag in tags))
    for tag in cleaned:
        if not tag or "," in tag or len(tag) > MAX_TAG_CHARS:
            raise ValueError(f"tag {tag!r} must be 1-{MAX_TAG_CHARS} characters without commas")
    if len(cleaned) > MAX_TAGS:
        raise ValueError(f"{len(cleaned)} tags; at most {MAX_TAGS} are allowed")
    return tuple(cleaned)


def clean_text(text: Any) -> str:
    """The text as given, refused if blank (nothing to remember)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("the memory text is empty")
    return text


class MemoryEntry(BaseModel):
    """One thing a user asked to be remembered ."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    text: Annotated[str, StringConstraints(pattern=r"\S")]
    tags: tuple[Tag, ...] = Field(default=(), max_length=MAX_TAGS)
    created_at: UtcTime
    updated_at: UtcTime
    #: Which run saved it, or ``cli`` / ``import``.
    source: str = Field(min_length=1, max_length=200)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
