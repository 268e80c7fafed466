"""Config sections: plugins own top-level sections of ``osprey.yml``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from osprey_core.hookspecs import hookspec

if TYPE_CHECKING:
    from pydantic import BaseModel


@hookspec
def register_config_sections(register: Callable[[str, type[BaseModel]], None]) -> None:
    """Register ``register(section_name, PydanticModel)`` for each section the plugin owns.

    The model validates that section (unknown keys should be forbidden) and supplies its
    defaults; ``osprey config init`` writes it out with field descriptions as comments.
    """
