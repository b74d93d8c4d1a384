"""Wegman–Carter tags, the key pool, the bootstrap key file and the start-up self-test."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdpp.auth import (
    LinkAuth,
    encode_transcript,
    load_bootstrap,
    self_test,
    wc_tag,
    write_bootstrap,
)
from qkdpp.auth import selftest as selftest_mod
from qkdpp.auth.wegman_carter import hash_transcript, transcript_length
from qkdpp.errors import AuthenticationFailed, ConfigError
from qkdpp.kernels import gfpoly
from qkdpp.kernels.gfpoly import _ref as gfpoly_ref
from qkdpp.keystore.sqlite import KeyStore


def pair(tmp_path: Path, tag_bits: int = 64, pool_bytes: int = 256) -> tuple[LinkAuth, LinkAuth]:
    key, pad = os.urandom(16), os.urandom(pool_bytes)
    out = []
    for role in ("alice", "bob"):
        store = KeyStore(tmp_path / f"{role}.sqlite")
        store.add_pad_segment(pad)
        out.append(LinkAuth(store, key, role, tag_bits=tag_bits))
    return out[0], out[1]


def test_tag_verifies_and_detects_tampering(tmp_path: Path) -> None:
    a, b = pair(tmp_path)
    msg = encode_transcript([b"hello", b"x" * 100], [b"world"])
    t = a.tag(msg)
    assert len(t["tag"]) == 8
    assert b.verify(msg, t)
    t2 = a.tag(msg)
    assert t2["tag"] != t["tag"]  # fresh pad every tag
    assert not b.verify(msg + b"\0", t2)
    t3 = a.tag(msg)
    assert not b.verify(msg, {**t3, "tag": bytes([t3["tag"][0] ^ 1]) + t3["tag"][1:]})
    assert not b.verify(msg, {**t3, "pad_off": "0"})  # malformed fields
    assert a.pad_bytes_used == b.pad_bytes_used == 24
    # a tag is the truncated POLYVAL hash xor the pad (the hash's vectors: the self-test)
    key, pad = os.urandom(16), os.urandom(8)
    h = gfpoly.truncate(gfpoly.poly_hash(key, msg), 64)
    assert wc_tag(key, msg, pad, 64) == bytes(x ^ y for x, y in zip(h, pad, strict=True))


def test_transcript_encoding_is_unambiguous() -> None:
    assert encode_transcript([b"ab"], [b"c"]) != encode_transcript([b"a", b"b"], [b"c"])
    assert encode_transcript([b"ab"], []) != encode_transcript([], [b"ab"])


@settings(max_examples=60, deadline=None)
@given(
    key=st.binary(min_size=16, max_size=16),
    a2b=st.lists(st.binary(max_size=90), max_size=6),
    b2a=st.lists(st.binary(max_size=90), max_size=6),
)
def test_streamed_transcript_hash_equals_hash_of_encoding(
    key: bytes, a2b: list[bytes], b2a: list[bytes]
) -> None:
    msg = encode_transcript(a2b, b2a)
    assert transcript_length(a2b, b2a) == len(msg)
    want = gfpoly_ref.poly_hash(key, msg)
    assert hash_transcript(key, a2b, b2a) == want == gfpoly.poly_hash(key, msg)


def test_streamed_transcript_tag_on_large_records(tmp_path: Path) -> None:
    # records of sifting size (hashed in place, GIL released) and many small ones
    rng = np.random.default_rng(5)
    a2b = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (700_001, 17, 0, 90_000)]
    b2a = [os.urandom(n % 97) for n in range(300)]
    key = os.urandom(16)
    msg = encode_transcript(a2b, b2a)
    assert hash_transcript(key, a2b, b2a) == gfpoly.poly_hash(key, msg)
    a, b = pair(tmp_path)
    t = a.tag_digest(a.digest_transcript(a2b, b2a))
    assert a.digest_transcript(a2b, b2a) == a.digest(msg)
    assert b.verify(msg, t)
    t2 = b.tag(msg)
    assert a.verify_digest(a.digest_transcript(a2b, b2a), t2)
    assert not a.verify_digest(a.digest_transcript(a2b, b2a[:-1]), b.tag(msg))


def test_pads_run_out(tmp_path: Path) -> None:
    a, _ = pair(tmp_path, pool_bytes=32)  # 16 bytes per direction: two 8-byte pads
    a.tag(b"1")
    a.tag(b"2")
    with pytest.raises(AuthenticationFailed, match="exhausted"):
        a.tag(b"3")
    a.wipe()
    assert "key" not in repr(a).replace("LinkAuth", "")


def test_bootstrap_permissions(tmp_path: Path) -> None:
    p = tmp_path / "boot.key"
    data = os.urandom(200)
    write_bootstrap(p, data)
    assert (p.stat().st_mode & 0o777) == 0o600
    boot = load_bootstrap(p)
    assert bytes(boot.hash_key) == data[:16] and bytes(boot.pool) == data[16:]
    boot.wipe()
    assert not any(boot.hash_key) and not any(boot.pool)
    os.chmod(p, 0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_bootstrap(p)
    os.chmod(p, 0o600)
    link = tmp_path / "link.key"
    link.symlink_to(p)
    with pytest.raises(ConfigError, match="symbolic link"):
        load_bootstrap(link)
    short = tmp_path / "short.key"
    write_bootstrap_short = os.open(short, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(write_bootstrap_short, b"\1" * 20)
    os.close(write_bootstrap_short)
    with pytest.raises(ConfigError, match="at least"):
        load_bootstrap(short)
    with pytest.raises(ConfigError, match="cannot stat"):
        load_bootstrap(tmp_path / "missing.key")


def test_self_test_passes_and_catches_a_broken_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    self_test()
    monkeypatch.setattr(selftest_mod, "_PV_OUT", "00" * 16)
    with pytest.raises(AuthenticationFailed, match="self-test failed"):
        self_test()


def test_bad_parameters(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "k.sqlite")
    with pytest.raises(ConfigError):
        LinkAuth(store, b"short", "alice")
    with pytest.raises(ConfigError):
        LinkAuth(store, bytes(16), "alice", tag_bits=16)
    la = LinkAuth(store, bytes(16), "alice", tag_bits=40)
    assert la.pad_bytes == 5
    assert la.eps(1000) == pytest.approx((63 + 1) / 2**40)
    with pytest.raises(ConfigError):
        wc_tag(bytes(16), b"m", bytes(4), 40)  # pad too short


def test_self_test_catches_a_broken_streamed_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:  # drops the pieces: digests the empty message
        def __init__(self, key: bytes) -> None:
            self.key = key

        def update(self, data: bytes) -> None:
            pass

        def digest(self) -> bytes:
            return gfpoly_ref.poly_hash(self.key, b"")

    for be in gfpoly.available_backends():
        monkeypatch.setattr(gfpoly.impl(be), "PolyHash", Broken)
    with pytest.raises(AuthenticationFailed, match="streamed poly_hash"):
        self_test()
