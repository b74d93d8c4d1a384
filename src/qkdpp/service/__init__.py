"""Node services: ETSI GS QKD 014 key delivery over mutual TLS, key management, metrics.

* :mod:`qkdpp.service.kme` — key management: slicing committed key blocks into ETSI keys with
  identical key_IDs on both nodes, master/slave SAE rules, at-most-once delivery (durable before
  the response), quotas and rate limits per SAE, audit log without key bits.
* :mod:`qkdpp.service.etsi014` — the REST server (``http.server`` + ``ssl``, client certificates
  required) and the node-to-node notification client.
* :mod:`qkdpp.service.metrics` — Prometheus text exposition and a health endpoint.
* :mod:`qkdpp.service.tls` — certificate and key-file handling, TLS contexts, a development PKI.

See ``docs/etsi014.md``.
"""
