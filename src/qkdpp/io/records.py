"""The two record types that connect the raw-event layer to sifting.

Conventions (project-wide)
--------------------------
* Slots are numbered by Alice's clock from 0 at the start of the session (``int64``).
* Basis: ``0`` = Z (rectilinear, the key basis in decoy BB84), ``1`` = X (diagonal, the test basis).
* Bit values are 0/1. Intensity class: ``0`` = signal μ1, ``1`` = decoy μ2, ``2`` = vacuum/weak μ3
  (Lim et al. 2014 notation); BBM92 uses class 0 only. Classes are ``0..3`` (:data:`MAX_CLASSES`).
* Packed bit-planes follow the project bit order (MSB-first, :mod:`qkdpp.kernels.bits`).
* The intensity plane packs 2 bits per slot, 4 slots per byte, MSB-first like the bit-planes:
  the class of slot offset ``s`` is bits ``7 - 2 (s % 4)`` (high) and ``6 - 2 (s % 4)`` (low) of
  byte ``s // 4``, i.e. ``(plane[s >> 2] >> (6 - 2 (s & 3))) & 3``; ``ceil(n_slots / 4)`` bytes,
  pad bits after slot ``n_slots`` zero. (The bytes ``np.packbits`` makes of the bit pairs
  ``(c >> 1, c & 1)``; the same code as the sifting reply and the timing pilot.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qkdpp.errors import ConfigError

MAX_CLASSES = 4
"""Intensity classes an :class:`AliceRecord` can hold (``0..3``: 2 bits per slot)."""


def pack_classes2(classes: np.ndarray) -> np.ndarray:
    """Intensity classes (``uint8`` per slot, each ``< 4``) → the 2-bit plane of the module
    docstring (``ceil(n / 4)`` bytes, pad bits zero, no temporary of the input's size); a class
    ``>= 4`` raises :class:`ConfigError` naming the limit. NumPy oracle:
    :func:`qkdpp.kernels.sifting._ref.pack_classes2`."""
    from qkdpp.kernels import sifting as ks

    try:
        return ks.pack_classes2(np.asarray(classes, dtype=np.uint8).reshape(-1))
    except ValueError as exc:
        raise ConfigError(
            f"{exc}: an AliceRecord holds intensity classes 0..{MAX_CLASSES - 1} (2 bits per slot)"
        ) from None


def unpack_classes2(plane: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Classes of slot offsets ``[start, stop)`` of a 2-bit plane (``uint8`` per slot)."""
    from qkdpp.kernels import sifting as ks

    plane = np.asarray(plane, dtype=np.uint8)
    b0, b1 = start // 4, (stop + 3) // 4
    if start < 0 or stop < start or b1 > plane.size:
        raise ConfigError(f"slots [{start}, {stop}) outside a plane of {plane.size} bytes")
    return ks.decode_classes2(plane[b0:b1], stop - 4 * b0)[start - 4 * b0 :]


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
    intensity_p : numpy.ndarray
        Intensity class of every slot as the 2-bit plane of the module docstring (``uint8``,
        ``ceil(n_slots / 4)`` bytes; classes ``0..3``). Build a record from one class byte per
        slot with :meth:`from_classes`; read classes back with :meth:`classes`.

    Memory: ``n_slots / 8 + n_slots / 8 + n_slots / 4`` bytes (0.5 byte per slot).
    """

    slot0: int
    n_slots: int
    basis: np.ndarray
    value: np.ndarray
    intensity_p: np.ndarray

    def __post_init__(self) -> None:
        nbytes = (self.n_slots + 7) // 8
        for name in ("basis", "value"):
            a = getattr(self, name)
            if a.dtype != np.uint8 or a.ndim != 1 or a.size != nbytes:
                raise ConfigError(
                    f"AliceRecord.{name} must be packed uint8 of {nbytes} bytes, "
                    f"got {a.dtype} shape {a.shape}"
                )
        a = self.intensity_p
        nq = (self.n_slots + 3) // 4
        if a.dtype != np.uint8 or a.ndim != 1 or a.size != nq:
            raise ConfigError(
                f"AliceRecord.intensity_p must be the 2-bit class plane, uint8 of {nq} bytes "
                f"for {self.n_slots} slots, got {a.dtype} shape {a.shape}"
            )

    @classmethod
    def from_classes(
        cls, slot0: int, n_slots: int, basis: np.ndarray, value: np.ndarray, classes: np.ndarray
    ) -> AliceRecord:
        """A record from one ``uint8`` class per slot (packed here; a class ``>= 4`` raises
        :class:`ConfigError`)."""
        c = np.asarray(classes)
        if c.shape != (n_slots,):
            raise ConfigError(f"{c.shape} intensity classes for {n_slots} slots")
        return cls(slot0, n_slots, basis, value, pack_classes2(c))

    def classes(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Intensity classes of slot offsets ``[start, stop)`` (default all), ``uint8`` per slot
        (a new array of ``stop - start`` bytes: for tests and summaries, not the hot path)."""
        stop = self.n_slots if stop is None else stop
        if not 0 <= start <= stop <= self.n_slots:
            raise ConfigError(f"slots [{start}, {stop}) outside the record's {self.n_slots}")
        return unpack_classes2(self.intensity_p, start, stop)


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
