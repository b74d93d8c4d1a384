"""Efficiency of the Cascade variants.

The default run checks a few frames per variant against loose bounds; the ``slow`` tests run the
published comparison (>= 50 runs per point, ../shared/REFERENCES.md §3) and the n = 1e6 targets.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

_SPEC = importlib.util.spec_from_file_location(
    "study_cascade", Path(__file__).resolve().parents[2] / "scripts" / "study_cascade.py"
)
assert _SPEC is not None and _SPEC.loader is not None
study = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(study)


@pytest.mark.parametrize("variant", sorted(study.PUBLISHED))
def test_few_runs_near_published(variant: str) -> None:
    r = study.run_point(variant, 10_000, 0.02, runs=4, frames=4, seed=3)
    assert r["frames_with_errors"] == 0
    assert abs(r["f_mean"] - study.PUBLISHED[variant][0.02]) < 0.1, r


# Measured (50 runs): our f is 0.02-0.04 *below* the recorded cascade-cpp means here; see
# docs/cascade.md ("Measured") for the likely cause (no repeated questions).
_LOWER_THAN_PUBLISHED = {("option7", 0.05), ("option8", 0.01), ("option8", 0.02), ("option8", 0.05)}


@pytest.mark.slow
@pytest.mark.parametrize("q", [0.01, 0.02, 0.05])
@pytest.mark.parametrize("variant", sorted(study.PUBLISHED))
def test_published_efficiency(variant: str, q: float) -> None:
    r = study.run_point(variant, 10_000, q, runs=50, frames=16, seed=1)
    pub = study.PUBLISHED[variant][q]
    assert r["f_mean"] <= pub + 0.02, (variant, q, r["f_mean"], pub)  # never worse
    if (variant, q) in _LOWER_THAN_PUBLISHED and r["f_mean"] < pub - 0.02:
        pytest.xfail(f"f = {r['f_mean']:.3f}, below the published {pub} by more than 0.02")
    assert abs(r["f_mean"] - pub) <= 0.02, (variant, q, r["f_mean"], pub)


@pytest.mark.slow
@pytest.mark.parametrize("q,f_max", [(0.02, 1.05), (0.05, 1.06)])
def test_best_variant_at_one_million_bits(q: float, f_max: float) -> None:
    r = study.run_point("option8", 1_000_000, q, runs=8, frames=4, seed=2)
    assert r["f_mean"] <= f_max, r
    assert r["frames_with_errors"] == 0, r
    assert not math.isnan(r["mbps"]) and np.isfinite(r["mbps"])
