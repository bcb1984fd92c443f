"""Socket helpers for the hot path.

Contract: ``send_frames(sock, frames)`` sends a multipart message without
blocking and raises ``zmq.Again`` (queue full) or ``zmq.ZMQError``
(unroutable peer) like ``send_multipart``. It passes plain int flags:
pyzmq's ``send_multipart`` combines IntFlag enums per frame, which costs more
than the send itself at tens of thousands of messages a second.
"""

from __future__ import annotations

import zmq

_MORE = int(zmq.SNDMORE) | int(zmq.NOBLOCK)
_LAST = int(zmq.NOBLOCK)


def send_frames(sock: zmq.Socket, frames: list[bytes]) -> None:
    send = sock.send
    for frame in frames[:-1]:
        send(frame, _MORE, copy=True)
    send(frames[-1], _LAST, copy=True)


_RCVMORE = int(zmq.RCVMORE)


def recv_frames(sock: zmq.Socket) -> list[bytes]:
    """Read one multipart message now; ``zmq.Again`` if none is waiting."""
    recv, more = sock.recv, sock.get
    frames = [recv(_LAST)]
    while more(_RCVMORE):
        frames.append(recv(_LAST))
    return frames
