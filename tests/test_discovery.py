"""Discovery end to end: real installed distributions, the real ``osprey`` CLI in a subprocess.

Each subprocess gets an environment without the caller's ``OSPREY*`` variables, because CI
runs the whole suite with ``OSPREY_STRICT_PLUGINS=1`` exported; tests that want strict
mode ask for it explicitly.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import sys
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from types import SimpleNamespace

import pytest
from support.dist import by_name, osprey_env, plugins_json, run_osprey, write_distribution

from osprey_core.errors import DuplicateNameError
from osprey_core.plugin_host import load_plugins

C = 299_792_458.0
#: CODATA 2018 rest energies in MeV, typed in here independently of the example plugin.
PROTON, ELECTRON, ALPHA = 938.27208816, 0.51099895000, 3727.3794066
EXAMPLE_HOOKS = ["register_capabilities", "register_commands", "register_config_sections"]


@pytest.fixture(scope="module", autouse=True)
def example_installed() -> str:
    """The example distribution must be installed; say how instead of failing obscurely."""
    try:
        return distribution("osprey-plugin-example").version
    except PackageNotFoundError:
        pytest.fail(f"osprey-plugin-example is not installed in {sys.prefix}: run "
                    "'pip install -e examples/osprey-plugin-example'")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty working directory, so no stray ./osprey.yml is picked up."""
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return tmp_path / "site"


def broken_import_dist(site: Path) -> Path:
    return write_distribution(
        site, "osprey-plugin-broken", version="2.3",
        entry_points={"broken": "osprey_plugin_broken"},
        modules={"osprey_plugin_broken": """
            raise RuntimeError("no licence server at 127.0.0.1:27000")
        """},
    )


def hand_kinematics(mass: float, charge: int, kinetic: float) -> dict[str, float]:
    """The textbook formulas, written out again so the test does not trust the plugin."""
    total = kinetic + mass
    gamma = total / mass
    beta = math.sqrt(1.0 - 1.0 / gamma**2)
    momentum = gamma * beta * mass
    return {
        "total_energy_mev": total,
        "gamma": gamma,
        "beta": beta,
        "momentum_mev_c": momentum,
        "rigidity_tm": momentum * 1e6 / (C * abs(charge)),
    }


# -- the installed set --------------------------------------------------------------------


def test_plugins_json_lists_builtin_and_example(
    workdir: Path, home: Path, example_installed: str
) -> None:
    plugins = by_name(plugins_json(osprey_env(home), workdir))

    core = plugins["core_commands"]
    assert core["source"] == "builtin"
    assert core["distribution"] == "osprey-core"
    assert core["module"] == "osprey_core.plugins.core_commands"
    assert core["status"] == "loaded"
    assert core["essential"] is True
    assert core["hooks"] == ["register_commands"]

    example = plugins["example"]
    assert example["source"] == "entry point"
    assert example["distribution"] == "osprey-plugin-example"
    assert example["version"] == example_installed
    assert example["module"] == "osprey_plugin_example"
    assert example["status"] == "loaded"
    assert example["essential"] is False
    assert example["hooks"] == EXAMPLE_HOOKS
    assert example["error"] is None
    assert example["hook_errors"] == []


def test_plugins_hook_filter(workdir: Path, home: Path) -> None:
    shown = plugins_json(osprey_env(home), workdir, "--hook", "register_capabilities")
    names = [p["name"] for p in shown]
    assert "example" in names and "core_commands" not in names
    assert all("register_capabilities" in p["hooks"] for p in shown)


@pytest.mark.exercises_hook("register_capabilities")
def test_discovered_capability_runs_with_step_or_mapping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in ("OSPREY_LOAD_PLUGINS", "OSPREY_DISABLE_PLUGINS", "OSPREY_STRICT_PLUGINS"):
        monkeypatch.delenv(key, raising=False)
    host = load_plugins()
    capabilities = host.capabilities()
    assert host.capabilities().origin("beam_kinematics") == "example"
    capability = capabilities.get("beam_kinematics")
    assert capability.side_effects is False
    assert capability.parameters is not None

    params = capability.parameters(particle="proton", kinetic_energy_mev=200)
    from_step = asyncio.run(capability.execute(SimpleNamespace(parameters=params)))
    from_mapping = asyncio.run(capability.execute({"particle": "proton",
                                                   "kinetic_energy_mev": 200}))
    assert from_step == from_mapping
    assert from_step.rigidity_tm == pytest.approx(
        hand_kinematics(PROTON, 1, 200)["rigidity_tm"], rel=1e-12)
    shown = capability.render(from_step.as_dict())  # the stored result, for an operator
    assert shown.startswith("proton at 200 MeV kinetic energy:\n")
    assert re.search(r"rigidity B·rho +\d\.\d+ T·m", shown) and "{" not in shown

    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="kinetic_energy_mev"):
        asyncio.run(capability.execute({"particle": "proton", "kinetic_energy_mev": -1}))
    with pytest.raises(ValidationError, match="particle"):
        asyncio.run(capability.execute({"particle": "photon", "kinetic_energy_mev": 1}))


