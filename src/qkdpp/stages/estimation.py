"""Parameter estimation stage: test-basis errors per intensity, key-basis sampling, bit balance.

Input: key blocks from :class:`~qkdpp.stages.accumulate.Accumulator` (state SIFTED, aux
``intensity``, ``test_bits``, ``test_intensity``, ``n_test``). One round trip per batch:

1. Alice → Bob ``pe.sample``: per frame her test-basis bits (packed) and, when
   ``sample_fraction > 0``, the positions of a uniformly random sample of key bits (chosen with
   :mod:`secrets`) and her bits there.
2. Bob → Alice ``pe.sample.reply``: his test-basis bits and his sampled key bits.

Both sides then count test-basis errors per intensity class and sampled-key errors, remove the
sampled bits from the key, and check the bit balance — the fraction of ones of each party's
test-basis bits and sampled key bits (public after the exchange, so both parties reach the same
verdict; for Bob a basis is one detector pair) — against ``balance_threshold``.

Output (state ESTIMATED): ``n_bits`` reduced by the sample; the per-bit aux fields consumed
here (``intensity``, ``test_bits``, ``test_intensity``, ``n_test``) are dropped — their counts are
in the tags, and a finished block carries no per-bit data but its key; tags
``n_key_by_intensity``, ``n_test_by_intensity``, ``m_test_by_intensity`` (lists),
``qber_test``, ``sample_size``, ``sample_errors``, ``qber_sample``, ``balance_test_alice``,
``balance_test_bob``, ``balance_sample_alice``, ``balance_sample_bob``, ``balance_alarm``,
``balance_key_local`` (own key bits, informative); ``meta.qber`` = the key-basis estimate
(sample if any, else the test basis).

Leakage: test-basis bits are not key bits (never enter the key), so they are not booked; sampled
key bits are disclosed **and removed** from the key, so they are not booked either (the tags
count them). Nothing else is disclosed.
"""

from __future__ import annotations

import secrets
from typing import Any

import numpy as np

from qkdpp.errors import ConfigError, ProtocolError
from qkdpp.frame import Frame, KeyState, Role
from qkdpp.kernels import bits as kbits
from qkdpp.kernels import sifting as ks
from qkdpp.pipeline.stage import Stage, register_stage
from qkdpp.protocol.link import PeerScope

__all__ = ["EstimationStage", "random_sample"]

BIT_BALANCE_ALARM = "bit_balance_alarm"
QBER_ABOVE_MAX = "qber_above_max"
_CONSUMED = ("intensity", "test_bits", "test_intensity", "n_test")  # aux read here, not handed on


def _gather(f: Frame, pos: np.ndarray) -> np.ndarray:
    """Packed key bits of ``f`` at ``pos`` (MSB-first)."""
    if pos.size == 0:
        return np.zeros(0, dtype=np.uint8)
    return np.ascontiguousarray(kbits.gather(f.bits, pos, f.meta.n_bits), dtype=np.uint8)


def _balance(packed: np.ndarray, n: int) -> float:
    """Fraction of ones among ``n`` packed bits (0.5 when empty)."""
    return int(kbits.popcount(packed, n)) / n if n else 0.5


def random_sample(n: int, k: int) -> np.ndarray:
    """``k`` distinct sorted positions out of ``n``, uniformly at random (OS CSPRNG)."""
    if not 0 <= k <= n:
        raise ConfigError(f"cannot sample {k} of {n}")
    rng = secrets.SystemRandom()
    return np.array(sorted(rng.sample(range(n), k)), dtype=np.int64)


