"""Per-message cost of the peer link: codec, envelope, PeerLink/PeerScope, loopback hand-off.

The workload is a typical Cascade round trip: Bob's request ``{"op": str, "counts": int64[2],
"q": uint32[20, 3]}`` and Alice's reply ``{"par": uint8[3]}``.

* ``link-codec``: encode the request envelope, decode it (envelope + payload); compiled codec
  against the Python reference.
* ``link-roundtrip``: ``ROUNDS`` request/reply round trips between two threads over the in-memory
  loopback: the bare transport (floor: hand-off only), the link on the compiled codec and
  mailbox (what runs; ``-fused``: the responder answers with ``PeerScope.reply_then_recv``),
  and the link on the reference codec and mailbox (baseline: ``QKDPP_BACKEND=reference``).
  ``extra_info`` has wall and CPU microseconds per round trip (best of 5 runs).

Run: ``pytest benchmarks/test_bench_link.py --benchmark-enable``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from benchmarks.conftest import record_rate
from qkdpp.frame import Role
from qkdpp.protocol import codec, link, transports
from qkdpp.protocol.link import PeerLink

SID = uuid.UUID(int=7)
ROUNDS = 2000
Q = np.arange(60, dtype=np.uint32).reshape(20, 3)
COUNTS = np.array([10, 10], dtype=np.int64)
PAR = np.zeros(3, np.uint8)
REQUEST = {"op": "bin", "counts": COUNTS, "q": Q}
REPLY = {"par": PAR}
PAYLOAD_BITS = 8 * (len(codec.encode_payload(REQUEST)) + len(codec.encode_payload(REPLY)))


@pytest.mark.parametrize("backend", ["compiled", "reference"])
def test_link_codec(benchmark, backend: str) -> None:  # type: ignore[no-untyped-def]
    if backend not in codec.available_backends():
        pytest.skip(f"{backend} codec not built")
    m = codec.impl(backend)
    sid = SID.bytes
    benchmark.group = "link-codec"

    def run() -> dict[str, Any]:
        data = m.encode_message(0, sid, 5, 9, "cascade", "cascade.q", REQUEST)
        parts = m.decode_envelope(data)
        return m.decode_payload(data, parts[6])

    out = benchmark(run)
    assert np.array_equal(out["q"], Q)
    record_rate(benchmark, n_bits=8 * len(codec.encode_payload(REQUEST)))


def _pair(backend: str) -> tuple[transports.LoopbackTransport, transports.LoopbackTransport]:
    mb = transports.mailbox_impl(backend)
    ab, ba = mb.Mailbox(), mb.Mailbox()
    n = transports.DEFAULT_MAX_MESSAGE
    return transports.LoopbackTransport(ba, ab, n), transports.LoopbackTransport(ab, ba, n)


def _timed(benchmark: Any, body: Callable[[], None], echo: Callable[[], None]) -> int:
    """Benchmark ``body`` (ROUNDS round trips) against a fresh ``echo`` thread per run; returns
    the number of runs (6 when benchmarking, 1 in a default test run)."""
    cpu: list[float] = []

    def run() -> None:
        th = threading.Thread(target=echo)
        th.start()
        c0 = time.process_time()
        body()
        th.join()
        cpu.append(time.process_time() - c0)

    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    if benchmark.disabled:  # (`pytest benchmarks` without --benchmark-enable: one checked run)
        return len(cpu)
    record_rate(benchmark, n_bits=PAYLOAD_BITS * ROUNDS)
    stats = benchmark.stats.stats
    benchmark.extra_info["wall_us_per_round_trip"] = stats.min / ROUNDS * 1e6
    benchmark.extra_info["cpu_us_per_round_trip"] = min(cpu) / ROUNDS * 1e6
    return len(cpu)


@pytest.mark.parametrize(
    "variant", ["bare-transport", "link-compiled", "link-compiled-fused", "link-reference"]
)
def test_link_roundtrip(benchmark, variant: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    backend = "reference" if variant == "link-reference" else "compiled"
    if backend not in codec.available_backends() or backend not in transports.mailbox_backends():
        pytest.skip(f"{backend} codec or mailbox not built")
    benchmark.group = "link-roundtrip"
    ta, tb = _pair(backend)
    if variant == "bare-transport":
        msg = codec.encode_message(0, SID.bytes, 5, 1, "cascade", "cascade.q", REQUEST)

        def echo() -> None:
            for _ in range(ROUNDS):
                tb.send_bytes(tb.recv_bytes(10))

        def body() -> None:
            for _ in range(ROUNDS):
                ta.send_bytes(msg)
                ta.recv_bytes(10)

        _timed(benchmark, body, echo)
        return
    m = codec.impl(backend)
    for name in ("decode_envelope", "decode_payload", "encode_envelope", "encode_message"):
        monkeypatch.setattr(link, name, getattr(m, name))
    la = PeerLink(ta, Role.ALICE, SID, timeout=10)
    lb = PeerLink(tb, Role.BOB, SID, timeout=10)
    th = threading.Thread(target=la.handshake)
    th.start()
    lb.handshake()
    th.join()
    sa, sb = la.scope(5, "cascade"), lb.scope(5, "cascade")

    def alice() -> None:
        if variant == "link-compiled-fused":  # the responder uses reply_then_recv
            sa.recv("cascade.q")
            for _ in range(ROUNDS - 1):
                sa.reply_then_recv("cascade.q", REPLY, "cascade.q")
            sa.reply("cascade.q", REPLY)
            return
        for _ in range(ROUNDS):
            sa.recv("cascade.q")
            sa.reply("cascade.q", REPLY)

    def bob() -> None:
        for _ in range(ROUNDS):
            sb.request("cascade.q", REQUEST)

    runs = _timed(benchmark, bob, alice)
    assert sb.stats.round_trips == runs * ROUNDS
