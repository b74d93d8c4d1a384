"""Shipped LDPC code tables and their loader.

Families (built by ``scripts/make_codes.py`` with :mod:`qkdpp.codes.construct`; never at import):

``de32k``
    n = 32768, mother rates 0.50, 0.60, 0.65, ..., 0.95: variable-degree distributions optimised
    by density evolution (:data:`qkdpp.codes.construct.DE_LAMBDA`), PEG placement (depth 2 below
    rate 0.80, depth 1 from 0.80 up: there the depth-2 search reaches every check and falls back
    anyway), from rate 0.75 the degree-2 staircase with the ``chain_gap = 16`` and
    ``pair_gap = 2`` rules (:func:`qkdpp.codes.construct.peg_code`), greedy
    puncture order with ties to low degree, shortening from the *end* of the order
    (``shorten = "tail"``: random positions, never the greedy puncture candidates). The
    production family and the stage's default. (It replaced ``peg32k`` / ``peg32kx``, whose
    Gaussian-approximation designs had DE thresholds ~0.2 worse in f; rebuild them from the git
    history if needed.)
``peg4k``
    n = 4096, rates 0.50, 0.70, 0.90 (PEG, Gaussian-approximation design, seed 1). Small, for
    fast tests.
``peg4kx``
    The same parity-check matrices (``base`` family) with a greedy low-interference puncture
    order (:func:`qkdpp.codes.construct.greedy_puncture_order`) instead of a random one; their
    files hold only ``order`` (the H comes from the base family's file, both checksummed).

Files: ``data/<code_id>.npz`` holding ``col_idx`` (uint16, column of every edge, rows in order,
sorted within a row; family de32k instead stores per-row deltas split into ``delta_lo`` /
``delta_hi`` bytes, ``format = "delta-v1"``, 28 % smaller), ``row_deg`` (uint8, degree of
every check) and ``order`` (uint16, a seeded permutation of the n positions: the first ``p`` are
punctured, the next ``s`` (or the last ``s``) shortened, see :class:`LdpcCode.layout`).
``data/<code_id>.sha256`` and ``data/index.json`` hold the SHA-256 of each file, verified at
load time (:class:`~qkdpp.errors.ConfigError` on mismatch).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from qkdpp.errors import ConfigError

DATA_DIR = Path(__file__).resolve().parent / "data"

FAMILIES: dict[str, dict[str, Any]] = {
    "peg4k": {"n": 4096, "rates": [0.50, 0.70, 0.90], "seed": 1, "depth": 2},
}
FAMILIES["de32k"] = {
    "n": 32768,
    "rates": [0.50, 0.60, 0.65, 0.70, 0.75, 0.80, 0.85, 0.90, 0.95],
    "seed": 1,
    "depth": 2,
    "depth_from_080": 1,
    "chain_gap": 16,
    "pair_gap": 2,
    "design": "de-v1",
    "puncture": "greedy-low-v1",
    "shorten": "tail",
    "format": "delta-v1",
}
# derived families: same H as ``base``, a greedy puncture order over the first ``m // 3``
# positions (the stage never punctures more, see ``qkdpp.stages.ldpc._p_cap``)
for _base in ("peg4k",):
    FAMILIES[_base + "x"] = dict(FAMILIES[_base], base=_base, puncture="greedy-v1")


def code_id(family: str, rate: float) -> str:
    """The identifier of a code, e.g. ``de32k-r0.70``."""
    return f"{family}-r{rate:.2f}"


# layout() cache: (code id, p, s) -> (order array it was built from, (punct, short, key)); the
# sorted key positions cost a 30k-element sort, and the stage asks for them per chunk
_Layout = tuple[np.ndarray, np.ndarray, np.ndarray]
_LAYOUTS: dict[tuple[str, int, int], tuple[np.ndarray, _Layout]] = {}


@dataclass(frozen=True)
class LdpcCode:
    """A binary LDPC code ``H`` (m x n) in CSR form plus its puncture/shorten order.

    Attributes
    ----------
    code_id : str
    n, m : int
        Code length and number of checks (syndrome bits); mother rate ``1 - m / n``.
    row_ptr : int64[m + 1]
    col_idx : int32[E]
    order : int64[n]
        Positions in the order they are taken for puncturing (from the front) and shortening
        (after the punctured ones, or from the end when ``shorten_tail``).
    shorten_tail : bool
        Shortened positions are the last ``s`` of ``order`` (family ``de32k``).
    """

    code_id: str
    n: int
    m: int
    row_ptr: np.ndarray
    col_idx: np.ndarray
    order: np.ndarray
    shorten_tail: bool = False

    @property
    def rate(self) -> float:
        """Mother code rate ``1 - m / n``."""
        return 1.0 - self.m / self.n

    @property
    def edges(self) -> int:
        """Number of ones in H."""
        return int(self.col_idx.size)

    def layout(self, p: int, s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positions of the punctured, shortened and key bits for ``p`` punctured, ``s`` shortened.

        Returns ``(punct, short, key)`` int64 arrays; ``key`` has ``n - p - s`` positions (sorted).
        """
        if p < 0 or s < 0 or p + s > self.n:
            raise ConfigError(f"invalid puncture/shorten counts p={p} s={s} for n={self.n}")
        ck = (self.code_id, int(p), int(s))
        hit = _LAYOUTS.get(ck)
        if hit is not None and hit[0] is self.order:
            return hit[1]
        punct = self.order[:p]
        if self.shorten_tail:
            short = self.order[self.n - s :]
            key = np.sort(self.order[p : self.n - s])
        else:
            short = self.order[p : p + s]
            key = np.sort(self.order[p + s :])
        key.setflags(write=False)
        if len(_LAYOUTS) >= 256:  # a few (p, s) pairs per code in practice
            _LAYOUTS.clear()
        _LAYOUTS[ck] = (self.order, (punct, short, key))
        return punct, short, key

    def reveal_order(self, p: int, s: int, count: int) -> np.ndarray:
        """Blind-mode reveal positions for ``p`` punctured, ``s`` shortened: the punctured ones
        (last punctured first), then up to ``count`` key positions in ``order`` order."""
        if self.shorten_tail:
            keys = self.order[p : min(p + count, self.n - s)]
        else:
            keys = self.order[p + s : p + s + count]
        return np.concatenate([self.order[:p][::-1], keys])


