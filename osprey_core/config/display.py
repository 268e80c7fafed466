"""The effective config for people and JSON: plain values, secrets masked."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from pydantic import SecretBytes, SecretStr
from pydantic_core import to_jsonable_python

if TYPE_CHECKING:

    pass


MASK = "********"
# The last word of a key that holds a secret. Not "tokens": ``max_tokens`` is an LLM limit.
SECRET_WORDS = frozenset({
    "password", "passwords", "passwd", "passphrase", "secret", "secrets",
    "token", "key", "keys", "apikey", "credential", "credentials",
})


def is_secret_key(key: str) -> bool:
    """``api_key``, ``apiToken``, ``db_password`` are secrets; ``max_tokens``, ``key_id`` not."""
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key).lower()
    return re.split(r"[^a-z0-9]+", words)[-1] in SECRET_WORDS


def plain_value(value: Any) -> Any:
    """``model_dump()`` output -> JSON-able data, with SecretStr/SecretBytes masked."""
    if isinstance(value, SecretStr | SecretBytes):
        return MASK if value.get_secret_value() else ""
    if isinstance(value, dict):
        return {str(key): plain_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain_value(item) for item in value]
    return to_jsonable_python(value)


def mask(value: Any, secret: bool = False) -> Any:
    """Mask every value under a secret-named key (a whole ``credentials:`` subtree too)."""
    if isinstance(value, dict):
        return {key: mask(item, secret or is_secret_key(str(key))) for key, item in value.items()}
    if isinstance(value, list):
        return [mask(item, secret) for item in value]
    if secret and value not in (None, "") and not isinstance(value, bool):
        return MASK
    return value
