"""Envelope and payload codec: golden fixtures, round trips, and rejection of malformed bytes."""

from __future__ import annotations

import struct
import uuid
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdpp.errors import ProtocolError
from qkdpp.protocol import Envelope, MsgType, decode_payload, encode_payload

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
SID = uuid.UUID("0123456789abcdef0123456789abcdef")


def _golden_payload() -> dict:
    return {
        "n": 5,
        "big": 2**70 + 3,
        "x": 0.25,
        "name": "cascade",
        "raw": b"\x00\xff",
        "ok": True,
        "none": None,
        "par": np.array([1, 0, 1], dtype=np.uint8),
        "idx": np.array([[1, 2], [3, 4]], dtype=np.int64),
    }


def test_payload_golden_fixture() -> None:
    golden = (VECTORS / "payload_v1.hex").read_text().strip()
    assert encode_payload(_golden_payload()).hex() == golden
    decoded = decode_payload(bytes.fromhex(golden))
    assert decoded["big"] == 2**70 + 3 and decoded["name"] == "cascade" and decoded["none"] is None
    assert np.array_equal(decoded["idx"], _golden_payload()["idx"])
    assert decoded["idx"].dtype == np.int64


def test_envelope_golden_fixture_and_layout() -> None:
    payload = encode_payload({"n": 5})
    env = Envelope(MsgType.DATA, SID, 7, 42, "cascade", "parities", payload)
    # Built independently from the documented layout (envelope.py docstring).
    expected = (
        b"QKPP"
        + bytes([1, 0])
        + b"\x00\x00"
        + SID.bytes
        + struct.pack(">QQ", 7, 42)
        + bytes([7])
        + b"cascade"
        + bytes([8])
        + b"parities"
        + struct.pack(">I", len(payload))
        + payload
    )
    assert env.encode() == expected
    golden = (VECTORS / "envelope_v1.hex").read_text().strip()
    assert expected.hex() == golden
    assert Envelope.decode(bytes.fromhex(golden)) == env


@settings(max_examples=50, deadline=None)
@given(
    batch=st.integers(0, 2**64 - 1),
    seq=st.integers(0, 2**64 - 1),
    stage=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=64),
    payload=st.binary(max_size=200),
)
def test_envelope_round_trip(batch: int, seq: int, stage: str, payload: bytes) -> None:
    env = Envelope(MsgType.ABORT, SID, batch, seq, stage, "k", payload)
    assert Envelope.decode(env.encode()) == env


def test_envelope_rejects_malformed() -> None:
    good = Envelope(MsgType.DATA, SID, 1, 2, "s", "k", b"abc").encode()
    cases = {
        "too short": good[:20],
        "bad magic": b"XXXX" + good[4:],
        "bad version": good[:4] + b"\x02" + good[5:],
        "bad type": good[:5] + b"\x09" + good[6:],
        "reserved": good[:6] + b"\x00\x01" + good[8:],
        "truncated payload": good[:-1],
        "trailing": good + b"\x00",
        "zero stage length": good[:40] + b"\x00" + good[41:],
    }
    for name, data in cases.items():
        with pytest.raises(ProtocolError):
            Envelope.decode(data)
        assert name


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=120))
def test_payload_decoder_never_crashes(data: bytes) -> None:
    try:
        decode_payload(data)
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(pos=st.integers(0, 10_000), value=st.integers(0, 255))
def test_mutated_payload_gives_clean_error_or_value(pos: int, value: int) -> None:
    data = bytearray(encode_payload(_golden_payload()))
    data[pos % len(data)] = value
    try:
        decode_payload(bytes(data))
    except ProtocolError:
        pass


def test_payload_rejects_pickle_like_types() -> None:
    with pytest.raises(ProtocolError):
        encode_payload({"obj": object()})
    with pytest.raises(ProtocolError):
        encode_payload({"arr": np.array(["a"], dtype=object)})
    bad = bytearray(encode_payload({"a": np.zeros(2, np.uint8)}))
    bad[bad.index(b"|u1") : bad.index(b"|u1") + 3] = b"|O8"
    with pytest.raises(ProtocolError):
        decode_payload(bytes(bad))
