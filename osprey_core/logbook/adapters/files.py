"""Reading logbook export files: which files a location names, encodings, JSON Lines with
a size guard per line, and JSON documents streamed entry by entry.

A problem of the whole file raises ``LogbookSourceError`` naming the file (and line);
a problem of one record is left to the adapter, which yields a ``BadRecord``.
"""

from __future__ import annotations

import codecs
import glob
import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from osprey_core.errors import os_error_text, shorten
from osprey_core.hookspecs.logbook_adapters import LogbookSourceError

#: Largest line of a JSON Lines file that is parsed; longer ones are bad records (a text
#: over the entry limit of a million characters cannot be kept anyway).
DEFAULT_MAX_RECORD_BYTES = 16 * 1024 * 1024
_GLOB = re.compile(r"[*?\[]")
_SPACE = re.compile(r"[ \t\n\r]*")
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16"),
         (codecs.BOM_UTF16_BE, "utf-16"))


def codec_name(encoding: str) -> str:
    """The canonical codec name; ValueError for an unknown encoding."""
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise ValueError(f"unknown encoding {encoding!r} (e.g. utf-8, latin-1, cp1252, "
                         "utf-16)") from None


def resolve_files(location: str) -> list[Path]:
    """The files ``location`` names: one path, or a glob (sorted). Nothing there is an
    error: an ingest that silently reads no file looks like an empty logbook."""
    if location.startswith(("http://", "https://")):
        raise LogbookSourceError(f"{location} is a URL, and this adapter reads export files: "
                                 "save the export to a file, or use an adapter that reads "
                                 "the logbook's API (als)")
    expanded = os.path.expanduser(location)
    if _GLOB.search(expanded):
        matches = sorted(Path(match) for match in glob.glob(expanded, recursive=True))
        files = [match for match in matches if match.is_file()]
        if not files:
            raise LogbookSourceError(f"no file matches {location}")
        return files
    path = Path(expanded)
    if path.is_dir():
        raise LogbookSourceError(f"{location} is a directory: give a file, or a glob such "
                                 f"as {os.path.join(location, '*.jsonl')}")
    if not path.is_file():
        raise LogbookSourceError(f"{location}: no such file")
    return [path]


def open_binary(path: Path) -> IO[bytes]:
    try:
        return path.open("rb")
    except OSError as exc:
        raise LogbookSourceError(f"cannot read {path}: {os_error_text(exc)}") from None


def skip_bom(path: Path, handle: IO[bytes], codec: str) -> None:
    """Step over a byte-order mark that agrees with ``codec``; one that does not means the
    file is read in the wrong encoding, which would garble every entry."""
    head = handle.peek(4)[:4] if hasattr(handle, "peek") else b""
    if b"\x00" in head[:2] and "\n".encode(codec) == b"\n":
        raise LogbookSourceError(
            f"{path} starts with NUL bytes, so it is not {codec}: probably UTF-16 without a "
            "byte-order mark. Set the source's encoding option (utf-16-le or utf-16-be)")
    for mark, family in _BOMS:
        if head.startswith(mark):
            if not codec.startswith(family):
                raise LogbookSourceError(
                    f"{path} starts with a {family.upper()} byte-order mark but is read as "
                    f"{codec}: set the source's encoding option to {family}")
            if family == "utf-8":
                handle.read(len(mark))  # utf-16/32 decoders consume their own mark
            return


def _decode_error(path: Path, line: int, codec: str, exc: UnicodeDecodeError,
                  data: bytes, start: int = 0) -> LogbookSourceError:
    byte = data[exc.start:exc.start + 1].hex() or "end of data"
    hint = ("set the source's encoding option to the file's encoding (latin-1 and cp1252 are "
            "common for older exports)" if codec == "utf-8"
            else "check the source's encoding option")
    return LogbookSourceError(f"{path}:{line}: byte {start + exc.start + 1} of the line "
                              f"(0x{byte}) is not valid {codec}: {hint}")


def read_lines(path: Path, codec: str, max_bytes: int
               ) -> Iterator[tuple[int, str | None, int]]:
    """(line number, text, size in bytes) per line; text is None for a line over
    ``max_bytes``, which is skipped without being held in memory."""
    with open_binary(path) as handle:
        skip_bom(path, handle, codec)
        if "\n".encode(codec) != b"\n":  # utf-16/32: lines are not split on the byte
            yield from _text_lines(path, handle, codec, max_bytes)
            return
        number = 0
        while raw := handle.readline(max_bytes + 1):
            number += 1
            if len(raw) > max_bytes and not raw.endswith(b"\n"):
                size = len(raw)
                while rest := handle.readline(1 << 20):
                    size += len(rest)
                    if rest.endswith(b"\n"):
                        break
                yield number, None, size
                continue
            try:
                yield number, raw.decode(codec), len(raw)
            except UnicodeDecodeError as exc:
                raise _decode_error(path, number, codec, exc, raw) from None


def _text_lines(path: Path, handle: IO[bytes], codec: str, max_bytes: int
                ) -> Iterator[tuple[int, str | None, int]]:
    import io

    text = io.TextIOWrapper(handle, encoding=codec, newline="")
    number = 0
    try:
        while line := text.readline(max_bytes + 1):
            number += 1
            if len(line) > max_bytes and not line.endswith("\n"):
                while (rest := text.readline(1 << 20)) and not rest.endswith("\n"):
                    pass
                yield number, None, max_bytes + 1
                continue
            yield number, line, len(line)
    except UnicodeDecodeError as exc:
        raise LogbookSourceError(f"{path}: after line {number}: not valid {codec} "
                                 f"({exc.reason}): check the source's encoding option"
                                 ) from None


