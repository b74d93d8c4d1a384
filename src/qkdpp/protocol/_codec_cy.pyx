# cython: language_level=3
"""Compiled wire codec (Cython): the same functions, bytes and errors as
:mod:`qkdpp.protocol._codec_ref` (the readable oracle; tests compare the two on random and
mutated input).

Why it is faster: one pass sizes a message and normalises its values, a second writes it into a
single ``bytes`` object (envelope header, names and payload; array data copied once); decoding
reads the envelope or payload in place (no slices), builds arrays with one allocation and one
``memcpy``, and formats error messages only on the error path. Little-endian hosts only: on a
big-endian host the import fails and :mod:`qkdpp.protocol.codec` uses the reference.
"""

import sys

import numpy as np

cimport numpy as cnp
from cpython.object cimport PyObject
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeASCII, PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

from qkdpp.errors import ProtocolError
from qkdpp.protocol import _codec_ref
from qkdpp.protocol._codec_ref import DTYPES, canonical_array

cnp.import_array()

if sys.byteorder != "little":  # pragma: no cover - the wire is little-endian for arrays
    raise ImportError("the compiled wire codec needs a little-endian host")

cdef extern from *:
    """
    static inline unsigned long long qk_bswap64(unsigned long long x) {
        return __builtin_bswap64(x);
    }
    static inline int qk_mul_overflow(unsigned long long a, unsigned long long b,
                                      unsigned long long *r) {
        return __builtin_mul_overflow(a, b, r);
    }
    """
    unsigned long long qk_bswap64(unsigned long long x) nogil
    int qk_mul_overflow(unsigned long long a, unsigned long long b, unsigned long long *r) nogil

cdef int MAX_NAME = _codec_ref.MAX_NAME
cdef int MAX_NDIM = _codec_ref.MAX_NDIM
cdef unsigned long long MAX_NBYTES = _codec_ref.MAX_NBYTES
cdef bytes _MAGIC = b"QKPP"
cdef int _VERSION = 1
cdef int _N_TYPES = 4
cdef Py_ssize_t _HEAD_SIZE = 40
cdef Py_ssize_t _MIN_ENVELOPE = 46
cdef object _I64_LO = -(2**63)
cdef object _I64_HI = 2**63
cdef object _U64_HI = 2**64

# the 11 allowed dtype keys (3 ASCII bytes each) and their NumPy type numbers
cdef bytes _KEYS = b"|b1|u1<u2<u4<u8|i1<i2<i4<i8<f4<f8"
cdef int _TYPENUMS[11]
cdef int _ITEMSIZE[11]
for _j, _key in enumerate(("|b1", "|u1", "<u2", "<u4", "<u8", "|i1", "<i2", "<i4", "<i8",
                           "<f4", "<f8")):
    _TYPENUMS[_j] = DTYPES[_key].num
    _ITEMSIZE[_j] = DTYPES[_key].itemsize
    assert DTYPES[_key].str == _key
assert len(DTYPES) == 11
cdef list _KEY_STRS = [_KEYS[3 * j : 3 * j + 3] for j in range(11)]


# -- little helpers -----------------------------------------------------------------------------
cdef inline void _put_u16(uint8_t* p, unsigned int v) noexcept:
    p[0] = <uint8_t>(v >> 8)
    p[1] = <uint8_t>v


cdef inline void _put_u32(uint8_t* p, uint32_t v) noexcept:
    p[0] = <uint8_t>(v >> 24)
    p[1] = <uint8_t>(v >> 16)
    p[2] = <uint8_t>(v >> 8)
    p[3] = <uint8_t>v


cdef inline void _put_u64(uint8_t* p, uint64_t v) noexcept:
    v = qk_bswap64(v)
    memcpy(p, &v, 8)


cdef inline uint32_t _get_u32(const uint8_t* p) noexcept:
    return ((<uint32_t>p[0]) << 24) | ((<uint32_t>p[1]) << 16) | ((<uint32_t>p[2]) << 8) | p[3]


cdef inline uint64_t _get_u64(const uint8_t* p) noexcept:
    cdef uint64_t v
    memcpy(&v, p, 8)
    return qk_bswap64(v)


