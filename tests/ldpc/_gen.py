"""Shared set-up of the LDPC decoder tests."""

from __future__ import annotations

import numpy as np

from qkdpp.codes import LdpcCode


def fresh_state(
    code: LdpcCode, llr: np.ndarray, synd: np.ndarray, cols: list[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The decoder arrays of frames ``cols`` before their first sweep: ``post`` (float32
    ``[n, F]``, the channel LLRs), ``msg`` (float32 ``[edges, F]``, zeros), ``bits`` (uint8
    ``[n, F]``), ``ok`` (uint8 ``[F]``) and the frames' syndromes (uint8 ``[m, F]``)."""
    f = len(cols)
    post = np.ascontiguousarray(llr[:, cols])
    msg = np.zeros((code.edges, f), np.float32)
    bits = np.zeros((code.n, f), np.uint8)
    ok = np.zeros(f, np.uint8)
    syn = np.ascontiguousarray(synd[:, cols])
    return post, msg, bits, ok, syn
