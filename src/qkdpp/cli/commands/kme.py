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
    for key in ("store", "listen", "tls", "peer", "kme"):
        if key not in cfg:
            raise ConfigError(f"{path}: missing '{key}'")
    base = path.parent

    def rel(p: str) -> Path:
        q = Path(p)
        return q if q.is_absolute() else base / q

    cfg["store"] = rel(cfg["store"])
    cfg["tls"] = {k: rel(cfg["tls"][k]) for k in ("cert", "key", "ca")}
    return cfg


def _serve(args: argparse.Namespace) -> int:
    from qkdpp.keystore.sqlite import KeyStore
    from qkdpp.service.etsi014 import HttpsPeer, KmeServer
    from qkdpp.service.kme import KeyManager, KmeConfig
    from qkdpp.service.tls import client_context, server_context

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = load_config(args.config)
    host, _, port = str(cfg["listen"]).rpartition(":")
    tls = cfg["tls"]
    kcfg = KmeConfig.from_dict(dict(cfg["kme"]))
    store = KeyStore(cfg["store"])
    kme = KeyManager(kcfg, store, cfg.get("kme_db"))
    kme.connect(
        HttpsPeer(
            cfg["peer"]["host"],
            int(cfg["peer"]["port"]),
            client_context(tls["cert"], tls["key"], tls["ca"]),
        )
    )
    server = KmeServer((host or "0.0.0.0", int(port)), kme, server_context(**tls))
    stop = threading.Event()

    def sweeper() -> None:
        every = float(cfg.get("expire_every_s", 60))
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
