"""Bad input: every reader raises CaptureError naming file + byte offset, never crashes or hangs.

Hypothesis mutates real and synthetic files (bit flips, truncation, insertion) and feeds them to
every reader; the only acceptable outcomes are events or a CaptureError (or the native reader's
reported chunk errors).
"""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qkdpp.errors import CaptureError
from qkdpp.io.arrays import write_csv
from qkdpp.io.events import EventChunk
from qkdpp.io.formats import open_capture
from qkdpp.io.native import write_native
from qkdpp.io.ptu import PtuReader, write_ptu_t2
from qkdpp.io.qutag import QutagReader, write_qutag
from qkdpp.io.sfifteen import SFifteenReader

SMALL = {
    "ptu": 3000,  # bytes kept from the start of each real file (header + some records)
}


def _small_ptu(captures: Path, name: str, tmp: Path, nbytes: int = 8000) -> bytes:
    """A real PTU header + first records, with NumberOfRecords patched to 0 (= read to EOF)."""
    raw = bytearray((captures / name).read_bytes()[:nbytes])
    i = raw.find(b"TTResult_NumberOfRecords")
    struct.pack_into("<q", raw, i + 40, 0)
    r = PtuReader(_write(tmp / "hdr.ptu", bytes(raw)))
    cut = r.header_bytes + (len(raw) - r.header_bytes) // 4 * 4
    return bytes(raw[:cut])


def _write(p: Path, data: bytes) -> Path:
    p.write_bytes(data)
    return p


def _read_all(path: Path, fmt: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = open_capture(path, fmt=fmt)
        ev = r.read()
    t = ev.t_ps
    assert t.dtype == np.uint64 and ev.channel.dtype == np.uint8


@pytest.fixture(scope="module")
def seeds(tmp_path_factory, request) -> dict[str, tuple[bytes, str]]:
    tmp = tmp_path_factory.mktemp("seeds")
    rng = np.random.default_rng(0)
    ev = EventChunk.from_arrays(np.sort(rng.integers(0, 10**12, 300)), rng.integers(0, 4, 300))
    out: dict[str, tuple[bytes, str]] = {}
    write_native(tmp / "n.qkdc", ev, {"link": {}}, 100)
    out["native"] = ((tmp / "n.qkdc").read_bytes(), "native")
    write_qutag(tmp / "q.qutag", ev)
    out["qutag"] = ((tmp / "q.qutag").read_bytes(), "qutag")
    write_ptu_t2(tmp / "w.ptu", ev)
    out["ptu_written"] = ((tmp / "w.ptu").read_bytes(), "ptu")
    write_csv(tmp / "a.csv", ev)
    out["csv"] = ((tmp / "a.csv").read_bytes()[:3000], "array")
    cap = Path(__file__).resolve().parents[2] / ".." / "shared" / "captures"
    if (cap / "manifest.json").exists():
        for n in (
            "200204_HH400_T2_320MHz_HBT.ptu",
            "hydraharp_v20_t3.ptu",
            "ptu_stack_FLIM_z1.ptu",
        ):
            out[n] = (_small_ptu(cap, n, tmp), "ptu")
        out["sf"] = ((cap / "timestamp7_c1234.Aa1.ts").read_bytes()[:2400], "sfifteen")
        out["sfX"] = ((cap / "timestamp7_c14_rollover.Aa1fX.ts").read_bytes()[:2400], "sfifteen")
    return out


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_mutated_files_give_clean_errors(seeds, tmp_path, data):
    key = data.draw(st.sampled_from(sorted(seeds)))
    raw, fmt = seeds[key]
    b = bytearray(raw)
    op = data.draw(st.sampled_from(["flip", "truncate", "insert", "overwrite"]))
    if op == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(b) - 1))
            b[i] ^= 1 << data.draw(st.integers(0, 7))
    elif op == "truncate":
        b = b[: data.draw(st.integers(0, len(b)))]
    elif op == "insert":
        i = data.draw(st.integers(0, len(b)))
        b[i:i] = data.draw(st.binary(min_size=1, max_size=16))
    else:
        i = data.draw(st.integers(0, len(b) - 1))
        junk = data.draw(st.binary(min_size=1, max_size=64))
        b[i : i + len(junk)] = junk
    p = tmp_path / (f"m_{key}.csv" if fmt == "array" else f"m_{key}.bin")
    p.write_bytes(bytes(b))
    try:
        _read_all(p, fmt)
    except CaptureError as exc:
        assert str(p) in str(exc)
        assert exc.problem


