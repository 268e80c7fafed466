"""Relativistic kinematics of a single particle, from its kinetic energy.

Pure functions with no dependencies beyond the standard library, so they are easy to
test and cheap to import. Energies are in MeV, momenta in MeV/c.
"""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass
from typing import Any

#: Speed of light in vacuum, m/s (exact by definition of the metre).
SPEED_OF_LIGHT = 299_792_458.0


class Particle(enum.StrEnum):
    ELECTRON = "electron"
    POSITRON = "positron"
    PROTON = "proton"
    ANTIPROTON = "antiproton"
    MUON = "muon"
    DEUTERON = "deuteron"
    ALPHA = "alpha"


@dataclass(frozen=True, slots=True)
class Species:
    """Rest energy (CODATA 2018, MeV) and charge in units of the elementary charge."""

    rest_mass_mev: float
    charge: int


SPECIES: dict[Particle, Species] = {
    Particle.ELECTRON: Species(0.51099895000, -1),
    Particle.POSITRON: Species(0.51099895000, +1),
    Particle.PROTON: Species(938.27208816, +1),
    Particle.ANTIPROTON: Species(938.27208816, -1),
    Particle.MUON: Species(105.6583755, -1),
    Particle.DEUTERON: Species(1875.61294257, +1),
    Particle.ALPHA: Species(3727.3794066, +2),
}


@dataclass(frozen=True, slots=True)
class Kinematics:
    """Everything a beam physicist wants to know about one particle at one energy."""

    particle: str
    kinetic_energy_mev: float
    rest_mass_mev: float
    charge: int
    total_energy_mev: float
    gamma: float
    beta: float
    momentum_mev_c: float
    rigidity_tm: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def kinematics(particle: Particle | str, kinetic_energy_mev: float) -> Kinematics:
    """Lorentz factor, speed, momentum and magnetic rigidity B·rho.

    ``beta`` is computed as p·c/E rather than sqrt(1 - 1/gamma²), which loses all its
    digits for slow particles; ``pc = sqrt(T² + 2·T·m)`` likewise avoids subtracting
    two nearly equal numbers. Rigidity is p/|q|: with p in MeV/c and q in units of e,
    B·rho [T·m] = p·1e6 / (c·|q|).
    """
    species = SPECIES[Particle(particle)]
    if not math.isfinite(kinetic_energy_mev) or kinetic_energy_mev <= 0:
        raise ValueError(f"kinetic energy must be a positive finite number of MeV, "
                         f"got {kinetic_energy_mev!r}")
    mass = species.rest_mass_mev
    total = kinetic_energy_mev + mass
    momentum = math.sqrt(kinetic_energy_mev * (kinetic_energy_mev + 2.0 * mass))
    return Kinematics(
        particle=str(Particle(particle)),
        kinetic_energy_mev=kinetic_energy_mev,
        rest_mass_mev=mass,
        charge=species.charge,
        total_energy_mev=total,
        gamma=total / mass,
        beta=momentum / total,
        momentum_mev_c=momentum,
        rigidity_tm=momentum * 1e6 / (SPEED_OF_LIGHT * abs(species.charge)),
    )
