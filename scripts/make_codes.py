#!/usr/bin/env python
"""Generate the shipped LDPC code tables (``src/qkdpp/codes/data``).

Usage::

    python scripts/make_codes.py                 # both families (a few minutes on 1 core)
    python scripts/make_codes.py --family peg4k  # only the small test family

Each code is built by :func:`qkdpp.codes.construct.peg_code` from ``(n, rate, seed)``; the file is
written as ``<code_id>.npz`` with its SHA-256 in ``<code_id>.sha256`` and in ``index.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from qkdpp.codes import DATA_DIR, FAMILIES, code_id, load_code, write_code, write_order
from qkdpp.codes.construct import greedy_puncture_order, peg_code


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", choices=sorted(FAMILIES), action="append")
    ap.add_argument("--out", type=Path, default=DATA_DIR)
    ap.add_argument("--rates", type=float, nargs="+", help="only these rates of the families")
    args = ap.parse_args()
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
