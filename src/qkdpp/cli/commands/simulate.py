"""``qkdpp simulate``: run the link simulator and write Bob's (and Alice's) captures."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from qkdpp.cli.commands._argtypes import seed, slot_count
from qkdpp.engine.demo import DEMO_MU, DEMO_P_MU, DEMO_P_Z
from qkdpp.engine.inputs import save_alice_record
from qkdpp.io.native import write_native
from qkdpp.io.simulator import LinkParams, model_bb84, model_bbm92, simulate_bbm92, simulate_link
from qkdpp.kernels.sifting import gather_classes2


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``simulate`` subcommand."""
    p = subparsers.add_parser(
        "simulate",
        help="simulate a QKD link (decoy BB84 or BBM92) and write captures",
        description=(
            "Simulate a decoy-state BB84 (or BBM92) link and write Bob's time tags as a native "
            "qkdpp capture (.qkdc; Alice's too for BBM92) and Alice's preparation record as "
            "alice.npz (packed basis/value bit-planes, MSB first, and the intensity classes as a "
            "2-bit plane, 'intensity2'). "
            "Prints the gains and QBERs the analytic model predicts and those observed."
        ),
    )
    p.add_argument("--out", type=Path, default=Path("sim_out"), help="output folder")
    p.add_argument("--protocol", choices=("bb84", "bbm92"), default="bb84")
    p.add_argument(
        "--slots",
        type=slot_count,
        default=200_000_000,
        help="number of slots (2e8: 0.2 s of a 1 GHz link, ≈ 120 MB of files, ≈ 1.4e6 sifted key "
        "bits at 25 km, i.e. one 1e6-bit key block and a shorter last one)",
    )
    p.add_argument("--seed", type=seed, default=1)
    p.add_argument("--rep-rate-hz", type=float, default=1e9)
    p.add_argument("--fibre-km", type=float, default=25.0)
    p.add_argument("--eta-bob", type=float, default=0.10)
    p.add_argument("--p-dark", type=float, default=6e-7, help="dark count per detector per slot")
    p.add_argument("--e-mis", type=float, default=5e-3)
    p.add_argument("--jitter-ps", type=float, default=30.0)
    p.add_argument("--dead-time-ns", type=float, default=0.0)
    p.add_argument("--p-afterpulse", type=float, default=0.0)
    # intensities and basis choice: those of `qkdpp demo` (the finite-key optimum for 1e6-bit
    # blocks at 25 km, see qkdpp.engine.demo); the simulator's own defaults give no key there
    p.add_argument(
        "--mu", type=float, nargs=3, default=tuple(DEMO_MU), metavar=("MU1", "MU2", "MU3")
    )
    p.add_argument(
        "--p-mu", type=float, nargs=3, default=tuple(DEMO_P_MU), metavar=("P1", "P2", "P3")
    )
    p.add_argument(
        "--p-z", type=float, default=DEMO_P_Z, help="Z-basis probability (Alice and Bob)"
    )
    p.add_argument("--offset-ps", type=float, default=0.0, help="Bob clock offset")
    p.add_argument("--drift-ppm", type=float, default=0.0, help="Bob clock frequency offset")
    p.add_argument("--mu-pair", type=float, default=0.05, help="BBM92 pairs per slot")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``qkdpp simulate``."""
    params = LinkParams(
        protocol=args.protocol,
        rep_rate_hz=args.rep_rate_hz,
        fibre_km=args.fibre_km,
        eta_bob=args.eta_bob,
        p_dark=args.p_dark,
        e_mis=args.e_mis,
        jitter_ps=args.jitter_ps,
        dead_time_ns=args.dead_time_ns,
        p_afterpulse=args.p_afterpulse,
        mu=tuple(args.mu),
        p_mu=tuple(args.p_mu),
        p_z_alice=args.p_z,
        p_z_bob=args.p_z,
        clock_offset_ps=args.offset_ps,
        clock_drift_ppm=args.drift_ppm,
        mu_pair=args.mu_pair,
    )
    params.validate()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    cmap = {str(c): n for c, n in zip(params.channels, ("Z0", "Z1", "X0", "X1"), strict=True)}
    header = {
        "link": params.to_dict(),
        "channel_map": cmap,
        "device_profile": "simulator",
        "seed": args.seed,
        "n_slots": args.slots,
    }
    t0 = time.perf_counter()
    summary: dict = {"protocol": args.protocol, "n_slots": args.slots}
    if args.protocol == "bb84":
        alice, bob, truth = simulate_link(params, args.slots, args.seed)
        elapsed = time.perf_counter() - t0
        save_alice_record(out / "alice.npz", alice)
        write_native(out / "bob.qkdc", bob, {**header, "side": "bob"})
        model = model_bb84(params)
        summary["model"] = model
        observed = {}
        n_cls = np.zeros(4, np.int64)  # slots of each class, counted piece by piece
        for s in range(0, args.slots, 1 << 24):
            n_cls += np.bincount(alice.classes(s, min(args.slots, s + (1 << 24))), minlength=4)
        hit_slots = np.unique(truth.slot[truth.slot >= 0])
        n_hit = np.bincount(gather_classes2(alice.intensity_p, hit_slots), minlength=4)
        for k in range(3):
            nk = int(n_cls[k])
            observed[f"mu{k}"] = {"slots": nk, "gain": float(n_hit[k] / nk) if nk else 0.0}
        summary["observed"] = observed
        summary["bob_events"] = len(bob)
    else:
        a_ev, b_ev, truth = simulate_bbm92(params, args.slots, args.seed)
        elapsed = time.perf_counter() - t0
        write_native(out / "alice.qkdc", a_ev, {**header, "side": "alice"})
        write_native(out / "bob.qkdc", b_ev, {**header, "side": "bob"})
        summary["model"] = model_bbm92(params)
        summary["alice_events"] = len(a_ev)
        summary["bob_events"] = len(b_ev)
    summary["seconds"] = elapsed
    if args.protocol == "bb84":
        (out / "link.toml").write_text(link_toml(params))
    summary["slots_per_s"] = args.slots / elapsed if elapsed > 0 else None
    if args.json:
        print(json.dumps(summary, indent=2, default=float))
        return 0
    print(
        f"simulated {args.slots} slots ({args.protocol}) in {elapsed:.2f} s "
        f"→ {out}/ (Bob: {summary['bob_events']} events)"
    )
    m = summary["model"]
    if args.protocol == "bb84":
        print(f"transmittance η = {m['eta']:.4g}")
        print(
            f"{'class':6} {'μ':>8} {'gain model':>12} {'gain sim':>12} {'QBER_Z':>9} {'QBER_X':>9}"
        )
        for k in range(3):
            e = m[f"mu{k}"]
            print(
                f"{k:<6} {e['mu']:8.4g} {e['gain']:12.5g} "
                f"{summary['observed'][f'mu{k}']['gain']:12.5g} {e['qber_Z']:9.4%} "
                f"{e['qber_X']:9.4%}"
            )
    else:
        for k, v in m.items():
            print(f"{k}: {v:.5g}")
    return 0


def link_toml(params: LinkParams) -> str:
    """The link configuration both parties give ``qkdpp process --config``: the intensities, their
    probabilities and Bob's channel map, as simulated (they must match the hardware)."""
    cmap = ", ".join(
        f'"{c}" = [{b}, {v}]'
        for c, (b, v) in zip(params.channels, ((0, 0), (0, 1), (1, 0), (1, 1)), strict=True)
    )
    mu = ", ".join(repr(float(x)) for x in params.mu)
    p_mu = ", ".join(repr(float(x)) for x in params.p_mu)
    return (
        "# written by qkdpp simulate: the link both parties process\n"
        "[timing]\n"
        f"slot_ps = {params.slot_ps!r}\n"
        f"mu = [{mu}]\n"
        f"channel_map = {{ {cmap} }}\n\n"
        "[key_length]\n"
        f"mu = [{mu}]\n"
        f"p_mu = [{p_mu}]\n"
    )
