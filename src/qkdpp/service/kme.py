"""Key management entity (KME) logic behind the ETSI GS QKD 014 API.

The key store (:mod:`qkdpp.keystore`) holds *blocks*: the committed output of privacy
amplification, identical at both nodes under the same block id (two-phase commit). ETSI 014
serves *keys* of ``size`` bits (a multiple of 8) with UUID ``key_ID``s. This module slices blocks
into keys so that both nodes resolve a ``key_ID`` to the same bits, and enforces who may get them.

Slicing and issuing (master side, an ``enc_keys`` call)
-------------------------------------------------------
* The two nodes issue from disjoint halves of the block-id space: a node with ``issuer_half = h``
  only imports committed, peer-acknowledged blocks whose UUID's top bit is ``h``. So two master
  calls on the two nodes can never slice the same block.
* A block is *imported* into this module's own SQLite file (``kme_blocks`` / ``kme_chunks``, key
  bytes in 1 KiB chunks) with :meth:`KeyStore.take` — the key store marks it delivered and wipes
  its copy. A crash between the two transactions loses the block (never duplicates it).
* An ETSI key is the byte range ``[off, off + size/8)`` of one block (keys never straddle blocks).
  The issuer allocates ranges in increasing order (``kme_blocks.next_off``), reads the bytes, zeroes
  them in the chunk rows and records the key (``kme_keys`` state ``delivered``) plus an audit row
  **in one fsynced transaction before the response is built**. A crash after that commit loses the
  keys (the SAE never saw them); it can never serve the range again.
* Then the peer KME is told ``{key_ID, block_id, off, n_bits, master_SAE_ID, slave_SAE_ID}``
  (:class:`PeerNotifier`; never key bits). If the peer refuses or cannot be reached, the keys are
  voided here and the SAE gets 503. Only after the peer durably recorded them does the SAE get its
  keys, so a ``dec_keys`` call that follows the response always finds them.

Receiving (slave side)
----------------------
:meth:`KeyManager.accept_issued` checks the notification (the block lies in the *peer's* half,
ranges inside the block and not overlapping any range it has seen, SAE IDs registered on the right
sides, fresh key_IDs), imports the block from its own key store on first use and records the keys as
``issued`` to exactly one (master SAE, slave SAE) pair. ``dec_keys`` succeeds only for the slave SAE
named there, with the master SAE named there, once: the bytes are read, zeroed and the key marked
``delivered`` in one fsynced transaction before the response.

Durability and throughput: every state change goes through one writer thread per node that groups
concurrent requests into a single SQLite transaction (group commit; each request in its own
SAVEPOINT), so many clients share one ``fsync``. Results are released only after ``COMMIT``.

Limits: per-SAE token buckets for requests/s and key bits/s (HTTP 429 when exceeded), the spec's
``max_key_per_request`` and key-size limits (400), 503 when the available key does not cover the
request. The authentication key pool is separate storage and never reachable from here.
"""

from __future__ import annotations

import itertools
import logging
import math
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from qkdpp.errors import ConfigError, KeyStoreError, QkdppError, UnknownKey
from qkdpp.keystore.sqlite import KeyStore

__all__ = [
    "CHUNK_BYTES",
    "ApiError",
    "InProcessPeer",
    "IssuedKey",
    "KeyManager",
    "KmeConfig",
    "PeerNotifier",
    "TokenBucket",
    "purge_kme_file",
]

log = logging.getLogger("qkdpp.kme")
audit_log = logging.getLogger("qkdpp.audit")

CHUNK_BYTES = 1024
"""Key bytes per ``kme_chunks`` row: zeroing a delivered key rewrites at most a few KiB."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kme_blocks (
    block_id  TEXT PRIMARY KEY,
    n_bytes   INTEGER NOT NULL CHECK (n_bytes > 0),
    issuer    TEXT NOT NULL,
    next_off  INTEGER NOT NULL DEFAULT 0,
    consumed  INTEGER NOT NULL DEFAULT 0,
    imported  REAL NOT NULL,
    dropped   INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS kme_chunks (
    block_id TEXT NOT NULL,
    idx      INTEGER NOT NULL,
    data     BLOB NOT NULL,
    PRIMARY KEY (block_id, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kme_keys (
    key_id     TEXT PRIMARY KEY,
    block_id   TEXT NOT NULL,
    off        INTEGER NOT NULL CHECK (off >= 0),
    n_bits     INTEGER NOT NULL CHECK (n_bits > 0 AND n_bits % 8 = 0),
    master_sae TEXT NOT NULL,
    slave_sae  TEXT NOT NULL,
    side       TEXT NOT NULL CHECK (side IN ('enc','dec')),
    state      TEXT NOT NULL CHECK (state IN ('issued','delivered','void','expired')),
    created    REAL NOT NULL,
    updated    REAL NOT NULL,
    UNIQUE (block_id, off)
);
CREATE INDEX IF NOT EXISTS kme_keys_state ON kme_keys (state, created);
CREATE TABLE IF NOT EXISTS kme_audit (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    time     REAL NOT NULL,
    event    TEXT NOT NULL,
    key_id   TEXT NOT NULL,
    sae      TEXT NOT NULL,
    peer_sae TEXT NOT NULL,
    n_bits   INTEGER NOT NULL
);
"""


class ApiError(QkdppError):
    """An error answered to the client: HTTP ``status`` and the spec's ``{message, details}``."""

    def __init__(self, status: int, message: str, details: list[dict[str, Any]] | None = None):
        self.status = int(status)
        self.message = message
        self.details = details or []
        super().__init__(f"{status} {message}")

    def body(self) -> dict[str, Any]:
        """The JSON error body of ETSI GS QKD 014 (``message`` plus optional ``details``)."""
        out: dict[str, Any] = {"message": self.message}
        if self.details:
            out["details"] = self.details
        return out


