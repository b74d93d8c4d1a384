#!/usr/bin/env python
"""LDPC reconciliation study: efficiency f, frame error rate and throughput vs QBER.

For every protocol (``rate_adaptive``, ``blind``) and QBER, ``--frames`` frame pairs of one
``de32k`` chunk (29491 bits, exactly ``round(q n)`` errors, or independent flips with
``--binomial``) go through the two-party ``ldpc`` stage
(:func:`qkdpp.testing.run_pair`, in-memory loopback). Reported per point:

* ``f``   = mean over converged frames of ``leaked_by("ldpc") / (n_bits h(q))`` (REFERENCES.md §1),
* ``fer`` = failed frames / frames (before verification),
* ``mbps`` = sifted key bits / wall time of the whole two-party run (decoder + protocol, both
  parties in one process, so both share the core),
* ``sweeps`` (mean decoder sweeps per frame, all rounds), ``revealed`` (mean blind reveal
  bits of the corrected frames), ``f_max``, and ``failures``: each failed frame's index and
  reason (not converged, or converged to wrong bits),
* ``fer_ub95``: the one-sided 95 % Clopper-Pearson upper bound on the FER, ``cpu_s`` (CPU
  time of the run, both parties), and for blind mode ``extended``: corrected frames that
  revealed more than the schedule before 2026-11-27 evening allowed (``blind_rounds`` steps,
  at most all punctured values and ``d`` key bits: frames that failed then), their
  ``f_extended`` (``frame:f``) and ``f_without_extended`` (the mean f of the others, decoded
  as then).

``--calibrate`` instead sweeps the rate-adaptive efficiency and prints, per QBER, the smallest f
on the grid whose FER <= ``--target-fer`` (the numbers of ``EFFICIENCY_TABLE``).
``--compare-ldpc-package`` decodes the same mother code with the ``ldpc`` PyPI package.

Writes ``<out>.csv`` and ``<out>.png``. Example::

    python scripts/study_ldpc.py --frames 200 --out ldpc_study
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from typing import Any, cast

import numpy as np

from qkdpp.codes import code_id, load_code
from qkdpp.codes.construct import bsc_entropy
from qkdpp.frame import Role
from qkdpp.kernels.ldpc import _nb, _ref, _simd
from qkdpp.stages.ldpc import LdpcStage, _chunking
from qkdpp.testing import correlated_pair, run_pair

N_BITS = 29491  # one chunk of an n = 32768 family (de32k) at delta = 0.1


def clopper_pearson_upper(failed: int, n: int, conf: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound on a binomial rate: ``failed`` of ``n``."""
    from scipy.stats import beta

    return 1.0 if failed >= n else float(beta.ppf(conf, failed + 1, n - failed))


