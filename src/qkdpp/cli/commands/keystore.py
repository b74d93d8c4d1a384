"""``qkdpp keystore stats|export|purge``: operate a node's key store and its KME database.

* ``stats``  — counts per state (never key bits), plus the KME pool / ETSI keys / audit events
  when the KME database (``<store>.kme.sqlite``) exists.
* ``export`` — ``--records``: key metadata as JSON lines; ``--audit``: the KME audit log as JSON
  lines (key_ID, SAE, time, size — never key bits); ``--keys N`` / ``--key-id ID``: take keys out
  of the store (at most once: they become ``delivered``) into a new file of mode 0600.
* ``purge``  — apply TTLs (expired pending keys → void, expired committed keys → erased, WAL
  checkpoint) and, with ``--kme-max-age``, drop KME pool blocks older than that.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sqlite3
import sys
import uuid
from pathlib import Path
from typing import Any

from qkdpp.errors import ConfigError
from qkdpp.keystore.sqlite import KeyStore
from qkdpp.service.kme import purge_kme_file

__all__ = ["register"]


def _kme_path(store: Path, given: Path | None) -> Path:
    return given if given is not None else store.with_suffix(".kme.sqlite")


def _open_store(path: Path) -> KeyStore:
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise ConfigError(f"key store {path} {what}")
    return KeyStore(path)


def _kme_stats(path: Path) -> dict[str, Any]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        out: dict[str, Any] = {}
        row = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(n_bytes - next_off), 0) FROM kme_blocks "
            "WHERE dropped = 0"
        ).fetchone()
        out["pool_blocks"], out["pool_unissued_bytes"] = int(row[0]), int(row[1])
        out["keys"] = {
            f"{side}_{state}": int(n)
            for side, state, n in db.execute(
                "SELECT side, state, COUNT(*) FROM kme_keys GROUP BY side, state"
            )
        }
        out["audit_events"] = {
            ev: int(n)
            for ev, n in db.execute("SELECT event, COUNT(*) FROM kme_audit GROUP BY event")
        }
        return out
    finally:
        db.close()


def _stats(args: argparse.Namespace) -> int:
    with _open_store(args.store) as store:
        out: dict[str, Any] = {"key_store": {**store.stats(), **store.pad_stats()}}
    kme = _kme_path(args.store, args.kme_db)
    if kme.is_file():
        out["kme"] = _kme_stats(kme)
    if args.json:
        print(json.dumps(out, indent=2, sort_keys=True))
        return 0
    for name, n in out["key_store"].items():
        print(f"{name:>20}  {n}")
    if "kme" in out:
        k = out["kme"]
        print(f"{'kme pool blocks':>20}  {k['pool_blocks']}")
        print(f"{'kme unissued bits':>20}  {8 * k['pool_unissued_bytes']}")
        for name, n in sorted(k["keys"].items()):
            print(f"{'etsi ' + name:>20}  {n}")
        for name, n in sorted(k["audit_events"].items()):
            print(f"{'audit ' + name:>20}  {n}")
    return 0


def _write_new(path: Path, lines: list[str], *, private: bool) -> None:
    with os.fdopen(_create(path, 0o600 if private else 0o644), "w") as f:
        for line in lines:
            f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def _emit(lines: list[str], out: Path | None, *, private: bool) -> None:
    if out is None:
        if private:
            raise ConfigError("key export needs --out FILE (keys are never printed)")
        for line in lines:
            print(line)
    else:
        _write_new(out, lines, private=private)


def _export(args: argparse.Namespace) -> int:
    chosen = sum(bool(x) for x in (args.records, args.audit, args.keys, args.key_id))
    if chosen != 1:
        raise ConfigError("choose exactly one of --records, --audit, --keys N, --key-id ID")
    if args.audit:
        kme = _kme_path(args.store, args.kme_db)
        if not kme.is_file():
            raise ConfigError(f"KME database {kme} does not exist")
        db = sqlite3.connect(f"file:{kme}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT seq, time, event, key_id, sae, peer_sae, n_bits FROM kme_audit ORDER BY seq"
            ).fetchall()
        finally:
            db.close()
        names = ("seq", "time", "event", "key_ID", "SAE_ID", "peer_SAE_ID", "size")
        lines = [json.dumps(dict(zip(names, r, strict=True))) for r in rows]
        _emit(lines, args.out, private=False)
        return 0
    with _open_store(args.store) as store:
        if args.records:
            lines = [
                json.dumps(
                    {
                        "key_id": r.key_id,
                        "session_id": r.session_id,
                        "block_id": r.block_id,
                        "n_bits": r.n_bits,
                        "state": r.state,
                        "peer_ack": r.peer_ack,
                        "created": r.created,
                        "expires": r.expires,
                    }
                )
                for r in store.records(args.state)
            ]
            _emit(lines, args.out, private=False)
            return 0
        if args.out is None:
            raise ConfigError("key export needs --out FILE (keys are never printed)")
        if not args.key_id and args.keys < 1:
            raise ConfigError(f"--keys must be >= 1, got {args.keys}")
        _export_keys(store, args)
    return 0


def _key_line_bytes(n_bits: int) -> int:
    """An upper bound of one exported key's line: JSON with a UUID, the size and base64."""
    return 4 * (-(-((n_bits + 7) // 8) // 3)) + 120


def _export_keys(store: KeyStore, args: argparse.Namespace) -> None:
    """Take keys into the new file ``args.out`` (mode 0600) without ever losing or duplicating
    one: the file is created and the space for the largest keys that could be taken is
    reserved first (nothing is taken when that fails: a missing folder, a full disk); then
    the keys are taken (delivered, wiped in the store: at most once), written over the
    reserved space, and the file cut to its length and synced."""
    committed = store.records("committed")
    if args.key_id:
        wanted = {_uuid_text(k) for k in args.key_id}
        sizes = [r.n_bits for r in committed if r.key_id in wanted]
    else:
        sizes = sorted((r.n_bits for r in committed), reverse=True)[: args.keys]
    reserve = sum(_key_line_bytes(n) for n in sizes) or 1
    fd = _create(args.out, 0o600)
    try:
        _reserve(fd, reserve)
    except OSError as exc:
        os.close(fd)
        args.out.unlink(missing_ok=True)
        raise ConfigError(
            f"cannot reserve {reserve} bytes for the keys in {args.out} ({exc.strerror or exc}); "
            "no key was taken"
        ) from exc
    try:
        if args.key_id:
            taken = []
            for kid in args.key_id:
                taken += store.take(key_id=kid)
        else:
            taken = store.take(args.keys, session_id=args.session)
    except BaseException:
        os.close(fd)
        args.out.unlink(missing_ok=True)
        raise
    # the keys are delivered (wiped in the store) from here on: write them into the reserved space
    with os.fdopen(fd, "wb") as f:
        for kid, key, n_bits in taken:
            line = json.dumps(
                {"key_id": kid, "n_bits": n_bits, "key": base64.b64encode(key).decode()}
            )
            key[:] = bytes(len(key))
            f.write(line.encode() + b"\n")
        f.truncate(f.tell())
        f.flush()
        os.fsync(f.fileno())
    print(f"exported {len(taken)} keys to {args.out} (mode 0600)", file=sys.stderr)


def _create(path: Path, mode: int) -> int:
    """A new file (ConfigError if it exists)."""
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise ConfigError(f"{path} exists; refusing to overwrite") from None


def _uuid_text(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return text  # (take() names it as not a key id)


def _reserve(fd: int, n: int) -> None:
    """Allocate ``n`` bytes of the file on disk (ENOSPC now rather than after the keys are
    taken): posix_fallocate where the system has it, else written zeros; then synced."""
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is not None:
        fallocate(fd, 0, n)
    else:
        for off in range(0, n, 1 << 20):
            os.write(fd, bytes(min(1 << 20, n - off)))
        os.lseek(fd, 0, os.SEEK_SET)
    os.fsync(fd)


def _purge(args: argparse.Namespace) -> int:
    with _open_store(args.store) as store:
        n = store.expire()
    print(f"key store: {n} expired keys voided/erased")
    if args.kme_max_age is not None:
        kme = _kme_path(args.store, args.kme_db)
        dropped = purge_kme_file(kme, args.kme_max_age)
        print(f"KME pool: {dropped} blocks older than {args.kme_max_age} s dropped")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "keystore",
        help="key store statistics, export (records, audit log, keys) and purge",
        description="Operate a node's key store (SQLite) and its KME database "
        "(<store>.kme.sqlite). Key bits are never printed.",
    )
    sub = p.add_subparsers(dest="keystore_command", metavar="ACTION", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("store", type=Path, help="key store database file")
        sp.add_argument(
            "--kme-db", type=Path, default=None, help="KME database (default <store>.kme.sqlite)"
        )

    s = sub.add_parser("stats", help="counts per state (never key bits)")
    common(s)
    s.add_argument("--json", action="store_true", help="JSON output")
    s.set_defaults(func=_stats)

    e = sub.add_parser(
        "export",
        help="export records / audit log (JSON lines) or take keys into a 0600 file",
        description="--records and --audit print JSON lines (or write --out). --keys N and "
        "--key-id ID take keys out of the store AT MOST ONCE (they become 'delivered') and "
        "write them, base64, into a new file of mode 0600 given by --out.",
    )
    common(e)
    e.add_argument("--records", action="store_true", help="key metadata (no key bits)")
    e.add_argument("--state", default=None, help="with --records: only this state (e.g. committed)")
    e.add_argument("--audit", action="store_true", help="KME delivery audit log (no key bits)")
    e.add_argument("--keys", type=int, default=0, help="take the N oldest deliverable keys")
    e.add_argument("--key-id", action="append", default=[], help="take this key (repeatable)")
    e.add_argument("--session", default=None, help="with --keys: only this session")
    e.add_argument("--out", type=Path, default=None, help="output file (must not exist)")
    e.set_defaults(func=_export)

    g = sub.add_parser("purge", help="apply TTLs; optionally drop old KME pool blocks")
    common(g)
    g.add_argument(
        "--kme-max-age",
        type=float,
        default=None,
        help="also drop KME pool blocks imported more than this many seconds ago",
    )
    g.set_defaults(func=_purge)
