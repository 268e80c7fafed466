"""Test configuration and the fixtures several test files share.

The opt-in osprey testing kit provides the host fixtures (``osprey_host``,
``register_plugin``); helpers live in ``tests/support/``. Fixtures import what they need
when they run, so collecting a test file never pays for another file's fixtures.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from support.orchestration import Lab

    from osprey_core.plugin_host import PluginHost
    from osprey_core.testing.openai_server import FakeOpenAIServer

pytest_plugins = ["osprey_core.testing", "support.postgres"]

# Child Python processes must import the installed package, never the source tree in
# their working directory (it lacks the mapped hookspecs/plugins/sandbox folders). An
# editable install hides the difference; CI's real install does not.
os.environ["PYTHONSAFEPATH"] = "1"


@pytest.fixture(autouse=True, scope="module")
def no_event_loop_left_running(request: pytest.FixtureRequest) -> Iterator[None]:
    """A module must not leave an event loop running in the main thread (Playwright's sync
    API does until stopped): every later asyncio.run() in the session would fail."""
    yield
    import asyncio

    if asyncio._get_running_loop() is not None:
        pytest.fail(f"{request.module.__name__} left an event loop running in the main "
                    "thread; stop it (a session-scoped fixture?) before the module ends")


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    """A working directory outside the repository, so subprocesses cannot import the
    source tree (or pick up an ./osprey.yml) instead of what is installed."""
    work = tmp_path / "work"
    work.mkdir()
    return work


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An osprey home that does not exist yet (commands create it)."""
    return tmp_path / "home"


@pytest.fixture
def strict_host() -> PluginHost:
    """A host with no entry points loaded that fails on any plugin error."""
    from osprey_core.plugin_host import load_plugins

    return load_plugins(discover=False, environ={"OSPREY_STRICT_PLUGINS": "1"})


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    """A fake OpenAI-compatible server on loopback, for the real ``openai`` client."""
    from osprey_core.testing.openai_server import FakeOpenAIServer

    with FakeOpenAIServer() as running:
        yield running


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """An offline lab: no LLM endpoint, the offline planner matches the test capabilities."""
    from support.orchestration import Lab

    opened = Lab(tmp_path)
    yield opened
    opened.close()


@pytest.fixture
def llm_lab(tmp_path: Path, server: FakeOpenAIServer) -> Iterator[Lab]:
    """A lab whose planner is the LLM planner talking to ``server``."""
    from support.orchestration import Lab

    opened = Lab(tmp_path, llm_url=server.base_url)
    yield opened
    opened.close()


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1, for HTTPS servers on loopback."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key
