"""Salted password hashes for the built-in users file (scrypt; never plain text).

A users file holds one ``name:scrypt$N$r$p$salt$hash`` line per user (salt and hash in base64);
``#`` starts a comment. ``salmon-relayauth hash-password`` writes such lines.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

__all__ = ["UsersFileError", "hash_password", "read_users_file", "verify_password"]

_N, _R, _P = 1 << 14, 8, 1


class UsersFileError(ValueError):
    """A users file that cannot be read; the message names the file and the line."""


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored``; constant-time comparison."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest, validate=True)
        actual = hashlib.scrypt(
            password.encode("utf-8"), salt=base64.b64decode(salt, validate=True), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def read_users_file(path: Path) -> dict[str, str]:
    """User name (case-folded) -> stored hash."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise UsersFileError(f"{path}: cannot read the users file: {error.strerror}") from error
    users: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, stored = line.partition(":")
        if not sep or not name or not stored.startswith("scrypt$") or stored.count("$") != 5:
            raise UsersFileError(f"{path}:{number}: expected 'name:scrypt$N$r$p$salt$hash'")
        users[name.strip().casefold()] = stored
    return users