def test_specific_errors_name_offset(tmp_path, seeds):
    raw, _ = seeds["ptu_written"]
    # wrong magic
    with pytest.raises(CaptureError, match=r"at byte 0: wrong magic"):
        PtuReader(_write(tmp_path / "a.ptu", b"XXXXXXXX" + raw[8:]))
    # truncated: header promises more records
    with pytest.raises(CaptureError, match=r"truncated: header says \d+ records"):
        PtuReader(_write(tmp_path / "b.ptu", raw[:-6]))
    # unknown record type
    b = bytearray(raw)
    i = b.find(b"TTResultFormat_TTTRRecType")
    struct.pack_into("<q", b, i + 40, 0x00990204)
    with pytest.raises(CaptureError, match="unknown or missing PTU record type 0x00990204"):
        PtuReader(_write(tmp_path / "c.ptu", bytes(b)))
    # an invalid special record (HH channel 40) at a known offset
    r = PtuReader(_write(tmp_path / "d.ptu", raw))
    b = bytearray(raw)
    struct.pack_into("<I", b, r.header_bytes + 4 * 5, (1 << 31) | (40 << 25))
    with pytest.raises(CaptureError, match=rf"at byte {r.header_bytes + 20}: invalid"):
        PtuReader(_write(tmp_path / "e.ptu", bytes(b))).read()
    # qutag: truncated record, channel outside 0..255, wrong size
    q, _ = seeds["qutag"]
    with pytest.raises(CaptureError, match="header says the file has"):
        QutagReader(_write(tmp_path / "f.qutag", q[:-3]))
    with pytest.raises(CaptureError, match="truncated record"):
        QutagReader(_write(tmp_path / "g.qutag", q[:-3]), check_size=False)
    b = bytearray(q)
    struct.pack_into("<H", b, 40 + 10 * 7 + 8, 999)
    with pytest.raises(CaptureError, match=r"at byte 110: channel 999"):
        QutagReader(_write(tmp_path / "h.qutag", bytes(b))).read()
    # time going backwards by more than the reorder window
    b = bytearray(q)
    struct.pack_into("<Q", b, 40 + 10 * 200, 0)
    with pytest.raises(CaptureError, match=r"at byte 2040: timestamp goes backwards"):
        QutagReader(_write(tmp_path / "i.qutag", bytes(b)), reorder_window_ps=10**6).read()
    # s-fifteen: partial word, empty pattern
    with pytest.raises(CaptureError, match="at byte 8: truncated event"):
        SFifteenReader(_write(tmp_path / "j.ts", b"\x11" * 12))
    with pytest.raises(CaptureError, match="at byte 0: event with an empty detector pattern"):
        SFifteenReader(_write(tmp_path / "k.ts", struct.pack("<Q", 1 << 20))).read()


def test_bool_record_count_is_not_a_count(tmp_path, seeds):
    """A TTResult_NumberOfRecords tag whose type byte says Bool8 (one flipped bit, found by
    the mutation test above in CI) reads as "no count": the records run to the end of the
    file. Before 2026-11-28 ``True`` reached ``np.memmap`` as the shape (bare TypeError)."""
    raw, _ = seeds["ptu_written"]
    n = PtuReader(_write(tmp_path / "ok.ptu", raw)).read().t_ps.size
    b = bytearray(raw)
    i = b.find(b"TTResult_NumberOfRecords")
    struct.pack_into("<I", b, i + 36, 0x00000008)  # the tag's type: tyBool8 (value stays > 0)
    ev = PtuReader(_write(tmp_path / "bool.ptu", bytes(b))).read()
    assert ev.t_ps.size == n


def test_overflow_storm_is_bounded(tmp_path):
    """A file of nothing but overflow records decodes to no events (fast, no hang)."""
    ev = EventChunk.from_arrays([5], [1])
    p = tmp_path / "s.ptu"
    write_ptu_t2(p, ev)
    r = PtuReader(p)
    raw = p.read_bytes()[: r.header_bytes]
    storm = np.full(200_000, (1 << 31) | (63 << 25) | ((1 << 25) - 1), np.uint32)
    b = bytearray(raw)
    i = b.find(b"TTResult_NumberOfRecords")
    struct.pack_into("<q", b, i + 40, storm.size)
    p.write_bytes(bytes(b) + storm.tobytes())
    with pytest.raises(CaptureError, match=r"at byte \d+: overflow storm"):
        PtuReader(p).read()
    p.write_bytes(bytes(b) + storm[:1000].tobytes() + b"\0" * 4 * (storm.size - 1000))
    assert len(PtuReader(p).read()) == storm.size - 1000  # many wraps, then photons: fine
