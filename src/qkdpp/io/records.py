"""The two record types that connect the raw-event layer to sifting.

Conventions (project-wide)
--------------------------
* Slots are numbered by Alice's clock from 0 at the start of the session (``int64``).
* Basis: ``0`` = Z (rectilinear, the key basis in decoy BB84), ``1`` = X (diagonal, the test basis).
* Bit values are 0/1. Intensity class: ``0`` = signal μ1, ``1`` = decoy μ2, ``2`` = vacuum/weak μ3
  (Lim et al. 2014 notation); BBM92 uses class 0 only.
* Packed bit-planes follow the project bit order (MSB-first, :mod:`qkdpp.kernels.bits`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qkdpp.errors import ConfigError


@dataclass(frozen=True)
class AliceRecord:
    """Alice's preparation record for slots ``[slot0, slot0 + n_slots)``.

    Attributes
    ----------
    slot0 : int
        First slot covered.
    n_slots : int
        Number of slots covered.
    basis, value : numpy.ndarray
        Packed bit-planes (``uint8``, MSB-first, ``ceil(n_slots / 8)`` bytes): basis and bit
        value of every slot.
    intensity : numpy.ndarray
        ``uint8`` intensity class per slot (length ``n_slots``).
    """

    slot0: int
    n_slots: int
    basis: np.ndarray
    value: np.ndarray
    intensity: np.ndarray

    def __post_init__(self) -> None:
        nbytes = (self.n_slots + 7) // 8
        for name in ("basis", "value"):
            a = getattr(self, name)
            if a.dtype != np.uint8 or a.ndim != 1 or a.size != nbytes:
                raise ConfigError(
                    f"AliceRecord.{name} must be packed uint8 of {nbytes} bytes, "
                    f"got {a.dtype} shape {a.shape}"
                )
        if self.intensity.dtype != np.uint8 or self.intensity.shape != (self.n_slots,):
            raise ConfigError(
                f"AliceRecord.intensity must be uint8 of length {self.n_slots}, "
                f"got {self.intensity.dtype} shape {self.intensity.shape}"
            )


@dataclass(frozen=True)
class BobDetections:
    """Bob's detections after timing recovery, for slots ``[slot0, slot0 + n_slots)``.

    Attributes
    ----------
    slot0, n_slots : int
        The slot range these detections cover (so an empty range is still a range).
    slot : numpy.ndarray
        ``int64`` slot of each detection, strictly increasing (one entry per slot; a slot where
        several detectors clicked has ``double=1``).
    basis, value : numpy.ndarray
        ``uint8`` measurement basis and measured bit of each detection.
    double : numpy.ndarray
        ``uint8`` 1 where detectors of both outcomes (or both bases) clicked in this slot; the
        sifting stage applies the squashing rule (random bit) to these.
    """

    slot0: int
    n_slots: int
    slot: np.ndarray
    basis: np.ndarray
    value: np.ndarray
    double: np.ndarray

    def __post_init__(self) -> None:
        n = self.slot.shape[0] if self.slot.ndim == 1 else -1
        if self.slot.dtype != np.int64 or n < 0:
            raise ConfigError(f"BobDetections.slot must be 1-D int64, got {self.slot.dtype}")
        for name in ("basis", "value", "double"):
            a = getattr(self, name)
            if a.dtype != np.uint8 or a.shape != (n,):
                raise ConfigError(
                    f"BobDetections.{name} must be uint8 of length {n}, got {a.dtype} {a.shape}"
                )
