"""``qkdpp node``: run one party of a live link as a long-running service."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path
from types import FrameType

from qkdpp.cli.commands._argtypes import count, pace
from qkdpp.engine.config import load_config
from qkdpp.engine.node import LinkNode
from qkdpp.logs import setup_json_logging
from qkdpp.protocol.transports import parse_tcp_address


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "node",
        help="run Alice or Bob as a long-running node over TCP (simulated source by default)",
        description="Runs one party of a live link: reads its source chunk by chunk, recovers "
        "timing, sifts, processes key blocks as they fill and commits keys to "
        "<workdir>/keys-<role>.sqlite. Survives peer restarts (reconnects, voids what was in "
        "flight, resumes). Logs JSON lines to stderr. SIGTERM or Ctrl-C stops it cleanly. The "
        "source is the link simulator of [simulate] paced in real time; both nodes must use the "
        "same configuration and seed.",
    )
    p.add_argument("--role", choices=("alice", "bob"), required=True)
    p.add_argument(
        "--peer",
        default="tcp://127.0.0.1:7400",
        help="tcp://HOST:PORT: Alice listens there, Bob connects (default :7400)",
    )
    p.add_argument("--config", type=Path, default=None, help="link configuration (TOML)")
    p.add_argument(
        "--workdir",
        type=Path,
        default=Path("."),
        help="key store (with the authentication pads) and bootstrap key",
    )
    p.add_argument(
        "--speed", type=pace, default=1.0, help="source pace, × real time (0: as fast as possible)"
    )
    p.add_argument("--max-chunks", type=count, default=None, help="stop after this many chunks")
    p.add_argument(
        "--metrics-file",
        type=Path,
        default=None,
        help="write Prometheus metrics (QBER, key rate, f, aborts, ε) here after "
        "every block (node_exporter textfile format); keys are served by `qkdpp kme`",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    setup_json_logging()
    config = load_config(args.config)
    node = LinkNode(
        args.role,
        config,
        parse_tcp_address(args.peer),
        workdir=args.workdir,
        speed=args.speed,
        max_chunks=args.max_chunks,
        metrics_file=args.metrics_file,
    )

    def on_signal(signum: int, frame: FrameType | None) -> None:
        node.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stats = node.run()
    print(
        f"{args.role}: {stats.blocks_ok} blocks ok, {stats.blocks_failed} failed, "
        f"{stats.key_bits} key bits, {stats.connections} connection(s)"
    )
    return 0
