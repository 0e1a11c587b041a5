"""Compressed answers, as a ClickHouse server gives them: with the setting
``enable_http_compression=1`` and an ``Accept-Encoding`` the server can honour, the answer is
compressed as it streams, in the server's order of preference among what the client accepts
(ClickHouse's ``chooseHTTPCompressionMethod``: zstd, br, lz4, snappy, gzip, deflate, xz, bz2;
tokens exact and case-insensitive, ``q=0`` refuses one, ``*`` stands for any other). Brotli
and Snappy have no library here and are never chosen; the rest are.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import lz4.frame
import zstandard

# ClickHouse's http_zlib_compression_level (its default), for the encodings that take a level.
LEVEL = 3
PREFERENCE = ("zstd", "br", "lz4", "snappy", "gzip", "deflate", "xz", "bz2")


@dataclass
class Encoder:
    """One answer's compressor: ``compress`` each piece as it goes, ``finish`` at the end."""

    name: str
    compress: Callable[[bytes], bytes]
    finish: Callable[[], bytes]


def _zlib(name: str, wbits: int) -> Encoder:
    state = zlib.compressobj(LEVEL, zlib.DEFLATED, wbits)
    return Encoder(name, state.compress, state.flush)


def _zstd() -> Encoder:
    state = zstandard.ZstdCompressor(level=LEVEL).compressobj()
    return Encoder("zstd", state.compress, state.flush)


def _lz4() -> Encoder:
    state = lz4.frame.LZ4FrameCompressor()
    started = False

    def compress(data: bytes) -> bytes:
        nonlocal started
        head = b"" if started else state.begin()
        started = True
        return head + bytes(state.compress(data))

    def finish() -> bytes:
        return (b"" if started else bytes(state.begin())) + bytes(state.flush())

    return Encoder("lz4", compress, finish)


def _xz() -> Encoder:
    state = lzma.LZMACompressor()
    return Encoder("xz", state.compress, state.flush)


def _bz2() -> Encoder:
    state = bz2.BZ2Compressor()
    return Encoder("bz2", state.compress, state.flush)


_MAKERS: dict[str, Callable[[], Encoder]] = {
    "zstd": _zstd,
    "lz4": _lz4,
    "gzip": lambda: _zlib("gzip", 16 + zlib.MAX_WBITS),  # gzip's header and trailer
    "deflate": lambda: _zlib("deflate", zlib.MAX_WBITS),  # zlib's, as HTTP's deflate is
    "xz": _xz,
    "bz2": _bz2,
}


def choose(accept_encoding: str) -> str | None:
    """The encoding for an ``Accept-Encoding`` list, or None (answer as it is)."""
    accepted: dict[str, bool] = {}
    for item in accept_encoding.split(","):
        token, *parameters = (part.strip() for part in item.split(";"))
        if not token:
            continue
        quality = 1.0
        for parameter in parameters:
            key, _, value = parameter.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        accepted[token.lower()] = quality > 0
    for name in PREFERENCE:
        if name in _MAKERS and accepted.get(name, accepted.get("*", False)):
            return name
    return None


def negotiate(enabled: bool, accept_encoding: str) -> Encoder | None:
    """An encoder when the client asked for compression and accepts one we have."""
    if not enabled or not accept_encoding:
        return None
    name = choose(accept_encoding)
    return _MAKERS[name]() if name else None
