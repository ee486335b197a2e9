"""``salmon-relayauth set-password USERS_FILE USER``: add or change a user in the users file.

The password is read from standard input (one line) or asked for on the terminal, and stored only
as a salted scrypt hash. Point ``[authentication] users_file`` at the file.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..engine.passwords import UsersFileError, hash_password, read_users_file

__all__ = ["register", "run"]


def register(verbs: Any) -> None:
    parser = verbs.add_parser("set-password", help="add a user to a users file, or change its password", description=__doc__)
    parser.add_argument("users_file", metavar="USERS_FILE")
    parser.add_argument("user", metavar="USER")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    user = args.user.strip()
    if not user or ":" in user or any(ord(char) < 33 for char in user):
        print(f"set-password: {args.user!r} is not a valid user name (no spaces, colons or control characters)", file=sys.stderr)
        return 2
    path = Path(args.users_file)
    try:
        existing = read_users_file(path) if path.exists() else {}
    except UsersFileError as error:
        print(f"set-password: {error}", file=sys.stderr)
        return 1
    password = getpass.getpass(f"Password for {user}: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("set-password: empty password refused", file=sys.stderr)
        return 2
    lines = [line for line in (path.read_text(encoding="utf-8").splitlines() if path.exists() else [])
             if line.partition(":")[0].strip().casefold() != user.casefold()]
    lines.append(f"{user}:{hash_password(password)}")
    handle, temp = tempfile.mkstemp(dir=path.parent or Path("."), prefix=".users-")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    os.chmod(temp, 0o600)
    os.replace(temp, path)
    verb = "changed" if user.casefold() in existing else "added"
    print(f"{path}: {verb} {user}")
    return 0
