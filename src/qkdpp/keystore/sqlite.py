"""SQLite key store: durable keys with UUIDs and a strict state machine.

States (``keys.state``)::

    pending ──commit──▶ committed ──take──▶ delivered ──erase──▶ erased
       │                    │ (TTL)
       └──void / TTL──▶ void └──────▶ erased

* ``pending``: written durably before the peer is told "prepared" (two-phase commit, see
  :mod:`qkdpp.keystore.twophase`); never delivered.
* ``committed``: both parties decided to keep the key. On the coordinator a key is deliverable
  only once the peer acknowledged its own commit (``peer_ack = 1``); a participant commits only
  after the coordinator's durable decision, so its commits carry ``peer_ack = 1``.
* ``delivered``: handed out exactly once (``take`` is an atomic ``UPDATE … WHERE state =
  'committed'`` inside ``BEGIN IMMEDIATE``); the key bytes are overwritten in the same
  transaction.
* ``erased`` / ``void``: no key bytes left (TTL expiry, explicit erase, aborted commit).

Durability: ``journal_mode=WAL``, ``synchronous=FULL`` (every commit is fsynced before the call
returns), ``secure_delete=ON`` (overwritten pages are zeroed in the database file). Old page images
may survive in the WAL until a checkpoint: :meth:`KeyStore.expire` ends with
``wal_checkpoint(TRUNCATE)``.

Key bytes returned to callers are ``bytearray`` so they can be wiped after use.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qkdpp.errors import ConfigError, KeyStoreError, UnknownKey

STATES = ("pending", "committed", "delivered", "erased", "void")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    key_id     TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    block_id   INTEGER NOT NULL,
    n_bits     INTEGER NOT NULL CHECK (n_bits > 0),
    state      TEXT NOT NULL CHECK (state IN ('pending','committed','delivered','erased','void')),
    key        BLOB,
    peer_ack   INTEGER NOT NULL DEFAULT 0,
    created    REAL NOT NULL,
    expires    REAL NOT NULL,
    updated    REAL NOT NULL,
    UNIQUE (session_id, block_id)
);
CREATE INDEX IF NOT EXISTS keys_state ON keys (state, created);
CREATE TABLE IF NOT EXISTS auth_segments (
    seg_id   TEXT PRIMARY KEY,
    data     BLOB NOT NULL,
    used_ab  INTEGER NOT NULL DEFAULT 0,
    used_ba  INTEGER NOT NULL DEFAULT 0,
    seen_ab  BLOB,
    seen_ba  BLOB,
    created  REAL NOT NULL
);
CREATE VIEW IF NOT EXISTS key_stats AS SELECT
    COALESCE(SUM(state = 'committed' AND peer_ack = 1), 0) AS stored,
    COALESCE(SUM(CASE WHEN state = 'committed' AND peer_ack = 1 THEN n_bits ELSE 0 END), 0)
        AS stored_bits,
    COALESCE(SUM(state = 'pending' OR (state = 'committed' AND peer_ack = 0)), 0) AS reserved,
    COALESCE(SUM(state = 'delivered'), 0) AS delivered,
    COALESCE(SUM(state = 'erased'), 0) AS erased,
    COALESCE(SUM(state = 'void'), 0) AS voided
FROM keys;
"""


@dataclass(frozen=True)
class KeyRecord:
    """Metadata of one stored key (never the key bytes)."""

    key_id: str
    session_id: str
    block_id: int
    n_bits: int
    state: str
    peer_ack: bool
    created: float
    expires: float


def _key_id(key_id: str | uuid.UUID) -> str:
    try:
        return str(uuid.UUID(str(key_id)))
    except ValueError:
        raise ConfigError(f"key id must be a UUID, got {key_id!r}") from None


