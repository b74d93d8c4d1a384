"""Any value in any entry of a configuration gets a ConfigError naming it, or is accepted.

Found by setting random entries of the demo configuration to values of other types (as a
hand-edited TOML file can): ``[simulate] n_slots`` and ``seed`` went through ``int()`` and
raised ValueError, TypeError or OverflowError (2026-11-28).
"""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from qkdpp.engine.config import validate
from qkdpp.engine.demo import demo_config
from qkdpp.errors import ConfigError, QkdppError

ODD_VALUES: list[Any] = [
    None,
    -1,
    0,
    0.5,
    1e308,
    float("nan"),
    float("inf"),
    "x",
    "",
    [],
    {},
    [1, 2],
    True,
    10**30,
    -(10**30),
]


def _raw_demo() -> dict[str, Any]:
    """The demo configuration as a file would hold it (no derived entries)."""
    cfg = demo_config(10**8)
    raw = {k: dict(v) for k, v in cfg.items()}
    raw["simulate"] = {"n_slots": 10**8, "seed": 1, **raw["simulate"]["params"].to_dict()}
    return raw


def _leaves(d: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for k, v in d.items():
        out += _leaves(v, (*path, k)) if isinstance(v, dict) else [(*path, k)]
    return out


@pytest.mark.parametrize("key", ["n_slots", "seed"])
@pytest.mark.parametrize("value", [None, "x", [1], float("nan"), float("inf"), -5, True])
def test_simulate_counts_must_be_integers(key: str, value: Any) -> None:
    raw = _raw_demo()
    raw["simulate"][key] = value
    with pytest.raises(ConfigError, match=rf"\[simulate\] {key} must be an integer"):
        validate(raw)


def test_simulate_n_slots_may_be_written_as_a_float() -> None:
    raw = _raw_demo()
    raw["simulate"]["n_slots"] = 4e8
    assert validate(raw)["simulate"]["n_slots"] == 400_000_000


def test_random_values_anywhere_give_config_errors() -> None:
    base = _raw_demo()
    validate(copy.deepcopy(base))
    leaves = _leaves(base)
    rng = random.Random(2026_11_28)
    for _ in range(400):
        raw = copy.deepcopy(base)
        *path, last = rng.choice(leaves)
        d = raw
        for k in path:
            d = d[k]
        d[last] = rng.choice(ODD_VALUES)
        try:
            validate(raw)
        except QkdppError:
            pass
