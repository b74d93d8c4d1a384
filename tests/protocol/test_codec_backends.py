"""Compiled wire codec against the Python reference: same bytes, same values, same errors.

Every check compares the two implementations of :mod:`qkdpp.protocol.codec` on the same input:
encodings must be byte-identical, decodings equal in value, type, dtype and shape, and every
rejection a ProtocolError with the same message (so the compiled decoder is exactly as strict).
Without a compiled build only the reference runs (golden fixtures, its own invariants).
"""

from __future__ import annotations

import struct
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qkdpp.errors import ProtocolError
from qkdpp.protocol import codec

from .test_envelope import _golden_payload

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
SID = uuid.UUID("0123456789abcdef0123456789abcdef").bytes
REF = codec.impl("reference")
BACKENDS = codec.available_backends()
IMPLS = [codec.impl(b) for b in BACKENDS]
DTYPES = ["b1", "u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8", "f4", "f8"]
needs_compiled = pytest.mark.skipif(
    "compiled" not in BACKENDS, reason="compiled codec not built (reference only)"
)


def _outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    """("ok", value) or ("error", (type, message)) of ``fn(*args)``."""
    try:
        return "ok", fn(*args)
    except ProtocolError as exc:
        return "error", (type(exc), str(exc))


def _same_value(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return (
            a.dtype == b.dtype
            and a.shape == b.shape
            and a.tobytes() == b.tobytes()
            and a.flags.c_contiguous
            and b.flags.c_contiguous
            and a.flags.writeable
            and b.flags.writeable
        )
    if isinstance(a, float):
        return struct.pack(">d", a) == struct.pack(">d", b)  # NaN and -0.0 bit for bit
    return bool(a == b)


def _same(a: tuple[str, Any], b: tuple[str, Any]) -> bool:
    if a[0] != b[0]:
        return False
    if a[0] == "error":
        return bool(a[1] == b[1])
    va, vb = a[1], b[1]
    if isinstance(va, dict):
        return list(va) == list(vb) and all(_same_value(va[k], vb[k]) for k in va)
    if isinstance(va, tuple):
        return len(va) == len(vb) and all(_same_value(x, y) for x, y in zip(va, vb, strict=True))
    return _same_value(va, vb)


def _all_agree(fn_name: str, *args: Any) -> tuple[str, Any]:
    outcomes = [_outcome(getattr(m, fn_name), *args) for m in IMPLS]
    for o in outcomes[1:]:
        assert _same(outcomes[0], o), (fn_name, outcomes[0], o)
    return outcomes[0]


# -- strategies ---------------------------------------------------------------------------------
names = st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=64)


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray:
    dt = np.dtype(draw(st.sampled_from(DTYPES)))
    if dt.itemsize > 1 and draw(st.booleans()):
        dt = dt.newbyteorder(">")
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=0, max_size=3)))
    n = int(np.prod(shape)) if shape else 1
    raw = draw(st.binary(min_size=n * dt.itemsize, max_size=n * dt.itemsize))
    arr = np.frombuffer(raw, dtype=dt).reshape(shape).copy()
    if dt.kind == "b":
        arr = arr.view(np.uint8).astype(bool)
    form = draw(st.sampled_from(["plain", "transposed", "strided", "readonly"]))
    if form == "transposed" and arr.ndim >= 2:
        arr = arr.T
    elif form == "strided" and arr.ndim >= 1:
        arr = arr[::2]
    elif form == "readonly":
        arr.flags.writeable = False
    return arr


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-(2**200), 2**200),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.binary(max_size=40),
    st.builds(np.int32, st.integers(-(2**31), 2**31 - 1)),
    st.builds(np.uint64, st.integers(0, 2**64 - 1)),
    st.builds(np.float32, st.floats(width=32)),
    st.builds(np.bool_, st.booleans()),
    st.builds(bytearray, st.binary(max_size=10)),
)
values = st.one_of(scalars, arrays())
payloads = st.dictionaries(names, values, max_size=6)


