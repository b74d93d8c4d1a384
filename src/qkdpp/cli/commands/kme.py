"""``qkdpp kme serve|dev-pki``: run a node's ETSI GS QKD 014 key server; make a test PKI.

``serve`` reads a TOML or JSON file::

    store = "/var/lib/qkdpp/alice.sqlite"    # key store (the KME file goes beside it)
    listen = "0.0.0.0:8443"
    expire_every_s = 60                      # pool TTL sweep + WAL checkpoint period
    [tls]                                    # PEM files; the key file must be mode 0600
    cert = "kme-a.pem"
    key = "kme-a.key"
    ca = "ca.pem"
    [peer]                                   # the peer KME (issued-key notifications, mTLS)
    host = "kme-b.example"
    port = 8443
    [kme]                                    # qkdpp.service.kme.KmeConfig fields
    kme_id = "kme-a"
    peer_kme_id = "kme-b"
    local_saes = ["sae-a1"]
    remote_saes = ["sae-b1"]
    issuer_half = 0

See ``docs/etsi014.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import tomllib
from pathlib import Path
from typing import Any

from qkdpp.errors import ConfigError

__all__ = ["load_config", "register"]


def load_config(path: Path) -> dict[str, Any]:
    """Parse a TOML (``.toml``) or JSON server config; paths are relative to the file."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
        cfg = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as exc:  # (and UnicodeDecodeError)
        raise ConfigError(f"{path}: cannot parse config: {exc}") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: expected a table of settings, got {type(cfg).__name__}")
    for key in ("store", "listen", "tls", "peer", "kme"):
        if key not in cfg:
            raise ConfigError(f"{path}: missing '{key}'")
    for table in ("tls", "peer", "kme"):
        if not isinstance(cfg[table], dict):
            raise ConfigError(f"{path}: [{table}] must be a table, got {cfg[table]!r}")
    base = path.parent

    def nonempty(where: str, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{path}: {where} must be a non-empty string, got {value!r}")
        return value

    def rel(where: str, value: Any) -> Path:
        q = Path(nonempty(where, value))
        return q if q.is_absolute() else base / q

    cfg["store"] = rel("store", cfg["store"])
    cfg["tls"] = {k: rel(f"tls.{k}", cfg["tls"].get(k)) for k in ("cert", "key", "ca")}
    host, sep, port = nonempty("listen", cfg["listen"]).rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(
            f"{path}: listen must be HOST:PORT (port 0..65535), got {cfg['listen']!r}"
        )
    cfg["listen"] = (host or "0.0.0.0", int(port))
    nonempty("peer.host", cfg["peer"].get("host"))
    peer_port = cfg["peer"].get("port")
    if isinstance(peer_port, bool) or not isinstance(peer_port, int) or not 1 <= peer_port <= 65535:
        raise ConfigError(f"{path}: peer.port must be an integer in 1..65535, got {peer_port!r}")
    every = cfg.get("expire_every_s", 60)
    if isinstance(every, bool) or not isinstance(every, (int, float)) or not 0 < every <= 86400:
        raise ConfigError(f"{path}: expire_every_s must be in (0, 86400] seconds, got {every!r}")
    if "kme_db" in cfg:
        cfg["kme_db"] = rel("kme_db", cfg["kme_db"])
    return cfg


def _serve(args: argparse.Namespace) -> int:
    from qkdpp.keystore.sqlite import KeyStore
    from qkdpp.service.etsi014 import HttpsPeer, KmeServer
    from qkdpp.service.kme import KeyManager, KmeConfig
    from qkdpp.service.tls import client_context, server_context

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = load_config(args.config)
    host, port = cfg["listen"]
    tls = cfg["tls"]
    kcfg = KmeConfig.from_dict(dict(cfg["kme"]))
    store = KeyStore(cfg["store"])
    kme = KeyManager(kcfg, store, cfg.get("kme_db"))
    kme.connect(
        HttpsPeer(
            cfg["peer"]["host"],
            cfg["peer"]["port"],
            client_context(tls["cert"], tls["key"], tls["ca"]),
        )
    )
    server = KmeServer((host, port), kme, server_context(**tls))
    stop = threading.Event()

    def sweeper() -> None:
        every = float(cfg.get("expire_every_s", 60))  # (checked by load_config)
        while not stop.wait(every):
            try:
                store.expire()
                kme.expire()
            except Exception:
                logging.getLogger("qkdpp.kme").exception("expiry sweep failed")

    threading.Thread(target=sweeper, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"KME {kcfg.kme_id} listening on {host}:{server.server_address[1]}", file=sys.stderr)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        server.server_close()
        kme.close()
        store.close()
    return 0


def _dev_pki(args: argparse.Namespace) -> int:
    from qkdpp.service.tls import make_dev_pki

    out = make_dev_pki(args.directory, args.clients, servers=args.servers, days=args.days)
    for name, (cert, key) in out.items():
        print(f"{name:>12}  {cert}  {key}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "kme",
        help="ETSI GS QKD 014 key server (mutual TLS) and a development PKI",
        description="Run a node's key management entity (ETSI GS QKD 014 REST API over "
        "mutual TLS) or create a throw-away CA and certificates for tests.",
    )
    sub = p.add_subparsers(dest="kme_command", metavar="ACTION", required=True)
    s = sub.add_parser("serve", help="serve ETSI 014 from a key store (config file)")
    s.add_argument("config", type=Path, help="TOML or JSON config (see docs/etsi014.md)")
    s.set_defaults(func=_serve)
    d = sub.add_parser("dev-pki", help="throw-away CA + certificates (openssl CLI)")
    d.add_argument("directory", type=Path)
    d.add_argument("--clients", nargs="+", required=True, help="SAE IDs (certificate CNs)")
    d.add_argument("--servers", nargs="+", default=["kme-a", "kme-b"], help="KME IDs")
    d.add_argument("--days", type=int, default=30)
    d.set_defaults(func=_dev_pki)
