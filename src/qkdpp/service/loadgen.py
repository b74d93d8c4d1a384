"""Load generator for the ETSI 014 key server: concurrent mutual-TLS clients, enc → dec pairs.

Each client thread owns two keep-alive connections: as master SAE ``sae-a{1,2}`` to node A and as
the matching slave SAE ``sae-b{1,2}`` to node B. It loops ``enc_keys`` (``number`` keys of ``size``
bits) on A, then ``dec_keys`` of those key_IDs on B, and checks the bits are identical. Every HTTP
call counts as one request. :func:`check_audit` then verifies from both nodes' audit logs that no
key_ID was delivered twice and that every key a client received is logged exactly once per side.
"""

from __future__ import annotations

import base64
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from ssl import SSLContext

from qkdpp.service.etsi014 import EtsiClient

__all__ = ["LoadResult", "check_audit", "run_health_load", "run_load"]


@dataclass
class LoadResult:
    """Outcome of a load run (requests = HTTP calls, keys = enc_keys keys)."""

    clients: int
    seconds: float
    requests: int = 0
    keys: int = 0
    errors: list[str] = field(default_factory=list)
    mismatches: int = 0
    key_ids: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def latency_quantile(self, q: float) -> float:
        """Request latency quantile in seconds (0 if no request)."""
        if not self.latencies:
            return 0.0
        s = sorted(self.latencies)
        return s[min(len(s) - 1, int(q * len(s)))]


def run_load(
    port_a: int,
    port_b: int,
    ctx: Callable[[str], SSLContext],
    *,
    clients: int = 16,
    seconds: float = 60.0,
    number: int = 1,
    size: int = 256,
    host: str = "localhost",
) -> LoadResult:
    """Run ``clients`` enc→dec loops for ``seconds``; returns counts, errors and key IDs."""
    res = LoadResult(clients=clients, seconds=seconds)
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    deadline = [0.0]

    def worker(i: int) -> None:
        pair = 1 + i % 2
        enc = EtsiClient(host, port_a, ctx(f"sae-a{pair}"))
        dec = EtsiClient(host, port_b, ctx(f"sae-b{pair}"))
        n_req = n_keys = bad = 0
        ids: list[str] = []
        lat: list[float] = []
        errors: list[str] = []
        try:
            start.wait()
            while time.perf_counter() < deadline[0]:
                t0 = time.perf_counter()
                try:
                    keys = enc.enc_keys(f"sae-b{pair}", number=number, size=size)
                    t1 = time.perf_counter()
                    got = dec.dec_keys(f"sae-a{pair}", [k["key_ID"] for k in keys])
                    t2 = time.perf_counter()
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
                    continue
                lat += [t1 - t0, t2 - t1]
                n_req += 2
                n_keys += len(keys)
                ids += [k["key_ID"] for k in keys]
                if got != keys or any(len(base64.b64decode(k["key"])) * 8 != size for k in keys):
                    bad += 1
        finally:
            enc.close()
            dec.close()
            with lock:
                res.requests += n_req
                res.keys += n_keys
                res.mismatches += bad
                res.key_ids += ids
                res.latencies += lat
                res.errors += errors

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    t_start = time.perf_counter()
    deadline[0] = t_start + seconds
    start.wait()
    for t in threads:
        t.join()
    res.seconds = time.perf_counter() - t_start
    return res


def run_health_load(
    port: int, ctx: Callable[[str], SSLContext], *, clients: int = 16, seconds: float = 5.0
) -> LoadResult:
    """Baseline: the same clients calling ``GET /health`` (TLS + HTTP, no key logic)."""
    res = LoadResult(clients=clients, seconds=seconds)
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker(i: int) -> None:
        c = EtsiClient("localhost", port, ctx(f"sae-a{1 + i % 2}"))
        n = 0
        try:
            while time.perf_counter() < deadline:
                st, _ = c.request("GET", "/health")
                n += st == 200
        finally:
            c.close()
            with lock:
                res.requests += n

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    res.seconds = time.perf_counter() - t0
    return res


def check_audit(kme_db_a: Path, kme_db_b: Path, key_ids: list[str]) -> list[str]:
    """Problems found in the two nodes' audit logs (empty list = none).

    Checks: no key_ID logged twice as ``enc_delivered`` on A or ``dec_delivered`` on B; every
    key_ID a client received appears in both logs.
    """
    problems: list[str] = []
    logs: dict[str, set[str]] = {}
    for path, event in ((kme_db_a, "enc_delivered"), (kme_db_b, "dec_delivered")):
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = [
                r[0] for r in db.execute("SELECT key_id FROM kme_audit WHERE event=?", (event,))
            ]
        finally:
            db.close()
        if len(rows) != len(set(rows)):
            problems.append(f"{path.name}: {len(rows) - len(set(rows))} key_IDs delivered twice")
        logs[event] = set(rows)
    if len(key_ids) != len(set(key_ids)):
        problems.append("clients received a key_ID twice")
    for event, ids in logs.items():
        missing = set(key_ids) - ids
        if missing:
            problems.append(f"{len(missing)} received key_IDs not in the {event} audit log")
    return problems
