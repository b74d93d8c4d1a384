from __future__ import annotations

import json
from pathlib import Path

import pytest

CAPTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "captures"


@pytest.fixture(scope="session")
def captures() -> Path:
    if not (CAPTURES / "manifest.json").exists():
        pytest.skip("shared captures folder absent")
    return CAPTURES


@pytest.fixture(scope="session")
def manifest(captures: Path) -> dict:
    return {m["file"]: m for m in json.loads((captures / "manifest.json").read_text())}
