"""Classical channel: envelope, payload codec, PeerLink/PeerScope, transcript, transports."""

from qkdpp.protocol.codec import Value, decode_payload, encode_payload
from qkdpp.protocol.envelope import Envelope, MsgType
from qkdpp.protocol.link import LinkStats, PeerLink, PeerScope
from qkdpp.protocol.transcript import RECEIVED, SENT, Transcript
from qkdpp.protocol.transports import (
    LoopbackTransport,
    TcpListener,
    TcpTransport,
    Transport,
    loopback_pair,
    parse_tcp_address,
)

__all__ = [
    "RECEIVED",
    "SENT",
    "Envelope",
    "LinkStats",
    "LoopbackTransport",
    "MsgType",
    "PeerLink",
    "PeerScope",
    "TcpListener",
    "TcpTransport",
    "Transcript",
    "Transport",
    "Value",
    "decode_payload",
    "encode_payload",
    "loopback_pair",
    "parse_tcp_address",
]
