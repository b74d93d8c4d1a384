"""``qkdpp demo``: the main job on built-in defaults — simulate a 25 km decoy-BB84 link, process
it end to end at both parties, check the keys are identical, print the summary."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from qkdpp.cli.commands._argtypes import seed, slot_count
from qkdpp.engine import warm
from qkdpp.engine.demo import demo_config
from qkdpp.engine.inputs import make_demo_bootstrap
from qkdpp.engine.keys import compare_stores
from qkdpp.engine.report import block_row, format_table, summary, unused_bits_note
from qkdpp.engine.run import run_local
from qkdpp.io.simulator import check_memory, simulate_link


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="simulate a 25 km decoy-BB84 link and turn it into identical keys at both ends",
        description="Simulates a link (defaults: 25 km, 1 GHz, 4e8 slots, decoy BB84 with "
        "finite-key-optimised intensities), runs timing recovery, sifting, parameter "
        "estimation, Cascade/LDPC, verification, finite-key length, privacy amplification, "
        "authentication and two-phase commit for Alice and Bob over an in-memory link, "
        "checks both key stores hold identical keys, and prints a per-block table.",
    )
    p.add_argument(
        "--slots", type=slot_count, default=400_000_000, help="slots to simulate (default 4e8)"
    )
    p.add_argument("--km", type=float, default=25.0, help="fibre length in km (default 25)")
    p.add_argument("--seed", type=seed, default=1, help="simulator seed (default 1)")
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where key stores and keys go (default: a temporary folder)",
    )
    p.add_argument("--json", action="store_true", help="print the JSON report instead")
    p.set_defaults(func=run)


_COLD = "; this first run also compiled the numba kernels, cached for the next runs)"


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="qkdpp-demo-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        cfg = demo_config(args.slots, args.km, args.seed)
        params = cfg["simulate"]["params"]
        say = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr))
        say(f"simulating {args.slots:.3g} slots of a {args.km:g} km link ...")
        check_memory(args.slots)  # before the compile helper starts
        # a first run compiles reconciliation meanwhile, in a second process
        cold = warm.start(cfg) is not None
        t0 = time.perf_counter()
        alice, bob, _truth = simulate_link(params, args.slots, args.seed)
        t_sim = time.perf_counter() - t0
        say(f"  {len(bob)} detections at Bob in {t_sim:.1f} s; processing both ends ...")
        make_demo_bootstrap(workdir)
        t1 = time.perf_counter()
        a, b = run_local(cfg, alice, bob, workdir=workdir)
        t_run = time.perf_counter() - t1
        rows = [block_row(fa, fb) for fa, fb in zip(a.blocks, b.blocks, strict=True)]
        check = compare_stores(workdir / "keys-alice.sqlite", workdir / "keys-bob.sqlite")
        report: dict[str, Any] = {
            "summary": summary(rows, t_run, args.slots, params.rep_rate_hz),
            "keys": check,
            "timing": b.timing,
            "simulation_seconds": round(t_sim, 3),
            "blocks": rows,
            "errors": [e for e in (a.error, b.error) if e],
            "stats": {"alice": vars(a.stats), "bob": vars(b.stats)},
        }
        if args.json:
            print(json.dumps(report, indent=2, default=str))
        else:
            print(format_table(rows))
            s = report["summary"]
            print(
                f"\n{s['blocks_ok']}/{s['blocks']} blocks → {s['secret_key_bits']} secret bits; "
                f"{s['sifted_key_bits_processed']} sifted key bits in {t_run:.1f} s "
                f"({(s['sifted_bits_per_s'] or 0) / 1e6:.2f} Mbit/s sifted key processed"
                + (_COLD if cold else ")")
            )
            note = unused_bits_note(report["stats"], cfg["session"], "simulate more (--slots)")
            if note:
                print(note)
            if s.get("secret_key_rate_bps_at_source_rate") is not None:
                print(
                    f"secret key rate of the simulated link: "
                    f"{s['secret_key_rate_bps_at_source_rate'] / 1e3:.1f} kbit/s "
                    f"({args.slots / params.rep_rate_hz:.2f} s of light)"
                )
            print(
                f"keys identical at both ends: {'yes' if check['identical'] else 'NO'} "
                f"({check['keys']} keys, {check['bits']} bits)"
            )
            print(
                f"time at Bob: clock fit {b.timing.get('time_timing_s', 0):.2f} s, "
                f"sifting {b.stats.seconds_sifting:.2f} s, accumulation "
                f"{b.stats.seconds_accumulating:.2f} s, key blocks {b.stats.seconds_blocks:.2f} s"
            )
            if b.timing:
                print(
                    f"clock: drift {b.timing.get('clock_drift_ppm', 0):.3f} ppm, "
                    f"gated out {100 * b.timing.get('fraction_gated', 0):.2f} %"
                )
            for e in report["errors"]:
                print(f"error: {e}")
        return 0 if check["identical"] and not report["errors"] else 1
