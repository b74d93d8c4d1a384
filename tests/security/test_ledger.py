"""ε ledger per block and per link lifetime."""

from __future__ import annotations

import pytest

from qkdpp.errors import ConfigError, SecurityAbort
from qkdpp.frame import FrameMeta, Role
from qkdpp.security.ledger import LinkEpsLedger, block_eps, check_block_budget


def test_block_and_link_ledgers() -> None:
    m = (
        FrameMeta("s", 3, Role.ALICE)
        .with_eps("a", "eps_pe", 1e-10)
        .with_eps("b", "eps_pa", 2e-10)
        .with_eps("c", "eps_pe", 1e-10)
    )
    assert block_eps(m) == {"eps_pe": 2e-10, "eps_pa": 2e-10}
    check_block_budget(m, 1e-9)
    with pytest.raises(SecurityAbort) as ei:
        check_block_budget(m, 3e-10)
    assert ei.value.reason == "eps_budget_exceeded"
    led = LinkEpsLedger(1e-9)
    led.commit_block(m)
    led.commit_block(m)
    assert led.blocks == 2 and led.spent == pytest.approx(8e-10)
    with pytest.raises(SecurityAbort):
        led.commit_block(m)
    assert led.blocks == 2  # refused block not added
    with pytest.raises(ConfigError):
        LinkEpsLedger(0.0)
