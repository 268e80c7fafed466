"""Runs inside the jail after the code: results, figures and the error report.

Standard library only. Kept out of ``bootstrap.py`` so it loads precompiled (Python never
caches the main script) and only when a run has something to save.
"""

import os
import sys

#: Largest results.json written; bigger top-level entries are replaced by a note.
MAX_RESULTS_BYTES = 8 << 20
#: Items kept of one list, array or table, and characters of one string.
MAX_ITEMS = 100_000
MAX_STRING = 100_000
MAX_DEPTH = 32
MAX_TRACEBACK = 20_000


def _note(text):
    sys.stderr.write(f"osprey: {text}\n")


class _Converter:
    """Turns the code's results into plain JSON values, noting what it had to change."""

    def __init__(self):
        self.notes = []
        self._active = set()

    def convert(self, value, where, depth=0):
        import math
        from datetime import date, time, timedelta

        if value is None or isinstance(value, bool | int):
            return value
        if isinstance(value, float):
            if math.isfinite(value):
                return value
            return None if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        if isinstance(value, str):
            return self._cut(value, where)
        if type(value).__name__ in ("NAType", "NaTType"):  # pandas' missing values
            return None
        if isinstance(value, date | time):
            return value.isoformat()
        if isinstance(value, timedelta):
            return value.total_seconds()
        if isinstance(value, bytes | bytearray):
            try:
                return self._cut(bytes(value).decode("utf-8"), where)
            except UnicodeDecodeError:
                import base64
                return {"base64": base64.b64encode(bytes(value[:MAX_STRING])).decode()}
        if depth >= MAX_DEPTH or id(value) in self._active:
            return self._fail(value, where, "nested too deeply or contains itself")
        self._active.add(id(value))
        try:
            return self._container(value, where, depth + 1)
        finally:
            self._active.discard(id(value))

    def _container(self, value, where, depth):
        module = type(value).__module__.split(".")[0]
        if module == "pandas":
            return self._pandas(value, where, depth)
        if isinstance(value, dict):
            return {key if isinstance(key, str) else str(key):
                    self.convert(item, f"{where}[{key!r}]", depth)
                    for key, item in self._first(list(value.items()), where)}
        if isinstance(value, set | frozenset):
            try:
                value = sorted(value)
            except TypeError:
                value = list(value)
        if isinstance(value, list | tuple):
            return [self.convert(item, f"{where}[{index}]", depth)
                    for index, item in enumerate(self._first(value, where))]
        if module == "numpy" and hasattr(value, "tolist"):
            if getattr(value, "size", 1) > MAX_ITEMS:
                self.notes.append(f"{where}: array of {value.size} items cut to {MAX_ITEMS}")
                value = value.ravel()[:MAX_ITEMS]
            kind = getattr(getattr(value, "dtype", None), "kind", "")
            if kind in ("M", "m"):  # nanosecond times would come out as plain integers
                value = value.astype(f"{'datetime' if kind == 'M' else 'timedelta'}64[us]")
            return self.convert(value.tolist(), where, depth)
        if hasattr(value, "isoformat"):
            return value.isoformat()
        return self._fail(value, where, "is not a JSON value")

    def _pandas(self, value, where, depth):
        kind = type(value).__name__
        if len(getattr(value, "shape", ())) >= 1 and value.shape[0] > MAX_ITEMS:
            self.notes.append(f"{where}: {value.shape[0]} rows cut to {MAX_ITEMS}")
            value = value.iloc[:MAX_ITEMS] if hasattr(value, "iloc") else value[:MAX_ITEMS]
        if kind == "DataFrame":
            table = value.to_dict(orient="split")
            return self.convert({"columns": table["columns"], "index": table["index"],
                                 "data": table["data"]}, where, depth)
        if kind == "Series":
            return self.convert({"name": value.name, "index": value.index.tolist(),
                                 "data": value.tolist()}, where, depth)
        if hasattr(value, "tolist"):  # Index, Categorical and other array-likes
            return self.convert(value.tolist(), where, depth)
        if hasattr(value, "isoformat"):
            return value.isoformat()
        return self._fail(value, where, "is not a JSON value")

    def _first(self, items, where):
        if len(items) > MAX_ITEMS:
            self.notes.append(f"{where}: {len(items)} items cut to {MAX_ITEMS}")
            return items[:MAX_ITEMS]
        return items

    def _cut(self, text, where):
        if len(text) > MAX_STRING:
            self.notes.append(f"{where}: text of {len(text)} characters cut to {MAX_STRING}")
            return text[:MAX_STRING]
        return text

    def _fail(self, value, where, why):
        self.notes.append(f"{where} ({type(value).__name__}) {why}: stored as text")
        try:
            return repr(value)[:1000]
        except Exception:
            return f"<{type(value).__name__}>"


