"""What the class-family fakes share: each subclass keeps a list of the instances the core
built from it, and ``named(...)`` makes subclasses with their own settings."""

from __future__ import annotations

from typing import Any, ClassVar


class Tracked:
    """Gives every subclass its own list of the instances built from it.

    The core instantiates class-family plugins itself; this list is how a test gets
    hold of those instances without the fakes sharing state between tests.
    """

    instances: ClassVar[list[Any]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.instances = []

    def _track(self) -> None:
        type(self).instances.append(self)


def named_subclass[T: type](base: T, name: str, attributes: dict[str, Any]) -> T:
    """A subclass of ``base`` registered under ``name`` with class attributes overridden."""
    suffix = "".join(part.capitalize() for part in name.replace(".", "_").replace("-", "_")
                     .split("_"))
    class_name = f"{base.__name__}_{suffix}"
    namespace = {"name": name, "__module__": base.__module__, "__qualname__": class_name}
    return type(class_name, (base,), {**namespace, **attributes})