@register_stage
class EstimationStage(Stage):
    """Parameter estimation (see module docstring).

    Parameters
    ----------
    sample_fraction : float
        Fraction of key bits sampled, disclosed and removed (0 = none).
    balance_threshold : float
        Alarm when ``|fraction of ones − 1/2|`` of a basis exceeds it (0 < t ≤ 0.5).
    fail_on_balance_alarm : bool
        Mark the frame FAILED (``bit_balance_alarm``) on an alarm instead of only tagging it.
    min_balance_bits : int
        Bits needed in a basis before its balance is judged.
    max_qber : float
        A block whose key-basis QBER estimate (``meta.qber``) exceeds it is FAILED
        (``qber_above_max``) before any reconciliation bit is disclosed. Default 0.11: above
        ≈ 11 % BB84 yields no key even asymptotically (Shor & Preskill 2000), and a QBER near
        0.5 means the two keys are unrelated (e.g. a wrong clock fit), not a noisy channel.
        Both parties compute the estimate from the same exchanged bits, so they agree.
    """

    name = "estimation"

    def __init__(
        self,
        role: Role | str,
        *,
        sample_fraction: float = 0.0,
        balance_threshold: float = 0.05,
        fail_on_balance_alarm: bool = False,
        min_balance_bits: int = 1000,
        max_qber: float = 0.11,
    ) -> None:
        if not 0.0 <= sample_fraction < 1.0:
            raise ConfigError(f"sample_fraction must be in [0, 1), got {sample_fraction}")
        if not 0.0 < balance_threshold <= 0.5:
            raise ConfigError(f"balance_threshold must be in (0, 0.5], got {balance_threshold}")
        if min_balance_bits < 1:
            raise ConfigError(f"min_balance_bits must be >= 1, got {min_balance_bits}")
        if not 0.0 < max_qber <= 0.5:
            raise ConfigError(f"max_qber must be in (0, 0.5], got {max_qber}")
        super().__init__(
            role,
            sample_fraction=sample_fraction,
            balance_threshold=balance_threshold,
            fail_on_balance_alarm=fail_on_balance_alarm,
            min_balance_bits=min_balance_bits,
            max_qber=max_qber,
        )
        self.max_qber = max_qber
        self.sample_fraction = sample_fraction
        self.balance_threshold = balance_threshold
        self.fail_on_alarm = fail_on_balance_alarm
        self.min_balance_bits = min_balance_bits

    @staticmethod
    def _check_bits(msg: dict[str, Any], key: str, n: int) -> np.ndarray:
        a = msg.get(key)
        if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.size != (n + 7) // 8:
            raise ProtocolError(f"estimation: {key} must be {(n + 7) // 8} packed bytes")
        return a

    def process_batch(self, frames: list[Frame], peer: PeerScope) -> list[Frame]:
        if not frames:
            return []
        if self.role is Role.ALICE:
            payload: dict[str, Any] = {"n_frames": len(frames)}
            samples = []
            for i, f in enumerate(frames):
                payload[f"test_{i}"] = np.asarray(f.aux["test_bits"], dtype=np.uint8)
                k = round(self.sample_fraction * f.meta.n_bits)
                pos = random_sample(f.meta.n_bits, k)
                samples.append(pos)
                payload[f"pos_{i}"] = pos
                payload[f"sbits_{i}"] = _gather(f, pos)
            reply = peer.request("pe.sample", payload)
            out = []
            for i, f in enumerate(frames):
                n_test = int(f.aux["n_test"])
                theirs_t = self._check_bits(reply, f"test_{i}", n_test)
                pos = samples[i]
                theirs_s = self._check_bits(reply, f"sbits_{i}", pos.size)
                out.append(
                    self._finish(
                        f, payload[f"test_{i}"], theirs_t, pos, payload[f"sbits_{i}"], theirs_s
                    )
                )
            return out
        msg = peer.recv("pe.sample")
        if msg.get("n_frames") != len(frames):
            raise ProtocolError(
                f"estimation: Alice sent {msg.get('n_frames')} frames, expected {len(frames)}"
            )
        answer: dict[str, Any] = {}
        inputs = []
        for i, f in enumerate(frames):
            n = f.meta.n_bits
            n_test = int(f.aux["n_test"])
            theirs_t = self._check_bits(msg, f"test_{i}", n_test)
            pos_in = msg.get(f"pos_{i}")
            if not isinstance(pos_in, np.ndarray) or pos_in.dtype != np.int64 or pos_in.ndim != 1:
                raise ProtocolError(f"estimation: pos_{i} must be a 1-D int64 array")
            pos = pos_in
            if pos.size and (pos[0] < 0 or pos[-1] >= n or np.any(np.diff(pos) <= 0)):
                raise ProtocolError(
                    f"estimation: sample positions of frame {i} must be strictly "
                    f"increasing in [0, {n})"
                )
            if pos.size > n // 2:
                raise ProtocolError(f"estimation: sample of {pos.size} exceeds half the block")
            theirs_s = self._check_bits(msg, f"sbits_{i}", pos.size)
            mine_s = _gather(f, pos)
            mine_t = np.asarray(f.aux["test_bits"], dtype=np.uint8)
            answer[f"test_{i}"] = mine_t
            answer[f"sbits_{i}"] = mine_s
            inputs.append((f, mine_t, theirs_t, pos, mine_s, theirs_s))
        peer.reply("pe.sample", answer)
        return [self._finish(*args) for args in inputs]

    def _finish(
        self,
        f: Frame,
        mine_t: np.ndarray,
        theirs_t: np.ndarray,
        pos: np.ndarray,
        mine_s: np.ndarray,
        theirs_s: np.ndarray,
    ) -> Frame:
        n = f.meta.n_bits
        n_test = int(f.aux["n_test"])
        t_int = np.asarray(f.aux["test_intensity"], dtype=np.uint8)
        k_int = np.asarray(f.aux["intensity"], dtype=np.uint8)
        n_cls = len(f.meta.tags.get("n_key_by_intensity", [])) or int(
            max(t_int.max(initial=0), k_int.max(initial=0)) + 1
        )
        diff = kbits.unpack(np.bitwise_xor(mine_t, theirs_t), n_test).astype(bool)
        m_test = np.bincount(t_int[diff], minlength=n_cls)
        n_test_cls = ks.class_counts(t_int, n_cls)
        s_err = int(kbits.xor_popcount(mine_s, theirs_s, pos.size)) if pos.size else 0
        if pos.size:
            keep = np.ones(n, dtype=bool)
            keep[pos] = False
            unpacked = kbits.unpack(f.bits, n)[keep]
            k_int = k_int[keep]
            n_key, ones, key = unpacked.size, int(unpacked.sum()), kbits.pack(unpacked)
        else:  # no sample: the key is the block as it is (a copy: later stages flip bits)
            n_key, ones, key = n, int(kbits.popcount(f.bits, n)), f.bits.copy()
        n_key_cls = ks.class_counts(k_int, n_cls)
        # Bit balance from public data only (both parties' test bits and sampled key bits), so
        # both sides reach the same verdict; the local key-bit balance is informative.
        if self.role is Role.ALICE:
            a_t, b_t, a_s, b_s = mine_t, theirs_t, mine_s, theirs_s
        else:
            a_t, b_t, a_s, b_s = theirs_t, mine_t, theirs_s, mine_s
        balances = {
            "balance_test_alice": _balance(a_t, n_test),
            "balance_test_bob": _balance(b_t, n_test),
            "balance_sample_alice": _balance(a_s, pos.size),
            "balance_sample_bob": _balance(b_s, pos.size),
        }
        counts = {
            "balance_test_alice": n_test,
            "balance_test_bob": n_test,
            "balance_sample_alice": pos.size,
            "balance_sample_bob": pos.size,
        }
        alarm = any(
            counts[k] >= self.min_balance_bits and abs(v - 0.5) > self.balance_threshold
            for k, v in balances.items()
        )
        bal_key = ones / n_key if n_key else 0.5
        qber_test = float(diff.sum()) / n_test if n_test else None
        qber_sample = s_err / pos.size if pos.size else None
        est = qber_sample if qber_sample is not None else qber_test
        meta = f.meta.advance(KeyState.ESTIMATED, n_bits=int(n_key), qber=est).with_tags(
            n_key_by_intensity=[int(x) for x in n_key_cls],
            n_test_by_intensity=[int(x) for x in n_test_cls],
            m_test_by_intensity=[int(x) for x in m_test],
            qber_test=qber_test,
            sample_size=int(pos.size),
            sample_errors=s_err,
            qber_sample=qber_sample,
            balance_key_local=bal_key,
            balance_alarm=bool(alarm),
            **balances,
        )
        out = Frame(meta, key, {k: v for k, v in f.aux.items() if k not in _CONSUMED})
        if alarm and self.fail_on_alarm:
            return out.fail(BIT_BALANCE_ALARM)
        if est is not None and est > self.max_qber:
            return out.fail(
                f"{QBER_ABOVE_MAX}: estimated QBER {est:.4f} > max_qber {self.max_qber} "
                "(no key possible; near 0.5 the keys are unrelated: check the clock fit)"
            )
        return out
