"""Roles an identity holds over HTTP, apart from the settings model: the command line names
them on every ``--help`` and must not pay for pydantic to do so."""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    """What an identity may do over HTTP (see :func:`implied_roles`)."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    APPROVER = "approver"
    ADMIN = "admin"


def implied_roles(roles: set[Role] | frozenset[Role]) -> frozenset[Role]:
    """``roles`` with what they imply: admin implies every role; operator and approver
    imply viewer."""
    granted = set(roles)
    if Role.ADMIN in granted:
        granted.update(Role)
    if granted:
        granted.add(Role.VIEWER)
    return frozenset(granted)
