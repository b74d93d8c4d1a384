"""The text specs a user types for the link: ``--peer tcp://HOST:PORT`` and ``--faults``."""

from __future__ import annotations

import pytest

from qkdpp.errors import ConfigError
from qkdpp.protocol.faults import FaultPlan
from qkdpp.protocol.transports import parse_tcp_address


def test_tcp_addresses() -> None:
    assert parse_tcp_address("tcp://10.0.0.2:7000") == ("10.0.0.2", 7000)
    assert parse_tcp_address("[::1]:7000") == ("::1", 7000)
    for bad in ("http://x", "tcp://host", "tcp://:7000", "tcp://h:x"):
        with pytest.raises(ConfigError, match="expected tcp://HOST:PORT"):
            parse_tcp_address(bad)
    for port in (0, 65536, 99999):  # (before 2026-11-28: accepted, then a socket error)
        with pytest.raises(ConfigError, match=r"outside 1\.\.65535"):
            parse_tcp_address(f"tcp://h:{port}")


def test_fault_specs() -> None:
    plan = FaultPlan.parse("drop=0.01,tamper=0.5,seed=3,delay_s=0.2")
    assert (plan.drop, plan.tamper, plan.seed, plan.delay_s) == (0.01, 0.5, 3, 0.2)
    # before 2026-11-28 these were bare ValueErrors (a traceback from `qkdpp process --faults`)
    cases = {
        "nonsense": "bad fault spec 'nonsense'",
        "drop=abc": "'abc' is not a number",
        "seed=1.5": "'1.5' is not a number",
        "drop=2": r"drop=2.0 outside \[0, 1\]",
        "tamper=nan": r"tamper=nan outside \[0, 1\]",
        "delay_s=inf": "delay_s=inf must be a finite number",
        "delay_s=-1": "delay_s=-1.0 must be a finite number",
    }
    for spec, problem in cases.items():
        with pytest.raises(ConfigError, match=problem):
            FaultPlan.parse(spec)
