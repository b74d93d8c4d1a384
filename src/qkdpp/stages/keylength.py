"""Key-length stage: the finite-key bound of the protocol that was run, and the ε ledger.

Runs after error correction and verification. It reads

* the block statistics written by :class:`~qkdpp.stages.estimation.EstimationStage`
  (``meta.tags``: ``n_key_by_intensity``, ``n_test_by_intensity``, ``m_test_by_intensity``);
  the key-basis count is ``meta.n_bits`` (authoritative) for Tomamichel 2012;
* ``meta.leaked_bits`` — λ_EC plus the verification tag, everything booked by earlier stages;
* an ``eps_cor`` entry of the ε ledger if the verification stage booked one (else the
  ``eps_cor`` parameter is booked here),

computes ℓ with :func:`secret_key_length` and writes ``meta.tags["key_length"] = ℓ`` plus
``key_length_terms``. It books ``eps_pe`` and ``eps_pa`` (and ``eps_cor`` when missing) with
``meta.with_eps``. Any abort (see :data:`qkdpp.security.ABORT_REASONS`) or ℓ ≤ 0 marks the frame
FAILED with the reason name. With ``max_block_eps`` the block's ε sum is checked; with
``link_eps_budget`` every accepted block is committed to a per-stage-instance
:class:`~qkdpp.security.ledger.LinkEpsLedger` (one stage instance = one link lifetime).

Both parties compute the same ℓ from the same public statistics. The stage sends nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from qkdpp.errors import ConfigError, SecurityAbort
from qkdpp.frame import Frame, Role
from qkdpp.pipeline.stage import Stage, register_stage
from qkdpp.protocol.link import PeerScope
from qkdpp.security import lim2014, rusca2018, tomamichel2012
from qkdpp.security.ledger import LinkEpsLedger, check_block_budget
from qkdpp.security.result import (
    BOUND_EXCEEDS_BLOCK,
    SAMPLE_TOO_SMALL,
    KeyLengthResult,
    make_result,
)

__all__ = ["PROTOCOLS", "KeyLengthStage", "secret_key_length"]

PROTOCOLS = ("lim2014", "rusca2018", "tomamichel2012")


def _counts(stats: Mapping[str, Any], key: str, n: int) -> tuple[float, ...]:
    v = stats.get(key)
    if v is None:
        raise ConfigError(f"block statistics lack {key!r}")
    v = list(v)
    if len(v) < n:
        v = v + [0] * (n - len(v))
    if any(x for x in v[n:]):
        raise ConfigError(f"{key} has counts for {len(v)} intensity classes, protocol uses {n}")
    return tuple(float(x) for x in v[:n])


def secret_key_length(
    protocol: str, stats: Mapping[str, Any], leaked_bits: float, params: Any
) -> KeyLengthResult:
    """Dispatch to the bound of ``protocol`` with block statistics in the tag layout.

    Parameters
    ----------
    protocol : {"lim2014", "rusca2018", "tomamichel2012"}
    stats : Mapping
        ``n_key_by_intensity``, ``n_test_by_intensity``, ``m_test_by_intensity`` (lists), and
        for ``tomamichel2012`` optionally ``n_key`` (defaults to the key-basis sum).
    leaked_bits : float
        λ_EC + verification tag bits.
    params : DecoyParams | OneDecoyParams | BBM92Params
    """
    if protocol == "lim2014":
        s = lim2014.DecoyStats(
            _counts(stats, "n_key_by_intensity", 3),
            _counts(stats, "n_test_by_intensity", 3),
            _counts(stats, "m_test_by_intensity", 3),
        )
        return lim2014.secret_key_length(s, leaked_bits, params)
    if protocol == "rusca2018":
        o = rusca2018.OneDecoyStats(
            _counts(stats, "n_key_by_intensity", 2),
            _counts(stats, "n_test_by_intensity", 2),
            _counts(stats, "m_test_by_intensity", 2),
        )
        return rusca2018.secret_key_length(o, leaked_bits, params)
    if protocol == "tomamichel2012":
        nk = stats.get("n_key")
        if nk is None:
            nk = sum(stats.get("n_key_by_intensity", []))
        t = tomamichel2012.BBM92Stats(
            int(nk),
            int(sum(stats.get("n_test_by_intensity", []))),
            int(sum(stats.get("m_test_by_intensity", []))),
        )
        return tomamichel2012.secret_key_length(t, leaked_bits, params)
    raise ConfigError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")


@register_stage
class KeyLengthStage(Stage):
    """Compute ℓ and book ε (see module docstring).

    Parameters
    ----------
    protocol : str
        ``lim2014`` (two decoys), ``rusca2018`` (one decoy) or ``tomamichel2012`` (BBM92 / qubits).
    mu, p_mu : list of float
        Intensities and their probabilities (decoy protocols).
    eps_sec, eps_cor : float
        Secrecy and (default) correctness.
    q_tol : float
        Tolerated test error rate (``tomamichel2012``).
    qber_max : float
        Abort threshold on the observed error rates (decoy protocols).
    clip_negative : bool
        Clip n⁻/m⁻ at 0 (decoy protocols).
    min_test_counts : int
        Minimum test-basis detections per block.
    max_block_eps : float or None
        Abort ``eps_budget_exceeded`` when a block's ε sum exceeds it.
    link_eps_budget : float or None
        Lifetime ε budget of the link (``eps_budget_exceeded`` once spent).
    """

    name = "key_length"

    def __init__(
        self,
        role: Role | str,
        *,
        protocol: str = "lim2014",
        mu: list[float] | tuple[float, ...] = (0.6, 0.2, 2e-4),
        p_mu: list[float] | tuple[float, ...] = (0.7, 0.2, 0.1),
        eps_sec: float = 1e-10,
        eps_cor: float = 1e-15,
        q_tol: float = 0.05,
        qber_max: float = 0.11,
        clip_negative: bool = True,
        min_test_counts: int = 1,
        max_block_eps: float | None = None,
        link_eps_budget: float | None = None,
    ) -> None:
        super().__init__(
            role,
            protocol=protocol,
            mu=list(mu),
            p_mu=list(p_mu),
            eps_sec=eps_sec,
            eps_cor=eps_cor,
            q_tol=q_tol,
            qber_max=qber_max,
            clip_negative=clip_negative,
            min_test_counts=min_test_counts,
            max_block_eps=max_block_eps,
            link_eps_budget=link_eps_budget,
        )
        if protocol not in PROTOCOLS:
            raise ConfigError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
        self.protocol = protocol
        self.bound_params = self._make_params(eps_cor)
        if max_block_eps is not None and not 0 < max_block_eps <= 1:
            raise ConfigError(f"max_block_eps must be in (0, 1], got {max_block_eps}")
        self.max_block_eps = max_block_eps
        self.ledger = LinkEpsLedger(link_eps_budget) if link_eps_budget is not None else None

    def _make_params(self, eps_cor: float) -> Any:
        p = self.params
        if self.protocol == "lim2014":
            return lim2014.DecoyParams(
                mu=tuple(p["mu"]),
                p_mu=tuple(p["p_mu"]),
                eps_sec=p["eps_sec"],
                eps_cor=eps_cor,
                qber_max=p["qber_max"],
                clip_negative=p["clip_negative"],
                min_test_counts=p["min_test_counts"],
            )
        if self.protocol == "rusca2018":
            return rusca2018.OneDecoyParams(
                mu=tuple(p["mu"])[:2],
                p_mu=tuple(p["p_mu"])[:2],
                eps_sec=p["eps_sec"],
                eps_cor=eps_cor,
                qber_max=p["qber_max"],
                clip_negative=p["clip_negative"],
                min_test_counts=p["min_test_counts"],
            )
        return tomamichel2012.BBM92Params(
            q_tol=p["q_tol"],
            eps_sec=p["eps_sec"],
            eps_cor=eps_cor,
            min_test_bits=max(1, p["min_test_counts"]),
        )

    def compute(self, frame: Frame) -> KeyLengthResult:
        """The finite-key result for one frame (no ledger changes)."""
        meta = frame.meta
        booked_cor = [e.value for e in meta.epsilons if e.name == "eps_cor"]
        params = self.bound_params
        if booked_cor:
            params = self._make_params(min(max(sum(booked_cor), 1e-300), 0.999999))
        stats = dict(meta.tags)
        stats["n_key"] = meta.n_bits
        try:
            return secret_key_length(self.protocol, stats, float(meta.leaked_bits), params)
        except ConfigError as exc:
            return make_result(0.0, {}, {}, SAMPLE_TOO_SMALL, f"block statistics unusable: {exc}")

    def process(self, frame: Frame, peer: PeerScope) -> Frame:
        res = self.compute(frame)
        if res.length > frame.meta.n_bits and res.abort is None:
            # more secret bits than raw bits: the configured intensities or probabilities do
            # not describe this data; capping would skip privacy amplification — abort
            res = replace(
                res,
                length=0,
                abort=BOUND_EXCEEDS_BLOCK,
                detail=f"bound {res.bound:.0f} > block {frame.meta.n_bits} bits: check "
                "the intensities and probabilities in [key_length]",
            )
        meta = frame.meta
        booked_cor = any(e.name == "eps_cor" for e in meta.epsilons)
        for name, value in res.eps.items():
            if name == "eps_cor" and booked_cor:
                continue
            meta = meta.with_eps(self.name, name, value)
        terms = {k: (v if math.isfinite(v) else None) for k, v in res.terms.items()}
        meta = meta.with_tags(
            key_length=res.length,
            key_length_bound=res.bound,
            key_length_protocol=self.protocol,
            key_length_terms=terms,
        )
        if res.abort is not None:
            return frame.evolve(meta=meta.failed(res.abort))
        try:
            if self.max_block_eps is not None:
                check_block_budget(meta, self.max_block_eps)
            if self.ledger is not None:
                self.ledger.commit_block(meta)
        except SecurityAbort as exc:
            return frame.evolve(meta=meta.with_tags(key_length=0).failed(exc.reason))
        return frame.evolve(meta=meta)
