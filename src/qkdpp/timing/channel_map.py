"""Mapping of time-tagger channels to Bob's detectors (basis, value).

A channel map is a mapping ``channel -> (basis, value)`` or ``channel -> "Z0" | "Z1" | "X0" |
"X1"`` (basis 0 = Z, 1 = X, as in :mod:`qkdpp.io.records`). Device profiles under
``hardware/*.toml`` carry one in their ``[channels]`` table.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from qkdpp.errors import ConfigError
from qkdpp.kernels.slots import UNMAPPED

_NAMES = {"Z0": (0, 0), "Z1": (0, 1), "X0": (1, 0), "X1": (1, 1)}

ChannelMap = Mapping[int | str, "tuple[int, int] | str"]


def parse_channel_map(cmap: ChannelMap) -> dict[int, tuple[int, int]]:
    """Normalise a channel map to ``{channel: (basis, value)}`` (raises :class:`ConfigError`)."""
    out: dict[int, tuple[int, int]] = {}
    for k, v in cmap.items():
        try:
            ch = int(k)
        except (TypeError, ValueError):
            raise ConfigError(f"channel map key {k!r} is not an integer channel") from None
        if not 0 <= ch < UNMAPPED:
            raise ConfigError(f"channel {ch} outside 0..254")
        if isinstance(v, str):
            if v.upper() not in _NAMES:
                raise ConfigError(f"channel {ch}: detector name {v!r} not one of {list(_NAMES)}")
            out[ch] = _NAMES[v.upper()]
        else:
            b, val = (int(x) for x in v)
            if b not in (0, 1) or val not in (0, 1):
                raise ConfigError(f"channel {ch}: (basis, value) must be 0/1, got {v!r}")
            out[ch] = (b, val)
    if not out:
        raise ConfigError("empty channel map")
    return out


def channel_tables(cmap: ChannelMap) -> tuple[np.ndarray, np.ndarray]:
    """``uint8[256]`` basis and value lookup tables (255 = channel not in the map)."""
    m = parse_channel_map(cmap)
    basis = np.full(256, UNMAPPED, np.uint8)
    value = np.full(256, UNMAPPED, np.uint8)
    for ch, (b, v) in m.items():
        basis[ch] = b
        value[ch] = v
    return basis, value


def map_channels(channel: np.ndarray, cmap: ChannelMap) -> tuple[np.ndarray, np.ndarray]:
    """Bob's (basis, value) of each event's channel; :class:`ConfigError` naming the first event
    whose channel is outside the map."""
    basis, value = channel_tables(cmap)
    ch = np.asarray(channel, np.uint8)
    b = basis[ch]
    bad = np.flatnonzero(b == UNMAPPED)
    if bad.size:
        i = int(bad[0])
        raise ConfigError(
            f"event {i}: channel {int(ch[i])} is not in the channel map "
            f"{sorted(parse_channel_map(cmap))}"
        )
    return b, value[ch]


__all__ = ["ChannelMap", "channel_tables", "map_channels", "parse_channel_map"]
