"""``salmon-relayauth set-password``: the built-in users file holds salted hashes, never passwords."""

from __future__ import annotations

import subprocess
import sys

from salmon_relayauth.engine.passwords import read_users_file, verify_password


def set_password(path, user: str, password: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "salmon_relayauth", "set-password", str(path), user],
        input=password + "\n",
        capture_output=True,
        text=True,
        check=False,
    )


def test_adds_then_changes_a_user_without_storing_the_password(tmp_path) -> None:
    users = tmp_path / "users.txt"
    assert set_password(users, "alice@contoso.com", "first secret").returncode == 0
    assert set_password(users, "bob", "bob's secret").returncode == 0
    result = set_password(users, "Alice@Contoso.com", "second secret")
    assert result.returncode == 0 and "changed" in result.stdout
    text = users.read_text()
    assert "secret" not in text
    stored = read_users_file(users)
    assert set(stored) == {"alice@contoso.com", "bob"}
    assert verify_password("second secret", stored["alice@contoso.com"])
    assert not verify_password("first secret", stored["alice@contoso.com"])
    assert verify_password("bob's secret", stored["bob"])
    assert users.stat().st_mode & 0o077 == 0


def test_refuses_bad_user_names_and_empty_passwords(tmp_path) -> None:
    users = tmp_path / "users.txt"
    assert set_password(users, "bad:name", "x").returncode == 2
    assert set_password(users, "carol", "").returncode == 2
    assert not users.exists()
