"""``up`` (with health checks driven here: podman runs none by itself without systemd),
``down``, ``restart`` and ``clean``, each limited to this project's containers and run
through the runtime's engine (podman or docker)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable

from osprey_core.deploy.catalog import Deployment, Selected
from osprey_core.deploy.engine import Container, Engine
from osprey_core.deploy.images import image_ref
from osprey_core.deploy.render import render
from osprey_core.deploy.runtime import Runtime, compose
from osprey_core.deploy.settings import DeployError

Progress = Callable[[str], None]


def up(deployment: Deployment, runtime: Runtime, progress: Progress) -> list[Container]:
    """Render, start every service, then wait until each is healthy (in start order)."""
    engine = runtime.open_engine(deployment)
    missing = [f"{entry.spec.name} ({image_ref(entry.spec.image)})"
               for entry in deployment.services
               if entry.spec.image is not None
               and not engine.has_image(image_ref(entry.spec.image))]
    if missing:
        loaded = " (it builds them with podman and loads them into docker)"
        raise DeployError(f"images not in {engine.name}: {', '.join(missing)}: run `osprey "
                          f"deploy build`{loaded if engine.name == 'docker' else ''}")
    if not deployment.services:
        raise DeployError("nothing to deploy: list services in deploy.deployed_services")
    rendered = render(deployment)
    progress(f"starting {len(deployment.services)} service(s) of project "
             f"{deployment.project} with {runtime.name}")
    # One service at a time, each healthy before the next: the runtimes here start
    # dependents at once (podman-compose ignores ``condition: service_healthy``)
    for entry in deployment.services:
        compose(runtime, deployment, rendered.files, "up", "-d", "--no-deps",
                entry.compose_name, env=engine.env,
                what=f"{runtime.name} up {entry.compose_name}")
        wait_healthy(deployment, [entry], engine, progress)
    return engine.containers(deployment.project)


def wait_healthy(deployment: Deployment, services: list[Selected], engine: Engine,
                 progress: Progress) -> None:
    """Run each service's health check until it passes; fail naming the service, the
    check's last answer and the container's last log lines."""
    deadline = time.monotonic() + deployment.settings.health_timeout_seconds
    for entry in services:
        started = time.monotonic()
        found = engine.containers(deployment.project, service=entry.spec.name)
        if not found:
            raise DeployError(f"service {entry.spec.name}: no container was created")
        for container in found:
            answer = _wait_one(entry, container, engine, deadline)
            if answer is not None:
                raise DeployError(
                    f"service {entry.spec.name} is unhealthy ({answer}); last log lines of "
                    f"{container.name}:\n{engine.logs(container.id)}")
        check = "healthy" if entry.spec.healthcheck else "running (no health check)"
        progress(f"{entry.spec.name}: {check} after {time.monotonic() - started:.1f} s")


def _wait_one(entry: Selected, container: Container, engine: Engine,
              deadline: float) -> str | None:
    """None once healthy (or running, without a check), else why not."""
    check = entry.spec.healthcheck
    attempts, answer = 0, "not checked"
    while True:
        status = engine.state(container.id)
        if status not in ("running", "created", "configured", "initialized"):
            return f"its container is {status or 'gone'}"
        if check is None:
            if status == "running":
                return None
        else:
            failed = engine.check_health(container.id, check)
            attempts += 1
            if failed is None:
                return None
            answer = failed
            if attempts >= check.retries:
                return f"health check failed {attempts} times; last answer: {answer}"
        if time.monotonic() > deadline:
            return (f"not healthy before deploy.health_timeout_seconds ran out; "
                    f"last answer: {answer if check else status}")
        time.sleep(check.interval_seconds if check else 0.2)


def down(deployment: Deployment, runtime: Runtime, *, volumes: bool = False) -> list[str]:
    """Stop and remove this project's containers and network (and volumes with
    ``volumes``); what is labelled with another project stays. Returns what was removed."""
    engine = runtime.open_engine(deployment)
    removed = [c.name for c in engine.containers(deployment.project)]
    try:
        rendered = render(deployment)
    except DeployError:
        rendered = None  # a broken template must not keep running containers alive
    if rendered is not None and removed:
        args = ["down", "-t", "1", *(["-v"] if volumes else [])]
        compose(runtime, deployment, rendered.files, *args, env=engine.env,
                what=f"{runtime.name} down")
    leftovers = engine.containers(deployment.project)  # e.g. services since removed
    if leftovers:
        engine.remove([c.id for c in leftovers])
    engine.remove_labelled("network", engine.labelled("network", deployment.project))
    if volumes:
        found = engine.labelled("volume", deployment.project)
        engine.remove_labelled("volume", found)
        removed += [f"volume {volume}" for volume in found]
    return removed


def restart(deployment: Deployment, runtime: Runtime, progress: Progress,
            service: str | None = None) -> None:
    """Restart this project's containers (or one service's), then wait for health."""
    engine = runtime.open_engine(deployment)
    chosen = [e for e in deployment.services if service in (None, e.spec.name)]
    if service is not None and not chosen:
        names = ", ".join(e.spec.name for e in deployment.services) or "none"
        raise DeployError(f"service {service} is not deployed (deployed: {names})")
    ids = [c.id for e in chosen
           for c in engine.containers(deployment.project, service=e.spec.name)]
    if not ids:
        raise DeployError(f"project {deployment.project} has no containers: run "
                          "`osprey deploy up`")
    engine.restart(ids)
    wait_healthy(deployment, chosen, engine, progress)


def clean(deployment: Deployment, runtime: Runtime) -> list[str]:
    """``down`` with volumes, then the build directory."""
    removed = down(deployment, runtime, volumes=True)
    if deployment.build_dir.is_dir():
        shutil.rmtree(deployment.build_dir)
        removed.append(str(deployment.build_dir))
    return removed
