"""Wegman–Carter tags with addressed one-time pads kept in the key store.

Every tag names its pad: ``(pad_seg, pad_off)`` — a segment of the key store's authentication
pads (:meth:`~qkdpp.keystore.sqlite.KeyStore.next_pad`) and an offset in the sender's half of it.
Alice's tags use the first half of every segment, Bob's the second, so the two parties never
pick the same pad. The sender withdraws its pad durably *before* the tag leaves (a crash can
waste a pad, never reuse one); the receiver accepts a pad only above the last one it accepted
from that half (a replayed or reordered tag fails). Lost messages therefore cost pads but never
put the two pools out of step — the weakness of a FIFO pool consumed in lock-step, where one
dropped tag message made every later tag fail.

Segments are the bootstrap pool (inserted once per key store) and slices of fresh key reserved
in the two-phase commit of a block (:mod:`qkdpp.stages.commit`): a slice becomes usable only
when its block is committed — for Alice's own tags, only once Bob acknowledged his commit — so
a pad the sender picks is always held by the receiver.

Tag: ``trunc_t(POLYVAL_k(M)) ⊕ pad`` (:func:`~qkdpp.auth.wegman_carter.wc_tag`; Wegman & Carter
1981, Krawczyk 1994). Messages of the two-phase commit are tagged one by one over
:func:`message_bytes` (:class:`AuthenticatedChannel`).
"""

from __future__ import annotations

import hmac
import os
import threading
from pathlib import Path
from typing import Any

from qkdpp.auth.bootstrap import (
    load_bootstrap,
    pool_fingerprint,
    read_used_marker,
    used_marker_path,
    write_used_marker,
)
from qkdpp.auth.selftest import self_test
from qkdpp.auth.wegman_carter import hash_transcript, wc_tag_hashed
from qkdpp.errors import AuthenticationFailed, ConfigError, KeyStoreError
from qkdpp.frame import Role
from qkdpp.kernels import gfpoly
from qkdpp.keystore.sqlite import KeyStore
from qkdpp.protocol.codec import encode_payload

MSG_DOMAIN = b"qkdpp-msg-v1\0"
AUTH_FIELDS = ("pad_seg", "pad_off", "tag")


