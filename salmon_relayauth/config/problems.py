"""Configuration problems: each one names the file, the connector (if any) and the field."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["ConfigError", "ConfigProblem", "Severity"]


class Severity(Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a configuration.

    :param source: the file (or ``<python>``) the configuration came from.
    :param section: where in the file: ``connector 'Anonymous Relay'``, ``[smarthost]``, ...
    :param field: the key, with an index for list items: ``remote_ip_ranges[2]``.
    :param message: what is wrong, naming the offending value.
    """

    source: str
    section: str
    field: str
    message: str
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        where = ": ".join(_printable(part) for part in (self.source, self.section, self.field) if part)
        prefix = "warning: " if self.severity is Severity.WARNING else ""
        return f"{where}: {prefix}{_printable(self.message)}"

    def as_dict(self) -> dict[str, str]:
        return {
            "severity": self.severity.value,
            "source": self.source,
            "section": self.section,
            "field": self.field,
            "message": self.message,
        }


def _printable(text: str) -> str:
    """Control characters escaped, so a hostile key cannot forge lines of a report."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


class ConfigError(ValueError):
    """A configuration that must not be used; ``problems`` lists every error and warning found."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        errors = [problem for problem in problems if problem.severity is Severity.ERROR]
        super().__init__("\n".join(str(problem) for problem in errors or problems))

    @property
    def errors(self) -> list[ConfigProblem]:
        return [problem for problem in self.problems if problem.severity is Severity.ERROR]
