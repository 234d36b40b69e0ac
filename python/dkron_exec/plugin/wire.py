"""The plugin protocol's constants and frames (docs/PROTOCOL.md), for Python. ``serve()`` reads and
writes frames with ``_core.PluginChannel``; ``encode``/``read_frame`` are the same frames in Python
(for tests and hand-written hosts). Standard library plus orjson.
"""

from __future__ import annotations

import struct
from typing import Any, BinaryIO

import orjson

COOKIE_KEY = "DKRON_PLUGIN_MAGIC_COOKIE"
COOKIE_VALUE = "b29a76488b6f3ca7955c5f769b50641f0fcd88748d8cedecda313d516320ca19"
PROTOCOL_VERSION = 1
FD_ENV = "DKRON_EXEC_PLUGIN_FD"
VERSIONS_ENV = "DKRON_EXEC_PROTOCOL_VERSIONS"
MAX_FRAME_ENV = "DKRON_EXEC_MAX_FRAME"
MAX_FRAME = 64 << 20

_PREFIX = struct.Struct(">II")


class FrameError(Exception):
    """The peer sent something that is not a frame of this protocol."""


def encode(header: dict[str, Any], body: bytes = b"", max_frame: int = MAX_FRAME) -> tuple[bytes, bytes]:
    """The frame as (prefix + header, body): two buffers, so a large body is never copied."""
    head = orjson.dumps(header)
    length = 4 + len(head) + len(body)
    if length > max_frame:
        raise FrameError(f"frame of {length} bytes exceeds the maximum of {max_frame}")
    return _PREFIX.pack(length, len(head)) + head, body


def read_frame(stream: BinaryIO, max_frame: int = MAX_FRAME) -> tuple[dict[str, Any], bytes] | None:
    """The next (header, body), or None at a clean end of stream."""
    prefix = stream.read(4)
    if not prefix:
        return None
    if len(prefix) < 4:
        raise FrameError("the channel closed in the middle of a frame")
    (length,) = struct.unpack(">I", prefix)
    if length > max_frame:
        raise FrameError(f"frame of {length} bytes exceeds the maximum of {max_frame}")
    data = stream.read(length)
    if len(data) < length:
        raise FrameError("the channel closed in the middle of a frame")
    if length < 4:
        raise FrameError("frame without a header length")
    (hlen,) = struct.unpack(">I", data[:4])
    if hlen > length - 4:
        raise FrameError("header length exceeds the frame")
    try:
        header = orjson.loads(data[4 : 4 + hlen])
    except orjson.JSONDecodeError as exc:
        raise FrameError(f"the header is not JSON: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise FrameError('the header is not a JSON object with a string "type"')
    return header, data[4 + hlen :]
