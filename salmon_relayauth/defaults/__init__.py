"""The built-in behaviour, registered as ordinary named plugins so it can be blocked or replaced."""

from __future__ import annotations

from .selection import MostSpecificSelection

__all__ = ["DEFAULT_PLUGINS", "MostSpecificSelection"]

# name -> plugin object; names are what ``[plugins] disabled`` and ``set_blocked`` take.
DEFAULT_PLUGINS: dict[str, object] = {
    MostSpecificSelection.name: MostSpecificSelection(),
}
