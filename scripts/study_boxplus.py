#!/usr/bin/env python
"""Study of the fixed-point box-plus sum-product prototype (:mod:`qkdpp.kernels.ldpc._boxplus`).

FER / sweeps (``--fer``): unpunctured de32k mother codes, frames with exactly ``round(q n)``
errors at the q where ``f = (1 - R) / h(q)`` (``R = 1 - m / n``) hits the requested efficiency,
60 sweeps at most, per-frame early stop on a syndrome match; the float sum-product decoders
(the stage's explicit-SIMD C kernel ``_simd`` and the numba table SPA ``_nb``) and every box-plus
variant decode the IDENTICAL frames. A frame counts as decoded when the decoder reports a
syndrome match and the word equals the transmitted one.

Speed (``--speed``): one layered sweep plus the syndrome check, ns per edge and frame, on
``--speed-codes`` (default de32k-r0.85) at ``--widths`` frames per call (default 16 and 32),
for every box-plus variant, the C kernel (``_cy.spa_sweep`` + ``_cy.check``, at 8 / 16 / 32
frames) and the numba table SPA
(``_nb._spa_layer_sweep`` + ``_nb._check``); all in one process, alternating, ``--repeats``
rounds, CPU time (``time.process_time``), median and min-max reported.

Variants: ``sSlL[mK]``: 1 LSB = 2^-S nats, L lines for g (1 = least-squares single line),
optional int8 message storage in units of 2^K LSB.

Writes CSV rows to ``--out`` (default /tmp/qbp/study_boxplus.csv). Example::

    nice -n 5 python scripts/study_boxplus.py --fer --speed --frames 64
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import time
from collections.abc import Callable

import numpy as np

# (run as `python scripts/study_boxplus.py`: this folder is on the path)
from study_ldpc import _mother_frames as frames

from qkdpp.codes import load_code
from qkdpp.codes.construct import bsc_entropy, inverse_entropy
from qkdpp.kernels.ldpc import _boxplus as bx
from qkdpp.kernels.ldpc import _nb, _simd

DEFAULT_VARIANTS = ["s8l6", "s6l4", "s6l2", "s3l1", "s8l6m5"]
# (code, efficiency) points: r0.85 is the stage's code at 2 %, r0.70 at 5 % (f = 1.10)
POINTS = [("de32k-r0.85", 1.12), ("de32k-r0.85", 1.10), ("de32k-r0.70", 1.10)]
KEY_BITS = 29491  # key bits per 32768-bit chunk at the stage's delta = 0.1


def parse_variant(name: str) -> bx.FixedPoint:
    """``sSlL[mK]`` → :class:`FixedPoint` (16-nat message cap)."""
    m = re.fullmatch(r"s(\d+)l(\d+)(?:m(\d+))?", name)
    if m is None:
        raise ValueError(f"bad variant {name!r}")
    return bx.FixedPoint.make(int(m[1]), int(m[2]), msg_shift=int(m[3] or 0))


def fer_study(nf: int, variants: list[str], seed: int, out: list[dict]) -> None:
    for cid, f_target in POINTS:
        code = load_code(cid)
        rate = 1.0 - code.m / code.n
        q = inverse_entropy((1.0 - rate) / f_target)
        k_err = round(q * code.n)
        f_exact = (1.0 - rate) / bsc_entropy(k_err / code.n)
        x, s, llr = frames(code, q, nf, seed)
        decs: list[tuple[str, bx.FixedPoint | None]] = [("float_nb", None)]
        if _simd.AVAILABLE:  # the stage's decoder (C module built)
            decs.insert(0, ("float_simd", None))
        decs += [(v, parse_variant(v)) for v in variants]
        for name, fp in decs:
            t0 = time.process_time()
            if name == "float_simd":
                b, it, ok = _simd.decode_layered_spa(code.row_ptr, code.col_idx, llr, s, 60)
            elif name == "float_nb":
                b, it, ok = _nb.decode_layered_spa(code.row_ptr, code.col_idx, llr, s, 60)
            else:
                assert fp is not None
                lq = bx.quantize_llr(llr, fp)
                b, it, ok, _, _ = bx.decode_boxplus(code.row_ptr, code.col_idx, lq, s, 60, fp)
            cpu = time.process_time() - t0
            good = np.asarray(ok, bool) & (b == x).all(axis=0)
            row = {
                "kind": "fer",
                "code": cid,
                "f": round(f_exact, 4),
                "q": round(k_err / code.n, 6),
                "errors": k_err,
                "decoder": name,
                "frames": nf,
                "failed": int(nf - good.sum()),
                "fer": round(1.0 - float(good.mean()), 4),
                "mean_sweeps": round(float(it.mean()), 2),
                "mean_sweeps_ok": round(float(it[good].mean()), 2) if good.any() else "",
                "cpu_s": round(cpu, 2),
            }
            if fp is not None:
                row["g_max_err_nats"] = round(bx.g_table_error(fp.scale_log2, fp.lines), 4)
                row["lines"] = str(fp.lines)
                row["mcap_nats"] = fp.mcap / (1 << fp.scale_log2)
            out.append(row)
            print(row, flush=True)


def speed_study(
    cid: str, variants: list[str], repeats: int, widths: list[int], out: list[dict]
) -> None:
    from qkdpp.kernels.ldpc import _cy  # type: ignore[attr-defined]

    code = load_code(cid)
    rp = np.ascontiguousarray(code.row_ptr, np.int64)
    ci = np.ascontiguousarray(code.col_idx, np.int32)
    dmax = int(np.diff(rp).max())
    q = inverse_entropy((code.m / code.n) / 1.12)
    wmax = max([*widths, 32])
    _, s32, llr32 = frames(code, q, wmax, 7)
    jobs: dict[str, Callable[[], None]] = {}

    def warm(name: str, fn: Callable[[], None]) -> None:
        fn()
        jobs[name] = fn

    for nf in widths:
        s = np.ascontiguousarray(s32[:, :nf])
        llr = np.ascontiguousarray(llr32[:, :nf])
        for v in variants:
            fp = parse_variant(v)
            sweep, unsat_count = bx.kernels(fp)
            st = dict(
                post=bx.quantize_llr(llr, fp),
                msg=np.zeros((code.edges, nf), fp.msg_dtype),
                q=np.empty((dmax, nf), np.int16),
                fw=np.empty((dmax, nf), np.int16),
                ex=np.empty((dmax, nf), np.int16),
                bb=np.empty(nf, np.int16),
                par=np.empty(nf, np.uint8),
                un=np.empty(nf, np.int32),
            )

            def run_bx(st=st, s=s, sweep=sweep, unsat_count=unsat_count):
                sweep(rp, ci, st["post"], st["msg"], s, st["q"], st["fw"], st["ex"], st["bb"],
                      st["par"])  # fmt: skip
                unsat_count(rp, ci, st["post"], s, st["un"], st["par"])

            warm(f"{v}@{nf}", run_bx)
        nb = dict(
            post=llr.copy(),
            msg=np.zeros((code.edges, nf), np.float32),
            q=np.empty((dmax, nf), np.float32),
            ph=np.empty((dmax, nf), np.float32),
            tot=np.empty(nf, np.float32),
            par=np.empty(nf, np.uint8),
            un=np.empty(nf, np.int32),
        )

        def run_nb(st=nb, s=s):
            _nb._spa_layer_sweep(rp, ci, st["post"], st["msg"], s, st["q"], st["ph"], st["tot"],
                                 st["par"])  # fmt: skip
            _nb._check(rp, ci, st["post"], s, st["un"], st["par"])

        if nf <= 32:
            warm(f"float_nb@{nf}", run_nb)
    for nf in (8, 16, 32):
        s = np.ascontiguousarray(s32[:, :nf])
        cst = dict(
            post=np.ascontiguousarray(llr32[:, :nf]),
            msg=np.zeros((code.edges, nf), np.float32),
            scr=_cy.make_scratch(rp),
            un=np.empty(nf, np.int32),
        )

        def run_c(st=cst, s=s):
            _cy.spa_sweep(rp, ci, st["post"], st["msg"], s, st["scr"])
            _cy.check(rp, ci, st["post"], s, st["un"])

        warm(f"float_simd@{nf}", run_c)
    times: dict[str, list[float]] = {k: [] for k in jobs}
    names = list(jobs)
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            t0 = time.process_time()
            jobs[name]()
            times[name].append(time.process_time() - t0)
    load = os.getloadavg()[0]
    for name in names:
        dec, width = name.split("@")
        ns = np.array(times[name]) / code.edges / int(width) * 1e9
        row = {
            "kind": "speed",
            "code": code.code_id,
            "decoder": dec,
            "frames": int(width),
            "ns_edge_frame_median": round(float(np.median(ns)), 3),
            "ns_min": round(float(ns.min()), 3),
            "ns_max": round(float(ns.max()), 3),
            "repeats": repeats,
            "loadavg": round(load, 2),
        }
        out.append(row)
        print(row, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fer", action="store_true")
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS)
    ap.add_argument("--speed-codes", nargs="+", default=["de32k-r0.85"])
    ap.add_argument("--widths", nargs="+", type=int, default=[16, 32], help="box-plus frames")
    ap.add_argument("--out", default="/tmp/qbp/study_boxplus.csv")
    args = ap.parse_args()
    rows: list[dict] = []
    if args.fer:
        fer_study(args.frames, args.variants, args.seed, rows)
    if args.speed:
        for cid in args.speed_codes:
            speed_study(cid, args.variants, args.repeats, args.widths, rows)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(args.out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
