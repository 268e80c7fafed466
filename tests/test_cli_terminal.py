"""Terminal manners: tables in pipes and narrow terminals, Ctrl-C on ``run`` and in ``chat``
(driven through a real pseudo-terminal), local times with their offset, ``--version``,
``--quiet`` and the "did not understand" exit code."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import signal
import sys
import time
from pathlib import Path

import pytest
from support.cli import assert_exit, osprey
from support.dist import osprey_env
from test_transcripts import CONFIG

pytestmark = pytest.mark.exercises_hook("register_commands")

APPROVAL_ID = re.compile(r"apv-[0-9a-f]{12}")
RUN_ID = re.compile(r"run-[0-9a-f]{12}")


@pytest.fixture
def env(tmp_path: Path, cwd: Path) -> dict[str, str]:
    (cwd / "osprey.yml").write_text(json.dumps(CONFIG), encoding="utf-8")
    environment = osprey_env(tmp_path / "home", TZ="UTC")
    environment.pop("COLUMNS")
    return environment


class Terminal:
    """``osprey ARGS`` on a pseudo-terminal: what an operator types and sees."""

    def __init__(self, *args: str, env: dict[str, str], cwd: Path,
                 term: str = "dumb") -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: a session leader with the pty as its terminal
            # An operator's shell starts with Ctrl-C deliverable; the test process may have
            # blocked or ignored SIGINT (libraries loaded by earlier tests), and both survive
            # exec.
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.chdir(cwd)
            os.execve(sys.executable, [sys.executable, "-m", "osprey_core", *args],
                      {**env, "COLUMNS": "120", "TERM": term})
        self.seen = ""
        self.read_up_to = 0  # expect() looks only past its last match, like pexpect

    def expect(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while not (found := re.compile(pattern).search(self.seen, self.read_up_to)):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise AssertionError(f"no {pattern!r} within {timeout} s in:\n{self.seen}")
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:  # the child closed the terminal
                chunk = b""
            if not chunk:
                raise AssertionError(f"ended without {pattern!r}:\n{self.seen}")
            self.seen += chunk.decode("utf-8", "replace").replace("\r\n", "\n")
        self.read_up_to = found.end()
        return found

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def exit_code(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with_data = select.select([self.fd], [], [], 0.2)[0]
            if with_data:
                with contextlib.suppress(OSError):
                    self.seen += os.read(self.fd, 4096).decode("utf-8", "replace")
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError(f"still running after {timeout} s:\n{self.seen}")


def ok(env: dict[str, str], cwd: Path, *args: str, code: int = 0) -> str:
    result = osprey(*args, env=env, cwd=cwd, timeout=120)
    assert_exit(result, code)
    return result.stdout


# -- tables ---------------------------------------------------------------------------------


@pytest.mark.parametrize("columns", [None, "80"])
def test_piped_tables_keep_ids_whole_and_show_what_an_approval_is_about(env, cwd, columns):
    long_request = "set HCM1:SP to 1.5 A " + "please " * 20
    approval_id = APPROVAL_ID.search(ok(env, cwd, "run", long_request, code=3))[0]
    narrow = {**env, **({"COLUMNS": columns} if columns else {})}
    listing = ok(narrow, cwd, "approvals", "list")
    [row] = [line for line in listing.splitlines() if approval_id in line]
    assert "pending" in row and "channel_" in row  # "channel_write", folded when narrow
    assert "Write 1" in row  # the summary column (folded when narrow)
    runs = ok(narrow, cwd, "runs", "list")
    run_id = RUN_ID.search(runs)[0]
    assert any(run_id in line and approval_id in line for line in runs.splitlines()), runs
    if columns is None:  # a pipe is wide: one line per row
        assert "please please" in runs and len(max(runs.splitlines(), key=len)) <= 200


# -- Ctrl-C ---------------------------------------------------------------------------------


def test_ctrl_c_on_run_names_the_run_and_how_to_resume_it(env, cwd):
    term = Terminal("run", "plot SR:CURRENT over the last hour", env=env, cwd=cwd,
                    term="xterm")  # a terminal that can animate a spinner
    term.expect(r"run-[0-9a-f]{12}: executing")  # the spinner says what is going on
    term.type("\x03")
    assert term.exit_code() == 130
    term.read_up_to = 0
    run_id = term.expect(r"Interrupted: run (run-[0-9a-f]{12}) stopped")[1]
    assert f"resume it: osprey runs resume {run_id}" in term.seen
    [run] = json.loads(ok(env, cwd, "runs", "list", "--json"))
    assert (run["id"], run["state"]) == (run_id, "interrupted")
    resumed = ok(env, cwd, "runs", "resume", run_id)
    assert resumed.startswith("Python (read-only) ran in ")


def test_chat_ctrl_c_at_an_approval_leaves_it_pending_and_says_how_to_decide(env, cwd, tmp_path):
    term = Terminal("chat", env=env, cwd=cwd)
    term.expect("you> ")
    term.type("set HCM1:SP to 1.5 A\r")
    term.expect(r"approve\? \[yes/no/show\] ")  # a write cannot be edited: not offered
    # Python's readline notices a signal only once it waits for input: a ^C that lands
    # between the prompt and that wait is seen at the next key. Let it settle first.
    time.sleep(0.5)
    term.type("\x03")
    approval_id = term.expect(r"left pending; decide later with: osprey approvals approve "
                              r"(apv-[0-9a-f]{12})")[1]
    term.expect(rf"osprey approvals reject {approval_id}")
    term.expect("you> ")
    term.type("read SR:CURRENT\r")
    term.expect(r"SR:CURRENT +\d+\.\d+ +mA")
    term.expect("you> ")
    term.type("exit\r")
    assert term.exit_code() == 0
    [approval] = json.loads(ok(env, cwd, "approvals", "list", "--json"))
    assert (approval["id"], approval["status"]) == (approval_id, "pending")
    history = (tmp_path / "home" / "chat_history").read_text(encoding="utf-8")
    assert "set HCM1:SP to 1.5 A" in history and "read SR:CURRENT" in history

    again = Terminal("chat", env=env, cwd=cwd)  # the history is there in the next session
    again.expect("you> ")
    again.type("\x1b[A")  # arrow up: the last request comes back for editing
    again.expect("exit")
    again.type("\x1b[A\r")
    again.expect(r"SR:CURRENT +\d+\.\d+ +mA[^\n]*\n(?:.*\n)*you> ")
    again.type("\x04")
    assert again.exit_code() == 0


def test_chat_ctrl_c_while_a_step_runs_names_the_run_and_how_to_resume_it(env, cwd):
    term = Terminal("chat", env=env, cwd=cwd, term="xterm")
    term.expect("you> ")
    term.type("plot SR:CURRENT over the last hour\r")
    term.expect(r"run-[0-9a-f]{12}: executing")
    term.type("\x03")
    assert term.exit_code() == 130
    run_id = term.expect(r"Interrupted: run (run-[0-9a-f]{12}) stopped")[1]
    assert f"resume it: osprey runs resume {run_id}" in term.seen


def test_chat_offers_edit_where_editing_is_possible(env, cwd):
    term = Terminal("chat", env=env, cwd=cwd)
    term.expect("you> ")
    term.type("remember that my default BPM set is BPM01-BPM04\r")
    term.expect(r"approve\? \[yes/no/show/edit\] ")
    term.type("yes\r")
    term.expect(r"Saved to the memory of \S+ as mem-.*\n(?:.*\n)*you> ")
    term.type("\x04")
    assert term.exit_code() == 0


# -- times, version, quiet, exit codes ------------------------------------------------------


def test_times_are_local_with_their_offset_unless_utc_is_asked(env, cwd):
    ok(env, cwd, "run", "read SR:CURRENT")
    berlin = {**env, "TZ": "Europe/Berlin"}
    [run] = json.loads(ok(berlin, cwd, "runs", "list", "--json"))
    created = run["created_at"]  # JSON stays UTC ISO 8601
    assert created.endswith("+00:00") or created.endswith("Z")
    answer = ok(berlin, cwd, "runs", "show", run["id"])
    assert re.search(r"created \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+0[12]:00", answer), answer
    assert re.search(r"mA +\d{4}-\d\d-\d\d [\d:]{8} \+0[12]:00\n", answer)  # the reading's time
    new_york = ok({**env, "TZ": "America/New_York"}, cwd, "runs", "list")
    assert re.search(r"[\d:]{8} -0[45]:00", new_york), new_york
    utc = ok(berlin, cwd, "--utc", "runs", "list")
    assert re.search(r"[\d:]{8} \+00:00", utc) and "+01:00" not in utc


def test_version_quiet_and_the_not_understood_exit_code(env, cwd, tmp_path):
    assert re.fullmatch(r"osprey-core \S+ \(Python [\d.]+\)\n", ok(env, cwd, "--version"))
    plain = tmp_path / "plain"  # no config: the simulated machine, announced on stderr
    plain.mkdir()
    loud = osprey("run", "read SR:CURRENT", env=env, cwd=plain)
    quiet = osprey("--quiet", "run", "read SR:CURRENT", env=env, cwd=plain)
    assert_exit(loud, 0)
    assert_exit(quiet, 0)
    assert "Notice: control_system.type is not set" in loud.stderr and quiet.stderr == ""
    completion = osprey(env={**env, "_OSPREY_COMPLETE": "complete_bash",
                             "COMP_WORDS": "osprey appr", "COMP_CWORD": "1"}, cwd=cwd)
    assert completion.stdout.split() == ["approvals"]  # Typer's shell completion
    unclear = osprey("run", "brew some coffee", env=env, cwd=cwd)
    assert_exit(unclear, 4)
    assert unclear.stdout.startswith("I did not understand")
