"""Every real capture in ../shared/captures decodes to the values in its manifest."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from qkdpp.io import ptu as ptu_mod
from qkdpp.io.events import FLAG_MARKER, FLAG_SYNC
from qkdpp.io.formats import open_capture
from qkdpp.io.ptu import PtuReader
from qkdpp.io.qutag import QutagReader
from qkdpp.io.sfifteen import SFifteenReader, decode_words, units_to_ps
from qkdpp.kernels import ptu as kptu


def test_sha256sums(captures):
    lines = (captures / "SHA256SUMS").read_text().split("\n")
    checked = 0
    for line in filter(None, lines):
        digest, name = line.split()
        assert hashlib.sha256((captures / name).read_bytes()).hexdigest() == digest, name
        checked += 1
    assert checked == 6


def _t2_units(r):
    parts = list(r.iter_t2_units())
    return [np.concatenate([p[i] for p in parts]) for i in range(3)]


@pytest.mark.parametrize("backend", kptu.available_backends())
def test_hydraharp_t2(captures, manifest, backend, monkeypatch):
    monkeypatch.setattr(ptu_mod, "_k", _Disp(backend))
    name = "200204_HH400_T2_320MHz_HBT.ptu"
    m = manifest[name]
    r = PtuReader(captures / name, chunk_events=100_000)  # several chunks: overflow carried
    assert r.header_bytes == m["header_bytes"] and r.version == m["ptu_version"]
    assert r.record_type == int(m["TTResultFormat_TTTRRecType"], 16)
    assert r.n_records == m["records_in_file"] and r.trailing_bytes == m["trailing_bytes"]
    assert r.tags["TTResult_SyncRate"] == m["TTResult_SyncRate"]
    assert r.tags["CreatorSW_Name"] == m["CreatorSW_Name"]
    t, c, f = _t2_units(r)
    d = m["decoded"]
    ph = f == 0
    assert {
        str(k): int(v) for k, v in zip(*np.unique(c[ph], return_counts=True), strict=True)
    } == d["channels"]
    assert int((f == FLAG_SYNC).sum()) == d["sync_records"]
    assert int((f == FLAG_MARKER).sum()) == d["markers"]
    assert m["records_in_file"] - t.size == d["overflow_records"]
    assert int(t[ph][0]) == d["first_photon_time_units"]
    assert int(t[ph][-1]) == d["last_photon_time_units"]
    assert bool(np.all(np.diff(t) >= 0)) == d["monotonic"]
    ev = r.read()  # 1 ps resolution: ps == units
    assert np.array_equal(ev.t_ps.astype(np.int64), t)
    assert [(int(a), int(b)) for a, b in zip(c[:3], t[:3], strict=True)] == [
        (0, 8584904),
        (1, 9093711),
        (0, 9382660),
    ]


class _Disp:
    """Kernel module of one backend with the layout constants."""

    def __init__(self, backend):
        self._m = kptu.impl(backend)
        self.LAYOUT_PH, self.LAYOUT_HH1, self.LAYOUT_HH2 = 0, 1, 2

    def __getattr__(self, k):
        return getattr(self._m, k)


def _t3(r):
    parts = list(r.iter_t3())
    return [np.concatenate([p[i] for p in parts]) for i in range(4)]


@pytest.mark.parametrize("backend", kptu.available_backends())
def test_hydraharp_t3(captures, manifest, backend, monkeypatch):
    monkeypatch.setattr(ptu_mod, "_k", _Disp(backend))
    name = "hydraharp_v20_t3.ptu"
    m = manifest[name]
    r = PtuReader(captures / name, chunk_events=30_000)
    assert r.header_bytes == m["header_bytes"] and r.n_records == m["records_in_file"]
    assert "UsrHeadName(1)" in r.tags and "UsrHeadName(0)" not in r.tags  # quirk tolerated
    ns, dt, c, f = _t3(r)
    d = m["decoded"]
    ph = f == 0
    assert {
        str(k): int(v) for k, v in zip(*np.unique(c[ph], return_counts=True), strict=True)
    } == d["channels"]
    assert int((f == FLAG_MARKER).sum()) == d["markers"]
    assert m["records_in_file"] - ns.size == d["overflow_records"]
    assert int(ns[ph][-1]) == d["last_photon_nsync"] and int(dt.max()) == d["max_dtime"]
    assert list(zip(c[:3].tolist(), ns[:3].tolist(), dt[:3].tolist(), strict=True)) == [
        (1, 1569, 382),
        (0, 5763, 323),
        (0, 5868, 220),
    ]
    ev = r.read()
    sync_ps = m["MeasDesc_GlobalResolution"] * 1e12
    assert int(ev.t_ps[-1]) == round(int(ns[-1]) * sync_ps + int(dt[-1]) * 64.0, 0)


@pytest.mark.parametrize("backend", kptu.available_backends())
def test_picoharp_t3_markers(captures, manifest, backend, monkeypatch):
    monkeypatch.setattr(ptu_mod, "_k", _Disp(backend))
    name = "ptu_stack_FLIM_z1.ptu"
    m = manifest[name]
    r = PtuReader(captures / name, chunk_events=50_000)
    assert r.version == m["ptu_version"] and r.header_bytes == m["header_bytes"]
    assert r.tags["Measurement_SubMode"] == 3
    assert isinstance(r.tags["File_CreatingTime"], float)  # tyFloat8 quirk
    ns, dt, c, f = _t3(r)
    d = m["decoded"]
    ph = f == 0
    assert {
        str(k): int(v) for k, v in zip(*np.unique(c[ph], return_counts=True), strict=True)
    } == d["channels"]
    assert int((f == FLAG_MARKER).sum()) == d["markers"]
    assert m["records_in_file"] - ns.size == d["overflows"]
    assert int(ns[ph][-1]) == d["last_photon_nsync"] and int(dt.max()) == d["max_dtime"]
    assert list(zip(c[ph][:3].tolist(), ns[ph][:3].tolist(), dt[ph][:3].tolist(), strict=True)) == [
        (1, 49894, 56),
        (1, 57305, 14),
        (1, 58786, 22),
    ]


@pytest.mark.parametrize("name", ["timestamp7_c1234.Aa1.ts", "timestamp7_c14_rollover.Aa1fX.ts"])
def test_sfifteen(captures, manifest, name):
    m = manifest[name]
    r = SFifteenReader(captures / name, chunk_events=300)
    assert r.legacy == ("X" in name.split(".")[1])
    words = np.concatenate([w for _, w in r.iter_words()])
    t, dummy, pat = decode_words(words)
    assert t.size == m["events"]
    assert int(dummy.sum()) == m["rollover_flag_events"]
    assert {str(k): int(v) for k, v in zip(*np.unique(pat, return_counts=True), strict=True)} == m[
        "patterns_all"
    ]
    real = dummy == 0
    assert {
        str(k): int(v) for k, v in zip(*np.unique(pat[real], return_counts=True), strict=True)
    } == m["patterns_real_events"]
    assert int(t[0]) == m["first_time_units"] and int(t[-1]) == m["last_time_units"]
    span = (t[real].max() - t[real].min()) / 256e9
    assert abs(span - m["span_real_events_s"]) < 1e-9
    assert int((np.diff(t[real]) < 0).sum()) == m["out_of_order_steps_real_events"]
    ev = r.read()
    # one event per set pattern bit of the real events, time-sorted, in ps
    n_bits = sum(bin(int(p)).count("1") for p in pat[real])
    assert len(ev) == n_bits and np.all(np.diff(ev.t_ps.astype(np.int64)) >= 0)
    assert r.out_of_order == m["out_of_order_steps_real_events"]
    assert np.array_equal(
        np.sort(ev.t_ps),
        np.sort(np.repeat(units_to_ps(t[real]), [bin(int(p)).count("1") for p in pat[real]])),
    )
    # strict mode refuses the legacy file's backward steps, naming a byte offset
    if m["out_of_order_steps_real_events"]:
        from qkdpp.errors import CaptureError

        with pytest.raises(CaptureError, match=r"at byte \d+: timestamp goes backwards"):
            SFifteenReader(captures / name, order="error").read()


def test_qutag(captures, manifest):
    name = "200204_qutag_320MHz_HBT_sync_filtered.qutag"
    m = manifest[name]
    r = QutagReader(captures / name, chunk_events=50_000)
    assert r.n_records == m["records"] and r.info.header["header_hex"] == m["header_hex"]
    ev = r.read()
    assert {
        str(k): int(v) for k, v in zip(*np.unique(ev.channel, return_counts=True), strict=True)
    } == m["channels"]
    assert int(ev.t_ps[0]) == m["first_time"] and int(ev.t_ps[-1]) == m["last_time"]
    assert int(ev.t_ps[-1] - ev.t_ps[0]) == m["span_ps"]
    assert r.out_of_order == m["out_of_order_steps"]


def test_open_capture_detects_formats(captures, manifest):
    for name in manifest:
        r = open_capture(captures / name)
        assert r.info.n_records == manifest[name].get(
            "records_in_file", manifest[name].get("events", manifest[name].get("records"))
        )
