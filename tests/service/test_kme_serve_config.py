"""``qkdpp kme serve CONFIG``: every setting of the server file is checked before anything
starts (before 2026-11-28 most wrong types ended in a TypeError, ValueError, KeyError or
OverflowError traceback, some only once the server ran)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qkdpp.cli.commands.kme import load_config
from qkdpp.errors import ConfigError

GOOD = {
    "store": '"a.sqlite"',
    "listen": '"127.0.0.1:8443"',
    "expire_every_s": "60",
    "tls.cert": '"pki/kme-a.pem"',
    "tls.key": '"pki/kme-a.key"',
    "tls.ca": '"pki/ca.pem"',
    "peer.host": '"kme-b.example"',
    "peer.port": "8443",
    "kme.kme_id": '"kme-a"',
}


def _write(tmp_path: Path, values: dict[str, str | None]) -> Path:
    top = [f"{k} = {v}" for k, v in values.items() if "." not in k and v is not None]
    text = "\n".join(top) + "\n"
    for table in ("tls", "peer", "kme"):
        text += f"[{table}]\n"
        text += "".join(
            f"{k.split('.')[1]} = {v}\n"
            for k, v in values.items()
            if k.startswith(table + ".") and v is not None
        )
    p = tmp_path / "kme.toml"
    p.write_text(text)
    return p


def test_good_file_resolves_paths_against_its_folder(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, GOOD))
    assert cfg["store"] == tmp_path / "a.sqlite"
    assert cfg["tls"]["ca"] == tmp_path / "pki" / "ca.pem"
    assert cfg["listen"] == ("127.0.0.1", 8443)
    assert load_config(_write(tmp_path, {**GOOD, "listen": '":0"'}))["listen"] == ("0.0.0.0", 0)


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("store", "1", "store must be a non-empty string"),
        ("store", '""', "store must be a non-empty string"),
        ("tls.cert", None, "tls.cert must be a non-empty string"),
        ("tls.ca", "[1]", "tls.ca must be a non-empty string"),
        ("listen", '"x"', "listen must be HOST:PORT"),
        ("listen", '"h:70000"', "listen must be HOST:PORT"),
        ("listen", "8443", "listen must be a non-empty string"),
        ("peer.host", None, "peer.host must be a non-empty string"),
        ("peer.port", '"8443"', "peer.port must be an integer in 1..65535"),
        ("peer.port", "true", "peer.port must be an integer in 1..65535"),
        ("peer.port", "0", "peer.port must be an integer in 1..65535"),
        ("expire_every_s", "nan", r"expire_every_s must be in \(0, 86400\]"),
        ("expire_every_s", "-1", r"expire_every_s must be in \(0, 86400\]"),
        ("expire_every_s", "1e30", r"expire_every_s must be in \(0, 86400\]"),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, key: str, value: str | None, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_config(_write(tmp_path, {**GOOD, key: value}))


def test_tables_must_be_tables(tmp_path: Path) -> None:
    p = tmp_path / "kme.toml"
    p.write_text('store = "a"\nlisten = ":1"\ntls = 1\npeer = 2\nkme = 3\n')
    with pytest.raises(ConfigError, match=r"\[tls\] must be a table"):
        load_config(p)
