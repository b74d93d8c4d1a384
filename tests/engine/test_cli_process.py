"""`qkdpp simulate` → `qkdpp bootstrap` → `qkdpp process`, in one process and as two processes
over TCP: exit 0, identical key stores, a JSON report."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from qkdpp.engine.keys import compare_stores

pytestmark = pytest.mark.two_party


def _qkdpp(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "qkdpp", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cap")
    out = _qkdpp(
        "simulate",
        "--out",
        "sim",
        "--slots",
        "80000000",
        "--fibre-km",
        "5",
        "--mu",
        "0.58",
        "0.26",
        "2e-4",
        "--p-mu",
        "0.31",
        "0.52",
        "0.17",
        "--p-z",
        "0.83",
        "--offset-ps",
        "2.5e8",
        "--drift-ppm",
        "4",
        cwd=d,
    )
    assert out.returncode == 0, out.stderr
    assert (d / "sim" / "link.toml").exists()
    return d


def test_process_one_process(capture: Path, tmp_path: Path) -> None:
    assert _qkdpp("bootstrap", str(tmp_path), cwd=capture).returncode == 0
    out = _qkdpp(
        "process",
        "sim/alice.npz",
        "sim/bob.qkdc",
        "--workdir",
        str(tmp_path),
        "--json",
        str(tmp_path / "report.json"),
        cwd=capture,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "keys identical at both ends: yes" in out.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["keys"]["identical"] and report["summary"]["blocks"] >= 1, out.stdout


def test_process_two_processes_over_tcp(capture: Path, tmp_path: Path) -> None:
    assert _qkdpp("bootstrap", str(tmp_path), cwd=capture).returncode == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    common = [
        "--workdir",
        str(tmp_path),
        "--config",
        "sim/link.toml",
        "--peer",
        f"tcp://127.0.0.1:{port}",
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "qkdpp", "process", "--role", role, f, *common],
            cwd=capture,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for role, f in (("alice", "sim/alice.npz"), ("bob", "sim/bob.qkdc"))
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (o, e) in zip(procs, outs, strict=True):
        assert p.returncode == 0, "\n---\n".join(o + e for o, e in outs)
    check = compare_stores(tmp_path / "keys-alice.sqlite", tmp_path / "keys-bob.sqlite")
    assert check["identical"] and check["keys"] >= 1, check


def test_process_rejects_bad_input_clearly(capture: Path, tmp_path: Path) -> None:
    out = _qkdpp("process", "missing.npz", "sim/bob.qkdc", "--workdir", str(tmp_path), cwd=capture)
    assert out.returncode == 1 and "missing.npz: file not found" in out.stderr
    (tmp_path / "bad.toml").write_text("[sesion]\n")
    out = _qkdpp(
        "process",
        "sim/alice.npz",
        "sim/bob.qkdc",
        "--config",
        str(tmp_path / "bad.toml"),
        cwd=capture,
    )
    assert out.returncode == 1 and "unknown section" in out.stderr


def _process_with(config: str, capture: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """`qkdpp process` of the module's capture with the configuration text ``config``."""
    assert _qkdpp("bootstrap", str(tmp_path), cwd=capture).returncode == 0
    (tmp_path / "link.toml").write_text(config)
    cfg, work = str(tmp_path / "link.toml"), str(tmp_path)
    args = ("sim/alice.npz", "sim/bob.qkdc", "--config", cfg, "--workdir", work)
    return _qkdpp("process", *args, cwd=capture)


def test_too_short_a_capture_is_explained(capture: Path, tmp_path: Path) -> None:
    """Sifted key bits that form no block are reported with what to change (before 2026-11-28
    a capture shorter than a block printed '0/0 blocks' and nothing else)."""
    out = _process_with("[session]\nblock_size = 50000000\n", capture, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0/0 blocks" in out.stdout
    assert "sifted key bits formed no key block" in out.stdout
    assert "block_size = 50000000" in out.stdout


def test_config_contradicting_the_capture_is_refused(capture: Path, tmp_path: Path) -> None:
    """A configuration whose key-length intensities differ from those the simulated capture's
    header records is refused, naming both (the key would be bounded for another source)."""
    out = _process_with("[key_length]\nmu = [0.5, 0.1, 2e-4]\n", capture, tmp_path)
    assert out.returncode == 1
    assert "[key_length] mu = [0.5, 0.1, 0.0002] is not what the simulated source" in out.stderr
    assert "[simulate] mu = [0.58, 0.26, 0.0002]" in out.stderr
