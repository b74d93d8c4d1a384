"""``qkdpp bootstrap``: create the pre-shared authentication key of a new link."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from qkdpp.auth.bootstrap import write_bootstrap
from qkdpp.engine.inputs import party_files
from qkdpp.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bootstrap",
        help="create the pre-shared bootstrap authentication key of a link",
        description="Draw a fresh bootstrap key from the OS CSPRNG and write it, mode 0600, as "
        "<workdir>/bootstrap-alice.key and <workdir>/bootstrap-bob.key (identical contents). "
        "Carry one of them to the other node out of band (it authenticates the first blocks; "
        "the authentication pool is then refilled from QKD key).",
    )
    p.add_argument("workdir", type=Path, help="folder for the two key files")
    p.add_argument(
        "--bytes",
        type=int,
        default=8192,
        help="key size in bytes (default 8192: 16-byte hash key + pool)",
    )
    p.add_argument("--force", action="store_true", help="overwrite existing key files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    args.workdir.mkdir(parents=True, exist_ok=True)
    paths = [party_files(args.workdir, r)["bootstrap"] for r in ("alice", "bob")]
    existing = [p for p in paths if p.exists()]
    if existing and not args.force:
        raise ConfigError(f"{existing[0]} exists; use --force to replace the link's key")
    secret = os.urandom(args.bytes)
    for p in paths:
        if p.exists():
            p.unlink()
        write_bootstrap(p, secret)
        print(f"wrote {p}")
    return 0
