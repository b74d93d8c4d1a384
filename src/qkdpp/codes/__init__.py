"""Shipped LDPC code tables and their loader.

Families (built by ``scripts/make_codes.py`` with :mod:`qkdpp.codes.construct`; never at import):

``peg32k``
    n = 32768, mother rates 0.50, 0.55, ..., 0.90, 0.95 (PEG, seed 1). The production family.
``peg4k``
    n = 4096, rates 0.50, 0.70, 0.90 (PEG, seed 1). Small, for fast tests.
``peg32kx``, ``peg4kx``
    The same parity-check matrices (``base`` family) with a greedy low-interference puncture
    order (:func:`qkdpp.codes.construct.greedy_puncture_order`) instead of a random one; their
    files hold only ``order`` (the H comes from the base family's file, both checksummed).
    ``peg32kx`` is the stage's default family since it removed the ~1.5 % error floor at 2 %.

Files: ``data/<code_id>.npz`` holding ``col_idx`` (uint16, column of every edge, rows in order,
sorted within a row), ``row_deg`` (uint8, degree of every check) and ``order`` (uint16, a seeded
permutation of the n positions: the first ``p`` are punctured, the next ``s`` shortened, see
:class:`LdpcCode.layout`). ``data/<code_id>.sha256`` and ``data/index.json`` hold the SHA-256 of
each file, verified at load time (:class:`~qkdpp.errors.ConfigError` on mismatch).
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
    "peg32k": {
        "n": 32768,
        "rates": [0.50, 0.55, 0.60, 0.65, 0.70, 0.75, 0.80, 0.85, 0.90, 0.95],
        "seed": 1,
        "depth": 2,
    },
    "peg4k": {"n": 4096, "rates": [0.50, 0.70, 0.90], "seed": 1, "depth": 2},
}
# derived families: same H as ``base``, a greedy puncture order over the first ``m // 3``
# positions (the stage never punctures more, see ``qkdpp.stages.ldpc._p_cap``)
for _base in ("peg32k", "peg4k"):
    FAMILIES[_base + "x"] = dict(FAMILIES[_base], base=_base, puncture="greedy-v1")


def code_id(family: str, rate: float) -> str:
    """The identifier of a code, e.g. ``peg32k-r0.70``."""
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
        (after the punctured ones).
    """

    code_id: str
    n: int
    m: int
    row_ptr: np.ndarray
    col_idx: np.ndarray
    order: np.ndarray

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
        short = self.order[p : p + s]
        key = np.sort(self.order[p + s :])
        key.setflags(write=False)
        if len(_LAYOUTS) >= 256:  # a few (p, s) pairs per code in practice
            _LAYOUTS.clear()
        _LAYOUTS[ck] = (self.order, (punct, short, key))
        return punct, short, key


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
) -> str:
    """Write one code file, its ``.sha256`` and its ``index.json`` entry (used by make_codes)."""
    out.mkdir(parents=True, exist_ok=True)
    cid = code_id(family, rate)
    if n > 65536:
        raise ConfigError("the compact format stores columns as uint16 (n <= 65536)")
    row_deg = np.diff(row_ptr)
    if row_deg.max() > 255:
        raise ConfigError("check degree above 255 does not fit the uint8 format")
    order = np.random.default_rng(seed + 7919 * n + int(rate * 1000)).permutation(n)
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        col_idx=col_idx.astype(np.uint16),
        row_deg=row_deg.astype(np.uint8),
        order=order.astype(np.uint16),
    )
    data = buf.getvalue()
    (out / f"{cid}.npz").write_bytes(data)
    digest = _digest(data)
    (out / f"{cid}.sha256").write_text(f"{digest}  {cid}.npz\n")
    index_path = out / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    index[cid] = {
        "file": f"{cid}.npz",
        "family": family,
        "n": n,
        "m": int(row_ptr.size - 1),
        "edges": int(col_idx.size),
        "seed": seed,
        "depth": depth,
        "sha256": digest,
    }
    index_path.write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    return cid


def write_order(out: Path, family: str, rate: float, base_id: str, order: np.ndarray) -> str:
    """Write a derived code (only its ``order``, uint16) with checksum and index entry."""
    cid = code_id(family, rate)
    base = load_code(base_id)
    buf = io.BytesIO()
    np.savez_compressed(buf, order=np.asarray(order).astype(np.uint16))
    data = buf.getvalue()
    (out / f"{cid}.npz").write_bytes(data)
    digest = _digest(data)
    (out / f"{cid}.sha256").write_text(f"{digest}  {cid}.npz\n")
    index_path = out / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    index[cid] = {
        "file": f"{cid}.npz",
        "family": family,
        "base": base_id,
        "puncture": FAMILIES[family]["puncture"],
        "n": base.n,
        "m": base.m,
        "edges": base.edges,
        "seed": FAMILIES[family]["seed"],
        "sha256": digest,
    }
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
    return LdpcCode(cid, n, m, row_ptr, col_idx, order)


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
