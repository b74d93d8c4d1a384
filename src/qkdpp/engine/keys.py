"""Check the keys two parties committed (for demos, tests and operators)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qkdpp.keystore.sqlite import KeyStore


def compare_stores(alice: str | Path, bob: str | Path) -> dict[str, Any]:
    """Check that every key deliverable at one end is held, with the same bits, at the other.

    Deliverable = committed and acknowledged by the peer. A coordinator's key whose last commit
    message was lost stays committed-unacknowledged — undecided, never deliverable — until the
    next recovery with the peer settles it; it still counts as *held*.

    Returns ``{"identical": bool, "keys": n, "bits": total, "only_alice": [...],
    "only_bob": [...], "different": [...]}`` (key ids and counts only; never key bits):
    ``keys``/``bits`` count keys deliverable at both ends; ``only_*`` list keys deliverable at
    one end and not held at the other; ``different`` keys whose bits or lengths differ.
    """
    with KeyStore(alice) as sa, KeyStore(bob) as sb:
        held_a = {r.key_id: r for r in sa.records("committed")}
        held_b = {r.key_id: r for r in sb.records("committed")}
        deliv_a = {k for k, r in held_a.items() if r.peer_ack}
        deliv_b = {k for k, r in held_b.items() if r.peer_ack}
        different = []
        for kid in sorted((deliv_a | deliv_b) & set(held_a) & set(held_b)):
            ka, kb = sa.peek_key(kid), sb.peek_key(kid)
            if ka is None or kb is None or ka != kb or held_a[kid].n_bits != held_b[kid].n_bits:
                different.append(kid)
            for buf in (ka, kb):
                if buf is not None:
                    buf[:] = bytes(len(buf))
        both = sorted((deliv_a & deliv_b) - set(different))
        bits = sum(held_a[k].n_bits for k in both)
    only_a = sorted(deliv_a - set(held_b))
    only_b = sorted(deliv_b - set(held_a))
    return {
        "identical": not (different or only_a or only_b),
        "keys": len(both),
        "bits": bits,
        "only_alice": only_a,
        "only_bob": only_b,
        "different": different,
    }