def results_json(results):
    """``results`` as JSON text within :data:`MAX_RESULTS_BYTES`, and notes on changes."""
    import json

    converter = _Converter()
    if not isinstance(results, dict):
        converter.notes.append(f"results is a {type(results).__name__}, not a dict: "
                               "stored under the key 'results'")
        results = {"results": results}
    parts, size = [], 2
    for key, value in results.items():
        name = key if isinstance(key, str) else str(key)
        text = json.dumps(converter.convert(value, f"results[{name!r}]"), allow_nan=False)
        if size + len(text) + len(name) + 6 > MAX_RESULTS_BYTES:
            converter.notes.append(f"results[{name!r}] ({len(text)} bytes) left out: over "
                                   f"the {MAX_RESULTS_BYTES} byte results limit")
            text = json.dumps(f"<left out: {len(text)} bytes over the results limit>")
        parts.append(f"{json.dumps(name)}: {text}")
        size += len(text) + len(name) + 6
    return "{" + ", ".join(parts) + "}", converter.notes


def save_results(namespace):
    results = namespace.get("results", {})
    if type(results) is dict and not results:  # nothing to save (the host reads it as {})
        return
    try:
        text, notes = results_json(results)
    except Exception as exc:
        text, notes = "{}", [f"results could not be converted ({type(exc).__name__}: {exc})"]
    for note in notes:
        _note(note)
    with open("results.json", "w", encoding="utf-8") as handle:
        handle.write(text)


def save_figures():
    """Every open pyplot figure as ``figures/figure_<n>.png`` (only if pyplot was used)."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return
    numbers = pyplot.get_fignums()
    if numbers:
        os.makedirs("figures", exist_ok=True)
    for index, number in enumerate(numbers, start=1):
        try:
            pyplot.figure(number).savefig(os.path.join("figures", f"figure_{index}.png"),
                                          dpi=100, bbox_inches="tight")
        except Exception as exc:
            _note(f"figure {number} could not be saved ({type(exc).__name__}: {exc})")


def report_failure(exc, source, filename):
    """Report an uncaught exception of the code; a failing report still says something."""
    try:
        report_error(exc, source, filename)
    except Exception as problem:
        _note(f"{type(exc).__name__}: {exc} (the error report failed: {problem})")


def report_error(exc, source, filename):
    """Print the traceback without the bootstrap's own frames; write ``error.json``."""
    import json
    import linecache
    import traceback

    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    sys.stderr.write(text)
    line = getattr(exc, "lineno", None) if isinstance(exc, SyntaxError) else None
    for frame, lineno in traceback.walk_tb(tb):
        if frame.f_code.co_filename == filename:
            line = lineno
    if len(text) > MAX_TRACEBACK:
        text = text[:MAX_TRACEBACK // 4] + "\n...\n" + text[-MAX_TRACEBACK * 3 // 4:]
    with open("error.json", "w", encoding="utf-8") as handle:
        json.dump({"type": type(exc).__name__, "message": str(exc)[:MAX_STRING],
                   "line": line, "traceback": text}, handle)


def finish(namespace):
    for step in (lambda: save_results(namespace), save_figures):
        try:
            step()
        except Exception as exc:
            _note(f"could not save the run's outputs ({type(exc).__name__}: {exc})")
