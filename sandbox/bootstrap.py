"""Runs inside the jail: ``python -I -u .../osprey_core/sandbox/bootstrap.py code.py``.

Standard library only. Exit statuses 90 (out of memory) and 91 (CPU limit) tell the host
why the code stopped; see ``osprey_core.hookspecs.execution_backends``.
"""

import os
import signal
import sys
import traceback

EXIT_CODE_MEMORY = 90
EXIT_CODE_CPU = 91


def _cpu_limit(signum, frame):
    os.write(2, b"\nosprey: CPU-time limit reached\n")
    os._exit(EXIT_CODE_CPU)


def main(path):
    # The shim package (osprey_core/sandbox/runtime.py) sits two levels above this file.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    signal.signal(signal.SIGXCPU, _cpu_limit)
    with open(path, encoding="utf-8") as handle:
        source = handle.read()
    namespace = {"__name__": "__main__", "__file__": os.path.basename(path)}
    try:
        exec(compile(source, os.path.basename(path), "exec"), namespace)
    except MemoryError:
        os.write(2, b"\nosprey: out of memory\n")
        os._exit(EXIT_CODE_MEMORY)
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "code.py"))
