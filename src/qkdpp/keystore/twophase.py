"""Two-phase commit of one key block with the peer, and crash recovery.

Alice coordinates, Bob participates. Messages go through any object with ``send(kind, payload)``
and ``recv(kind)`` — in the pipeline an :class:`~qkdpp.auth.link_auth.AuthenticatedChannel` over
the batch's :class:`~qkdpp.protocol.PeerScope`, so every message carries its own Wegman–Carter
tag and is checked before anything is decided on it. Payloads carry key ids, block ids and
lengths only, never key bits.

Alice may reserve the first ``auth_bytes`` bytes of the block as a new authentication-pad segment
(announced in ``2pc.prepare``; both sides split the block the same way and store the segment in
the same transaction as the key, see :meth:`~qkdpp.keystore.sqlite.KeyStore.put_pending`).

Protocol (each arrow is one message; ``[durable]`` = SQLite transaction fsynced before the next
step)::

    Alice                                   Bob
    put_pending(id)            [durable]
    ── 2pc.prepare {key_id, block_id, n_bits, auth_bytes} ─▶
                                            put_pending(id)            [durable]
    ◀──────────── 2pc.prepared {key_id, ok} ──
    commit(id)     (decision)  [durable]
    ── 2pc.commit {key_id} ───────────────────▶
                                            commit(id, peer_ack)       [durable]
    ◀──────────────────── 2pc.ack {key_id} ──
    ack(id)  → deliverable     [durable]

Invariants: Alice's key is deliverable only after Bob's commit is acknowledged; Bob commits only
after Alice's durable decision; therefore a deliverable key is always held committed by both.

Recovery after a crash of either party (:func:`recover`, run by both before new blocks):
Alice voids her ``pending`` keys (no decision was taken: presumed abort) and sends the ids of her
committed-but-unacknowledged keys; Bob commits those he holds pending or committed, voids every
other pending key, and answers with the ids he now holds committed; Alice acknowledges those and
voids (force) the others, which were never deliverable.
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from qkdpp.errors import CommitRefused, KeyStoreError, ProtocolError, UnknownKey
from qkdpp.frame import Role
from qkdpp.keystore.sqlite import KeyRecord, KeyStore


class Channel(Protocol):
    """What the two-phase commit needs of a peer link (a PeerScope fits)."""

    def send(self, kind: str, payload: dict[str, Any] | None = None) -> None: ...

    def recv(self, kind: str) -> dict[str, Any]: ...


def _ids_to_bytes(ids: list[str]) -> bytes:
    return b"".join(uuid.UUID(i).bytes for i in ids)


def _bytes_to_ids(data: object, what: str) -> list[str]:
    if not isinstance(data, bytes) or len(data) % 16:
        raise ProtocolError(f"{what}: expected a multiple of 16 bytes of UUIDs, got {data!r:.60}")
    return [str(uuid.UUID(bytes=data[i : i + 16])) for i in range(0, len(data), 16)]


def _field(msg: dict[str, Any], name: str, typ: type, kind: str) -> Any:
    if (
        name not in msg
        or not isinstance(msg[name], typ)
        or (typ is int and isinstance(msg[name], bool))
    ):
        raise ProtocolError(f"{kind}: field {name!r} missing or not {typ.__name__}")
    return msg[name]


def commit_coordinator(
    store: KeyStore,
    chan: Channel,
    session_id: str,
    block_id: int,
    key: bytes | bytearray,
    n_bits: int,
    *,
    key_id: str | None = None,
    auth_bytes: int = 0,
) -> str:
    """Alice's side of the two-phase commit; returns the key id (deliverable when this returns).

    ``key`` holds ``n_bits`` bits (MSB-first); its first ``auth_bytes`` bytes (even) become an
    authentication-pad segment, the rest the stored key. Raises :class:`CommitRefused` if Bob
    refused (the key is then void on both sides), :class:`KeyStoreError` if this side's store
    failed (the exchange is then out of step: resynchronise and recover), and lets transport
    errors propagate (recovery resolves the block later).
    """
    kid = key_id or str(uuid.uuid4())
    auth, app, n_app = split_block(key, n_bits, auth_bytes)
    store.put_pending(kid, session_id, block_id, app, n_app, auth=auth)
    chan.send(
        "2pc.prepare",
        {
            "key_id": kid,
            "block_id": int(block_id),
            "n_bits": int(n_bits),
            "auth_bytes": int(auth_bytes),
        },
    )
    msg = chan.recv("2pc.prepared")
    if _field(msg, "key_id", str, "2pc.prepared") != kid:
        raise ProtocolError(f"2pc.prepared for key {msg['key_id']}, expected {kid}")
    if not _field(msg, "ok", bool, "2pc.prepared"):
        store.void(kid)
        raise CommitRefused(f"peer refused to store block {block_id}: {msg.get('reason', '')}")
    store.commit(kid)
    chan.send("2pc.commit", {"key_id": kid})
    msg = chan.recv("2pc.ack")
    if _field(msg, "key_id", str, "2pc.ack") != kid:
        raise ProtocolError(f"2pc.ack for key {msg['key_id']}, expected {kid}")
    store.ack(kid)
    return kid


def commit_participant(
    store: KeyStore,
    chan: Channel,
    session_id: str,
    block_id: int,
    key: bytes | bytearray,
    n_bits: int,
) -> tuple[str, int]:
    """Bob's side of the two-phase commit; returns the key id Alice chose and the number of
    bytes she reserved for authentication pads (split off the front of ``key`` as she did).

    Raises :class:`CommitRefused` when this side could not store the block and told Alice so,
    :class:`KeyStoreError` when the store failed after the prepare (out of step: resync)."""
    msg = chan.recv("2pc.prepare")
    kid = _field(msg, "key_id", str, "2pc.prepare")
    try:
        kid = str(uuid.UUID(kid))
    except ValueError:
        raise ProtocolError(f"2pc.prepare: key_id {kid!r:.60} is not a UUID") from None
    if (
        _field(msg, "block_id", int, "2pc.prepare") != block_id
        or _field(msg, "n_bits", int, "2pc.prepare") != n_bits
    ):
        chan.send(
            "2pc.prepared", {"key_id": kid, "ok": False, "reason": "block id or length differ"}
        )
        raise ProtocolError(
            f"2pc.prepare for block {msg['block_id']} ({msg['n_bits']} bits), "
            f"expected block {block_id} ({n_bits} bits)"
        )
    auth_bytes = _field(msg, "auth_bytes", int, "2pc.prepare")
    try:
        auth, app, n_app = split_block(key, n_bits, auth_bytes)
    except KeyStoreError as exc:
        chan.send("2pc.prepared", {"key_id": kid, "ok": False, "reason": str(exc)[:200]})
        raise ProtocolError(f"2pc.prepare: {exc}") from None
    try:
        store.put_pending(kid, session_id, block_id, app, n_app, auth=auth)
    except KeyStoreError as exc:
        chan.send("2pc.prepared", {"key_id": kid, "ok": False, "reason": str(exc)[:200]})
        raise CommitRefused(f"could not store block {block_id}: {exc}") from exc
    chan.send("2pc.prepared", {"key_id": kid, "ok": True})
    msg = chan.recv("2pc.commit")
    if _field(msg, "key_id", str, "2pc.commit") != kid:
        raise ProtocolError(f"2pc.commit for key {msg['key_id']}, expected {kid}")
    store.commit(kid, peer_ack=True)
    chan.send("2pc.ack", {"key_id": kid})
    return kid, auth_bytes


def split_block(key: bytes | bytearray, n_bits: int, auth_bytes: int) -> tuple[bytes, bytes, int]:
    """``(auth segment, stored key, its bits)``: the first ``auth_bytes`` bytes of a packed
    ``n_bits``-bit key, and the rest. ``auth_bytes`` must be even and leave at least one bit."""
    if auth_bytes < 0 or auth_bytes % 2 or 8 * auth_bytes >= n_bits:
        raise KeyStoreError(
            f"cannot reserve {auth_bytes} bytes for authentication from a {n_bits}-bit key "
            "(even, and at least one bit must remain)"
        )
    data = bytes(key)
    return data[:auth_bytes], data[auth_bytes:], n_bits - 8 * auth_bytes


def recover(
    store: KeyStore, chan: Channel, role: Role, live_elsewhere: frozenset[str] = frozenset()
) -> dict[str, int]:
    """Resolve every undecided key with the peer after a restart (see module docstring).

    ``live_elsewhere``: session ids of other links that use the same key stores at this moment
    (parallel lanes); their blocks are theirs to decide and are left alone. Both parties must
    pass the same set.

    Returns counts ``{"committed": …, "voided": …}`` of keys resolved on this side.
    """

    def mine(state: str) -> list[KeyRecord]:
        return [r for r in store.records(state) if r.session_id not in live_elsewhere]

    if Role(role) is Role.ALICE:
        voided = 0
        for rec in mine("pending"):
            store.void(rec.key_id)
            voided += 1
        unacked = [r.key_id for r in mine("committed") if not r.peer_ack]
        chan.send("2pc.recover", {"committed": _ids_to_bytes(unacked)})
        msg = chan.recv("2pc.recover.reply")
        confirmed = set(
            _bytes_to_ids(_field(msg, "committed", bytes, "2pc.recover.reply"), "2pc.recover.reply")
        )
        if not confirmed <= set(unacked):
            raise ProtocolError("2pc.recover.reply confirms keys that were not asked about")
        for kid in unacked:
            if kid in confirmed:
                store.ack(kid)
            else:
                store.void(kid, force_unacked=True)
                voided += 1
        return {"committed": len(confirmed), "voided": voided}
    msg = chan.recv("2pc.recover")
    decided = _bytes_to_ids(_field(msg, "committed", bytes, "2pc.recover"), "2pc.recover")
    confirmed_ids: list[str] = []
    committed = 0
    for kid in decided:
        try:
            rec = store.record(kid)
        except UnknownKey:
            continue  # never prepared here: Alice will void it
        if rec.session_id in live_elsewhere:
            raise ProtocolError(f"2pc.recover names key {kid} of a session live elsewhere")
        if rec.state == "pending":
            store.commit(kid, peer_ack=True)
            committed += 1
        if rec.state in ("pending", "committed", "delivered"):
            confirmed_ids.append(kid)
    voided = 0
    decided_set = set(decided)
    for rec in mine("pending"):
        if rec.key_id not in decided_set:
            store.void(rec.key_id)
            voided += 1
    chan.send("2pc.recover.reply", {"committed": _ids_to_bytes(confirmed_ids)})
    return {"committed": committed, "voided": voided}
