"""The web console as the tests meet it: a served osprey and Debian's Chromium.

:func:`console_server` starts ``osprey serve`` (through :mod:`support.service`) on a
simulated machine where a write to ``HCM1:SP`` pauses for approval (limits and readback
verification from the limits database) and every ``python`` step waits for approval of
its code, with the real sandbox. :func:`chromium` launches Chromium headless through
Playwright (once per session: the tests' ``browser`` fixture); :class:`Console` drives one
signed-in browser context.

Playwright comes with the ``dev`` extra: without it the browser tests skip. A missing
Chromium is an error, never a skip: ``nox -s tests`` installs it (``apt-get install
chromium``), so CI cannot pass with the browser tests silently left out.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from support.sandbox import SANDBOX_DIR
from support.service import Server, running_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path(os.environ.get("OSPREY_TEST_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
#: A control-room screen: wide, with room for the code and the write table side by side.
VIEWPORT = {"width": 1600, "height": 1000}
#: Upper bound of any wait in a page (a run in the sandbox takes a second or two).
WAIT_MS = 30_000

LIMITS = {"channels": {"HCM1:SP": {
    "writable": True, "type": "float", "min": -5.0, "max": 5.0, "max_step": 3.0,
    "verification": "readback", "tolerance": {"absolute": 0.01}}}}


def console_settings(**extra: str) -> dict[str, str]:
    """Environment settings of a console test server (``extra`` adds or replaces)."""
    return {"OSPREY__CONTROL_SYSTEM__LIMITS": json.dumps(LIMITS),
            "OSPREY__APPROVAL__CAPABILITIES": json.dumps({"python": "all_code"}),
            "OSPREY__EXECUTION__RUNTIME_DIR": str(SANDBOX_DIR), **extra}


@contextmanager
def console_server(home: Path, **extra: str) -> Iterator[Server]:
    """A served osprey for the console, with the sandbox runtime prepared."""
    from osprey_core.sandbox.prepare import prepare_runtime
    from osprey_core.settings import ExecutionSettings

    prepare_runtime(ExecutionSettings(runtime_dir=SANDBOX_DIR))
    with running_server(home, **console_settings(**extra)) as server:
        yield server


def submit(server: Server, token: str, query: str, *, planning: bool = False) -> dict[str, Any]:
    """A run submitted through the JSON API by another client (not the browser)."""
    with server.client(token) as client:
        answer = client.post("/api/v1/runs", json={"query": query, "planning": planning})
    assert answer.status_code == 200, answer.text
    run: dict[str, Any] = answer.json()
    return run


@contextmanager
def chromium() -> Iterator[Browser]:
    """Chromium, headless (a test module makes this its session-wide ``browser``)."""
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="Playwright (the dev extra) is not installed")
    if not CHROMIUM.is_file():
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: the console's browser tests "
                    "need it (apt-get install -y chromium; nox -s tests installs it)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                              args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


class Console:
    """One person at the console: a browser context of their own (cookies, session)."""

    def __init__(self, browser: Browser, server: Server) -> None:
        self.server = server
        self.context = browser.new_context(viewport=VIEWPORT, base_url=server.url)
        self.context.set_default_timeout(WAIT_MS)
        self.page: Page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def sign_in(self, token: str) -> Page:
        """Sign in through the form, with the keyboard (type the token, press Enter)."""
        self.page.goto("/console/signin")
        self.page.locator("#token").fill(token)
        self.page.keyboard.press("Enter")
        self.page.wait_for_url("**/console/approvals")
        return self.page

    def open(self, path: str) -> Page:
        self.page.goto(path)
        return self.page

    def screenshot(self, name: str) -> Path:
        """Save the whole page for the docs (docs/screenshots/NAME.png)."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True, animations="disabled")
        return path

    def close(self) -> None:
        self.context.close()
        assert not self.errors, f"script errors in the console: {self.errors}"
