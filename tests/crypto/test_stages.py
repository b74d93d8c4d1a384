"""Two-party tests of the verify, privacy_amplification and authenticate stages."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from qkdpp.auth import write_bootstrap
from qkdpp.errors import ConfigError
from qkdpp.frame import Frame, KeyState
from qkdpp.kernels import gfpoly
from qkdpp.kernels.toeplitz import _ref
from qkdpp.protocol import loopback_pair
from qkdpp.stages import privacy_amplification as pa_mod
from qkdpp.stages.authentication import AuthenticationStage
from qkdpp.stages.privacy_amplification import PrivacyAmplificationStage
from qkdpp.stages.verification import VerificationStage
from qkdpp.testing import correlated_pair, run_pair

pytestmark = pytest.mark.two_party


def frames(specs: list[tuple[int, float]], **tags: object) -> tuple[list[Frame], list[Frame]]:
    a, b = [], []
    for i, (n, q) in enumerate(specs):
        fa, fb = correlated_pair(n, q, frame_id=i, seed=100 + i)
        if tags:
            fa = fa.evolve(meta=fa.meta.with_tags(**tags))
            fb = fb.evolve(meta=fb.meta.with_tags(**tags))
        a.append(fa)
        b.append(fb)
    return a, b


def test_verify_passes_equal_and_fails_different_keys() -> None:
    a, b = frames([(1000, 0.0), (4097, 0.001), (77, 0.0)])
    res = run_pair([VerificationStage("alice", eps_cor=1e-12)], None, a, b)
    for side in (res.alice, res.bob):
        assert [f.meta.state for f in side] == [
            KeyState.VERIFIED,
            KeyState.FAILED,
            KeyState.VERIFIED,
        ]
        assert (side[1].meta.failure or "").startswith("verify")
        for f in side:
            t = gfpoly.tag_bits_for(f.meta.n_bits, 1e-12)
            assert f.meta.leaked_by("verify") == t
            eps = [e.value for e in f.meta.epsilons if e.name == "eps_cor"]
            assert eps == [gfpoly.eps_poly_hash(f.meta.n_bits, t)] and eps[0] <= 1e-12
    assert "hashes differ" in (res.alice[1].meta.failure or "")


def test_verify_fixed_tag_and_bad_params() -> None:
    a, b = frames([(500, 0.0)])
    res = run_pair([VerificationStage("alice", tag_bits=40)], None, a, b)
    assert res.alice[0].meta.leaked_by("verify") == res.bob[0].meta.leaked_by("verify") == 40
    with pytest.raises(ConfigError):
        VerificationStage("alice", eps_cor=0.0)
    with pytest.raises(ConfigError):
        VerificationStage("alice", tag_bits=129)


@pytest.mark.parametrize("variant", ["toeplitz", "modified"])
def test_privacy_amplification_matches_reference(
    variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seeds: list[np.ndarray] = []
    real = pa_mod.fresh_seed

    def spy(nbits: int) -> np.ndarray:
        s = real(nbits)
        seeds.append(s.copy())
        return s

    monkeypatch.setattr(pa_mod, "fresh_seed", spy)
    a, b = frames([(3001, 0.0), (640, 0.0)], key_length=299)
    res = run_pair([PrivacyAmplificationStage("alice", variant=variant)], None, a, b)
    for i, (fa, fb) in enumerate(zip(res.alice, res.bob, strict=True)):
        assert fa.meta.state is KeyState.AMPLIFIED and fa.meta.n_bits == 299
        assert np.array_equal(fa.bits, fb.bits)
        n = a[i].meta.n_bits
        fn = _ref.toeplitz_hash if variant == "toeplitz" else _ref.modified_toeplitz_hash
        assert np.array_equal(fa.bits, fn(seeds[i], a[i].bits, n, 299))
        assert fa.meta.tags["pa_seed_bits"] == (n + 298 if variant == "toeplitz" else n - 1)
    assert len(seeds) == 2 and not np.array_equal(seeds[0][:10], seeds[1][:10])


@pytest.mark.parametrize("ell", [None, 0, -5, 10_000, 2.5])
def test_privacy_amplification_refuses_bad_key_length(ell: object) -> None:
    tags = {} if ell is None else {"key_length": ell}
    a, b = frames([(1000, 0.0), (1000, 0.0)])
    a[0] = a[0].evolve(meta=a[0].meta.with_tags(**tags))
    b[0] = b[0].evolve(meta=b[0].meta.with_tags(**tags))
    a[1] = a[1].evolve(meta=a[1].meta.with_tags(key_length=100))
    b[1] = b[1].evolve(meta=b[1].meta.with_tags(key_length=100))
    res = run_pair([PrivacyAmplificationStage("alice")], None, a, b)
    for side in (res.alice, res.bob):
        assert side[0].meta.state is KeyState.FAILED
        assert side[0].meta.failure and "key_length" in side[0].meta.failure
        assert side[1].meta.state is KeyState.AMPLIFIED


def bootstrap_pair(tmp_path: Path, same: bool = True) -> tuple[str, str]:
    data = os.urandom(16 + 4096)
    pa, pb = tmp_path / "alice.key", tmp_path / "bob.key"
    write_bootstrap(pa, data)
    write_bootstrap(pb, data if same else os.urandom(len(data)))
    return str(pa), str(pb)


def auth_pipeline(role: str, boot: str, **kw: object) -> list:
    return [
        VerificationStage(role, tag_bits=64),
        PrivacyAmplificationStage(role),
        AuthenticationStage(role, bootstrap=boot, low_water_bytes=1024, **kw),
    ]


def test_authenticate_pair(tmp_path: Path) -> None:
    ka, kb = bootstrap_pair(tmp_path)
    a, b = frames([(20000, 0.0), (20000, 0.0)], key_length=10000)
    res = run_pair(auth_pipeline("alice", ka), auth_pipeline("bob", kb), a, b)
    for fa, fb in zip(res.alice, res.bob, strict=True):
        assert fa.meta.state is fb.meta.state is KeyState.AUTHENTICATED
        assert np.array_equal(fa.bits, fb.bits) and fa.meta.n_bits == fb.meta.n_bits
        eps = [e.value for e in fa.meta.epsilons if e.name == "eps_auth"]
        assert len(eps) == 1 and 0 < eps[0] < 1e-15
        assert fa.meta.tags["auth_pad_bits"] == 2 * 64 / 2


def test_authenticate_detects_tampering(tmp_path: Path) -> None:
    ka, kb = bootstrap_pair(tmp_path)
    ta, tb = loopback_pair()

    class Tamper:
        def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
            self.inner = inner

        def send_bytes(self, data: bytes) -> None:
            if b"privacy_amplification" in data and b"seeds" in data:
                data = data[:-1] + bytes([data[-1] ^ 0x01])  # flip one seed bit
            self.inner.send_bytes(data)

        def recv_bytes(self, timeout):  # type: ignore[no-untyped-def]
            return self.inner.recv_bytes(timeout)

        def close(self) -> None:
            self.inner.close()

    a, b = frames([(5000, 0.0)], key_length=2000)
    res = run_pair(
        auth_pipeline("alice", ka), auth_pipeline("bob", kb), a, b, transports=(Tamper(ta), tb)
    )
    for side in (res.alice, res.bob):
        assert side[0].meta.state is KeyState.FAILED
        assert "authenticate" in (side[0].meta.failure or "")
    assert "tag mismatch" in (res.alice[0].meta.failure or "")


def test_authenticate_wrong_key_fails_both(tmp_path: Path) -> None:
    ka, kb = bootstrap_pair(tmp_path, same=False)
    a, b = frames([(5000, 0.0)], key_length=2000)
    res = run_pair(auth_pipeline("alice", ka), auth_pipeline("bob", kb), a, b)
    assert res.alice[0].meta.state is res.bob[0].meta.state is KeyState.FAILED


def test_authenticate_refills_pool_and_persists(tmp_path: Path) -> None:
    ka, kb = bootstrap_pair(tmp_path)
    pfa, pfb = str(tmp_path / "a.pool"), str(tmp_path / "b.pool")
    a, b = frames([(20000, 0.0)], key_length=10000)
    sa = auth_pipeline("alice", ka, pool_file=pfa, target_bytes=8192)
    sb = auth_pipeline("bob", kb, pool_file=pfb, target_bytes=8192)
    res = run_pair(sa, sb, a, b)
    fa = res.alice[0]
    # 4096 bootstrap pool bytes >= low water (1024): nothing refilled, 16 bytes of pads consumed
    assert fa.meta.tags["auth_refill_bits"] == 0 and fa.meta.n_bits == 10000
    assert Path(pfa).read_bytes() == Path(pfb).read_bytes()
    assert len(Path(pfa).read_bytes()) == 4096 - 16
    assert (Path(pfa).stat().st_mode & 0o777) == 0o600
    # a restarted node continues from the saved pool, never from the bootstrap pool again
    st = AuthenticationStage("alice", bootstrap=ka, pool_file=pfa)
    st.setup()
    assert st.wc is not None and st.wc.pool.available == 4096 - 16


def test_authenticate_refill_below_low_water(tmp_path: Path) -> None:
    ka, kb = bootstrap_pair(tmp_path)
    a, b = frames([(20000, 0.0)], key_length=10000)
    sa = auth_pipeline("alice", ka)
    sb = auth_pipeline("bob", kb)
    for st in (sa[-1], sb[-1]):
        st.low_water_bytes = 8192  # pool (4096 bytes) is below the reserve: refill first
    res = run_pair(sa, sb, a, b)
    fa, fb = res.alice[0], res.bob[0]
    assert fa.meta.tags["auth_refill_bits"] == fb.meta.tags["auth_refill_bits"] == 10000 // 8 * 8
    assert fa.meta.state is KeyState.FAILED  # the whole block went into the reserve


def test_authenticate_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be switched off"):
        AuthenticationStage("alice")
    p = tmp_path / "k"
    write_bootstrap(p, os.urandom(200))
    os.chmod(p, 0o644)
    with pytest.raises(ConfigError, match="permissions"):
        AuthenticationStage("alice", bootstrap=str(p)).setup()


def test_authenticate_many_batches_marks_advance(tmp_path: Path) -> None:
    ka, kb = bootstrap_pair(tmp_path)
    a, b = frames([(3000, 0.0)] * 4, key_length=1000)
    sa, sb = auth_pipeline("alice", ka), auth_pipeline("bob", kb)
    res = run_pair(sa, sb, a, b, batch_size=1)
    assert all(f.meta.state is KeyState.AUTHENTICATED for f in res.alice + res.bob)
    # four batches, two 8-byte pads each, same on both sides
    wa, wb = sa[-1].wc, sb[-1].wc
    assert wa is not None and wb is not None
    assert wa.pool.consumed_bytes == wb.pool.consumed_bytes == 4 * 16
    # every record was covered: the transcripts were trimmed up to the last tag
    assert res.alice_link.transcript.position("sent") > 20


class EvilPA(PrivacyAmplificationStage):
    """Alice sends a seed one byte short."""

    def process_batch(self, frames, peer):  # type: ignore[no-untyped-def]
        peer.send("seeds", {"s0": np.zeros(3, np.uint8)})
        return [f.fail("evil") for f in frames]


class EvilVerify(VerificationStage):
    """Alice sends a 15-byte hash key."""

    def process_batch(self, frames, peer):  # type: ignore[no-untyped-def]
        peer.request("keys", {"k0": bytes(15)})
        return [f.fail("evil") for f in frames]


@pytest.mark.parametrize(
    ("evil", "good", "what"),
    [(EvilPA, PrivacyAmplificationStage, "seed"), (EvilVerify, VerificationStage, "16 bytes")],
)
def test_malformed_peer_messages_fail_the_block(evil, good, what) -> None:  # type: ignore[no-untyped-def]
    a, b = frames([(1000, 0.0)], key_length=100)
    res = run_pair([evil("alice")], [good("bob")], a, b, timeout=5)
    assert res.bob[0].meta.state is KeyState.FAILED
    assert "ProtocolError" in (res.bob[0].meta.failure or "")
    assert what in (res.bob[0].meta.failure or "")
