"""Runs inside the jail: ``python -I -u .../osprey_core/sandbox/bootstrap.py code.py``, or
``main("code.py")`` from a ``-c`` one-liner (:data:`LAUNCHER`), which loads this module
precompiled instead of compiling it as a main script on every run.

Standard library only. Runs the code with the runtime API and an empty ``results`` dict in
its globals; :mod:`outputs` then leaves ``results.json`` (unless ``results`` stayed empty),
``figures/figure_<n>.png`` (if matplotlib was used) and, after an uncaught exception,
``error.json`` in the working directory. Exit statuses 90 (out of memory) and 91 (CPU
limit) tell the host why the code stopped; see ``osprey_core.hookspecs.execution_backends``.
Nothing heavy is imported before the code asks for it: the run of ``pass`` must stay cheap.
"""

import _signal  # not `signal`: its enum import costs ~5 ms of every run's start
import marshal
import os
import sys

EXIT_CODE_MEMORY = 90
EXIT_CODE_CPU = 91
#: The code, compiled by the host, next to ``code.py`` (see :func:`_code`).
PRECOMPILED = ".code.pyc"
#: ``python -I -S -u -c LAUNCHER.format(lib=..., cpu=...)`` runs ``code.py`` in the working
#: directory, stopping it with exit 91 after ``cpu`` seconds of CPU time.
LAUNCHER = ("import sys; sys.path.insert(0, {lib!r}); "
            "from osprey_core.sandbox.bootstrap import main; sys.exit(main('code.py', {cpu!r}))")


def _cpu_limit(signum, frame):
    os.write(2, b"\nosprey: CPU-time limit reached\n")
    os._exit(EXIT_CODE_CPU)


def _warn_before_kill(cpu_seconds):
    """Exit 91 with a message at the CPU limit, instead of a bare SIGKILL at the hard
    RLIMIT_CPU one second later: by a CPU-time timer when the limit is given (cheaper than
    importing ``resource``), else by a soft RLIMIT_CPU one second below the hard one."""
    _signal.signal(_signal.SIGXCPU, _cpu_limit)
    if cpu_seconds is not None:
        _signal.signal(_signal.SIGPROF, _cpu_limit)
        _signal.setitimer(_signal.ITIMER_PROF, cpu_seconds)
        return
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY and hard > 1 and (soft == resource.RLIM_INFINITY
                                                         or soft >= hard):
        resource.setrlimit(resource.RLIMIT_CPU, (hard - 1, hard))


def _paths():
    """The shim package (osprey_core/sandbox/runtime.py, two levels above this file) first;
    site-packages last, by hand: the interpreter starts with -S, since importing ``site``
    costs ~2.5 ms of every run and only adds that one directory here."""
    shim = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if shim not in sys.path:
        sys.path.insert(0, shim)
    if "site" not in sys.modules:
        version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
        sys.path.append(os.path.join(sys.prefix, "lib", version, "site-packages"))


def main(path, cpu_seconds=None):
    _paths()
    _warn_before_kill(cpu_seconds)
    # Headless plotting, read by matplotlib only if the code imports it.
    os.environ["MPLBACKEND"] = "Agg"
    sys.warnoptions.append("ignore:FigureCanvasAgg is non-interactive:UserWarning")
    from osprey_core.sandbox import runtime

    filename = os.path.basename(path)
    sys.argv[:] = [filename]
    source, code = _code(path)
    # exit()/quit() come from `site`, which -S skips; scripts still expect them.
    namespace = {"__name__": "__main__", "__file__": filename, "results": {},
                 "exit": sys.exit, "quit": sys.exit}
    namespace.update({name: getattr(runtime, name) for name in runtime.__all__})
    exit_request = None
    status = 0
    try:
        exec(code or compile(source, filename, "exec"), namespace)
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


def _code(path):
    """The source, and its code object if the host compiled it (else ``None``).

    The host compiles ``code.py`` when it can (``osprey_core.sandbox.spawn.precompile``):
    the first ``compile()`` in a process builds the ``ast`` module's types, about 3 ms of
    every run. The file is removed at once, so it is never taken for a result. Without it
    the code is compiled in :func:`main`, which reports its errors and warnings as usual.
    """
    try:
        with open(PRECOMPILED, "rb") as handle:
            data = handle.read()
        os.unlink(PRECOMPILED)
    except OSError:
        data = b""
    with open(path, encoding="utf-8") as handle:
        source = handle.read()
    from _frozen_importlib_external import MAGIC_NUMBER  # loaded already: costs nothing

    if not data.startswith(MAGIC_NUMBER):
        return source, None
    return source, marshal.loads(data[len(MAGIC_NUMBER):])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "code.py"))
