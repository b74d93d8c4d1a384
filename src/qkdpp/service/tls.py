"""Certificates, private-key files and TLS contexts for the key server (mutual TLS).

Identity rule: an SAE (or a peer KME) is identified by the **common name (CN) of its client
certificate's subject**; the certificate must chain to the configured CA bundle. Nothing else in
the request (headers, body) can claim an identity.

Key-file rule: a private-key file must not be readable by group or others (mode ``0o600`` or
stricter) on POSIX systems; :func:`check_key_file` refuses looser files, like ``ssh`` does.

:func:`make_dev_pki` writes a throw-away CA, a server certificate and client certificates with the
``openssl`` command-line tool (tests, demos; never for production keys).
"""

from __future__ import annotations

import os
import shutil
import ssl
import stat
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from qkdpp.errors import ConfigError

__all__ = [
    "check_key_file",
    "client_context",
    "make_dev_pki",
    "peer_identity",
    "server_context",
]


def _existing(path: str | os.PathLike[str], what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} file {p} does not exist or is not a file")
    return p


def check_key_file(path: str | os.PathLike[str]) -> Path:
    """Check that a private-key file exists and is not readable by group/others (POSIX).

    Raises
    ------
    ConfigError
        If the file is missing or its mode allows group/other access (fix: ``chmod 600``).
    """
    p = _existing(path, "private key")
    if os.name == "posix":
        mode = p.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"private key {p} is accessible by group/others (mode {oct(mode & 0o777)}); "
                f"run: chmod 600 {p}"
            )
    return p


def _base_context(purpose: int, cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
        ctx.load_verify_locations(cafile=str(ca))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"cannot load TLS material (cert {cert}, key {key}, CA {ca}): {exc}"
        ) from None
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def server_context(
    cert: str | os.PathLike[str], key: str | os.PathLike[str], ca: str | os.PathLike[str]
) -> ssl.SSLContext:
    """TLS server context that requires a client certificate signed by ``ca`` (TLS ≥ 1.2)."""
    return _base_context(
        ssl.PROTOCOL_TLS_SERVER,
        _existing(cert, "certificate"),
        check_key_file(key),
        _existing(ca, "CA bundle"),
    )


def client_context(
    cert: str | os.PathLike[str], key: str | os.PathLike[str], ca: str | os.PathLike[str]
) -> ssl.SSLContext:
    """TLS client context presenting ``cert`` and verifying the server (hostname checked)."""
    ctx = _base_context(
        ssl.PROTOCOL_TLS_CLIENT,
        _existing(cert, "certificate"),
        check_key_file(key),
        _existing(ca, "CA bundle"),
    )
    ctx.check_hostname = True
    return ctx


def peer_identity(peercert: dict[str, Any] | None) -> str | None:
    """The subject CN of a verified peer certificate (``SSLSocket.getpeercert()``), or None."""
    if not peercert:
        return None
    for rdn in peercert.get("subject", ()):
        for name, value in rdn:
            if name == "commonName" and isinstance(value, str) and value:
                return value
    return None


def _openssl(args: list[str], cwd: Path) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise ConfigError("the openssl command-line tool is needed to make a development PKI")
    res = subprocess.run(
        [exe, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    if res.returncode != 0:
        raise ConfigError(f"openssl {' '.join(args[:2])} failed: {res.stderr.strip()[:400]}")


def make_dev_pki(
    directory: str | os.PathLike[str],
    clients: Iterable[str],
    *,
    servers: Iterable[str] = ("kme",),
    days: int = 2,
) -> dict[str, tuple[Path, Path]]:
    """Write a throw-away CA and certificates (EC P-256) with the ``openssl`` tool.

    Parameters
    ----------
    directory : path
        Output folder (created). Files: ``ca.pem``, ``<name>.pem``, ``<name>.key`` (mode 0600).
    clients : iterable of str
        Client identities (SAE IDs or KME IDs); each becomes the certificate's CN.
    servers : iterable of str
        Server certificate names; each gets SAN ``DNS:localhost, IP:127.0.0.1`` and can also be
        used as a client certificate (KME-to-KME notifications).
    days : int
        Validity.

    Returns
    -------
    dict
        ``name -> (cert path, key path)`` for every server and client, plus ``"ca"``.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    _openssl(
        ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key"],
        d,
    )
    _openssl(
        [
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/CN=qkdpp dev CA",
            "-days",
            str(days),
            "-out",
            "ca.pem",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        d,
    )
    out: dict[str, tuple[Path, Path]] = {"ca": (d / "ca.pem", d / "ca.key")}
    server_names = list(servers)
    for name in [*server_names, *clients]:
        if not name or "/" in name or name.startswith("."):
            raise ConfigError(f"certificate name {name!r} is not a plain file name")
        _openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key"], d)
        _openssl(
            ["req", "-new", "-key", f"{name}.key", "-subj", f"/CN={name}", "-out", f"{name}.csr"], d
        )
        ext = d / f"{name}.ext"
        lines = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature"]
        if name in server_names:
            lines.append("extendedKeyUsage=serverAuth,clientAuth")
            lines.append("subjectAltName=DNS:localhost,IP:127.0.0.1")
        else:
            lines.append("extendedKeyUsage=clientAuth")
        ext.write_text("\n".join(lines) + "\n")
        _openssl(
            [
                "x509",
                "-req",
                "-in",
                f"{name}.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                str(days),
                "-extfile",
                ext.name,
                "-out",
                f"{name}.pem",
            ],
            d,
        )
        (d / f"{name}.csr").unlink()
        ext.unlink()
        os.chmod(d / f"{name}.key", 0o600)
        out[name] = (d / f"{name}.pem", d / f"{name}.key")
    os.chmod(d / "ca.key", 0o600)
    return out