cdef int _key_index(char kind, Py_ssize_t itemsize) noexcept:
    """Index into the key table of an allowed (dtype kind, itemsize), else -1."""
    if kind == b"b":
        return 0 if itemsize == 1 else -1
    if kind == b"u" or kind == b"i":
        if itemsize == 1:
            j = 1
        elif itemsize == 2:
            j = 2
        elif itemsize == 4:
            j = 3
        elif itemsize == 8:
            j = 4
        else:
            return -1
        return j if kind == b"u" else j + 4
    if kind == b"f":
        return 9 if itemsize == 4 else (10 if itemsize == 8 else -1)
    return -1


cdef inline int _key_lookup(const uint8_t* p, Py_ssize_t k) noexcept:
    """Index of the 3-byte dtype key at ``p`` in the table, -1 if not allowed."""
    cdef const uint8_t* keys = <const uint8_t*>PyBytes_AS_STRING(_KEYS)
    cdef int j
    if k != 3:
        return -1
    for j in range(11):
        if p[0] == keys[3 * j] and p[1] == keys[3 * j + 1] and p[2] == keys[3 * j + 2]:
            return j
    return -1


# -- encoding -----------------------------------------------------------------------------------
# Pass 1 (_plan) checks every field and appends (name bytes, tag, value) triples to a list,
# returning the payload size; pass 2 (_write) writes them. Pass 2 reads only the list, so a
# mapping changed in between cannot make it write past the buffer.

cdef Py_ssize_t _plan(fields, list items) except -1:
    fields = fields or {}
    cdef Py_ssize_t n = len(fields)
    if n > 0xFFFF:
        raise ProtocolError(f"too many payload fields: {n} > 65535")
    cdef Py_ssize_t size = 2
    cdef Py_ssize_t count = 0
    cdef cnp.ndarray arr
    for name, value in fields.items():
        count += 1
        if isinstance(name, str) and name.isascii():
            raw = (<str>name).encode("ascii")
        else:
            raw = b""
        if not 1 <= len(raw) <= MAX_NAME:
            raise ProtocolError(f"payload field name must be 1..{MAX_NAME} ASCII chars: {name!r}")
        size += 1 + len(raw) + 1
        t = type(value)
        if t is int:
            tag, obj = _plan_int(value)
        elif t is float:
            tag, obj = 0x66, value
        elif t is np.ndarray:
            tag, obj = 0x61, _plan_array(name, value)
        elif t is str:
            tag, obj = 0x73, (<str>value).encode("utf-8")
        elif t is bytes:
            tag, obj = 0x62, value
        elif value is None:
            tag, obj = 0x4E, None
        elif isinstance(value, (bool, np.bool_)):
            tag, obj = (0x54 if value else 0x46), None
        elif isinstance(value, (int, np.integer)):
            tag, obj = _plan_int(int(value))
        elif isinstance(value, (float, np.floating)):
            tag, obj = 0x66, float(value)
        elif isinstance(value, str):
            tag, obj = 0x73, value.encode("utf-8")
        elif isinstance(value, (bytes, bytearray, memoryview)):
            tag, obj = 0x62, bytes(value)
        elif isinstance(value, np.ndarray):
            tag, obj = 0x61, _plan_array(name, value)
        else:
            raise ProtocolError(
                f"payload field {name!r}: type {type(value).__name__} is not encodable"
            )
        if tag == 0x69 or tag == 0x66:
            size += 8
        elif tag == 0x73 or tag == 0x62 or tag == 0x49:
            if len(obj) > 0xFFFFFFFF:
                raise ProtocolError(f"payload field {name!r}: {len(obj)} bytes > 2**32 - 1")
            size += 4 + len(obj)
        elif tag == 0x61:
            arr = <cnp.ndarray>(obj[1])
            size += 1 + 3 + 1 + 8 * cnp.PyArray_NDIM(arr) + cnp.PyArray_NBYTES(arr)
        items.append(raw)
        items.append(tag)
        items.append(obj)
    if count != n:
        raise RuntimeError("payload mapping changed size during encoding")
    return size


