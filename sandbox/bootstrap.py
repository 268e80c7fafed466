"""Runs inside the jail: ``python -I -u .../osprey_core/sandbox/bootstrap.py code.py``.

Standard library only. Runs the code with the runtime API and an empty ``results`` dict in
its globals; :mod:`outputs` then leaves ``results.json`` (unless ``results`` stayed empty),
``figures/figure_<n>.png`` (if matplotlib was used) and, after an uncaught exception,
``error.json`` in the working directory. Exit statuses 90 (out of memory) and 91 (CPU
limit) tell the host why the code stopped; see ``osprey_core.hookspecs.execution_backends``.
This file is compiled on every run (Python never caches the main script) and nothing heavy
is imported before the code asks for it: the run of ``pass`` must stay cheap.
"""

import _signal  # not `signal`: its enum import costs ~5 ms of every run's start
import os
import sys

EXIT_CODE_MEMORY = 90
EXIT_CODE_CPU = 91


def _cpu_limit(signum, frame):
    os.write(2, b"\nosprey: CPU-time limit reached\n")
    os._exit(EXIT_CODE_CPU)


def _warn_before_kill():
    """A soft CPU limit one second below the hard one: SIGXCPU, then exit 91, instead of
    a bare SIGKILL at the hard limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY and hard > 1 and (soft == resource.RLIM_INFINITY
                                                         or soft >= hard):
        resource.setrlimit(resource.RLIMIT_CPU, (hard - 1, hard))
    _signal.signal(_signal.SIGXCPU, _cpu_limit)


def _paths():
    """The shim package (osprey_core/sandbox/runtime.py, two levels above this file) first;
    site-packages last, by hand: the interpreter starts with -S, since importing ``site``
    costs ~2.5 ms of every run and only adds that one directory here."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    if "site" not in sys.modules:
        version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
        sys.path.append(os.path.join(sys.prefix, "lib", version, "site-packages"))


def main(path):
    _paths()
    _warn_before_kill()
    # Headless plotting, read by matplotlib only if the code imports it.
    os.environ["MPLBACKEND"] = "Agg"
    sys.warnoptions.append("ignore:FigureCanvasAgg is non-interactive:UserWarning")
    from osprey_core.sandbox import runtime

    filename = os.path.basename(path)
    with open(path, encoding="utf-8") as handle:
        source = handle.read()
    # exit()/quit() come from `site`, which -S skips; scripts still expect them.
    namespace = {"__name__": "__main__", "__file__": filename, "results": {},
                 "exit": sys.exit, "quit": sys.exit}
    namespace.update({name: getattr(runtime, name) for name in runtime.__all__})
    exit_request = None
    status = 0
    try:
        exec(compile(source, filename, "exec"), namespace)
    except MemoryError:
        os.write(2, b"\nosprey: out of memory\n")
        os._exit(EXIT_CODE_MEMORY)
    except SystemExit as exc:
        exit_request = exc
    except BaseException as exc:
        status = 1
        from osprey_core.sandbox import outputs

        outputs.report_failure(exc, source, filename)
    results = namespace.get("results")
    if not (type(results) is dict and not results) or "matplotlib.pyplot" in sys.modules:
        from osprey_core.sandbox import outputs

        outputs.finish(namespace)
    if exit_request is not None:
        raise exit_request
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "code.py"))
