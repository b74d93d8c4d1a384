"""Fixtures of the key-delivery tests: a throw-away PKI (openssl CLI) and a loopback node pair."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from qkdpp.service.devpair import SAES_A, SAES_B, NodePair, seed_blocks
from qkdpp.service.tls import client_context, make_dev_pki

BLOCK_BITS = 8 * 4096 + 5  # 4 KiB + 5 bits: several chunks, a partial last byte


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """CA, server certs kme-a / kme-b, client certs for every SAE and an outsider."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl command-line tool not available")
    d = tmp_path_factory.mktemp("pki")
    return make_dev_pki(d, [*SAES_A, *SAES_B, "intruder"], servers=("kme-a", "kme-b"))


@pytest.fixture
def client_ctx(pki: dict[str, tuple[Path, Path]]):
    """``client_ctx(name)``: TLS client context presenting ``name``'s certificate."""

    def make(name: str):
        return client_context(*pki[name], pki["ca"][0])

    return make


@pytest.fixture
def pair(tmp_path: Path, pki: dict[str, tuple[Path, Path]]) -> Iterator[NodePair]:
    """Two KMEs on loopback, 8 shared blocks (4 in each node's issuing half)."""
    with NodePair(tmp_path, pki) as p:
        seed_blocks(p.store_a, p.store_b, 8, BLOCK_BITS)
        yield p