class KeyStore:
    """Durable key store in one SQLite file.

    Parameters
    ----------
    path : str or Path
        Database file (created with its parent directory if missing).
    default_ttl : float
        Seconds a key stays deliverable after it was stored.
    clock : callable
        Returns the current time in seconds (tests inject a fake clock).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        default_ttl: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if default_ttl <= 0:
            raise ConfigError(f"default_ttl must be > 0 seconds, got {default_ttl}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.default_ttl = float(default_ttl)
        self._clock = clock
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(
                str(self.path), isolation_level=None, timeout=30.0, check_same_thread=False
            )
            self._wal()
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA secure_delete=ON")
            # one transaction (one fsync) for the whole schema, not one per statement
            self._db.executescript(f"BEGIN IMMEDIATE;{_SCHEMA};COMMIT;")
        except sqlite3.Error as exc:  # (not a database, damaged, unwritable, disk full)
            if getattr(self, "_db", None) is not None:
                self._db.close()
            raise KeyStoreError(
                f"key store {self.path}: cannot open it ({exc}); is this the key store file? "
                "A damaged store must be restored from its backup (the file is left as it was)"
            ) from exc

    # -- plumbing ------------------------------------------------------------------------------
    def _wal(self, wait_s: float = 30.0) -> None:
        """Switch the file to write-ahead logging. The switch needs the file to itself, and
        SQLite answers "database is locked" at once (no busy wait) while another process opens
        the same new file (parallel lanes): retry until ``wait_s``, then say so."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                if str(self._db.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                    self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise KeyStoreError(
                        f"key store {self.path}: cannot switch to write-ahead logging ({exc}); "
                        "is another program holding the file?"
                    ) from exc
                time.sleep(0.01)

    def _tx(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``fn`` in one durable transaction; SQLite failures (disk full, I/O error, a locked
        or corrupt file) become :class:`KeyStoreError` naming the file, and nothing is kept."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    out = fn(self._db)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    try:
                        self._db.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                raise KeyStoreError(
                    f"key store {self.path}: {exc}; nothing of this step was stored "
                    "(free disk space or check the file, then restart: recovery resolves "
                    "undecided blocks with the peer)"
                ) from exc
            return out

    def close(self) -> None:
        """Close the database (idempotent); any later use raises :class:`KeyStoreError`."""
        with self._lock:
            if not isinstance(self._db, _Closed):
                self._db.close()
                self._db = _Closed(self.path)  # type: ignore[assignment]

    def __enter__(self) -> KeyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writes --------------------------------------------------------------------------------
    def put_pending(
        self,
        key_id: str | uuid.UUID,
        session_id: str,
        block_id: int,
        key: bytes | bytearray | memoryview,
        n_bits: int,
        ttl: float | None = None,
        *,
        auth: bytes | bytearray = b"",
    ) -> str:
        """Store a key in state ``pending`` (durable when this returns).

        ``auth`` (optional, even length) is stored in the same transaction as the block's
        authentication-pad segment (see :meth:`next_pad`); it follows the key's state: usable once
        the key is committed, wiped when the key is voided.

        Idempotent for an identical re-put of a pending key (a resent PREPARE); anything else with
        the same ``key_id`` or ``(session_id, block_id)`` raises :class:`KeyStoreError`.
        """
        kid = _key_id(key_id)
        data = bytes(key)
        if n_bits <= 0 or len(data) != (n_bits + 7) // 8:
            raise ConfigError(f"key of {len(data)} bytes does not hold n_bits={n_bits}")
        if len(auth) % 2:
            raise ConfigError(f"an authentication segment must have even length, got {len(auth)}")
        now = self._clock()
        expires = now + (self.default_ttl if ttl is None else float(ttl))

        def run(db: sqlite3.Connection) -> str:
            row = db.execute(
                "SELECT state, key, session_id, block_id FROM keys WHERE key_id=?", (kid,)
            ).fetchone()
            if row is not None:
                if (
                    row[0] == "pending"
                    and row[1] == data
                    and (row[2], row[3]) == (session_id, block_id)
                ):
                    return kid
                raise KeyStoreError(f"key {kid} already stored (state {row[0]})")
            try:
                db.execute(
                    "INSERT INTO keys (key_id, session_id, block_id, n_bits, state, key, peer_ack,"
                    " created, expires, updated) VALUES (?,?,?,?,'pending',?,0,?,?,?)",
                    (kid, session_id, int(block_id), int(n_bits), data, now, expires, now),
                )
            except sqlite3.IntegrityError as exc:
                raise KeyStoreError(
                    f"block {block_id} of session {session_id} already has a key ({exc})"
                ) from None
            if auth:
                db.execute(
                    "INSERT INTO auth_segments (seg_id, data, created) VALUES (?,?,?)",
                    (kid, bytes(auth), now),
                )
            return kid

        return str(self._tx(run))

    def _move(
        self,
        kid: str,
        allowed: tuple[str, ...],
        new: str,
        what: str,
        extra: str = "",
        wipe: bool = False,
    ) -> str:
        now = self._clock()

        def run(db: sqlite3.Connection) -> str:
            row = db.execute("SELECT state FROM keys WHERE key_id=?", (kid,)).fetchone()
            if row is None:
                raise UnknownKey(f"{what}: unknown key {kid}")
            if row[0] == new:
                if extra:
                    db.execute(f"UPDATE keys SET {extra}, updated=? WHERE key_id=?", (now, kid))
                return str(row[0])
            if row[0] not in allowed:
                raise KeyStoreError(
                    f"{what}: key {kid} is {row[0]}, expected {' or '.join(allowed)}"
                )
            sets = "state=?, updated=?" + (f", {extra}" if extra else "")
            if wipe:
                sets += ", key=zeroblob(length(key))"
            db.execute(f"UPDATE keys SET {sets} WHERE key_id=?", (new, now, kid))
            if wipe:
                db.execute("UPDATE keys SET key=NULL WHERE key_id=?", (kid,))
            if new == "void":
                db.execute(
                    "UPDATE auth_segments SET data=zeroblob(length(data)) WHERE seg_id=?", (kid,)
                )
                db.execute("DELETE FROM auth_segments WHERE seg_id=?", (kid,))
            return str(row[0])

        return str(self._tx(run))

    def commit(self, key_id: str | uuid.UUID, *, peer_ack: bool = False) -> None:
        """``pending → committed`` (idempotent). ``peer_ack`` marks the peer's commit as known."""
        self._move(
            _key_id(key_id),
            ("pending",),
            "committed",
            "commit",
            extra="peer_ack=1" if peer_ack else "",
        )

    def ack(self, key_id: str | uuid.UUID) -> None:
        """Record that the peer committed ``key_id`` too (makes it deliverable)."""
        kid = _key_id(key_id)

        def run(db: sqlite3.Connection) -> None:
            cur = db.execute(
                "UPDATE keys SET peer_ack=1, updated=? WHERE key_id=? AND "
                "state IN ('committed','delivered')",
                (self._clock(), kid),
            )
            if cur.rowcount != 1:
                raise KeyStoreError(f"ack: key {kid} is not committed")

        self._tx(run)

    def void(self, key_id: str | uuid.UUID, *, force_unacked: bool = False) -> None:
        """``pending → void`` (key bytes wiped). ``force_unacked`` also voids a committed key the
        peer never acknowledged (coordinator recovery when the peer holds no such key)."""
        allowed = ("pending", "committed") if force_unacked else ("pending",)
        kid = _key_id(key_id)
        if force_unacked:
            rec = self.record(kid)
            if rec.state == "committed" and rec.peer_ack:
                raise KeyStoreError(f"void: key {kid} is committed and acknowledged by the peer")
        self._move(kid, allowed, "void", "void", wipe=True)

    def erase(self, key_id: str | uuid.UUID) -> None:
        """``delivered → erased`` (or ``committed → erased``): forget a key for good."""
        self._move(_key_id(key_id), ("delivered", "committed"), "erased", "erase", wipe=True)

    def take(
        self,
        count: int = 1,
        *,
        key_id: str | uuid.UUID | None = None,
        session_id: str | None = None,
    ) -> list[tuple[str, bytearray, int]]:
        """Deliver keys at most once: ``committed (peer_ack) → delivered``.

        Parameters
        ----------
        count : int
            Number of keys wanted (oldest first); fewer are returned if fewer are available.
        key_id : str, optional
            Take exactly this key (KeyStoreError if it is not deliverable).
        session_id : str, optional
            Restrict to one session.

        Returns
        -------
        list of (key_id, key bytes, n_bits)
            Key bytes as ``bytearray`` (wipe them after use). The stored copy is overwritten in
            the same transaction.
        """
        if count < 0:
            raise ConfigError(f"count must be >= 0, got {count}")
        now = self._clock()

        def run(db: sqlite3.Connection) -> list[tuple[str, bytearray, int]]:
            if key_id is not None:
                kid = _key_id(key_id)
                rows = db.execute(
                    "SELECT key_id, key, n_bits, state, peer_ack, expires FROM keys WHERE key_id=?",
                    (kid,),
                ).fetchall()
                if not rows or rows[0][3] != "committed" or not rows[0][4] or rows[0][5] <= now:
                    state = rows[0][3] if rows else "unknown"
                    raise KeyStoreError(f"take: key {kid} is not deliverable (state {state})")
            else:
                q = (
                    "SELECT key_id, key, n_bits FROM keys WHERE state='committed' AND peer_ack=1 "
                    "AND expires > ?"
                )
                args: tuple[Any, ...] = (now,)
                if session_id is not None:
                    q += " AND session_id=?"
                    args += (session_id,)
                rows = db.execute(
                    q + " ORDER BY created, block_id LIMIT ?", (*args, count)
                ).fetchall()
            out = []
            for row in rows:
                cur = db.execute(
                    "UPDATE keys SET state='delivered', key=zeroblob(length(key)), updated=? "
                    "WHERE key_id=? AND state='committed'",
                    (now, row[0]),
                )
                if cur.rowcount != 1:  # cannot happen inside BEGIN IMMEDIATE; refuse anyway
                    raise KeyStoreError(f"take: key {row[0]} was taken concurrently")
                db.execute("UPDATE keys SET key=NULL WHERE key_id=?", (row[0],))
                out.append((str(row[0]), bytearray(row[1]), int(row[2])))
            return out

        return list(self._tx(run))

    def expire(self) -> int:
        """Apply TTLs: expired ``pending`` → void, expired ``committed`` → erased; returns how
        many keys changed. Then checkpoints the WAL so wiped pages leave the log."""
        now = self._clock()

        def run(db: sqlite3.Connection) -> int:
            n = 0
            for old, new in (("pending", "void"), ("committed", "erased")):
                cur = db.execute(
                    f"UPDATE keys SET state='{new}', key=zeroblob(length(key)), updated=? "
                    f"WHERE state='{old}' AND expires <= ?",
                    (now, now),
                )
                n += cur.rowcount
            db.execute("UPDATE keys SET key=NULL WHERE state IN ('void','erased')")
            void = "SELECT key_id FROM keys WHERE state='void'"
            db.execute(
                f"UPDATE auth_segments SET data=zeroblob(length(data)) WHERE seg_id IN ({void})"
            )
            db.execute(f"DELETE FROM auth_segments WHERE seg_id IN ({void})")
            return n

        n = int(self._tx(run))
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return n

    # -- reads ---------------------------------------------------------------------------------
    def record(self, key_id: str | uuid.UUID) -> KeyRecord:
        """Metadata of one key (KeyStoreError if unknown)."""
        kid = _key_id(key_id)
        with self._lock:
            row = self._db.execute(
                "SELECT key_id, session_id, block_id, n_bits, state, peer_ack, created, expires "
                "FROM keys WHERE key_id=?",
                (kid,),
            ).fetchone()
        if row is None:
            raise UnknownKey(f"unknown key {kid}")
        return KeyRecord(
            row[0],
            row[1],
            int(row[2]),
            int(row[3]),
            row[4],
            bool(row[5]),
            float(row[6]),
            float(row[7]),
        )

    def records(self, state: str | None = None) -> list[KeyRecord]:
        """Metadata of every key (optionally in one state), oldest first."""
        if state is not None and state not in STATES:
            raise ConfigError(f"state must be one of {STATES}, got {state!r}")
        q = (
            "SELECT key_id, session_id, block_id, n_bits, state, peer_ack, created, expires "
            "FROM keys"
        )
        args: tuple[Any, ...] = ()
        if state is not None:
            q += " WHERE state=?"
            args = (state,)
        with self._lock:
            rows = self._db.execute(q + " ORDER BY created, block_id", args).fetchall()
        return [
            KeyRecord(r[0], r[1], int(r[2]), int(r[3]), r[4], bool(r[5]), float(r[6]), float(r[7]))
            for r in rows
        ]

    def peek_key(self, key_id: str | uuid.UUID) -> bytearray | None:
        """The stored key bytes without changing state (tests and recovery checks only)."""
        with self._lock:
            row = self._db.execute(
                "SELECT key FROM keys WHERE key_id=?", (_key_id(key_id),)
            ).fetchone()
        return None if row is None or row[0] is None else bytearray(row[0])

    # -- authentication pads -------------------------------------------------------------------
    # A segment is split in two halves: bytes [0, h) pay for Alice→Bob tags ("ab"), [h, 2h) for
    # Bob→Alice tags ("ba"). The sender hands out pads of its half in increasing offset
    # (``used_*``: the first unused offset); the receiver accepts every byte of the peer's half at
    # most once (``seen_*``: one bit per byte), in any order, so that concurrent links (lanes)
    # sharing the store may deliver their tags in any order while a replay still fails.
    def add_pad_segment(
        self, data: bytes | bytearray, seg_id: str = "bootstrap", *, refuse: str | None = None
    ) -> bool:
        """Insert the segment that needs no commit (the bootstrap pool), once: returns False (and
        changes nothing) if it was ever inserted, so a restart never reuses its pads. Every other
        segment belongs to a key (:meth:`put_pending`) and is usable only while that key's row
        says committed / delivered / erased. ``refuse``: instead of inserting, raise
        :class:`ConfigError` with this message (in the same transaction as the check, so a
        concurrent opener that inserted it first is not refused)."""
        if seg_id != "bootstrap":
            raise ConfigError("only the bootstrap segment is added directly")
        if len(data) % 2 or not data:
            raise ConfigError(f"a pad segment needs a positive even length, got {len(data)}")

        def run(db: sqlite3.Connection) -> bool:
            if db.execute("SELECT 1 FROM auth_segments WHERE seg_id=?", (seg_id,)).fetchone():
                return False
            if refuse is not None:
                raise ConfigError(refuse)
            db.execute(
                "INSERT INTO auth_segments (seg_id, data, created) VALUES (?,?,?)",
                (seg_id, bytes(data), self._clock()),
            )
            return True

        return bool(self._tx(run))

    @staticmethod
    def _usable_sql(need_ack: bool, columns: str = "s.seg_id, s.data, s.used_ab, s.used_ba") -> str:
        """``SELECT columns`` of the usable segments (bootstrap, or a committed key's)."""
        ack = " AND k.peer_ack = 1" if need_ack else ""
        return (
            f"SELECT {columns} FROM auth_segments s "
            "LEFT JOIN keys k ON k.key_id = s.seg_id WHERE (s.seg_id = 'bootstrap' OR "
            f"(k.state IN ('committed','delivered','erased'){ack}))"
        )

    def next_pad(self, direction: str, nbytes: int, *, need_ack: bool) -> tuple[str, int, bytes]:
        """Withdraw the next unused ``nbytes`` pad of ``direction`` (``"ab"`` or ``"ba"``): the
        first of :meth:`next_pads` with ``count = 1``."""
        return self.next_pads(direction, nbytes, 1, need_ack=need_ack)[0]

    def next_pads(
        self, direction: str, nbytes: int, count: int, *, need_ack: bool
    ) -> list[tuple[str, int, bytes]]:
        """Withdraw up to ``count`` unused ``nbytes`` pads of ``direction`` (``"ab"`` or
        ``"ba"``), oldest usable segment first, in one transaction that is durable before it
        returns (write-ahead: a crash after this can waste the pads, never reuse them). Returns
        ``(segment, offset, pad)`` triples (at least one); the pad bytes are zeroed in the store.

        ``need_ack``: only segments of keys the peer acknowledged (the coordinator's rule: the
        peer then certainly holds the segment committed). Raises :class:`KeyStoreError` when no
        usable segment has room (the link needs fresh key or a new bootstrap key).
        """
        col = _pad_col(direction)
        if nbytes <= 0 or count <= 0:
            raise ConfigError(f"next_pads: nbytes and count must be > 0, got {nbytes}, {count}")

        def run(db: sqlite3.Connection) -> list[tuple[str, int, bytes]]:
            rows = db.execute(
                self._usable_sql(need_ack) + " ORDER BY s.created, s.rowid"
            ).fetchall()
            out: list[tuple[str, int, bytes]] = []
            for seg_id, data, used_ab, used_ba in rows:
                half = len(data) // 2
                off0 = off = used_ab if col == "used_ab" else used_ba
                base = 0 if col == "used_ab" else half
                buf = bytearray(data)
                while len(out) < count and off + nbytes <= half:
                    out.append((str(seg_id), off, bytes(buf[base + off : base + off + nbytes])))
                    off += nbytes
                if off > off0:
                    buf[base + off0 : base + off] = bytes(off - off0)
                    db.execute(
                        f"UPDATE auth_segments SET data=?, {col}=? WHERE seg_id=?",
                        (bytes(buf), off, seg_id),
                    )
                if len(out) == count:
                    break
            if not out:
                raise KeyStoreError(
                    f"authentication pads exhausted ({direction}): no usable segment has "
                    f"{nbytes} bytes left; the link needs a new bootstrap key"
                )
            return out

        out: list[tuple[str, int, bytes]] = self._tx(run)
        return out

    def use_pad(self, seg_id: str, direction: str, offset: int, nbytes: int) -> bytes | None:
        """The peer's pad at ``offset`` of segment ``seg_id`` (direction ``"ab"``/``"ba"``), or
        None when it is not acceptable: unknown or not-yet-committed segment, out of range, or
        any of its bytes accepted before (a replay). Durable; the pad bytes are zeroed and
        marked, and can never be accepted again."""
        _pad_col(direction)
        if offset < 0 or nbytes <= 0:
            return None

        def run(db: sqlite3.Connection) -> bytes | None:
            row = db.execute(
                self._usable_sql(False, f"s.seen_{direction}, s.data") + " AND s.seg_id = ?",
                (str(seg_id),),
            ).fetchone()
            if row is None:
                return None
            seen_blob, data = row
            half = len(data) // 2
            if offset + nbytes > half:
                return None
            seen = bytearray(seen_blob or bytes((half + 7) // 8))
            for i in range(offset, offset + nbytes):
                if seen[i >> 3] >> (i & 7) & 1:
                    return None
                seen[i >> 3] |= 1 << (i & 7)
            base = 0 if direction == "ab" else half
            buf = bytearray(data)
            pad = bytes(buf[base + offset : base + offset + nbytes])
            buf[base + offset : base + offset + nbytes] = bytes(nbytes)
            db.execute(
                f"UPDATE auth_segments SET data=?, seen_{direction}=? WHERE seg_id=?",
                (bytes(buf), bytes(seen), str(seg_id)),
            )
            return pad

        out: bytes | None = self._tx(run)
        return out

    def pad_bytes_left(self, direction: str, *, need_ack: bool, as_receiver: bool = False) -> int:
        """Unused pad bytes of ``direction`` in usable segments: as the sender (its high-water
        mark) or, with ``as_receiver``, as seen by the receiver (bytes not yet accepted)."""
        col = _pad_col(direction)
        cols = f"s.data, s.seen_{direction}" if as_receiver else f"s.data, s.{col}"
        with self._lock:
            rows = self._db.execute(self._usable_sql(need_ack, cols)).fetchall()
        if as_receiver:
            return sum(len(data) // 2 - _accepted(seen) for data, seen in rows)
        return sum(len(data) // 2 - used for data, used in rows)

    def pad_stats(self) -> dict[str, int]:
        """Authentication pads left in committed segments, per direction (bytes; a half's use is
        the sender's high-water mark or the receiver's accepted bytes, whichever this store
        keeps), and the number of usable segments. No key material."""
        cols = "s.data, s.used_ab, s.seen_ab, s.used_ba, s.seen_ba"
        with self._lock:
            rows = self._db.execute(self._usable_sql(False, cols)).fetchall()
        out = {"auth_pad_ab_bytes": 0, "auth_pad_ba_bytes": 0, "auth_segments": len(rows)}
        for data, used_ab, seen_ab, used_ba, seen_ba in rows:
            half = len(data) // 2
            out["auth_pad_ab_bytes"] += half - max(used_ab, _accepted(seen_ab))
            out["auth_pad_ba_bytes"] += half - max(used_ba, _accepted(seen_ba))
        return out

    def stats(self) -> dict[str, int]:
        """Counts from the ``key_stats`` view: stored (deliverable), stored_bits, reserved
        (pending or unacknowledged), delivered, erased, voided."""
        with self._lock:
            cur = self._db.execute("SELECT * FROM key_stats")
            row = cur.fetchone()
            names = [d[0] for d in cur.description]
        return {n: int(v) for n, v in zip(names, row, strict=True)}


class _Closed:
    """Stands in for the connection of a closed :class:`KeyStore`: every use says so (instead
    of sqlite3's "Cannot operate on a closed database")."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def __getattr__(self, name: str) -> Any:
        raise KeyStoreError(f"key store {self._path} is closed (a use after close: a bug)")


def _pad_col(direction: str) -> str:
    if direction not in ("ab", "ba"):
        raise ConfigError(f"pad direction must be 'ab' or 'ba', got {direction!r}")
    return f"used_{direction}"


def _accepted(seen: bytes | None) -> int:
    """Pad bytes a receiver's bitmap marks as accepted."""
    return int.from_bytes(seen, "little").bit_count() if seen else 0
