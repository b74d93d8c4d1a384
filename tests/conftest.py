"""Shared fixtures: the real-capture folder beside the repository."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()
CAPTURES = SHARED / "captures"


@pytest.fixture
def captures_dir() -> Path:
    """``../shared/captures`` (skips the test where it is absent)."""
    if not CAPTURES.is_dir():
        pytest.skip(f"real captures not available at {CAPTURES}")
    return CAPTURES
