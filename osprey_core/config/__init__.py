"""Configuration: one YAML file plus environment overrides, validated by pydantic.

The root model is assembled at load time from the core settings and every section a
plugin registers, so a typo anywhere (core or plugin) is reported with the file, line,
key path and what was expected.
"""

from osprey_core.config.display import MASK, SECRET_WORDS
from osprey_core.config.loading import (
    DEFAULT_CONFIG_NAME,
    ENV_PREFIX,
    find_config_path,
    init_target,
    load_config,
)
from osprey_core.config.model import (
    CORE_KEYS,
    CoreSettings,
    OspreyConfig,
    config_model,
    default_home,
)
from osprey_core.config.starter import starter_yaml

__all__ = [
    "CORE_KEYS",
    "DEFAULT_CONFIG_NAME",
    "ENV_PREFIX",
    "MASK",
    "SECRET_WORDS",
    "CoreSettings",
    "OspreyConfig",
    "config_model",
    "default_home",
    "find_config_path",
    "init_target",
    "load_config",
    "starter_yaml",
]
