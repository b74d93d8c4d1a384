"""``qkdpp keystore export --keys``: a key is never lost to a write that fails, nor exported
twice. Before 2026-11-28 the keys were taken (delivered, wiped in the store) before the output
file was created: an --out in a missing folder, or a full disk, lost them."""

from __future__ import annotations

import base64
import errno
import json
from pathlib import Path

import pytest

from qkdpp.cli import main
from qkdpp.cli.commands import keystore as cmd
from qkdpp.keystore.sqlite import KeyStore
from qkdpp.service.devpair import seed_blocks


@pytest.fixture
def stores(tmp_path: Path) -> tuple[Path, list[str]]:
    with KeyStore(tmp_path / "a.sqlite") as a, KeyStore(tmp_path / "b.sqlite") as b:
        ids = seed_blocks(a, b, 3, 10_001)
    return tmp_path / "b.sqlite", ids  # Bob's store: peer_ack set, deliverable


def _deliverable(path: Path) -> int:
    with KeyStore(path) as s:
        return sum(r.peer_ack for r in s.records("committed"))


def test_export_writes_exactly_the_keys(stores, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store, ids = stores
    out = tmp_path / "keys.jsonl"
    assert main(["keystore", "export", str(store), "--keys", "2", "--out", str(out)]) == 0
    lines = out.read_bytes().split(b"\n")
    assert lines[-1] == b""  # cut to its length: no reserved zeros left
    recs = [json.loads(x) for x in lines[:-1]]
    assert [r["key_id"] for r in recs] == ids[:2]
    assert all(len(base64.b64decode(r["key"])) == 1251 and r["n_bits"] == 10_001 for r in recs)
    assert out.stat().st_mode & 0o777 == 0o600
    assert _deliverable(store) == 1


def test_missing_folder_takes_nothing(stores, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    store, _ = stores
    out = tmp_path / "no-such-folder" / "keys.jsonl"
    assert main(["keystore", "export", str(store), "--keys", "2", "--out", str(out)]) == 1
    assert "No such file or directory" in capsys.readouterr().err
    assert _deliverable(store) == 3


def test_full_disk_takes_nothing(stores, tmp_path: Path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    store, ids = stores

    def no_space(fd: int, n: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cmd, "_reserve", no_space)
    out = tmp_path / "keys.jsonl"
    assert main(["keystore", "export", str(store), "--key-id", ids[1], "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "no key was taken" in err
    assert not out.exists()
    assert _deliverable(store) == 3


def test_reservation_bounds_the_lines() -> None:
    for n_bits in (1, 8, 10_001, 1_000_000):
        line = json.dumps(
            {
                "key_id": "12345678-1234-1234-1234-123456789012",
                "n_bits": n_bits,
                "key": base64.b64encode(bytes((n_bits + 7) // 8)).decode(),
            }
        )
        assert len(line) + 1 <= cmd._key_line_bytes(n_bits)
