"""The sandbox boundary with the real nsjail: what generated code can and cannot do.

The runtime (interpreter copy with numpy/matplotlib) is prepared once per session in
``OSPREY_TEST_SANDBOX_DIR`` (default ``/opt/osprey-sandbox``): needs root and the
``sandbox`` extra, as ``osprey sandbox setup`` does.
"""

from __future__ import annotations

import asyncio
import json
import marshal
import os
import socket
import subprocess
import sys
import warnings
from importlib.util import MAGIC_NUMBER
from pathlib import Path

import pytest
from support.sandbox import SANDBOX_DIR, SMALL, processes_with, run
from typer.testing import CliRunner

from osprey_core.cli import build_app
from osprey_core.cli.sandbox import sandbox_app
from osprey_core.hookspecs.execution_backends import ExecutionBackend, ExitReason, SandboxJob
from osprey_core.plugin_host import PluginHost
from osprey_core.plugins import execution_backends
from osprey_core.sandbox.local_backend import LocalBackend
from osprey_core.sandbox.nsjail_backend import NsjailBackend
from osprey_core.sandbox.podman_backend import PodmanBackend
from osprey_core.sandbox.prepare import prepare_runtime
from osprey_core.sandbox.spawn import precompile
from osprey_core.settings import ExecutionSettings, SandboxLimits
from osprey_core.testing import PluginRegistrar


@pytest.fixture(scope="session")
def settings() -> ExecutionSettings:
    settings = ExecutionSettings(runtime_dir=SANDBOX_DIR)
    prepare_runtime(settings)
    return settings


@pytest.fixture
def jail(settings: ExecutionSettings, tmp_path: Path) -> NsjailBackend:
    return NsjailBackend(settings, tmp_path)


#: The isolated backends: the containment tests hold for each (real nsjail, real podman).
ISOLATED = [NsjailBackend, PodmanBackend]


@pytest.fixture(params=ISOLATED, ids=lambda backend: backend.name)
def contained(request: pytest.FixtureRequest, settings: ExecutionSettings,
              tmp_path: Path) -> ExecutionBackend:
    backend: ExecutionBackend = request.param(settings, tmp_path)
    return backend


def test_plain_code_runs_and_its_files_come_back(contained: ExecutionBackend,
                                                 tmp_path: Path) -> None:
    seen: list[tuple[str, str]] = []
    code = ("import os, sys\nprint('hello', os.getuid(), os.getcwd(), sys.flags.isolated)\n"
            "print(open('input.csv').read())\nopen('result.txt', 'w').write('42')\n")
    ran = run(contained, code, tmp_path / "out", files={"input.csv": b"a,b"},
              on_output=lambda stream, text: seen.append((stream, text)))
    assert ran.outcome.exit_reason is ExitReason.OK, ran.outcome.stderr
    assert ran.outcome.stdout == "hello 65534 /work 1\na,b\n"
    assert "".join(text for stream, text in seen if stream == "stdout") == ran.outcome.stdout
    assert (ran.output_dir / "result.txt").read_text() == "42"
    assert ran.outcome.isolated and ran.outcome.backend == contained.name


