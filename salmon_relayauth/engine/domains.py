"""Accepted domains (reference §13): which recipient domains are the organisation's own.

``contoso.com`` matches that domain only; ``*.contoso.com`` matches contoso.com and every
subdomain. The most specific entry decides the type: an exact name beats a wildcard, a longer
wildcard beats a shorter one.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..model.connector import AcceptedDomain
from ..model.enums import AcceptedDomainType

__all__ = ["AcceptedDomains"]


class AcceptedDomains:
    """A lookup from a domain to its accepted-domain type; one dict probe per label of the name."""

    def __init__(self, domains: Iterable[AcceptedDomain]) -> None:
        self._exact: dict[str, AcceptedDomainType] = {}
        self._wildcard: dict[str, AcceptedDomainType] = {}
        for entry in domains:
            name = entry.domain.lower().rstrip(".")
            if name.startswith("*."):
                self._wildcard[name[2:]] = entry.type
            else:
                self._exact[name] = entry.type

    def classify(self, domain: str) -> AcceptedDomainType | None:
        """The type of ``domain`` (lower-case, no trailing dot), or None when it is not accepted."""
        if domain in self._exact:
            return self._exact[domain]
        candidate = domain
        while candidate:
            if candidate in self._wildcard:
                return self._wildcard[candidate]
            _, dot, candidate = candidate.partition(".")
            if not dot:
                break
        return None

    def is_authoritative(self, domain: str) -> bool:
        return self.classify(domain) is AcceptedDomainType.AUTHORITATIVE

    def is_accepted(self, domain: str) -> bool:
        return self.classify(domain) is not None
