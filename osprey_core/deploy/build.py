"""``osprey deploy build``: every deployed service's image, made locally and cached."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from osprey_core.deploy.catalog import Deployment
from osprey_core.deploy.images import (
    PYTHON_SOURCE,
    WHEELS,
    Progress,
    busybox_base,
    debian_base,
    image_exists,
    image_ref,
    podman,
    wheels,
)
from osprey_core.deploy.render import render_text
from osprey_core.deploy.settings import DeployError
from osprey_core.hookspecs.services import ImageRecipe


@dataclass(frozen=True)
class Built:
    service: str
    image: str
    cached: bool
    seconds: float
    #: Older tags of the same image that no container used, removed after the build.
    pruned: tuple[str, ...] = ()


def build_images(deployment: Deployment, *, runtime_dir: Path, cache_dir: Path,
                 progress: Progress, env: dict[str, str] | None = None,
                 rebuild: bool = False) -> list[Built]:
    """Build what is missing (or everything with ``rebuild``); report each image."""
    import time

    results: list[Built] = []
    done: set[str] = set()
    for entry in deployment.services:
        recipe = entry.spec.image
        if recipe is None:
            continue
        ref = image_ref(recipe)
        started = time.monotonic()
        cached = ref in done or (not rebuild and image_exists(ref, env))
        pruned: tuple[str, ...] = ()
        if not cached:
            progress(f"building {ref} for {entry.spec.name}")
            _build(recipe, ref, runtime_dir, cache_dir, progress, env)
            pruned = _prune(ref, env)
        done.add(ref)
        results.append(Built(entry.spec.name, ref, cached, time.monotonic() - started, pruned))
    return results


def _prune(keep: str, env: dict[str, str] | None) -> tuple[str, ...]:
    """Remove the other tags of ``keep``'s image (each code change makes one); podman
    refuses to remove one a container still uses, and that one stays."""
    repository = keep.rsplit(":", 1)[0]
    listed = podman("images", "--format", "{{.Repository}}:{{.Tag}}", repository, env=env)
    # the listing names every tag of each matching image (a shared base included): only
    # this repository's own tags are candidates
    old = [ref for ref in listed.stdout.decode().split()
           if ref.startswith(f"{repository}:") and ref != keep]
    return tuple(ref for ref in old if podman("rmi", ref, env=env).returncode == 0)


def _build(recipe: ImageRecipe, ref: str, runtime_dir: Path, cache_dir: Path,
           progress: Progress, env: dict[str, str] | None) -> None:
    base = busybox_base(env) if recipe.base == "busybox" else debian_base(
        cache_dir, progress, env)
    context: dict[str, object] = {"base_image": base, "python_packages": " ".join(
        f"'{name}'" for name in recipe.python_packages)}
    volumes: list[str] = []
    if recipe.python_packages:
        from osprey_core.sandbox.interpreter import load_runtime

        runtime = load_runtime(runtime_dir)
        if runtime is None:
            raise DeployError(f"{recipe.name} needs the prepared interpreter in {runtime_dir}: "
                              "run `osprey sandbox setup`")
        wheel_dir = wheels(cache_dir, recipe.python_packages, progress)
        context["python_prefix"] = str(runtime.jail_prefix)
        context["python"] = runtime.jail_python
        context["wheels_id"] = wheel_dir.name
        volumes += ["--volume", f"{runtime.python_dir}:{PYTHON_SOURCE}:ro",
                    "--volume", f"{wheel_dir}:{WHEELS}:ro"]
    containerfile = render_text(recipe.containerfile, context,
                                template_name=f"Containerfile of {recipe.name}")
    if recipe.python_packages and str(context["wheels_id"]) not in containerfile:
        # podman's layer cache keys on the instructions, not on what is mounted: without
        # the id, new wheels would get the layer built from the old ones
        raise DeployError(f"the Containerfile of {recipe.name} must name {{{{ wheels_id }}}} "
                          "before installing the wheels (ENV OSPREY_WHEELS={{ wheels_id }})")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "Containerfile"
        path.write_text(containerfile, encoding="utf-8")
        done = podman("build", "--quiet", "--network", "host", *volumes, "--tag", ref,
                      "--label", "io.osprey.image=" + recipe.name, "--file", str(path), folder,
                      env=env)
    if done.returncode:
        raise DeployError(f"podman build of {ref} failed:\n"
                          f"{done.stderr.decode(errors='replace').strip()[-3000:]}")
