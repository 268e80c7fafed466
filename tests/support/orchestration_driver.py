"""Drives osprey in a test subprocess: run (and hold until killed), or approve."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def barrier(directory: Path, name: str, parties: int) -> None:
    """Wait until ``parties`` processes reached this point (a file handshake)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.ready").touch()
    deadline = time.monotonic() + 30
    while len(list(directory.glob("*.ready"))) < parties:
        if time.monotonic() > deadline:
            raise SystemExit(f"barrier {directory}: timed out")
        time.sleep(0.005)


def main() -> int:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run")
    run.add_argument("query")
    run.add_argument("--planning", action="store_true")
    run.add_argument("--session", default="default")
    run.add_argument("--hold", action="store_true", help="stay alive until killed")
    approve = commands.add_parser("approve")
    approve.add_argument("approval_id")
    approve.add_argument("--user", default="driver")
    approve.add_argument("--barrier", type=Path)
    approve.add_argument("--parties", type=int, default=2)
    args = parser.parse_args()

    from osprey_core import Osprey
    from osprey_core.errors import OspreyError

    osprey = Osprey()
    if args.command == "run":
        record = osprey.run(args.query, session=args.session, user="driver",
                            planning=args.planning or None, interface="driver")
        print(json.dumps({"run_id": record.id, "state": str(record.state),
                          "approval_id": record.approval_id}), flush=True)
        if args.hold:
            sys.stdin.read()
        return 0
    if args.barrier is not None:
        from osprey_core.orchestration.orchestrator import Orchestrator

        opened = Orchestrator._open_approval

        def gated(self, approval_id, session):
            found = opened(self, approval_id, session)
            barrier(args.barrier, args.user, args.parties)
            return found

        Orchestrator._open_approval = gated
    try:
        record = osprey.approve(args.approval_id, user=args.user, interface="driver")
    except OspreyError as exc:
        print(json.dumps({"ok": False, "error": str(exc)}), flush=True)
        return 1
    print(json.dumps({"ok": True, "state": str(record.state)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
