"""Per-block report rows, the summary table and the JSON report of a run.

Reconciliation efficiency is reported as ``f = leak_EC / (n · h(Q))`` with ``leak_EC`` the bits
the reconciliation stage booked in the leakage ledger (parities or syndromes, minus punctured
bits, plus every extra disclosure), ``n`` the block length entering reconciliation and ``Q`` the
block's actual QBER — the bits the corrected party flipped, divided by ``n`` — when both parties'
frames are at hand (``qkdpp demo``, ``qkdpp process`` in one process), else the test-basis
estimate (then ``f_estimated`` is true). The verification tag is booked separately and counted
in ``leaked_bits``.
"""

from __future__ import annotations

import math
from typing import Any

from qkdpp.engine.config import tail_min_bits
from qkdpp.frame import Frame

RECONCILERS = ("cascade", "ldpc")


def h2(p: float) -> float:
    """Binary entropy in bits."""
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -p * math.log2(p) - (1 - p) * math.log2(1 - p)


def block_row(f: Frame, peer: Frame | None = None) -> dict[str, Any]:
    """One report row (no key material). With the peer's frame of the same block, or at the party
    that corrected (a verified block with ``ec_corrected_bits > 0``), the block's true QBER is
    known and ``f`` uses it; otherwise ``f`` uses the test-basis estimate and is marked
    ``f_estimated`` (the reference party of a two-process run)."""
    m = f.meta
    tags = m.tags
    leak_ec = sum(e.bits for e in m.leakage if e.stage in RECONCILERS)
    n_rec = int(tags.get("pa_input_bits") or m.n_bits)
    corrected = [x.meta.tags.get("ec_corrected_bits") for x in (f, peer) if x is not None]
    known = [c for c in corrected if isinstance(c, int)]
    q_true = max(known) / n_rec if peer is not None and known and n_rec else None
    if q_true is None and f.ok and known and known[0] > 0 and n_rec:
        # this party corrected bits and the block passed verification: its count is the
        # block's error count (the other party, whose key is the reference, corrects none)
        q_true = known[0] / n_rec
    q = q_true if q_true is not None else m.qber
    f_eff = leak_ec / (n_rec * h2(q)) if q and n_rec and leak_ec else None
    times = {
        k[5:-2]: round(float(v), 4)
        for k, v in tags.items()
        if k.startswith("time_") and k.endswith("_s")
    }
    return {
        "block": m.frame_id,
        "state": m.state.name,
        "failure": m.failure,
        "qber": m.qber,
        "qber_corrected": q_true,
        "f_estimated": q_true is None,
        "n_sifted_key_bits": n_rec,
        "reconciliation": tags.get("reconciliation"),
        "leak_ec_bits": leak_ec,
        "leaked_bits": m.leaked_bits,
        "f": f_eff,
        "key_length": tags.get("key_length"),
        "final_key_bits": m.n_bits if f.ok else 0,
        "auth_refill_bits": tags.get("auth_refill_bits"),
        # one-time-pad bits this block cost: its share of the transcript tags + its commit tags
        "auth_pad_bits": (tags.get("auth_pad_bits") or 0) + (tags.get("auth_commit_pad_bits") or 0),
        "eps": m.eps_total(),
        "key_id": tags.get("key_id"),
        "stage_seconds": times,
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    """The per-block table printed by ``qkdpp process`` and ``qkdpp demo``. QBER and f use the
    block's true error count where this party knows it; otherwise (the reference party of a
    two-process run) the test-basis estimate, marked ``~``."""
    head = (
        f"{'block':>7} {'state':>13} {'QBER%':>6} {'n':>9} {'f':>6} {'leaked':>8} "
        f"{'ℓ':>8} {'key':>8} {'ε':>8} {'rec s':>6}  note"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        qv = r["qber_corrected"] if r["qber_corrected"] is not None else r["qber"]
        q = f"{100 * qv:.2f}" if qv is not None else "-"
        f = (f"~{r['f']:.3f}" if r["f_estimated"] else f"{r['f']:.3f}") if r["f"] else "-"
        q = f"~{q}" if r["f_estimated"] and qv is not None else q
        ell = str(r["key_length"]) if r["key_length"] is not None else "-"
        rec = r["stage_seconds"].get("reconcile")
        lines.append(
            f"{r['block']:>7} {r['state']:>13} {q:>6} {r['n_sifted_key_bits']:>9} {f:>6} "
            f"{r['leaked_bits']:>8} {ell:>8} {r['final_key_bits']:>8} {r['eps']:>8.1e} "
            f"{(f'{rec:.2f}' if rec is not None else '-'):>6}  {r['failure'] or ''}"
        )
    return "\n".join(lines)


def summary(
    rows: list[dict[str, Any]], seconds: float, n_slots: int, rep_rate_hz: float | None = None
) -> dict[str, Any]:
    """Totals of a run (key bits, sifted key bits, throughput)."""
    ok = [r for r in rows if r["state"] != "FAILED"]
    key = sum(r["final_key_bits"] for r in ok)
    sifted = sum(r["n_sifted_key_bits"] for r in rows)
    fs = [r["f"] for r in ok if r["f"]]
    out: dict[str, Any] = {
        "blocks": len(rows),
        "blocks_ok": len(ok),
        "secret_key_bits": key,
        "sifted_key_bits_processed": sifted,
        "seconds": round(seconds, 3),
        "sifted_bits_per_s": sifted / seconds if seconds else None,
        "secret_bits_per_s_processing": key / seconds if seconds else None,
        "mean_f": sum(fs) / len(fs) if fs else None,
        "slots": n_slots,
        "failures": sorted({r["failure"].split(":")[0] for r in rows if r["failure"]}),
    }
    if rep_rate_hz:
        out["secret_key_rate_bps_at_source_rate"] = key / (n_slots / rep_rate_hz)
    return out


def unused_bits_note(
    stats: dict[str, Any],
    session: dict[str, Any],
    remedy: str = "process a longer capture, or lower block_size (a shorter block pays more for "
    "its finite-key bound)",
) -> str | None:
    """A line for sifted key bits that formed no block (too short a capture), else ``None``.
    ``stats``: one party's counters, or both parties' under ``"alice"`` and ``"bob"`` (they
    hold the same bits); ``remedy``: what to do about it."""
    n = int(stats.get("bob", stats).get("key_bits_unused", 0))
    if n <= 0:
        return None
    size = int(session["block_size"])
    least = tail_min_bits(session)
    return (
        f"note: {n} sifted key bits formed no key block: a block takes [session] block_size = "
        f"{size} bits, the last one of a capture at least tail_fraction x block_size = {least}; "
        f"{remedy}"
    )
