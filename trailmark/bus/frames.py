"""Length-prefixed (key, value) frames: many records in one stored row or one Kafka record.

Per-record costs dominate at collector rates (a SQLite row, an aiokafka ``send`` and its future, a
consumer record object), while the records of one batch are written and read as a unit anyway.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from trailmark.bus.base import BusError

_FRAME = struct.Struct("<II")


class FramesError(BusError, ValueError):
    """A blob that is not a whole sequence of frames (truncated, or not frames at all)."""


def encode_frames(records: Sequence[tuple[bytes, bytes]]) -> bytes:
    parts: list[bytes] = []
    pack = _FRAME.pack
    for key, value in records:
        parts += (pack(len(key), len(value)), key, value)
    return b"".join(parts)


def decode_frames(blob: bytes) -> list[tuple[bytes, bytes]]:
    """The records of ``blob``; raises FramesError unless it is exactly a sequence of frames."""
    out = []
    pos, end, unpack = 0, len(blob), _FRAME.unpack_from
    while pos < end:
        if pos + 8 > end:
            raise FramesError(f"truncated frame header at byte {pos} of {end}")
        klen, vlen = unpack(blob, pos)
        k = pos + 8
        v = k + klen
        stop = v + vlen
        if stop > end:
            raise FramesError(f"frame at byte {pos} runs past the end ({stop} > {end})")
        out.append((blob[k:v], blob[v:stop]))
        pos = stop
    return out
