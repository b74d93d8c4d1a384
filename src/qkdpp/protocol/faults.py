"""A fault-injecting transport for tests and demonstrations.

:class:`FaultyTransport` wraps any transport and, on each message sent, may drop, delay, reorder,
duplicate, corrupt (flip a random byte anywhere) or tamper with it (flip a byte of the payload
only, so the envelope still parses and only authentication can catch it). Faults are drawn from
a seeded generator (this is test tooling, not security randomness).

``FaultPlan.parse("drop=0.01,tamper=0.05,seed=3")`` reads the CLI form.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, fields

from qkdpp.errors import ConfigError
from qkdpp.protocol.transports import Transport

KINDS = ("drop", "delay", "reorder", "duplicate", "corrupt", "tamper")


@dataclass(frozen=True)
class FaultPlan:
    """Per-message probabilities of each fault (0..1), the delay in seconds, and a seed."""

    drop: float = 0.0
    delay: float = 0.0
    reorder: float = 0.0
    duplicate: float = 0.0
    corrupt: float = 0.0
    tamper: float = 0.0
    delay_s: float = 0.05
    seed: int = 0
    skip_first: int = 1  # leave the handshake alone by default

    def __post_init__(self) -> None:
        for k in KINDS:
            p = getattr(self, k)
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"fault probability {k}={p} outside [0, 1]")
        if not 0.0 <= self.delay_s < float("inf"):
            raise ConfigError(f"fault delay_s={self.delay_s} must be a finite number of seconds")

    @classmethod
    def parse(cls, text: str) -> FaultPlan:
        """Parse ``"kind=p,kind=p,seed=N,delay_s=S"`` (ConfigError, a ValueError, naming the
        part that is wrong)."""
        known = {f.name: f.type for f in fields(cls)}
        values: dict[str, float | int] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, val = part.partition("=")
            if not sep or key not in known:
                raise ConfigError(f"bad fault spec {part!r}; known: {', '.join(known)}")
            try:
                values[key] = int(val) if key in ("seed", "skip_first") else float(val)
            except ValueError:
                raise ConfigError(f"bad fault spec {part!r}: {val!r} is not a number") from None
        return cls(**values)  # type: ignore[arg-type]


class FaultyTransport:
    """Wrap ``inner``; faults apply to messages this side sends."""

    def __init__(self, inner: Transport, plan: FaultPlan) -> None:
        self.inner = inner
        self.plan = plan
        self.max_message = inner.max_message
        self._rng = random.Random(plan.seed)
        self._held: bytes | None = None
        self._count = 0
        self.injected: dict[str, int] = dict.fromkeys(KINDS, 0)

    def _hit(self, kind: str) -> bool:
        if self._rng.random() < getattr(self.plan, kind):
            self.injected[kind] += 1
            return True
        return False

    def send_bytes(self, data: bytes) -> None:
        self._count += 1
        if self._count <= self.plan.skip_first:
            self.inner.send_bytes(data)
            return
        if self._hit("drop"):
            return
        if self._hit("delay"):
            time.sleep(self.plan.delay_s)
        msg = bytearray(data)
        if self._hit("corrupt"):
            msg[self._rng.randrange(len(msg))] ^= 1 << self._rng.randrange(8)
        if self._hit("tamper") and len(msg) > 60:
            # payload starts after the fixed header, stage and kind; flip its last byte
            msg[-1] ^= 0x01
        if self._held is None and self._hit("reorder"):
            self._held = bytes(msg)
            return
        self.inner.send_bytes(bytes(msg))
        if self._hit("duplicate"):
            self.inner.send_bytes(bytes(msg))
        if self._held is not None:
            held, self._held = self._held, None
            self.inner.send_bytes(held)

    def recv_bytes(self, timeout: float | None) -> bytes:
        return self.inner.recv_bytes(timeout)

    def close(self) -> None:
        self.inner.close()
