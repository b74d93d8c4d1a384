"""``qkdpp config check FILE``: validate a link configuration before a run.

Reads the TOML (:func:`qkdpp.engine.config.load_config`: sections, ``[session]`` and
``[simulate]`` keys) and builds every stage of both roles from it, so a wrong stage parameter is
reported with its section and name now rather than when the link starts. Nothing is opened or
written: key stores and bootstrap keys are only named (``--workdir``, default ``.``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from qkdpp.engine.config import SIFT_STAGES, block_stage_configs, load_config, stage_configs
from qkdpp.errors import ConfigError
from qkdpp.frame import Role
from qkdpp.pipeline.runner import Pipeline


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "config",
        help="validate a link configuration (TOML) before a run",
        description="Validate a link configuration: sections, keys and every stage parameter "
        "of both roles. Defaults and their sources: docs/config.md.",
    )
    sub = p.add_subparsers(dest="action", required=True)
    c = sub.add_parser("check", help="validate FILE and print the resulting stage list")
    c.add_argument("file", type=Path, help="link configuration (TOML)")
    c.add_argument("--workdir", type=Path, default=Path("."), help="where the key stores would be")
    c.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.file)
    names: list[str] = []
    for role in (Role.ALICE, Role.BOB):
        try:
            timing = Pipeline.from_config(role, [{"stage": "timing", **cfg.get("timing", {})}])
            sift = Pipeline.from_config(role, stage_configs(cfg, SIFT_STAGES))
            blocks = Pipeline.from_config(role, block_stage_configs(cfg, args.workdir, role.value))
        except ConfigError as exc:
            raise ConfigError(f"{args.file}: {exc}") from None
        names = [s.name for p in (timing, sift, blocks) for s in p.stages]
    s = cfg["session"]
    print(f"{args.file}: OK")
    print(f"  stages: {' → '.join(names)}")
    print(
        f"  block_size {s['block_size']}, batch_size {s['batch_size']}, "
        f"chunk_slots {s['chunk_slots']}, lanes {s['lanes']}, timeout_s {s['timeout_s']}"
    )
    return 0