def run_point(
    mode: str, q: float, frames: int, seed: int, exact: bool = True, **params: object
) -> dict[str, object]:
    pairs = [
        correlated_pair(N_BITS, q, frame_id=i, seed=seed * 100003 + i, exact=exact)
        for i in range(frames)
    ]
    cfg = [{"stage": "ldpc", "mode": mode, **params}]
    run_pair(cfg, None, [pairs[0][0]], [pairs[0][1]])  # warm-up (JIT, code cache)
    t0, c0 = time.perf_counter(), time.process_time()
    # batches of 32 frames keep one batch's decoding well inside the link timeout
    r = run_pair(
        cfg, None, [p[0] for p in pairs], [p[1] for p in pairs], batch_size=32, timeout=600.0
    )
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    h = bsc_entropy(round(q * N_BITS) / N_BITS)
    # blind: the most values the schedule of before 2026-11-27 evening revealed (blind_rounds
    # steps, at most all punctured values and d key bits); a frame that reveals more is one that
    # failed then ("extended"), the others are decoded exactly as then
    stage = LdpcStage(Role.BOB, mode=mode, **cast(dict[str, Any], params))
    _, k, d = _chunking(stage.family, N_BITS, stage.delta)
    step = max(1, math.ceil(stage.blind_step * d))
    fs, rounds, sweeps, reveals, ok = [], [], [], [], 0
    ext: list[int] = []  # frames beyond the schedule of before 2026-11-27 evening
    good_ids: list[int] = []
    fails: list[str] = []
    for i, (fa, fb) in enumerate(zip(r.alice, r.bob, strict=True)):
        good = fa.ok and fb.ok and np.array_equal(fa.bits, fb.bits)
        ok += good
        if not good:  # which frame and why: not converged (FAILED) or a wrong codeword
            why = fb.meta.failure or fa.meta.failure or "converged to wrong bits"
            fails.append(f"frame {i}: {why} (revealed {fb.meta.leaked_by('ldpc')} leak)")
        sweeps.append(fb.meta.tags.get("ldpc_iters", 0))
        if good:
            good_ids.append(i)
            fs.append(fb.meta.leaked_by("ldpc") / (N_BITS * h))
            rounds.append(fb.meta.tags.get("ldpc_rounds", 1))
            reveals.append(sum(e.bits for e in fb.meta.leakage if e.what == "revealed"))
            base = min(fb.meta.tags["ldpc_p"] + min(d, k), stage.blind_rounds * step)
            if mode == "blind" and reveals[-1] > base:
                ext.append(i)
    f_ext = [f for f, i in zip(fs, good_ids, strict=True) if i in ext]
    f_old = [f for f, i in zip(fs, good_ids, strict=True) if i not in ext]
    return {
        "mode": mode,
        "qber": q,
        "frames": frames,
        "f": float(np.mean(fs)) if fs else math.nan,
        "fer": 1.0 - ok / frames,
        "failed": frames - ok,
        "fer_ub95": clopper_pearson_upper(frames - ok, frames),
        "extended": len(f_ext),
        "f_extended": " ".join(f"{i}:{f:.3f}" for i, f in zip(ext, f_ext, strict=True)),
        "f_without_extended": float(np.mean(f_old)) if f_old else math.nan,
        "f_max": float(np.max(fs)) if fs else math.nan,
        "sweeps": float(np.mean(sweeps)),
        "revealed": float(np.mean(reveals)) if reveals else math.nan,
        "exact": exact,
        "seconds": wall,
        "failures": "; ".join(fails),
        "mbps": N_BITS * frames / wall / 1e6,
        "cpu_s": cpu,
        "rounds": float(np.mean(rounds)) if rounds else math.nan,
        "efficiency_param": float(cast(float, params.get("efficiency")) or math.nan),
        "algorithm": str(params.get("algorithm", "default")),
        "family": str(params.get("family", "default")),
        "blind_iter": str(params.get("blind_iter", "default")),
        "patience": str(params.get("patience", "default")),
    }


