"""Shared by the deployment tests: an applications folder with a tiny busybox web service,
a config writer and the plan/render helpers (real podman and podman-compose, or docker and
docker-compose, run them)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

from osprey_core.config import load_config
from osprey_core.deploy.catalog import Deployment, plan
from osprey_core.plugin_host import PluginHost

#: A web server answering with the configured greeting; healthy once it serves.
WEB_SERVICE = """\
description: A busybox web server for the tests.
ports: [{name: http, container: 8080, host: 18080}]
healthcheck: {test: [wget, -q, -O, /dev/null, "http://127.0.0.1:8080/"], interval_seconds: 0.3,
              retries: RETRIES}
image: {name: osprey-test-web, base: busybox}
volumes: [{target: /data, name: data}]
config: {greeting: hello, fail: false}
"""
WEB_CONTAINERFILE = "FROM {{ base_image }}\nRUN mkdir -p /www\n"
WEB_TEMPLATE = """\
command:
  - /bin/sh
  - -c
  - >-
    echo '{{ config.greeting }}' > /tmp/index.html; echo 'web {{ project }} started';
    {% if config.fail %}echo 'refusing to serve: fail is set'; exec sleep 600;{% endif %}
    exec httpd -f -p 8080 -h /tmp
"""


def write_web_app(root: Path, app: str = "demo", service: str = "web",
                  template: str = WEB_TEMPLATE, retries: int = 40) -> Path:
    folder = root / app / service
    folder.mkdir(parents=True)
    (folder / "service.yml").write_text(WEB_SERVICE.replace("RETRIES", str(retries)))
    (folder / "Containerfile").write_text(WEB_CONTAINERFILE)
    (folder / "compose.yml.j2").write_text(template)
    return root


def write_config(folder: Path, body: str) -> Path:
    path = folder / "osprey.yml"
    path.write_text(textwrap.dedent(body))
    return path


def web_project(tmp_path: Path, name: str, *, greeting: str = "hello", fail: bool = False,
                retries: int = 40, runtime: str = "auto") -> tuple[Path, int]:
    """A config for project ``name`` with the web app on a free loopback port."""
    folder = tmp_path / name
    folder.mkdir()
    write_web_app(folder / "apps", retries=retries)
    port = free_port()
    config = write_config(folder, f"""\
        home: ./home
        deploy:
          project: {name}
          runtime: {runtime}
          applications_dir: apps
          deployed_services: [applications.demo.web]
          services:
            applications.demo.web:
              greeting: {greeting}
              fail: {str(fail).lower()}
              ports: {{http: {port}}}
        """)
    return config, port


def deployment(host: PluginHost, config_path: Path) -> Deployment:
    return plan(load_config(host, config_path, environ={}), host)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def osprey(config: Path, *args: str, check: bool = True, timeout: float = 300,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed CLI in a child process, as an operator runs it."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("OSPREY")}
    done = subprocess.run([sys.executable, "-m", "osprey_core", "--config", str(config),
                           "deploy", *args], capture_output=True, text=True,
                          env={**clean, **(env or {})}, cwd=config.parent, timeout=timeout,
                          check=False)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def status(config: Path, env: dict[str, str] | None = None) -> dict[str, object]:
    """``osprey deploy status --json``, parsed."""
    return json.loads(osprey(config, "status", "--json", env=env).stdout)
