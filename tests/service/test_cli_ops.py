"""``qkdpp keystore stats|export|purge`` and ``qkdpp kme serve`` (two real server processes)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qkdpp.cli import main
from qkdpp.keystore.sqlite import KeyStore
from qkdpp.service.devpair import NodePair, seed_blocks
from qkdpp.service.etsi014 import EtsiClient
from qkdpp.testing import free_port


def test_keystore_stats_export_purge(tmp_path: Path, pki, client_ctx, capsys) -> None:
    with NodePair(tmp_path, pki) as p:
        ids = seed_blocks(p.store_a, p.store_b, 4, 8192, halves=(1, 1, 0, 0))
        keys = EtsiClient("localhost", p.port_a, client_ctx("sae-a1")).enc_keys("sae-b1", 2)
        EtsiClient("localhost", p.port_b, client_ctx("sae-b1")).dec_keys(
            "sae-a1", [k["key_ID"] for k in keys]
        )
    store = tmp_path / "a.sqlite"
    assert main(["keystore", "stats", str(store), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["key_store"]["stored"] == 3 and st["key_store"]["delivered"] == 1
    assert st["kme"]["keys"] == {"enc_delivered": 2}
    assert st["kme"]["audit_events"] == {"enc_delivered": 2}
    assert main(["keystore", "stats", str(store)]) == 0
    assert "stored" in capsys.readouterr().out

    assert main(["keystore", "export", str(store), "--audit"]) == 0
    audit = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [a["key_ID"] for a in audit] == [k["key_ID"] for k in keys]
    assert all("key" not in a for a in audit)
    assert main(["keystore", "export", str(store), "--records", "--state", "committed"]) == 0
    recs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert {r["key_id"] for r in recs} == set(ids[:2] + ids[3:])  # ids[2] went to the KME

    # keys never go to stdout; the file is new and 0600; a key is exported at most once
    assert main(["keystore", "export", str(store), "--keys", "1"]) == 1
    out = tmp_path / "keys.jsonl"
    assert main(["keystore", "export", str(store), "--key-id", ids[0], "--out", str(out)]) == 0
    assert out.stat().st_mode & 0o777 == 0o600
    (line,) = out.read_text().splitlines()
    rec = json.loads(line)
    with KeyStore(tmp_path / "b.sqlite") as sb:
        assert base64.b64decode(rec["key"]) == bytes(sb.peek_key(ids[0]))
    assert main(["keystore", "export", str(store), "--key-id", ids[0], "--out", str(out)]) == 1
    out2 = tmp_path / "again.jsonl"
    assert main(["keystore", "export", str(store), "--key-id", ids[0], "--out", str(out2)]) == 1
    assert not out2.exists()
    capsys.readouterr()

    assert main(["keystore", "purge", str(store), "--kme-max-age", "0"]) == 0
    assert "1 blocks" in capsys.readouterr().out
    assert main(["keystore", "stats", str(store), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kme"]["pool_blocks"] == 0
    assert main(["keystore", "stats", str(tmp_path / "missing.sqlite")]) == 1


def test_kme_serve_two_processes(tmp_path: Path, pki, client_ctx) -> None:
    with KeyStore(tmp_path / "a.sqlite") as sa, KeyStore(tmp_path / "b.sqlite") as sb:
        seed_blocks(sa, sb, 4, 8192)
    ports = {"a": free_port(), "b": free_port()}
    procs = []
    try:
        for me, peer, half in (("a", "b", 0), ("b", "a", 1)):
            cfg = {
                "store": str(tmp_path / f"{me}.sqlite"),
                "listen": f"127.0.0.1:{ports[me]}",
                "expire_every_s": 3600,
                "tls": {
                    "cert": str(pki[f"kme-{me}"][0]),
                    "key": str(pki[f"kme-{me}"][1]),
                    "ca": str(pki["ca"][0]),
                },
                "peer": {"host": "localhost", "port": ports[peer]},
                "kme": {
                    "kme_id": f"kme-{me}",
                    "peer_kme_id": f"kme-{peer}",
                    "local_saes": [f"sae-{me}1", f"sae-{me}2"],
                    "remote_saes": [f"sae-{peer}1", f"sae-{peer}2"],
                    "issuer_half": half,
                },
            }
            path = tmp_path / f"{me}.json"
            path.write_text(json.dumps(cfg))
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "qkdpp", "kme", "serve", str(path)],
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        for p in procs:
            assert p.stderr is not None
            line = p.stderr.readline()
            while line and "listening" not in line:
                line = p.stderr.readline()
            assert "listening" in line
        a1 = EtsiClient("localhost", ports["a"], client_ctx("sae-a1"))
        b1 = EtsiClient("localhost", ports["b"], client_ctx("sae-b1"))
        keys = a1.enc_keys("sae-b1", number=3, size=512)
        assert b1.dec_keys("sae-a1", [k["key_ID"] for k in keys]) == keys
        rev = b1.enc_keys("sae-a1", number=2)
        assert a1.dec_keys("sae-b1", [k["key_ID"] for k in rev]) == rev
        a1.close()
        b1.close()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stderr:
                p.stderr.close()


def test_dev_pki_cli(tmp_path: Path) -> None:
    if os.system("command -v openssl >/dev/null") != 0:
        pytest.skip("openssl not available")
    t0 = time.perf_counter()
    assert main(["kme", "dev-pki", str(tmp_path), "--clients", "sae-x", "--servers", "kme-x"]) == 0
    assert (tmp_path / "sae-x.pem").is_file() and (
        tmp_path / "kme-x.key"
    ).stat().st_mode & 0o077 == 0
    assert time.perf_counter() - t0 < 30
