"""Key store: durable SQLite store with a strict state machine and two-phase commit with the peer.

See :mod:`qkdpp.keystore.sqlite` (states, durability, at-most-once ``take``) and
:mod:`qkdpp.keystore.twophase` (commit protocol and crash recovery).
"""

from qkdpp.keystore.sqlite import STATES, KeyRecord, KeyStore
from qkdpp.keystore.twophase import commit_coordinator, commit_participant, recover

__all__ = ["STATES", "KeyRecord", "KeyStore", "commit_coordinator", "commit_participant", "recover"]
