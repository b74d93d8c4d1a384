"""Adapters: protocol conformance, simulated live pacing, replay, Swabian import guard, CLI."""

from __future__ import annotations

import numpy as np
import pytest

from qkdpp.cli import main
from qkdpp.errors import BackendUnavailable, ConfigError
from qkdpp.io.adapters import AdapterError, ReplayAdapter, SimulatedLiveAdapter, TimeTaggerAdapter
from qkdpp.io.events import concat
from qkdpp.io.native import NativeReader, write_native
from qkdpp.io.simulator import LinkParams, simulate_link
from qkdpp.timing import recover_full


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_simulated_live_adapter_paces_and_recovers():
    clock = FakeClock()
    p = LinkParams(fibre_km=10, clock_offset_ps=3e5, clock_drift_ppm=4.0)
    ad = SimulatedLiveAdapter(p, seed=3, n_slots=4_000_000, clock=clock)
    assert isinstance(ad, TimeTaggerAdapter)
    with pytest.raises(AdapterError):
        ad.read_chunk()
    ad.configure([1, 2, 3, 4])
    ad.start()
    with pytest.raises(AdapterError):
        ad.configure([1])
    assert len(ad.read_chunk(timeout_s=0.0)) == 0  # no time elapsed, nothing due
    chunks = []
    while True:
        clock.t += 1e-3  # 1 ms → 1e6 slots at 1 GHz
        c = ad.read_chunk()
        if c is None:
            break
        chunks.append(c)
    ev = concat(chunks)
    assert sum(r.n_slots for r in ad.alice_records) == 4_000_000
    assert np.all(np.diff(ev.t_ps.astype(np.int64)) >= -200)  # windows abut (jitter only)
    # the windows form one consistent link: timing recovers it across window boundaries
    from qkdpp.io.records import AliceRecord

    recs = ad.alice_records
    alice = AliceRecord.from_classes(
        0,
        4_000_000,
        np.concatenate([r.basis for r in recs]),
        np.concatenate([r.value for r in recs]),
        np.concatenate([r.classes() for r in recs]),
    )
    o = np.argsort(ev.t_ps, kind="stable")
    from qkdpp.io.events import EventChunk

    ev = EventChunk(ev.t_ps[o], ev.channel[o], ev.flags[o])
    _det, fit, st = recover_full(
        ev,
        alice,
        {1: "Z0", 2: "Z1", 3: "X0", 4: "X1"},
        slot_ps=1000.0,
        expected_offset_ps=p.bob_epoch_ps,
    )
    assert abs(fit.drift_ppm - 4.0) < 0.05 and st.fraction_gated < 1e-3
    assert ad.status().events == sum(len(c) for c in chunks)


def test_simulated_adapter_buffer_overflow():
    clock = FakeClock()
    ad = SimulatedLiveAdapter(
        LinkParams(fibre_km=0), seed=1, n_slots=1_000_000, clock=clock, buffer_events=100
    )
    ad.configure([1, 2])
    ad.start()
    clock.t = 1.0
    c = ad.read_chunk()
    assert len(c) <= 100 and set(np.unique(c.channel)) <= {1, 2}
    st = ad.status()
    assert st.overflows == 1 and st.lost_events > 0


def test_replay_adapter(tmp_path):
    p = LinkParams(fibre_km=0)
    _, bob, _ = simulate_link(p, 1_000_000, seed=2)
    f = tmp_path / "b.qkdc"
    write_native(f, bob, {}, 1000)
    ad = ReplayAdapter(f, chunk_events=500)
    ad.configure([1, 2, 3, 4], delays_ps={3: 100})
    ad.start()
    got = []
    while (c := ad.read_chunk()) is not None:
        got.append(c)
    ev = concat(got)
    assert len(ev) == len(bob)
    assert np.array_equal(
        np.sort(ev.t_ps[ev.channel == 3]), np.sort(bob.t_ps[bob.channel == 3] + np.uint64(100))
    )
    ad.stop()
    with pytest.raises(ConfigError, match="not configured"):
        ad.configure([1], delays_ps={2: 5})
    # paced replay releases only what is due
    clock = FakeClock()
    ad = ReplayAdapter(f, pace=True, clock=clock)
    ad.configure([1, 2, 3, 4])
    ad.start()
    first = ad.read_chunk(timeout_s=0.0)
    assert 0 < len(first) < len(bob)


def test_swabian_is_optional():
    pytest.importorskip("numpy")
    try:
        import TimeTagger  # noqa: F401
    except ImportError:
        from qkdpp.io.swabian import SwabianAdapter, TtbinReader

        with pytest.raises(BackendUnavailable, match="swabian-timetagger"):
            SwabianAdapter()
        with pytest.raises(BackendUnavailable):
            TtbinReader(__file__)


@pytest.mark.hardware
def test_swabian_live_hardware():
    from qkdpp.io.swabian import SwabianAdapter

    ad = SwabianAdapter()
    ad.configure([1, 2])
    ad.start()
    c = ad.read_chunk()
    ad.stop()
    assert c is not None


def test_cli_simulate_and_inspect(tmp_path, capsys):
    out = tmp_path / "sim"
    assert main(["simulate", "--out", str(out), "--slots", "200000", "--seed", "3"]) == 0
    text = capsys.readouterr().out
    assert "gain model" in text and "QBER_Z" in text
    assert main(["inspect", str(out / "bob.qkdc")]) == 0
    text = capsys.readouterr().out
    assert "qkdpp-native" in text and "photon 1" in text and "channel_map" in text
    r = NativeReader(out / "bob.qkdc")
    assert r.header["link"]["fibre_km"] == 25.0
    assert main(["simulate", "--out", str(out), "--slots", "100000", "--protocol", "bbm92"]) == 0
    assert main(["inspect", str(tmp_path / "nope.ptu")]) == 1  # clean error, not a traceback


def test_cli_inspect_real_capture(captures, capsys):
    assert main(["inspect", str(captures / "hydraharp_v20_t3.ptu"), "--json"]) == 0
    import json

    s = json.loads(capsys.readouterr().out)
    assert s["channels"]["photon 0"]["count"] == 45012
    assert s["channels"]["photon 1"]["count"] == 32871
