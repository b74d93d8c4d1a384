"""Command-line interface: ``qkdpp`` and ``python -m qkdpp``.

Each command lives in :mod:`qkdpp.cli.commands` as a module with ``register(subparsers)``; they are
discovered here, so a new command is one new file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from qkdpp._version import __version__
from qkdpp.errors import QkdppError


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every discovered subcommand."""
    parser = argparse.ArgumentParser(
        prog="qkdpp",
        description="qkdpp: quantum key distribution post-processing engine.",
    )
    parser.add_argument("--version", action="version", version=f"qkdpp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from qkdpp.cli import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except QkdppError as exc:
        print(f"qkdpp {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the environment: a missing folder, no permission, a full disk
        where = f": {exc.filename}" if exc.filename else ""
        print(f"qkdpp {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"qkdpp {args.command}: interrupted", file=sys.stderr)
        return 130
