"""Device profiles (``qkdpp/hardware/*.toml``): channel map, delays, resolution, clock input.

``load_profile(name_or_path)`` reads a profile (a path, or a name looked up in ``$QKDPP_HARDWARE``
then the profiles shipped in the package, :mod:`qkdpp.hardware`) and validates its channel map
and delays.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from qkdpp.errors import ConfigError
from qkdpp.timing.channel_map import parse_channel_map

_SHIPPED = Path(__file__).resolve().parents[1] / "hardware"


def profile_dirs() -> list[Path]:
    """Folders searched for profiles by name."""
    dirs = []
    env = os.environ.get("QKDPP_HARDWARE")
    if env:
        dirs.append(Path(env))
    dirs.append(_SHIPPED)
    return dirs


def available_profiles() -> list[str]:
    """Names of the profiles found."""
    names: set[str] = set()
    for d in profile_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.toml"))
    return sorted(names)


def load_profile(name: str | Path) -> dict[str, Any]:
    """Load and validate a profile; adds ``channel_map`` ``{channel: (basis, value)}``."""
    p = Path(name)
    if not p.suffix:
        for d in profile_dirs():
            if (d / f"{name}.toml").is_file():
                p = d / f"{name}.toml"
                break
        else:
            raise ConfigError(f"no device profile {name!r}; available: {available_profiles()}")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read device profile {p}: {exc}") from exc
    for key in ("device", "channels"):
        if key not in data:
            raise ConfigError(f"device profile {p} lacks the [{key}] table")
    data["channel_map"] = parse_channel_map(data["channels"])
    delays = data.get("delays_ps", {})
    try:
        data["delays_ps"] = {int(k): float(v) for k, v in delays.items()}
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"device profile {p}: bad [delays_ps] entry ({exc})") from exc
    unknown = set(data["delays_ps"]) - set(data["channel_map"])
    if unknown:
        raise ConfigError(f"device profile {p}: delays for unmapped channels {sorted(unknown)}")
    data["path"] = str(p)
    return data


__all__ = ["available_profiles", "load_profile", "profile_dirs"]
