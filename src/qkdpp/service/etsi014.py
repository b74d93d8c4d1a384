"""ETSI GS QKD 014 V1.1.1 REST server over mutual TLS (standard library only).

Endpoints (``{id}`` is an SAE ID; the caller's SAE ID is its client certificate's subject CN)::

    GET       /api/v1/keys/{slave_SAE_ID}/status
    GET|POST  /api/v1/keys/{slave_SAE_ID}/enc_keys   number, size (query or JSON body)
    GET|POST  /api/v1/keys/{master_SAE_ID}/dec_keys  key_ID (query) or {"key_IDs":[{"key_ID"}]}
    POST      /api/v1/kme/issued                      peer KME only: issued-key notification
    GET       /health                                 liveness/readiness (JSON)
    GET       /metrics                                Prometheus text exposition

Responses: ``{"keys": [{"key_ID": uuid, "key": base64}]}``; errors 400 / 401 / 429 / 503 (and
404 / 405 / 413 for HTTP-level misuse) with ``{"message": …, "details": [...]}``.

Threads: :class:`http.server.ThreadingHTTPServer` with HTTP/1.1 keep-alive. The TLS handshake runs
in the connection's own thread (a slow client cannot stall ``accept``), with a timeout.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import socket
import ssl
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from qkdpp.errors import QkdppError
from qkdpp.service.kme import ApiError, IssuedKey, KeyManager
from qkdpp.service.metrics import Metrics
from qkdpp.service.tls import peer_identity

__all__ = ["EtsiClient", "HttpsPeer", "KmeServer", "serve_in_thread"]

log = logging.getLogger("qkdpp.etsi014")

MAX_BODY = 256 * 1024
"""Largest request body accepted (bytes); larger bodies get 413."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # responses go out as one write; no Nagle/delayed-ACK stalls
    server: KmeServer
    timeout = 30  # seconds of client silence before the connection is closed
    _body_read: bool = False
    _headers_buffer: list[bytes]  # of BaseHTTPRequestHandler (one write per response)
    identity: str | None = None

    def setup(self) -> None:
        self.request.settimeout(self.server.handshake_timeout)
        try:
            self.request.do_handshake()
        except (ssl.SSLError, OSError) as exc:
            self.server.metrics.inc("qkdpp_tls_handshake_failures_total")
            log.info("TLS handshake with %s failed: %s", self.client_address[0], exc)
            raise _HandshakeFailed from None
        self.identity = peer_identity(self.request.getpeercert())
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s", self.client_address[0], format % args)

    # -- plumbing ------------------------------------------------------------------------------
    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """HTTP-level errors (bad request line, oversized headers) as JSON, then close."""
        self.close_connection = True
        try:
            self._send_json(code, {"message": message or "bad request"})
        except OSError:
            pass

    def _send_json(self, status: int, obj: dict[str, Any]) -> None:
        data = json.dumps(obj, separators=(",", ":")).encode()
        if self.request_version == "HTTP/0.9":  # no status line or headers in HTTP/0.9
            self.close_connection = True
            self.wfile.write(data)
            return
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self._headers_buffer.append(b"\r\n")
        self._headers_buffer.append(data)  # headers and body in one TLS write
        self.flush_headers()

    def _drain_body(self) -> None:
        """Consume an unread request body so the keep-alive stream stays in step."""
        if self._body_read:
            return
        self._body_read = True
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = -1
        if self.headers.get("Transfer-Encoding") or n < 0 or n > MAX_BODY:
            self.close_connection = True
        elif n:
            self.rfile.read(n)

    def _read_json(self) -> Any:
        self._body_read = True
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            raise ApiError(411, "chunked request bodies are not supported; send Content-Length")
        try:
            n = int(length) if length is not None else 0
        except ValueError:
            raise ApiError(400, "bad Content-Length") from None
        if n < 0:
            raise ApiError(400, "bad Content-Length")
        if n > MAX_BODY:
            self.close_connection = True
            raise ApiError(413, "request body too large", [{"max_bytes": MAX_BODY}])
        raw = self.rfile.read(n) if n else b""
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, "malformed JSON body", [{"error": str(exc)[:120]}]) from None

    def _route(self, method: str) -> None:
        self._body_read = False
        t0 = time.perf_counter()
        endpoint = "other"
        status = 500
        try:
            url = urllib.parse.urlsplit(self.path)
            parts = [urllib.parse.unquote(p) for p in url.path.split("/") if p]
            query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
            if parts == ["health"] and method == "GET":
                endpoint = "health"
                self.server.kme.check_monitor(self.identity)
                status, body = 200, self.server.health()
            elif parts == ["metrics"] and method == "GET":
                endpoint = "metrics"
                self.server.kme.check_monitor(self.identity)
                self._drain_body()
                self._send_text(200, self.server.metrics_text())
                status = 200
                return
            elif len(parts) == 5 and parts[:3] == ["api", "v1", "keys"]:
                endpoint = parts[4]
                status, body = self._keys(method, parts[3], parts[4], query)
            elif parts == ["api", "v1", "kme", "issued"] and method == "POST":
                endpoint = "issued"
                status, body = self._issued()
            else:
                raise ApiError(404, "not found", [{"path": url.path[:120]}])
        except ApiError as exc:
            status, body = exc.status, exc.body()
        except QkdppError as exc:
            log.warning("request %s %s failed: %s", method, self.path[:120], exc)
            status, body = 503, {"message": "key service unavailable"}
        except Exception:
            log.exception("internal error on %s %s", method, self.path[:120])
            status, body = 500, {"message": "internal error"}
        self._drain_body()
        self.server.metrics.inc(
            "qkdpp_etsi014_requests_total", endpoint=endpoint, status=str(status)
        )
        self.server.metrics.observe(
            "qkdpp_etsi014_request_seconds", time.perf_counter() - t0, endpoint=endpoint
        )
        self._send_json(status, body)

    def _send_text(self, status: int, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def _method_not_allowed(self) -> None:
        self._body_read = False
        self._drain_body()
        self._send_json(405, {"message": "method not allowed"})

    do_PUT = do_DELETE = do_PATCH = _method_not_allowed  # noqa: N815

    # -- API -----------------------------------------------------------------------------------
    def _keys(
        self, method: str, sae_id: str, op: str, query: dict[str, list[str]]
    ) -> tuple[int, dict[str, Any]]:
        kme = self.server.kme
        caller = kme.check_local_sae(self.identity)
        kme.admit(caller)
        if op == "status":
            if method != "GET":
                raise ApiError(405, "status is GET only")
            kme.check_remote_sae(sae_id, "slave_SAE_ID")
            return 200, kme.status(caller, sae_id)
        if op == "enc_keys":
            kme.check_remote_sae(sae_id, "slave_SAE_ID")
            if method == "POST":
                req = self._read_json()
                if not isinstance(req, dict):
                    raise ApiError(400, "request body must be a JSON object")
                unsupported = set(req) - {"number", "size"}
                if req.get("additional_slave_SAE_IDs"):
                    raise ApiError(
                        400, "additional_slave_SAE_IDs not supported (max_SAE_ID_count is 0)"
                    )
                # extension_optional may be ignored by a KME (ETSI GS QKD 014 §6.4)
                unsupported -= {
                    "additional_slave_SAE_IDs",
                    "extension_mandatory",
                    "extension_optional",
                }
                if req.get("extension_mandatory"):
                    raise ApiError(400, "mandatory extensions are not supported")
                if unsupported:
                    raise ApiError(400, "unknown request fields", [{"fields": sorted(unsupported)}])
                number, size = req.get("number"), req.get("size")
            else:
                number = _int_param(query, "number")
                size = _int_param(query, "size")
            n, s = kme.parse_enc_request(number, size)
            keys = kme.enc_keys(caller, sae_id, n, s)
            return 200, {"keys": _encode_keys(keys)}
        if op == "dec_keys":
            kme.check_remote_sae(sae_id, "master_SAE_ID")
            if method == "POST":
                req = self._read_json()
                if not isinstance(req, dict) or "key_IDs" not in req:
                    raise ApiError(400, 'request body must be {"key_IDs": [{"key_ID": …}]}')
                entries = req["key_IDs"]
            else:
                ids = query.get("key_ID", [])
                if not ids:
                    raise ApiError(400, "key_ID query parameter missing")
                entries = [{"key_ID": k} for k in ids]
            key_ids = kme.parse_key_ids(entries)
            keys = kme.dec_keys(caller, sae_id, key_ids)
            return 200, {"keys": _encode_keys(keys)}
        raise ApiError(404, "unknown operation", [{"operation": op[:40]}])

    def _issued(self) -> tuple[int, dict[str, Any]]:
        kme = self.server.kme
        if self.identity != kme.config.peer_kme_id:
            raise ApiError(401, "unauthorized: not the peer KME")
        req = self._read_json()
        if not isinstance(req, dict) or not isinstance(req.get("keys"), list):
            raise ApiError(400, 'body must be {"keys": [...]}')
        keys = [IssuedKey.from_json(k) for k in req["keys"]]
        kme.accept_issued(keys, source_kme_id=self.identity)
        return 200, {"accepted": len(keys)}


class _HandshakeFailed(Exception):
    pass


def _int_param(query: dict[str, list[str]], name: str) -> int | None:
    vals = query.get(name)
    if not vals:
        return None
    if len(vals) > 1:
        raise ApiError(400, f"{name} given more than once")
    try:
        return int(vals[0], 10)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer", [{name: vals[0][:40]}]) from None


def _encode_keys(keys: list[tuple[str, bytearray]]) -> list[dict[str, str]]:
    out = []
    for kid, key in keys:
        out.append({"key_ID": kid, "key": base64.b64encode(key).decode("ascii")})
        key[:] = bytes(len(key))  # the base64 str cannot be wiped (Python strings are immutable)
    return out


class KmeServer(ThreadingHTTPServer):
    """HTTPS (mutual TLS) server of one KME.

    Parameters
    ----------
    address : (host, port)
        Bind address; port 0 picks a free port (see ``server_address`` after construction).
    kme : KeyManager
    ssl_context : ssl.SSLContext
        From :func:`qkdpp.service.tls.server_context` (client certificates required).
    metrics : Metrics, optional
        Registry exposed on ``/metrics`` (a fresh one by default).
    handshake_timeout : float
        Seconds allowed for the TLS handshake.
    max_connections : int
        Concurrent connections served (one thread each); further connections are closed at once.
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        kme: KeyManager,
        ssl_context: ssl.SSLContext,
        *,
        metrics: Metrics | None = None,
        handshake_timeout: float = 10.0,
        max_connections: int = 256,
    ) -> None:
        if ssl_context.verify_mode != ssl.CERT_REQUIRED:
            raise QkdppError("the KME server requires client certificates (CERT_REQUIRED)")
        self.kme = kme
        self.ssl_context = ssl_context
        self.metrics = metrics or Metrics()
        self.handshake_timeout = handshake_timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        self.started = time.time()
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = self.socket.accept()
        return self.ssl_context.wrap_socket(
            sock, server_side=True, do_handshake_on_connect=False
        ), addr

    def process_request(self, request: Any, client_address: Any) -> None:
        """One thread per connection, at most ``max_connections`` at once (others are closed)."""
        if not self._slots.acquire(blocking=False):
            self.metrics.inc("qkdpp_etsi014_connections_refused_total")
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s ended with an error", client_address)

    def health(self) -> dict[str, Any]:
        """Liveness and readiness: the KME database answers and the key store is readable."""
        stats: dict[str, Any]
        pool: dict[str, Any]
        try:
            stats = dict(self.kme.store.stats())
            pool = dict(self.kme.pool_stats())
            ok = True
        except Exception as exc:
            stats, pool, ok = {}, {"error": str(exc)[:200]}, False
        return {
            "status": "ok" if ok else "degraded",
            "kme_id": self.kme.config.kme_id,
            "uptime_s": round(time.time() - self.started, 3),
            "key_store": stats,
            "pool": pool,
        }

    def metrics_text(self) -> str:
        """Prometheus exposition: request counters plus key-store and KME gauges."""
        self.metrics.update_kme(self.kme)
        return self.metrics.render()


def serve_in_thread(server: KmeServer) -> threading.Thread:
    """Run ``server.serve_forever`` in a daemon thread (stop with ``server.shutdown()``)."""
    t = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="kme-server", daemon=True
    )
    t.start()
    return t


class HttpsPeer:
    """A :class:`~qkdpp.service.kme.PeerNotifier` over HTTPS with mutual TLS.

    Posts ``{"keys": [...]}`` to the peer's ``/api/v1/kme/issued``; the peer checks that the client
    certificate CN is its configured ``peer_kme_id``. One keep-alive connection per thread.
    """

    def __init__(
        self, host: str, port: int, ssl_context: ssl.SSLContext, *, timeout: float = 10.0
    ) -> None:
        self.host, self.port, self.ctx, self.timeout = host, port, ssl_context, timeout
        self._local = threading.local()

    def _conn(self) -> http.client.HTTPSConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPSConnection(
                self.host, self.port, context=self.ctx, timeout=self.timeout
            )
            self._local.conn = conn
        return conn

    def notify_issued(self, keys: list[IssuedKey]) -> None:
        body = json.dumps({"keys": [k.to_json() for k in keys]}).encode()
        for attempt in (0, 1):  # one retry on a stale keep-alive connection
            conn = self._conn()
            try:
                conn.request(
                    "POST",
                    "/api/v1/kme/issued",
                    body=body,
                    headers={"Content-Type": "application/json"},
                )
                resp = conn.getresponse()
                data = resp.read()
                break
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self._local.conn = None
                if attempt:
                    raise ApiError(503, f"peer KME unreachable: {exc}") from None
        if resp.status != 200:
            try:
                msg = json.loads(data).get("message", "")
            except ValueError:
                msg = data[:120].decode("latin-1")
            raise ApiError(503, f"peer KME refused the notification: {resp.status} {msg}")


class EtsiClient:
    """Minimal ETSI GS QKD 014 client (one keep-alive mutual-TLS connection; not thread-safe).

    ``request`` returns ``(status, parsed JSON body)``; the helpers return the body and raise
    :class:`ApiError` with the server's status and message on an error status.
    """

    def __init__(
        self, host: str, port: int, ssl_context: ssl.SSLContext, *, timeout: float = 30.0
    ) -> None:
        self.host, self.port, self.ctx, self.timeout = host, port, ssl_context, timeout
        self.conn: http.client.HTTPSConnection | None = None

    def request(
        self, method: str, path: str, body: Any = None, *, raw: bytes | None = None
    ) -> tuple[int, Any]:
        if self.conn is None:
            self.conn = http.client.HTTPSConnection(
                self.host, self.port, context=self.ctx, timeout=self.timeout
            )
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = {"Content-Type": "application/json"} if data is not None else {}
        try:
            self.conn.request(method, path, body=data, headers=headers)
            resp = self.conn.getresponse()
            payload = resp.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        if resp.getheader("Connection", "").lower() == "close":
            self.close()
        ctype = resp.getheader("Content-Type", "")
        if ctype.startswith("application/json"):
            return resp.status, json.loads(payload)
        return resp.status, payload.decode("utf-8", "replace")

    def _ok(self, status: int, body: Any) -> Any:
        if status != 200:
            msg = body.get("message", "") if isinstance(body, dict) else str(body)[:120]
            details = body.get("details") if isinstance(body, dict) else None
            raise ApiError(status, msg, details)
        return body

    def status(self, slave_sae: str) -> dict[str, Any]:
        return dict(self._ok(*self.request("GET", f"/api/v1/keys/{slave_sae}/status")))

    def enc_keys(self, slave_sae: str, number: int = 1, size: int | None = None) -> list[Any]:
        body: dict[str, Any] = {"number": number}
        if size is not None:
            body["size"] = size
        res = self._ok(*self.request("POST", f"/api/v1/keys/{slave_sae}/enc_keys", body))
        return list(res["keys"])

    def dec_keys(self, master_sae: str, key_ids: list[str]) -> list[Any]:
        body = {"key_IDs": [{"key_ID": k} for k in key_ids]}
        res = self._ok(*self.request("POST", f"/api/v1/keys/{master_sae}/dec_keys", body))
        return list(res["keys"])

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
