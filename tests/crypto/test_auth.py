"""Wegman–Carter tags, the key pool, the bootstrap key file and the start-up self-test."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from qkdpp.auth import (
    AuthKeyPool,
    WegmanCarter,
    encode_transcript,
    load_bootstrap,
    self_test,
    write_bootstrap,
)
from qkdpp.auth import selftest as selftest_mod
from qkdpp.errors import AuthenticationFailed, ConfigError


def pair(tag_bits: int = 64, pool_bytes: int = 256) -> tuple[WegmanCarter, WegmanCarter]:
    key, pad = os.urandom(16), os.urandom(pool_bytes)
    return (
        WegmanCarter(key, AuthKeyPool(pad), tag_bits=tag_bits),
        WegmanCarter(key, AuthKeyPool(pad), tag_bits=tag_bits),
    )


def test_tag_verifies_and_detects_tampering() -> None:
    a, b = pair()
    msg = encode_transcript([b"hello", b"x" * 100], [b"world"])
    t = a.tag(msg)
    assert len(t) == 8
    assert b.verify(msg, t)
    t2 = a.tag(msg)
    assert t2 != t  # fresh pad every tag
    assert not b.verify(msg + b"\0", t2)  # pads stay in step even after a failure
    t3 = a.tag(msg)
    assert not b.verify(msg, bytes([t3[0] ^ 1]) + t3[1:])
    assert a.pool.consumed_bytes == b.pool.consumed_bytes == 24


def test_transcript_encoding_is_unambiguous() -> None:
    assert encode_transcript([b"ab"], [b"c"]) != encode_transcript([b"a", b"b"], [b"c"])
    assert encode_transcript([b"ab"], []) != encode_transcript([], [b"ab"])


def test_pool_exhaustion_and_wipe() -> None:
    pool = AuthKeyPool(b"\x11" * 10, low_water_bytes=4)
    assert pool.take(8) == b"\x11" * 8
    with pytest.raises(AuthenticationFailed, match="exhausted"):
        pool.take(3)
    pool.wipe()
    assert pool.available == 0
    assert "11" not in repr(pool)


def test_pool_reserve_is_refilled_before_release() -> None:
    pool = AuthKeyPool(b"\x00" * 10, low_water_bytes=100, target_bytes=150)
    key = np.arange(1000, dtype=np.uint8)
    rest, rest_bits = pool.split_fresh_key(key, 8000)
    assert pool.available == 150
    assert rest_bits == 8000 - 8 * 140 and rest.size == 1000 - 140
    assert np.array_equal(rest, key[140:])
    # above the low-water mark nothing is taken
    _rest2, bits2 = pool.split_fresh_key(key, 8000)
    assert bits2 == 8000 and pool.available == 150


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


def test_bad_parameters() -> None:
    with pytest.raises(ConfigError):
        WegmanCarter(b"short", AuthKeyPool())
    with pytest.raises(ConfigError):
        WegmanCarter(bytes(16), AuthKeyPool(), tag_bits=16)
    wc = WegmanCarter(bytes(16), AuthKeyPool(), tag_bits=40)
    assert wc.pad_bytes == 5
    assert wc.eps(1000) == pytest.approx((63 + 1) / 2**40)
