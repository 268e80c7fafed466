"""Local images (no registry is reachable): base root filesystems imported into podman,
then each service's Containerfile built on top (always with podman; see build.py for
docker). Everything is cached by content: a second
``osprey deploy build`` with nothing changed only checks that the tags exist."""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from osprey_core.deploy.settings import DeployError
from osprey_core.hookspecs.services import ImageRecipe

DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BUSYBOX = Path("/bin/busybox")
#: Where python images see the prepared interpreter and osprey's wheels while building.
PYTHON_SOURCE = "/opt/osprey-python-src"
WHEELS = "/opt/osprey-wheels"

Progress = Callable[[str], None]


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


@functools.cache
def osprey_digest() -> str:
    """A digest of this osprey's own files (the package and its mapped folders), so an
    image holding osprey is rebuilt whenever its code changed, not only its version."""
    from importlib.util import find_spec

    mapped = ("hookspecs", "plugins", "sandbox")  # folders of their own in a source tree
    hasher = hashlib.sha256(metadata.version("osprey-core").encode())
    for name in ("osprey_core", *(f"osprey_core.{folder}" for folder in mapped)):
        spec = find_spec(name)
        for folder in map(Path, (spec.submodule_search_locations or []) if spec else []):
            for path in sorted(folder.rglob("*")):
                parts = path.relative_to(folder).parts
                if name == "osprey_core" and parts[0] in mapped:
                    continue  # installed: inside osprey_core, and hashed under its own name
                if path.is_file() and "__pycache__" not in parts:
                    hasher.update(f"{name}/{path.relative_to(folder)}\0".encode())
                    hasher.update(path.read_bytes())
    return hasher.hexdigest()[:12]


def image_ref(recipe: ImageRecipe) -> str:
    """The image a recipe builds, tagged by its content (and by osprey's own code when the
    image installs osprey-core)."""
    code = (osprey_digest() if any(name.startswith("osprey-core")
                                   for name in recipe.python_packages) else "")
    tag = _digest(recipe.name, recipe.containerfile, recipe.base,
                  ",".join(recipe.python_packages), code)
    return f"localhost/{recipe.name}:{tag}"


def podman(*args: str, input_bytes: bytes | None = None,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run podman; a missing binary is a DeployError saying what to install."""
    require_podman()
    return subprocess.run(["podman", *args], input=input_bytes, capture_output=True,
                          check=False, env=env)


def require_podman() -> None:
    if shutil.which("podman") is None:
        raise DeployError("podman is not installed: osprey deploy build makes every image with "
                          "podman, for docker too, which then loads it (the build mounts the "
                          "prepared interpreter, which docker build cannot). Debian: "
                          "apt-get install -y podman runc")


def image_exists(ref: str, env: dict[str, str] | None = None) -> bool:
    return podman("image", "exists", ref, env=env).returncode == 0


def _import(root: Path, ref: str, env: dict[str, str] | None) -> None:
    with tempfile.TemporaryFile() as archive:
        subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-c", "."], stdout=archive,
                       check=True)
        archive.seek(0)
        done = podman("import", "-", ref, input_bytes=archive.read(), env=env)
    if done.returncode:
        raise DeployError(f"podman import {ref} failed: {done.stderr.decode().strip()}")


def busybox_base(env: dict[str, str] | None = None) -> str:
    """A 2 MB image: Debian's static busybox and its applets, ``nobody`` in /etc/passwd."""
    if not BUSYBOX.is_file():
        raise DeployError(f"{BUSYBOX} is missing (Debian: apt-get install busybox-static)")
    ref = f"localhost/osprey-base-busybox:{_digest(BUSYBOX.read_bytes().hex())}"
    if image_exists(ref, env):
        return ref
    with tempfile.TemporaryDirectory() as staging:
        root = Path(staging)
        for folder in ("bin", "etc", "tmp", "work", "data"):
            (root / folder).mkdir()
        shutil.copy2(BUSYBOX, root / "bin" / "busybox")
        applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True,
                                 check=True).stdout.split()
        for applet in applets:
            if applet != "busybox":
                (root / "bin" / applet).symlink_to("busybox")
        (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n"
                                             "nobody:x:65534:65534::/:/bin/false\n")
        (root / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
        (root / "tmp").chmod(0o1777)
        _import(root, ref, env)
    return ref


def debian_base(cache_dir: Path, progress: Progress, env: dict[str, str] | None = None) -> str:
    """Debian bookworm (minbase) from debootstrap; the root filesystem tarball is cached."""
    ref = f"localhost/osprey-base-debian:{DEBIAN_SUITE}"
    if image_exists(ref, env):
        return ref
    archive = cache_dir / f"debian-{DEBIAN_SUITE}.tar"
    if not archive.is_file():
        debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
        if not Path(debootstrap).exists():
            raise DeployError("debootstrap is not installed (apt-get install debootstrap)")
        progress(f"debootstrap {DEBIAN_SUITE} (about a minute, once)")
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache_dir) as staging:
            done = subprocess.run([debootstrap, "--variant=minbase", DEBIAN_SUITE, staging,
                                   DEBIAN_MIRROR], capture_output=True, text=True, check=False)
            if done.returncode:
                raise DeployError(f"debootstrap failed: {done.stderr.strip()[-2000:]}")
            partial = archive.with_suffix(".partial")
            subprocess.run(["tar", "-C", staging, "--numeric-owner", "-cf", str(partial), "."],
                           check=True)
            partial.replace(archive)
    progress(f"podman import {archive.name}")
    done = podman("import", str(archive), ref, env=env)
    if done.returncode:
        raise DeployError(f"podman import {ref} failed: {done.stderr.decode().strip()}")
    return ref


def project_source() -> Path:
    """The source tree osprey-core was installed from (editable or ``pip install .``)."""
    here = Path(__file__).resolve().parents[2]
    if (here / "pyproject.toml").is_file():
        return here
    direct = metadata.distribution("osprey-core").read_text("direct_url.json")
    url = json.loads(direct or "{}").get("url", "")
    if url.startswith("file://") and (Path(url[7:]) / "pyproject.toml").is_file():
        return Path(url[7:])
    raise DeployError("cannot find osprey-core's source tree to build python images from: "
                      "install osprey-core from a source checkout")


def wheels(cache_dir: Path, packages: tuple[str, ...], progress: Progress) -> Path:
    """The packages as wheels, made by pip on the host (which reaches the registry), so the
    build container needs no network; ``osprey-core[...]`` is this osprey's own source."""
    requirements = [f"{project_source()}{name[len('osprey-core'):]}"
                    if name.startswith("osprey-core") else name for name in packages]
    target = cache_dir / f"wheels-{_digest(osprey_digest(), *requirements)}"
    if not (target / ".complete").is_file():
        progress(f"pip wheel {' '.join(packages)}")
        target.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir",
                               str(target), *requirements], capture_output=True, text=True,
                              check=False)
        if done.returncode:
            raise DeployError(f"pip wheel failed: {done.stderr.strip()[-2000:]}")
        (target / ".complete").touch()
    return target
