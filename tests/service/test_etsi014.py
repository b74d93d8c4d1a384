"""Loopback integration tests of the ETSI GS QKD 014 server with real mutual TLS.

Two nodes (KMEs) hold identical committed blocks; an SAE of node A calls enc_keys, an SAE of node B
calls dec_keys with the returned key_IDs and must get identical bits. Every error case of the
spec returns the right status and a ``{"message", "details"}`` body.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
import uuid

import pytest

from qkdpp.service.devpair import NodePair, seed_blocks
from qkdpp.service.etsi014 import EtsiClient, HttpsPeer, KmeServer
from qkdpp.service.kme import ApiError

from .conftest import BLOCK_BITS


def _client(pair: NodePair, node: str, ctx) -> EtsiClient:
    return EtsiClient("localhost", pair.port_a if node == "a" else pair.port_b, ctx)


def test_enc_on_a_dec_on_b_identical_bits(pair: NodePair, client_ctx) -> None:
    a1 = _client(pair, "a", client_ctx("sae-a1"))
    b1 = _client(pair, "b", client_ctx("sae-b1"))
    status = a1.status("sae-b1")
    assert status["source_KME_ID"] == "kme-a" and status["target_KME_ID"] == "kme-b"
    assert status["master_SAE_ID"] == "sae-a1" and status["slave_SAE_ID"] == "sae-b1"
    assert status["stored_key_count"] == 4 * (BLOCK_BITS // 8 * 8) // status["key_size"]
    keys = a1.enc_keys("sae-b1", number=5, size=512)
    assert len(keys) == 5 and len({k["key_ID"] for k in keys}) == 5
    for k in keys:
        assert len(base64.b64decode(k["key"])) == 64
    got = b1.dec_keys("sae-a1", [k["key_ID"] for k in keys])
    assert [g["key_ID"] for g in got] == [k["key_ID"] for k in keys]
    assert [g["key"] for g in got] == [k["key"] for k in keys]
    # GET forms of the API (query parameters)
    st, body = a1.request("GET", "/api/v1/keys/sae-b1/enc_keys?number=2&size=128")
    assert st == 200 and len(body["keys"]) == 2
    ids = "&".join(f"key_ID={k['key_ID']}" for k in body["keys"])
    st2, body2 = b1.request("GET", f"/api/v1/keys/sae-a1/dec_keys?{ids}")
    assert st2 == 200 and body2["keys"] == body["keys"]
    # default size and number
    (k,) = a1.enc_keys("sae-b1")
    assert len(base64.b64decode(k["key"])) * 8 == status["key_size"]
    # the reverse direction: node B issues from its own half, node A decodes
    b2 = _client(pair, "b", client_ctx("sae-b2"))
    a2 = _client(pair, "a", client_ctx("sae-a2"))
    rev = b2.enc_keys("sae-a2", number=3, size=256)
    assert a2.dec_keys("sae-b2", [k["key_ID"] for k in rev]) == rev
    # the bits come from the shared blocks: distinct keys, never zero-filled
    allbits = [base64.b64decode(k["key"]) for k in [*keys, *body["keys"], *rev]]
    assert len(set(allbits)) == len(allbits)
    assert all(any(b) for b in allbits)
    for c in (a1, b1, a2, b2):
        c.close()


def test_at_most_once_and_slave_rules(pair: NodePair, client_ctx) -> None:
    a1 = _client(pair, "a", client_ctx("sae-a1"))
    b1 = _client(pair, "b", client_ctx("sae-b1"))
    b2 = _client(pair, "b", client_ctx("sae-b2"))
    keys = a1.enc_keys("sae-b1", number=2, size=256)
    ids = [k["key_ID"] for k in keys]
    # another slave SAE of node B cannot get them (401), nor with the wrong master SAE
    for client, master in ((b2, "sae-a1"), (b1, "sae-a2")):
        st, body = client.request(
            "POST", f"/api/v1/keys/{master}/dec_keys", {"key_IDs": [{"key_ID": ids[0]}]}
        )
        assert st == 401 and "message" in body and body["details"] == [{"key_ID": ids[0]}]
    # the master SAE cannot "dec" its own keys on node A (keys are for the slave side only)
    a1b = _client(pair, "a", client_ctx("sae-a1"))
    st, _ = a1b.request("GET", "/api/v1/keys/sae-a1/dec_keys?key_ID=" + ids[0])
    assert st == 401
    # all-or-nothing: one unknown id → 401 and nothing delivered
    bogus = str(uuid.uuid4())
    st, body = b1.request(
        "POST", "/api/v1/keys/sae-a1/dec_keys", {"key_IDs": [{"key_ID": ids[0]}, {"key_ID": bogus}]}
    )
    assert st == 401 and body["details"] == [{"key_ID": bogus}]
    assert b1.dec_keys("sae-a1", ids) == keys
    # served once
    st, body = b1.request("POST", "/api/v1/keys/sae-a1/dec_keys", {"key_IDs": [{"key_ID": ids[1]}]})
    assert st == 401
    audit_a = pair.kme_a.audit()
    audit_b = pair.kme_b.audit()
    assert [r["key_ID"] for r in audit_a if r["event"] == "enc_delivered"] == ids
    assert [r["key_ID"] for r in audit_b if r["event"] == "dec_delivered"] == ids
    assert all(
        set(r) == {"seq", "time", "event", "key_ID", "SAE_ID", "peer_SAE_ID", "size"}
        for r in audit_a + audit_b
    )


MASTER_SIDE_ERRORS = [
    ("POST", "/api/v1/keys/sae-b1/enc_keys", {"number": 129}, 400, "number"),
    ("POST", "/api/v1/keys/sae-b1/enc_keys", {"number": 0}, 400, "number"),
    ("POST", "/api/v1/keys/sae-b1/enc_keys", {"number": "2"}, 400, "integer"),
    ("POST", "/api/v1/keys/sae-b1/enc_keys", {"size": 100}, 400, "multiple of 8"),
    ("POST", "/api/v1/keys/sae-b1/enc_keys", {"size": 32}, 400, "size"),
    ("POST", "/api/v1/keys/sae-b1/enc_keys", {"size": 16384}, 400, "size"),
    ("POST", "/api/v1/keys/sae-b1/enc_keys", {"number": 1, "x": 1}, 400, "unknown"),
    ("POST", "/api/v1/keys/sae-b1/enc_keys", [1, 2], 400, "object"),
    (
        "POST",
        "/api/v1/keys/sae-b1/enc_keys",
        {"additional_slave_SAE_IDs": ["sae-b2"]},
        400,
        "additional",
    ),
    ("GET", "/api/v1/keys/sae-b1/enc_keys?number=abc", None, 400, "integer"),
    ("GET", "/api/v1/keys/sae-b1/enc_keys?size=100", None, 400, "multiple of 8"),
    ("POST", "/api/v1/keys/sae-a2/dec_keys", {"key_IDs": []}, 401, "peer KME"),
    ("POST", "/api/v1/keys/sae-b1/dec_keys", {"key_IDs": []}, 400, "non-empty"),
    ("POST", "/api/v1/keys/nobody/enc_keys", {"number": 1}, 401, "peer KME"),
    ("GET", "/api/v1/keys/sae-a2/status", None, 401, "peer KME"),
    ("GET", "/api/v1/keys/sae-b1/unknown", None, 404, "unknown"),
    ("GET", "/nothing", None, 404, "not found"),
    ("DELETE", "/api/v1/keys/sae-b1/status", None, 405, "method"),
]


def test_master_side_errors(pair: NodePair, client_ctx) -> None:
    a1 = _client(pair, "a", client_ctx("sae-a1"))
    before = a1.status("sae-b1")["stored_key_count"]
    for method, path, body, status, fragment in MASTER_SIDE_ERRORS:
        st, res = a1.request(method, path, body)
        assert st == status, (method, path, body, res)
        assert isinstance(res, dict) and fragment in json.dumps(res), (path, body, res)
        assert set(res) <= {"message", "details"} and isinstance(res["message"], str)
    # no refused request consumed key
    assert pair.kme_a.pool_stats().get("keys_enc_delivered", 0) == 0
    assert a1.status("sae-b1")["stored_key_count"] == before
    a1.close()


def test_slave_side_errors(pair: NodePair, client_ctx) -> None:
    b1 = _client(pair, "b", client_ctx("sae-b1"))
    u = str(uuid.uuid4())
    cases = [
        ({"key_IDs": [{"key_ID": "not-a-uuid"}]}, 400, "UUID"),
        ({"key_IDs": [{"key_ID": "{" + u + "}"}]}, 400, "canonical"),
        ({"key_IDs": [{"key_ID": u}, {"key_ID": u}]}, 400, "duplicate"),
        ({"key_IDs": []}, 400, "non-empty"),
        ({"key_IDs": [{"key_ID": str(uuid.uuid4())} for _ in range(129)]}, 400, "too many"),
        ({"keys": []}, 400, "key_IDs"),
        ({"key_IDs": [{"key_ID": u}]}, 401, "not available"),
    ]
    for body, status, fragment in cases:
        st, res = b1.request("POST", "/api/v1/keys/sae-a1/dec_keys", body)
        assert st == status and fragment in json.dumps(res), (body, st, res)
    st, res = b1.request("POST", "/api/v1/keys/sae-a1/dec_keys", raw=b"{not json")
    assert st == 400 and res["message"] == "malformed JSON body"
    st, res = b1.request("GET", "/api/v1/keys/sae-a1/dec_keys")
    assert st == 400 and "key_ID" in res["message"]
    b1.close()


def test_insufficient_key_503_and_unknown_client_401(pair: NodePair, client_ctx) -> None:
    a1 = _client(pair, "a", client_ctx("sae-a1"))
    avail = a1.status("sae-b1")["stored_key_count"]  # keys of the default size (256 bits)
    # 4 blocks of 4096 bytes: at most 128 keys of 8192 bits... ask for more than exists
    st, res = a1.request("POST", "/api/v1/keys/sae-b1/enc_keys", {"number": 128, "size": 8192})
    assert st == 503 and res["message"] == "insufficient key available"
    assert res["details"][0]["requested_bits"] == 128 * 8192
    # nothing was consumed by the refused request
    assert a1.status("sae-b1")["stored_key_count"] == avail
    # an SAE of the other node (valid certificate, wrong KME) and an unknown identity: 401
    for who in ("sae-b1", "intruder"):
        c = _client(pair, "a", client_ctx(who))
        st, res = c.request("GET", "/api/v1/keys/sae-b1/status")
        assert st == 401 and "unknown SAE" in res["message"]
        c.close()
    # node status is for registered identities only
    c = _client(pair, "a", client_ctx("intruder"))
    assert c.request("GET", "/metrics")[0] == 401
    assert c.request("GET", "/health")[0] == 401
    c.close()
    # the peer-notification endpoint is for the peer KME certificate only
    c = _client(pair, "b", client_ctx("sae-a1"))
    st, res = c.request("POST", "/api/v1/kme/issued", {"keys": []})
    assert st == 401
    a1.close()


def test_drain_everything_then_503(pair: NodePair, client_ctx) -> None:
    a1 = _client(pair, "a", client_ctx("sae-a1"))
    per_block = (BLOCK_BITS // 8) // 128  # keys of 1024 bits per block
    total = 4 * per_block
    got = []
    while len(got) < total:
        got += a1.enc_keys("sae-b1", number=min(128, total - len(got)), size=1024)
    st, _res = a1.request("POST", "/api/v1/keys/sae-b1/enc_keys", {"number": 1, "size": 1024})
    assert st == 503
    assert a1.status("sae-b1")["stored_key_count"] == 0
    # node A never touched node B's half: B still issues
    b1 = _client(pair, "b", client_ctx("sae-b1"))
    assert len(b1.enc_keys("sae-a1", number=4, size=1024)) == 4
    # node A's pool dropped every block (each holds exactly 32 keys of 1024 bits)
    assert pair.kme_a.pool_stats()["pool_bits"] == 0


def test_no_client_certificate_is_refused(pair: NodePair, pki) -> None:
    ctx = ssl.create_default_context(cafile=str(pki["ca"][0]))
    c = EtsiClient("localhost", pair.port_a, ctx)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        c.request("GET", "/api/v1/keys/sae-b1/status")
    c.close()


def test_rate_limit_429(tmp_path, pki, client_ctx) -> None:
    with NodePair(tmp_path, pki, rate_per_s=1.0, rate_burst=3.0) as p:
        seed_blocks(p.store_a, p.store_b, 2, BLOCK_BITS)
        a1 = _client(p, "a", client_ctx("sae-a1"))
        codes = [a1.request("GET", "/api/v1/keys/sae-b1/status")[0] for _ in range(6)]
        assert codes[:3] == [200, 200, 200] and 429 in codes[3:]
        # the limit is per SAE: another SAE is not affected
        a2 = _client(p, "a", client_ctx("sae-a2"))
        assert a2.request("GET", "/api/v1/keys/sae-b1/status")[0] == 200


def test_bit_quota_429(tmp_path, pki, client_ctx) -> None:
    with NodePair(tmp_path, pki, quota_bits_per_s=1.0, quota_burst_bits=4096.0) as p:
        seed_blocks(p.store_a, p.store_b, 2, BLOCK_BITS)
        a1 = _client(p, "a", client_ctx("sae-a1"))
        assert len(a1.enc_keys("sae-b1", number=4, size=1024)) == 4
        st, res = a1.request("POST", "/api/v1/keys/sae-b1/enc_keys", {"number": 1, "size": 1024})
        assert st == 429 and "quota" in res["message"]


def test_peer_unreachable_gives_503_and_voids(tmp_path, pki, client_ctx) -> None:
    with NodePair(tmp_path, pki) as p:
        seed_blocks(p.store_a, p.store_b, 2, BLOCK_BITS)
        p.kme_a.connect(HttpsPeer("localhost", 1, client_ctx("kme-a"), timeout=2))
        a1 = _client(p, "a", client_ctx("sae-a1"))
        st, res = a1.request("POST", "/api/v1/keys/sae-b1/enc_keys", {"number": 2})
        assert st == 503 and "peer" in res["message"]
        assert p.kme_a.pool_stats().get("keys_enc_void") == 2


def test_https_peer_link_and_health_metrics(tmp_path, pki, client_ctx) -> None:
    with NodePair(tmp_path, pki, link="https") as p:
        seed_blocks(p.store_a, p.store_b, 4, BLOCK_BITS)
        a1 = _client(p, "a", client_ctx("sae-a1"))
        b1 = _client(p, "b", client_ctx("sae-b1"))
        keys = a1.enc_keys("sae-b1", number=3, size=256)
        assert b1.dec_keys("sae-a1", [k["key_ID"] for k in keys]) == keys
        st, health = a1.request("GET", "/health")
        assert st == 200 and health["status"] == "ok" and health["kme_id"] == "kme-a"
        st, text = a1.request("GET", "/metrics")
        assert st == 200
        assert 'qkdpp_kme_delivered_keys_total{side="enc"} 3' in text
        assert 'qkdpp_etsi014_requests_total{endpoint="enc_keys",status="200"} 1' in text
        assert "qkdpp_keystore_stored_bits " in text
        st, text_b = b1.request("GET", "/metrics")
        assert 'qkdpp_kme_delivered_keys_total{side="dec"} 3' in text_b


def test_concurrent_clients_no_duplicates(pair: NodePair, client_ctx) -> None:
    results: list[list[dict]] = [[] for _ in range(6)]
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        c = _client(pair, "a", client_ctx("sae-a1" if i % 2 else "sae-a2"))
        try:
            for _ in range(8):
                results[i] += c.enc_keys("sae-b1", number=3, size=256)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            c.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    flat = [k for r in results for k in r]
    assert len(flat) == 6 * 8 * 3
    assert len({k["key_ID"] for k in flat}) == len(flat)
    assert len({k["key"] for k in flat}) == len(flat)
    assert pair.kme_a._db.batches <= pair.kme_a._db.items


def test_tls_key_file_permissions(tmp_path, pki) -> None:
    import shutil as sh

    from qkdpp.errors import ConfigError
    from qkdpp.service.tls import server_context

    loose = tmp_path / "loose.key"
    sh.copy(pki["kme-a"][1], loose)
    loose.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        server_context(pki["kme-a"][0], loose, pki["ca"][0])
    with pytest.raises(ConfigError, match="does not exist"):
        server_context(tmp_path / "none.pem", pki["kme-a"][1], pki["ca"][0])


def test_server_requires_cert_required(pair: NodePair) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with pytest.raises(Exception, match="CERT_REQUIRED"):
        KmeServer(("127.0.0.1", 0), pair.kme_a, ctx)


def test_api_error_body() -> None:
    e = ApiError(400, "bad", [{"x": 1}])
    assert e.body() == {"message": "bad", "details": [{"x": 1}]}
    assert ApiError(503, "none").body() == {"message": "none"}


def test_connection_limit(pair: NodePair, pki, client_ctx) -> None:
    from qkdpp.service.etsi014 import serve_in_thread
    from qkdpp.service.tls import server_context

    srv = KmeServer(
        ("127.0.0.1", 0),
        pair.kme_a,
        server_context(*pki["kme-a"], pki["ca"][0]),
        max_connections=1,
    )
    serve_in_thread(srv)
    try:
        port = srv.server_address[1]
        first = EtsiClient("localhost", port, client_ctx("sae-a1"))
        assert first.request("GET", "/api/v1/keys/sae-b1/status")[0] == 200  # holds its slot
        second = EtsiClient("localhost", port, client_ctx("sae-a2"), timeout=5)
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            second.request("GET", "/api/v1/keys/sae-b1/status")
        first.close()
        for _ in range(50):  # the slot frees when the first connection's thread ends
            try:
                third = EtsiClient("localhost", port, client_ctx("sae-a2"), timeout=5)
                if third.request("GET", "/api/v1/keys/sae-b1/status")[0] == 200:
                    break
            except (ssl.SSLError, OSError):
                import time

                time.sleep(0.05)
        else:
            pytest.fail("connection slot never freed")
        assert srv.metrics.get("qkdpp_etsi014_connections_refused_total") >= 1
    finally:
        srv.shutdown()
        srv.server_close()


def test_peer_endpoint_validates_notifications(pair: NodePair, client_ctx) -> None:
    peer = _client(pair, "b", client_ctx("kme-a"))  # node A's certificate talking to node B
    bad = [
        {"keys": "x"},
        {"keys": [{"key_ID": "nope"}]},
        {"keys": [{"key_ID": str(uuid.uuid4()), "block_ID": str(uuid.uuid4())}]},
        {
            "keys": [
                {
                    "key_ID": str(uuid.uuid4()),
                    "block_ID": str(uuid.uuid4()),
                    "offset": "0",
                    "size": 256,
                    "master_SAE_ID": "sae-a1",
                    "slave_SAE_ID": "sae-b1",
                }
            ]
        },
        {
            "keys": [
                {
                    "key_ID": str(uuid.uuid4()),
                    "block_ID": str(uuid.uuid4()),
                    "offset": 0,
                    "size": 256,
                    "master_SAE_ID": "sae-a1",
                    "slave_SAE_ID": "sae-b1",
                }
            ]
        },
    ]
    for body in bad:
        st, res = peer.request("POST", "/api/v1/kme/issued", body)
        assert st == 400 and "message" in res, (body, res)
    # node B's own certificate is not "the peer" of node B
    self_peer = _client(pair, "b", client_ctx("kme-b"))
    st, _ = self_peer.request("POST", "/api/v1/kme/issued", {"keys": []})
    assert st == 401
