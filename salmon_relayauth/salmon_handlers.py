"""Loading Salmon handler modules into Salmon's (process-wide) Router."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable

from salmon.routing import Router

__all__ = ["use_handlers"]


def use_handlers(modules: Iterable[str]) -> None:
    """Make exactly ``modules`` the Router's handlers, re-importing them so their routes register
    again (Salmon registers routes at import time)."""
    names = list(modules)
    with Router.lock:
        Router.clear_routes()
        Router.HANDLERS.clear()
    for name in names:
        if name in sys.modules:
            importlib.reload(sys.modules[name])
    Router.load(names)
