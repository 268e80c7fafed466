"""The ``beam_kinematics`` capability: a plan step that computes beam parameters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from osprey_core.hookspecs.capabilities import Capability
from osprey_plugin_example.physics import Kinematics, Particle, kinematics


class KinematicsParameters(BaseModel):
    """What the planner must supply for one ``beam_kinematics`` step."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    particle: Particle = Field(description="Particle species, e.g. 'electron' or 'proton'.")
    kinetic_energy_mev: float = Field(
        gt=0, allow_inf_nan=False, description="Kinetic energy per particle in MeV."
    )


class BeamKinematicsCapability(Capability):
    """Read-only and side-effect free, so it never needs approval."""

    name: ClassVar[str] = "beam_kinematics"
    description: ClassVar[str] = (
        "Compute the Lorentz factor gamma, speed beta, momentum (MeV/c) and magnetic "
        "rigidity (T·m) of a particle beam from the particle species and kinetic energy."
    )
    provides: ClassVar[tuple[str, ...]] = ("beam_kinematics",)
    parameters: ClassVar[type[BaseModel] | None] = KinematicsParameters

    async def execute(self, step: Any) -> Kinematics:
        """Accept a step with ``.parameters`` or the parameters themselves (model or mapping).

        Validating again here is cheap and keeps the capability safe to call directly,
        without an orchestrator that validated the parameters first.
        """
        raw = step if isinstance(step, Mapping) else getattr(step, "parameters", step)
        params = KinematicsParameters.model_validate(raw)
        return kinematics(params.particle, params.kinetic_energy_mev)

    def render(self, result: Any) -> str:
        """What the operator reads: each quantity with its units (plain text, so the
        plugin needs no display library)."""
        if not isinstance(result, Mapping):
            return super().render(result)
        rows = [("gamma", result.get("gamma"), ""), ("beta", result.get("beta"), ""),
                ("momentum", result.get("momentum_mev_c"), "MeV/c"),
                ("rigidity B·rho", result.get("rigidity_tm"), "T·m"),
                ("total energy", result.get("total_energy_mev"), "MeV")]
        head = (f"{result.get('particle')} at {result.get('kinetic_energy_mev'):g} MeV "
                "kinetic energy:")
        return "\n".join([head, *(f"  {name:<15} {value:.6g} {units}".rstrip()
                                   for name, value, units in rows if value is not None)])
