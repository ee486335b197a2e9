"""Shared helpers for the test suite."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from queued import queued_envelope

from salmon_relayauth.queue import QueuedEnvelope

# The suite runs on asyncio's own event loop, the one a plain install uses; the relay takes uvloop
# when it is installed (the test extra installs it), and tests/test_event_loops.py runs the
# listener's tests again on it.
os.environ.setdefault("RELAYAUTH_UVLOOP", "0")  # the uvloop re-run sets it to 1 before this runs

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_CONFIG = ROOT / "tests" / "configs" / "exchange_example.toml"


@pytest.fixture
def sample_config_path() -> Path:
    return SAMPLE_CONFIG


@pytest.fixture
def new_envelope() -> Callable[..., QueuedEnvelope]:
    """``new_envelope(queue, **changes)``: an envelope with a fresh id of ``queue``, one recipient."""
    return queued_envelope


@pytest.fixture
def entry_point_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Install a throw-away distribution whose entry points are given, the way pip would lay it out.

    Returns a function ``install(name, entry_points: dict[str, str], modules: dict[str, str])`` that
    writes the modules and a ``.dist-info`` with an ``entry_points.txt`` on a new ``sys.path`` entry.
    """
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))

    def install(name: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
        for module, source in modules.items():
            (site / f"{module}.py").write_text(source)
        info = site / f"{name}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
        lines = "\n".join(f"{key} = {value}" for key, value in entry_points.items())
        (info / "entry_points.txt").write_text(f"[salmon_relayauth]\n{lines}\n")

    return install
