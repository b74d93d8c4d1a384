"""Privacy amplification: exact Toeplitz hashing with a fresh public seed per block.

Input: frames whose ``meta.tags["key_length"]`` (ℓ, written by the ``key_length`` stage) is set.
Missing, non-integer, ``≤ 0`` or ``> n_bits`` → the frame FAILED (never a short or unsafe key).

Protocol: Alice draws the seed of every frame from the OS CSPRNG (``os.urandom``) — ``n - 1`` bits
for ``variant="modified"`` (the default, ``[I_ℓ | T']``), ``n + ℓ - 1`` for ``"toeplitz"`` — and
sends them in one message (``privacy_amplification/seeds``). The seeds are public; the message is
authenticated with the rest of the transcript. Both sides compute ``T(seed) · key``
(:mod:`qkdpp.kernels.toeplitz`, exact over GF(2); seed convention ``T[i, j] = s[i - j + n - 1]``).

Output: AMPLIFIED frames of ``ℓ`` bits. Leakage: none (the seed is independent of the key).

Both families are universal₂ (collision probability ``2^-ℓ`` for any two distinct inputs), which is
what the leftover hash lemma behind the key length assumes, so ℓ is the same for both. For the
modified family (Hayashi & Tsurumaru, IEEE Trans. Inf. Theory 62 (2016) 2213, arXiv:1311.5322):
a nonzero ``x = (x1, x2)`` collides with 0 iff ``x1 = T' x2``; if ``x2 = 0`` that needs
``x1 = 0`` (impossible), else ``T' x2`` is uniform over ``{0,1}^ℓ`` for a uniform Toeplitz
``T'``, so the probability is ``2^-ℓ``. It is the default because it needs fewer seed bits and
its product is ``ℓ × (n - ℓ)`` instead of ``ℓ × n`` (n = 1e6, ℓ = 3.5e5: 5.2–5.3 against
7.5–7.6 ms here, docs/security.md).
"""

from __future__ import annotations

import os
from numbers import Integral

import numpy as np

from qkdpp.errors import ConfigError, ProtocolError
from qkdpp.frame import Frame, KeyState, Role
from qkdpp.kernels import toeplitz
from qkdpp.pipeline.stage import Stage, register_stage
from qkdpp.protocol.link import PeerScope

__all__ = ["PrivacyAmplificationStage", "fresh_seed", "seed_bits"]

VARIANTS = ("toeplitz", "modified")


def seed_bits(variant: str, n: int, m: int) -> int:
    """Seed length in bits for an ``n``-bit input and ``m``-bit output."""
    return n + m - 1 if variant == "toeplitz" else n - 1


def fresh_seed(nbits: int) -> np.ndarray:
    """``nbits`` uniform bits from the OS CSPRNG, packed MSB first, pad bits zero."""
    nbytes = (nbits + 7) // 8
    s = np.frombuffer(os.urandom(nbytes), dtype=np.uint8).copy()
    if nbits % 8:
        s[-1] &= (0xFF << (8 - nbits % 8)) & 0xFF
    return s


@register_stage
class PrivacyAmplificationStage(Stage):
    """Toeplitz (or modified Toeplitz) privacy amplification.

    Parameters
    ----------
    role : Role
    variant : {"modified", "toeplitz"}
        ``[I_ℓ | T']`` (``n - 1`` seed bits, default) or the full Toeplitz matrix
        (``n + ℓ - 1`` seed bits); both universal₂ (module docstring). With ``ℓ = n`` the
        modified form is the identity, so ``"toeplitz"`` is used there.
    wipe_input : bool
        Overwrite the input key buffer with zeros after hashing (off by default because callers
        may share the input array between parties in tests).
    """

    name = "privacy_amplification"

    def __init__(
        self, role: Role | str, *, variant: str = "modified", wipe_input: bool = False
    ) -> None:
        super().__init__(role, variant=variant, wipe_input=wipe_input)
        if variant not in VARIANTS:
            raise ConfigError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.variant = variant
        self.wipe_input = wipe_input

    def setup(self) -> None:
        x = np.zeros(16, np.uint8)
        toeplitz.toeplitz_hash(np.zeros(40, np.uint8), x, 128, 64)

    @staticmethod
    def _length(f: Frame) -> int | str:
        ell = f.meta.tags.get("key_length")
        if ell is None:
            return "privacy_amplification: no key_length (run the key_length stage first)"
        if isinstance(ell, bool) or not isinstance(ell, Integral):
            return f"privacy_amplification: key_length is not an integer ({type(ell).__name__})"
        length = int(ell)
        if length <= 0:
            return f"privacy_amplification: key_length {length} <= 0, no key from this block"
        if length > f.meta.n_bits:
            return f"privacy_amplification: key_length {length} exceeds n_bits {f.meta.n_bits}"
        return length

    def _hash(self, seed: np.ndarray, f: Frame, ell: int) -> np.ndarray:
        n = f.meta.n_bits
        if self._variant_for(n, ell) == "modified":
            return toeplitz.modified_toeplitz_hash(seed, f.bits, n, ell)
        return toeplitz.toeplitz_hash(seed, f.bits, n, ell)

    def _variant_for(self, n: int, ell: int) -> str:
        return "modified" if self.variant == "modified" and ell < n else "toeplitz"

    def process_batch(self, frames: list[Frame], peer: PeerScope) -> list[Frame]:
        lengths = [self._length(f) for f in frames]
        live = [i for i, ell in enumerate(lengths) if isinstance(ell, int)]
        need = {
            i: seed_bits(
                self._variant_for(frames[i].meta.n_bits, int(lengths[i])),
                frames[i].meta.n_bits,
                int(lengths[i]),
            )
            for i in live
        }
        if self.role is Role.ALICE:
            seeds = {i: fresh_seed(need[i]) for i in live}
            peer.send("seeds", {f"s{i}": seeds[i] for i in live})
        else:
            msg = peer.recv("seeds")
            peer.expect_fields(msg, "seeds", **{f"s{i}": np.ndarray for i in live})
            seeds = {}
            for i in live:
                s = msg[f"s{i}"]
                if s.dtype != np.uint8 or s.ndim != 1 or s.size != (need[i] + 7) // 8:
                    raise ProtocolError(
                        f"privacy_amplification/seeds: seed of frame {frames[i].meta.frame_id} "
                        f"is {s.dtype} {s.shape}, expected uint8 ({(need[i] + 7) // 8},)"
                    )
                seeds[i] = s
        out = []
        for i, f in enumerate(frames):
            ell = lengths[i]
            if not isinstance(ell, int):
                out.append(f.fail(str(ell)))
                continue
            y = self._hash(seeds[i], f, ell)
            if self.wipe_input:
                f.bits.fill(0)
            meta = f.meta.advance(KeyState.AMPLIFIED, n_bits=ell).with_tags(
                pa_input_bits=f.meta.n_bits,
                pa_seed_bits=need[i],
                pa_variant=self._variant_for(f.meta.n_bits, ell),
            )
            out.append(f.evolve(meta=meta, bits=y))
        return out
