"""Two-party tests of the verify, privacy_amplification and authenticate stages."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from qkdpp.auth import write_bootstrap
from qkdpp.errors import ChannelDesync, ConfigError
from qkdpp.frame import Frame, KeyState
from qkdpp.kernels import gfpoly
from qkdpp.kernels.toeplitz import _ref
from qkdpp.protocol import loopback_pair
from qkdpp.stages import privacy_amplification as pa_mod
from qkdpp.stages.authentication import AuthenticationStage
from qkdpp.stages.privacy_amplification import PrivacyAmplificationStage
from qkdpp.stages.verification import VerificationStage
from qkdpp.testing import InterceptTransport, correlated_pair, run_pair

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
    store = str(Path(boot).with_name(f"keys-{role}.sqlite"))
    return [
        VerificationStage(role, tag_bits=64),
        PrivacyAmplificationStage(role),
        AuthenticationStage(role, bootstrap=boot, keystore=store, **kw),
    ]


def test_authenticate_pair(tmp_path: Path) -> None:
    ka, kb = bootstrap_pair(tmp_path)
    a, b = frames([(20000, 0.0), (20000, 0.0)], key_length=10000)
    res = run_pair(auth_pipeline("alice", ka), auth_pipeline("bob", kb), a, b)
    for fa, fb in zip(res.alice, res.bob, strict=True):
        assert fa.meta.state is fb.meta.state is KeyState.AUTHENTICATED
        assert np.array_equal(fa.bits, fb.bits) and fa.meta.n_bits == fb.meta.n_bits == 10000
        eps = [e.value for e in fa.meta.epsilons if e.name == "eps_auth"]
        assert len(eps) == 1 and 0 < eps[0] < 1e-15
        # one 8-byte pad per direction and batch, both sides, shared by the batch's two frames
        assert fa.meta.tags["auth_pad_bits"] == fb.meta.tags["auth_pad_bits"] == 2 * 64 / 2


def flip_first(marker: bytes):  # type: ignore[no-untyped-def]
    """Flip the last byte of the first message that contains ``marker``."""
    hits = []

    def on_send(data: bytes) -> bytes:
        if not hits and marker in data:
            hits.append(1)
            return data[:-1] + bytes([data[-1] ^ 0x01])
        return data

    return on_send


def test_authenticate_detects_tampering(tmp_path: Path) -> None:
    """A flipped PA seed bit: both sides' tags disagree, the batch is void and the channel is
    declared out of step (the runner resynchronises); nothing is released."""
    ka, kb = bootstrap_pair(tmp_path)
    ta, tb = loopback_pair()
    a, b = frames([(5000, 0.0)], key_length=2000)
    with pytest.raises(ChannelDesync, match="tag mismatch"):
        run_pair(
            auth_pipeline("alice", ka),
            auth_pipeline("bob", kb),
            a,
            b,
            transports=(InterceptTransport(ta, flip_first(b"seeds")), tb),
        )


def test_authenticate_wrong_key_fails_both(tmp_path: Path) -> None:
    ka, kb = bootstrap_pair(tmp_path, same=False)
    a, b = frames([(5000, 0.0)], key_length=2000)
    with pytest.raises(ChannelDesync):
        run_pair(auth_pipeline("alice", ka), auth_pipeline("bob", kb), a, b)


def test_authenticate_bootstrap_pool_enters_the_store_once(tmp_path: Path) -> None:
    ka, kb = bootstrap_pair(tmp_path)
    sa, sb = auth_pipeline("alice", ka), auth_pipeline("bob", kb)
    run_pair(sa, sb, *frames([(20000, 0.0)], key_length=10000))
    st = sa[-1]
    assert st.auth is not None
    # 2048 bytes per direction; one 8-byte pad used in each, a lease of pads withdrawn
    assert st.auth.pad_bytes_used == 16
    left = 2048 - 8 * st.auth.lease
    assert st.auth.store.pad_bytes_left("ab", need_ack=True) == left
    st.close()
    sb[-1].close()
    # a restarted node continues from the key store, never from the bootstrap pool again (the
    # unused rest of the lease is wasted, never reused)
    again = AuthenticationStage("alice", bootstrap=ka, keystore=str(tmp_path / "keys-alice.sqlite"))
    again.setup()
    assert again.auth is not None
    assert again.auth.store.pad_bytes_left("ab", need_ack=True) == left
    assert Path(tmp_path / "keys-alice.sqlite").exists()
    again.close()


def test_a_spent_bootstrap_pool_is_not_loaded_into_a_new_key_store(tmp_path: Path) -> None:
    """Deleting a party's key store but keeping its bootstrap file must not bring the spent
    bootstrap pads back (pad reuse breaks Wegman–Carter): the consumed marker refuses it, with a
    reason; a new bootstrap key is taken as usual."""
    ka, kb = bootstrap_pair(tmp_path)
    sa, sb = auth_pipeline("alice", ka), auth_pipeline("bob", kb)
    run_pair(sa, sb, *frames([(20000, 0.0)], key_length=10000))
    sa[-1].close()
    sb[-1].close()
    marker = Path(f"{ka}.used")
    assert marker.exists() and marker.stat().st_mode & 0o077 == 0
    assert Path(ka).read_bytes()[16:] not in marker.read_bytes()
    store = tmp_path / "keys-alice.sqlite"
    for f in tmp_path.glob("keys-alice.sqlite*"):
        f.unlink()
    again = AuthenticationStage("alice", bootstrap=ka, keystore=str(store))
    with pytest.raises(ConfigError, match="already loaded into a key store"):
        again.setup()
    # a corrupt marker is an error too (never silently ignored)
    marker.write_text("{")
    with pytest.raises(ConfigError, match="is corrupt"):
        AuthenticationStage("alice", bootstrap=ka, keystore=str(store)).setup()
    # a new bootstrap key at the same path is a new pool: taken, and the marker follows it
    Path(ka).unlink()
    write_bootstrap(Path(ka), os.urandom(4096 + 16))
    marker.unlink()
    fresh = AuthenticationStage("alice", bootstrap=ka, keystore=str(store))
    fresh.setup()
    assert fresh.auth is not None and fresh.auth.store.pad_bytes_left("ab", need_ack=True) > 0
    fresh.close()
    Path(ka).unlink()
    write_bootstrap(Path(ka), os.urandom(4096 + 16))  # stale marker of the previous pool
    for f in tmp_path.glob("keys-alice.sqlite*"):
        f.unlink()
    newer = AuthenticationStage("alice", bootstrap=ka, keystore=str(store))
    newer.setup()
    newer.close()


def test_authenticate_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be switched off"):
        AuthenticationStage("alice", keystore=str(tmp_path / "k.sqlite"))
    with pytest.raises(ConfigError, match="key store"):
        AuthenticationStage("alice", bootstrap=str(tmp_path / "k"))
    p = tmp_path / "k"
    write_bootstrap(p, os.urandom(200))
    os.chmod(p, 0o644)
    with pytest.raises(ConfigError, match="permissions"):
        AuthenticationStage("alice", bootstrap=str(p), keystore=str(tmp_path / "k.sqlite")).setup()


def test_authenticate_many_batches_marks_advance(tmp_path: Path) -> None:
    ka, kb = bootstrap_pair(tmp_path)
    a, b = frames([(3000, 0.0)] * 4, key_length=1000)
    sa, sb = auth_pipeline("alice", ka), auth_pipeline("bob", kb)
    res = run_pair(sa, sb, a, b, batch_size=1)
    assert all(f.meta.state is KeyState.AUTHENTICATED for f in res.alice + res.bob)
    # four batches, one 8-byte pad per direction each, same on both sides
    wa, wb = sa[-1].auth, sb[-1].auth
    assert wa is not None and wb is not None
    assert wa.pad_bytes_used == wb.pad_bytes_used == 4 * 16
    assert wa.store.pad_bytes_left("ab", need_ack=False) == 2048 - 8 * wa.lease  # withdrawn
    assert wa.store.pad_bytes_left("ba", need_ack=False, as_receiver=True) == 2048 - 4 * 8
    # every record was covered: the transcripts were trimmed up to the last tag
    assert res.alice_link.transcript.position("sent") > 20
    assert res.alice_link.transcript.base("sent") > 20


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
