"""A pair of KMEs (two nodes) on loopback for tests, benchmarks, crash drills and demos.

:func:`seed_blocks` writes identical committed blocks into two key stores exactly as the two-phase
commit leaves them (node A coordinator: ``put_pending → commit → ack``; node B participant:
``put_pending → commit(peer_ack)``), with random key bytes from :func:`os.urandom`, half of the
block ids in each node's issuing half. :class:`NodePair` opens both stores, builds both
:class:`~qkdpp.service.kme.KeyManager` objects linked in-process (or over HTTPS with
``link="https"``) and serves both over mutual TLS on ``127.0.0.1``.

``python -m qkdpp.service.devpair DIR PKI_DIR [--crash POINT:N]`` runs a pair in the foreground
(prints ``PORTS <a> <b>`` once listening) — the crash tests kill it and start it again.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from qkdpp.keystore.sqlite import KeyStore
from qkdpp.service.etsi014 import HttpsPeer, KmeServer, serve_in_thread
from qkdpp.service.kme import InProcessPeer, KeyManager, KmeConfig
from qkdpp.service.tls import client_context, server_context

__all__ = ["NodePair", "PairProcess", "default_configs", "seed_blocks"]

SAES_A = ("sae-a1", "sae-a2")
SAES_B = ("sae-b1", "sae-b2")


def default_configs(**overrides: Any) -> tuple[KmeConfig, KmeConfig]:
    """Configs of node ``kme-a`` (issuer half 0, SAEs ``sae-a*``) and ``kme-b`` (half 1)."""
    a = KmeConfig(
        kme_id="kme-a",
        peer_kme_id="kme-b",
        local_saes=frozenset(SAES_A),
        remote_saes=frozenset(SAES_B),
        issuer_half=0,
    )
    b = KmeConfig(
        kme_id="kme-b",
        peer_kme_id="kme-a",
        local_saes=frozenset(SAES_B),
        remote_saes=frozenset(SAES_A),
        issuer_half=1,
    )
    return replace(a, **overrides), replace(b, **overrides)


def _block_id(half: int) -> str:
    u = uuid.uuid4().int
    u = (u & ~(1 << 127)) | (half << 127)
    return str(uuid.UUID(int=u))


def seed_blocks(
    store_a: KeyStore,
    store_b: KeyStore,
    n_blocks: int,
    n_bits: int,
    *,
    session_id: str | None = None,
    halves: tuple[int, ...] = (0, 1),
) -> list[str]:
    """Commit ``n_blocks`` identical random blocks of ``n_bits`` in both stores; their ids.

    Block ``i`` gets issuing half ``halves[i % len(halves)]``.
    """
    sid = session_id or f"seed-{uuid.uuid4()}"
    ids = []
    start = len(store_a.records())
    for i in range(n_blocks):
        kid = _block_id(halves[i % len(halves)])
        key = os.urandom((n_bits + 7) // 8)
        if n_bits % 8:
            key = key[:-1] + bytes([key[-1] & (0xFF << (8 - n_bits % 8)) & 0xFF])
        store_a.put_pending(kid, sid, start + i, key, n_bits)
        store_b.put_pending(kid, sid, start + i, key, n_bits)
        store_a.commit(kid)
        store_b.commit(kid, peer_ack=True)
        store_a.ack(kid)
        ids.append(kid)
    return ids


class NodePair:
    """Two KMEs (``kme-a``, ``kme-b``) with their key stores under ``directory``.

    Parameters
    ----------
    directory : path
        Holds ``a.sqlite`` / ``b.sqlite`` (key stores) and ``a.kme.sqlite`` / ``b.kme.sqlite``.
    pki : dict
        From :func:`qkdpp.service.tls.make_dev_pki` with servers ``kme-a``, ``kme-b``.
    link : str
        ``"inprocess"`` (direct calls) or ``"https"`` (notifications over mutual TLS).
    crash_hook : callable, optional
        Passed to both KeyManagers (fault injection).
    config overrides : keyword arguments for both :class:`KmeConfig`.
    """

    def __init__(
        self,
        directory: str | Path,
        pki: dict[str, tuple[Path, Path]],
        *,
        link: str = "inprocess",
        crash_hook: Any = None,
        **overrides: Any,
    ) -> None:
        d = Path(directory)
        ca = pki["ca"][0]
        cfg_a, cfg_b = default_configs(**overrides)
        self.store_a = KeyStore(d / "a.sqlite")
        self.store_b = KeyStore(d / "b.sqlite")
        self.kme_a = KeyManager(cfg_a, self.store_a, crash_hook=crash_hook)
        self.kme_b = KeyManager(cfg_b, self.store_b, crash_hook=crash_hook)
        self.server_a = KmeServer(("127.0.0.1", 0), self.kme_a, server_context(*pki["kme-a"], ca))
        self.server_b = KmeServer(("127.0.0.1", 0), self.kme_b, server_context(*pki["kme-b"], ca))
        if link == "inprocess":
            self.kme_a.connect(InProcessPeer("kme-a", self.kme_b))
            self.kme_b.connect(InProcessPeer("kme-b", self.kme_a))
        elif link == "https":
            self.kme_a.connect(
                HttpsPeer("localhost", self.port_b, client_context(*pki["kme-a"], ca))
            )
            self.kme_b.connect(
                HttpsPeer("localhost", self.port_a, client_context(*pki["kme-b"], ca))
            )
        else:
            raise ValueError(f"link must be 'inprocess' or 'https', got {link!r}")
        self._threads: list[threading.Thread] = []

    @property
    def port_a(self) -> int:
        return int(self.server_a.server_address[1])

    @property
    def port_b(self) -> int:
        return int(self.server_b.server_address[1])

    def start(self) -> NodePair:
        self._threads = [serve_in_thread(self.server_a), serve_in_thread(self.server_b)]
        return self

    def close(self) -> None:
        for srv in (self.server_a, self.server_b):
            srv.shutdown()
            srv.server_close()
        self.kme_a.close()
        self.kme_b.close()
        self.store_a.close()
        self.store_b.close()

    def __enter__(self) -> NodePair:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class PairProcess:
    """A node pair running in a child process (``python -m qkdpp.service.devpair``).

    Parameters
    ----------
    directory, pki_dir : path
        Key-store folder and PKI folder (from :func:`qkdpp.service.tls.make_dev_pki`).
    crash : str, optional
        ``POINT:N``: the child calls ``os._exit(9)`` at the N-th time it reaches POINT.
    config : dict, optional
        :class:`KmeConfig` overrides for both nodes.
    """

    def __init__(
        self,
        directory: str | Path,
        pki_dir: str | Path,
        *,
        crash: str | None = None,
        config: dict[str, Any] | None = None,
        link: str = "inprocess",
    ) -> None:
        args = [sys.executable, "-m", "qkdpp.service.devpair", str(directory), str(pki_dir)]
        args += ["--link", link, "--config", json.dumps(config or {})]
        if crash:
            args += ["--crash", crash]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORTS"):
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"node pair did not start: {line!r}")
        _, a, b = line.split()
        self.port_a, self.port_b = int(a), int(b)

    def kill(self) -> None:
        """SIGKILL the child (no clean-up of any kind) and wait for it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for the child to exit by itself (a crash point); its exit status."""
        rc = self.proc.wait(timeout=timeout)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return rc


def _pki_from_dir(d: Path) -> dict[str, tuple[Path, Path]]:
    out: dict[str, tuple[Path, Path]] = {"ca": (d / "ca.pem", d / "ca.key")}
    for pem in d.glob("*.pem"):
        if pem.stem != "ca":
            out[pem.stem] = (pem, d / f"{pem.stem}.key")
    return out


def main(argv: list[str] | None = None) -> int:
    """Run a node pair until killed (see module docstring)."""
    p = argparse.ArgumentParser(prog="python -m qkdpp.service.devpair")
    p.add_argument("directory", type=Path)
    p.add_argument("pki", type=Path)
    p.add_argument("--link", default="inprocess", choices=("inprocess", "https"))
    p.add_argument("--crash", default=None, help="POINT:N — os._exit(9) at the N-th POINT")
    p.add_argument("--config", default="{}", help="JSON overrides of KmeConfig")
    args = p.parse_args(argv)
    hook = None
    if args.crash:
        point, n = args.crash.split(":")
        remaining = [int(n)]
        lock = threading.Lock()

        def hook(where: str) -> None:
            if where == point:
                with lock:
                    remaining[0] -= 1
                    if remaining[0] <= 0:
                        os._exit(9)

    pair = NodePair(
        args.directory,
        _pki_from_dir(args.pki),
        link=args.link,
        crash_hook=hook,
        **json.loads(args.config),
    )
    pair.start()
    print(f"PORTS {pair.port_a} {pair.port_b}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    pair.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