class LinkAuth:
    """Tagger/verifier of one party, pads from its key store.

    Parameters
    ----------
    store : KeyStore
        This party's key store (holds the pad segments).
    hash_key : bytes-like
        The 16-byte reusable POLYVAL key from the bootstrap file (copied; :meth:`wipe`).
    role : Role
        Alice tags with the ``ab`` halves, Bob with the ``ba`` halves.
    tag_bits : int
        Tag length ``t`` (32..128); each tag costs ``ceil(t / 8)`` pad bytes.
    lease : int
        Pads withdrawn from the store per durable transaction (held in memory until used; a
        crash wastes the unused ones, never reuses them). One fsync per pad costs ≈ 5 ms here.
    """

    def __init__(
        self,
        store: KeyStore,
        hash_key: bytes | bytearray,
        role: Role | str,
        *,
        tag_bits: int = 64,
        lease: int = 1,
    ) -> None:
        if len(hash_key) != 16:
            raise ConfigError(f"Wegman–Carter hash key must be 16 bytes, got {len(hash_key)}")
        if not 32 <= tag_bits <= 128:
            raise ConfigError(f"tag_bits must be in [32, 128], got {tag_bits}")
        self.store = store
        self.role = Role(role)
        self.tag_bits = tag_bits
        self._key = bytearray(hash_key)
        self.send_dir, self.recv_dir = ("ab", "ba") if self.role is Role.ALICE else ("ba", "ab")
        self.pad_bytes_used = 0  # both directions, since construction
        self.lease = lease
        self._lease: list[tuple[str, int, bytearray]] = []  # withdrawn, not yet used (secret)
        # the stages of a party share one LinkAuth (acquire_link_auth): one withdrawal and pop
        # at a time, whatever threads they run in
        self._lease_lock = threading.Lock()

    @property
    def pad_bytes(self) -> int:
        """Pad bytes per tag."""
        return (self.tag_bits + 7) // 8

    def eps(self, message_bytes: int) -> float:
        """Forgery probability bound of one tag over ``message_bytes`` bytes."""
        return gfpoly.eps_poly_hash(8 * message_bytes, self.tag_bits)

    def digest(self, message: bytes) -> bytes:
        """The keyed 16-byte ``poly_hash`` of ``message`` (secret: never logged or sent).

        :meth:`tag_digest` / :meth:`verify_digest` take it, so a message that is both tagged
        and verified (the transcript tag exchange) is hashed once.
        """
        return gfpoly.poly_hash(bytes(self._key), message)

    def digest_transcript(self, a_to_b: list[bytes], b_to_a: list[bytes]) -> bytes:
        """:meth:`digest` of ``encode_transcript(a_to_b, b_to_a)``, streamed over the records
        (:func:`~qkdpp.auth.wegman_carter.hash_transcript`; no joined copy)."""
        return hash_transcript(bytes(self._key), a_to_b, b_to_a)

    def tag(self, message: bytes) -> dict[str, Any]:
        """``{"pad_seg", "pad_off", "tag"}`` for ``message`` with this party's next pad.

        Raises :class:`AuthenticationFailed` when no pad is left.
        """
        return self.tag_digest(self.digest(message))

    def tag_digest(self, digest: bytes) -> dict[str, Any]:
        """:meth:`tag` of the message whose :meth:`digest` is ``digest``."""
        with self._lease_lock:
            if not self._lease:
                try:
                    got = self.store.next_pads(
                        self.send_dir, self.pad_bytes, self.lease, need_ack=self.role is Role.ALICE
                    )
                except KeyStoreError as exc:
                    raise AuthenticationFailed(str(exc)) from None
                self._lease = [(seg, off, bytearray(pad)) for seg, off, pad in reversed(got)]
            seg, off, pad = self._lease.pop()
            self.pad_bytes_used += len(pad)
        tag = wc_tag_hashed(digest, bytes(pad), self.tag_bits)
        pad[:] = bytes(len(pad))
        return {"pad_seg": seg, "pad_off": off, "tag": tag}

    def verify(self, message: bytes, fields: dict[str, Any]) -> bool:
        """Check the peer's tag fields over ``message`` (constant-time comparison).

        False for malformed fields, a pad this party cannot accept (unknown segment, replay) or a
        wrong tag; the named pad is used up in every case where it was acceptable.
        """
        return self.verify_digest(self.digest(message), fields)

    def verify_digest(self, digest: bytes, fields: dict[str, Any]) -> bool:
        """:meth:`verify` of the message whose :meth:`digest` is ``digest``."""
        seg, off, tag = (fields.get(k) for k in AUTH_FIELDS)
        if not (
            isinstance(seg, str)
            and isinstance(off, int)
            and not isinstance(off, bool)
            and isinstance(tag, bytes)
            and len(tag) == self.pad_bytes
        ):
            return False
        pad = self.store.use_pad(seg, self.recv_dir, off, self.pad_bytes)
        if pad is None:
            return False
        self.pad_bytes_used += len(pad)
        return hmac.compare_digest(wc_tag_hashed(digest, pad, self.tag_bits), tag)

    def wipe(self) -> None:
        """Overwrite the hash key with zeros and drop the withdrawn pads."""
        self._key[:] = bytes(len(self._key))
        with self._lease_lock:
            for _, _, pad in self._lease:
                pad[:] = bytes(len(pad))
            self._lease.clear()

    def __repr__(self) -> str:  # never show key material
        return f"LinkAuth(role={self.role.value}, tag_bits={self.tag_bits})"


def message_bytes(context: str, kind: str, payload: dict[str, Any]) -> bytes:
    """Canonical bytes of one message for its own tag: domain, context (session, batch, stage),
    kind and the payload fields except the tag fields, sorted by name, in the wire codec."""
    body = {k: payload[k] for k in sorted(payload) if k not in AUTH_FIELDS}
    ctx = context.encode()
    name = kind.encode()
    return b"".join(
        (
            MSG_DOMAIN,
            len(ctx).to_bytes(4, "big"),
            ctx,
            len(name).to_bytes(4, "big"),
            name,
            encode_payload(body),
        )
    )


