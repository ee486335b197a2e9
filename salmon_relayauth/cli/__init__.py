"""``salmon-relayauth``: the operators' command line. Each verb lives in its own module."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import admin, check, explain, probe, queue, reload, serve, sink, users

__all__ = ["main"]

_VERBS = (check, explain, admin, serve, reload, queue, probe, sink, users)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="salmon-relayauth",
        description="Exchange-style receive connectors for Salmon: check, explain and manage a relay configuration.",
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb in _VERBS:
        verb.register(verbs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb; returns the exit status (0 fine, 1 the verb found problems, 2 bad usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    status: int = args.run(args)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