@dataclass(frozen=True)
class KmeConfig:
    """Configuration of one KME.

    Parameters
    ----------
    kme_id, peer_kme_id : str
        This KME's ID and the peer's (the peer's client certificate CN for notifications).
    local_saes : iterable of str
        SAE IDs attached to this KME (client certificate CNs allowed to call it).
    remote_saes : iterable of str
        SAE IDs attached to the peer KME (valid ``slave_SAE_ID`` / ``master_SAE_ID`` in paths).
    issuer_half : int
        0 or 1: top bit of the block UUIDs this node slices for its own ``enc_keys`` calls. The
        two nodes must be configured with different halves.
    monitors : iterable of str
        Extra certificate CNs allowed to read ``/health`` and ``/metrics`` (besides the local
        SAEs and the peer KME), e.g. a Prometheus scraper's client certificate.
    issue_mode : str
        ``"half"`` (default: both nodes issue, each from its half), ``"all"`` (this node issues
        from every block; its peer must be ``"none"``) or ``"none"`` (this node never issues: its
        SAEs are only slaves). For one-directional links ``all``/``none`` wastes no key.
    key_size, min_key_size, max_key_size : int
        Default, minimum and maximum ETSI key size in bits (multiples of 8).
    max_key_per_request : int
        Largest ``number`` accepted in one ``enc_keys`` call (and key_IDs in one ``dec_keys``).
    max_key_count : int
        Reported in status; ``stored_key_count`` is capped at it.
    pool_ttl : float
        Seconds an imported block (and a notified but unretrieved key) stays usable; then its
        remaining bytes are dropped on both nodes.
    rate_per_s, rate_burst : float
        Per-SAE request token bucket (HTTP 429 when empty). ``rate_per_s <= 0`` disables it.
    quota_bits_per_s, quota_burst_bits : float
        Per-SAE key-bit token bucket for ``enc_keys`` (429 when the request exceeds it).
    synchronous : str
        SQLite ``synchronous`` mode of the KME file: ``"FULL"`` (default: every commit fsynced)
        or ``"NORMAL"`` (WAL: survives a process crash, may lose the last commits on power loss).
    group_commit_max : int
        Most concurrent requests committed in one transaction (1 = one fsync per request).
    """

    kme_id: str
    peer_kme_id: str
    local_saes: frozenset[str]
    remote_saes: frozenset[str]
    issuer_half: int
    issue_mode: str = "half"
    monitors: frozenset[str] = frozenset()
    key_size: int = 256
    min_key_size: int = 64
    max_key_size: int = 8192
    max_key_per_request: int = 128
    max_key_count: int = 1_000_000
    pool_ttl: float = 3600.0
    rate_per_s: float = 500.0
    rate_burst: float = 1000.0
    quota_bits_per_s: float = 4_000_000.0
    quota_burst_bits: float = 8_000_000.0
    synchronous: str = "FULL"
    group_commit_max: int = 64

    def __post_init__(self) -> None:
        for name in ("local_saes", "remote_saes", "monitors"):
            object.__setattr__(self, name, _names(name, getattr(self, name)))
        for name in ("kme_id", "peer_kme_id", "issue_mode", "synchronous"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be a string, got {getattr(self, name)!r}")
        for name in (
            "issuer_half",
            "key_size",
            "min_key_size",
            "max_key_size",
            "max_key_per_request",
            "max_key_count",
            "group_commit_max",
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"{name} must be an integer, got {v!r}")
        reals = ("pool_ttl", "rate_per_s", "rate_burst", "quota_bits_per_s", "quota_burst_bits")
        for name in reals:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"{name} must be a finite number, got {v!r}")
        if not self.local_saes:
            raise ConfigError("local_saes must name at least one SAE")
        if self.max_key_count < 1:
            raise ConfigError(f"max_key_count must be >= 1, got {self.max_key_count}")
        if self.issuer_half not in (0, 1):
            raise ConfigError(f"issuer_half must be 0 or 1, got {self.issuer_half!r}")
        if self.issue_mode not in ("half", "all", "none"):
            raise ConfigError(f"issue_mode must be half, all or none, got {self.issue_mode!r}")
        if not self.kme_id or not self.peer_kme_id or self.kme_id == self.peer_kme_id:
            raise ConfigError("kme_id and peer_kme_id must be non-empty and different")
        if self.local_saes & self.remote_saes:
            raise ConfigError(
                f"SAE IDs on both nodes: {sorted(self.local_saes & self.remote_saes)}"
            )
        for name in ("key_size", "min_key_size", "max_key_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0 or v % 8:
                raise ConfigError(f"{name} must be a positive multiple of 8 bits, got {v!r}")
        if not self.min_key_size <= self.key_size <= self.max_key_size:
            raise ConfigError("need min_key_size <= key_size <= max_key_size")
        if self.max_key_per_request < 1:
            raise ConfigError(f"max_key_per_request must be >= 1, got {self.max_key_per_request}")
        if self.pool_ttl <= 0:
            raise ConfigError(f"pool_ttl must be > 0 seconds, got {self.pool_ttl}")
        if self.group_commit_max < 1:
            raise ConfigError(f"group_commit_max must be >= 1, got {self.group_commit_max}")
        if self.synchronous not in ("FULL", "NORMAL"):
            raise ConfigError(f"synchronous must be FULL or NORMAL, got {self.synchronous!r}")

    def issues_from(self, block_id: str) -> bool:
        """Whether this node may slice ``block_id`` for its own ``enc_keys`` calls."""
        if self.issue_mode == "half":
            return block_half(block_id) == self.issuer_half
        return self.issue_mode == "all"

    def peer_issues_from(self, block_id: str) -> bool:
        """Whether the peer may slice ``block_id`` (as this node's configuration sees it)."""
        if self.issue_mode == "half":
            return block_half(block_id) != self.issuer_half
        return self.issue_mode == "none"

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> KmeConfig:
        """Build from a JSON/TOML mapping (unknown keys are refused)."""
        known = set(cls.__dataclass_fields__)
        extra = set(cfg) - known
        if extra:
            raise ConfigError(f"unknown KME config keys {sorted(extra)}; known: {sorted(known)}")
        required = [
            k for k, f in cls.__dataclass_fields__.items() if f.default is MISSING and k not in cfg
        ]
        if required:
            raise ConfigError(f"the KME config lacks {required}")
        return cls(**cfg)


def _names(field: str, value: Any) -> frozenset[str]:
    """A set of certificate CNs: a list of non-empty strings. A lone string is refused: it
    would be taken letter by letter, each letter a CN allowed to call the KME."""
    if not isinstance(value, (list, tuple, set, frozenset)):
        raise ConfigError(f"{field} must be a list of names, got {value!r}")
    names = list(value)
    bad = [v for v in names if not isinstance(v, str) or not v]
    if bad:
        raise ConfigError(f"{field} must hold non-empty strings, got {bad[:3]!r}")
    return frozenset(names)


@dataclass(frozen=True)
class IssuedKey:
    """Metadata of one issued key as sent to the peer KME (no key bits)."""

    key_id: str
    block_id: str
    off: int
    n_bits: int
    master_sae: str
    slave_sae: str

    def to_json(self) -> dict[str, Any]:
        return {
            "key_ID": self.key_id,
            "block_ID": self.block_id,
            "offset": self.off,
            "size": self.n_bits,
            "master_SAE_ID": self.master_sae,
            "slave_SAE_ID": self.slave_sae,
        }

    @classmethod
    def from_json(cls, obj: object) -> IssuedKey:
        if not isinstance(obj, dict):
            raise ApiError(400, "issued key entry must be an object")
        try:
            kid = _uuid(obj["key_ID"], "key_ID")
            bid = _uuid(obj["block_ID"], "block_ID")
            off, size = obj["offset"], obj["size"]
            master, slave = obj["master_SAE_ID"], obj["slave_SAE_ID"]
        except KeyError as exc:
            raise ApiError(400, f"issued key entry lacks {exc.args[0]}") from None
        if any(not isinstance(v, int) or isinstance(v, bool) for v in (off, size)):
            raise ApiError(400, "offset and size must be integers")
        if not (isinstance(master, str) and isinstance(slave, str)):
            raise ApiError(400, "SAE IDs must be strings")
        return cls(kid, bid, off, size, master, slave)


class PeerNotifier(Protocol):
    """How a KME tells the peer KME which keys it issued (metadata only).

    ``notify_issued`` returns once the peer recorded them durably and raises
    :class:`ApiError` (or any :class:`QkdppError`) if the peer refused or was unreachable.
    """

    def notify_issued(self, keys: list[IssuedKey]) -> None: ...


class InProcessPeer:
    """A :class:`PeerNotifier` that calls the peer :class:`KeyManager` directly (tests, demos)."""

    def __init__(self, source_kme_id: str, target: KeyManager | None = None) -> None:
        self.source_kme_id = source_kme_id
        self.target = target

    def notify_issued(self, keys: list[IssuedKey]) -> None:
        if self.target is None:
            raise ApiError(503, "peer KME not connected")
        self.target.accept_issued(keys, source_kme_id=self.source_kme_id)


class TokenBucket:
    """Token bucket (``rate`` tokens/s, capacity ``burst``); thread-safe."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic):
        self.rate = float(rate)
        self.burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._last = clock()
        self._lock = threading.Lock()

    def take(self, amount: float = 1.0) -> bool:
        """Remove ``amount`` tokens if available; False (nothing removed) otherwise."""
        if self.rate <= 0:
            return True
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if amount > self._tokens:
                return False
            self._tokens -= amount
            return True


def _uuid(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ApiError(400, f"{what} must be a UUID string", [{"value": repr(value)[:80]}])
    try:
        u = uuid.UUID(value)
    except ValueError:
        raise ApiError(400, f"{what} is not a valid UUID", [{"value": value[:80]}]) from None
    if str(u) != value.lower():  # refuse braces / urn: / missing hyphens: canonical form only
        raise ApiError(400, f"{what} is not a canonical UUID", [{"value": value[:80]}])
    return str(u)


def block_half(block_id: str) -> int:
    """Top bit of a block UUID (0 or 1): which node may issue keys from that block."""
    return uuid.UUID(block_id).int >> 127


# -- group commit ---------------------------------------------------------------------------


class _Item:
    __slots__ = ("done", "error", "fn", "result")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


def _CHECKPOINT(db: sqlite3.Connection) -> None:  # noqa: N802 - sentinel work item
    """Marker work item: checkpoint the WAL outside any transaction."""


class _GroupCommitter:
    """One writer thread owning the SQLite connection; batches concurrent work items into one
    transaction (each in its own SAVEPOINT). ``run`` returns only after the batch's COMMIT."""

    def __init__(self, path: Path, synchronous: str, max_batch: int = 64) -> None:
        self._db = sqlite3.connect(
            str(path), isolation_level=None, timeout=30.0, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.executescript(_SCHEMA)
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._max_batch = max_batch
        self._closed = False
        self.batches = 0
        self.items = 0
        self._thread = threading.Thread(target=self._loop, name="kme-writer", daemon=True)
        self._thread.start()

    def run(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        if self._closed:
            raise KeyStoreError("KME database is closed")
        item = _Item(fn)
        self._queue.put(item)
        item.done.wait()
        if item.error is not None:
            raise item.error
        return item.result

    def _checkpoint_now(self, item: _Item) -> None:
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            item.error = KeyStoreError(f"WAL checkpoint failed: {exc}")
        item.done.set()

    def _loop(self) -> None:
        db = self._db
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            if first.fn is _CHECKPOINT:
                self._checkpoint_now(first)
                continue
            batch = [first]
            deferred: list[_Item] = []
            while len(batch) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                if nxt.fn is _CHECKPOINT:
                    deferred.append(nxt)  # runs after this batch's COMMIT
                    break
                batch.append(nxt)
            try:
                db.execute("BEGIN IMMEDIATE")
                for item in batch:
                    db.execute("SAVEPOINT item")
                    try:
                        item.result = item.fn(db)
                    except BaseException as exc:
                        item.error = exc
                        db.execute("ROLLBACK TO item")
                    db.execute("RELEASE item")
                db.execute("COMMIT")
            except BaseException as exc:  # commit failed: nothing of the batch is durable
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                for item in batch:
                    item.error = KeyStoreError(f"KME database commit failed: {exc}")
                    item.result = None
            self.batches += 1
            self.items += len(batch)
            for item in batch:
                item.done.set()
            for item in deferred:
                self._checkpoint_now(item)
        db.close()

    def checkpoint(self) -> None:
        """``wal_checkpoint(TRUNCATE)`` from the writer thread, between transactions."""
        item = _Item(lambda db: None)
        item.fn = _CHECKPOINT
        self._queue.put(item)
        item.done.wait()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join(timeout=30)


# -- chunked key bytes ----------------------------------------------------------------------


def _insert_block(db: sqlite3.Connection, block_id: str, key: bytearray, issuer: str, now: float):
    n = len(key)
    db.execute(
        "INSERT INTO kme_blocks (block_id, n_bytes, issuer, imported) VALUES (?,?,?,?)",
        (block_id, n, issuer, now),
    )
    db.executemany(
        "INSERT INTO kme_chunks (block_id, idx, data) VALUES (?,?,?)",
        (
            (block_id, i, bytes(key[i * CHUNK_BYTES : (i + 1) * CHUNK_BYTES]))
            for i in range((n + CHUNK_BYTES - 1) // CHUNK_BYTES)
        ),
    )
    key[:] = bytes(n)  # wipe the caller's copy


def _read_wipe(db: sqlite3.Connection, block_id: str, off: int, n: int) -> bytearray:
    """Read bytes ``[off, off+n)`` of a block and overwrite them with zeros in the chunk rows."""
    out = bytearray()
    first, last = off // CHUNK_BYTES, (off + n - 1) // CHUNK_BYTES
    rows = db.execute(
        "SELECT idx, data FROM kme_chunks WHERE block_id=? AND idx BETWEEN ? AND ? ORDER BY idx",
        (block_id, first, last),
    ).fetchall()
    if [r[0] for r in rows] != list(range(first, last + 1)):
        raise KeyStoreError(f"key bytes of block {block_id} at {off}+{n} are missing")
    for idx, data in rows:
        buf = bytearray(data)
        lo = max(off, idx * CHUNK_BYTES) - idx * CHUNK_BYTES
        hi = min(off + n, (idx + 1) * CHUNK_BYTES) - idx * CHUNK_BYTES
        out += buf[lo:hi]
        buf[lo:hi] = bytes(hi - lo)
        db.execute(
            "UPDATE kme_chunks SET data=? WHERE block_id=? AND idx=?", (bytes(buf), block_id, idx)
        )
        buf[:] = bytes(len(buf))
    return out


def _drop_block(db: sqlite3.Connection, block_id: str) -> None:
    db.execute("DELETE FROM kme_chunks WHERE block_id=?", (block_id,))
    db.execute("UPDATE kme_blocks SET dropped=1 WHERE block_id=?", (block_id,))


def _expire_blocks(db: sqlite3.Connection, now: float, ttl: float) -> int:
    old = [
        r[0]
        for r in db.execute(
            "SELECT block_id FROM kme_blocks WHERE dropped=0 AND imported <= ?", (now - ttl,)
        ).fetchall()
    ]
    for bid in old:
        rows = db.execute(
            "UPDATE kme_keys SET state='expired', updated=? WHERE block_id=? AND "
            "state='issued' RETURNING key_id, slave_sae, master_sae, n_bits",
            (now, bid),
        ).fetchall()
        for kid, slave, master, n in rows:
            _audit(db, now, "expired", kid, slave, master, n)
        _drop_block(db, bid)
    return len(old)


def purge_kme_file(path: str | Path, max_age_s: float, *, now: float | None = None) -> int:
    """Drop every block of a KME database older than ``max_age_s`` seconds (works while a
    server runs: SQLite locking), checkpoint the WAL; returns the number of blocks dropped."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"KME database {p} does not exist")
    if max_age_s < 0:
        raise ConfigError(f"max_age_s must be >= 0, got {max_age_s}")
    db = sqlite3.connect(str(p), isolation_level=None, timeout=30.0)
    try:
        db.execute("PRAGMA secure_delete=ON")
        db.execute("BEGIN IMMEDIATE")
        try:
            n = _expire_blocks(db, time.time() if now is None else now, max_age_s)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    return n


def _audit(
    db: sqlite3.Connection, now: float, event: str, key_id: str, sae: str, peer: str, n: int
) -> None:
    db.execute(
        "INSERT INTO kme_audit (time, event, key_id, sae, peer_sae, n_bits) VALUES (?,?,?,?,?,?)",
        (now, event, key_id, sae, peer, n),
    )


@dataclass
class _Counters:
    requests: dict[tuple[str, int], int] = field(default_factory=dict)
    keys_delivered: dict[str, int] = field(default_factory=dict)
    bits_delivered: dict[str, int] = field(default_factory=dict)
    wasted_bits: int = 0
    blocks_imported: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, table: dict[Any, int], key: Any, n: int = 1) -> None:
        with self.lock:
            table[key] = table.get(key, 0) + n


class KeyManager:
    """One node's KME: slices key-store blocks into ETSI keys and enforces the SAE rules.

    Parameters
    ----------
    config : KmeConfig
    store : KeyStore
        This node's key store (blocks committed with the peer by two-phase commit).
    db_path : path
        This module's own SQLite file (key chunks, issued keys, audit log). Default: beside the
        key store, ``<store>.kme.sqlite``.
    peer : PeerNotifier, optional
        Link to the peer KME; set later with :meth:`connect`.
    clock : callable
        Wall clock (seconds) for TTLs and the audit log.
    crash_hook : callable, optional
        Fault injection for tests: called with a point name (``"after_commit"``,
        ``"after_notify"``, ``"dec_after_commit"``); may kill the process.
    """

    def __init__(
        self,
        config: KmeConfig,
        store: KeyStore,
        db_path: str | Path | None = None,
        *,
        peer: PeerNotifier | None = None,
        clock: Callable[[], float] = time.time,
        crash_hook: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.db_path = Path(db_path) if db_path else store.path.with_suffix(".kme.sqlite")
        self.peer = peer
        self._clock = clock
        self._crash = crash_hook or (lambda point: None)
        self._db = _GroupCommitter(self.db_path, config.synchronous, config.group_commit_max)
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._buckets_lock = threading.Lock()
        self.counters = _Counters()
        self._status_cache: tuple[float, int] = (-1.0, 0)

    def connect(self, peer: PeerNotifier) -> None:
        """Set the link to the peer KME."""
        self.peer = peer

    def close(self) -> None:
        """Stop the writer thread and close the KME database (the key store stays open)."""
        self._db.close()

    # -- identities and limits ---------------------------------------------------------------
    def check_local_sae(self, sae: str | None) -> str:
        """The caller must be an SAE attached to this KME (401 otherwise)."""
        if sae is None or sae not in self.config.local_saes:
            raise ApiError(401, "unauthorized: unknown SAE", [{"SAE_ID": str(sae)[:80]}])
        return sae

    def check_monitor(self, identity: str | None) -> None:
        """``/health`` and ``/metrics``: local SAEs, the peer KME and ``monitors`` (401 else)."""
        c = self.config
        if identity is None or not (
            identity in c.local_saes or identity in c.monitors or identity == c.peer_kme_id
        ):
            raise ApiError(401, "unauthorized: not allowed to read node status")

    def check_remote_sae(self, sae: str, what: str) -> str:
        """A path SAE ID must be attached to the peer KME (401 otherwise)."""
        if sae not in self.config.remote_saes:
            raise ApiError(
                401, f"unauthorized: {what} is not an SAE of the peer KME", [{what: sae[:80]}]
            )
        return sae

    def _bucket(self, sae: str, kind: str) -> TokenBucket:
        with self._buckets_lock:
            b = self._buckets.get((sae, kind))
            if b is None:
                c = self.config
                rate, burst = (
                    (c.rate_per_s, c.rate_burst)
                    if kind == "req"
                    else (c.quota_bits_per_s, c.quota_burst_bits)
                )
                b = self._buckets[(sae, kind)] = TokenBucket(rate, burst)
            return b

    def admit(self, sae: str) -> None:
        """Per-SAE request rate limit (429 when exceeded)."""
        if not self._bucket(sae, "req").take(1.0):
            raise ApiError(
                429, "too many requests", [{"SAE_ID": sae, "limit_per_s": self.config.rate_per_s}]
            )

    # -- validation ----------------------------------------------------------------------------
    def parse_enc_request(self, number: object, size: object) -> tuple[int, int]:
        """Validate ``number`` and ``size`` (None = defaults); 400 with details otherwise."""
        c = self.config
        n = 1 if number is None else number
        s = c.key_size if size is None else size
        if not isinstance(n, int) or isinstance(n, bool):
            raise ApiError(400, "number must be an integer", [{"number": repr(number)[:40]}])
        if not isinstance(s, int) or isinstance(s, bool):
            raise ApiError(400, "size must be an integer", [{"size": repr(size)[:40]}])
        if n < 1 or n > c.max_key_per_request:
            raise ApiError(
                400,
                "requested number of keys out of range",
                [{"number": n, "max_key_per_request": c.max_key_per_request}],
            )
        if s % 8:
            raise ApiError(400, "size shall be a multiple of 8", [{"size": s}])
        if s < c.min_key_size or s > c.max_key_size:
            raise ApiError(
                400,
                "requested key size out of range",
                [{"size": s, "min_key_size": c.min_key_size, "max_key_size": c.max_key_size}],
            )
        return n, s

    def parse_key_ids(self, key_ids: object) -> list[str]:
        """Validate a ``key_IDs`` list of ``{"key_ID": uuid}`` objects (400 otherwise)."""
        if not isinstance(key_ids, list) or not key_ids:
            raise ApiError(400, 'key_IDs must be a non-empty list of {"key_ID": UUID}')
        if len(key_ids) > self.config.max_key_per_request:
            raise ApiError(
                400,
                "too many key_IDs in one request",
                [{"count": len(key_ids), "max_key_per_request": self.config.max_key_per_request}],
            )
        out: list[str] = []
        for entry in key_ids:
            if not isinstance(entry, dict) or "key_ID" not in entry:
                raise ApiError(400, "each key_IDs entry must be an object with key_ID")
            out.append(_uuid(entry["key_ID"], "key_ID"))
        dups = sorted({k for k in out if out.count(k) > 1})
        if dups:
            raise ApiError(400, "duplicate key_ID in request", [{"key_ID": k} for k in dups])
        return out

    # -- availability ----------------------------------------------------------------------------
    def available_bits(self) -> int:
        """Key bits this node can still issue: its pool plus committed blocks in its half."""
        now = self._clock()
        pool = self._db.run(
            lambda db: db.execute(
                "SELECT COALESCE(SUM(n_bytes - next_off), 0) FROM kme_blocks "
                "WHERE issuer=? AND dropped=0",
                (self.config.kme_id,),
            ).fetchone()[0]
        )
        stored = sum(
            r.n_bits // 8 * 8
            for r in self.store.records("committed")
            if r.peer_ack and r.expires > now and self.config.issues_from(r.key_id)
        )
        return int(pool) * 8 + stored

    def status(self, master_sae: str, slave_sae: str) -> dict[str, Any]:
        """The ETSI 014 status object for (master SAE = caller, slave SAE)."""
        c = self.config
        now = time.monotonic()
        t, bits = self._status_cache
        if now - t > 1.0:
            bits = self.available_bits()
            self._status_cache = (now, bits)
        return {
            "source_KME_ID": c.kme_id,
            "target_KME_ID": c.peer_kme_id,
            "master_SAE_ID": master_sae,
            "slave_SAE_ID": slave_sae,
            "key_size": c.key_size,
            "stored_key_count": min(c.max_key_count, bits // c.key_size),
            "max_key_count": c.max_key_count,
            "max_key_per_request": c.max_key_per_request,
            "max_key_size": c.max_key_size,
            "min_key_size": c.min_key_size,
            "max_SAE_ID_count": 0,
        }

    # -- master side -----------------------------------------------------------------------------
    def _import_next_block(self, db: sqlite3.Connection, exclude: set[str]) -> str | None:
        """Move the oldest deliverable block of this node's half into the pool; its id or None."""
        now = self._clock()
        for rec in self.store.records("committed"):
            if (
                not rec.peer_ack
                or rec.expires <= now
                or rec.key_id in exclude
                or not self.config.issues_from(rec.key_id)
                or rec.n_bits < self.config.min_key_size
            ):
                continue
            try:
                taken = self.store.take(key_id=rec.key_id)
            except KeyStoreError:
                continue  # expired or taken meanwhile
            for kid, key, n_bits in taken:
                usable = n_bits // 8  # whole bytes only (ETSI sizes are multiples of 8)
                del key[usable:]
                _insert_block(db, kid, key, self.config.kme_id, now)
                self.counters.blocks_imported += 1
                self.counters.wasted_bits += n_bits - usable * 8
            if taken:
                return rec.key_id
        return None

    def enc_keys(
        self, master_sae: str, slave_sae: str, number: int, size: int
    ) -> list[tuple[str, bytearray]]:
        """Issue ``number`` keys of ``size`` bits for (master SAE, slave SAE).

        The keys are durably marked delivered (and their bytes wiped here) before this returns,
        and the peer KME has recorded them. Raises :class:`ApiError` (429 quota, 503 insufficient
        key or peer unreachable).
        """
        if not self._bucket(master_sae, "bits").take(number * size):
            raise ApiError(
                429,
                "key quota of this SAE exceeded",
                [{"SAE_ID": master_sae, "quota_bits_per_s": self.config.quota_bits_per_s}],
            )
        nbytes = size // 8
        me = self.config.kme_id

        def item(db: sqlite3.Connection) -> Any:
            now = self._clock()
            blocks = db.execute(
                "SELECT block_id, n_bytes, next_off FROM kme_blocks WHERE issuer=? AND dropped=0 "
                "AND imported > ? ORDER BY imported, block_id",
                (me, now - self.config.pool_ttl),
            ).fetchall()
            plan: list[tuple[str, int]] = []
            seen = {b[0] for b in blocks}

            def fill(rows: Iterable[tuple[str, int, int]]) -> None:
                for bid, n_bytes, nxt in rows:
                    while len(plan) < number and nxt + nbytes <= n_bytes:
                        plan.append((bid, nxt))
                        nxt += nbytes

            fill(blocks)
            while len(plan) < number:
                bid = self._import_next_block(db, seen)
                if bid is None:
                    return None  # imports stay committed; nothing allocated
                seen.add(bid)
                fill(
                    db.execute(
                        "SELECT block_id, n_bytes, next_off FROM kme_blocks WHERE block_id=?",
                        (bid,),
                    ).fetchall()
                )
            out: list[tuple[str, bytearray]] = []
            issued: list[IssuedKey] = []
            for bid, off in plan:
                kid = str(uuid.uuid4())
                key = _read_wipe(db, bid, off, nbytes)
                db.execute(
                    "INSERT INTO kme_keys (key_id, block_id, off, n_bits, master_sae, slave_sae,"
                    " side, state, created, updated) VALUES (?,?,?,?,?,?,'enc','delivered',?,?)",
                    (kid, bid, off, size, master_sae, slave_sae, now, now),
                )
                db.execute(
                    "UPDATE kme_blocks SET next_off=?, consumed=consumed+? WHERE block_id=?",
                    (off + nbytes, nbytes, bid),
                )
                _audit(db, now, "enc_delivered", kid, master_sae, slave_sae, size)
                out.append((kid, key))
                issued.append(IssuedKey(kid, bid, off, size, master_sae, slave_sae))
            # drop blocks whose remainder cannot hold the smallest key any more
            min_bytes = self.config.min_key_size // 8
            for bid in {b for b, _ in plan}:
                n_bytes, nxt = db.execute(
                    "SELECT n_bytes, next_off FROM kme_blocks WHERE block_id=?", (bid,)
                ).fetchone()
                if n_bytes - nxt < min_bytes:
                    self.counters.wasted_bits += (n_bytes - nxt) * 8
                    _drop_block(db, bid)
                else:
                    db.execute(
                        "DELETE FROM kme_chunks WHERE block_id=? AND (idx + 1) * ? <= ?",
                        (bid, CHUNK_BYTES, nxt),
                    )
            return out, issued

        res = self._db.run(item)
        if res is None:
            raise ApiError(
                503,
                "insufficient key available",
                [{"requested_bits": number * size, "slave_SAE_ID": slave_sae}],
            )
        keys, issued = res
        self._crash("after_commit")
        try:
            if self.peer is None:
                raise ApiError(503, "peer KME not connected")
            self.peer.notify_issued(issued)
        except QkdppError as exc:
            for _, key in keys:
                key[:] = bytes(len(key))
            self._void([k.key_id for k in issued], master_sae, slave_sae)
            log.warning("peer KME refused/unreachable, %d keys voided: %s", len(issued), exc)
            raise ApiError(503, "peer KME unavailable; keys not issued") from None
        self._crash("after_notify")
        self.counters.add(self.counters.keys_delivered, "enc", len(keys))
        self.counters.add(self.counters.bits_delivered, "enc", len(keys) * size)
        for k in issued:
            audit_log.info(
                "enc_delivered key_ID=%s master_SAE=%s slave_SAE=%s size=%d",
                k.key_id,
                master_sae,
                slave_sae,
                size,
            )
        return keys

    def _void(self, key_ids: list[str], sae: str, peer: str) -> None:
        def item(db: sqlite3.Connection) -> None:
            now = self._clock()
            for kid in key_ids:
                n = db.execute(
                    "UPDATE kme_keys SET state='void', updated=? WHERE key_id=? RETURNING n_bits",
                    (now, kid),
                ).fetchone()
                _audit(db, now, "void", kid, sae, peer, int(n[0]) if n else 0)

        self._db.run(item)

    # -- slave side ------------------------------------------------------------------------------
    def accept_issued(self, keys: list[IssuedKey], *, source_kme_id: str) -> None:
        """Record keys the peer KME issued (durable when this returns); all-or-nothing.

        Raises :class:`ApiError` 401 if the sender is not the peer KME, 400 if an entry is
        invalid (wrong half, overlapping range, SAE IDs on the wrong side, reused key_ID).
        """
        c = self.config
        if source_kme_id != c.peer_kme_id:
            raise ApiError(401, "unauthorized: not the peer KME", [{"KME_ID": source_kme_id}])
        if not keys or len(keys) > c.max_key_per_request:
            raise ApiError(400, "notification must list 1..max_key_per_request keys")
        for k in keys:
            if not c.peer_issues_from(k.block_id):
                raise ApiError(
                    400, "block is not in the peer's issuing half", [{"block_ID": k.block_id}]
                )
            if k.master_sae not in c.remote_saes or k.slave_sae not in c.local_saes:
                raise ApiError(400, "SAE IDs do not match the node configuration", [k.to_json()])
            if k.off < 0 or k.n_bits % 8 or not c.min_key_size <= k.n_bits <= c.max_key_size:
                raise ApiError(400, "bad key range", [k.to_json()])
        ranges: dict[str, list[tuple[int, int]]] = {}
        for k in keys:
            ranges.setdefault(k.block_id, []).append((k.off, k.off + k.n_bits // 8))
        for rs in ranges.values():
            rs.sort()
            for (_, a_end), (b_lo, _) in itertools.pairwise(rs):
                if b_lo < a_end:
                    raise ApiError(400, "overlapping key ranges in one notification")
        if len({k.key_id for k in keys}) != len(keys):
            raise ApiError(400, "duplicate key_ID in notification")

        def item(db: sqlite3.Connection) -> None:
            now = self._clock()
            # every check first; block imports (which consume key-store blocks) come last
            to_import: list[str] = []
            for bid, rs in ranges.items():
                row = db.execute(
                    "SELECT n_bytes, issuer, dropped, imported FROM kme_blocks WHERE block_id=?",
                    (bid,),
                ).fetchone()
                if row is None:
                    try:
                        rec = self.store.record(bid)
                    except UnknownKey:
                        raise ApiError(400, "unknown block", [{"block_ID": bid}]) from None
                    if rec.state != "committed" or rec.expires <= now:
                        raise ApiError(400, "block not available here", [{"block_ID": bid}])
                    n_bytes = rec.n_bits // 8
                    to_import.append(bid)
                else:
                    n_bytes, issuer, dropped, imported = row
                    if issuer != c.peer_kme_id or dropped or imported <= now - c.pool_ttl:
                        raise ApiError(400, "block not available here", [{"block_ID": bid}])
                for lo, hi in rs:
                    if hi > n_bytes:
                        raise ApiError(400, "key range beyond the block", [{"block_ID": bid}])
                    hit = db.execute(
                        "SELECT key_id FROM kme_keys WHERE block_id=? AND off < ? AND "
                        "off + n_bits / 8 > ? LIMIT 1",
                        (bid, hi, lo),
                    ).fetchone()
                    if hit is not None:
                        raise ApiError(400, "key range already issued", [{"block_ID": bid}])
            known = db.execute(
                f"SELECT key_id FROM kme_keys WHERE key_id IN ({','.join('?' * len(keys))})",
                [k.key_id for k in keys],
            ).fetchall()
            if known:
                raise ApiError(400, "key_ID already known", [{"key_ID": r[0]} for r in known])
            for bid in to_import:
                taken = self.store.take(key_id=bid)
                for kid, key, n_bits in taken:
                    del key[n_bits // 8 :]
                    _insert_block(db, kid, key, c.peer_kme_id, now)
                    self.counters.blocks_imported += 1
            db.executemany(
                "INSERT INTO kme_keys (key_id, block_id, off, n_bits, master_sae, slave_sae,"
                " side, state, created, updated) VALUES (?,?,?,?,?,?,'dec','issued',?,?)",
                [
                    (k.key_id, k.block_id, k.off, k.n_bits, k.master_sae, k.slave_sae, now, now)
                    for k in keys
                ],
            )
            for k in keys:
                _audit(db, now, "notified", k.key_id, k.slave_sae, k.master_sae, k.n_bits)

        self._db.run(item)

    def dec_keys(
        self, slave_sae: str, master_sae: str, key_ids: list[str]
    ) -> list[tuple[str, bytearray]]:
        """Deliver keys issued by ``master_sae`` to ``slave_sae`` (all or none, at most once).

        Raises :class:`ApiError` 401 if any key_ID is unknown here, was issued to another pair,
        was already retrieved or expired (the details list those key_IDs).
        """
        ttl = self.config.pool_ttl

        def item(db: sqlite3.Connection) -> Any:
            now = self._clock()
            rows = db.execute(
                f"SELECT k.key_id, k.block_id, k.off, k.n_bits FROM kme_keys k JOIN kme_blocks b "
                f"ON b.block_id = k.block_id WHERE k.key_id IN ({','.join('?' * len(key_ids))}) "
                "AND k.side='dec' AND k.state='issued' AND k.slave_sae=? AND k.master_sae=? "
                "AND b.dropped=0 AND k.created > ?",
                (*key_ids, slave_sae, master_sae, now - ttl),
            ).fetchall()
            found = {r[0]: r for r in rows}
            missing = [k for k in key_ids if k not in found]
            if missing:
                return missing
            out = []
            for kid in key_ids:
                _, bid, off, n_bits = found[kid]
                key = _read_wipe(db, bid, off, n_bits // 8)
                db.execute(
                    "UPDATE kme_keys SET state='delivered', updated=? WHERE key_id=?", (now, kid)
                )
                db.execute(
                    "UPDATE kme_blocks SET consumed = consumed + ? WHERE block_id=?",
                    (n_bits // 8, bid),
                )
                _audit(db, now, "dec_delivered", kid, slave_sae, master_sae, n_bits)
                out.append((kid, key, n_bits))
            for bid in {found[k][1] for k in key_ids}:
                n_bytes, consumed = db.execute(
                    "SELECT n_bytes, consumed FROM kme_blocks WHERE block_id=?", (bid,)
                ).fetchone()
                if consumed >= n_bytes:
                    _drop_block(db, bid)
            return out

        res = self._db.run(item)
        if res and isinstance(res[0], str):
            raise ApiError(
                401,
                "unauthorized: key_ID not available to this SAE",
                [{"key_ID": k} for k in res],
            )
        self._crash("dec_after_commit")
        self.counters.add(self.counters.keys_delivered, "dec", len(res))
        self.counters.add(self.counters.bits_delivered, "dec", sum(r[2] for r in res))
        for kid, _, n in res:
            audit_log.info(
                "dec_delivered key_ID=%s slave_SAE=%s master_SAE=%s size=%d",
                kid,
                slave_sae,
                master_sae,
                n,
            )
        return [(kid, key) for kid, key, _ in res]

    # -- maintenance -----------------------------------------------------------------------------
    def expire(self) -> int:
        """Drop blocks older than ``pool_ttl`` (chunks deleted, unretrieved keys ``expired``),
        then checkpoint the WAL so overwritten key pages leave the log; blocks dropped."""
        ttl = self.config.pool_ttl
        n = int(self._db.run(lambda db: _expire_blocks(db, self._clock(), ttl)))
        self._db.checkpoint()
        return n

    def audit(self, since_seq: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """Audit rows (seq, time, event, key_ID, SAE, peer SAE, size) — never key bits."""

        def item(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
            q = "SELECT seq, time, event, key_id, sae, peer_sae, n_bits FROM kme_audit WHERE seq>?"
            q += " ORDER BY seq" + (f" LIMIT {int(limit)}" if limit else "")
            return db.execute(q, (since_seq,)).fetchall()

        names = ("seq", "time", "event", "key_ID", "SAE_ID", "peer_SAE_ID", "size")
        return [dict(zip(names, r, strict=True)) for r in self._db.run(item)]

    def pool_stats(self) -> dict[str, int]:
        """Counts for metrics: pool bytes available to issue, keys by side and state."""

        def item(db: sqlite3.Connection) -> dict[str, int]:
            out: dict[str, int] = {}
            out["pool_bits"] = 8 * int(
                db.execute(
                    "SELECT COALESCE(SUM(n_bytes - next_off),0) FROM kme_blocks WHERE issuer=? "
                    "AND dropped=0",
                    (self.config.kme_id,),
                ).fetchone()[0]
            )
            for side, state, n in db.execute(
                "SELECT side, state, COUNT(*) FROM kme_keys GROUP BY side, state"
            ):
                out[f"keys_{side}_{state}"] = int(n)
            return out

        return dict(self._db.run(item))
