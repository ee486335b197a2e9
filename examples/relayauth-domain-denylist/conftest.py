"""Puts this directory on ``sys.path``, so the tests import the plugin from here when the package is
not pip-installed. A conftest rather than pytest's ``pythonpath`` setting, because that setting only
applies when this directory's pyproject.toml is pytest's configuration file, not when the tests run
alongside another project's (``pytest tests/ examples/relayauth-domain-denylist`` from the root)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
