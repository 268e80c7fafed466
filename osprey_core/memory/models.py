"""The shape of a memory entry and of the file (and export) holding a user's entries, and
the checksum that lets a reader tell an entry from a damaged one."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

FORMAT = "osprey-memory"
#: The memory files this osprey writes: every entry carries a checksum.
VERSION = 2
#: Memory files written before checksums: read as they are, rewritten as VERSION on the
#: next change.
LEGACY_VERSION = 1
#: Exports carry no checksums (an import validates every entry and the store adds them).
EXPORT_VERSION = 1
#: The key of an entry's checksum in a memory file.
CHECKSUM = "sha256"
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
        _check_unicode(tag, f"tag {tag!r}")
    if len(cleaned) > MAX_TAGS:
        raise ValueError(f"{len(cleaned)} tags; at most {MAX_TAGS} are allowed")
    return tuple(cleaned)


def clean_text(text: Any) -> str:
    """The text as given, refused if blank (nothing to remember)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("the memory text is empty")
    _check_unicode(text, "the memory text")
    return text


def _check_unicode(text: str, what: str) -> None:
    """Refuse lone surrogates (undecodable bytes from a command line): they have no UTF-8
    form, so the file could not hold them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} is not valid Unicode (character {exc.start + 1} is a lone "
                         "surrogate, often an undecodable byte)") from None


class MemoryEntry(BaseModel):
    """One thing a user asked to be remembered."""

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


# -- checksums and reading entries back -----------------------------------------------------

#: What a damaged line or entry is called in errors and repair reports.
PROBLEMS = {
    "bad_utf8": "not UTF-8",
    "unparsable_json": "not valid JSON",
    "bad_header": "not this user's file header",
    "schema_invalid": "not a valid entry",
    "no_checksum": "no checksum",
    "checksum_mismatch": "checksum mismatch",
    "duplicate_id": "duplicate id",
}


class EntryProblem(ValueError):
    """Why something stored as an entry cannot be trusted; ``reason`` is a key of
    :data:`PROBLEMS`."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{PROBLEMS[reason]}: {detail}")


def _canonical(fields: Mapping[str, Any]) -> str:
    """The fields as JSON with sorted keys and no spaces: the same values give the same
    text however a file lays them out."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _sha256(text: str) -> str:
    # surrogatepass: a damaged file may hold escaped lone surrogates; they hash too.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def entry_checksum(fields: Mapping[str, Any]) -> str:
    """sha256 of an entry's fields (all but the checksum) in canonical JSON."""
    return _sha256(_canonical(fields))


def entry_line(entry: MemoryEntry) -> str:
    """The entry as one line of a memory file: its canonical JSON, the checksum last."""
    canonical = _canonical(entry.to_json())
    return f'{canonical[:-1]},"{CHECKSUM}":"{_sha256(canonical)}"}}'


_TAIL = f',"{CHECKSUM}":"'
_TAIL_SIZE = len(_TAIL) + 64 + 2
_ENTRY = TypeAdapter(MemoryEntry)


def read_line(text: str, *, checksum_required: bool) -> tuple[MemoryEntry, bool]:
    """:func:`read_entry` of one line of a memory file (its trailing comma removed).

    A line exactly as :func:`entry_line` wrote it is checked by hashing its own text and
    validated in one pass, about twice as fast as parsing it first; anything else is
    parsed and its fields re-serialized, with the same verdict.
    """
    body, tail = text[:-_TAIL_SIZE] + "}", text[-_TAIL_SIZE:]
    if tail.startswith(_TAIL) and tail.endswith('"}') and tail[len(_TAIL):-2] == _sha256(body):
        try:
            return _ENTRY.validate_json(body), True
        except ValidationError as exc:
            raise EntryProblem("schema_invalid", first_error(exc)) from None
    return read_entry(parse_line(text), checksum_required=checksum_required)


def parse_line(text: str) -> Any:
    """The JSON value of one entry line (without its trailing comma)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise EntryProblem("unparsable_json", f"{exc.msg} at column {exc.colno}") from None
    except RecursionError:
        raise EntryProblem("unparsable_json", "nested too deeply") from None


def read_entry(item: Any, *, checksum_required: bool) -> tuple[MemoryEntry, bool]:
    """The entry stored as ``item``, and whether its checksum was verified.

    A checksum, when present, is always checked: any change to any field after it was
    written is refused, before the fields are even validated.
    """
    if not isinstance(item, dict):
        raise EntryProblem("schema_invalid", "an entry is a JSON object")
    fields = dict(item)
    digest = fields.pop(CHECKSUM, None)
    if digest is None and checksum_required:
        raise EntryProblem("no_checksum", "every entry of this file should carry one")
    if digest is not None and digest != entry_checksum(fields):
        raise EntryProblem("checksum_mismatch", "the entry is not what was written")
    try:
        return _ENTRY.validate_python(fields), digest is not None
    except ValidationError as exc:
        raise EntryProblem("schema_invalid", first_error(exc)) from None


def first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"]) or "value"
    return f"{where}: {error['msg']} ({exc.error_count()} problem(s) in all)"
