"""Public test helpers: run both parties in one process, make frame pairs with known errors."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from qkdpp.frame import Frame, FrameMeta, KeyState, Role
from qkdpp.kernels import bits
from qkdpp.pipeline.runner import Pipeline
from qkdpp.pipeline.stage import Stage
from qkdpp.protocol.coop import coop_pair, run_both
from qkdpp.protocol.link import PeerLink
from qkdpp.protocol.transports import DEFAULT_MAX_MESSAGE, Transport


class Mailbox:
    """Both ends of a one-way exchange in one object, for stages run one after the other in
    one thread (e.g. Alice's timing stage sends the pilot, then Bob's receives it)."""

    def __init__(self) -> None:
        self.msg: dict[str, Any] = {}

    def send(self, kind: str, payload: dict[str, Any]) -> None:
        self.msg = payload

    def recv(self, kind: str) -> dict[str, Any]:
        return self.msg


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for tests that start listeners)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class InterceptTransport:
    """Wrap a transport; ``on_send(data)`` sees every message this end sends and returns the bytes
    to send instead, or None to drop it (fault tests aimed at one message)."""

    def __init__(self, inner: Transport, on_send: Callable[[bytes], bytes | None]) -> None:
        self.inner = inner
        self.on_send = on_send
        self.max_message = inner.max_message

    def send_bytes(self, data: bytes) -> None:
        out = self.on_send(data)
        if out is not None:
            self.inner.send_bytes(out)

    def recv_bytes(self, timeout: float | None) -> bytes:
        return self.inner.recv_bytes(timeout)

    def close(self) -> None:
        self.inner.close()


@dataclass
class PairResult:
    """Outputs of :func:`run_pair`."""

    alice: list[Frame]
    bob: list[Frame]
    alice_link: PeerLink
    bob_link: PeerLink


def run_pair(
    alice: Pipeline | list[Stage] | list[dict[str, Any]],
    bob: Pipeline | list[Stage] | list[dict[str, Any]] | None,
    alice_frames: list[Frame],
    bob_frames: list[Frame],
    *,
    batch_size: int | None = None,
    timeout: float = 60.0,
    session_id: str | None = None,
    transports: tuple[Any, Any] | None = None,
) -> PairResult:
    """Run Alice and Bob over an in-memory channel: taking turns in this thread
    (:mod:`qkdpp.protocol.coop`), or in two threads over ``transports`` when given.

    ``alice``/``bob`` are pipelines, stage lists, or stage config lists (``bob=None`` reuses
    Alice's configs in Bob's role). ``batch_size`` defaults to all frames in one batch.
    """
    pa = _as_pipeline(Role.ALICE, alice)
    pb = _as_pipeline(Role.BOB, bob if bob is not None else pa.get_config())
    sid = session_id or str(uuid.uuid4())
    ta, tb = transports or coop_pair(DEFAULT_MAX_MESSAGE)
    la = PeerLink(ta, Role.ALICE, sid, timeout=timeout)
    lb = PeerLink(tb, Role.BOB, sid, timeout=timeout)
    n = batch_size or max(1, len(alice_frames))
    out: dict[str, Any] = {}

    def party(name: str, p: Pipeline, link: PeerLink, frames: list[Frame]) -> None:
        try:
            link.handshake()
            out[name] = list(p.run(frames, link, batch_size=n))
        except BaseException as exc:
            out[name] = exc
            link.transport.close()

    run_both(
        lambda: party("alice", pa, la, alice_frames),
        lambda: party("bob", pb, lb, bob_frames),
        (ta, tb),
        join_timeout=timeout + 30,
    )
    for name in ("alice", "bob"):
        if isinstance(out.get(name), BaseException):
            raise out[name]
        if name not in out:
            raise TimeoutError(f"{name} did not finish within {timeout + 30} s")
    return PairResult(out["alice"], out["bob"], la, lb)


def _as_pipeline(role: Role, spec: Any) -> Pipeline:
    if isinstance(spec, Pipeline):
        return spec
    if spec and isinstance(spec[0], dict):
        return Pipeline.from_config(role, spec)
    return Pipeline(list(spec))


def make_frame(
    role: Role | str,
    packed: np.ndarray,
    n_bits: int,
    *,
    frame_id: int = 0,
    session_id: str = "00000000-0000-0000-0000-000000000000",
    state: KeyState = KeyState.SIFTED,
    qber: float | None = None,
    **aux: Any,
) -> Frame:
    """A frame holding ``packed`` (MSB-first) key bits."""
    meta = FrameMeta(session_id, frame_id, Role(role), state=state, n_bits=n_bits, qber=qber)
    return Frame(meta, packed, aux)


def correlated_pair(
    n_bits: int,
    qber: float,
    *,
    frame_id: int = 0,
    seed: int | None = None,
    exact: bool = True,
    session_id: str = "00000000-0000-0000-0000-000000000000",
) -> tuple[Frame, Frame]:
    """Alice's and Bob's frames of ``n_bits`` random bits differing in a fraction ``qber``.

    ``exact=True`` flips exactly ``round(qber * n_bits)`` positions (the convention of the
    published Cascade results); otherwise each bit flips independently. NOT for key material:
    uses a seeded NumPy generator.
    """
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2, n_bits, dtype=np.uint8)
    b = a.copy()
    if exact:
        idx = rng.choice(n_bits, size=round(qber * n_bits), replace=False)
        b[idx] ^= 1
    else:
        b ^= (rng.random(n_bits) < qber).astype(np.uint8)
    fa = make_frame(
        Role.ALICE, bits.pack(a), n_bits, frame_id=frame_id, session_id=session_id, qber=qber
    )
    fb = make_frame(
        Role.BOB, bits.pack(b), n_bits, frame_id=frame_id, session_id=session_id, qber=qber
    )
    return fa, fb