cdef tuple _plan_int(v):
    if _I64_LO <= v < _I64_HI:
        return 0x69, v
    return 0x49, v.to_bytes((v.bit_length() + 8) // 8, "big", signed=True)


cdef tuple _plan_array(name, value):
    """(key index, C-contiguous little-endian ndarray of ndim >= 1), as canonical_array."""
    cdef cnp.ndarray arr
    cdef cnp.dtype descr
    cdef int j
    if type(value) is np.ndarray:
        arr = <cnp.ndarray>value
        if (
            cnp.PyArray_IS_C_CONTIGUOUS(arr)
            and cnp.PyArray_NDIM(arr) >= 1
            and cnp.PyArray_ISNOTSWAPPED(arr)
        ):
            descr = <cnp.dtype>(<PyObject*>cnp.PyArray_DESCR(arr))
            j = _key_index(descr.kind, cnp.PyArray_ITEMSIZE(arr))
            if j >= 0:
                if cnp.PyArray_NDIM(arr) > MAX_NDIM:
                    raise ProtocolError(
                        f"payload field {name!r}: ndim {cnp.PyArray_NDIM(arr)} > {MAX_NDIM}"
                    )
                return j, arr
    key, canon = canonical_array(name, value)
    return _KEY_STRS.index(key.encode("ascii")), canon


cdef Py_ssize_t _write(list items, uint8_t* p) except -1:
    """Write the planned payload at ``p``; returns the bytes written."""
    cdef Py_ssize_t pos = 2, i, k, d, nb
    cdef Py_ssize_t nfields = len(items) // 3
    cdef int tag, j, ndim
    cdef double f
    cdef int64_t iv
    cdef uint64_t u
    cdef cnp.ndarray arr
    cdef cnp.npy_intp* shape
    cdef const uint8_t* keys = <const uint8_t*>PyBytes_AS_STRING(_KEYS)
    _put_u16(p, <unsigned int>nfields)
    for i in range(nfields):
        raw = <bytes>items[3 * i]
        tag = items[3 * i + 1]
        obj = items[3 * i + 2]
        k = PyBytes_GET_SIZE(raw)
        p[pos] = <uint8_t>k
        memcpy(p + pos + 1, PyBytes_AS_STRING(raw), k)
        pos += 1 + k
        p[pos] = <uint8_t>tag
        pos += 1
        if tag == 0x69:
            iv = obj
            _put_u64(p + pos, <uint64_t>iv)
            pos += 8
        elif tag == 0x66:
            f = obj
            memcpy(&u, &f, 8)
            _put_u64(p + pos, u)
            pos += 8
        elif tag == 0x73 or tag == 0x62 or tag == 0x49:
            k = PyBytes_GET_SIZE(<bytes>obj)
            _put_u32(p + pos, <uint32_t>k)
            memcpy(p + pos + 4, PyBytes_AS_STRING(<bytes>obj), k)
            pos += 4 + k
        elif tag == 0x61:
            j = obj[0]
            arr = <cnp.ndarray>(obj[1])
            p[pos] = 3
            memcpy(p + pos + 1, keys + 3 * j, 3)
            ndim = cnp.PyArray_NDIM(arr)
            p[pos + 4] = <uint8_t>ndim
            pos += 5
            shape = cnp.PyArray_DIMS(arr)
            for d in range(ndim):
                _put_u64(p + pos, <uint64_t>shape[d])
                pos += 8
            nb = cnp.PyArray_NBYTES(arr)
            if nb:
                memcpy(p + pos, cnp.PyArray_DATA(arr), nb)
            pos += nb
    return pos


def encode_payload(fields):
    """Encode a mapping of named values (layout: :mod:`qkdpp.protocol.codec`)."""
    cdef list items = []
    cdef Py_ssize_t size = _plan(fields, items)
    out = PyBytes_FromStringAndSize(NULL, size)
    cdef uint8_t* p = <uint8_t*>PyBytes_AS_STRING(out)
    if _write(items, p) != size:
        raise RuntimeError("payload size mismatch")  # pragma: no cover - a bug, never input
    return out


cdef bytes _name(value, what):
    if not isinstance(value, str):
        raise ProtocolError(f"envelope {what} must be 1..{MAX_NAME} ASCII chars, got {value!r}")
    if not (<str>value).isascii() or not 1 <= len(<str>value) <= MAX_NAME:
        raise ProtocolError(f"envelope {what} must be 1..{MAX_NAME} ASCII chars, got {value!r}")
    return (<str>value).encode("ascii")


cdef bytes _envelope_sized(int mtype, session_id, batch_id, seq, stage, kind, Py_ssize_t plen):
    """Envelope of a ``plen``-byte payload, payload bytes left for the caller to write (checks and
    messages as the reference ``encode_envelope``)."""
    if not 0 <= mtype < _N_TYPES:
        raise ProtocolError(f"envelope type {mtype} is not one of 0..{_N_TYPES - 1}")
    if len(session_id) != 16:
        raise ProtocolError(f"session id must be 16 bytes, got {len(session_id)}")
    cdef bytes sid = bytes(session_id)
    cdef bytes stage_b = _name(stage, "stage")
    cdef bytes kind_b = _name(kind, "kind")
    if not 0 <= batch_id < _U64_HI or not 0 <= seq < _U64_HI:
        raise ProtocolError(f"batch id {batch_id} or seq {seq} out of u64 range")
    if plen > 0xFFFFFFFF:
        raise ProtocolError(f"payload of {plen} bytes does not fit the u32 length field")
    cdef uint64_t b = batch_id, s = seq
    cdef Py_ssize_t S = PyBytes_GET_SIZE(stage_b), K = PyBytes_GET_SIZE(kind_b)
    cdef Py_ssize_t total = 46 + S + K + plen
    out = PyBytes_FromStringAndSize(NULL, total)
    cdef uint8_t* p = <uint8_t*>PyBytes_AS_STRING(out)
    memcpy(p, PyBytes_AS_STRING(_MAGIC), 4)
    p[4] = <uint8_t>_VERSION
    p[5] = <uint8_t>mtype
    p[6] = 0
    p[7] = 0
    memcpy(p + 8, PyBytes_AS_STRING(sid), 16)
    _put_u64(p + 24, b)
    _put_u64(p + 32, s)
    p[40] = <uint8_t>S
    memcpy(p + 41, PyBytes_AS_STRING(stage_b), S)
    p[41 + S] = <uint8_t>K
    memcpy(p + 42 + S, PyBytes_AS_STRING(kind_b), K)
    _put_u32(p + 42 + S + K, <uint32_t>plen)
    return out


def encode_envelope(mtype, session_id, batch_id, seq, stage, kind, payload):
    """Envelope bytes around an encoded payload (see :mod:`qkdpp.protocol._codec_ref`)."""
    cdef bytes pb = payload if type(payload) is bytes else bytes(payload)
    cdef Py_ssize_t plen = PyBytes_GET_SIZE(pb)
    out = _envelope_sized(mtype, session_id, batch_id, seq, stage, kind, plen)
    cdef Py_ssize_t total = PyBytes_GET_SIZE(out)
    if plen:
        memcpy(<uint8_t*>PyBytes_AS_STRING(out) + total - plen, PyBytes_AS_STRING(pb), plen)
    return out


def encode_message(mtype, session_id, batch_id, seq, stage, kind, fields):
    """``encode_envelope(..., encode_payload(fields))`` in one buffer (payload errors first)."""
    cdef list items = []
    cdef Py_ssize_t size = _plan(fields, items)
    out = _envelope_sized(mtype, session_id, batch_id, seq, stage, kind, size)
    cdef Py_ssize_t total = PyBytes_GET_SIZE(out)
    cdef uint8_t* p = <uint8_t*>PyBytes_AS_STRING(out) + total - size
    if _write(items, p) != size:
        raise RuntimeError("payload size mismatch")  # pragma: no cover - a bug, never input
    return out


# -- decoding -----------------------------------------------------------------------------------
# what a read was for, named in the truncation message
cdef enum:
    W_COUNT = 0
    W_NAME_LEN = 1
    W_NAME = 2
    W_TYPE = 3
    W_VALUE = 4


cdef str _what(int code, name):
    if code == W_COUNT:
        return "field count"
    if code == W_NAME_LEN:
        return "field name length"
    if code == W_NAME:
        return "field name"
    if code == W_TYPE:
        return f"type of {name!r}"
    return name


cdef class _Cursor:
    """Strict cursor over ``data[base:]`` (positions in messages count from ``base``)."""

    cdef bytes data
    cdef const uint8_t* p
    cdef Py_ssize_t base, pos, end

    cdef inline Py_ssize_t need(self, Py_ssize_t n, int what, name) except -1:
        """Start position of the next ``n`` bytes (advances past them)."""
        cdef Py_ssize_t at = self.pos
        if n > self.end - at:
            raise ProtocolError(
                f"payload truncated at offset {at - self.base}: {_what(what, name)} needs {n} "
                f"bytes, {self.end - at} left"
            )
        self.pos = at + n
        return at


cdef _Cursor _cursor(data, Py_ssize_t start):
    cdef _Cursor r = _Cursor.__new__(_Cursor)
    r.data = data if type(data) is bytes else bytes(data)
    r.end = PyBytes_GET_SIZE(r.data)
    if not 0 <= start <= r.end:
        raise ValueError(f"payload start {start} outside 0..{r.end}")
    r.p = <const uint8_t*>PyBytes_AS_STRING(r.data)
    r.base = start
    r.pos = start
    return r


def decode_payload(data, Py_ssize_t start=0):
    """Decode the payload ``data[start:]``; strict (see :mod:`qkdpp.protocol._codec_ref`)."""
    cdef _Cursor r = _cursor(data, start)
    cdef Py_ssize_t at, i, j, n, count
    cdef const uint8_t* q
    cdef dict fields = {}
    at = r.need(2, W_COUNT, None)
    count = (<Py_ssize_t>r.p[at] << 8) | r.p[at + 1]
    for i in range(count):
        at = r.pos - r.base
        n = r.p[r.need(1, W_NAME_LEN, None)]
        q = r.p + r.need(n, W_NAME, None)
        for j in range(n):
            if q[j] >= 0x80:
                raise ProtocolError(f"payload field name at offset {at} is not ASCII")
        if n == 0:
            raise ProtocolError(f"empty payload field name at offset {at}")
        name = PyUnicode_DecodeASCII(<const char*>q, n, NULL)
        if name in fields:
            raise ProtocolError(f"duplicate payload field {name!r} at offset {at}")
        fields[name] = _decode_value(r, name)
    if r.pos != r.end:
        raise ProtocolError(
            f"{r.end - r.pos} trailing bytes after payload at offset {r.pos - r.base}"
        )
    return fields


cdef object _decode_value(_Cursor r, name):
    cdef Py_ssize_t at = r.pos - r.base
    cdef Py_ssize_t pos, n, k, left, nbytes
    cdef int tag = r.p[r.need(1, W_TYPE, name)]
    cdef uint64_t u
    cdef double f
    cdef int j, ndim, d
    cdef uint64_t dims[8]
    cdef cnp.npy_intp npdims[8]
    cdef unsigned long long prod
    cdef bint zero, over
    cdef cnp.ndarray arr
    if tag == 0x4E:  # N
        return None
    if tag == 0x54:  # T
        return True
    if tag == 0x46:  # F
        return False
    if tag == 0x69:  # i
        return <int64_t>_get_u64(r.p + r.need(8, W_VALUE, name))
    if tag == 0x49:  # I
        n = _get_u32(r.p + r.need(4, W_VALUE, name))
        pos = r.need(n, W_VALUE, name)
        return int.from_bytes(r.data[pos : pos + n], "big", signed=True)
    if tag == 0x66:  # f
        u = _get_u64(r.p + r.need(8, W_VALUE, name))
        memcpy(&f, &u, 8)
        return f
    if tag == 0x73:  # s
        n = _get_u32(r.p + r.need(4, W_VALUE, name))
        pos = r.need(n, W_VALUE, name)
        try:
            return PyUnicode_DecodeUTF8(<const char*>(r.p + pos), n, NULL)
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"payload field {name!r} at offset {at}: invalid UTF-8") from exc
    if tag == 0x62:  # b
        n = _get_u32(r.p + r.need(4, W_VALUE, name))
        pos = r.need(n, W_VALUE, name)
        return PyBytes_FromStringAndSize(<const char*>(r.p + pos), n)
    if tag == 0x61:  # a
        k = r.p[r.need(1, W_VALUE, name)]
        pos = r.need(k, W_VALUE, name)
        j = _key_lookup(r.p + pos, k)
        if j < 0:
            key = r.data[pos : pos + k].decode("ascii", errors="replace")
            raise ProtocolError(f"payload field {name!r} at offset {at}: dtype {key!r} not allowed")
        ndim = r.p[r.need(1, W_VALUE, name)]
        if ndim > MAX_NDIM:
            raise ProtocolError(f"payload field {name!r} at offset {at}: ndim {ndim} > {MAX_NDIM}")
        pos = r.need(8 * ndim, W_VALUE, name)
        zero = False
        over = False
        prod = <unsigned long long>_ITEMSIZE[j]  # itemsize × the non-zero dims, if no overflow
        for d in range(ndim):
            dims[d] = _get_u64(r.p + pos + 8 * d)
            if dims[d] == 0:
                zero = True
            elif qk_mul_overflow(prod, dims[d], &prod):
                over = True
        left = r.end - r.pos
        if not zero and (over or prod > <unsigned long long>left):
            shape = tuple([dims[d] for d in range(ndim)])
            raise ProtocolError(
                f"payload field {name!r} at offset {at}: array {shape} of "
                f"{_KEY_STRS[j].decode('ascii')} exceeds the {left} bytes left"
            )
        if over or prod > MAX_NBYTES:
            shape = tuple([dims[d] for d in range(ndim)])
            raise ProtocolError(f"payload field {name!r} at offset {at}: array {shape} is too large")
        nbytes = 0 if zero else <Py_ssize_t>prod
        pos = r.need(nbytes, W_VALUE, name)
        for d in range(ndim):
            npdims[d] = <cnp.npy_intp>dims[d]
        arr = cnp.PyArray_SimpleNew(ndim, npdims, _TYPENUMS[j])
        if nbytes:
            memcpy(cnp.PyArray_DATA(arr), r.p + pos, nbytes)
        return arr
    raise ProtocolError(f"payload field {name!r} at offset {at}: unknown type tag {bytes([tag])!r}")


