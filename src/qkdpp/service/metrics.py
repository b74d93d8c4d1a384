"""Prometheus metrics (text exposition format 0.0.4) and the node's health data.

A small thread-safe registry: counters, gauges and summaries (count + sum) with labels, rendered by
:meth:`Metrics.render`. No key material ever enters a metric: only counts, sizes, rates, QBER.

Pipeline metrics are fed by :meth:`Metrics.observe_frame` (one call per finished block, with its
:class:`~qkdpp.frame.FrameMeta`): QBER, secret key bits and rate, reconciliation efficiency ``f``
(when the meta tags carry it), ε used, aborts by reason. Key-store and KME gauges are refreshed
from the live objects at scrape time (:meth:`Metrics.update_kme`).

Metric names (all prefixed ``qkdpp_``)::

    qkdpp_qber                              gauge    last block's estimated QBER
    qkdpp_secret_key_bits_total             counter  key bits produced by finished blocks
    qkdpp_secret_key_rate_bps               gauge    key bits/s over the last observed interval
    qkdpp_reconciliation_efficiency         gauge    last block's f (leak_EC / (n h(Q)))
    qkdpp_epsilon_used_total                counter  Σ ε of finished blocks (security budget used)
    qkdpp_leaked_bits_total                 counter  disclosed bits booked in the leakage ledgers
    qkdpp_blocks_total{state}               counter  finished blocks, ok / failed
    qkdpp_aborts_total{reason}              counter  failed blocks by reason
    qkdpp_keystore_keys{state}              gauge    key-store blocks per state
    qkdpp_keystore_stored_bits              gauge    deliverable key bits in the key store
    qkdpp_kme_pool_bits                     gauge    bits imported for slicing, not yet issued
    qkdpp_kme_keys{side,state}              gauge    ETSI keys by side (enc/dec) and state
    qkdpp_kme_delivered_keys_total{side}    counter  ETSI keys delivered
    qkdpp_kme_delivered_bits_total{side}    counter  ETSI key bits delivered
    qkdpp_kme_wasted_bits_total             counter  block tails too short for a key
    qkdpp_auth_reserve_bits                 gauge    authentication key pool (set by the node)
    qkdpp_etsi014_requests_total{endpoint,status}    counter
    qkdpp_etsi014_request_seconds{endpoint}          summary (count, sum)
    qkdpp_tls_handshake_failures_total      counter
"""

from __future__ import annotations

import math
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qkdpp.frame import FrameMeta
    from qkdpp.service.kme import KeyManager

__all__ = ["Metrics"]

_HELP = {
    "qkdpp_qber": ("gauge", "Estimated QBER of the last finished block"),
    "qkdpp_secret_key_bits_total": ("counter", "Secret key bits produced by finished blocks"),
    "qkdpp_secret_key_rate_bps": ("gauge", "Secret key rate over the last interval (bits/s)"),
    "qkdpp_reconciliation_efficiency": ("gauge", "Reconciliation efficiency f of the last block"),
    "qkdpp_epsilon_used_total": ("counter", "Sum of the security parameters of finished blocks"),
    "qkdpp_leaked_bits_total": ("counter", "Bits disclosed during post-processing"),
    "qkdpp_blocks_total": ("counter", "Finished blocks by outcome"),
    "qkdpp_aborts_total": ("counter", "Aborted blocks by reason"),
    "qkdpp_keystore_keys": ("gauge", "Key-store blocks by state"),
    "qkdpp_keystore_stored_bits": ("gauge", "Deliverable key bits in the key store"),
    "qkdpp_kme_pool_bits": ("gauge", "Key bits imported for slicing and not yet issued"),
    "qkdpp_kme_keys": ("gauge", "ETSI keys by side and state"),
    "qkdpp_kme_delivered_keys_total": ("counter", "ETSI keys delivered"),
    "qkdpp_kme_delivered_bits_total": ("counter", "ETSI key bits delivered"),
    "qkdpp_kme_wasted_bits_total": ("counter", "Block tails too short for an ETSI key"),
    "qkdpp_auth_reserve_bits": ("gauge", "Authentication key pool (bits)"),
    "qkdpp_etsi014_requests_total": ("counter", "ETSI 014 requests by endpoint and status"),
    "qkdpp_etsi014_request_seconds": ("summary", "ETSI 014 request handling time"),
    "qkdpp_tls_handshake_failures_total": ("counter", "Failed TLS handshakes"),
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(labels.items())) + "}"


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if float(v).is_integer() and abs(v) < 2**53:
        return str(int(v))
    return repr(float(v))


