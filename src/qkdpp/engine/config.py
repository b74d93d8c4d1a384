"""Link configuration: one TOML file, validated, every default documented with its source.

Sections (all optional; ``docs/config.md`` lists every default; ``qkdpp config check FILE``
validates a file and every stage parameter of both roles):

``[session]``  ``block_size`` key-basis bits per block (default 1 000 000: finite-key rates of
   Lim et al. 2014 Fig. 2 are already within ~20 % of asymptotic at n_X = 1e6 near 25 km),
   ``batch_size`` blocks in lock-step (default 4), ``chunk_slots`` slots sifted per step
   (default 50 000 000, a multiple of 8), ``timeout_s`` per message (default 60), ``lanes``
   (default 1): independent runs over contiguous shares of the chunks at the same time, one
   forked process each, so that several cores work (``qkdpp process`` without ``--role``,
   ``qkdpp demo``; the two-process mode and ``qkdpp node`` use one lane), ``tail_fraction``
   (default 0.3): at the end of a capture the key bits short of a full block form one last,
   shorter block when they are at least this fraction of ``block_size`` (each lane has its
   own; 1 = drop them; a live ``qkdpp node`` drops them at shutdown). At 25 km (demo link,
   Lim et al. 2014 bound) blocks of 1.5e5 bits gave no key, 3e5 bits ℓ/n 0.16–0.20
   (``docs/config.md``).
``[simulate]`` :class:`qkdpp.io.simulator.LinkParams` fields (defaults after Lim et al. 2014 §IV,
   25 km) plus ``n_slots`` (default 200 000 000) and ``seed``.
``[timing]``, ``[sifting]``, ``[estimation]``, ``[reconcile]`` (with ``[reconcile.cascade]`` and
   ``[reconcile.ldpc]``), ``[verify]``, ``[key_length]``, ``[privacy_amplification]``,
   ``[authenticate]``, ``[commit]``: parameters of the stage of that name (see each stage's
   docstring for meaning, units and the source of its default).
``[keystore]`` ``path`` of the SQLite key store (default ``qkdpp-keys-<role>.sqlite``).

Unknown sections and unknown keys are errors that name the section, the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from pathlib import Path
from typing import Any

from qkdpp.errors import ConfigError
from qkdpp.io.simulator import LinkParams

BLOCK_STAGES = (
    "estimation",
    "reconcile",
    "verify",
    "key_length",
    "privacy_amplification",
    "authenticate",
    "commit",
)
SIFT_STAGES = ("sifting",)
SESSION_DEFAULTS: dict[str, Any] = {
    "block_size": 1_000_000,
    "batch_size": 4,
    "chunk_slots": 50_000_000,
    "timeout_s": 60.0,
    "lanes": 1,
    "tail_fraction": 0.3,
}
SECTIONS = ("session", "simulate", "timing", "keystore", *SIFT_STAGES, *BLOCK_STAGES)
# The built-in link's intensities, their probabilities and the Z-basis probability at both ends
# (`qkdpp demo`, `qkdpp node` and `qkdpp simulate` where nothing else is given): the finite-key
# optimum for 1e6-bit blocks at 25 km from ``qkdpp keyrate --distances 25 --block-sizes 1e6
# --p-ap 0`` (qkdpp.engine.demo). The simulator's own defaults (LinkParams: μ 0.5 / 0.1,
# p 0.7 / 0.2 / 0.1, p_z 0.9) give no key at that block size (s1 bound ≤ 0).
LINK_MU = [0.58, 0.26, 2e-4]
LINK_P_MU = [0.31, 0.52, 0.17]
LINK_P_Z = 0.83


def load_config(path: str | Path | None) -> dict[str, Any]:
    """Read and validate a TOML link configuration (``None``: built-in defaults)."""
    if path is None:
        return validate({})
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file {p} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{p}: not a UTF-8 text file ({exc.reason} at byte {exc.start}): a link "
            "configuration is a TOML text file"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {p}: {exc}") from exc
    return validate(data, source=str(p))


def validate(data: dict[str, Any], source: str = "configuration") -> dict[str, Any]:
    """Check sections and session/simulate keys; fill defaults. Stage keys are checked when the
    stages are built (their constructors name the bad parameter)."""
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {unknown}; allowed: {list(SECTIONS)}")
    for name, section in data.items():
        if not isinstance(section, dict):
            raise ConfigError(f"{source}: [{name}] must be a table, got {type(section).__name__}")
    session = {**SESSION_DEFAULTS, **data.get("session", {})}
    bad = sorted(set(session) - set(SESSION_DEFAULTS))
    if bad:
        raise ConfigError(
            f"{source}: unknown key(s) {bad} in [session]; allowed: {sorted(SESSION_DEFAULTS)}"
        )
    for key in ("block_size", "batch_size", "chunk_slots", "lanes"):
        if not isinstance(session[key], int) or session[key] < 1:
            raise ConfigError(
                f"{source}: [session] {key} must be a positive integer, got {session[key]!r}"
            )
    tf = session["tail_fraction"]
    if isinstance(tf, bool) or not isinstance(tf, (int, float)) or not 0 <= tf <= 1:
        raise ConfigError(
            f"{source}: [session] tail_fraction must be a number in [0, 1], got {tf!r}"
        )
    if session["lanes"] > 16:
        raise ConfigError(f"{source}: [session] lanes must be at most 16, got {session['lanes']}")
    if session["chunk_slots"] % 8:
        raise ConfigError(
            f"{source}: [session] chunk_slots must be a multiple of 8, got {session['chunk_slots']}"
        )
    sim = dict(data.get("simulate", {}))
    n_slots = sim.pop("n_slots", 200_000_000)
    seed = sim.pop("seed", 1)
    fields = {f.name for f in dataclasses.fields(LinkParams)}
    bad = sorted(set(sim) - fields)
    if bad:
        raise ConfigError(
            f"{source}: unknown key(s) {bad} in [simulate]; allowed: "
            f"{sorted(fields | {'n_slots', 'seed'})}"
        )
    for k, v in (
        ("mu", LINK_MU),
        ("p_mu", LINK_P_MU),
        ("p_z_alice", LINK_P_Z),
        ("p_z_bob", LINK_P_Z),
    ):
        sim.setdefault(k, v)
    for k, v in list(sim.items()):
        if isinstance(v, list):
            sim[k] = tuple(v)
    params = LinkParams(**sim)
    params.validate()
    if isinstance(n_slots, float) and n_slots.is_integer():
        n_slots = int(n_slots)  # 4e8 in a TOML file is a float
    if isinstance(n_slots, bool) or not isinstance(n_slots, int) or n_slots < 1:
        raise ConfigError(f"{source}: [simulate] n_slots must be an integer >= 1, got {n_slots!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"{source}: [simulate] seed must be an integer >= 0, got {seed!r}")
    out = {k: dict(v) for k, v in data.items()}
    out["session"] = session
    out["simulate"] = {"params": params, "n_slots": n_slots, "seed": seed}
    return out


def with_source_defaults(config: dict[str, Any], params: LinkParams) -> dict[str, Any]:
    """``config`` with the source's intensities (``[timing] mu``, ``[key_length] mu``), their
    probabilities (``[key_length] p_mu``), slot length and channel map where it is silent: the
    pilot and the finite-key bound must describe the source that made the data (a capture's
    header for ``qkdpp process``, ``[simulate]`` for ``qkdpp node``). A copy; values the
    configuration gives are kept, and must agree with the source (:func:`check_source_agrees`:
    ConfigError)."""
    check_source_agrees(config, params)
    cfg = {k: dict(v) if isinstance(v, dict) else v for k, v in config.items()}
    timing = cfg.setdefault("timing", {})
    timing.setdefault("mu", list(params.mu))
    timing.setdefault("slot_ps", params.slot_ps)
    if "channel_map" not in timing:
        timing["channel_map"] = {
            str(c): [b, v]
            for c, (b, v) in zip(params.channels, ((0, 0), (0, 1), (1, 0), (1, 1)), strict=True)
        }
    key_length = cfg.setdefault("key_length", {})
    key_length.setdefault("mu", list(params.mu))
    key_length.setdefault("p_mu", list(params.p_mu))
    return cfg


def check_source_agrees(config: dict[str, Any], params: LinkParams) -> None:
    """ConfigError when the configuration describes another source than ``params`` (the
    simulated one of ``qkdpp node``, or the one a simulated capture's header records):
    ``[timing] mu``, ``[key_length] mu`` or ``p_mu`` given and different from what the source
    sends (the key would be bounded for intensities it never sent)."""
    source = {"mu": list(params.mu), "p_mu": list(params.p_mu)}
    for section, keys in (("timing", ("mu",)), ("key_length", ("mu", "p_mu"))):
        for k in keys:
            given = config.get(section, {}).get(k)
            if given is None:
                continue
            n = len(given) if isinstance(given, (list, tuple)) else -1
            try:  # (not numbers: refused below like other values)
                values = [float(x) for x in given] if n >= 2 else None
            except (TypeError, ValueError):
                values = None
            if values != source[k][:n]:
                raise ConfigError(
                    f"[{section}] {k} = {given!r} is not what the simulated source sends "
                    f"([simulate] {k} = {source[k]}): the pilot and the finite-key bound must "
                    "describe the source; give the same values or leave them out"
                )


def tail_min_bits(session: dict[str, Any]) -> int:
    """The fewest pending key bits that still form a capture's last, shorter block
    (``tail_fraction x block_size``, at least 1)."""
    return max(1, math.ceil(float(session["tail_fraction"]) * session["block_size"]))


def block_stage_configs(
    config: dict[str, Any], workdir: str | Path, role: str
) -> list[dict[str, Any]]:
    """The block pipeline's stage tables, with this party's files (key store, which also holds
    the authentication pads, and bootstrap key) under ``workdir`` where the configuration names
    none."""
    from qkdpp.engine.inputs import party_files

    files = party_files(workdir, role)
    out = stage_configs(config, BLOCK_STAGES)
    for c in out:
        if c["stage"] == "commit":
            c.setdefault("path", str(files["keystore"]))
            c.setdefault("bootstrap", str(files["bootstrap"]))
        if c["stage"] == "authenticate":
            c.setdefault("bootstrap", str(files["bootstrap"]))
            c.setdefault("keystore", str(files["keystore"]))
        if c["stage"] == "reconcile":
            # the run's last, shorter block goes through Cascade at the full length
            # (ReconcileStage, ``pad_to``)
            c.setdefault("pad_to", int(config["session"]["block_size"]))
    return out


def stage_configs(config: dict[str, Any], names: tuple[str, ...]) -> list[dict[str, Any]]:
    """The ``{"stage": name, **params}`` tables of a pipeline, from the config sections."""
    return [{"stage": n, **config.get(n, {})} for n in names]
