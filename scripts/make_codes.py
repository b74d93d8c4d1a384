#!/usr/bin/env python
"""Generate the shipped LDPC code tables (``src/qkdpp/codes/data``).

Usage::

    python scripts/make_codes.py                 # both families (a few minutes on 1 core)
    python scripts/make_codes.py --family peg4k  # only the small test family
    python scripts/make_codes.py --family de32k --rates 0.85   # one density-evolution code
    python scripts/make_codes.py --design 0.85:48:0.02:60       # rerun the DE optimiser

``--design RATE:DC[:P[:MAXDEG]]`` runs :func:`qkdpp.codes.density_evolution.ascend` at crossover
``P`` (default ``h^-1((1 - RATE) / 1.06)``) with mean check degree ``DC``, variable degrees up to
``MAXDEG`` (default 30) and prints ``λ`` (the values in
:data:`qkdpp.codes.construct.DE_LAMBDA` came from these runs).

Each code is built by :func:`qkdpp.codes.construct.peg_code` from ``(n, rate, seed)``; the file is
written as ``<code_id>.npz`` with its SHA-256 in ``<code_id>.sha256`` and in ``index.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from qkdpp.codes import DATA_DIR, FAMILIES, code_id, load_code, write_code, write_order
from qkdpp.codes.construct import (
    DE_LAMBDA,
    bsc_entropy,
    greedy_puncture_order,
    inverse_entropy,
    peg_code,
)


def design(arg: str) -> None:
    """Run the density-evolution optimiser for ``RATE:DC[:P]`` and print the result."""
    from qkdpp.codes import density_evolution as de

    parts = arg.split(":")
    rate, dc = float(parts[0]), float(parts[1])
    p = float(parts[2]) if len(parts) > 2 and parts[2] else inverse_entropy((1 - rate) / 1.06)
    maxdeg = int(parts[3]) if len(parts) > 3 else 30
    rho = de.rho_concentrated(dc)
    degs = de.candidate_degrees(maxdeg)
    lam = de.ascend(p, {3: 0.3, 12: 0.3, maxdeg: 0.4}, rho, chain_rate=rate, degrees=degs)
    if lam is None:
        print(f"{arg}: the start distribution does not converge at p={p:.5f}; try a lower DC")
        return
    r = de.design_rate(lam, rho)
    print(
        f"rate {rate} dc {dc} p {p:.5f}: reached rate {r:.4f}, f* = {(1 - r) / bsc_entropy(p):.3f}"
    )
    print({d: round(w, 5) for d, w in lam.items()})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", choices=sorted(FAMILIES), action="append")
    ap.add_argument("--out", type=Path, default=DATA_DIR)
    ap.add_argument("--rates", type=float, nargs="+", help="only these rates of the families")
    ap.add_argument("--design", nargs="+", metavar="RATE:DC[:P]", help="run the DE optimiser")
    args = ap.parse_args()
    if args.design:
        for arg in args.design:
            design(arg)
        return 0
    # base families first: derived ones (``base`` key) read the base H
    fams = sorted(args.family or FAMILIES, key=lambda f: "base" in FAMILIES[f])
    for fam in fams:
        spec = FAMILIES[fam]
        for rate in spec["rates"]:
            if args.rates and not any(abs(rate - r) < 1e-9 for r in args.rates):
                continue
            t0 = time.perf_counter()
            if "base" in spec:
                base = load_code(code_id(spec["base"], rate))
                order = greedy_puncture_order(
                    base.row_ptr, base.col_idx, base.n, base.m // 3, spec["seed"]
                )
                cid = write_order(args.out, fam, rate, base.code_id, order)
                print(f"{cid}: order of {base.code_id} ({time.perf_counter() - t0:.1f} s)")
                continue
            if spec.get("design") == "de-v1":
                depth = spec["depth"] if rate < 0.8 else spec["depth_from_080"]
                lam = DE_LAMBDA[rate]["lam"]
                row_ptr, col_idx = peg_code(
                    spec["n"],
                    rate,
                    spec["seed"],
                    depth=depth,
                    lam=lam,
                    chain_gap=spec["chain_gap"],
                    pair_gap=spec["pair_gap"],
                )
                m = row_ptr.size - 1
                order = greedy_puncture_order(
                    row_ptr, col_idx, spec["n"], m // 3, spec["seed"], low=True
                )
                extra = {k: spec[k] for k in ("design", "puncture", "shorten", "format")}
                cid = write_code(
                    args.out,
                    fam,
                    spec["n"],
                    rate,
                    spec["seed"],
                    depth,
                    row_ptr,
                    col_idx,
                    order=order,
                    extra=extra,
                )
            else:
                row_ptr, col_idx = peg_code(spec["n"], rate, spec["seed"], depth=spec["depth"])
                cid = write_code(
                    args.out, fam, spec["n"], rate, spec["seed"], spec["depth"], row_ptr, col_idx
                )
            print(
                f"{cid}: m={row_ptr.size - 1} E={col_idx.size} ({time.perf_counter() - t0:.1f} s)",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
