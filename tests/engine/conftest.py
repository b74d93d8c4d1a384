"""A short simulated link shared by the end-to-end tests (5 km: ~1 key block per 5e7 slots)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from qkdpp.engine.config import validate
from qkdpp.engine.demo import DEMO_MU, DEMO_P_MU, DEMO_P_Z
from qkdpp.engine.inputs import make_demo_bootstrap
from qkdpp.io.simulator import simulate_link

N_SLOTS = 64_000_000


def e2e_config(**session: Any) -> dict[str, Any]:
    return validate(
        {
            "session": {
                "block_size": 1_000_000,
                "batch_size": 1,
                "chunk_slots": 16_000_000,
                "timeout_s": 5.0,
                **session,
            },
            "simulate": {
                "n_slots": N_SLOTS,
                "fibre_km": 5.0,
                "mu": DEMO_MU,
                "p_mu": DEMO_P_MU,
                "p_z_alice": DEMO_P_Z,
                "p_z_bob": DEMO_P_Z,
                "clock_offset_ps": 4.2e8,
                "clock_drift_ppm": -3.0,
            },
            "timing": {"mu": DEMO_MU},
            "key_length": {"mu": DEMO_MU, "p_mu": DEMO_P_MU},
        }
    )


@pytest.fixture(scope="session")
def link_data() -> tuple[Any, Any]:
    cfg = e2e_config()
    alice, bob, _ = simulate_link(cfg["simulate"]["params"], N_SLOTS, 11)
    return alice, bob


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    make_demo_bootstrap(tmp_path)
    return tmp_path
