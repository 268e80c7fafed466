"""One osprey worker process for the multi-worker tests and benchmark: it reads commands as
JSON lines on stdin and answers each with one JSON line on stdout.

``{"op": "run", "query": ...}`` submits a request (it pauses for its write's approval);
``{"op": "approve", "approval": ...}`` decides it here and runs the write here;
``{"op": "resume", "run": ..., "indeterminate": ...}`` continues an interrupted run;
``{"op": "refresh"}`` recovers runs whose owner is gone; ``{"op": "exit"}`` stops.
Configuration comes from the environment (``OSPREY_HOME``, ``OSPREY__*``,
``OSPREY_WORKER_HOST``), as for any osprey process.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def handle(osprey: Any, command: dict[str, Any]) -> dict[str, Any]:
    op = command["op"]
    if op == "refresh":
        osprey.refresh()
        return {}
    if op == "run":
        run = osprey.run(command["query"], session=command.get("session", "default"))
    elif op == "approve":
        run = osprey.approve(command["approval"])
    elif op == "resume":
        run = osprey.resume(command["run"], indeterminate=command.get("indeterminate"))
    else:
        raise ValueError(f"unknown op {op!r}")
    return {"run": run.id, "state": str(run.state), "approval": run.approval_id}


def main() -> None:
    from osprey_core.api import Osprey

    with Osprey() as osprey:
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            command = json.loads(line)
            if command["op"] == "exit":
                break
            started = time.perf_counter()
            try:
                reply = {"ok": True, **handle(osprey, command)}
            except Exception as exc:  # reported to the driver, which judges it
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            reply["seconds"] = time.perf_counter() - started
            print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
