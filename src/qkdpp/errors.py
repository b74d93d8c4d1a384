"""The qkdpp exception hierarchy.

Every error says what was expected, what came, and where. A failure inside a stage aborts the
block (frame) it concerns, never the service; see :class:`qkdpp.frame.KeyState.FAILED`.
"""

from __future__ import annotations


class QkdppError(Exception):
    """Base class of every error raised by qkdpp."""


class ConfigError(QkdppError, ValueError):
    """A parameter or configuration value is invalid (the message names it and the valid range)."""


class BackendUnavailable(QkdppError, ImportError):
    """A requested kernel backend (e.g. ``compiled``) is not built or not importable."""


class ProtocolError(QkdppError):
    """The peer sent something the protocol does not allow: malformed, oversized, out of order,
    duplicated, unexpected kind, wrong sizes or indices. Aborts the block; the session continues."""


class PeerAborted(ProtocolError):
    """The peer aborted the current block (frame batch) and said why."""


class TransportError(QkdppError):
    """The classical channel failed: connection closed, refused, or timed out."""


class ChannelTimeout(TransportError, TimeoutError):
    """No message arrived from the peer within the configured timeout."""


class ChannelClosed(TransportError, ConnectionError):
    """The peer closed the channel (cleanly or not)."""


class ChannelDesync(ProtocolError, TransportError):
    """The message stream is out of step (lost, reordered, duplicated or mangled envelope):
    the batch in flight is void and both parties resynchronise (``PeerLink.resync()``)."""


class PeerResync(TransportError):
    """The peer restarted the session handshake (it lost track of the exchange); the batch in
    flight is void and this side must call ``PeerLink.resync()`` too."""


class ReconciliationFailed(QkdppError):
    """Error correction did not converge (or residual errors were detected)."""


class VerificationFailed(QkdppError):
    """The error-verification hashes of Alice and Bob differ: the block is discarded."""


class AuthenticationFailed(QkdppError):
    """A Wegman–Carter tag did not verify, or the authentication key pool cannot pay for a tag."""


class SecurityAbort(QkdppError):
    """The finite-key analysis allows no key for this block (e.g. QBER too high, ℓ ≤ 0).

    ``reason`` is a short machine-readable name such as ``"qber_above_threshold"``.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


class CaptureError(QkdppError):
    """A capture file is truncated, corrupt or of an unknown format.

    The message names the file, the byte offset and what was wrong.
    """

    def __init__(self, path: object, offset: int | None, problem: str) -> None:
        self.path = path
        self.offset = offset
        self.problem = problem
        where = f"{path}" + (f" at byte {offset}" if offset is not None else "")
        super().__init__(f"{where}: {problem}")


class KeyStoreError(QkdppError):
    """The key store refused an operation (unknown key, already taken, wrong state, disk full)."""


class UnknownKey(KeyStoreError):
    """No key with that id in the key store."""


class CommitRefused(KeyStoreError):
    """One side refused to store a block in the two-phase commit and told the other: the block
    is void at both ends and the exchange is still in step."""
