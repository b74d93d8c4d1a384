"""Device profiles in hardware/ load and carry valid channel maps."""

from __future__ import annotations

import pytest

from qkdpp.errors import ConfigError
from qkdpp.io.profiles import available_profiles, load_profile

EXPECTED = {
    "swabian_time_tagger_ultra",
    "swabian_time_tagger_x",
    "picoquant_hydraharp400",
    "picoquant_multiharp150",
    "qutools_qutag",
    "sfifteen_tdc",
}


def test_all_profiles_load():
    names = set(available_profiles())
    assert names >= EXPECTED
    for n in EXPECTED:
        prof = load_profile(n)
        assert sorted(prof["channel_map"].values()) == [(0, 0), (0, 1), (1, 0), (1, 1)]
        assert prof["device"]["resolution_ps"] > 0


def test_bad_profile(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('[device]\nmodel = "x"\n[channels]\n1 = "Q7"\n')
    with pytest.raises(ConfigError, match="detector name 'Q7'"):
        load_profile(p)
    with pytest.raises(ConfigError, match="no device profile"):
        load_profile("does_not_exist")
