"""Running code through the real bootstrap and broker, without nsjail.

The bootstrap runs as a real subprocess from a shim package built like the backends build
it (only the in-jail modules, no osprey imports), with the broker's socket inherited;
the host serves the broker in the test's event loop. The simulated ``mock`` machine is
built from a config file, through the same service the execution service uses.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import osprey_core.sandbox
from osprey_core.config import load_config
from osprey_core.control.service import build_archiver, build_control_system
from osprey_core.control.system import ControlSystem
from osprey_core.hookspecs.archivers import ArchiverConnector
from osprey_core.plugin_host import load_plugins
from osprey_core.sandbox import IN_JAIL_MODULES
from osprey_core.sandbox.broker import Broker, BrokerReport

SANDBOX_SOURCE = Path(osprey_core.sandbox.__file__).parent
#: Limits of the mock machine's corrector in these tests.
HCM1_LIMITS = {"writable": True, "min": -5, "max": 5, "max_step": 3,
               "verification": "readback", "readback_channel": "HCM1:RB",
               "tolerance": {"absolute": 0.01}}


def build_shim(root: Path) -> Path:
    """A library folder holding only ``osprey_core.sandbox``'s in-jail modules; returns
    the path of its ``bootstrap.py``."""
    package = root / "lib" / "osprey_core" / "sandbox"
    package.mkdir(parents=True)
    (package.parent / "__init__.py").write_text("", encoding="utf-8")
    (package / "__init__.py").write_text("", encoding="utf-8")
    for name in IN_JAIL_MODULES:
        shutil.copy(SANDBOX_SOURCE / name, package / name)
    return package / "bootstrap.py"


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str
    work: Path
    report: BrokerReport | None

    def results(self) -> dict[str, Any]:
        return json.loads((self.work / "results.json").read_text(encoding="utf-8"))


async def run_code(code: str, root: Path, *, broker: Broker | None = None,
                   timeout: float = 60.0) -> Ran:
    """Run ``code`` through the bootstrap in ``root/work`` while ``broker`` serves it."""
    bootstrap = root / "lib" / "osprey_core" / "sandbox" / "bootstrap.py"
    if not bootstrap.exists():
        build_shim(root)
    work = root / "work"
    work.mkdir(exist_ok=True)
    (work / "code.py").write_text(code, encoding="utf-8")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work),
           "TMPDIR": str(work), "MPLBACKEND": "Agg", "MPLCONFIGDIR": str(work / ".mpl")}
    fds: tuple[int, ...] = ()
    if broker is not None:
        fd = broker.open()
        env["OSPREY_BROKER_FD"] = str(fd)
        fds = (fd,)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-I", "-u", str(bootstrap), "code.py", cwd=work, env=env,
        pass_fds=fds, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    serving = None
    if broker is not None:
        broker.release_child_fd()
        serving = asyncio.create_task(broker.serve())
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    report = None
    if broker is not None:
        report = await asyncio.wait_for(broker.close(), 10)
        assert serving is not None and serving.done()
    assert process.returncode is not None
    return Ran(process.returncode, stdout.decode(), stderr.decode(), work, report)


def mock_machine(root: Path, **control_system: Any
                 ) -> tuple[ControlSystem, ArchiverConnector]:
    """The simulated machine with writes enabled and HCM1:SP limited (home under root)."""
    settings: dict[str, Any] = {"type": "mock", "writes_enabled": True, "verify_timeout": 5.0,
                                "limits": {"channels": {"HCM1:SP": HCM1_LIMITS}}}
    settings.update(control_system)
    config_file = root / "osprey.yml"
    config_file.write_text(json.dumps({"control_system": settings,
                                       "archiver": {"type": "mock"}}), encoding="utf-8")
    host = load_plugins(environ={"OSPREY_LOAD_PLUGINS": "mock_connector,mock_archiver",
                                 "OSPREY_STRICT_PLUGINS": "1"})
    config = load_config(host, config_file, environ={"OSPREY_HOME": str(root / "home")})
    return (build_control_system(config, host, notice=None),
            build_archiver(config, host, notice=None))


def sha256(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()
