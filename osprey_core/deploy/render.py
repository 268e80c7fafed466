"""Compose files from templates: one per service plus a base file, byte for byte the same
for the same configuration.

Templates are Jinja2 with ``StrictUndefined``: a missing key fails naming the key, the
service and the template line, instead of rendering as an empty string. The renderer, not
the template, adds what scoping and running depend on (image, labels, ports on the bind
address, volumes, health check, network, dependencies), and writes YAML it dumped itself
with sorted keys, so output is reproducible and always parses."""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretBytes, SecretStr

from osprey_core.deploy.catalog import Deployment, Selected, compose_name
from osprey_core.deploy.images import image_ref
from osprey_core.deploy.settings import PROJECT_LABEL, SERVICE_LABEL, DeployError

BASE_FILE = "00-base.yml"
#: Keys a template may not set: a fixed container name would let one project's ``down``
#: remove another's container; the renderer owns the rest.
RENDERER_KEYS = ("container_name", "ports", "healthcheck", "depends_on", "networks")


@dataclass(frozen=True)
class Rendered:
    """The files of one render, in ``-f`` order (base first, then dependency order)."""

    directory: Path
    files: list[Path]


class SecretValue:
    """Stands for a secret setting in templates: writing it into a file is an error."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __str__(self) -> str:
        raise DeployError(f"setting '{self.key}' is a secret and is never written into a "
                          "compose file: pass it through the environment "
                          f"(environment: [{self.key.upper()}]) or a file")


def _context_value(value: Any, key: str) -> Any:
    if isinstance(value, SecretStr | SecretBytes):
        return SecretValue(key)
    if isinstance(value, dict):
        return {k: _context_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_context_value(v, key) for v in value]
    return value


def template_context(deployment: Deployment, entry: Selected) -> dict[str, Any]:
    """What a template sees."""
    return {
        "project": deployment.project, "name": entry.spec.name, "service": entry.compose_name,
        "config": _context_value(entry.config, entry.spec.name), "home": str(deployment.home),
        "bind_address": deployment.settings.bind_address, "ports": dict(entry.host_ports),
        "services": {s.spec.name: s.compose_name for s in deployment.services},
        "image": image_ref(entry.spec.image) if entry.spec.image else None,
    }


def render_text(source: str, context: dict[str, Any], *, template_name: str) -> str:
    """Render with undefined names as errors that name the key, template and line."""
    import jinja2

    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False,
                                     keep_trailing_newline=True)
    try:
        return environment.from_string(source).render(context)
    except jinja2.UndefinedError as exc:
        raise DeployError(f"template {template_name}{_line(exc)}: missing key: "
                          f"{exc.message}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise DeployError(f"template {template_name}, line {exc.lineno}: {exc.message}") from None
    except DeployError as exc:
        raise DeployError(f"template {template_name}{_line(exc)}: {exc}") from None


def _line(exc: BaseException) -> str:
    lines = [frame.lineno for frame in traceback.extract_tb(exc.__traceback__)
             if frame.filename == "<template>"]
    return f", line {lines[-1]}" if lines else ""


def service_document(deployment: Deployment, entry: Selected) -> dict[str, Any]:
    """The compose document of one service (``services:`` and its named volumes)."""
    import yaml

    spec, project = entry.spec, deployment.project
    where = f"of {spec.name} ({entry.origin})"
    context = template_context(deployment, entry)
    text = render_text(spec.template, context, template_name=where)
    try:
        body = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise DeployError(f"template {where} rendered invalid YAML: {exc}") from None
    if not isinstance(body, dict):
        raise DeployError(f"template {where} must render a mapping of compose keys")
    if taken := sorted(set(body) & set(RENDERER_KEYS)):
        raise DeployError(f"template {where} sets {', '.join(taken)}: declare ports, health "
                          "check and dependencies in the ServiceSpec (container names are "
                          "never fixed: they would clash across projects)")
    service = dict(body)
    if spec.image is not None:
        service.setdefault("image", context["image"])
    if "image" not in service:
        raise DeployError(f"service {spec.name} has no image: give its ServiceSpec an image "
                          "recipe or set image: in its template")
    labels = dict(service.get("labels") or {})
    service["labels"] = {**labels, PROJECT_LABEL: project, SERVICE_LABEL: spec.name}
    service.setdefault("init", True)
    service["networks"] = ["default"]
    bind = deployment.settings.bind_address
    if spec.ports:
        service["ports"] = [f"{bind}:{entry.host_ports[port.name]}:{port.container}"
                            for port in spec.ports]
    volumes: dict[str, Any] = {}
    mounts = list(service.get("volumes") or [])
    for volume in spec.volumes:
        suffix = ":ro" if volume.read_only else ""
        if volume.name is not None:
            volumes[volume.name] = {"labels": {PROJECT_LABEL: project}}
            mounts.append(f"{volume.name}:{volume.target}{suffix}")
        elif volume.source is not None:
            source = render_text(volume.source, context, template_name=f"volume {where}")
            mounts.append(f"{source}:{volume.target}{suffix}")
    if mounts:
        service["volumes"] = mounts
    if spec.healthcheck is not None:
        check = spec.healthcheck
        service["healthcheck"] = {
            "test": ["CMD", *check.test], "interval": f"{check.interval_seconds:g}s",
            "timeout": f"{check.timeout_seconds:g}s", "retries": check.retries}
    if needs := entry.needs({s.spec.name for s in deployment.services}):
        service["depends_on"] = [compose_name(name) for name in needs]
    document: dict[str, Any] = {"services": {entry.compose_name: service}}
    if volumes:
        document["volumes"] = volumes
    return document


def base_document(deployment: Deployment) -> dict[str, Any]:
    """The network every service joins, labelled with the project."""
    return {"networks": {"default": {"labels": {PROJECT_LABEL: deployment.project}}}}


def dump(document: dict[str, Any], header: str) -> str:
    """Sorted keys; multi-line strings (scripts) as literal blocks, readable as written."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    body = yaml.dump(document, Dumper=Dumper, sort_keys=True, default_flow_style=False,
                     allow_unicode=True, width=100)
    return f"# {header}\n# Written by osprey deploy render; edits are overwritten.\n{body}"


def render(deployment: Deployment) -> Rendered:
    """Write the base file and one file per service into ``<build_dir>/compose``; files
    of services no longer deployed are removed."""
    directory = deployment.build_dir / "compose"
    outputs = {BASE_FILE: dump(base_document(deployment), f"project {deployment.project}")}
    for index, entry in enumerate(deployment.services, start=1):
        outputs[f"{index:02d}-{entry.spec.name}.yml"] = dump(
            service_document(deployment, entry), f"{entry.spec.name} from {entry.origin}")
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.yml"):
        if stale.name not in outputs:
            stale.unlink()
    files = []
    for name, text in outputs.items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            temporary = path.with_suffix(".tmp")
            temporary.write_text(text, encoding="utf-8")
            temporary.replace(path)
        files.append(path)
    return Rendered(directory, files)
