"""Decisions are values: what the client is told, what the operator's log says, and who decided."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Decision"]


@dataclass(frozen=True, slots=True)
class Decision:
    """One SMTP reply with its reasons.

    :param code: the three-digit SMTP reply code.
    :param status: the RFC 3463 enhanced status code (``5.7.1``), or ``""`` for none.
    :param text: what the client sees after the codes; never contains CR or LF.
    :param reason: why, for the operator's log; never sent to the client.
    :param source: the name of the plugin that made the decision.
    """

    code: int
    status: str
    text: str
    reason: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        if not 200 <= self.code <= 599:
            raise ValueError(f"reply code {self.code} is outside 200-599")
        for name in ("status", "text"):
            value = getattr(self, name)
            if "\r" in value or "\n" in value:
                raise ValueError(f"decision {name} must not contain CR or LF: {value!r}")

    @property
    def accepted(self) -> bool:
        return self.code < 400

    @property
    def severity(self) -> int:
        """Orders decisions so the most severe wins: 5xx over 4xx over 3xx over 2xx."""
        return self.code // 100

    def render(self, enhanced_status_codes: bool = True) -> str:
        """The reply line as sent, without CRLF: ``550 5.7.1 Unable to relay``."""
        if enhanced_status_codes and self.status:
            return f"{self.code} {self.status} {self.text}"
        return f"{self.code} {self.text}"
