"""Payload codec: a small, documented, pickle-free TLV encoding of ``dict[str, Value]``.

Byte layout (big-endian integers), version 1::

    u16 field_count
    repeated field_count times:
        u8 name_length, name (ASCII, 1..64 bytes)
        u8 type tag, then the value:
            'N'  None                       (no bytes)
            'T' / 'F'  True / False         (no bytes)
            'i'  int64                      (8 bytes, two's complement)
            'I'  big int                    (u32 n, n bytes two's complement)
            'f'  float64                    (8 bytes IEEE 754)
            's'  str                        (u32 n, n bytes UTF-8)
            'b'  bytes                      (u32 n, n bytes)
            'a'  ndarray                    (u8 k, k bytes dtype string e.g. "<u4", "|u1", "|b1";
                                             u8 ndim; ndim × u64 shape; data in C order,
                                             little-endian)

Only fixed-width numeric and bool dtypes are accepted (a 0-d array is sent as shape ``(1,)``;
decoded arrays are fresh, writable, native-byte-order copies). Decoding checks every length
against the remaining bytes, rejects unknown tags and dtypes, duplicate names, arrays NumPy cannot
represent and trailing bytes, and raises :class:`~qkdpp.errors.ProtocolError` naming the field and
the offset (counted from the start of the payload).

Implementations: :mod:`qkdpp.protocol._codec_ref` (readable Python, the oracle) and
:mod:`qkdpp.protocol._codec_cy` (Cython: same bytes, same errors; encoding and decoding a
typical Cascade request envelope takes 1.8 µs against 18 µs, ``benchmarks/test_bench_link.py``),
chosen like the kernels by ``QKDPP_BACKEND`` (:mod:`qkdpp.backend`). ``impl(name)``
gives one of them (tests compare both); ``BACKEND`` names the active one.
"""

from __future__ import annotations

from qkdpp import backend as _backend
from qkdpp.protocol._codec_ref import MAX_NAME, MAX_NDIM, Value

BACKEND, _impl, impl, available_backends = _backend.family(
    "qkdpp.protocol", "_codec_cy", "_codec_ref"
)

encode_payload = _impl.encode_payload
decode_payload = _impl.decode_payload
encode_envelope = _impl.encode_envelope
encode_message = _impl.encode_message
decode_envelope = _impl.decode_envelope

__all__ = [
    "BACKEND",
    "MAX_NAME",
    "MAX_NDIM",
    "Value",
    "available_backends",
    "decode_envelope",
    "decode_payload",
    "encode_envelope",
    "encode_message",
    "encode_payload",
    "impl",
]