def _row_deltas(row_ptr: np.ndarray, col_idx: np.ndarray) -> np.ndarray:
    """``uint16`` per edge: the first column of each row, then differences within the row
    (rows sorted ascending). Compresses ~28 % better than raw columns."""
    c = np.asarray(col_idx, dtype=np.int64)
    d = np.empty_like(c)
    d[0:1] = c[0:1]
    d[1:] = c[1:] - c[:-1]
    starts = np.asarray(row_ptr[:-1], dtype=np.int64)
    starts = starts[starts < c.size]
    d[starts] = c[starts]
    if d.size and (d.min() < 0 or d.max() > 0xFFFF):
        raise ConfigError("rows must be sorted and n <= 65536 for the delta format")
    return d.astype(np.uint16)


def _undelta(row_deg: np.ndarray, delta_lo: np.ndarray, delta_hi: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_row_deltas`: ``int32`` columns from the per-row deltas."""
    d = delta_lo.astype(np.int64) | (delta_hi.astype(np.int64) << 8)
    if d.size != int(np.sum(row_deg)):
        raise ConfigError("LDPC code file: delta table size does not match the row degrees")
    c = np.cumsum(d)
    starts = np.concatenate([[0], np.cumsum(row_deg)[:-1]]).astype(np.int64)
    base = np.where(starts > 0, c[np.clip(starts - 1, 0, max(d.size - 1, 0))], 0)
    return (c - np.repeat(base, row_deg)).astype(np.int32)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_code(
    out: Path,
    family: str,
    n: int,
    rate: float,
    seed: int,
    depth: int,
    row_ptr: np.ndarray,
    col_idx: np.ndarray,
    order: np.ndarray | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """Write one code file, its ``.sha256`` and its ``index.json`` entry (used by make_codes).

    ``order``: the puncture/shorten order (default: a seeded random permutation); ``extra``:
    more index fields (``shorten``, ``puncture``, ``design``)."""
    out.mkdir(parents=True, exist_ok=True)
    cid = code_id(family, rate)
    if n > 65536:
        raise ConfigError("the compact format stores columns as uint16 (n <= 65536)")
    row_deg = np.diff(row_ptr)
    if row_deg.max() > 255:
        raise ConfigError("check degree above 255 does not fit the uint8 format")
    if order is None:
        order = np.random.default_rng(seed + 7919 * n + int(rate * 1000)).permutation(n)
    buf = io.BytesIO()
    if (extra or {}).get("format") == "delta-v1":
        delta = _row_deltas(row_ptr, col_idx)
        np.savez_compressed(
            buf,
            delta_lo=(delta & 0xFF).astype(np.uint8),
            delta_hi=(delta >> 8).astype(np.uint8),
            row_deg=row_deg.astype(np.uint8),
            order=np.asarray(order).astype(np.uint16),
        )
    else:
        np.savez_compressed(
            buf,
            col_idx=col_idx.astype(np.uint16),
            row_deg=row_deg.astype(np.uint8),
            order=np.asarray(order).astype(np.uint16),
        )
    entry = {
        "family": family,
        "n": n,
        "m": int(row_ptr.size - 1),
        "edges": int(col_idx.size),
        "seed": seed,
        "depth": depth,
        **(extra or {}),
    }
    return _store(out, cid, buf.getvalue(), entry)


def write_order(out: Path, family: str, rate: float, base_id: str, order: np.ndarray) -> str:
    """Write a derived code (only its ``order``, uint16) with checksum and index entry."""
    cid = code_id(family, rate)
    base = load_code(base_id)
    buf = io.BytesIO()
    np.savez_compressed(buf, order=np.asarray(order).astype(np.uint16))
    entry = {
        "family": family,
        "base": base_id,
        "puncture": FAMILIES[family]["puncture"],
        "n": base.n,
        "m": base.m,
        "edges": base.edges,
        "seed": FAMILIES[family]["seed"],
    }
    return _store(out, cid, buf.getvalue(), entry)


def _store(out: Path, cid: str, data: bytes, entry: dict[str, Any]) -> str:
    """Write ``<cid>.npz``, its ``.sha256`` and its ``index.json`` entry (``file`` and ``sha256``
    added to ``entry``)."""
    (out / f"{cid}.npz").write_bytes(data)
    digest = _digest(data)
    (out / f"{cid}.sha256").write_text(f"{digest}  {cid}.npz\n")
    index_path = out / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    index[cid] = {"file": f"{cid}.npz", **entry, "sha256": digest}
    index_path.write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    _index.cache_clear()
    return cid


@lru_cache(maxsize=1)
def _index() -> dict[str, Any]:
    path = DATA_DIR / "index.json"
    if not path.exists():
        return {}
    return dict(json.loads(path.read_text()))


def list_codes(family: str | None = None) -> list[str]:
    """Identifiers of the shipped codes (of one family), sorted by rate."""
    ids = [k for k, v in _index().items() if family is None or v["family"] == family]
    return sorted(ids, key=lambda k: (_index()[k]["family"], _index()[k]["m"] * -1))


@lru_cache(maxsize=32)
def load_code(cid: str) -> LdpcCode:
    """Load a shipped code by identifier, verifying its SHA-256.

    Raises
    ------
    ConfigError
        Unknown identifier, missing file or checksum mismatch.
    """
    entry = _index().get(cid)
    if entry is None:
        raise ConfigError(f"unknown LDPC code id {cid!r}; shipped: {', '.join(list_codes())}")
    path = DATA_DIR / entry["file"]
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"LDPC code file {path} unreadable: {exc}") from exc
    if _digest(data) != entry["sha256"]:
        raise ConfigError(f"LDPC code file {path} fails its SHA-256 check (corrupt install?)")
    with np.load(io.BytesIO(data)) as z:
        if "base" in entry:  # derived code: H from the base code, its own order
            base = load_code(str(entry["base"]))
            col_idx = base.col_idx.copy()
            row_deg = np.diff(base.row_ptr)
        elif "delta_lo" in z.files:
            row_deg = z["row_deg"].astype(np.int64)
            col_idx = _undelta(row_deg, z["delta_lo"], z["delta_hi"])
        else:
            col_idx = z["col_idx"].astype(np.int32)
            row_deg = z["row_deg"].astype(np.int64)
        order = z["order"].astype(np.int64)
    m = int(entry["m"])
    n = int(entry["n"])
    if row_deg.size != m or col_idx.size != int(row_deg.sum()) or order.size != n:
        raise ConfigError(f"LDPC code file {path} has inconsistent sizes")
    if "base" in entry and not np.array_equal(np.sort(order), np.arange(n)):
        raise ConfigError(f"LDPC code file {path}: order is not a permutation")
    row_ptr = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(row_deg, out=row_ptr[1:])
    for arr in (col_idx, row_ptr, order):
        arr.setflags(write=False)
    return LdpcCode(cid, n, m, row_ptr, col_idx, order, entry.get("shorten") == "tail")


__all__ = [
    "DATA_DIR",
    "FAMILIES",
    "LdpcCode",
    "code_id",
    "list_codes",
    "load_code",
    "write_code",
    "write_order",
]