def compare_package(q: float, rate: float, frames: int) -> list[dict[str, object]]:
    """Same mother code, same frames: our compiled layered SPA vs the ldpc package's BpDecoder
    (sum-product, serial schedule; min-sum, ours and theirs, does not decode de32k at 2 %)."""
    import scipy.sparse as sp

    from ldpc import BpDecoder

    code = load_code(code_id("de32k", rate))
    rng = np.random.default_rng(1)
    x = rng.integers(0, 2, (code.n, frames), dtype=np.uint8)
    y = x ^ (rng.random((code.n, frames)) < q).astype(np.uint8)
    s = _ref.syndrome(code.row_ptr, code.col_idx, x)
    llr = np.where(y == 1, -1.0, 1.0).astype(np.float32) * np.float32(math.log((1 - q) / q))
    out = []
    _nb.decode_layered_spa(code.row_ptr, code.col_idx, llr[:, :1], s[:, :1], 2)
    t0 = time.perf_counter()
    ok = []
    for g in range(0, frames, 16):
        b, _, o = _nb.decode_layered_spa(
            code.row_ptr, code.col_idx, llr[:, g : g + 16], s[:, g : g + 16], 60
        )
        ok.extend((b == x[:, g : g + 16]).all(axis=0) & o)
    dt = time.perf_counter() - t0
    out.append(
        {
            "decoder": "qkdpp-spa",
            "code": code.code_id,
            "qber": q,
            "fer": 1 - float(np.mean(ok)),
            "mbps": code.n * frames / dt / 1e6,
        }
    )
    h = sp.csr_matrix(
        (np.ones(code.edges, np.uint8), code.col_idx.copy(), code.row_ptr.copy()),
        shape=(code.m, code.n),
    )
    dec = BpDecoder(
        h,
        error_rate=q,
        max_iter=60,
        bp_method="product_sum",
        schedule="serial",
    )
    target = s ^ _ref.syndrome(code.row_ptr, code.col_idx, y)
    t0 = time.perf_counter()
    ok = [
        np.array_equal(dec.decode(target[:, j].copy()).astype(np.uint8), (x ^ y)[:, j])
        for j in range(frames)
    ]
    dt = time.perf_counter() - t0
    out.append(
        {
            "decoder": "ldpc-package",
            "code": code.code_id,
            "qber": q,
            "fer": 1 - float(np.mean(ok)),
            "mbps": code.n * frames / dt / 1e6,
        }
    )
    return out


