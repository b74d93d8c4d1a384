"""``qkdpp keyrate``: expected secret key length and rate vs distance and block size.

The link profile defaults to Lim et al. 2014 Section IV (η_Bob 0.1, p_dc 6e-7, p_ap 4e-2,
e_mis 5e-3, 0.2 dB/km, f_EC 1.16, ε_cor 1e-15, ε_sec = 1e-15·ℓ); every value can be changed
on the command line or in a TOML/JSON profile file. Intensities and probabilities are optimised
per point (:func:`qkdpp.security.linkmodel.optimise_decoy`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from qkdpp.errors import ConfigError
from qkdpp.security.linkmodel import LinkProfile, OptimumPoint, optimise_decoy

__all__ = ["compute_table", "register"]


def _floats(text: str) -> list[float]:
    try:
        out = [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None
    if not out:
        raise argparse.ArgumentTypeError("expected at least one number")
    return out


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "keyrate",
        help="expected finite-key secret key rate vs distance and block size (table / PNG)",
        description="Optimise decoy intensities and probabilities per (distance, block size) "
        "and print the finite-key secret key length ℓ per block and rate per pulse. Defaults: "
        "the link of Lim et al. 2014 Section IV.",
    )
    p.add_argument(
        "--protocol",
        choices=("lim2014", "rusca2018"),
        default="lim2014",
        help="finite-key bound: two decoys (lim2014, default) or one (rusca2018)",
    )
    p.add_argument(
        "--distances",
        type=_floats,
        default=[0, 25, 50, 75, 100, 125],
        help="fibre lengths in km, comma separated (default 0,25,50,75,100,125)",
    )
    p.add_argument(
        "--block-sizes",
        type=_floats,
        default=[1e4, 1e6, 1e8],
        help="key-basis block sizes n_X, comma separated (default 1e4,1e6,1e8)",
    )
    p.add_argument(
        "--profile",
        type=Path,
        help="TOML or JSON file with LinkProfile fields "
        "(eta_bob, p_dc, p_ap, e_mis, alpha_db_km, f_ec, eps_cor, kappa)",
    )
    for f in fields(LinkProfile):
        p.add_argument(
            f"--{f.name.replace('_', '-')}",
            type=float,
            default=None,
            help=f"override {f.name} (default {f.default})",
        )
    p.add_argument(
        "--unclipped",
        action="store_true",
        help="do not clip negative n⁻/m⁻ at 0 (the printed formulas)",
    )
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    p.add_argument(
        "--plot",
        type=Path,
        help="write a PNG plot of rate vs distance (needs matplotlib: pip install qkdpp[plot])",
    )
    p.set_defaults(func=run)


def load_profile(args: argparse.Namespace) -> LinkProfile:
    """LinkProfile from the defaults, an optional profile file and command-line overrides."""
    values: dict[str, Any] = {}
    if args.profile is not None:
        path: Path = args.profile
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read link profile {path}: {exc}") from exc
        try:
            if path.suffix == ".toml":
                import tomllib

                values = tomllib.loads(text)
            else:
                values = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"link profile {path} is not valid {path.suffix[1:]}: {exc}") from exc
        known = {f.name for f in fields(LinkProfile)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(
                f"link profile {path}: unknown fields {sorted(unknown)}; known: {sorted(known)}"
            )
    for f in fields(LinkProfile):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    return LinkProfile(**{k: float(v) for k, v in values.items()})


def compute_table(
    link: LinkProfile,
    distances: list[float],
    block_sizes: list[float],
    *,
    protocol: str = "lim2014",
    clip_negative: bool = True,
) -> list[OptimumPoint]:
    """Optimised points for every (block size, distance)."""
    for n in block_sizes:
        if not n >= 1 or math.isinf(n):
            raise ConfigError(f"block sizes must be >= 1, got {n}")
    for d in distances:
        if not 0 <= d < math.inf:
            raise ConfigError(f"distances must be finite and >= 0 km, got {d}")
    return [
        optimise_decoy(link, d, n, protocol=protocol, clip_negative=clip_negative)
        for n in block_sizes
        for d in distances
    ]


def run(args: argparse.Namespace) -> int:
    link = load_profile(args)
    pts = compute_table(
        link,
        args.distances,
        args.block_sizes,
        protocol=args.protocol,
        clip_negative=not args.unclipped,
    )
    if args.json:
        for p in pts:
            print(
                json.dumps(
                    {
                        "distance_km": p.distance_km,
                        "n_key": p.n_key,
                        "key_length": p.length,
                        "rate_per_pulse": p.rate,
                        "mu": p.mu,
                        "p_mu": p.p_mu,
                        "p_key": p.p_key,
                    }
                )
            )
    else:
        print(f"protocol {args.protocol}; ℓ = secret bits per block, R = secret bits per pulse")
        print(f"{'n_key':>8} {'km':>6} {'ℓ':>12} {'R':>10}  {'μ':<24} {'p_μ':<24} p_key")
        for p in pts:
            mu = ",".join(f"{m:.3g}" for m in p.mu)
            pm = ",".join(f"{m:.3g}" for m in p.p_mu)
            print(
                f"{p.n_key:8.0e} {p.distance_km:6.1f} {p.length:12.0f} {p.rate:10.3e}  "
                f"{mu:<24} {pm:<24} {p.p_key:.3f}"
            )
    if args.plot is not None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print(
                "qkdpp keyrate: --plot needs matplotlib (pip install qkdpp[plot])", file=sys.stderr
            )
            return 1
        fig, ax = plt.subplots(figsize=(6, 4))
        for n in args.block_sizes:
            xs = [p.distance_km for p in pts if p.n_key == n and p.rate > 0]
            ys = [p.rate for p in pts if p.n_key == n and p.rate > 0]
            ax.semilogy(xs, ys, marker="o", label=f"n_X = {n:.0e}")
        ax.set_xlabel("distance (km)")
        ax.set_ylabel("secret key rate (bits / pulse)")
        ax.set_title(f"finite-key rate, {args.protocol}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        plt.close(fig)
        print(f"plot written to {args.plot}")
    return 0
