"""Frames: one block of key material travelling through the pipeline, with its immutable metadata.

A :class:`Frame` holds the packed key bits of one party for one block (``uint8``, MSB-first, see
:mod:`qkdpp.kernels.bits`) plus :class:`FrameMeta`. Stages never mutate a meta: they return a new
one (``meta.with_leak(...)``, ``meta.advance(...)``...). Both parties hold a frame with the same
``session_id`` and ``frame_id``; their ledgers must agree.

Ledgers
-------
* **Leakage ledger** (``meta.leakage``): one :class:`LeakEntry` per disclosure, in bits of
  key-dependent information put on the public channel by *either* party (syndromes minus punctured
  bits, Cascade parities, sampled bits, verification tags). ``meta.leaked_bits`` is their sum and is
  what the finite-key bound subtracts as λ_EC (+ verification).
* **ε ledger** (``meta.epsilons``): one :class:`EpsEntry` per failure probability the block's
  security claim depends on (``eps_pe``, ``eps_cor``, ``eps_pa``, ``eps_auth``...). The composable
  security parameter of the block is at most their sum (:meth:`FrameMeta.eps_total`).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from qkdpp.errors import ConfigError


class KeyState(enum.IntEnum):
    """Processing state of a frame; states only move forward, or to FAILED."""

    RAW = 0
    SIFTED = 1
    ESTIMATED = 2
    CORRECTED = 3
    VERIFIED = 4
    AMPLIFIED = 5
    AUTHENTICATED = 6
    FAILED = 99


class Role(enum.StrEnum):
    """Which party runs the pipeline. Alice initiates; Bob responds."""

    ALICE = "alice"
    BOB = "bob"

    @property
    def peer(self) -> Role:
        return Role.BOB if self is Role.ALICE else Role.ALICE


@dataclass(frozen=True)
class LeakEntry:
    """``bits`` of key-dependent information disclosed by ``stage``; ``what`` names the message."""

    stage: str
    what: str
    bits: int


@dataclass(frozen=True)
class EpsEntry:
    """A failure probability ``value`` booked by ``stage`` under ``name`` (e.g. ``eps_cor``)."""

    stage: str
    name: str
    value: float


def _frozen_tags(tags: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(tags or {}))


def _getstate(obj: Any, mapping_field: str) -> dict[str, Any]:
    state = dict(obj.__dict__)
    state[mapping_field] = dict(state[mapping_field])
    return state


def _setstate(obj: Any, state: dict[str, Any], mapping_field: str) -> None:
    for k, v in state.items():
        object.__setattr__(obj, k, _frozen_tags(v) if k == mapping_field else v)


@dataclass(frozen=True)
class FrameMeta:
    """Immutable metadata of one frame (block).

    Attributes
    ----------
    session_id : str
        Identifier of the QKD session (both peers agree).
    frame_id : int
        Block number within the session (both peers agree), ``0 <= frame_id < 2**63``.
    role : Role
        The party holding this frame.
    state : KeyState
        Processing state; ``FAILED`` frames carry ``failure`` (a short reason).
    n_bits : int
        Authoritative number of key bits; the packed array may be longer (zero padding).
    qber : float or None
        Best current estimate of the quantum bit error rate (fraction, not %).
    leakage, epsilons : tuple
        The leakage and ε ledgers (see module docstring).
    tags : Mapping
        Free-form statistics (counts, timings); never key material.
    peer_fault : bool
        The failure came from the peer's messages (a ProtocolError on its input, or its
        abort), not from this party's own data; set by the pipeline runner.
    """

    session_id: str
    frame_id: int
    role: Role
    state: KeyState = KeyState.RAW
    n_bits: int = 0
    qber: float | None = None
    leakage: tuple[LeakEntry, ...] = ()
    epsilons: tuple[EpsEntry, ...] = ()
    tags: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    failure: str | None = None
    peer_fault: bool = False

    def __post_init__(self) -> None:
        if self.n_bits < 0:
            raise ConfigError(f"n_bits must be >= 0, got {self.n_bits}")
        if not 0 <= self.frame_id < 2**63:
            raise ConfigError(f"frame_id must be in [0, 2**63), got {self.frame_id}")
        if not isinstance(self.tags, MappingProxyType):
            object.__setattr__(self, "tags", _frozen_tags(self.tags))

    def __getstate__(self) -> dict[str, Any]:
        return _getstate(self, "tags")

    def __setstate__(self, state: dict[str, Any]) -> None:
        _setstate(self, state, "tags")

    # -- ledgers -------------------------------------------------------------------------------
    @property
    def leaked_bits(self) -> int:
        """Total disclosed bits (sum of the leakage ledger)."""
        return sum(e.bits for e in self.leakage)

    def leaked_by(self, stage: str) -> int:
        """Disclosed bits booked by one stage."""
        return sum(e.bits for e in self.leakage if e.stage == stage)

    def eps_total(self) -> float:
        """Sum of every ε booked for this block (union bound)."""
        return float(sum(e.value for e in self.epsilons))

    def with_leak(self, stage: str, what: str, bits: int) -> FrameMeta:
        """Return a copy with ``bits`` more disclosed bits booked by ``stage``."""
        if bits < 0:
            raise ConfigError(f"leaked bits must be >= 0, got {bits} ({stage}/{what})")
        return dataclasses.replace(self, leakage=(*self.leakage, LeakEntry(stage, what, int(bits))))

    def with_eps(self, stage: str, name: str, value: float) -> FrameMeta:
        """Return a copy with a failure probability booked."""
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"epsilon must be in [0, 1], got {value} ({stage}/{name})")
        return dataclasses.replace(
            self, epsilons=(*self.epsilons, EpsEntry(stage, name, float(value)))
        )

    # -- state ---------------------------------------------------------------------------------
    def advance(self, state: KeyState, **changes: Any) -> FrameMeta:
        """Return a copy in ``state`` (must not go backwards) with other fields replaced."""
        if self.state is KeyState.FAILED:
            raise ConfigError(f"frame {self.frame_id} already FAILED ({self.failure})")
        if state < self.state:
            raise ConfigError(f"state cannot go back from {self.state.name} to {state.name}")
        return dataclasses.replace(self, state=state, **changes)

    def failed(self, reason: str, *, peer_fault: bool = False) -> FrameMeta:
        """Return a copy marked FAILED with ``reason`` (first reason wins); ``peer_fault``:
        the peer's messages caused it."""
        if self.state is KeyState.FAILED:
            return self
        return dataclasses.replace(
            self, state=KeyState.FAILED, failure=reason, peer_fault=peer_fault
        )

    def with_tags(self, **tags: Any) -> FrameMeta:
        """Return a copy with statistics added or replaced."""
        return dataclasses.replace(self, tags=_frozen_tags({**self.tags, **tags}))

    def replace(self, **changes: Any) -> FrameMeta:
        """``dataclasses.replace`` for callers that change plain fields (``qber``, ``n_bits``)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Frame:
    """One block of key material of one party.

    Attributes
    ----------
    meta : FrameMeta
        Identity, state and ledgers.
    bits : numpy.ndarray
        Packed key bits, ``uint8``, MSB-first, length ``>= ceil(meta.n_bits / 8)``, pad bits zero.
    aux : Mapping[str, numpy.ndarray]
        Stage-to-stage side data that is not key (e.g. per-bit intensity class, sample indices).
    """

    meta: FrameMeta
    bits: np.ndarray
    aux: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if self.bits.dtype != np.uint8 or self.bits.ndim != 1:
            raise ConfigError(
                f"Frame.bits must be a 1-D uint8 array, got {self.bits.dtype} {self.bits.shape}"
            )
        if self.bits.size * 8 < self.meta.n_bits:
            raise ConfigError(
                f"Frame.bits holds {self.bits.size * 8} bits, fewer than n_bits={self.meta.n_bits}"
            )
        if not isinstance(self.aux, MappingProxyType):
            object.__setattr__(self, "aux", _frozen_tags(self.aux))

    def __getstate__(self) -> dict[str, Any]:
        return _getstate(self, "aux")

    def __setstate__(self, state: dict[str, Any]) -> None:
        _setstate(self, state, "aux")

    @property
    def ok(self) -> bool:
        """True unless the frame FAILED."""
        return self.meta.state is not KeyState.FAILED

    def evolve(
        self,
        meta: FrameMeta | None = None,
        bits: np.ndarray | None = None,
        aux: Mapping[str, Any] | None = None,
    ) -> Frame:
        """Return a new frame with some parts replaced."""
        return Frame(
            meta if meta is not None else self.meta,
            bits if bits is not None else self.bits,
            aux if aux is not None else self.aux,
        )

    def fail(self, reason: str, *, peer_fault: bool = False) -> Frame:
        """Return this frame marked FAILED with ``reason`` (see :meth:`FrameMeta.failed`)."""
        return self.evolve(meta=self.meta.failed(reason, peer_fault=peer_fault))
