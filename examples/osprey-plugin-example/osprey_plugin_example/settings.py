"""The ``example`` section of ``osprey.yml``, owned and validated by this plugin."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from osprey_plugin_example.physics import Particle


class ExampleSettings(BaseModel):
    """Settings of the example plugin (beam kinematics)."""

    # Forbid unknown keys so a typo in osprey.yml is an error, not a silently ignored key.
    model_config = ConfigDict(extra="forbid")

    default_particle: Particle = Field(
        Particle.PROTON,
        description="Particle used by 'osprey example kinematics' when --particle is omitted.",
    )
    significant_digits: int = Field(
        6, ge=1, le=17, description="Significant digits shown in the kinematics table.",
    )
