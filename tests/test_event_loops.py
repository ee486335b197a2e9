"""The relay on uvloop's event loop, which it takes where uvloop is installed: the listener's tests
(sessions, STARTTLS and AUTH, PROXY, timeouts, protocol abuse, smuggling) run again on it, in a
pytest of their own (the rest of the suite runs on asyncio's loop, see conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ON_UVLOOP = [
    "tests/test_relay_e2e.py",
    "tests/test_listener_tls_auth.py",
    "tests/test_listener_proxy.py",
    "tests/test_throttling_e2e.py",
    "tests/security/test_protocol_abuse.py",
    "tests/security/test_smtp_smuggling.py",
]


def test_uvloop_is_installed_with_the_test_extra() -> None:
    import uvloop  # noqa: F401  (pyproject's test extra lists it: without it this file proves nothing)

    from salmon_relayauth.receiver import new_event_loop

    os.environ["RELAYAUTH_UVLOOP"] = "1"
    try:
        loop = new_event_loop()
    finally:
        os.environ["RELAYAUTH_UVLOOP"] = "0"
    try:
        assert type(loop).__module__.startswith("uvloop")
    finally:
        loop.close()
    plain = new_event_loop()
    try:
        assert not type(plain).__module__.startswith("uvloop")  # RELAYAUTH_UVLOOP=0 declines it
    finally:
        plain.close()


def test_the_listener_tests_pass_on_uvloop() -> None:
    environment = {**os.environ, "RELAYAUTH_UVLOOP": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *ON_UVLOOP],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout.splitlines()[-1]
