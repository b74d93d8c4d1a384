"""Check and export the keys two parties committed (for demos, tests and operators)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qkdpp.keystore.sqlite import KeyStore


def compare_stores(alice: str | Path, bob: str | Path) -> dict[str, Any]:
    """Compare the committed keys of two key stores, by key id, byte for byte.

    Returns ``{"identical": bool, "keys": n, "bits": total, "only_alice": [...],
    "only_bob": [...], "different": [...]}`` (ids only; never key bits).
    """
    with KeyStore(alice) as sa, KeyStore(bob) as sb:
        ra = {r.key_id: r for r in sa.records("committed")}
        rb = {r.key_id: r for r in sb.records("committed")}
        different = []
        bits = 0
        for kid in sorted(set(ra) & set(rb)):
            ka, kb = sa.peek_key(kid), sb.peek_key(kid)
            if ka is None or kb is None or ka != kb or ra[kid].n_bits != rb[kid].n_bits:
                different.append(kid)
            else:
                bits += ra[kid].n_bits
            for buf in (ka, kb):
                if buf is not None:
                    buf[:] = bytes(len(buf))
    only_a = sorted(set(ra) - set(rb))
    only_b = sorted(set(rb) - set(ra))
    return {
        "identical": not (different or only_a or only_b),
        "keys": len(set(ra) & set(rb)),
        "bits": bits,
        "only_alice": only_a,
        "only_bob": only_b,
        "different": different,
    }
