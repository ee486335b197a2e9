"""Splitting the arguments of MAIL FROM and RCPT TO into the path and its ESMTP parameters."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ArgumentError", "PathArgument", "split_path_argument"]


class ArgumentError(ValueError):
    """The command's argument is not ``KEYWORD:<path> [params]``; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class PathArgument:
    path: str                      # as written, brackets included: "<chris@contoso.com>"
    parameters: dict[str, str | None]  # upper-case keyword -> value (None for a bare keyword)


def split_path_argument(argument: str | None, keyword: str) -> PathArgument:
    """Split ``FROM:<a@b> SIZE=10`` (keyword ``FROM``) into the path and its parameters.

    A space after the colon is tolerated, as is a path without brackets (``MAIL FROM:chris@contoso.com``,
    the form the source document's telnet test types). A ``>`` inside a quoted local part does not
    end the path.
    """
    if argument is None:
        raise ArgumentError(f"expected {keyword}:<address>")
    head, colon, rest = argument.partition(":")
    if not colon or head.strip().upper() != keyword:
        raise ArgumentError(f"expected {keyword}:<address>")
    rest = rest.lstrip(" ")
    if not rest:
        raise ArgumentError(f"expected {keyword}:<address>")
    end = _path_end(rest)
    path, tail = rest[:end], rest[end:]
    return PathArgument(path, _parameters(tail))


def _path_end(text: str) -> int:
    if not text.startswith("<"):
        space = text.find(" ")
        return len(text) if space < 0 else space
    quoted = escaped = False
    for position, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            return position + 1
    raise ArgumentError("the address has no closing '>'")


def _parameters(tail: str) -> dict[str, str | None]:
    if tail and not tail.startswith(" "):
        raise ArgumentError("expected a space between the address and its parameters")
    parameters: dict[str, str | None] = {}
    for word in tail.split():
        name, equals, value = word.partition("=")
        if not name or not name.replace("-", "").isalnum():
            raise ArgumentError(f"malformed parameter {word!r}")
        parameters[name.upper()] = value if equals else None
    return parameters