def _mother_frames(code, q: float, nf: int, seed: int = 0):
    """``nf`` words of ``code`` with exactly ``round(q n)`` errors: ``(x, syndrome, llr)``."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, (code.n, nf), dtype=np.uint8)
    e = np.zeros((code.n, nf), np.uint8)
    for j in range(nf):
        e[rng.choice(code.n, round(q * code.n), replace=False), j] = 1
    s = _ref.syndrome(code.row_ptr, code.col_idx, x)
    llr = np.where((x ^ e) == 1, -1.0, 1.0).astype(np.float32) * np.float32(math.log((1 - q) / q))
    return x, s, llr


def sweep_costs(cid: str) -> None:
    """ns per edge and frame of one SPA sweep + syndrome check: the numba frame-minor kernel
    (tabulated phi) and the explicit-SIMD C kernel (gather-free phi) at several widths, and the
    numba one-frame kernel (the numba driver's ``SOLO_WIDTH`` choice), best of 5, same run."""
    code = load_code(cid)
    rp, ci, ne = code.row_ptr, code.col_idx, code.edges
    _x, s0, llr0 = _mother_frames(code, 0.0187, 16)
    dmax = int(np.diff(rp).max())

    def best(fn) -> float:
        fn()
        ts = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return min(ts)

    from numba import njit

    tab = _ref.PHI_TABLE
    fm = {"nnan", "ninf", "nsz"}

    @njit(cache=False, fastmath=fm)
    def lookups(x, out):  # the kernels' phi lookup over an array (vectorised gathers)
        for i in range(x.size):
            out[i] = tab[np.int32(min(np.sqrt(abs(x[i])) * np.float32(512.0), np.float32(2047.0)))]

    @njit(cache=False, fastmath=fm)
    def index_only(x, out):  # the same without the table load
        for i in range(x.size):
            out[i] = np.float32(np.int32(min(np.sqrt(abs(x[i])) * np.float32(512.0), 2047.0)))

    @njit(cache=False, fastmath=fm)
    def poly_exp(x, out):  # exp(-|x|) for |x| <= 16: degree-5 Taylor of exp(-|x|/16), ^16
        for i in range(x.size):
            t = -abs(x[i]) * np.float32(0.0625)
            p = np.float32(1.0) + t * (
                np.float32(1.0)
                + t
                * (
                    np.float32(0.5)
                    + t * (np.float32(1 / 6) + t * (np.float32(1 / 24) + t * np.float32(1 / 120)))
                )
            )
            p = p * p
            p = p * p
            p = p * p
            out[i] = p * p

    xs = np.random.default_rng(0).random(1 << 16).astype(np.float32) * 8
    out = np.empty_like(xs)
    for name, fn in (("phi lookup", lookups), ("index only", index_only), ("poly exp", poly_exp)):
        t = best(lambda fn=fn: fn(xs, out))
        print(f"{name}: {t / xs.size * 1e9:.3f} ns per value", flush=True)
    p1, m1, s1 = llr0[:, 0].copy(), np.zeros(ne, np.float32), s0[:, 0].copy()
    sc = [np.empty(dmax, np.float32) for _ in range(3)]
    t = best(lambda: (_nb._spa_layer_sweep1(rp, ci, p1, m1, s1, *sc), _nb._check1(rp, ci, p1, s1)))
    print(f"{cid} one frame alone: {t / ne * 1e9:.2f} ns/edge", flush=True)
    llr_w = np.tile(llr0, (1, 4))  # up to 64 columns (the stage's default group)
    s_w = np.tile(s0, (1, 4))
    for nf in (1, 2, 3, 4, 6, 8, 12, 16, 32, 64):
        post = np.ascontiguousarray(llr_w[:, :nf])
        s = np.ascontiguousarray(s_w[:, :nf])
        msg = np.zeros((ne, nf), np.float32)
        q, ph = np.empty((dmax, nf), np.float32), np.empty((dmax, nf), np.float32)
        v1, par, un = np.empty(nf, np.float32), np.empty(nf, np.uint8), np.empty(nf, np.int32)

        a = (rp, ci, post, msg, s, q, ph, v1, par)
        t = best(lambda a=a, un=un: (_nb._spa_layer_sweep(*a), _nb._check(*a[:3], a[4], un, a[8])))
        line = f"{cid} {nf:2d} frames: numba frame-minor {t / ne / nf * 1e9:.2f} ns/edge-frame"
        if _simd.AVAILABLE:  # the explicit-SIMD C sweep + check on the same frames, same run
            from qkdpp.kernels.ldpc import _cy

            p2, m2 = np.ascontiguousarray(llr_w[:, :nf]), np.zeros((ne, nf), np.float32)
            scr = _cy.make_scratch(rp)
            t2 = best(
                lambda p2=p2, m2=m2, s=s, un=un, scr=scr: (
                    _cy.spa_sweep(rp, ci, p2, m2, s, scr),
                    _cy.check(rp, ci, p2, s, un),
                )
            )
            line += f", SIMD C {t2 / ne / nf * 1e9:.2f} ({t / t2:.2f}x)"
        print(line, flush=True)


def check_rules(cid: str, q: float, nf: int, specs: list[str]) -> None:
    """Measurement prototypes (not shipped decoders) of cheaper check rules against the layered
    SPA on an unpunctured mother code: lambda-min (Guilloud, Boutillon & Danger 2003: the SPA
    rule over the ``lam`` smallest |q| of a check only) and offset/normalised min-sum
    (``alpha * min - beta``, clamped at 0). Scalar numba, one frame at a time, 60 sweeps; FER over
    ``nf`` frames with exactly ``round(q n)`` errors. ``specs``: ``lmin:LAM`` or ``ms:ALPHA:BETA``.
    """
    from numba import njit

    tab = _ref.PHI_TABLE

    @njit(cache=False)
    def phi(x):
        return tab[np.int32(min(np.sqrt(x) * np.float32(512.0), np.float32(2047.0)))]

    @njit(cache=False)
    def proto(row_ptr, col_idx, llr, synd, max_iter, rule, lam, alpha, beta):
        n, nfr = llr.shape
        m = row_ptr.size - 1
        ok = np.zeros(nfr, np.uint8)
        bits = np.zeros((n, nfr), np.uint8)
        q1 = np.empty(256, np.float32)
        tv = np.empty(256, np.float32)
        ti = np.empty(256, np.int64)
        ts = np.empty(256, np.float32)
        for f in range(nfr):
            post = llr[:, f].copy()
            msg = np.zeros(col_idx.size, np.float32)
            for _it in range(max_iter):
                for c in range(m):
                    lo, hi = row_ptr[c], row_ptr[c + 1]
                    par = synd[c, f]
                    for j in range(lam):
                        tv[j] = np.float32(1e30)
                        ti[j] = -1
                    for k in range(hi - lo):  # the lam smallest |q|, sorted (insertion)
                        x = post[col_idx[lo + k]] - msg[lo + k]
                        q1[k] = x
                        par ^= np.uint8(x < 0)
                        cur, ci_ = abs(x), k
                        for j in range(lam):
                            if cur < tv[j]:
                                tv[j], cur = cur, tv[j]
                                ti[j], ci_ = ci_, ti[j]
                    tot = np.float32(0.0)
                    for j in range(lam):
                        ts[j] = phi(tv[j]) if ti[j] >= 0 else np.float32(0.0)
                        tot += ts[j]
                    for k in range(hi - lo):
                        if rule == 0:  # lambda-min
                            r = phi(tot)
                            for j in range(lam):
                                if ti[j] == k:
                                    r = phi(max(tot - ts[j], np.float32(0.0)))
                        else:  # offset / normalised min-sum (lam = 2)
                            r = tv[1] if ti[0] == k else tv[0]
                            r = max(alpha * r - beta, np.float32(0.0))
                        x = q1[k]
                        r = -r if (par ^ np.uint8(x < 0)) != 0 else r
                        msg[lo + k] = r
                        post[col_idx[lo + k]] = x + r
                good = True
                for c in range(m):
                    p = synd[c, f]
                    for e in range(row_ptr[c], row_ptr[c + 1]):
                        p ^= np.uint8(post[col_idx[e]] < 0)
                    if p != 0:
                        good = False
                        break
                if good:
                    ok[f] = 1
                    break
            for v in range(n):
                bits[v, f] = np.uint8(post[v] < 0)
        return bits, ok

    code = load_code(cid)
    x, s, llr = _mother_frames(code, q, nf)
    print(f"{cid} q={q} f={code.m / (code.n * bsc_entropy(q)):.3f} frames={nf}", flush=True)
    b, _it, o = _nb.decode_layered_spa(code.row_ptr, code.col_idx, llr, s, 60)
    print(f"  spa (shipped): FER {1 - float(((b == x).all(0) & o).mean()):.3f}", flush=True)
    for spec in specs:
        kind, *vals = spec.split(":")
        if kind == "lmin":
            args = (0, int(vals[0]), np.float32(1.0), np.float32(0.0))
        else:
            args = (1, 2, np.float32(vals[0]), np.float32(vals[1]))
        b, o = proto(code.row_ptr, code.col_idx, llr, s, 60, *args)
        print(f"  {spec}: FER {1 - float(((b == x).all(0) & o).mean()):.3f}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--qber", type=float, nargs="+", default=[0.01, 0.02, 0.03, 0.05, 0.08, 0.11])
    ap.add_argument("--modes", nargs="+", default=["rate_adaptive", "blind"])
    ap.add_argument("--out", default="ldpc_study")
    ap.add_argument("--calibrate", action="store_true")
    ap.add_argument(
        "--grid",
        type=float,
        nargs="+",
        default=[1.08, 1.10, 1.12, 1.15, 1.18, 1.22, 1.26, 1.30, 1.35, 1.40, 1.50],
    )
    ap.add_argument("--target-fer", type=float, default=1e-2)
    ap.add_argument("--compare-ldpc-package", action="store_true")
    ap.add_argument("--blind-step", type=float, default=0.1)
    ap.add_argument("--blind-start", type=float, default=None, help="default: stage table")
    ap.add_argument(
        "--algorithm",
        choices=["spa", "spa_table", "nms"],
        default=None,
        help="stage default if unset",
    )
    ap.add_argument("--group", type=int, default=None, help="chunks per decoder group")
    ap.add_argument("--family", default="de32k", help="code family (de32k; peg4k for tests)")
    ap.add_argument("--max-iter", type=int, default=None, help="decoder sweeps (stage default)")
    ap.add_argument("--blind-iter", type=int, default=None, help="sweeps per extra blind round")
    ap.add_argument("--patience", type=int, default=None, help="stall give-up (stage default)")
    ap.add_argument(
        "--binomial", action="store_true", help="binomial error counts (default: exact round(qn))"
    )
    ap.add_argument("--seed", type=int, default=None, help="frame seed (default 7 / 11)")
    ap.add_argument(
        "--sweep-costs", metavar="CODE", help="only time one sweep per width (e.g. de32k-r0.85)"
    )
    ap.add_argument(
        "--check-rules",
        nargs="+",
        metavar="SPEC",
        help="only compare prototype check rules with SPA on a mother code (--rule-code, "
        "--qber[0], --frames): lmin:LAM or ms:ALPHA:BETA",
    )
    ap.add_argument("--rule-code", default="de32k-r0.85")
    args = ap.parse_args()
    if args.sweep_costs:
        sweep_costs(args.sweep_costs)
        return 0
    if args.check_rules:
        check_rules(args.rule_code, args.qber[0], args.frames, args.check_rules)
        return 0
    common: dict[str, object] = {"family": args.family}
    if args.algorithm is not None:
        common["algorithm"] = args.algorithm
    if args.group is not None:
        common["group"] = args.group
    if args.max_iter is not None:
        common["max_iter"] = args.max_iter
    if args.patience is not None:
        common["patience"] = args.patience
    exact = not args.binomial

    rows: list[dict[str, object]] = []
    if args.calibrate:
        for q in args.qber:
            chosen = None
            for f in args.grid:
                row = run_point(
                    "rate_adaptive",
                    q,
                    args.frames,
                    7 if args.seed is None else args.seed,
                    exact,
                    efficiency=f,
                    **common,
                )
                rows.append(row)
                print(row, flush=True)
                if cast(float, row["fer"]) <= args.target_fer:
                    chosen = f
                    break
            print(f"q={q}: smallest f on grid with FER <= {args.target_fer}: {chosen}", flush=True)
    else:
        for mode in args.modes:
            for q in args.qber:
                extra: dict[str, object] = dict(common)
                if mode == "blind":
                    extra.update(blind_step=args.blind_step)
                    if args.blind_iter is not None:
                        extra["blind_iter"] = args.blind_iter
                    if args.blind_start is not None:
                        extra["blind_start"] = args.blind_start
                seed = 11 if args.seed is None else args.seed
                row = run_point(mode, q, args.frames, seed, exact, **extra)
                rows.append(row)
                print(row, flush=True)
    with open(f"{args.out}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    if args.compare_ldpc_package:
        cmp_rows = []
        for q, rate in ((0.02, 0.80), (0.05, 0.60)):  # f ~ 1.4 mother codes, as the benchmark
            cmp_rows += compare_package(q, rate, 16)
        for r in cmp_rows:
            print(r, flush=True)
        with open(f"{args.out}_ldpc_package.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(cmp_rows[0]))
            w.writeheader()
            w.writerows(cmp_rows)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return 0
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for mode in sorted({str(r["mode"]) for r in rows}):
        sel = [r for r in rows if r["mode"] == mode]
        ax1.plot([r["qber"] for r in sel], [r["f"] for r in sel], "o-", label=mode)
        ax2.semilogy(
            [r["qber"] for r in sel],
            [max(cast(float, r["fer"]), 1e-4) for r in sel],
            "o-",
            label=mode,
        )
    ax1.set_xlabel("QBER")
    ax1.set_ylabel("efficiency f")
    ax2.set_xlabel("QBER")
    ax2.set_ylabel("FER (floor 1e-4 = none seen)")
    ax1.legend()
    ax2.legend()
    fig.tight_layout()
    fig.savefig(f"{args.out}.png", dpi=100)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
