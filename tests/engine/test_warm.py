"""First-run compilation in a helper process (qkdpp.engine.warm)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qkdpp.engine import warm


def _cold(cache_dir: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-c", "from qkdpp.engine import warm; print(warm.cascade_is_cold())"],
        capture_output=True,
        text=True,
        env={**os.environ, "NUMBA_CACHE_DIR": str(cache_dir)},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_empty_cache_is_cold_and_caching_off_is_not(tmp_path: Path) -> None:
    assert _cold(tmp_path / "empty") == "True"
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a cache directory below a regular file cannot be created
    assert _cold(blocker / "cache") == "False"


def test_warm_cache_starts_no_helper() -> None:
    """This test process has compiled and cached Cascade (the suite runs it), so no helper."""
    from qkdpp.stages.cascade import CascadeStage

    CascadeStage("alice").setup()
    if warm.CACHE_ENABLED:
        assert not warm.cascade_is_cold()
    assert warm.start({}) is None


@pytest.mark.slow
def test_helper_process_fills_the_cache(tmp_path: Path) -> None:
    """The helper (``python -m qkdpp.engine.warm``) compiles Cascade into an empty cache, after
    which the cache is warm (≈ 35 s: slow)."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "qkdpp.engine.warm", "{}"], env=env, timeout=600, check=False
    )
    assert out.returncode == 0
    assert _cold(tmp_path) == "False"


def test_kernels_load_once_per_process() -> None:
    """Before forking lanes, run_local loads the kernels once; later calls do nothing."""
    import time

    from qkdpp.engine.config import validate

    cfg = validate({})
    warm.load_kernels_once(cfg)
    assert warm._LOADED
    t = time.perf_counter()
    warm.load_kernels_once(cfg)
    assert time.perf_counter() - t < 0.01


def test_start_twice_gives_the_same_helper(tmp_path: Path) -> None:
    """``qkdpp demo`` starts the helper before simulating; run_local's later start() must reuse
    it, not start a second compile of the same kernels."""
    code = (
        "from qkdpp.engine import warm\n"
        "h = warm.start({})\n"
        "assert h is not None and warm.start({}) is h\n"
        "h.kill(); h.wait()\n"
        "import shutil; shutil.rmtree(warm._CLAIMS)\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)},
        timeout=120,
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_answerer_warm_up_loads_the_answer_kernels() -> None:
    """The main process's share of a first run: the answering party's three kernels."""
    from qkdpp.kernels.cascade import _nb
    from qkdpp.stages.cascade import CascadeStage

    CascadeStage("alice").warm_answerer()
    for kernel in (_nb.answer_passes, _nb.answer_batch, _nb.answer_round):
        assert kernel.signatures, kernel


def test_units_are_shared_by_claims(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process runs, in order, exactly the units no other process has claimed, and claims
    them; a unit it has run itself is not run again; without a claims folder it runs all."""
    ran: list[str] = []
    monkeypatch.setattr(warm, "_run_unit", lambda unit, config: ran.append(unit))
    monkeypatch.setattr(warm, "_DONE", {"sifting-alice"})
    (tmp_path / "timing").touch()  # the other process has it
    warm.run_units({}, str(tmp_path))
    assert ran == ["corrector", "sifting-bob", "answerer"]
    claimed = sorted(p.name for p in tmp_path.iterdir())
    assert claimed == ["answerer", "corrector", "sifting-bob", "timing"]
    ran.clear()
    warm.run_units({}, str(tmp_path))  # all claimed now
    assert ran == []
    warm.run_units({}, None)
    assert ran == [u for u in warm.UNITS if u != "sifting-alice"]


def test_compile_here_runs_only_the_units_not_run_here(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []

    def run(unit: str, config: dict[str, object]) -> None:
        ran.append(unit)
        warm._DONE.add(unit)

    monkeypatch.setattr(warm, "_run_unit", run)
    monkeypatch.setattr(warm, "_DONE", {"timing", "corrector"})
    warm.compile_here({})
    assert ran == ["sifting-alice", "sifting-bob"]
    warm.compile_here({})
    assert ran == ["sifting-alice", "sifting-bob"]


def test_bob_round_and_step_are_one_compiled_kernel() -> None:
    """The batched corrector's two entry points (the usual round, and the step after a pass
    opens) run one compiled function with one signature: every compiled caller of the step
    compiles its code again on a first run (numba links callees into callers)."""
    from qkdpp.frame import Role
    from qkdpp.kernels.cascade import _nb
    from qkdpp.pipeline.runner import Pipeline
    from qkdpp.stages.cascade import CascadeStage
    from qkdpp.testing import correlated_pair, run_pair

    pa = Pipeline([CascadeStage(Role.ALICE, variant="option7")])
    pb = Pipeline([CascadeStage(Role.BOB, variant="option7")])
    pairs = [correlated_pair(20_000, 0.03, frame_id=i, seed=i) for i in range(3)]
    run_pair(pa, pb, [p[0] for p in pairs], [p[1] for p in pairs])
    assert len(_nb._bob_frames.signatures) == 1
    for entry in (_nb.bob_round, _nb.bob_step_frames):
        assert not hasattr(entry, "signatures"), entry  # Python, not a second compiled caller
