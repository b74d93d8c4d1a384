"""``qkdpp keyrate`` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qkdpp.cli import main


def test_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keyrate", "--distances", "20,200", "--block-sizes", "1e6"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("protocol lim2014")
    rows = [line.split() for line in out[2:]]
    assert len(rows) == 2 and float(rows[0][2]) > 0 and float(rows[1][2]) == 0
    assert (
        main(
            [
                "keyrate",
                "--json",
                "--distances",
                "10",
                "--block-sizes",
                "1e6",
                "--protocol",
                "rusca2018",
            ]
        )
        == 0
    )
    rec = json.loads(capsys.readouterr().out.strip())
    assert rec["key_length"] > 0 and len(rec["mu"]) == 2


def test_profile_file_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prof = tmp_path / "link.toml"
    prof.write_text("eta_bob = 0.2\ne_mis = 0.01\n")
    assert (
        main(
            [
                "keyrate",
                "--profile",
                str(prof),
                "--distances",
                "30",
                "--block-sizes",
                "1e6",
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["key_length"] > 0
    bad = tmp_path / "bad.json"
    bad.write_text('{"eta_bobb": 0.2}')
    assert main(["keyrate", "--profile", str(bad)]) == 1
    assert "unknown fields" in capsys.readouterr().err
    assert main(["keyrate", "--f-ec", "0.5", "--distances", "1", "--block-sizes", "1e4"]) == 1


def test_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "rate.png"
    assert main(["keyrate", "--distances", "0,40", "--block-sizes", "1e6", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
