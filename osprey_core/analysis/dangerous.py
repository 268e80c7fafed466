"""What makes code dangerous whatever it talks to: dynamic code, shell-outs, native code,
unpickling, dunder walking, and the command-line tools that write to a control system."""

from __future__ import annotations

import re

#: Dangerous callables (severity, reason): exact names, or prefixes ending in ``.``/``*``.
DANGEROUS: dict[str, tuple[str, str]] = {
    "exec": ("critical", "exec of dynamic code"),
    "eval": ("critical", "eval of dynamic code"),
    "compile": ("critical", "compile of dynamic code"),
    "__import__": ("critical", "dynamic import"),
    "breakpoint": ("critical", "breakpoint() can run arbitrary code"),
    "globals": ("high", "globals() access"),
    "locals": ("high", "locals() access"),
    "vars": ("high", "vars() access"),
    "importlib.": ("critical", "dynamic import"),
    "runpy.": ("critical", "dynamic code execution"),
    "code.": ("critical", "interactive interpreter"),
    "types.FunctionType": ("critical", "function built from a code object"),
    "types.CodeType": ("critical", "code object construction"),
    "sys._getframe": ("critical", "frame walking"),
    "subprocess.": ("critical", "shell-out via subprocess"),
    "os.system": ("critical", "shell-out via os.system"),
    "os.popen": ("critical", "shell-out via os.popen"),
    "os.exec*": ("critical", "process replacement via os.exec*"),
    "os.spawn*": ("critical", "process spawn via os.spawn*"),
    "os.fork*": ("critical", "fork"),
    "os.posix_spawn*": ("critical", "process spawn via os.posix_spawn"),
    "asyncio.create_subprocess_*": ("critical", "shell-out via asyncio subprocess"),
    "pty.": ("critical", "pseudo-terminal spawn"),
    "ctypes.": ("critical", "native code via ctypes"),
    "cffi.": ("critical", "native code via cffi"),
    "pickle.load*": ("high", "unpickling can run arbitrary code"),
    "pickle.Unpickler": ("high", "unpickling can run arbitrary code"),
    "cloudpickle.load*": ("high", "unpickling can run arbitrary code"),
    "dill.load*": ("high", "unpickling can run arbitrary code"),
    "marshal.load*": ("high", "marshal loading can build code objects"),
    "shelve.open": ("high", "shelve unpickles data"),
    "socket.": ("high", "raw socket access"),
}

#: Modules whose mere import is dangerous (native code, terminals).
DANGEROUS_IMPORTS: frozenset[str] = frozenset({"ctypes", "cffi", "pty"})

#: Dunder attributes that are ordinary in generated code; every other one is "walking".
BENIGN_DUNDERS: frozenset[str] = frozenset(
    {"__name__", "__doc__", "__version__", "__qualname__", "__module__", "__init__",
     "__enter__", "__exit__", "__len__", "__file__", "__all__"}
)

#: Command-line tools that write to a control system, looked for in shell-out strings.
WRITE_COMMANDS = re.compile(
    r"\b(caput|caproto-put|pvput|pvcall|tango_admin|write_attribute|command_inout|curl\s+.*-X\s*(POST|PUT|PATCH|DELETE))\b",
    re.IGNORECASE,
)

