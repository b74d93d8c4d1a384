"""First-run compilation in two processes at once.

The first run of an installation compiles the numba kernels (then cached on disk, see
:mod:`qkdpp._numba`). When the Cascade kernels are not in the cache yet, :func:`start` starts
a second Python process (``python -m qkdpp.engine.warm``) and both processes share the warm-up
work: a list of units (:data:`UNITS`: the Cascade corrector's and answerer's kernels, Bob's
timing kernels, the sifting pipeline of each role), each taken by the first process to claim it (an
empty file created exclusively in a folder of the run), in list order. The helper starts at
once; this process joins in :func:`first_run_compile`, after the demo has simulated its link,
and then waits for the helper. Each process loads from the cache what the other has finished,
and the run then loads everything from the cache. ``qkdpp demo`` and ``qkdpp process`` call
:func:`start` before they simulate or read their input. A warm cache costs one directory
listing. Nothing here is needed for correctness: if the helper process fails, the parties
compile what they need as before.

Measured on the Zen 3 development host (2026-11-27, empty cache, ``qkdpp demo``, 2 cores
shared with other jobs, 5 alternating pairs): 45.6–54.9 s (median 47.9) in all, the two
processes' last compilations 1–6 s apart; with the fixed split of before (the helper: the
reconciliation kernels; this process: timing, sifting, then the answerer's kernels) 55.6–89.7 s
(median 69.0), and either process could end 5–15 s after the other (docs/cascade.md,
"Compile time").
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

import numba
import numpy as np

from qkdpp._numba import CACHE_ENABLED

log = logging.getLogger(__name__)

__all__ = [
    "UNITS",
    "cascade_is_cold",
    "compile_here",
    "first_run_compile",
    "load_kernels_once",
    "run_units",
    "start",
]


def cascade_is_cold() -> bool:
    """True when most of the Cascade kernels have no entry in numba's on-disk cache (their
    index files are missing); False when caching is off (nothing to share between processes)."""
    if not CACHE_ENABLED:
        return False
    from qkdpp.kernels.cascade import _nb

    disp = [v for v in vars(_nb).values() if isinstance(v, numba.core.registry.CPUDispatcher)]
    missing = 0
    for d in disp:
        cache = getattr(d, "_cache", None)
        path = getattr(getattr(cache, "_cache_file", None), "_index_path", None)
        if path is None:
            return False  # an unknown numba layout: do not guess
        missing += not os.path.exists(path)
    return 2 * missing > len(disp)


def first_run_compile(config: dict[str, Any]) -> None:
    """When the Cascade kernels are not cached: share the warm-up units (:data:`UNITS`) with a
    helper process, then wait for it (at most 10 min, then it is killed). A no-op with a warm
    cache."""
    global _HELPER, _CLAIMS
    helper = start(config)
    if helper is None:
        return
    claims = _CLAIMS
    run_units(config, claims)
    try:
        helper.wait(timeout=600)
    except subprocess.TimeoutExpired:
        helper.kill()
        helper.wait()
    _HELPER = None
    _CLAIMS = None
    if claims is not None:
        shutil.rmtree(claims, ignore_errors=True)


_LOADED = False  # load_kernels_once has run in this process
_HELPER: subprocess.Popen[bytes] | None = None  # the compile helper started by start()
_CLAIMS: str | None = None  # the folder of the helper's and this process's unit claims
_DONE: set[str] = set()  # the units run in this process (run_units, compile_here)


def load_kernels_once(config: dict[str, Any]) -> None:
    """Load (from the cache, or compile) the timing, sifting and reconciliation kernels of both
    roles in this process, once per process (:func:`compile_here` and throwaway reconciliation
    stages), so that lanes forked afterwards inherit them instead of each loading them again.
    Measured (1.6e9 slots, two lanes, a process's first run, 4 alternating pairs): the forked
    lane's CPU 0.47–0.93 s instead of 1.14–1.33 s, the run's 1.8–2.9 s instead of 2.9–3.6 s."""
    global _LOADED
    if _LOADED:
        return
    from qkdpp.stages.reconcile import ReconcileStage

    compile_here(config)
    for role in ("alice", "bob"):
        ReconcileStage(role, **config.get("reconcile", {})).setup()
    _LOADED = True


def start(config: dict[str, Any]) -> subprocess.Popen[bytes] | None:
    """Start the helper process that shares the warm-up units of ``config`` with this one
    (:func:`run_units`) when the Cascade kernels are not cached (:func:`cascade_is_cold`);
    ``None`` otherwise. Call :func:`first_run_compile` before the parties set up their stages.
    A second call while the helper runs returns the same process."""
    global _HELPER, _CLAIMS
    if _HELPER is not None:
        return _HELPER
    if not cascade_is_cold():
        return None
    try:
        arg = json.dumps({k: config.get(k, {}) for k in ("sifting", "reconcile")})
    except (TypeError, ValueError) as exc:
        log.debug("no compile helper process (configuration: %s)", exc)
        return None
    claims = tempfile.mkdtemp(prefix="qkdpp-warm-")
    try:
        _HELPER = subprocess.Popen(
            [sys.executable, "-m", "qkdpp.engine.warm", arg, claims],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except OSError as exc:
        log.debug("no compile helper process (%s); compiling in the parties", exc)
        shutil.rmtree(claims, ignore_errors=True)
        return None
    _CLAIMS = claims
    return _HELPER


UNITS = ("corrector", "timing", "sifting-bob", "answerer", "sifting-alice")
"""The warm-up units of a first run, largest first (CPU seconds on the Zen 3 host, empty cache,
2026-11-27: ≈ 30, 24, 6, 5, 5): the reconciliation stages of both roles with the Cascade
corrector's kernels (:meth:`~qkdpp.stages.cascade.CascadeStage.warm_corrector`), Bob's timing
kernels, each role's sifting pipeline, the Cascade answerer's kernels
(:meth:`~qkdpp.stages.cascade.CascadeStage.warm_answerer`)."""


def run_units(config: dict[str, Any], claims: str | None) -> None:
    """Run the warm-up units (:data:`UNITS`) of ``config`` that no other process has claimed
    in the folder ``claims`` (all of them when ``claims`` is ``None``), in order. A unit is
    claimed by creating the file of its name there exclusively. Failures are logged and
    ignored: the run compiles whatever is still missing."""
    for unit in UNITS:
        if unit in _DONE:
            continue
        if claims is not None:
            try:
                os.close(os.open(os.path.join(claims, unit), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue  # the other process has it
            except OSError as exc:  # (the folder is gone: the other process has finished)
                log.debug("warm-up unit %s not claimed: %s", unit, exc)
                continue
        _run_unit(unit, config)


def _run_unit(unit: str, config: dict[str, Any]) -> None:
    from qkdpp.stages.reconcile import ReconcileStage

    _DONE.add(unit)
    try:
        if unit in ("corrector", "answerer"):
            for role in ("alice", "bob"):  # (ReconcileStage.setup less the other Cascade unit)
                stage = ReconcileStage(role, **config.get("reconcile", {}))
                if stage.cascade is not None:
                    getattr(stage.cascade, f"warm_{unit}")()
                if stage.ldpc is not None and unit == "corrector":
                    stage.ldpc.setup()
        elif unit == "timing":
            _warm_timing()
        else:  # sifting-alice, sifting-bob
            from qkdpp.engine.config import SIFT_STAGES, stage_configs
            from qkdpp.pipeline.runner import Pipeline

            role = unit.removeprefix("sifting-")
            Pipeline.from_config(role, stage_configs(config, SIFT_STAGES)).setup()
    except Exception as exc:  # only a head start: the run compiles what is missing
        log.debug("warm-up unit %s stopped early: %s", unit, exc)


def compile_here(config: dict[str, Any]) -> None:
    """Load or compile the sifting kernels (both roles) and Bob's timing kernels in this
    process: the units ``sifting-*`` and ``timing`` of :data:`UNITS` not run here yet."""
    for unit in ("sifting-alice", "sifting-bob", "timing"):
        if unit not in _DONE:
            _run_unit(unit, config)


def _warm_timing() -> None:
    """Both parties' timing stages on a small simulated capture (2e7 slots of the demo link):
    Bob's clock kernels; and three kernels that only larger captures use."""
    from qkdpp.engine.demo import demo_config
    from qkdpp.frame import Frame, FrameMeta, KeyState, Role
    from qkdpp.io.simulator import simulate_link
    from qkdpp.stages.timing import TimingStage
    from qkdpp.testing import Mailbox

    n = 20_000_000
    demo = demo_config(n)
    alice, bob, _ = simulate_link(demo["simulate"]["params"], n, 1)
    peer: Any = Mailbox()  # (stands in for the PeerScope the stages take)
    mu = demo["timing"]["mu"]
    meta = FrameMeta("warm-up", 0, Role.ALICE, state=KeyState.RAW)
    aux_a = {"intensity_p": alice.intensity_p, "slot0": 0, "n_slots": n}
    TimingStage("alice", mu=mu).process_batch([Frame(meta, np.zeros(0, np.uint8), aux_a)], peer)
    aux_b = {"t_ps": bob.t_ps, "channel": bob.channel, "slot0": 0, "n_slots": n}
    meta_b = FrameMeta("warm-up", 0, Role.BOB, state=KeyState.RAW)
    TimingStage("bob", mu=mu).process_batch([Frame(meta_b, np.zeros(0, np.uint8), aux_b)], peer)
    # kernels of captures larger than this one (the clock fit's subset of every k-th event,
    # the chunked slot assignment's channel check), on a few events of their dtypes
    from qkdpp.kernels.slots import _clock_nb, _nb

    ch = np.zeros(8, np.uint8)
    _clock_nb.decimate(np.arange(8, dtype=np.uint64), ch, 2)
    _clock_nb.channel_counts(ch)
    _nb.first_unmapped(ch, np.zeros(256, np.uint8))


def _main(argv: list[str]) -> int:
    """The helper: ``python -m qkdpp.engine.warm CONFIG [CLAIMS]`` with ``CONFIG`` the JSON of
    the ``sifting`` and ``reconcile`` sections; without ``CLAIMS`` (the claims folder, removed
    at the end) it runs every unit."""
    config = json.loads(argv[0]) if argv else {}
    claims = argv[1] if len(argv) > 1 else None
    run_units(config, claims)
    if claims is not None:  # every unit is claimed now: the folder is no longer needed
        shutil.rmtree(claims, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
