"""Length-prefixed framing for streams, sans-IO: bytes in, frames out.

A frame on the wire is a 4-byte big-endian length followed by that many bytes. Both transports
(``p2p.host`` over yamux streams, ``p2p.memory`` over memory channels) push the bytes they
receive through a ``FrameDecoder``, so partial reads, coalesced frames and oversized headers are
handled by one piece of code that the unit tests drive byte by byte.
"""

from __future__ import annotations

import struct

from p2p.abc import FrameTooLarge, P2PError

_HEADER = struct.Struct(">I")
HEADER_SIZE = _HEADER.size
MAX_FRAME_SIZE = 2**32 - 1  # what a 4-byte length can announce


def encode_frame(data: bytes) -> bytes:
    """Header plus payload, as one buffer so a single write never interleaves with another.

    Raises P2PError (our misuse, not the peer's) if ``data`` cannot be announced in 4 bytes.
    """
    if len(data) > MAX_FRAME_SIZE:
        raise P2PError(f"frame of {len(data)} bytes exceeds the 4-byte length prefix")
    return _HEADER.pack(len(data)) + data


class FrameDecoder:
    """Reassembles frames from arbitrary chunks.

    ``feed(chunk)`` appends received bytes; ``next_frame(max_size)`` returns one whole frame or
    None when more bytes are needed. The length is checked against ``max_size`` as soon as the
    header is complete, before the body is buffered, so a peer cannot make us hold a huge frame.
    After FrameTooLarge the byte stream is out of step: the caller must close the stream.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> None:
        """Append received bytes; ``b""`` is a no-op (EOF is the caller's business)."""
        self._buffer += chunk

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame (non-zero at EOF = truncated frame)."""
        return len(self._buffer)

    def next_frame(self, max_size: int) -> bytes | None:
        """One complete frame, or None if the buffer holds only part of one.

        Raises FrameTooLarge if the announced length exceeds ``max_size``.
        """
        if len(self._buffer) < HEADER_SIZE:
            return None
        (length,) = _HEADER.unpack_from(self._buffer)
        if length > max_size:
            raise FrameTooLarge(f"peer announced a {length}-byte frame, limit {max_size}")
        end = HEADER_SIZE + length
        if len(self._buffer) < end:
            return None
        frame = bytes(self._buffer[HEADER_SIZE:end])
        del self._buffer[:end]
        return frame
