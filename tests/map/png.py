"""A small pure-Python PNG reader (8-bit RGB/RGBA/grey, non-interlaced: what Chromium writes), enough
to tell a rendered page from a blank one without an imaging dependency."""

from __future__ import annotations

import struct
import zlib
from collections import Counter
from pathlib import Path

CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def decode(data: bytes) -> tuple[int, int, int, list[bytes]]:
    """(width, height, bytes per pixel, rows of raw pixel bytes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, bytearray()
    width = height = bpp = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            assert depth == 8 and interlace == 0 and ctype in CHANNELS, (depth, ctype, interlace)
            bpp = CHANNELS[ctype]
        elif kind == b"IDAT":
            idat += chunk
        elif kind == b"IEND":
            break
    raw = zlib.decompress(bytes(idat))
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        ftype, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if ftype == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif ftype == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev, strict=True))
        elif ftype == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif ftype == 4:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                up_left = prev[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + _paeth(left, prev[i], up_left)) & 0xFF
        else:
            assert ftype == 0, f"bad filter {ftype}"
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


def colour_stats(path: Path, step: int = 3) -> tuple[int, float]:
    """(distinct colours, share of the most common colour), sampling every ``step``-th pixel and row."""
    _, _, bpp, rows = decode(path.read_bytes())
    counts: Counter[bytes] = Counter()
    for row in rows[::step]:
        for x in range(0, len(row), bpp * step):
            counts[row[x : x + min(bpp, 3)]] += 1
    total = sum(counts.values())
    return len(counts), counts.most_common(1)[0][1] / total
