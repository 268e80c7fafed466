"""``osprey example ...``: the plugin's commands, added through ``register_commands``."""

from __future__ import annotations

import typer

from osprey_plugin_example.physics import Particle

example_app = typer.Typer(help="Example plugin: beam kinematics.", no_args_is_help=True)

_UNITS = {
    "rest_mass_mev": "MeV",
    "total_energy_mev": "MeV",
    "kinetic_energy_mev": "MeV",
    "gamma": "",
    "beta": "",
    "momentum_mev_c": "MeV/c",
    "rigidity_tm": "T·m",
    "charge": "e",
}


@example_app.command("kinematics")
def kinematics_command(
    ctx: typer.Context,
    particle: Particle | None = typer.Option(
        None, "--particle", "-p", case_sensitive=False,
        help="Particle species (default: example.default_particle from the config).",
    ),
    energy: float = typer.Option(..., "--energy", "-e", help="Kinetic energy in MeV."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Gamma, beta, momentum and magnetic rigidity of a beam at a kinetic energy."""
    from osprey_core.cli.output import print_json, print_table
    from osprey_core.cli.state import cli_state
    from osprey_plugin_example.physics import kinematics

    settings = cli_state(ctx).config().section("example")
    chosen = particle or settings.default_particle
    try:
        result = kinematics(chosen, energy)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--energy") from None
    if as_json:
        print_json(result.as_dict())
        return
    digits = settings.significant_digits
    rows = [
        (key, value if isinstance(value, str | int) else f"{value:.{digits}g}", _UNITS.get(key, ""))
        for key, value in result.as_dict().items()
    ]
    print_table(f"{chosen} at {energy:g} MeV", ("quantity", "value", "unit"), rows)
