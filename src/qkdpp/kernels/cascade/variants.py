"""Named Cascade parameter sets, each with its source.

Block sizes follow Martinez-Mateo, Pacher, Peev, Ciurana, Martin, "Demystifying the information
reconciliation protocol Cascade", QIC 15 (2015), arXiv:1407.3257 (Table 1 and Sec. 4), in the
form used by the open cascade-python / cascade-cpp reproductions of that paper (pass 1 is not
shuffled; later passes are). ``q`` is the QBER estimate given to the protocol (clamped to
``>= 1e-5``), ``n`` the frame length in bits; every size is clamped to ``[1, n]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from qkdpp.errors import ConfigError

MIN_QBER = 1e-5


@dataclass(frozen=True)
class Variant:
    """One Cascade parameter set.

    Attributes
    ----------
    name : str
        Registry name (``cascade`` stage parameter ``variant``).
    passes : int
        Number of normal Cascade passes.
    block_size : callable
        ``block_size(q, n, p) -> k`` for pass ``p`` (0-based).
    sub_block_reuse : bool
        Cascade effect from the smallest known sub-block (True) or from top-level blocks only.
    biconf_streak : int
        After the passes, run BICONF rounds (parity of a pseudo-random half of the key, BINARY on
        mismatch, no cascade) until this many consecutive rounds correct nothing; 0 = no BICONF.
    source : str
        Where the parameters come from.
    all_odd : bool
        Cascade effect (with ``sub_block_reuse``) schedules every known sub-block with odd error
        parity on the corrected bit's path, shortest first, as the published runs of
        cascade-cpp do; False schedules only the smallest one (fewer parities, same result).
    """

    name: str
    passes: int
    block_size: Callable[[float, int, int], int]
    sub_block_reuse: bool
    biconf_streak: int
    source: str
    all_odd: bool = False

    def block_sizes(self, q: float, n: int) -> list[int]:
        """Block size of every pass for QBER ``q`` and ``n`` bits."""
        q = max(float(q), MIN_QBER)
        return [max(1, min(n, int(self.block_size(q, n, p)))) for p in range(self.passes)]


def _original(q: float, n: int, p: int) -> int:
    # Brassard & Salvail, EUROCRYPT'93: k1 = 0.73/q, k_{i+1} = 2 k_i, 4 passes.
    return math.ceil(0.73 / q) * 2**p


def _biconf(q: float, n: int, p: int) -> int:
    # Martinez-Mateo et al. 2015, "Cascade mod. (1)" (after Sugimoto & Yamazaki, BICONF):
    # k1 = 0.92/q, k2 = 3 k1, then BICONF.
    return math.ceil(0.92 / q) * 3**p


def _yanetal(q: float, n: int, p: int) -> int:
    # Yan et al. 2008 as "Cascade opt. (2)" in Martinez-Mateo et al.: k1 = 0.8/q, k2 = 5 k1,
    # k_i = n/2 for i >= 3, 10 passes.
    if p == 0:
        return math.ceil(0.80 / q)
    if p == 1:
        return 5 * math.ceil(0.80 / q)
    return n // 2


def _opt3(q: float, n: int, p: int) -> int:
    # Martinez-Mateo et al. 2015, options (3)/(4): k1 = 1/q, k2 = 2 k1, k_i = n/2, 16 passes.
    if p == 0:
        return math.ceil(1.0 / q)
    if p == 1:
        return 2 * math.ceil(1.0 / q)
    return n // 2


def _opt7(q: float, n: int, p: int) -> int:
    # Martinez-Mateo et al. 2015, option (7): k1 = 2^ceil(log2(1/q)), k2 = 4 k1, k_i = n/2.
    k1 = 2 ** math.ceil(math.log2(1.0 / q))
    if p == 0:
        return k1
    if p == 1:
        return 4 * k1
    return n // 2


def _opt8(q: float, n: int, p: int) -> int:
    # Martinez-Mateo et al. 2015, option (8) (used in AIT R10): alpha = log2(1/q) - 0.5,
    # k1 = 2^ceil(alpha), k2 = 2^ceil((alpha + 12)/2), k3 = 4096, k_i = n/2.
    alpha = math.log2(1.0 / q) - 0.5
    if p == 0:
        return 2 ** math.ceil(alpha)
    if p == 1:
        return 2 ** math.ceil((alpha + 12.0) / 2.0)
    if p == 2:
        return 4096
    return n // 2


_SRC = "Martinez-Mateo et al., QIC 15 (2015), arXiv:1407.3257"

VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("original", 4, _original, False, 0, "Brassard & Salvail, EUROCRYPT 1993"),
        Variant("biconf", 2, _biconf, False, 10, f"{_SRC}, Cascade mod. (1)"),
        Variant("yanetal", 10, _yanetal, False, 0, f"Yan et al. 2008; {_SRC}, opt. (2)"),
        Variant("option3", 16, _opt3, False, 0, f"{_SRC}, opt. (3)"),
        Variant("option4", 16, _opt3, True, 0, f"{_SRC}, opt. (4)", True),
        Variant("option7", 14, _opt7, True, 0, f"{_SRC}, opt. (7)", True),
        Variant("option8", 14, _opt8, True, 0, f"{_SRC}, opt. (8)", True),
    )
}


def get_variant(name: str) -> Variant:
    """The parameter set called ``name`` (ConfigError listing the known ones otherwise)."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise ConfigError(
            f"unknown Cascade variant {name!r}; known: {', '.join(sorted(VARIANTS))}"
        ) from None
