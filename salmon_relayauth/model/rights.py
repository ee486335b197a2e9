"""Grants and effective rights: who may do what on a connector, and why."""

from __future__ import annotations

from dataclasses import dataclass

from .enums import Right as R

__all__ = ["EffectiveRights", "Grant", "RightTrace"]


@dataclass(frozen=True, slots=True)
class Grant:
    """One allow or deny of one right to one principal, and where it came from.

    :param principal: who it applies to: a :class:`Principal` value or a user name.
    :param right: the extended right.
    :param deny: True for a deny entry.
    :param origin: for people: ``permission group AnonymousUsers``, ``permission entry 1``, a plugin name.
    """

    principal: str
    right: R
    deny: bool
    origin: str


@dataclass(frozen=True, slots=True)
class RightTrace:
    """Why a right ended up granted or not: the grants that allowed and denied it."""

    right: R
    granted: bool
    allowed_by: tuple[Grant, ...]
    denied_by: tuple[Grant, ...]


@dataclass(frozen=True, slots=True)
class EffectiveRights:
    """The rights a session holds, with the trace of every right for ``explain``."""

    granted: frozenset[R]
    traces: tuple[RightTrace, ...]

    def __contains__(self, right: object) -> bool:
        return right in self.granted
