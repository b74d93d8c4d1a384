"""KeyManager logic without HTTP: peer notifications from a hostile/buggy peer, slicing, expiry,
limits and configuration; metrics rendering."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from qkdpp.errors import ConfigError
from qkdpp.frame import FrameMeta, KeyState, Role
from qkdpp.keystore.sqlite import KeyStore
from qkdpp.service.devpair import default_configs, seed_blocks
from qkdpp.service.kme import (
    ApiError,
    InProcessPeer,
    IssuedKey,
    KeyManager,
    KmeConfig,
    TokenBucket,
    block_half,
)
from qkdpp.service.metrics import Metrics


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def kmes(tmp_path: Path):
    clock = Clock()
    sa = KeyStore(tmp_path / "a.sqlite", clock=clock)
    sb = KeyStore(tmp_path / "b.sqlite", clock=clock)
    ids = seed_blocks(sa, sb, 4, 8 * 1000, halves=(0, 1))
    ca, cb = default_configs(pool_ttl=100.0)
    ka = KeyManager(ca, sa, clock=clock)
    kb = KeyManager(cb, sb, clock=clock)
    ka.connect(InProcessPeer("kme-a", kb))
    kb.connect(InProcessPeer("kme-b", ka))
    yield ka, kb, ids, clock
    for x in (ka, kb, sa, sb):
        x.close()


def test_slicing_is_sequential_and_identical(kmes) -> None:
    ka, kb, _ids, _ = kmes
    out = ka.enc_keys("sae-a1", "sae-b1", 3, 2400)  # 300 bytes each: 3 fit in a 1000-byte block
    more = ka.enc_keys("sae-a1", "sae-b1", 1, 2400)  # does not fit the remainder: next block
    rows = kb._db.run(
        lambda db: db.execute(
            "SELECT key_id, block_id, off FROM kme_keys ORDER BY created, off"
        ).fetchall()
    )
    offs = {r[0]: (r[1], r[2]) for r in rows}
    assert [offs[k][1] for k, _ in out] == [0, 300, 600]
    assert offs[more[0][0]][1] == 0 and offs[more[0][0]][0] != offs[out[0][0]][0]
    assert all(block_half(offs[k][0]) == 0 for k, _ in out + more)
    got = kb.dec_keys("sae-b1", "sae-a1", [k for k, _ in out + more])
    assert got == out + more


def notice(block: str, off: int = 0, n_bits: int = 256, **kw) -> IssuedKey:
    base = dict(
        key_id=str(uuid.uuid4()),
        block_id=block,
        off=off,
        n_bits=n_bits,
        master_sae="sae-a1",
        slave_sae="sae-b1",
    )
    base.update(kw)
    return IssuedKey(**base)


def test_hostile_peer_notifications_refused(kmes) -> None:
    _ka, kb, ids, _ = kmes
    half0 = [i for i in ids if block_half(i) == 0]
    half1 = [i for i in ids if block_half(i) == 1]
    ok = notice(half0[0], 0)
    kb.accept_issued([ok], source_kme_id="kme-a")
    bad = [
        ([notice(half0[0], 0)], "kme-b", 401),  # not from the peer KME
        ([notice(half1[0], 0)], "kme-a", 400),  # block of B's own half
        ([notice(half0[0], 16)], "kme-a", 400),  # overlaps the issued range [0, 32)
        ([notice(half0[0], 990)], "kme-a", 400),  # beyond the 1000-byte block
        ([notice(half0[0], 100), notice(half0[0], 120)], "kme-a", 400),  # overlap in one message
        ([notice(str(uuid.UUID(int=5)), 0)], "kme-a", 400),  # unknown block
        ([notice(half0[0], 200, master_sae="sae-b2")], "kme-a", 400),  # SAE on the wrong side
        ([notice(half0[0], 200, slave_sae="sae-a2")], "kme-a", 400),
        ([notice(half0[0], 200, n_bits=12)], "kme-a", 400),
        ([notice(half0[0], 200, key_id=ok.key_id)], "kme-a", 400),  # reused key_ID
        ([], "kme-a", 400),
    ]
    for keys, src, status in bad:
        with pytest.raises(ApiError) as exc:
            kb.accept_issued(keys, source_kme_id=src)
        assert exc.value.status == status, (keys, exc.value)
    # nothing of the refused notifications was recorded; the good key is intact and single-use
    assert kb.pool_stats().get("keys_dec_issued") == 1
    (k,) = kb.dec_keys("sae-b1", "sae-a1", [ok.key_id])
    assert len(k[1]) == 32
    with pytest.raises(ApiError) as exc:
        kb.dec_keys("sae-b1", "sae-a1", [ok.key_id])
    assert exc.value.status == 401


def test_expiry_drops_pool_and_unretrieved_keys(kmes) -> None:
    ka, kb, _, clock = kmes
    out = ka.enc_keys("sae-a1", "sae-b1", 2, 256)
    clock.t += 101.0
    assert ka.expire() == 1 and kb.expire() == 1
    with pytest.raises(ApiError) as exc:
        kb.dec_keys("sae-b1", "sae-a1", [k for k, _ in out])
    assert exc.value.status == 401
    events = [r["event"] for r in kb.audit()]
    assert events.count("expired") == 2
    n_chunks = kb._db.run(lambda db: db.execute("SELECT COUNT(*) FROM kme_chunks").fetchone()[0])
    assert n_chunks == 0


def test_status_counts_only_own_half(kmes) -> None:
    ka, kb, _, _ = kmes
    st = ka.status("sae-a1", "sae-b1")
    assert st["stored_key_count"] == 2 * 8000 // 256
    assert st["max_SAE_ID_count"] == 0 and st["key_size"] == 256
    assert kb.status("sae-b1", "sae-a1")["stored_key_count"] == 2 * 8000 // 256


def test_insufficient_key_keeps_pool(kmes) -> None:
    ka, _, _, _ = kmes
    with pytest.raises(ApiError) as exc:
        ka.enc_keys("sae-a1", "sae-b1", 100, 8192)
    assert exc.value.status == 503
    # the blocks imported while looking stay available, nothing was allocated
    assert ka.pool_stats()["pool_bits"] == 2 * 8000
    assert len(ka.enc_keys("sae-a1", "sae-b1", 2, 8000)) == 2


def test_validation_helpers(kmes) -> None:
    ka, _, _, _ = kmes
    assert ka.parse_enc_request(None, None) == (1, 256)
    for number, size in ((0, 256), (129, 256), (True, 256), (1, 1.5), (1, 72 * 2 + 4), (1, 8)):
        with pytest.raises(ApiError) as exc:
            ka.parse_enc_request(number, size)
        assert exc.value.status == 400
    u = str(uuid.uuid4())
    assert ka.parse_key_ids([{"key_ID": u.upper()}]) == [u]  # RFC 4122: case-insensitive
    for bad in (u.replace("-", ""), "urn:uuid:" + u, u + " ", 5, None):
        with pytest.raises(ApiError):
            ka.parse_key_ids([{"key_ID": bad}])
    assert ka.parse_key_ids([{"key_ID": u}]) == [u]
    with pytest.raises(ApiError) as exc:
        ka.check_local_sae("sae-b1")
    assert exc.value.status == 401


def test_config_validation() -> None:
    a, _ = default_configs()
    with pytest.raises(ConfigError):
        KmeConfig(
            kme_id="x",
            peer_kme_id="x",
            local_saes=frozenset(),
            remote_saes=frozenset(),
            issuer_half=0,
        )
    with pytest.raises(ConfigError):
        KmeConfig.from_dict({**a.__dict__, "issuer_half": 2})
    with pytest.raises(ConfigError):
        KmeConfig.from_dict({**a.__dict__, "key_size": 100})
    with pytest.raises(ConfigError):
        KmeConfig.from_dict({**a.__dict__, "bogus": 1})
    with pytest.raises(ConfigError):
        KmeConfig.from_dict({**a.__dict__, "remote_saes": ["sae-a1"]})


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        # a lone string was taken letter by letter: CNs "s", "a", "e", ... allowed to call
        ("local_saes", "sae-a1", "must be a list of names"),
        ("local_saes", {"sae-a1": 1}, "must be a list of names"),  # (a TOML table)
        ("monitors", "prometheus", "must be a list of names"),
        ("remote_saes", ["sae-b1", ""], "non-empty strings"),
        ("local_saes", [], "at least one SAE"),
        ("kme_id", 1, "kme_id must be a string"),
        ("issuer_half", True, "issuer_half must be an integer"),
        ("max_key_per_request", float("nan"), "must be an integer"),
        ("pool_ttl", float("nan"), "pool_ttl must be a finite number"),
        ("rate_per_s", "fast", "rate_per_s must be a finite number"),
        ("max_key_count", 0, "max_key_count must be >= 1"),
    ],
)
def test_config_types(key: str, value: object, problem: str) -> None:
    """Before 2026-11-28 these were accepted, or failed later with a TypeError."""
    a, _ = default_configs()
    with pytest.raises(ConfigError, match=problem):
        KmeConfig.from_dict({**a.__dict__, key: value})
    with pytest.raises(ConfigError, match=r"lacks \['kme_id'\]"):
        KmeConfig.from_dict({k: v for k, v in a.__dict__.items() if k != "kme_id"})


def test_token_bucket() -> None:
    t = [0.0]
    b = TokenBucket(2.0, 4.0, clock=lambda: t[0])
    assert [b.take() for _ in range(5)] == [True] * 4 + [False]
    t[0] += 1.0
    assert b.take(2.0) and not b.take(1.0)
    assert not b.take(5.0)  # more than the burst never passes


def test_metrics_render_and_frames() -> None:
    m = Metrics()
    meta = FrameMeta(session_id="s", frame_id=0, role=Role.ALICE)
    ok = (
        meta.with_leak("ec", "syndrome", 100)
        .with_eps("pa", "eps_pa", 1e-10)
        .advance(KeyState.AUTHENTICATED, n_bits=5000, qber=0.021)
    )
    m.observe_frame(ok, now=10.0)
    m.observe_frame(ok, now=12.0)
    m.observe_frame(meta.failed("qber_above_threshold: 0.2 > 0.11"), now=13.0)
    text = m.render()
    assert "# TYPE qkdpp_qber gauge" in text
    assert "qkdpp_qber 0.021" in text
    assert "qkdpp_secret_key_bits_total 10000" in text
    assert "qkdpp_secret_key_rate_bps 2500" in text
    assert 'qkdpp_aborts_total{reason="qber_above_threshold"} 1' in text
    assert 'qkdpp_blocks_total{state="ok"} 2' in text
    assert "qkdpp_leaked_bits_total 200" in text
    m.observe_auth_pool(128)
    assert "qkdpp_auth_reserve_bits 1024" in m.render()
    m.inc("x_total", path='a"b\\c')
    assert 'x_total{path="a\\"b\\\\c"} 1' in m.render()
    with pytest.raises(ValueError):
        m.inc("x_total", -1)


def test_one_directional_issue_modes(tmp_path: Path) -> None:
    from dataclasses import replace

    clock = Clock()
    sa = KeyStore(tmp_path / "a.sqlite", clock=clock)
    sb = KeyStore(tmp_path / "b.sqlite", clock=clock)
    seed_blocks(sa, sb, 4, 8 * 1000, halves=(0, 1))
    ca, cb = default_configs()
    ka = KeyManager(replace(ca, issue_mode="all"), sa, clock=clock)
    kb = KeyManager(replace(cb, issue_mode="none"), sb, clock=clock)
    ka.connect(InProcessPeer("kme-a", kb))
    kb.connect(InProcessPeer("kme-b", ka))
    try:
        assert ka.status("sae-a1", "sae-b1")["stored_key_count"] == 4 * 8000 // 256
        assert kb.status("sae-b1", "sae-a1")["stored_key_count"] == 0
        out = ka.enc_keys("sae-a1", "sae-b1", 4, 8000)  # one key per block: both halves used
        assert kb.dec_keys("sae-b1", "sae-a1", [k for k, _ in out]) == out
        with pytest.raises(ApiError) as exc:
            kb.enc_keys("sae-b1", "sae-a1", 1, 256)
        assert exc.value.status == 503
    finally:
        for x in (ka, kb, sa, sb):
            x.close()
    with pytest.raises(ConfigError):
        replace(ca, issue_mode="both")