class AuthenticatedChannel:
    """A ``send``/``recv`` channel whose every message carries its own tag.

    ``send`` adds ``pad_seg``, ``pad_off``, ``tag`` to the payload; ``recv`` checks them and
    raises :class:`AuthenticationFailed` on a bad tag (the caller must treat the exchange as
    void). Context (session, batch, stage) is bound into every tag, so a message cannot be
    replayed into another batch.
    """

    def __init__(self, inner: Any, auth: LinkAuth, context: str) -> None:
        self.inner = inner
        self.auth = auth
        self.context = context
        self.eps = 0.0  # forgery bound of every message tagged or checked here, summed

    def send(self, kind: str, payload: dict[str, Any] | None = None) -> None:
        body = dict(payload or {})
        for k in AUTH_FIELDS:
            if k in body:
                raise ConfigError(f"payload field {k!r} is reserved for the tag")
        message = message_bytes(self.context, kind, body)
        body.update(self.auth.tag(message))
        self.eps += self.auth.eps(len(message))
        self.inner.send(kind, body)

    def recv(self, kind: str) -> dict[str, Any]:
        msg = self.inner.recv(kind)
        message = message_bytes(self.context, kind, msg)
        self.eps += self.auth.eps(len(message))
        if not self.auth.verify(message, msg):
            raise AuthenticationFailed(f"{kind}: message tag does not verify")
        return {k: v for k, v in msg.items() if k not in AUTH_FIELDS}


def open_link_auth(
    role: Role | str, bootstrap: str, keystore: str, tag_bits: int = 64, lease: int = 16
) -> LinkAuth:
    """A :class:`LinkAuth` over this party's key store (opened here), after the start-up
    self-test. The bootstrap pool goes into the key store the first time only."""
    self_test()
    boot = load_bootstrap(bootstrap)
    try:
        fingerprint = pool_fingerprint(boot.pool)
        store = KeyStore(keystore)
        refuse = None
        recorded = read_used_marker(bootstrap)
        if recorded == fingerprint:
            refuse = (
                f"bootstrap key {bootstrap} was already loaded into a key store "
                f"({used_marker_path(bootstrap)} says so), and the key store {keystore} does "
                "not hold it: the store is new or was replaced. Loading the pool again would "
                "reuse one-time pads that may have been spent, which breaks authentication. "
                "Restore the original key store, or install a new bootstrap key at both ends "
                "(`qkdpp bootstrap`)."
            )
        try:
            store.add_pad_segment(boot.pool, refuse=refuse)
        except ConfigError:
            store.close()
            raise
        if recorded != fingerprint:
            write_used_marker(bootstrap, fingerprint, keystore)
        return LinkAuth(store, boot.hash_key, role, tag_bits=tag_bits, lease=lease)
    finally:
        boot.wipe()


# One LinkAuth per party, key store and bootstrap key in this process, shared by the stages
# that tag (authentication, commit): one SQLite connection per party instead of one per stage
# (each costs a schema check on open and a checkpoint on close, ≈ 4 ms per close here), and
# one pad lease. Keyed by process too: a forked lane never uses its parent's connection.
_SHARED: dict[tuple[Any, ...], list[Any]] = {}  # key -> [LinkAuth, users]
_SHARED_LOCK = threading.Lock()


def acquire_link_auth(
    role: Role | str, bootstrap: str, keystore: str, tag_bits: int = 64
) -> LinkAuth:
    """:func:`open_link_auth` shared by every caller of this process with the same role, key
    store, bootstrap key and tag length; each call must be paired with
    :func:`release_link_auth` (the last one wipes it and closes the store)."""
    key = (
        os.getpid(),
        Role(role).value,
        str(Path(bootstrap).resolve()),
        str(Path(keystore).resolve()),
        int(tag_bits),
    )
    with _SHARED_LOCK:
        got = _SHARED.get(key)
        if got is None:
            got = _SHARED[key] = [open_link_auth(role, bootstrap, keystore, tag_bits), 0]
        got[1] += 1
        auth: LinkAuth = got[0]
        return auth


def release_link_auth(auth: LinkAuth) -> None:
    """Give back a :func:`acquire_link_auth`; the last user wipes the hash key and pads and
    closes the key store."""
    with _SHARED_LOCK:
        for key, got in _SHARED.items():
            if got[0] is auth:
                got[1] -= 1
                if got[1] > 0:
                    return
                del _SHARED[key]
                break
    auth.wipe()
    auth.store.close()