# -- the example's command and config section ---------------------------------------------


@pytest.mark.exercises_hook("register_commands")
@pytest.mark.parametrize(
    ("particle", "mass", "charge", "energy", "rigidity"),
    [
        # Anchors from the literature: 200 MeV protons (therapy) ~2.15 T·m, a 1 GeV
        # electron ~3.34 T·m; the alpha checks that rigidity divides by |q| = 2.
        ("proton", PROTON, 1, 200.0, 2.1496),
        ("electron", ELECTRON, -1, 1000.0, 3.3373),
        ("alpha", ALPHA, 2, 400.0, 2.9563),
    ],
)
def test_example_kinematics_json(
    workdir: Path, home: Path,
    particle: str, mass: float, charge: int, energy: float, rigidity: float,
) -> None:
    result = run_osprey("example", "kinematics", "--particle", particle,
                        "--energy", str(energy), "--json", env=osprey_env(home), cwd=workdir)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["particle"] == particle
    assert data["charge"] == charge
    assert data["rest_mass_mev"] == pytest.approx(mass, rel=1e-12)
    for key, expected in hand_kinematics(mass, charge, energy).items():
        assert data[key] == pytest.approx(expected, rel=1e-9), key
    assert data["rigidity_tm"] == pytest.approx(rigidity, abs=1e-4)


