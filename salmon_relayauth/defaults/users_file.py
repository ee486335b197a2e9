"""Default plugin: AUTH credentials checked against the ``[authentication] users_file``."""

from __future__ import annotations

from pathlib import Path

from ..config.problems import ConfigProblem, Severity
from ..engine.passwords import UsersFileError, read_users_file, verify_password
from ..hookspecs import hookimpl
from ..model.connector import Connector, RelayConfig
from ..model.enums import AuthMechanism

__all__ = ["UsersFile"]


class UsersFile:
    name = "relayauth.users_file"

    def __init__(self) -> None:
        self._cache: dict[Path, tuple[float, dict[str, str]]] = {}

    def _users(self, path: Path) -> dict[str, str]:
        mtime = path.stat().st_mtime
        cached = self._cache.get(path)
        if cached is None or cached[0] != mtime:
            cached = (mtime, read_users_file(path))
            self._cache[path] = cached
        return cached[1]

    @hookimpl(trylast=True)
    def relayauth_authenticate(self, config: RelayConfig, connector: Connector, username: str, password: str) -> bool | None:
        path = config.authentication.users_file
        if path is None:
            return None
        try:
            stored = self._users(path).get(username.casefold())
        except (OSError, UsersFileError):
            return None  # reported by check; a broken file authenticates nobody
        if stored is None:
            return None
        return verify_password(password, stored)

    @hookimpl
    def relayauth_validate_config(self, config: RelayConfig) -> list[ConfigProblem]:
        path = config.authentication.users_file
        basic = [c.name for c in config.enabled_connectors if AuthMechanism.BASIC_AUTH in c.auth_mechanism]
        if path is None:
            if not basic:
                return []
            return [
                ConfigProblem(
                    config.source,
                    "[authentication]",
                    "users_file",
                    f"connector(s) {', '.join(map(repr, basic))} offer BasicAuth but no users_file is set: "
                    "every AUTH will fail unless a plugin checks credentials",
                    Severity.WARNING,
                )
            ]
        try:
            read_users_file(path)
        except UsersFileError as error:
            return [ConfigProblem(config.source, "[authentication]", "users_file", str(error))]
        return []