class JsonStream:
    """A JSON document read value by value, so the entries array of a large export is never
    in memory at once, each entry knows its line, and the entries before a damaged or
    truncated spot are delivered before the error."""

    CHUNK = 1 << 20

    def __init__(self, path: Path, handle: IO[bytes], codec: str) -> None:
        self.path, self.handle, self.codec = path, handle, codec
        self.decoder = codecs.getincrementaldecoder(codec)("strict")
        self.parser = json.JSONDecoder()
        self.buffer, self.pos, self.eof = "", 0, False
        self.line, self.counted = 1, 0  # line number at buffer[counted]

    def _more(self, at_least: int = CHUNK) -> bool:
        """Read more of the file into the buffer (dropping what was consumed)."""
        if self.eof:
            return False
        raw = self.handle.read(max(at_least, self.CHUNK))
        try:
            text = self.decoder.decode(raw, final=not raw)
        except UnicodeDecodeError as exc:
            line = self.line_at(len(self.buffer)) + raw.count(b"\n", 0, exc.start)
            raise _decode_error(self.path, line, self.codec, exc, raw) from None
        self.eof = not raw
        self.line_at(self.pos)
        self.buffer = self.buffer[self.pos:] + text
        self.counted -= self.pos
        self.pos = 0
        return True

    def line_at(self, pos: int) -> int:
        self.line += self.buffer.count("\n", self.counted, pos)
        self.counted = pos
        return self.line

    def peek(self) -> str:
        """The next character that is not white space ("" at the end of the file)."""
        while True:
            self.pos = _SPACE.match(self.buffer, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.buffer) or not self._more():
                return self.buffer[self.pos:self.pos + 1]

    def expect(self, chars: str) -> str:
        char = self.peek()
        if not char or char not in chars:
            raise self.error(f"expected {' or '.join(repr(c) for c in chars)}, found "
                             f"{'the end of the file' if not char else repr(char)}")
        self.pos += 1
        return char

    def value(self) -> Any:
        self.peek()
        while True:
            try:
                value, end = self.parser.raw_decode(self.buffer, self.pos)
            except json.JSONDecodeError as exc:
                incomplete = (exc.pos >= len(self.buffer) - 8
                              or exc.msg.startswith("Unterminated string"))
                if incomplete and self._more(len(self.buffer)):
                    continue
                raise self.error(exc.msg, exc.pos) from None
            # a number may go on in the next chunk ("12" of "1234")
            if end == len(self.buffer) and self._more():
                continue
            self.pos = end
            return value

    def error(self, message: str, pos: int | None = None) -> LogbookSourceError:
        pos = self.pos if pos is None else pos
        line = self.line_at(min(pos, len(self.buffer)))
        column = pos - (self.buffer.rfind("\n", 0, pos) + 1) + 1
        ended = self.eof and pos >= len(self.buffer) - 8
        return LogbookSourceError(
            f"{self.path}:{line}:{column}: not valid JSON ({message})"
            + ("; the file ends in the middle of the document: is it truncated?"
               if ended else ""))

    def entries(self, paths: Sequence[tuple[str, ...]]) -> Iterator[tuple[int, Any]]:
        """(line, item) of the entries array: the top-level array, or the array at one of
        ``paths`` (keys of nested objects, e.g. ``("data", "entries")``)."""
        first = self.peek()
        if first == "[":
            yield from self._array()
        elif first == "{":
            if not (yield from self._object(paths)):
                wanted = " or ".join("'" + ".".join(path) + "'" for path in paths)
                raise LogbookSourceError(f"{self.path} is a JSON object without an entries "
                                         f"array (looked for {wanted})")
        elif first == "":
            raise LogbookSourceError(f"{self.path} is empty: expected a JSON export")
        else:
            start = self.buffer[self.pos:self.pos + 40]
            kind = "HTML" if first == "<" else "not JSON"
            raise LogbookSourceError(f"{self.path} is {kind}: it starts with "
                                     f"{shorten(start, 40)!r}")
        if self.peek():
            raise self.error("more data after the end of the document")

    def _array(self) -> Iterator[tuple[int, Any]]:
        self.expect("[")
        if self.peek() == "]":
            self.pos += 1
            return
        while True:
            self.peek()
            line = self.line_at(self.pos)
            yield line, self.value()
            if self.expect(",]") == "]":
                return

    def _object(self, paths: Sequence[tuple[str, ...]]) -> Iterator[tuple[int, Any]]:
        """Walk an object, streaming the entries array if a path leads to it; returns
        whether one did."""
        self.expect("{")
        found = False
        if self.peek() == "}":
            self.pos += 1
            return False
        while True:
            if self.peek() != '"':
                raise self.error("expected a key")
            key = self.value()
            self.expect(":")
            rest = [path[1:] for path in paths if path and path[0] == key]
            nxt = self.peek()
            if not found and () in rest and nxt == "[":
                yield from self._array()
                found = True
            elif not found and any(rest) and nxt == "{":
                found = yield from self._object([path for path in rest if path])
            else:
                self.value()
            if self.expect(",}") == "}":
                return found
