"""Reading pydantic annotations: the model or type at a key path, and names for people."""

from __future__ import annotations

import types
from pathlib import PurePath
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretBytes, SecretStr

if TYPE_CHECKING:

    pass


def union_options(annotation: Any) -> tuple[Any, ...]:
    """The members of a union (``X | None`` -> X, None), unwrapping ``Annotated``."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return union_options(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return tuple(option for arg in get_args(annotation) for option in union_options(arg))
    return (annotation,)


def model_of(annotation: Any, *, optional: bool = True) -> type[BaseModel] | None:
    """The model behind ``Model`` (or ``Model | None`` when ``optional``), else None."""
    options = union_options(annotation) if optional else (annotation,)
    for option in options:
        if isinstance(option, type) and issubclass(option, BaseModel):
            return option
    return None


def fields_of(model: type[BaseModel]) -> dict[str, Any]:
    """Fields by the key written in YAML (the alias, if any)."""
    return {info.alias or name: info for name, info in model.model_fields.items()}


def child_type(annotation: Any, key: str) -> Any:
    """The annotation one step down ``key``: a model field, a list index or a dict value."""
    for option in union_options(annotation):
        if (model := model_of(option)) is not None:
            if (info := fields_of(model).get(key)) is not None:
                return info.annotation
            continue
        origin, args = get_origin(option), get_args(option)
        if origin in (list, tuple, set, frozenset) and args and key.isdigit():
            return args[0]
        if origin is dict and len(args) == 2:
            return args[1]
    return None


def type_at(model: type[BaseModel], key_path: tuple[str, ...]) -> Any:
    annotation: Any = model
    for key in key_path:
        annotation = child_type(annotation, key)
        if annotation is None:
            return None
    return annotation


def is_text(annotation: Any) -> bool:
    options = [option for option in union_options(annotation) if option is not type(None)]
    if not options:
        return False
    for option in options:
        if get_origin(option) is Literal:
            if not all(isinstance(value, str) for value in get_args(option)):
                return False
        elif not (isinstance(option, type) and issubclass(option, (str, PurePath, SecretStr))):
            return False
    return True


def type_name(annotation: Any) -> str:
    """A type as an operator reads it: ``int``, ``str | null``, ``'mm' | 'cm'``."""
    options = union_options(annotation)
    if len(options) > 1:
        return " | ".join(type_name(option) for option in options)
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " | ".join(repr(value) for value in args)
    if origin is not None:
        inner = ", ".join("..." if arg is Ellipsis else type_name(arg) for arg in args)
        return f"{getattr(origin, '__name__', origin)}[{inner}]"
    if annotation is type(None):
        return "null"
    if model_of(annotation) is not None:
        return "a mapping of keys"
    if annotation in (SecretStr, SecretBytes):
        return "str"
    return getattr(annotation, "__name__", str(annotation))