@pytest.mark.exercises_hook("register_commands")
def test_example_kinematics_table(workdir: Path, home: Path) -> None:
    result = run_osprey("example", "kinematics", "-p", "proton", "-e", "200",
                        env=osprey_env(home), cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "proton at 200 MeV" in result.stdout
    row = next(line for line in result.stdout.splitlines() if "rigidity_tm" in line)
    assert "2.14964" in row and "T·m" in row
    row = next(line for line in result.stdout.splitlines() if "gamma" in line)
    assert "1.21316" in row


def test_example_kinematics_rejects_bad_energy(workdir: Path, home: Path) -> None:
    result = run_osprey("example", "kinematics", "-p", "proton", "-e", "-5",
                        env=osprey_env(home), cwd=workdir)
    assert result.returncode == 2
    assert "--energy" in result.stderr and "positive" in result.stderr


@pytest.mark.exercises_hook("register_config_sections")
def test_example_default_particle_comes_from_config(workdir: Path, home: Path) -> None:
    env = osprey_env(home)
    run = lambda env: run_osprey(  # noqa: E731
        "example", "kinematics", "-e", "100", "--json", env=env, cwd=workdir)

    result = run(env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["particle"] == "proton"  # the model's default

    (workdir / "osprey.yml").write_text("example:\n  default_particle: electron\n")
    result = run(env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["particle"] == "electron"

    result = run({**env, "OSPREY__EXAMPLE__DEFAULT_PARTICLE": "alpha"})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["charge"] == 2


@pytest.mark.exercises_hook("register_config_sections")
def test_example_config_section_rejects_typo(workdir: Path, home: Path) -> None:
    (workdir / "osprey.yml").write_text("example:\n  default_particel: electron\n")
    result = run_osprey("example", "kinematics", "-e", "100", env=osprey_env(home),
                        cwd=workdir)
    assert result.returncode == 2
    assert "osprey.yml:2" in result.stderr
    assert "example.default_particel" in result.stderr
    assert "did you mean 'default_particle'" in result.stderr


# -- broken plugins never brick the host --------------------------------------------------


def test_plugin_failing_at_import_is_listed_not_fatal(
    workdir: Path, home: Path, site: Path
) -> None:
    env = osprey_env(home, pythonpath=broken_import_dist(site))
    plugins = by_name(plugins_json(env, workdir))
    broken = plugins["broken"]
    assert broken["status"] == "failed"
    assert broken["distribution"] == "osprey-plugin-broken"
    assert broken["version"] == "2.3"
    assert broken["source"] == "entry point"
    assert "RuntimeError: no licence server at 127.0.0.1:27000" in broken["error"]
    assert broken["hooks"] == []
    assert plugins["core_commands"]["status"] == "loaded"
    assert plugins["example"]["status"] == "loaded"

    table = run_osprey("plugins", env=env, cwd=workdir)
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if "broken" in line)
    assert "failed" in row and "no licence server" in row

    # Everything else keeps working next to it.
    result = run_osprey("example", "kinematics", "-p", "proton", "-e", "200", "--json",
                        env=env, cwd=workdir)
    assert result.returncode == 0, result.stderr


def test_strict_mode_makes_import_failure_fatal(workdir: Path, home: Path, site: Path) -> None:
    env = osprey_env(home, pythonpath=broken_import_dist(site), OSPREY_STRICT_PLUGINS="1")
    result = run_osprey("plugins", env=env, cwd=workdir)
    assert result.returncode != 0
    assert "plugin 'broken' (osprey-plugin-broken 2.3)" in result.stderr
    assert "no licence server" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_strict_value_is_a_config_error(workdir: Path, home: Path) -> None:
    result = run_osprey("plugins", env=osprey_env(home, OSPREY_STRICT_PLUGINS="maybe"),
                        cwd=workdir)
    assert result.returncode == 2
    assert "OSPREY_STRICT_PLUGINS='maybe'" in result.stderr


def test_misspelt_hook_in_distribution_is_named(workdir: Path, home: Path, site: Path) -> None:
    write_distribution(
        site, "osprey-plugin-typo",
        entry_points={"typo": "osprey_plugin_typo"},
        modules={"osprey_plugin_typo": """
            from osprey_core import hookimpl

            @hookimpl
            def register_comands(app):
                app.command("typo")(lambda: print("typo"))
        """},
    )
    env = osprey_env(home, pythonpath=site)
    typo = by_name(plugins_json(env, workdir))["typo"]
    assert typo["status"] == "failed"
    assert "unknown hook 'register_comands'" in typo["error"]
    assert "did you mean 'register_commands'" in typo["error"]

    strict = run_osprey("plugins", env={**env, "OSPREY_STRICT_PLUGINS": "1"}, cwd=workdir)
    assert strict.returncode != 0
    assert "plugin 'typo'" in strict.stderr and "register_comands" in strict.stderr


def test_sys_exit_at_import_does_not_end_the_host(
    workdir: Path, home: Path, site: Path
) -> None:
    write_distribution(
        site, "osprey-plugin-quitter",
        entry_points={"quitter": "osprey_plugin_quitter"},
        modules={"osprey_plugin_quitter": "import sys\nsys.exit(3)\n"},
    )
    plugins = by_name(plugins_json(osprey_env(home, pythonpath=site), workdir))
    assert plugins["quitter"]["status"] == "failed"
    assert "SystemExit: 3" in plugins["quitter"]["error"]
    assert plugins["example"]["status"] == "loaded"


@pytest.mark.exercises_hook("register_commands")
def test_plugin_failing_inside_register_commands(
    workdir: Path, home: Path, site: Path
) -> None:
    write_distribution(
        site, "osprey-plugin-badcmd",
        entry_points={"badcmd": "osprey_plugin_badcmd"},
        modules={"osprey_plugin_badcmd": """
            from osprey_core import hookimpl

            @hookimpl
            def register_commands(app):
                raise KeyError("tango_host")
        """},
    )
    env = osprey_env(home, pythonpath=site)
    badcmd = by_name(plugins_json(env, workdir))["badcmd"]
    assert badcmd["status"] == "loaded"
    assert badcmd["hook_errors"] == ["register_commands: KeyError: 'tango_host'"]

    strict = run_osprey("plugins", env={**env, "OSPREY_STRICT_PLUGINS": "1"}, cwd=workdir)
    assert strict.returncode != 0
    assert "plugin 'badcmd' failed in register_commands" in strict.stderr


def test_distribution_reusing_builtin_name_cannot_replace_it(
    workdir: Path, home: Path, site: Path
) -> None:
    # On PYTHONPATH this distribution is found before osprey-core itself.
    write_distribution(
        site, "osprey-plugin-impostor",
        entry_points={"core_commands": "osprey_plugin_impostor"},
        modules={"osprey_plugin_impostor": """
            from osprey_core import hookimpl

            @hookimpl
            def register_commands(app):
                app.command("impostor")(lambda: print("impostor ran"))
        """},
    )
    env = osprey_env(home, pythonpath=site)
    entries = [p for p in plugins_json(env, workdir) if p["name"] == "core_commands"]
    by_dist = {entry["distribution"]: entry for entry in entries}
    assert set(by_dist) == {"osprey-core", "osprey-plugin-impostor"}
    assert by_dist["osprey-core"]["status"] == "loaded"
    impostor = by_dist["osprey-plugin-impostor"]
    assert impostor["status"] == "failed"
    assert "already used by plugin 'core_commands' (osprey-core" in impostor["error"]

    result = run_osprey("impostor", env=env, cwd=workdir)
    assert result.returncode == 2
    assert "impostor ran" not in result.stdout


# -- allow and deny lists -----------------------------------------------------------------


def test_load_plugins_empty_loads_only_essential(workdir: Path, home: Path) -> None:
    env = osprey_env(home, OSPREY_LOAD_PLUGINS="")
    shown = plugins_json(env, workdir)
    assert "core_commands" in [p["name"] for p in shown]
    assert all(p["essential"] and p["status"] == "loaded" for p in shown)
    everything = by_name(plugins_json(env, workdir, "--all"))
    assert everything["example"]["status"] == "blocked"
    assert everything["example"]["hooks"] == []
    assert all(p["status"] == "blocked" for p in everything.values() if not p["essential"])

    result = run_osprey("example", "kinematics", "-e", "1", env=env, cwd=workdir)
    assert result.returncode == 2
    assert "No such command 'example'" in result.stderr


def test_load_plugins_allow_list_keeps_essential(workdir: Path, home: Path) -> None:
    env = osprey_env(home, OSPREY_LOAD_PLUGINS="example")
    plugins = by_name(plugins_json(env, workdir))
    assert plugins["core_commands"]["status"] == "loaded"
    assert plugins["example"]["status"] == "loaded"


def test_disable_plugins_blocks_example(workdir: Path, home: Path, site: Path) -> None:
    # The broken plugin is blocked too: a blocked plugin is never imported.
    env = osprey_env(home, pythonpath=broken_import_dist(site),
                     OSPREY_DISABLE_PLUGINS="example, broken", OSPREY_STRICT_PLUGINS="1")
    shown = [p["name"] for p in plugins_json(env, workdir)]
    assert "core_commands" in shown
    assert "example" not in shown and "broken" not in shown
    everything = by_name(plugins_json(env, workdir, "--all"))
    assert everything["example"]["status"] == "blocked"
    assert everything["broken"]["status"] == "blocked"
    assert everything["broken"]["error"] is None

    table = run_osprey("plugins", "--all", env=env, cwd=workdir)
    row = next(line for line in table.stdout.splitlines() if "example" in line)
    assert "blocked" in row


def test_essential_builtin_cannot_be_disabled(workdir: Path, home: Path) -> None:
    env = osprey_env(home, OSPREY_DISABLE_PLUGINS="core_commands")
    plugins = by_name(plugins_json(env, workdir, "--all"))
    assert plugins["core_commands"]["status"] == "loaded"


# -- in-process discovery of extra distributions ------------------------------------------


@pytest.fixture
def on_sys_path(site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``site`` on ``sys.path`` for in-process discovery; its modules are dropped after."""
    for key in ("OSPREY_LOAD_PLUGINS", "OSPREY_DISABLE_PLUGINS", "OSPREY_STRICT_PLUGINS"):
        monkeypatch.delenv(key, raising=False)
    site.mkdir(parents=True, exist_ok=True)
    monkeypatch.syspath_prepend(str(site))
    before = set(sys.modules)
    yield site
    for name in set(sys.modules) - before:
        module_file = getattr(sys.modules[name], "__file__", None) or ""
        if module_file.startswith(str(site)):
            del sys.modules[name]


@pytest.mark.exercises_hook("register_capabilities")
def test_two_distributions_registering_one_capability_name(on_sys_path: Path) -> None:
    write_distribution(
        on_sys_path, "osprey-plugin-clone",
        entry_points={"clone": "osprey_plugin_clone"},
        modules={"osprey_plugin_clone": """
            from osprey_core import hookimpl
            from osprey_plugin_example.capability import BeamKinematicsCapability

            @hookimpl
            def register_capabilities(register):
                register(BeamKinematicsCapability())
        """},
    )
    host = load_plugins()
    assert host.plugin("clone").distribution == "osprey-plugin-clone"
    with pytest.raises(DuplicateNameError) as caught:
        host.capabilities()
    message = str(caught.value)
    assert "capability 'beam_kinematics' is registered twice" in message
    assert "'clone'" in message and "'example'" in message

    quiet = load_plugins(environ={"OSPREY_DISABLE_PLUGINS": "clone"})
    assert quiet.capabilities().origin("beam_kinematics") == "example"