class Metrics:
    """Thread-safe metric registry with Prometheus text rendering."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        self._summaries: dict[str, dict[tuple[tuple[str, str], ...], list[float]]] = {}
        self._last_rate: tuple[float, float] | None = None  # (time, key bits total)

    def _key(self, labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((k, str(v)) for k, v in labels.items()))

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` (≥ 0) to a counter."""
        if amount < 0:
            raise ValueError(f"counter {name} cannot decrease (amount {amount})")
        with self._lock:
            series = self._values.setdefault(name, {})
            k = self._key(labels)
            series[k] = series.get(k, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        """Set a gauge (or a counter mirrored from an external total)."""
        with self._lock:
            self._values.setdefault(name, {})[self._key(labels)] = float(value)

    def observe(self, name: str, value: float, **labels: str) -> None:
        """Add one observation to a summary (count and sum)."""
        with self._lock:
            s = self._summaries.setdefault(name, {}).setdefault(self._key(labels), [0.0, 0.0])
            s[0] += 1
            s[1] += value

    def get(self, name: str, **labels: str) -> float | None:
        """Current value of one series (tests, health)."""
        with self._lock:
            return self._values.get(name, {}).get(self._key(labels))

    def observe_frame(self, meta: FrameMeta, *, now: float | None = None) -> None:
        """Account one finished block (AUTHENTICATED or FAILED) from its metadata.

        QBER, key bits (``meta.n_bits`` of a successful block), leakage, ε total; a failed block
        counts under ``qkdpp_aborts_total{reason}`` (the reason's first word). ``f`` is read from
        ``meta.tags["f_ec"]`` when a reconciliation stage put it there.
        """
        from qkdpp.frame import KeyState

        t = time.time() if now is None else now
        if meta.state is KeyState.FAILED:
            reason = (meta.failure or "unknown").split(":")[0].split()[0][:60]
            self.inc("qkdpp_blocks_total", state="failed")
            self.inc("qkdpp_aborts_total", reason=reason)
            return
        self.inc("qkdpp_blocks_total", state="ok")
        if meta.qber is not None:
            self.set("qkdpp_qber", meta.qber)
        self.inc("qkdpp_secret_key_bits_total", meta.n_bits)
        self.inc("qkdpp_leaked_bits_total", meta.leaked_bits)
        self.inc("qkdpp_epsilon_used_total", meta.eps_total())
        f = meta.tags.get("f_ec") if meta.tags else None
        if isinstance(f, int | float):
            self.set("qkdpp_reconciliation_efficiency", float(f))
        total = self.get("qkdpp_secret_key_bits_total") or 0.0
        with self._lock:
            last = self._last_rate
            self._last_rate = (t, total)
        if last is not None and t > last[0]:
            self.set("qkdpp_secret_key_rate_bps", (total - last[1]) / (t - last[0]))

    def observe_auth_pool(self, available_bytes: int) -> None:
        """Set ``qkdpp_auth_reserve_bits`` from the authentication pads left (bytes, the
        smaller direction of :meth:`~qkdpp.keystore.sqlite.KeyStore.pad_stats`)."""
        self.set("qkdpp_auth_reserve_bits", 8 * int(available_bytes))

    def update_kme(self, kme: KeyManager) -> None:
        """Refresh key-store and KME gauges from the live objects (at scrape time)."""
        stats = kme.store.stats()
        for state in ("stored", "reserved", "delivered", "erased", "voided"):
            self.set("qkdpp_keystore_keys", stats.get(state, 0), state=state)
        self.set("qkdpp_keystore_stored_bits", stats.get("stored_bits", 0))
        pads = kme.store.pad_stats()
        self.observe_auth_pool(min(pads["auth_pad_ab_bytes"], pads["auth_pad_ba_bytes"]))
        pool = kme.pool_stats()
        self.set("qkdpp_kme_pool_bits", pool.pop("pool_bits", 0))
        for name, n in pool.items():
            _, side, state = name.split("_", 2)
            self.set("qkdpp_kme_keys", n, side=side, state=state)
        c = kme.counters
        with c.lock:
            for side, n in c.keys_delivered.items():
                self.set("qkdpp_kme_delivered_keys_total", n, side=side)
            for side, n in c.bits_delivered.items():
                self.set("qkdpp_kme_delivered_bits_total", n, side=side)
        self.set("qkdpp_kme_wasted_bits_total", c.wasted_bits)

    def render(self) -> str:
        """The registry in Prometheus text exposition format (version 0.0.4)."""
        lines: list[str] = []
        with self._lock:
            names = sorted(set(self._values) | set(self._summaries))
            for name in names:
                kind, help_text = _HELP.get(name, ("untyped", name))
                lines.append(f"# HELP {name} {help_text}")
                lines.append(f"# TYPE {name} {kind}")
                for k, v in sorted(self._values.get(name, {}).items()):
                    lines.append(f"{name}{_labels(dict(k))} {_fmt(v)}")
                for k, (cnt, tot) in sorted(self._summaries.get(name, {}).items()):
                    lines.append(f"{name}_count{_labels(dict(k))} {_fmt(cnt)}")
                    lines.append(f"{name}_sum{_labels(dict(k))} {_fmt(tot)}")
        return "\n".join(lines) + "\n"

    def as_dict(self) -> dict[str, Any]:
        """Plain snapshot (name → list of (labels, value)) for JSON status output."""
        with self._lock:
            return {
                name: [(dict(k), v) for k, v in series.items()]
                for name, series in self._values.items()
            }