# -- golden fixtures, every backend -------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_golden_fixtures_every_backend(backend: str) -> None:
    m = codec.impl(backend)
    golden = (VECTORS / "payload_v1.hex").read_text().strip()
    assert m.encode_payload(_golden_payload()).hex() == golden
    decoded = m.decode_payload(bytes.fromhex(golden))
    assert _same(("ok", decoded), ("ok", REF.decode_payload(bytes.fromhex(golden))))
    env = (VECTORS / "envelope_v1.hex").read_text().strip()
    payload = m.encode_payload({"n": 5})
    assert m.encode_envelope(0, SID, 7, 42, "cascade", "parities", payload).hex() == env
    assert m.encode_message(0, SID, 7, 42, "cascade", "parities", {"n": 5}).hex() == env
    parts = m.decode_envelope(bytes.fromhex(env))
    assert parts == (0, SID, 7, 42, "cascade", "parities", 46 + 7 + 8)
    assert m.decode_payload(bytes.fromhex(env), parts[6]) == {"n": 5}


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_dim_array_goes_as_shape_one(backend: str) -> None:
    m = codec.impl(backend)
    out = m.decode_payload(m.encode_payload({"z": np.array(3.5)}))["z"]
    assert out.shape == (1,) and out[0] == 3.5


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dims", [(2**63, 0), (2**64 - 1, 0), (0, 2**40, 2**40), (2**62, 0)])
def test_empty_arrays_numpy_cannot_represent_are_rejected(
    backend: str, dims: tuple[int, ...]
) -> None:
    m = codec.impl(backend)
    body = b"\x03<u2" + bytes([len(dims)]) + struct.pack(f">{len(dims)}Q", *dims)
    data = struct.pack(">H", 1) + b"\x01a" + b"a" + body
    with pytest.raises(ProtocolError, match="too large"):
        m.decode_payload(data)


@pytest.mark.parametrize("backend", BACKENDS)
def test_largest_empty_array_numpy_accepts(backend: str) -> None:
    m = codec.impl(backend)
    body = b"\x03|u1\x02" + struct.pack(">QQ", 2**63 - 1, 0)
    out = m.decode_payload(struct.pack(">H", 1) + b"\x01a" + b"a" + body)["a"]
    assert out.shape == (2**63 - 1, 0) and out.dtype == np.uint8


# -- compiled == reference ----------------------------------------------------------------------
@needs_compiled
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=payloads)
def test_encode_decode_agree(payload: dict[str, Any]) -> None:
    kind, data = _all_agree("encode_payload", payload)
    assert kind == "ok"
    kind, decoded = _all_agree("decode_payload", data)
    assert kind == "ok" and list(decoded) == list(payload)
    for k, v in payload.items():
        if isinstance(v, np.ndarray):
            want = v.reshape(1) if v.ndim == 0 else v
            assert decoded[k].dtype == v.dtype.newbyteorder("=")
            assert np.array_equal(decoded[k], want, equal_nan=v.dtype.kind == "f")


@needs_compiled
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payload=payloads,
    batch=st.integers(0, 2**64 - 1),
    seq=st.integers(0, 2**64 - 1),
    mtype=st.integers(0, 3),
    stage=names,
    kind=names,
)
def test_envelopes_agree(
    payload: dict[str, Any], batch: int, seq: int, mtype: int, stage: str, kind: str
) -> None:
    _, body = _all_agree("encode_payload", payload)
    a = _all_agree("encode_envelope", mtype, SID, batch, seq, stage, kind, body)
    b = _all_agree("encode_message", mtype, SID, batch, seq, stage, kind, payload)
    assert a == b and a[0] == "ok"
    kind_, parts = _all_agree("decode_envelope", a[1])
    assert kind_ == "ok" and parts == (mtype, SID, batch, seq, stage, kind, len(a[1]) - len(body))
    assert _same(_all_agree("decode_payload", a[1], parts[6]), _all_agree("decode_payload", body))


@needs_compiled
@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=160), start=st.integers(0, 8))
def test_random_bytes_same_verdict(data: bytes, start: int) -> None:
    start = min(start, len(data))
    _all_agree("decode_payload", data, start)
    _all_agree("decode_envelope", data)


