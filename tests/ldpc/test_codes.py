"""Shipped code tables: load, checksums, structure, reproducible construction."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qkdpp import codes
from qkdpp.codes import FAMILIES, code_id, list_codes, load_code
from qkdpp.codes.construct import degree_distribution, peg_code
from qkdpp.errors import ConfigError


def test_every_family_code_is_shipped_and_loads():
    for fam, spec in FAMILIES.items():
        for rate in spec["rates"]:
            code = load_code(code_id(fam, rate))
            assert code.n == spec["n"]
            assert abs(code.rate - rate) < 1e-3
            assert code.row_ptr[-1] == code.edges
            assert code.col_idx.min() >= 0 and code.col_idx.max() < code.n
            # no repeated edge within a row; every variable has degree >= 2
            for c in range(0, code.m, max(1, code.m // 50)):
                row = code.col_idx[code.row_ptr[c] : code.row_ptr[c + 1]]
                assert np.unique(row).size == row.size
            assert np.bincount(code.col_idx, minlength=code.n).min() >= 2
            assert np.array_equal(np.sort(code.order), np.arange(code.n))
    assert any(FAMILIES[f]["n"] >= 30000 for f in FAMILIES)
    assert min(r for f in FAMILIES for r in FAMILIES[f]["rates"]) <= 0.5
    assert max(r for f in FAMILIES for r in FAMILIES[f]["rates"]) >= 0.95
    assert set(list_codes("peg4k")) == {code_id("peg4k", r) for r in FAMILIES["peg4k"]["rates"]}


def test_shipped_data_is_compact():
    total = sum(p.stat().st_size for p in codes.DATA_DIR.iterdir())
    assert total < 5_000_000


def test_unknown_code_and_corrupt_file(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="unknown LDPC code"):
        load_code("peg4k-r0.33")
    # a copy of the data dir with one flipped byte fails its checksum
    for p in codes.DATA_DIR.iterdir():
        if p.is_file():  # an installed package also holds __pycache__/
            (tmp_path / p.name).write_bytes(p.read_bytes())
    target = tmp_path / "peg4k-r0.50.npz"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    monkeypatch.setattr(codes, "DATA_DIR", tmp_path)
    codes.load_code.cache_clear()
    try:
        with pytest.raises(ConfigError, match="SHA-256"):
            load_code("peg4k-r0.50")
    finally:
        monkeypatch.undo()
        codes.load_code.cache_clear()


def test_sha256_sidecars_match_index():
    index = json.loads((codes.DATA_DIR / "index.json").read_text())
    for cid, entry in index.items():
        side = (codes.DATA_DIR / f"{cid}.sha256").read_text().split()[0]
        assert side == entry["sha256"]


def test_construction_reproducible_from_seed():
    """The shipped peg4k-r0.70 code is exactly what the construction tool builds."""
    spec = FAMILIES["peg4k"]
    row_ptr, col_idx = peg_code(spec["n"], 0.70, spec["seed"], depth=spec["depth"])
    code = load_code("peg4k-r0.70")
    np.testing.assert_array_equal(row_ptr, code.row_ptr)
    np.testing.assert_array_equal(col_idx, code.col_idx)


def test_degree_distribution_consistent():
    for rate in (0.5, 0.73, 0.95):
        vd, cd = degree_distribution(1000, rate)
        assert vd.sum() == cd.sum()
        assert vd.size == 1000 and cd.size == round((1 - rate) * 1000)
        assert cd.max() - cd.min() <= 1


def test_derived_family_same_h_greedy_order_reproducible():
    """peg4kx = peg4k's H with the greedy puncture order, rebuilt exactly from the seed."""
    from qkdpp.codes.construct import greedy_puncture_order

    for rate in FAMILIES["peg4kx"]["rates"]:
        base = load_code(code_id("peg4k", rate))
        x = load_code(code_id("peg4kx", rate))
        np.testing.assert_array_equal(base.row_ptr, x.row_ptr)
        np.testing.assert_array_equal(base.col_idx, x.col_idx)
        want = greedy_puncture_order(
            x.row_ptr, x.col_idx, x.n, x.m // 3, FAMILIES["peg4kx"]["seed"]
        )
        np.testing.assert_array_equal(x.order, want)
    # the greedy prefix: punctured bits share fewer checks than a random choice of as many
    code = load_code("peg4kx-r0.50")
    p = code.m // 8

    def shared(pos):
        hits = np.zeros(code.m, np.int64)
        mark = np.zeros(code.n, bool)
        mark[pos] = True
        for c in range(code.m):
            hits[c] = mark[code.col_idx[code.row_ptr[c] : code.row_ptr[c + 1]]].sum()
        return int((hits > 1).sum())

    assert shared(code.order[:p]) < shared(load_code("peg4k-r0.50").order[:p])


def test_greedy_order_edge_cases():
    from qkdpp.codes.construct import greedy_puncture_order

    code = load_code("peg4k-r0.90")
    for count in (0, 1, 7):
        o = greedy_puncture_order(code.row_ptr, code.col_idx, code.n, count, 3)
        assert np.array_equal(np.sort(o), np.arange(code.n))
