"""Logbook adapters: read a facility's electronic logbook (an export file or its API) into
entries for search.

An adapter is registered as a class and built once per configured source with
:meth:`LogbookAdapter.create`, which validates the source's ``options`` against the
adapter's ``options_model`` so that a typo fails at configuration time, naming the source
and the key. Ingest (``osprey_core.logbook.ingest``) then iterates
:meth:`LogbookAdapter.iter_entries` and stores the entries in batches.

Errors come in two sizes, so that one damaged record never costs a whole logbook:

* a record that cannot become an entry (no id, an unreadable time, a text over the size
  limit, a line that is not JSON) is *yielded* as a ``BadRecord`` naming where it was
  (``export.jsonl:17``, ``https://elog/api?start=..&end=.. item 3``); the source's
  ``on_bad_record`` setting decides whether ingest skips it (and reports it) or stops;
* a problem of the whole source (file missing, not JSON at all, a server answering HTML,
  credentials refused, a server that stays down) raises :class:`LogbookSourceError` whose
  message names the file or URL. Entries yielded before it are kept.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Self

from osprey_core.errors import ConfigError, OspreyError
from osprey_core.hookspecs import hookspec

if TYPE_CHECKING:
    from pydantic import BaseModel

    from osprey_core.logbook.models import BadRecord, LogEntry


class LogbookSourceError(OspreyError):
    """A whole logbook source cannot be read; the message names the file or URL and what to
    do about it (never a credential)."""


class LogbookAdapter(ABC):
    """Reads one logbook format (a JSON export, a facility's elog API, ...) into entries."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    #: Model of the source's ``options:`` mapping (None: the adapter takes no options).
    options_model: ClassVar[type[BaseModel] | None] = None

    def __init__(self, source: str, options: Any = None) -> None:
        #: The configured source name: the prefix of every entry id (``als/12345``).
        self.source = source
        #: The validated options (an ``options_model`` instance), or None.
        self.options = options

    @classmethod
    def create(cls, source: str, options: Mapping[str, Any] | None = None) -> Self:
        """The adapter for ``source`` with ``options`` validated; a bad option is a
        ``ConfigError`` naming the source and the key."""
        raw = dict(options or {})
        if cls.options_model is None:
            if raw:
                raise ConfigError(f"logbook source '{source}': the {cls.name} adapter takes "
                                  f"no options (got {', '.join(sorted(raw))})")
            return cls(source, None)
        from pydantic import ValidationError

        try:
            validated = cls.options_model.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(_problem(error) for error in exc.errors())
            raise ConfigError(f"logbook source '{source}' ({cls.name} adapter) options: "
                              f"{problems}") from None
        return cls(source, validated)

    @abstractmethod
    def iter_entries(self, location: str, *,
                     since: datetime | None = None) -> Iterator[LogEntry | BadRecord]:
        """Stream the entries of ``location`` (a file, a glob of files or a URL, as the
        source's settings give it), yielding a ``BadRecord`` for each record that cannot be
        read and raising :class:`LogbookSourceError` when the whole source cannot.

        ``since`` (aware, UTC) lets the adapter leave out entries written before it: an
        API is asked only for that span, a file reader skips older records before building
        them. Every entry at or after ``since`` must be yielded; older ones may be (they
        are de-duplicated by id).
        """


def _problem(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"] if part != "[key]")
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


@hookspec
def register_logbook_adapters(register: Callable[[type[LogbookAdapter]], None]) -> None:
    """Register logbook adapter classes by calling ``register(AdapterClass)`` for each."""