@needs_compiled
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payload=payloads,
    edits=st.lists(
        st.tuples(
            st.sampled_from(["set", "cut", "insert", "delete"]),
            st.integers(0, 10**6),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=3,
    ),
    envelope=st.booleans(),
)
def test_mutated_messages_same_verdict(
    payload: dict[str, Any], edits: list[tuple[str, int, int]], envelope: bool
) -> None:
    """Byte flips, truncation, insertion, deletion of valid messages: equal values or the same
    ProtocolError (message included) from both decoders."""
    if envelope:
        data = bytearray(REF.encode_message(0, SID, 3, 9, "cascade", "cascade.q", payload))
    else:
        data = bytearray(REF.encode_payload(payload))
    for op, pos, val in edits:
        i = pos % (len(data) + 1)
        if op == "set" and i < len(data):
            data[i] = val
        elif op == "cut":
            del data[i:]
        elif op == "insert":
            data[i:i] = bytes([val])
        elif op == "delete" and i < len(data):
            del data[i]
    raw = bytes(data)
    if envelope:
        kind, parts = _all_agree("decode_envelope", raw)
        if kind == "ok":
            _all_agree("decode_payload", raw, parts[6])
    else:
        _all_agree("decode_payload", raw)


@needs_compiled
def test_structural_rejections_same_message() -> None:
    good = REF.encode_payload({"ab": np.zeros((2, 3), np.uint16), "s": "x"})
    cases = [
        b"",
        b"\x00",
        good + b"\x00",
        good[:-1],
        good.replace(b"<u2", b"<c8"),
        good.replace(b"<u2", b">u2"),
        good.replace(b"\x03<u2\x02", b"\x03<u2\x09"),
        good.replace(b"\x02ab", b"\x02a\xff"),
        good.replace(b"\x02ab", b"\x00ab"),
        struct.pack(">H", 2) + good[2:] + good[2:],
        struct.pack(">H", 2) + b"\x01aN" + b"\x01aN",
        struct.pack(">H", 1) + b"\x01aZ",
        REF.encode_payload({"s": "é"}).replace("é".encode(), b"\xc3\x28"),
        struct.pack(">H", 1) + b"\x01a" + b"a\x03|u1\x01" + struct.pack(">Q", 2**64 - 1),
        struct.pack(">H", 1) + b"\x01a" + b"a\x03<u8\x03" + struct.pack(">QQQ", 2**32, 2**32, 2),
    ]
    for data in cases:
        kind, _ = _all_agree("decode_payload", data)
        assert kind == "error", data


@needs_compiled
def test_encode_rejections_same_message() -> None:
    bad: list[Any] = [
        {"obj": object()},
        {"arr": np.array(["a"], dtype=object)},
        {"c": np.zeros(2, np.complex64)},
        {"h": np.zeros(2, np.float16)},
        {"dt": np.zeros(2, "datetime64[s]")},
        {"deep": np.zeros((1,) * 9, np.uint8)},
        {"": 1},
        {"é": 1},
        {"x" * 65: 1},
        {3: 1},
        {"ok": 1, "rec": np.zeros(2, [("a", "u1")])},
    ]
    for fields in bad:
        kind, _ = _all_agree("encode_payload", fields)
        assert kind == "error", fields
        kind, _ = _all_agree("encode_message", 0, SID, 1, 2, "s", "k", fields)
        assert kind == "error", fields
    for args in [
        (4, SID, 1, 2, "s", "k"),
        (0, SID[:15], 1, 2, "s", "k"),
        (0, SID, -1, 2, "s", "k"),
        (0, SID, 1, 2**64, "s", "k"),
        (0, SID, 1, 2, "", "k"),
        (0, SID, 1, 2, "s", "k" * 65),
        (0, SID, 1, 2, "ß", "k"),
        (0, SID, 1, 2, None, "k"),
    ]:
        kind, _ = _all_agree("encode_envelope", *args, b"")
        assert kind == "error", args
        kind, _ = _all_agree("encode_message", *args, {"bad": object()})
        assert kind == "error", args
        kind, _ = _all_agree("encode_message", *args, {})
        assert kind == "error", args


@needs_compiled
def test_large_array_round_trip_agrees() -> None:
    rng = np.random.default_rng(1)
    payload = {"q": rng.integers(0, 2**32, size=(50_000, 3), dtype=np.uint32), "n": 7}
    kind, data = _all_agree("encode_payload", payload)
    assert kind == "ok" and len(data) > 600_000
    kind, out = _all_agree("decode_payload", data)
    assert np.array_equal(out["q"], payload["q"])
