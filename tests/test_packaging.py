"""Packaging: the build without a C compiler falls back to the reference backend, loudly;
``QKDPP_BACKEND`` picks backends; numba's cache never breaks a read-only install."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _copy_tree(tmp: Path) -> Path:
    dst = tmp / "src_copy"
    shutil.copytree(
        REPO / "src", dst / "src", ignore=shutil.ignore_patterns("*.so", "*.c", "__pycache__")
    )
    for name in ("setup.py", "pyproject.toml", "README.md"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, dst / name)
    return dst


def test_build_without_compiler_falls_back(tmp_path: Path) -> None:
    tree = _copy_tree(tmp_path)
    env = {**os.environ, "CC": "/bin/false", "LDSHARED": "/bin/false", "QKDPP_REQUIRE_COMPILED": ""}
    proc = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "reference backend" in proc.stderr
    assert not list((tree / "src").rglob("*.so"))
    check = subprocess.run(
        [sys.executable, "-c", "import qkdpp.kernels.bits as b; print(b.BACKEND)"],
        cwd=tree,
        env={**env, "PYTHONPATH": str(tree / "src")},
        capture_output=True,
        text=True,
    )
    assert check.stdout.strip() == "reference", check.stderr
    strict = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=tree,
        env={**env, "QKDPP_REQUIRE_COMPILED": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert strict.returncode != 0


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def test_backend_switch() -> None:
    ref = _run("import qkdpp.kernels.bits as b; print(b.BACKEND)", QKDPP_BACKEND="reference")
    assert ref.stdout.strip() == "reference"
    bad = _run("import qkdpp.kernels.bits", QKDPP_BACKEND="fast")
    assert "QKDPP_BACKEND must be" in bad.stderr


def test_numba_cache_falls_back_on_read_only_dir(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    code = "import qkdpp._numba as q; f = q.njit(lambda x: x + 1); print(q.CACHE_ENABLED, f(1))"
    if os.geteuid() == 0:
        # root writes anywhere: point the cache at a path below a regular file instead
        blocker = tmp_path / "file"
        blocker.write_text("x")
        out = _run(code, NUMBA_CACHE_DIR=str(blocker / "cache"))
    else:
        out = _run(code, NUMBA_CACHE_DIR=str(ro / "cache"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "2"]


def test_numba_cache_dir_is_set_before_any_kernel_imports_numba(tmp_path: Path) -> None:
    """The Cascade kernels import numba before qkdpp._numba; the cache still goes to
    $XDG_CACHE_HOME/qkdpp/numba (numba reads NUMBA_CACHE_DIR once, at its import)."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import qkdpp.kernels.cascade._nb, numba; print(numba.config.CACHE_DIR)",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(tmp_path / "qkdpp" / "numba")
