"""The pre-shared bootstrap key: read from a file with strict permissions.

File format (version 1): raw binary. Bytes 0..15 are the reusable Wegman–Carter hash key; the
rest seeds the authentication key pool (one-time pads). At least ``16 + MIN_POOL_BYTES`` bytes.

Permission rules (checked before the file is read): a regular file (no symlink), owned by the
current user, not readable or writable by group or others (``mode & 0o077 == 0``).

Consumed marker: the pool is one-time pad material, copied into the party's key store the first
time the link runs. A sidecar file ``<bootstrap>.used`` (JSON: a SHA-256 fingerprint of the pool,
the key store, the time) records that; a key store that does not hold the pool (a new or
replaced store) refuses to take it again when the marker carries the same fingerprint, since its
pads may have been spent. A new bootstrap key (another fingerprint) is taken as usual.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from qkdpp.errors import ConfigError

HASH_KEY_BYTES = 16
MIN_POOL_BYTES = 64


@dataclass
class BootstrapKey:
    """The hash key and initial pool bytes (mutable buffers, call :meth:`wipe` when done)."""

    hash_key: bytearray = field(repr=False)
    pool: bytearray = field(repr=False)

    def wipe(self) -> None:
        """Overwrite both buffers with zeros."""
        self.hash_key[:] = bytes(len(self.hash_key))
        self.pool[:] = bytes(len(self.pool))


def check_permissions(path: str | os.PathLike[str]) -> None:
    """Raise :class:`ConfigError` unless ``path`` is a private regular file of this user."""
    p = Path(path)
    try:
        st = os.lstat(p)
    except OSError as exc:
        raise ConfigError(f"bootstrap key {p}: cannot stat ({exc.strerror})") from exc
    if stat.S_ISLNK(st.st_mode):
        raise ConfigError(f"bootstrap key {p}: is a symbolic link; give the real file")
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"bootstrap key {p}: not a regular file")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise ConfigError(
            f"bootstrap key {p}: owned by uid {st.st_uid}, not by this user (uid {os.getuid()})"
        )
    if st.st_mode & 0o077:
        raise ConfigError(
            f"bootstrap key {p}: permissions {stat.S_IMODE(st.st_mode):04o} let group/others "
            "access it; run chmod 600 on it"
        )


def load_bootstrap(path: str | os.PathLike[str]) -> BootstrapKey:
    """Read a bootstrap key file after :func:`check_permissions`."""
    check_permissions(path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        data = bytearray()
        while chunk := os.read(fd, 1 << 16):
            data += chunk
    finally:
        os.close(fd)
    if len(data) < HASH_KEY_BYTES + MIN_POOL_BYTES:
        n = len(data)
        data[:] = bytes(n)
        raise ConfigError(
            f"bootstrap key {path}: {n} bytes, need at least {HASH_KEY_BYTES + MIN_POOL_BYTES}"
        )
    key = BootstrapKey(bytearray(data[:HASH_KEY_BYTES]), bytearray(data[HASH_KEY_BYTES:]))
    data[:] = bytes(len(data))
    return key


def write_bootstrap(path: str | os.PathLike[str], data: bytes) -> None:
    """Create a bootstrap file with mode 0600 (refuses to overwrite an existing file)."""
    if len(data) < HASH_KEY_BYTES + MIN_POOL_BYTES:
        raise ConfigError(f"bootstrap key needs at least {HASH_KEY_BYTES + MIN_POOL_BYTES} bytes")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def pool_fingerprint(pool: bytes | bytearray) -> str:
    """SHA-256 (hex) of the pool bytes, domain-separated: names a pool without revealing it."""
    return hashlib.sha256(b"qkdpp-bootstrap-pool-v1\x00" + bytes(pool)).hexdigest()


def used_marker_path(path: str | os.PathLike[str]) -> Path:
    """The consumed marker of the bootstrap file ``path``: ``<path>.used``."""
    return Path(f"{os.fspath(path)}.used")


def read_used_marker(path: str | os.PathLike[str]) -> str | None:
    """The pool fingerprint recorded in ``path``'s consumed marker, or None (no marker).

    Raises :class:`ConfigError` for a marker that cannot be read or parsed: it is not silently
    ignored, since that would let a spent pool be loaded again."""
    marker = used_marker_path(path)
    try:
        text = marker.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"bootstrap marker {marker}: cannot read ({exc.strerror})") from exc
    try:
        fp = json.loads(text)["pool_sha256"]
        if not isinstance(fp, str):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise ConfigError(
            f"bootstrap marker {marker} is corrupt: it should say which pool was loaded into a "
            "key store. If the key store that took this bootstrap key still exists, delete the "
            "marker; otherwise install a new bootstrap key at both ends (`qkdpp bootstrap`)"
        ) from None
    return fp


def write_used_marker(path: str | os.PathLike[str], fingerprint: str, keystore: str) -> None:
    """Record (atomically, mode 0600) that the pool ``fingerprint`` of ``path`` is in the key
    store ``keystore``."""
    marker = used_marker_path(path)
    body = {
        "version": 1,
        "pool_sha256": fingerprint,
        "keystore": os.path.abspath(keystore),
        "loaded_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = marker.with_name(f"{marker.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (json.dumps(body, indent=1) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, marker)