def test_no_network_neither_loopback_nor_a_route_out(contained: ExecutionBackend,
                                                      tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        # UDP connect() only looks up a route, so no packet leaves even if isolation failed.
        code = f"""
import socket
def attempt(make):
    try:
        make()
        return "connected"
    except OSError as exc:
        return exc.strerror
print(attempt(lambda: socket.create_connection(("127.0.0.1", {port}), timeout=2)))
print(attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).connect(("192.0.2.1", 53))))
print([name for _, name in socket.if_nameindex()])
"""
        ran = run(contained, code, tmp_path / "out")
        server.settimeout(0)
        with pytest.raises(BlockingIOError):
            server.accept()
    # nsjail leaves the jail's loopback down; podman's is up but the container's own, with
    # nothing listening: either way the host's server above saw no connection
    loopback = "Connection refused" if contained.name == "podman" else "Network is unreachable"
    assert ran.outcome.stdout.splitlines() == [loopback, "Network is unreachable", "['lo']"]


def test_host_secrets_and_files_are_invisible(contained: ExecutionBackend, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-from-the-host")
    code = """
import json, os
def read(path):
    try:
        return open(path).read()[:20]
    except OSError as exc:
        return exc.strerror
print(json.dumps({"env": dict(os.environ), "shadow": read("/etc/shadow"),
                  "home": read("/root/.bashrc"),
                  "proc": sorted(name for name in os.listdir("/proc") if name.isdigit())
                          if os.path.exists("/proc") else None}))
"""
    ran = run(contained, code, tmp_path / "out", env={"EXTRA": "given"})
    report = json.loads(ran.outcome.stdout)
    assert "sk-secret" not in ran.outcome.stdout
    assert set(report["env"]) == {"PATH", "HOME", "LANG", "TMPDIR", "MPLBACKEND",
                                  "MPLCONFIGDIR", "EXTRA", "OSPREY_TEST_RUN"}
    assert report["env"]["HOME"] == "/work"
    assert report["shadow"] == report["home"] == "No such file or directory"
    # nsjail mounts no /proc; podman always does, showing the container's own process only
    assert report["proc"] == (["1"] if contained.name == "podman" else None)


def test_only_the_work_dir_is_writable(contained: ExecutionBackend, settings: ExecutionSettings,
                                       tmp_path: Path) -> None:
    targets = ["/tmp/x", "/x", "/usr/lib/x", f"{os.path.realpath(sys.base_prefix)}/x",
               f"{settings.runtime_dir}/lib/x", "/dev/x"]
    code = f"""
for path in {targets!r}:
    try:
        open(path, "w").write("x")
        print(path, "written")
    except OSError as exc:
        print(path, exc.strerror)
"""
    ran = run(contained, code, tmp_path / "out")
    assert "written" not in ran.outcome.stdout, ran.outcome.stdout
    assert len(ran.outcome.stdout.splitlines()) == len(targets)


def test_fork_bomb_and_subprocesses_fail_at_once(contained: ExecutionBackend,
                                                 tmp_path: Path) -> None:
    code = """
import os, subprocess
for spawn in (lambda: subprocess.run(["/bin/true"]),
              lambda: os.posix_spawn(os.sys.executable, ["python", "-c", "pass"], {})):
    try:
        spawn()
        print("spawned")
    except OSError as exc:
        print(exc.strerror)
while True:
    os.fork()
"""
    ran = run(contained, code, tmp_path / "out")
    assert ran.outcome.exit_reason is ExitReason.ERROR
    assert ran.outcome.stdout.splitlines() == ["Operation not permitted"] * 2
    assert "PermissionError" in ran.outcome.stderr


def test_only_stdio_and_the_broker_reach_the_jail(contained: ExecutionBackend,
                                                  tmp_path: Path) -> None:
    # nsjail's config and log are in-memory files at descriptors 4 and 5 of nsjail only
    code = """
import os
def is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False
print([fd for fd in range(64) if is_open(fd)])
"""
    host_end, jail_end = socket.socketpair()
    with host_end, jail_end:
        with_broker = run(contained, code, tmp_path / "a", broker_fd=jail_end.fileno())
    without = run(contained, code, tmp_path / "b")
    assert with_broker.outcome.stdout == "[0, 1, 2, 3]\n", with_broker.outcome.stderr
    assert without.outcome.stdout == "[0, 1, 2]\n"


def test_code_compiled_by_the_host_reports_like_code_compiled_in_the_jail(
        contained: ExecutionBackend, tmp_path: Path) -> None:
    ran = run(contained, "import sys\nprint(sys.argv, __file__)\n", tmp_path / "ok")
    assert ran.outcome.stdout == "['code.py'] code.py\n"
    assert sorted(path.name for path in ran.output_dir.iterdir()) == ["code.py"]
    # a warning or an error while compiling: the jail compiles and reports it itself
    warned = run(contained, "print('\\d')\n", tmp_path / "warned")
    assert "SyntaxWarning: invalid escape sequence" in warned.outcome.stderr
    assert warned.outcome.stdout == "\\d\n"
    broken = run(contained, "x = 1\ny = (\n", tmp_path / "broken")
    assert broken.outcome.exit_reason is ExitReason.ERROR
    error = json.loads((broken.output_dir / "error.json").read_text())
    assert (error["type"], error["line"]) == ("SyntaxError", 2)
    assert run(contained, "pass", tmp_path / "reserved", files={".code.pyc": b"x"}).outcome \
        .exit_reason is ExitReason.START_FAILED


def test_precompile_leaves_warnings_and_errors_to_the_jail() -> None:
    compiled = precompile(b"x = 1\n")
    assert compiled is not None and compiled.startswith(MAGIC_NUMBER)
    assert marshal.loads(compiled[len(MAGIC_NUMBER):]).co_filename == "code.py"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert precompile(b"print('\\d')\n") is None
    assert caught == []  # nothing shown on the host
    assert precompile(b"y = (\n") is precompile(b"\xff") is precompile(b"\0") is None


def test_threads_numpy_and_a_matplotlib_figure(contained: ExecutionBackend, tmp_path: Path) -> None:
    code = """
from concurrent.futures import ThreadPoolExecutor
import matplotlib.pyplot as plt
import numpy as np
with ThreadPoolExecutor(4) as pool:
    print(sum(pool.map(lambda n: n * n, range(10))))
matrix = np.random.default_rng(0).random((300, 300))
print((matrix @ matrix).shape)
plt.plot(np.sin(np.linspace(0, 6, 50)))
plt.savefig("figure.png")
"""
    ran = run(contained, code, tmp_path / "out",
              limits=SMALL.model_copy(update={"memory_mb": 1024, "cpu_seconds": 20}))
    assert ran.outcome.exit_reason is ExitReason.OK, ran.outcome.stderr
    assert ran.outcome.stdout.splitlines() == ["285", "(300, 300)"]
    assert (ran.output_dir / "figure.png").read_bytes().startswith(b"\x89PNG")


def test_pandas_imports_and_exit_works_without_site(contained: ExecutionBackend,
                                                    tmp_path: Path) -> None:
    # The jail starts Python with -S (faster); site-packages and exit() must still be there.
    code = "import pandas\nprint(pandas.Series([1, 2]).sum())\nexit(3)\n"
    ran = run(contained, code, tmp_path / "out",
              limits=SMALL.model_copy(update={"memory_mb": 1024, "cpu_seconds": 20}))
    assert ran.outcome.returncode == 3 and ran.outcome.stdout == "3\n", ran.outcome.stderr


@pytest.mark.parametrize(("code", "reason"), [
    ("x = bytearray(10**10)", ExitReason.MEMORY),
    ("chunks = []\nwhile True:\n    chunks.append(b'x' * 10**6)", ExitReason.MEMORY),
    ("while True:\n    pass", ExitReason.CPU),
    ("import time\ntime.sleep(60)", ExitReason.TIMEOUT),
    ("i = 0\nwhile True:\n    open(f'f{i}', 'wb').write(b'x' * 10**6)\n    i += 1",
     ExitReason.DISK_FULL),
    ("open('big', 'wb').write(b'x' * 5 * 2**20)", ExitReason.DISK_FULL),
    ("while True:\n    print('x' * 1000)", ExitReason.OUTPUT_CAP),
], ids=["memory-at-once", "memory-growing", "cpu", "wall", "disk-many-files",
        "disk-one-big-file", "print-flood"])
def test_bombs_stop_with_the_right_reason(contained: ExecutionBackend, tmp_path: Path, code: str,
                                          reason: ExitReason) -> None:
    limits = SMALL.model_copy(update={"wall_seconds": 1.5}) if reason is ExitReason.TIMEOUT \
        else SMALL
    ran = run(contained, code, tmp_path / "out", limits=limits)
    assert ran.outcome.exit_reason is reason, (ran.outcome.returncode, ran.outcome.stderr)
    assert len(ran.outcome.stdout) + len(ran.outcome.stderr) <= SMALL.output_bytes
    assert ran.outcome.output_truncated is (reason is ExitReason.OUTPUT_CAP)


def test_planted_symlinks_are_not_followed(contained: ExecutionBackend, tmp_path: Path) -> None:
    code = ("import os\nos.symlink('/etc/passwd', 'leak')\nos.symlink('/etc', 'tree')\n"
            "open('real.txt', 'w').write('ok')\n")
    ran = run(contained, code, tmp_path / "out")
    assert ran.outcome.exit_reason is ExitReason.OK
    assert sorted(path.name for path in ran.output_dir.iterdir()
                  if path.suffix != ".json") == ["code.py", "real.txt"]
    assert {"leak: symlink not followed", "tree: symlink not followed"} <= set(
        ran.outcome.notes)


@pytest.mark.parametrize("backend_class", [*ISOLATED, LocalBackend])
def test_broker_socket_is_fd_3(backend_class: type, settings: ExecutionSettings,
                               tmp_path: Path) -> None:
    host_end, jail_end = socket.socketpair()
    code = """
import os, socket, stat
assert stat.S_ISSOCK(os.fstat(3).st_mode)
broker = socket.socket(fileno=3)
broker.sendall(f"fd {os.environ['OSPREY_BROKER_FD']}".encode())
"""
    with host_end, jail_end:
        ran = run(backend_class(settings, tmp_path), code, tmp_path / "out",
                  broker_fd=jail_end.fileno())
        assert ran.outcome.exit_reason is ExitReason.OK, ran.outcome.stderr
        assert host_end.recv(100) == b"fd 3"


def test_local_backend_runs_code_but_says_it_is_not_isolated(
        settings: ExecutionSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-from-the-host")
    code = "import os\nprint(sorted(os.environ))\nopen('out.txt', 'w').write('x')\n"
    ran = run(LocalBackend(settings, tmp_path), code, tmp_path / "out")
    assert ran.outcome.exit_reason is ExitReason.OK, ran.outcome.stderr
    assert "OPENAI_API_KEY" not in ran.outcome.stdout
    assert not ran.outcome.isolated and LocalBackend.isolated is False
    assert any("NO ISOLATION" in note for note in ran.outcome.notes)
    assert (ran.output_dir / "out.txt").read_text() == "x"


def test_local_backend_applies_the_limits(settings: ExecutionSettings, tmp_path: Path) -> None:
    backend = LocalBackend(settings, tmp_path)
    assert run(backend, "x = bytearray(10**10)", tmp_path / "a").outcome.exit_reason \
        is ExitReason.MEMORY
    assert run(backend, "while True:\n    print('x' * 1000)", tmp_path / "b").outcome \
        .exit_reason is ExitReason.OUTPUT_CAP


def test_cancelling_a_run_kills_it_and_cleans_up(contained: ExecutionBackend,
                                                 tmp_path: Path) -> None:
    scratch = SANDBOX_DIR / "scratch"
    before = set(scratch.iterdir())
    job = SandboxJob("import time\nprint('started')\ntime.sleep(60)", SMALL, tmp_path / "out",
                     env={"OSPREY_TEST_RUN": "cancel-marker"})

    async def cancel_once_started() -> None:
        started = asyncio.Event()
        task = asyncio.create_task(contained.run(job, lambda stream, text: started.set()))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_once_started())
    assert processes_with("cancel-marker") == []
    assert set(scratch.iterdir()) <= before


def test_podman_leaves_no_container_behind(settings: ExecutionSettings, tmp_path: Path) -> None:
    backend = PodmanBackend(settings, tmp_path)
    quick = SMALL.model_copy(update={"wall_seconds": 1.5})
    for index, code in enumerate(["print(1)", "import time\ntime.sleep(60)",
                                  "while True:\n    print('x' * 1000)", "raise SystemExit(4)"]):
        run(backend, code, tmp_path / f"out{index}", limits=quick)
    listed = subprocess.run(["podman", "ps", "-a", "-q", "--filter",
                             "label=io.osprey.sandbox=run"], capture_output=True, text=True,
                            check=True).stdout
    assert listed == ""


def test_unprepared_runtime_fails_to_start_with_the_fix(tmp_path: Path) -> None:
    backend = NsjailBackend(ExecutionSettings(runtime_dir=tmp_path / "none"), tmp_path)
    ran = run(backend, "print(1)", tmp_path / "out")
    assert ran.outcome.exit_reason is ExitReason.START_FAILED
    assert "osprey sandbox setup" in ran.outcome.stderr


def test_input_files_cannot_escape_the_work_dir(contained: ExecutionBackend,
                                                tmp_path: Path) -> None:
    ran = run(contained, "pass", tmp_path / "out", files={"../escape": b"x"})
    assert ran.outcome.exit_reason is ExitReason.START_FAILED
    assert "../escape" in ran.outcome.stderr


def test_check_reports_a_working_jail(jail: NsjailBackend) -> None:
    items = {item.name: item for item in jail.check()}
    assert all(item.ok for item in items.values()), [i for i in items.values() if not i.ok]
    assert items["jail: process creation"].detail.startswith("refused")
    assert items["jail: namespaces"].detail.startswith("refused")
    assert items["trial print(1)"].detail.startswith("ok")


def test_check_reports_a_working_podman_container(settings: ExecutionSettings,
                                                  tmp_path: Path) -> None:
    items = {item.name: item for item in PodmanBackend(settings, tmp_path).check()}
    assert all(item.ok for item in items.values()), [i for i in items.values() if not i.ok]
    assert items["jail: process creation"].detail.startswith("refused")
    assert items["container: network"].detail.startswith("no route out")
    assert items["podman"].detail.startswith("podman version")


def test_setup_again_is_a_quick_no_op(settings: ExecutionSettings) -> None:
    messages: list[str] = []
    info = prepare_runtime(settings, progress=messages.append)
    assert not any("copying" in message or "installing" in message for message in messages)
    assert {"numpy", "matplotlib", "pandas"} <= set(info.packages)


def test_limits_never_loosen() -> None:
    assert SandboxLimits().tightened({"memory_mb": 4096}).memory_mb == 1024


@pytest.mark.exercises_hook("register_execution_backends")
def test_builtin_backends_are_registered(osprey_host: PluginHost,
                                         register_plugin: PluginRegistrar) -> None:
    register_plugin(execution_backends)
    backends = osprey_host.execution_backends()
    assert backends.get("nsjail") is NsjailBackend and NsjailBackend.isolated
    assert backends.get("local") is LocalBackend and not LocalBackend.isolated
    assert backends.get("podman") is PodmanBackend and PodmanBackend.isolated


def test_cli_setup_and_check(osprey_host: PluginHost, register_plugin: PluginRegistrar,
                             cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(cwd)
    register_plugin(execution_backends)
    app = build_app(osprey_host)
    if not any(group.name == "sandbox" for group in app.registered_groups):
        app.add_typer(sandbox_app, name="sandbox")  # until core_commands registers it
    runner = CliRunner()
    setup = runner.invoke(app, ["sandbox", "setup", "--runtime-dir", str(SANDBOX_DIR)])
    assert setup.exit_code == 0, setup.output
    assert "sandbox runtime ready" in setup.stdout
    check = runner.invoke(app, ["sandbox", "check", "--json", "--runtime-dir", str(SANDBOX_DIR)])
    assert check.exit_code == 0, check.output
    report = json.loads(check.stdout)
    assert (report["backend"], report["isolated"], report["ok"]) == ("nsjail", True, True)
    missing = runner.invoke(app, ["sandbox", "check", "--json", "--runtime-dir",
                                  str(cwd / "nothing")])
    assert missing.exit_code == 1
    assert "osprey sandbox setup" in missing.stdout


def test_plots_reuse_the_font_cache_built_at_setup(jail: NsjailBackend, settings: ExecutionSettings,
                                                   tmp_path: Path) -> None:
    from osprey_core.sandbox.interpreter import load_runtime

    runtime = load_runtime(settings.runtime_dir)
    assert runtime is not None and ".mpl/fontlist-" in " ".join(runtime.seed_files())
    code = ("import os\nprint(sorted(os.listdir('.mpl')))\n"  # before matplotlib is imported
            "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.savefig('plot.png')\n")
    ran = run(jail, code, tmp_path / "out",
              limits=SMALL.model_copy(update={"memory_mb": 1024, "cpu_seconds": 20}))
    assert ran.outcome.exit_reason is ExitReason.OK, ran.outcome.stderr
    assert "fontlist-" in ran.outcome.stdout
    assert (ran.output_dir / "plot.png").is_file()
    assert not (ran.output_dir / ".mpl").exists()  # the runtime's files stay out of results
