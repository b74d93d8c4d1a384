"""`qkdpp node`: survives a peer killed mid-block (SIGKILL) and restarted; stops on SIGTERM;
never a key held by one end only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from qkdpp.engine.config import load_config
from qkdpp.engine.keys import compare_stores
from qkdpp.engine.node import LinkNode
from qkdpp.keystore.sqlite import KeyStore
from qkdpp.testing import free_port

pytestmark = pytest.mark.two_party

LINK = """
[session]
block_size = 1000000
batch_size = 1
chunk_slots = 16000000
timeout_s = 5
[simulate]
fibre_km = 5.0
mu = [0.58, 0.26, 2e-4]
p_mu = [0.31, 0.52, 0.17]
p_z_alice = 0.83
p_z_bob = 0.83
[timing]
mu = [0.58, 0.26, 2e-4]
[key_length]
mu = [0.58, 0.26, 2e-4]
p_mu = [0.31, 0.52, 0.17]
"""


def _committed(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with KeyStore(path) as ks:
            return len(ks.records("committed"))
    except Exception:
        return 0


def _bob(cfg: Path, work: Path, port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qkdpp",
            "node",
            "--role",
            "bob",
            "--peer",
            f"tcp://127.0.0.1:{port}",
            "--config",
            str(cfg),
            "--workdir",
            str(work),
            "--speed",
            "0",
            "--max-chunks",
            "40",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_node_survives_peer_kill_and_stops_on_sigterm(workdir: Path) -> None:
    cfg_path = workdir / "link.toml"
    cfg_path.write_text(LINK)
    port = free_port()
    alice = LinkNode(
        "alice", load_config(cfg_path), ("127.0.0.1", port), workdir=workdir, speed=0, max_chunks=40
    )
    ta = threading.Thread(target=alice.run, daemon=True)
    ta.start()
    bob = _bob(cfg_path, workdir, port)
    deadline = time.monotonic() + 120
    while _committed(workdir / "keys-bob.sqlite") < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _committed(workdir / "keys-bob.sqlite") >= 2, bob.stderr.read() if bob.poll() else ""
    bob.send_signal(signal.SIGKILL)  # crash, possibly in the middle of a block or a commit
    bob.wait(10)
    before = alice.stats.blocks_ok
    bob = _bob(cfg_path, workdir, port)
    while alice.stats.blocks_ok < before + 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert alice.stats.blocks_ok >= before + 2, "Alice did not resume after Bob's restart"
    assert alice.stats.connections >= 2
    bob.send_signal(signal.SIGTERM)
    out, err = bob.communicate(timeout=60)
    assert bob.returncode == 0, err[-2000:]
    assert "blocks ok" in out
    alice.stop()
    ta.join(60)
    assert not ta.is_alive()
    check = compare_stores(workdir / "keys-alice.sqlite", workdir / "keys-bob.sqlite")
    assert check["identical"], check
    assert check["keys"] >= 3
    if os.environ.get("QKDPP_DEBUG"):
        print(check, alice.stats)


def test_alice_names_an_address_she_cannot_listen_on(tmp_path: Path) -> None:
    """A port held by another process ends Alice's node with one line naming the address (it
    used to say only 'Address already in use')."""
    import socket

    from qkdpp.cli import main

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        assert main(["bootstrap", str(tmp_path)]) == 0
        node = LinkNode("alice", load_config(None), ("127.0.0.1", port), workdir=tmp_path)
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}: .*in use"):
            node.run()
    finally:
        holder.close()


def test_default_node_describes_its_own_source(tmp_path: Path) -> None:
    """Without a configuration the node's timing pilot and key length take the simulated
    source's intensities (before 2026-11-28: source μ 0.5 / 0.1 with p 0.7 / 0.2 / 0.1, key
    length μ 0.6 / 0.2: every block failed with s1_nonpositive, and had it not, its length would
    have been bounded for intensities the source never sent)."""
    cfg = load_config(None)
    params = cfg["simulate"]["params"]
    node = LinkNode("alice", cfg, ("127.0.0.1", 1), workdir=tmp_path)
    assert node.config["timing"]["mu"] == list(params.mu)
    assert node.config["key_length"]["mu"] == list(params.mu)
    assert node.config["key_length"]["p_mu"] == list(params.p_mu)
    assert "key_length" not in cfg  # the caller's configuration is not changed


def test_node_refuses_a_key_length_for_another_source(tmp_path: Path) -> None:
    """[key_length] intensities that the simulated source does not send are a ConfigError
    naming both (the node would have bounded the key for a source that does not exist)."""
    from qkdpp.engine.config import validate
    from qkdpp.errors import ConfigError

    cfg = validate({"key_length": {"mu": [0.6, 0.2, 2e-4]}})
    with pytest.raises(ConfigError, match=r"\[key_length\] mu = \[0.6, 0.2, 0.0002\] is not"):
        LinkNode("alice", cfg, ("127.0.0.1", 1), workdir=tmp_path)
    cfg = validate({"simulate": {"p_mu": [0.7, 0.2, 0.1]}, "key_length": {"p_mu": [0.7, 0.2, 0.1]}})
    LinkNode("alice", cfg, ("127.0.0.1", 1), workdir=tmp_path)  # the same source: accepted


def test_intensities_that_are_not_numbers_are_a_config_error(tmp_path: Path) -> None:
    """A list of strings as intensities is a ConfigError, not a bare ValueError traceback."""
    from qkdpp.engine.config import validate
    from qkdpp.errors import ConfigError

    cfg = validate({"key_length": {"mu": ["a", "b", "c"]}})
    with pytest.raises(ConfigError, match=r"\[key_length\] mu = \['a', 'b', 'c'\] is not"):
        LinkNode("alice", cfg, ("127.0.0.1", 1), workdir=tmp_path)
