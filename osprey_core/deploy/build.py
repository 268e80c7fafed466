"""``osprey deploy build``: every deployed service's image, made locally and cached.

Images are built with podman whatever the runtime: a python image's build mounts the
prepared interpreter (``podman build --volume``), which ``docker build`` cannot. When the
runtime drives docker, each image is then handed over (``podman save | docker load``)."""

from __future__ import annotations

import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from osprey_core.deploy.catalog import Deployment
from osprey_core.deploy.engine import Engine
from osprey_core.deploy.images import (
    PYTHON_SOURCE,
    WHEELS,
    Progress,
    busybox_base,
    debian_base,
    image_ref,
    podman,
    require_podman,
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
    #: Built with podman now (not only handed over).
    made: bool = False
    #: Handed to the runtime's engine (docker) after the build.
    loaded_into: str | None = None

    def describe(self) -> str:
        if self.cached:
            return "cached"
        steps = ["built"] if self.made else []
        steps += [f"loaded into {self.loaded_into}"] if self.loaded_into else []
        return f"{' and '.join(steps)} in {self.seconds:.1f} s"


def build_images(deployment: Deployment, *, runtime_dir: Path, cache_dir: Path,
                 progress: Progress, target: Engine, rebuild: bool = False) -> list[Built]:
    """Build what the runtime's engine (``target``) lacks (everything with ``rebuild``)
    with podman, load it into ``target`` when that is not podman; report each image."""
    builder = Engine("podman", target.env)
    results: list[Built] = []
    done: set[str] = set()
    for entry in deployment.services:
        recipe = entry.spec.image
        if recipe is None:
            continue
        ref = image_ref(recipe)
        started = time.monotonic()
        cached = ref in done or (not rebuild and target.has_image(ref))
        pruned: tuple[str, ...] = ()
        made, loaded = False, None
        if not cached:
            require_podman()
            made = rebuild or target.name == builder.name or not builder.has_image(ref)
            if made:
                progress(f"building {ref} for {entry.spec.name}")
                _build(recipe, ref, runtime_dir, cache_dir, progress, target.env)
            if target.name != builder.name:
                progress(f"podman save {ref} | {target.name} load")
                hand_over(ref, target)
                loaded = target.name
            pruned = _prune(ref, [builder] if loaded is None else [builder, target])
        done.add(ref)
        results.append(Built(entry.spec.name, ref, cached, time.monotonic() - started, pruned,
                             made, loaded))
    return results


def hand_over(ref: str, target: Engine) -> None:
    """``podman save REF | <target> load``, streamed (images can be a gigabyte)."""
    with tempfile.TemporaryFile() as errors:
        save = subprocess.Popen(["podman", "save", ref], stdout=subprocess.PIPE, stderr=errors,
                                env=target.env)
        assert save.stdout is not None
        with save.stdout:
            load = subprocess.run([target.name, "load"], stdin=save.stdout,
                                  capture_output=True, text=True, env=target.env, check=False)
        save.wait()
        errors.seek(0)
        said = errors.read().decode(errors="replace").strip()
    if save.returncode or load.returncode:
        raise DeployError(f"podman save {ref} | {target.name} load failed: "
                          f"{(said or load.stderr.strip() or load.stdout.strip())[-2000:]}")


def _prune(keep: str, engines: list[Engine]) -> tuple[str, ...]:
    """Remove the other tags of ``keep``'s image (each code change makes one) from each
    engine; an engine refuses to remove one a container still uses, and that one stays."""
    repository = keep.rsplit(":", 1)[0]
    removed: dict[str, None] = {}
    for engine in engines:
        for ref in engine.tags(repository):
            if ref != keep and engine.remove_image(ref):
                removed[ref] = None
    return tuple(removed)


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
