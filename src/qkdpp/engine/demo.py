"""Built-in defaults of ``qkdpp demo``: a 25 km decoy-BB84 link processed end to end.

Link: Lim et al. 2014 §IV (η_Bob = 0.10, p_dc = 6e-7 per detector and slot, e_mis = 0.5 %,
0.2 dB/km, no afterpulsing in the simulator), 1 GHz, 25 km. Intensities and probabilities are the
finite-key optimum for a 1e6-bit block at 25 km, from ``qkdpp keyrate --distances 25
--block-sizes 1e6 --p-ap 0`` (μ = 0.58 / 0.26 / 2e-4, p = 0.31 / 0.52 / 0.17, Z-basis
probability 0.83 at both ends); the same values go to the simulator, the timing pilot and the key
length, as they must.
"""

from __future__ import annotations

from typing import Any

from qkdpp.engine.config import LINK_MU, LINK_P_MU, LINK_P_Z, validate

DEMO_MU = LINK_MU
DEMO_P_MU = LINK_P_MU
DEMO_P_Z = LINK_P_Z


def demo_config(
    n_slots: int = 400_000_000, fibre_km: float = 25.0, seed: int = 1, block_size: int = 1_000_000
) -> dict[str, Any]:
    """The validated configuration of the demo link."""
    return validate(
        {
            "session": {"block_size": block_size, "batch_size": 2, "chunk_slots": 50_000_000},
            "simulate": {
                "n_slots": n_slots,
                "seed": seed,
                "fibre_km": fibre_km,
                "mu": DEMO_MU,
                "p_mu": DEMO_P_MU,
                "p_z_alice": DEMO_P_Z,
                "p_z_bob": DEMO_P_Z,
            },
            "timing": {"mu": DEMO_MU},
            "key_length": {"mu": DEMO_MU, "p_mu": DEMO_P_MU},
        },
        source="demo defaults",
    )