def decode_envelope(data):
    """Parse and check an envelope: ``(mtype, session_id, batch_id, seq, stage, kind, start)``,
    the payload being ``data[start:]`` (see :mod:`qkdpp.protocol._codec_ref`)."""
    cdef bytes b = data if type(data) is bytes else bytes(data)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(b)
    cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(b)
    cdef Py_ssize_t pos, n, i, S_at, K_at
    cdef uint32_t plen
    if size < _MIN_ENVELOPE:
        raise ProtocolError(f"envelope too short: {size} bytes < {_MIN_ENVELOPE}")
    if not (p[0] == 0x51 and p[1] == 0x4B and p[2] == 0x50 and p[3] == 0x50):  # QKPP
        raise ProtocolError(f"bad envelope magic at offset 0: {b[:4]!r}, expected {_MAGIC!r}")
    if p[4] != _VERSION:
        raise ProtocolError(f"unsupported envelope version {p[4]} at offset 4 (need 1)")
    if p[5] >= _N_TYPES:
        raise ProtocolError(f"unknown envelope type {p[5]} at offset 5")
    if p[6] or p[7]:
        raise ProtocolError(
            f"reserved field at offset 6 is {(p[6] << 8) | p[7]}, expected 0"
        )
    pos = _HEAD_SIZE
    names = []
    for what in ("stage", "kind"):
        if pos >= size:
            raise ProtocolError(f"envelope truncated at offset {pos}: no {what} length")
        n = p[pos]
        if not 1 <= n <= MAX_NAME or pos + 1 + n > size:
            raise ProtocolError(f"bad {what} length {n} at offset {pos}")
        for i in range(pos + 1, pos + 1 + n):
            if p[i] >= 0x80:
                raise ProtocolError(f"{what} at offset {pos + 1} is not ASCII")
        names.append(PyUnicode_DecodeASCII(<const char*>(p + pos + 1), n, NULL))
        pos += 1 + n
    if pos + 4 > size:
        raise ProtocolError(f"envelope truncated at offset {pos}: no payload length")
    plen = _get_u32(p + pos)
    pos += 4
    if pos + <Py_ssize_t>plen != size:
        raise ProtocolError(
            f"payload length {plen} at offset {pos - 4} does not match the "
            f"{size - pos} bytes that follow"
        )
    return (
        p[5],
        b[8:24],
        _get_u64(p + 24),
        _get_u64(p + 32),
        names[0],
        names[1],
        pos,
    )
