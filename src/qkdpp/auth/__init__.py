"""Wegman–Carter authentication: ε-AXU hash + one-time pad, key pool, bootstrap key, self-test.

See :mod:`qkdpp.auth.wegman_carter` (tags), :mod:`qkdpp.auth.pool` (pool with reserve),
:mod:`qkdpp.auth.bootstrap` (pre-shared key file, strict permissions) and
:mod:`qkdpp.auth.selftest` (known-answer tests run before first use).
"""

from qkdpp.auth.bootstrap import BootstrapKey, check_permissions, load_bootstrap, write_bootstrap
from qkdpp.auth.pool import AuthKeyPool
from qkdpp.auth.selftest import self_test
from qkdpp.auth.wegman_carter import WegmanCarter, encode_transcript

__all__ = [
    "AuthKeyPool",
    "BootstrapKey",
    "WegmanCarter",
    "check_permissions",
    "encode_transcript",
    "load_bootstrap",
    "self_test",
    "write_bootstrap",
]
