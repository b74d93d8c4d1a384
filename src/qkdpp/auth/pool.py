"""The authentication key pool: shared secret bits that pay for Wegman–Carter one-time pads.

Both parties hold identical pools and withdraw the same number of bits in the same order, so
their pads agree. The pool keeps a **reserve** (low-water mark) that applications never get:
:meth:`AuthKeyPool.split_fresh_key` tops the pool up from each fresh block *before* anything of
that block is released to the key store.

Secrets live in one ``bytearray``; bytes are overwritten with zeros as soon as they are consumed
(:meth:`take`) and when the pool is closed (:meth:`wipe`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from qkdpp.errors import AuthenticationFailed, ConfigError


class AuthKeyPool:
    """FIFO pool of shared secret key bytes.

    Parameters
    ----------
    initial : bytes-like
        Initial secret (e.g. from the bootstrap file, after the hash key).
    low_water_bytes : int
        Reserve kept in the pool: :meth:`split_fresh_key` refills up to ``target_bytes`` whenever
        the pool is below this mark.
    target_bytes : int, optional
        Fill level after a refill (default ``2 * low_water_bytes``).

    Notes
    -----
    Units are bytes (8 key bits); a ``t``-bit pad costs ``ceil(t / 8)`` bytes.
    """

    def __init__(
        self,
        initial: bytes | bytearray = b"",
        *,
        low_water_bytes: int = 1024,
        target_bytes: int | None = None,
    ) -> None:
        if low_water_bytes < 0:
            raise ConfigError(f"low_water_bytes must be >= 0, got {low_water_bytes}")
        target = 2 * low_water_bytes if target_bytes is None else target_bytes
        if target < low_water_bytes:
            raise ConfigError(
                f"target_bytes ({target}) must be >= low_water_bytes ({low_water_bytes})"
            )
        self.low_water_bytes = low_water_bytes
        self.target_bytes = target
        self._buf = bytearray(initial)
        self._pos = 0
        self.consumed_bytes = 0
        self.refilled_bytes = 0

    @property
    def available(self) -> int:
        """Bytes left in the pool."""
        return len(self._buf) - self._pos

    def below_low_water(self) -> bool:
        """True when the pool holds fewer bytes than the reserve."""
        return self.available < self.low_water_bytes

    def take(self, nbytes: int) -> bytes:
        """Withdraw ``nbytes`` (FIFO); consumed bytes are zeroed in the pool.

        Raises
        ------
        AuthenticationFailed
            When the pool cannot pay (both parties then stop authenticating, i.e. abort).
        """
        if nbytes < 0:
            raise ConfigError(f"nbytes must be >= 0, got {nbytes}")
        if nbytes > self.available:
            raise AuthenticationFailed(
                f"authentication key pool exhausted: need {nbytes} bytes, {self.available} left"
            )
        out = bytes(self._buf[self._pos : self._pos + nbytes])
        self._buf[self._pos : self._pos + nbytes] = bytes(nbytes)
        self._pos += nbytes
        self.consumed_bytes += nbytes
        if self._pos > 4096 and self._pos * 2 > len(self._buf):
            self._compact()
        return out

    def refill(self, key: bytes | bytearray | np.ndarray) -> None:
        """Append fresh shared key bytes to the pool."""
        data = bytes(np.asarray(key, dtype=np.uint8)) if isinstance(key, np.ndarray) else key
        self._buf += data
        self.refilled_bytes += len(data)

    def split_fresh_key(self, key: np.ndarray, n_bits: int) -> tuple[np.ndarray, int]:
        """Top the pool up from a fresh (authenticated, committed) key; return the rest.

        Parameters
        ----------
        key : ndarray of uint8
            Packed fresh key, MSB first.
        n_bits : int
            Its length in bits.

        Returns
        -------
        (rest, rest_bits)
            The packed remainder for applications and its length in bits. Whole bytes are taken
            for the pool from the *front* of the key, only when below the low-water mark.
        """
        need = 0
        if self.below_low_water():
            need = min(self.target_bytes - self.available, n_bits // 8)
        if need:
            self.refill(key[:need])
        rest_bits = n_bits - 8 * need
        rest = np.ascontiguousarray(key[need : (n_bits + 7) // 8])
        return rest, rest_bits

    def _compact(self) -> None:
        tail = self._buf[self._pos :]
        self._buf[: self._pos] = bytes(self._pos)
        self._buf = bytearray(tail)
        self._pos = 0

    def save(self, path: str | os.PathLike[str]) -> None:
        """Persist the unconsumed pool atomically (mode 0600, fsync, rename).

        A restarted node must continue from here: reloading an older pool would reuse pads.
        """
        p = Path(path)
        tmp = p.with_name(p.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, bytes(self._buf[self._pos :]))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, p)
        dfd = os.open(p.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    @classmethod
    def load(cls, path: str | os.PathLike[str], **kwargs: int) -> AuthKeyPool:
        """Load a pool saved by :meth:`save` (same permission checks as the bootstrap key)."""
        from qkdpp.auth.bootstrap import check_permissions

        check_permissions(path)
        with open(path, "rb") as f:
            data = bytearray(f.read())
        pool = cls(data, **kwargs)
        data[:] = bytes(len(data))
        return pool

    def wipe(self) -> None:
        """Overwrite every secret byte with zeros and empty the pool."""
        self._buf[:] = bytes(len(self._buf))
        self._buf = bytearray()
        self._pos = 0

    def __repr__(self) -> str:  # never show key material
        return (
            f"AuthKeyPool(available={self.available} B, low_water={self.low_water_bytes} B, "
            f"consumed={self.consumed_bytes} B)"
        )
