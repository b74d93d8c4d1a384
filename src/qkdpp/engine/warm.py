"""First-run compilation in two processes at once.

The first run of an installation compiles the numba kernels (then cached on disk, see
:mod:`qkdpp._numba`). When the Cascade kernels are not in the cache yet, :func:`start` compiles
the reconciliation kernels in a second Python process (``python -m qkdpp.engine.warm``: the
corrector's kernels first, the answerer's last) while this one compiles Bob's timing and the
sifting kernels (:func:`compile_here`) and then the answerer's Cascade kernels
(:meth:`~qkdpp.stages.cascade.CascadeStage.warm_answerer`); each process loads from the cache
what the other has finished, and the run then loads everything from the cache. ``qkdpp demo``
and ``qkdpp process`` call :func:`start` before they simulate or read their input, so the helper
works while they do. A warm cache costs one directory listing. Nothing here is needed for
correctness: if the helper process fails, the parties compile what they need as before.

Measured on the Zen 3 development host (2026-11-27, empty cache, ``qkdpp demo``): the helper
alone took 58.6 s for the reconciliation kernels, this process ~30 s for timing and sifting
(Bob's clock kernels ~25 s of it).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from typing import Any

import numba
import numpy as np

from qkdpp._numba import CACHE_ENABLED

log = logging.getLogger(__name__)

__all__ = ["cascade_is_cold", "compile_here", "first_run_compile", "load_kernels_once", "start"]


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
    """When the Cascade kernels are not cached: compile them in a helper process while this
    one compiles timing and sifting, and wait for the helper (at most 10 min, then it is
    killed). A no-op with a warm cache."""
    global _HELPER
    helper = start(config)
    if helper is None:
        return
    compile_here(config)
    _compile_answerer(config)
    try:
        helper.wait(timeout=600)
    except subprocess.TimeoutExpired:
        helper.kill()
        helper.wait()
    _HELPER = None


_LOADED = False  # load_kernels_once has run in this process
_HELPER: subprocess.Popen[bytes] | None = None  # the compile helper started by start()
_HERE = False  # compile_here has run in this process


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
    """Compile the reconciliation kernels of ``config`` in a second process when the Cascade
    kernels are not cached (:func:`cascade_is_cold`); ``None`` otherwise. Wait for the
    returned process before the parties set up their stages (:func:`first_run_compile` does).
    A second call while the helper runs returns the same process."""
    global _HELPER
    if _HELPER is not None:
        return _HELPER
    if not cascade_is_cold():
        return None
    arg = json.dumps(config.get("reconcile", {}))
    try:
        _HELPER = subprocess.Popen(
            [sys.executable, "-m", "qkdpp.engine.warm", arg],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except OSError as exc:
        log.debug("no compile helper process (%s); compiling in the parties", exc)
        return None
    return _HELPER


def _compile_answerer(config: dict[str, Any]) -> None:
    """The answering party's Cascade kernels, here (the helper compiles them last, and loads
    them from the cache when this process was first). Failures are logged and ignored."""
    from qkdpp.stages.reconcile import ReconcileStage

    try:
        stage = ReconcileStage("alice", **config.get("reconcile", {})).cascade
        if stage is not None:
            stage.warm_answerer()
    except Exception as exc:  # only a head start: the run compiles what is missing
        log.debug("answerer warm-up stopped early: %s", exc)


def compile_here(config: dict[str, Any]) -> None:
    """Compile the sifting kernels (both roles) and Bob's timing kernels (on a small simulated
    capture: 2e7 slots of the demo link) in this process, once per process. Failures are logged
    and ignored: the run compiles whatever is still missing."""
    from qkdpp.engine.config import SIFT_STAGES, stage_configs
    from qkdpp.engine.demo import demo_config
    from qkdpp.frame import Frame, FrameMeta, KeyState, Role
    from qkdpp.io.simulator import simulate_link
    from qkdpp.pipeline.runner import Pipeline
    from qkdpp.stages.timing import TimingStage
    from qkdpp.testing import Mailbox

    global _HERE
    if _HERE:
        return
    _HERE = True
    try:
        for role in ("alice", "bob"):
            Pipeline.from_config(role, stage_configs(config, SIFT_STAGES)).setup()
        n = 20_000_000
        demo = demo_config(n)
        alice, bob, _ = simulate_link(demo["simulate"]["params"], n, 1)
        peer = Mailbox()
        mu = demo["timing"]["mu"]
        meta = FrameMeta("warm-up", 0, Role.ALICE, state=KeyState.RAW)
        aux_a = {"intensity_p": alice.intensity_p, "slot0": 0, "n_slots": n}
        TimingStage("alice", mu=mu).process_batch([Frame(meta, np.zeros(0, np.uint8), aux_a)], peer)
        aux_b = {"t_ps": bob.t_ps, "channel": bob.channel, "slot0": 0, "n_slots": n}
        meta_b = FrameMeta("warm-up", 0, Role.BOB, state=KeyState.RAW)
        TimingStage("bob", mu=mu).process_batch([Frame(meta_b, np.zeros(0, np.uint8), aux_b)], peer)
    except Exception as exc:  # only a head start: the run compiles what is missing
        log.debug("compile warm-up stopped early: %s", exc)


def _main(argv: list[str]) -> int:
    from qkdpp.stages.reconcile import ReconcileStage

    params = json.loads(argv[0]) if argv else {}
    for role in ("alice", "bob"):
        ReconcileStage(role, **params).setup()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
