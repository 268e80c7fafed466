"""What every command can reach through ``ctx.obj``: the plugin host and the config."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import typer

    from osprey_core.api import Osprey
    from osprey_core.config import OspreyConfig
    from osprey_core.plugin_host import PluginHost


@dataclass
class CliState:
    host: PluginHost
    config_path: Path | None = None
    _config: OspreyConfig | None = field(default=None, repr=False)
    _osprey: Osprey | None = field(default=None, repr=False)

    def config(self) -> OspreyConfig:
        """Load and validate the config on first use (most commands never need it)."""
        if self._config is None:
            from osprey_core.config import load_config

            self._config = load_config(self.host, self.config_path)
        return self._config

    def close(self) -> None:
        if self._osprey is not None:
            self._osprey.close()
            self._osprey = None


def cli_state(ctx: typer.Context) -> CliState:
    return ctx.find_root().obj


def _open(state: CliState) -> Osprey:
    from osprey_core.api import Osprey

    if state._osprey is None:
        state._osprey = Osprey(host=state.host, config=state.config())
    return state._osprey


CliState.osprey = _open  # type: ignore[attr-defined]
