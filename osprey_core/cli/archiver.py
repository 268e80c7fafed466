"""``osprey archiver``: channel history from the configured archiver."""

from __future__ import annotations

import csv
import json
import re
import sys
from datetime import datetime
from typing import Any

import typer

from osprey_core.cli.output import print_json, print_table
from osprey_core.cli.state import cli_state

archiver_app = typer.Typer(help="Channel history from the configured archiver.",
                           no_args_is_help=True)

_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)\s*$", re.IGNORECASE)
_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_span(text: str) -> float:
    """``30s``, ``30m``, ``1h``, ``2d``, ``1w`` -> seconds."""
    found = _SPAN.match(text)
    if found is None or float(found.group(1)) <= 0:
        raise typer.BadParameter(f"{text!r} is not a time span such as 30m, 1h or 2d",
                                 param_hint="'--since'")
    return float(found.group(1)) * _SECONDS[found.group(2).lower()]


def parse_moment(text: str, option: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an ISO 8601 time such as "
                                 "2026-01-31T08:00:00Z", param_hint=f"'{option}'") from None


@archiver_app.command("get")
def get(
    ctx: typer.Context,
    names: list[str] = typer.Argument(..., metavar="NAME...", help="Channel names."),
    since: str | None = typer.Option(None, "--since", help="How far back from now: 30m, 1h, "
                                     "2d (default 1h unless --start is given)."),
    start: str | None = typer.Option(None, "--start", help="Start, ISO 8601 (UTC if no "
                                     "offset)."),
    end: str | None = typer.Option(None, "--end", help="End, ISO 8601 (default: now)."),
    operator: str | None = typer.Option(None, "--operator", help="Server-side processing, "
                                        "e.g. mean_60 (one-minute averages)."),
    as_json: bool = typer.Option(False, "--json", help="Print every sample as JSON."),
    as_csv: bool = typer.Option(False, "--csv", help="Print every sample as CSV."),
) -> None:
    """Retrieve channel history: a summary table, or every sample with --json/--csv."""
    from pydantic import ValidationError

    from osprey_core.cli.channels import run_async
    from osprey_core.control.capabilities import HistoryParameters
    from osprey_core.control.history import retrieve_history
    from osprey_core.control.service import build_archiver

    if as_json and as_csv:
        raise typer.BadParameter("choose one of --json and --csv", param_hint="'--csv'")
    if since is not None and start is not None:
        raise typer.BadParameter("give either --since or --start", param_hint="'--since'")
    if end is not None and start is None:
        raise typer.BadParameter("--end needs --start", param_hint="'--end'")
    fields: dict[str, Any] = {"channels": names, "operator": operator}
    if start is not None:
        fields["start"] = parse_moment(start, "--start")
        if end is not None:
            fields["end"] = parse_moment(end, "--end")
    else:
        fields["since_seconds"] = parse_span(since or "1h")
    try:
        parameters = HistoryParameters.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(error["msg"].removeprefix("Value error, ")
                             for error in exc.errors())
        raise typer.BadParameter(problems) from None
    state = cli_state(ctx)
    archiver = build_archiver(state.config(), state.host)
    history = run_async(retrieve_history(archiver, parameters), f"archiver '{archiver.name}'")
    span = next(iter(history.values()))
    if as_json:
        print_json({"start": span["start"], "end": span["end"], "operator": operator,
                    "channels": {name: [{"timestamp": stamp, "value": value}
                                        for stamp, value in data["samples"]]
                                 for name, data in history.items()}})
    elif as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["channel", "timestamp", "value"])
        for name, data in history.items():
            for stamp, value in data["samples"]:
                writer.writerow([name, stamp, value if isinstance(value, str)
                                 else json.dumps(value)])
    else:
        rows = [(name, data["count"], _at(data, "first"), _at(data, "last"),
                 _number(data.get("min")), _number(data.get("max")), _number(data.get("mean")))
                for name, data in history.items()]
        from osprey_core.display.text import when

        print_table(f"history {when(span['start'])} .. {when(span['end'])}",
                    ("channel", "samples", "first", "last", "min", "max", "mean"), rows)
        typer.echo("Every sample: add --csv or --json.")


def _at(data: dict[str, Any], key: str) -> str:
    if key not in data:
        return ""
    from osprey_core.cli.channels import shown_value
    from osprey_core.display.text import when

    return f"{shown_value(data[key]['value'])} at {when(data[key]['timestamp'])}"


def _number(value: Any) -> str:
    return "" if value is None else f"{value:.6g}"
