"""Wegman–Carter authentication: ε-AXU hash + one-time pads, bootstrap key, self-test.

See :mod:`qkdpp.auth.wegman_carter` (the tag, transcript encoding), :mod:`qkdpp.auth.link_auth`
(addressed one-time pads in the key store, tagged channels), :mod:`qkdpp.auth.bootstrap`
(pre-shared key file, strict permissions) and :mod:`qkdpp.auth.selftest` (known-answer tests run
before first use).
"""

from qkdpp.auth.bootstrap import BootstrapKey, check_permissions, load_bootstrap, write_bootstrap
from qkdpp.auth.link_auth import (
    AuthenticatedChannel,
    LinkAuth,
    acquire_link_auth,
    open_link_auth,
    release_link_auth,
)
from qkdpp.auth.selftest import self_test
from qkdpp.auth.wegman_carter import encode_transcript, wc_tag

__all__ = [
    "AuthenticatedChannel",
    "BootstrapKey",
    "LinkAuth",
    "acquire_link_auth",
    "check_permissions",
    "encode_transcript",
    "load_bootstrap",
    "open_link_auth",
    "release_link_auth",
    "self_test",
    "wc_tag",
    "write_bootstrap",
]
