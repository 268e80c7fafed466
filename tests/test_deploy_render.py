"""Rendering deployments: names, config errors with their line, StrictUndefined templates,
secrets kept out of files, reproducible output, and every file valid for compose
(``docker-compose config -q`` from Debian's package validates without an engine)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from pydantic import BaseModel, SecretStr
from support.deploy import deployment, write_config, write_web_app

from osprey_core.deploy.render import render
from osprey_core.deploy.settings import DeployError
from osprey_core.errors import ConfigError
from osprey_core.hookspecs import hookimpl
from osprey_core.hookspecs.services import ServiceSpec
from osprey_core.plugin_host import PluginHost
from osprey_core.plugins import deploy_services
from osprey_core.testing import PluginRegistrar

BUILTINS = ["osprey.api", "osprey.jupyter", "osprey.postgresql"]


@pytest.fixture
def host(osprey_host: PluginHost, register_plugin: PluginRegistrar) -> PluginHost:
    register_plugin(deploy_services)
    return osprey_host


def validate(files: list[Path], project: str) -> None:
    """docker-compose 1.29 parses and checks the merged files against its schema."""
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is missing: apt-get install --no-install-recommends "
                    "docker-compose (nox -s tests installs it)")
    argv = ["docker-compose", "-p", project]
    for path in files:
        argv += ["-f", str(path)]
    done = subprocess.run([*argv, "config", "-q"], capture_output=True, text=True, check=False,
                          env={**os.environ, "POSTGRES_PASSWORD": "x"})
    assert done.returncode == 0, done.stderr


@pytest.mark.exercises_hook("register_services")
def test_builtin_services_render_valid_scoped_files(host: PluginHost, tmp_path: Path) -> None:
    assert sorted(host.services().names()) == BUILTINS
    config = write_config(tmp_path, f"""\
        home: ./home
        deploy:
          project: plant-a
          deployed_services: {BUILTINS}
          services:
            osprey.postgresql: {{ports: {{postgresql: 15432}}, database: runs}}
            osprey.api: {{database: runs, environment: {{TITLE: "x: #y"}}}}
        """)
    planned = deployment(host, config)
    # osprey.api starts after osprey.postgresql because both are deployed
    assert [s.spec.name for s in planned.services] == [
        "osprey.jupyter", "osprey.postgresql", "osprey.api"]
    rendered = render(planned)
    assert [p.name for p in rendered.files] == [
        "00-base.yml", "01-osprey.jupyter.yml", "02-osprey.postgresql.yml", "03-osprey.api.yml"]
    validate(rendered.files, "plant-a")
    import yaml

    documents = [yaml.safe_load(p.read_text()) for p in rendered.files]
    assert documents[0]["networks"]["default"]["labels"] == {"io.osprey.project": "plant-a"}
    for document, name in zip(documents[1:], ["osprey.jupyter", "osprey.postgresql",
                                              "osprey.api"], strict=True):
        (service,) = document["services"].values()
        assert service["labels"] == {"io.osprey.project": "plant-a", "io.osprey.service": name}
        assert "container_name" not in service
        assert all(port.startswith("127.0.0.1:") for port in service["ports"])
    api = documents[3]["services"]["osprey-api"]
    assert api["depends_on"] == ["osprey-postgresql"]
    assert "OSPREY__STORE__URL=postgresql://osprey@osprey-postgresql:5432/runs" \
        in api["environment"]
    assert "TITLE=x: #y" in api["environment"]  # quoted by the template, not misparsed
    assert documents[2]["services"]["osprey-postgresql"]["ports"] == ["127.0.0.1:15432:5432"]
    jupyter = documents[1]["services"]["osprey-jupyter"]
    assert jupyter["volumes"] == [f"{tmp_path / 'home' / 'executions'}:/executions:ro"]


def test_output_is_byte_for_byte_reproducible(host: PluginHost, tmp_path: Path) -> None:
    body = """\
        home: ./home
        deploy:
          deployed_services: [osprey.api, osprey.postgresql, applications.demo.web]
          applications_dir: apps
          build_dir: BUILD
        """
    write_web_app(tmp_path / "apps")
    outputs = []
    for build in ("one", "two"):
        config = write_config(tmp_path, body.replace("BUILD", build))
        rendered = render(deployment(host, config))
        outputs.append({p.name: p.read_bytes() for p in rendered.files})
    assert outputs[0] == outputs[1] and len(outputs[0]) == 4
    again = render(deployment(host, config))  # a second render rewrites nothing
    assert {p.name: p.read_bytes() for p in again.files} == outputs[1]
    validate(again.files, "osprey")


def test_unknown_service_names_the_line_and_the_known_ones(host: PluginHost,
                                                          tmp_path: Path) -> None:
    write_web_app(tmp_path / "apps")
    config = write_config(tmp_path, """\
        deploy:
          applications_dir: apps
          deployed_services:
            - osprey.api
            - osprey.postgres
          services:
            applications.demo.wbe: {greeting: hi}
        """)
    with pytest.raises(ConfigError) as caught:
        deployment(host, config)
    message = str(caught.value)
    assert f"{config}:5: deploy.deployed_services[1]: no service named 'osprey.postgres' " \
           "(did you mean 'osprey.postgresql'?); known: applications.demo.web, osprey.api, " \
           "osprey.jupyter, osprey.postgresql" in message
    assert f"{config}:7: deploy.services.applications.demo.wbe: no service named" in message


def test_service_settings_are_validated_by_its_model(host: PluginHost, tmp_path: Path) -> None:
    write_web_app(tmp_path / "apps")
    config = write_config(tmp_path, """\
        deploy:
          applications_dir: apps
          deployed_services: [applications.demo.web, osprey.postgresql]
          services:
            applications.demo.web: {greting: hi, ports: {web: 9000}}
            osprey.postgresql:
              database: "no spaces"
            osprey.api: {config_file: relative.yml}
        """)
    with pytest.raises(ConfigError) as caught:
        deployment(host, config)
    message = str(caught.value)
    assert f"{config}:5: deploy.services.applications.demo.web.ports.web: no port named " \
           "'web'; ports: http" in message
    assert "deploy.services.applications.demo.web.greting: Extra inputs are not permitted" \
        in message
    assert f"{config}:7: deploy.services.osprey.postgresql.database: String should match" \
        in message
    assert f"{config}:8: deploy.services.osprey.api.config_file: Value error, must be an " \
           "absolute path" in message


def test_a_missing_template_key_names_the_key_the_template_and_the_line(
        host: PluginHost, tmp_path: Path) -> None:
    template = "environment:\n  - GREETING={{ config.greeting }}\n  - PORT={{ config.port }}\n"
    write_web_app(tmp_path / "apps", template=template)
    config = write_config(tmp_path, """\
        deploy:
          applications_dir: apps
          deployed_services: [applications.demo.web]
        """)
    with pytest.raises(DeployError) as caught:
        render(deployment(host, config))
    assert str(caught.value) == (
        f"template of applications.demo.web ({tmp_path / 'apps' / 'demo' / 'web'}), line 3: "
        "missing key: 'dict object' has no attribute 'port'")


class SecretSettings(BaseModel):
    password: SecretStr = SecretStr("hunter2")


class SecretPlugin:
    @hookimpl
    def register_services(self, register):  # type: ignore[no-untyped-def]
        register(ServiceSpec("osprey.leaky", "writes a secret", "image: x\nenvironment:\n"
                             "  - PASSWORD={{ config.password }}\n",
                             config_model=SecretSettings))
        register(ServiceSpec("osprey.fixed", "fixes its name",
                             "image: x\ncontainer_name: fixed\n"))
        register(ServiceSpec("osprey.a", "a", "image: x\n", depends_on=("osprey.b",)))
        register(ServiceSpec("osprey.b", "b", "image: x\n", depends_on=("osprey.a",)))


def test_secrets_and_fixed_names_are_refused(host: PluginHost, register_plugin: PluginRegistrar,
                                             tmp_path: Path) -> None:
    register_plugin(SecretPlugin(), name="secret_plugin")
    for name, expected in [
        ("osprey.leaky", "setting 'password' is a secret and is never written into a "
                         "compose file"),
        ("osprey.fixed", "sets container_name"),
    ]:
        config = write_config(tmp_path, f"deploy: {{deployed_services: [{name}]}}\n")
        with pytest.raises(DeployError, match=expected):
            render(deployment(host, config))
    assert not list(tmp_path.rglob("*-osprey.leaky.yml"))
    config = write_config(tmp_path, "deploy: {deployed_services: [osprey.a, osprey.b]}\n")
    with pytest.raises(DeployError, match=r"in a cycle: osprey\.a, osprey\.b"):
        deployment(host, config)
    config = write_config(tmp_path, "deploy: {deployed_services: [osprey.a]}\n")
    with pytest.raises(DeployError, match=r"depends on osprey\.b, which is not deployed"):
        deployment(host, config)


def test_a_runtime_that_is_not_there_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from osprey_core.deploy.runtime import detect_runtime

    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(DeployError, match=r"no compose runtime found \(docker compose: not "
                                          r"installed\)\. Install podman-compose"):
        detect_runtime("docker compose")

