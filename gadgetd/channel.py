"""The worker -> supervisor channel: one JSON datagram per message over a SOCK_SEQPACKET pair.

Messages: `ready` once ep0 is set up and the ep files are open (the supervisor binds the UDC only
then), `status` every second from the worker's loop (its heartbeat), `error` before a worker
exits on a failure. Everything received is validated: a malformed message is the worker's error,
never the supervisor's crash.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass

MAX_MESSAGE = 1 << 20


class ChannelError(ValueError):
    """A message that is not one of the types below."""


@dataclass(frozen=True)
class Ready:
    status: dict


@dataclass(frozen=True)
class Status:
    status: dict


@dataclass(frozen=True)
class Error:
    error: str


Message = Ready | Status | Error
_TYPES = {"ready": Ready, "status": Status, "error": Error}
_NAMES = {cls: name for name, cls in _TYPES.items()}
_FIELDS = {Ready: ("status", dict), Status: ("status", dict), Error: ("error", str)}


def encode(message: Message) -> bytes:
    field, _ = _FIELDS[type(message)]
    return json.dumps({"type": _NAMES[type(message)], field: getattr(message, field)}).encode()


def decode(data: bytes) -> Message:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ChannelError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict) or obj.get("type") not in _TYPES:
        raise ChannelError(f"unknown message {str(obj)[:80]!r}")
    cls = _TYPES[obj["type"]]
    field, kind = _FIELDS[cls]
    if not isinstance(obj.get(field), kind) or set(obj) != {"type", field}:
        raise ChannelError(f"malformed {obj['type']} message {str(obj)[:80]!r}")
    return cls(obj[field])


def send(sock: socket.socket, message: Message) -> None:
    sock.send(encode(message))


def receive(sock: socket.socket) -> Message | None:
    """The next message; None when the other end has closed."""
    data = sock.recv(MAX_MESSAGE)
    return decode(data) if data else None
