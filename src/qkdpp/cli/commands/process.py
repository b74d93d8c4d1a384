"""``qkdpp process``: turn Alice's record and Bob's capture into identical keys at both ends.

In one process (default) both parties run over an in-memory link. With ``--role`` only one party
runs, and talks to the other over TCP (``--peer tcp://host:port``: Alice listens there, Bob
connects), so the two ends can be two processes or two hosts.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from qkdpp.engine import warm
from qkdpp.engine.config import load_config, with_source_defaults
from qkdpp.engine.inputs import link_params_from_header, load_alice_record, load_bob_events
from qkdpp.engine.keys import compare_stores
from qkdpp.engine.report import block_row, format_table, summary, unused_bits_note
from qkdpp.engine.run import run_local, run_party
from qkdpp.errors import ConfigError, TransportError
from qkdpp.frame import Frame, Role
from qkdpp.protocol.faults import FaultPlan, FaultyTransport
from qkdpp.protocol.link import PeerLink
from qkdpp.protocol.transports import TcpListener, TcpTransport, loopback_pair, parse_tcp_address


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "process",
        help="process capture files end to end into keys in the key store",
        description="Process Alice's preparation record (alice.npz) and Bob's capture (any "
        "format `qkdpp inspect` reads) through timing, sifting, estimation, reconciliation, "
        "verification, finite-key length, privacy amplification, authentication and two-phase "
        "commit. Keys go to <workdir>/keys-<role>.sqlite. Each party needs the pre-shared "
        "bootstrap key <workdir>/bootstrap-<role>.key (0600).",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="FILE",
        help="ALICE BOB (one process), or this party's file with --role",
    )
    p.add_argument("--config", type=Path, default=None, help="link configuration (TOML)")
    p.add_argument("--workdir", type=Path, default=Path("."), help="key stores, keys, pool")
    p.add_argument(
        "--role",
        choices=("alice", "bob"),
        default=None,
        help="run only this party, over TCP (needs --peer)",
    )
    p.add_argument("--peer", default=None, help="tcp://HOST:PORT (Alice listens, Bob connects)")
    p.add_argument("--session", default=None, help="session id (UUID) both parties share")
    p.add_argument("--json", type=Path, default=None, help="write the JSON report here")
    p.add_argument(
        "--faults",
        default=None,
        help="inject channel faults, e.g. 'drop=0.01,tamper=0.02,seed=3' "
        "(demonstrations and tests)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=run)


def _with_link_defaults(config: dict[str, Any], header: dict[str, Any]) -> dict[str, Any]:
    """Take intensities and channel map from the capture header when the config is silent."""
    params = link_params_from_header(header)
    if params is None:
        return config
    return with_source_defaults(config, params)  # (checks the config against the header)


def _check_intensities(config: dict[str, Any], source: str) -> None:
    """ConfigError when neither the configuration nor ``source`` (a capture with the
    simulator's link header) gives the intensities the source sent and their probabilities:
    the timing pilot and the decoy finite-key bound must use the true values (before
    2026-11-28 the stages' own, differing defaults were used without a word)."""
    key_length = config.get("key_length", {})
    missing = [f"[key_length] {k}" for k in ("mu", "p_mu") if k not in key_length]
    if "mu" not in config.get("timing", {}):
        missing.append("[timing] mu")
    if key_length.get("protocol", "lim2014") == "tomamichel2012":
        missing = [m for m in missing if m.startswith("[timing]")]
    if missing:
        raise ConfigError(
            f"the source's intensities are unknown: {source} does not record them and the "
            f"configuration gives no {', '.join(missing)}; the timing pilot and the finite-key "
            "bound must use the values the source really sent: give them in --config "
            "(docs/config.md)"
        )


class _Progress:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.blocks = 0
        self.ok = 0
        self.t0 = time.perf_counter()

    def __call__(self, role: Role, f: Frame) -> None:
        if role is not Role.ALICE:
            return
        self.blocks += 1
        self.ok += f.ok
        if self.enabled:
            dt = time.perf_counter() - self.t0
            sys.stderr.write(
                f"\r[{'#' * min(self.blocks, 40):<40}] blocks {self.ok}/{self.blocks}"
                f" ok, {dt:.0f} s"
            )
            sys.stderr.flush()

    def done(self) -> None:
        if self.enabled and self.blocks:
            sys.stderr.write("\n")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    plan = FaultPlan.parse(args.faults) if args.faults else None
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.role is None:
        if len(args.inputs) != 2:
            raise ConfigError("process needs two files, ALICE BOB (or one file with --role)")
        warm.start(config)  # a first run compiles reconciliation meanwhile, in a second process
        alice = load_alice_record(args.inputs[0])
        bob, header = load_bob_events(args.inputs[1])
        config = _with_link_defaults(config, header)
        _check_intensities(config, args.inputs[1])
        transports = None  # both parties in one thread per lane (qkdpp.protocol.coop)
        if plan:
            ta, tb = loopback_pair()
            transports = (FaultyTransport(ta, plan), FaultyTransport(tb, plan))
        progress = _Progress(not args.quiet)
        t0 = time.perf_counter()
        a, b = run_local(
            config, alice, bob, workdir=args.workdir, transports=transports, on_block=progress
        )
        progress.done()
        seconds = time.perf_counter() - t0
        rows = [block_row(fa, fb) for fa, fb in zip(a.blocks, b.blocks, strict=True)]
        check = compare_stores(args.workdir / "keys-alice.sqlite", args.workdir / "keys-bob.sqlite")
        report: dict[str, Any] = {
            "summary": summary(rows, seconds, alice.n_slots),
            "keys": check,
            "timing": b.timing,
            "blocks": rows,
            "errors": [e for e in (a.error, b.error) if e],
            "stats": {"alice": vars(a.stats), "bob": vars(b.stats)},
        }
        ok = check["identical"] and not report["errors"]
    else:
        report, ok = _run_one(args, config, plan)
        rows = report["blocks"]
    print(format_table(rows))
    s = report["summary"]
    print(
        f"\n{s['blocks_ok']}/{s['blocks']} blocks, {s['secret_key_bits']} secret key bits, "
        f"{s['sifted_key_bits_processed']} sifted key bits in {s['seconds']:.1f} s"
    )
    if "keys" in report:
        k = report["keys"]
        print(
            f"keys identical at both ends: {'yes' if k['identical'] else 'NO'} "
            f"({k['keys']} keys, {k['bits']} bits)"
        )
    note = unused_bits_note(report["stats"], config["session"])
    if note:
        print(note)
    for e in report["errors"]:
        print(f"error: {e}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0 if ok else 1


def _run_one(
    args: argparse.Namespace, config: dict[str, Any], plan: FaultPlan | None
) -> tuple[dict[str, Any], bool]:
    if args.peer is None:
        raise ConfigError("--role needs --peer tcp://HOST:PORT")
    if len(args.inputs) != 1:
        raise ConfigError("with --role give only this party's file")
    role = Role(args.role)
    host, port = parse_tcp_address(args.peer)
    if role is Role.ALICE:
        data: Any = load_alice_record(args.inputs[0])
        n_slots = data.n_slots
    else:
        data, header = load_bob_events(args.inputs[0])
        config = _with_link_defaults(config, header)
        n_slots = 0  # learnt from the timing exchange: Bob assigns slots within Alice's range
    _check_intensities(config, args.inputs[0])
    timeout = float(config["session"]["timeout_s"])
    try:
        if role is Role.ALICE:
            listener = TcpListener(host, port)
            transport: Any = listener.accept(timeout=timeout * 10)
            listener.close()
        else:
            transport = TcpTransport.connect(host, port, retry_for=timeout)
    except OSError as exc:  # (an address that does not resolve, a port in use)
        verb = "listen on" if role is Role.ALICE else "connect to"
        raise TransportError(f"cannot {verb} {args.peer}: {exc.strerror or exc}") from exc
    if plan:
        transport = FaultyTransport(transport, plan)
    session = args.session or str(uuid.UUID(int=0))
    link = PeerLink(transport, role, session, timeout=timeout)
    logging.getLogger(__name__).info("connected to %s", args.peer)
    link.handshake()
    t0 = time.perf_counter()
    result = run_party(role, config, link, data, n_slots, workdir=args.workdir)
    link.close()
    rows = [block_row(f) for f in result.blocks]
    report: dict[str, Any] = {
        "summary": summary(rows, time.perf_counter() - t0, n_slots),
        "blocks": rows,
        "timing": result.timing,
        "errors": [result.error] if result.error else [],
        "stats": vars(result.stats),
    }
    return report, result.error is None
