"""Run one party of a pipeline as its own OS process over TCP (and both, for tests).

:func:`run_party` is what ``qkdpp process --role`` and ``qkdpp node`` build on: Alice listens,
Bob connects (either may start first; Bob retries), both handshake, then run the same stage list
over frames with the same ids. :func:`run_pair_tcp` starts both parties as separate processes
(``multiprocessing`` spawn) on 127.0.0.1 and returns their outputs.
"""

from __future__ import annotations

import multiprocessing as mp
import uuid
from typing import Any

from qkdpp.frame import Frame, Role
from qkdpp.pipeline.runner import Pipeline
from qkdpp.protocol.link import PeerLink
from qkdpp.protocol.transports import TcpListener, TcpTransport


def run_party(
    role: Role | str,
    stage_configs: list[dict[str, Any]],
    frames: list[Frame],
    *,
    session_id: str,
    host: str = "127.0.0.1",
    port: int = 0,
    listener: TcpListener | None = None,
    batch_size: int = 1,
    timeout: float = 60.0,
) -> tuple[list[Frame], dict[str, int]]:
    """Run one party over TCP; returns (frames out, link counters)."""
    role = Role(role)
    pipeline = Pipeline.from_config(role, stage_configs)
    pipeline.setup()
    if role is Role.ALICE:
        own = listener or TcpListener(host, port)
        transport = own.accept(timeout=timeout)
    else:
        transport = TcpTransport.connect(host, port, retry_for=timeout)
    link = PeerLink(transport, role, session_id, timeout=timeout)
    try:
        link.handshake()
        out = list(pipeline.run(frames, link, batch_size=batch_size))
    finally:
        link.close()
        if role is Role.ALICE and listener is None:
            own.close()
    stats = {
        "messages_sent": link.stats.messages_sent,
        "messages_received": link.stats.messages_received,
        "bytes_sent": link.stats.bytes_sent,
        "bytes_received": link.stats.bytes_received,
    }
    return out, stats


def _child(
    role: str,
    configs: list[dict[str, Any]],
    frames: list[Frame],
    session_id: str,
    port: int,
    batch_size: int,
    timeout: float,
    q: Any,
) -> None:
    try:
        listener = TcpListener("127.0.0.1", port) if role == "alice" else None
        q.put(
            (
                role,
                "ok",
                run_party(
                    role,
                    configs,
                    frames,
                    session_id=session_id,
                    port=port,
                    listener=listener,
                    batch_size=batch_size,
                    timeout=timeout,
                ),
            )
        )
    except BaseException as exc:
        q.put((role, "error", f"{type(exc).__name__}: {exc}"))


def run_pair_tcp(
    stage_configs: list[dict[str, Any]],
    alice_frames: list[Frame],
    bob_frames: list[Frame],
    *,
    port: int,
    batch_size: int = 1,
    timeout: float = 60.0,
) -> tuple[list[Frame], list[Frame]]:
    """Run Alice and Bob as two OS processes over TCP on 127.0.0.1:``port``."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    sid = str(uuid.uuid4())
    procs = [
        ctx.Process(target=_child, args=(r, stage_configs, fr, sid, port, batch_size, timeout, q))
        for r, fr in (("alice", alice_frames), ("bob", bob_frames))
    ]
    for p in procs:
        p.start()
    results: dict[str, Any] = {}
    try:
        for _ in procs:
            role, status, value = q.get(timeout=timeout + 30)
            if status != "ok":
                raise RuntimeError(f"{role} process failed: {value}")
            results[role] = value[0]
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    return results["alice"], results["bob"]
