"""`qkdpp node` on a drifting link keeps producing keys after hours: chunks at slot ≥ 1e12
(1000 s at 1 GHz) with Bob's clock ±20 ppm off (the timing stage's whole drift range).

Before the timing stage stated its expected offset for the chunk's own first slot, it converted
the first tag to slot 0 with the nominal period, off by drift × slot0: at 1e12 slots and 20 ppm,
20 ms — far outside the ±1 ms offset search, so every chunk failed (or got wrong slots)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from qkdpp.engine.config import load_config
from qkdpp.engine.keys import compare_stores
from qkdpp.engine.node import LinkNode
from qkdpp.testing import free_port

pytestmark = pytest.mark.two_party

CHUNK = 16_000_000
FIRST = 62_500  # chunk 62 500 starts at slot 1e12
N_CHUNKS = 10  # 1.6e8 slots: 2 key blocks of 1e6 bits on this 5 km link

LINK = """
[session]
block_size = 1000000
batch_size = 1
chunk_slots = {chunk}
timeout_s = 20
[simulate]
fibre_km = 5.0
mu = [0.58, 0.26, 2e-4]
p_mu = [0.31, 0.52, 0.17]
p_z_alice = 0.83
p_z_bob = 0.83
clock_offset_ps = 4.2e8
clock_drift_ppm = {drift}
[timing]
mu = [0.58, 0.26, 2e-4]
[key_length]
mu = [0.58, 0.26, 2e-4]
p_mu = [0.31, 0.52, 0.17]
"""


@pytest.mark.parametrize("drift_ppm", [20.0, -20.0])
def test_node_keeps_producing_keys_at_1e12_slots_with_drift(
    workdir: Path, drift_ppm: float
) -> None:
    cfg_path = workdir / "link.toml"
    cfg_path.write_text(LINK.format(chunk=CHUNK, drift=drift_ppm))
    port = free_port()
    nodes = {
        role: LinkNode(
            role,
            load_config(cfg_path),
            ("127.0.0.1", port),
            workdir=workdir,
            speed=0,
            max_chunks=FIRST + N_CHUNKS - 1,
            first_chunk=FIRST,  # a source that has been running for 1000 s
        )
        for role in ("alice", "bob")
    }
    errors: list[BaseException] = []

    def serve(node: LinkNode) -> None:
        try:
            node.run()
        except BaseException as exc:  # reported below
            errors.append(exc)
            node.stop()

    threads = [threading.Thread(target=serve, args=(n,), daemon=True) for n in nodes.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    for n in nodes.values():
        n.stop()
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    alice, bob = nodes["alice"].stats, nodes["bob"].stats
    # every block ok at both ends (a chunk failing its timing would leave no block, and wrong
    # slots would fail the blocks' estimation), and the keys are the same
    assert bob.blocks_ok >= 2 and bob.blocks_failed == 0, vars(bob)
    assert alice.blocks_ok == bob.blocks_ok and alice.key_bits == bob.key_bits > 0, vars(alice)
    check = compare_stores(workdir / "keys-alice.sqlite", workdir / "keys-bob.sqlite")
    assert check["identical"] and check["keys"] == bob.blocks_ok, check
