"""A directory between engine hosts (a backup, a stopped service's data): what the source sends
arrives whole, and a tar that reaches outside its directory (``..``, an absolute path, a link
out) is refused with nothing of it left behind."""

from __future__ import annotations

import asyncio
import io
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from keyhouse.engine import protocol
from keyhouse.hosts import transfer


async def _chunks(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _tar(*members: tarfile.TarInfo, content: bytes = b"x") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for member in members:
            if member.isfile():
                member.size = len(content)
                tar.addfile(member, io.BytesIO(content))
            else:
                tar.addfile(member)
    return out.getvalue()


def test_a_directory_arrives_whole(tmp_path: Path) -> None:
    source = tmp_path / "source"
    (source / "store" / "part").mkdir(parents=True)
    (source / "store" / "part" / "data.bin").write_bytes(bytes(range(256)) * 4000)
    (source / ".backup").write_text("<backup/>")

    async def run() -> None:
        reader = asyncio.StreamReader()

        class Sink:
            def write(self, data: bytes) -> None:
                reader.feed_data(data)

            async def drain(self) -> None:
                await asyncio.sleep(0)

        await transfer.send_tree(source, Sink())  # type: ignore[arg-type]
        reader.feed_eof()
        await transfer.receive_tree(transfer.frames(reader), tmp_path / "target")

    asyncio.run(run())
    target = tmp_path / "target"
    assert (target / "store" / "part" / "data.bin").read_bytes() == bytes(range(256)) * 4000
    assert (target / ".backup").read_text() == "<backup/>"


def test_a_tar_that_reaches_outside_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "in" / "target"
    target.parent.mkdir()
    with pytest.raises(tarfile.TarError):
        asyncio.run(transfer.receive_tree(_chunks(_tar(tarfile.TarInfo("../escaped"))), target))
    assert not (tmp_path / "in" / "escaped").exists()
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # (nothing half-received stays)


def test_an_absolute_path_lands_inside_the_directory(tmp_path: Path) -> None:
    absolute = f"{tmp_path}/outside/file"
    target = tmp_path / "target"
    asyncio.run(transfer.receive_tree(_chunks(_tar(tarfile.TarInfo(absolute))), target))
    assert not (tmp_path / "outside").exists()
    assert (target / absolute.lstrip("/")).read_bytes() == b"x"


def test_a_link_out_of_the_directory_is_refused(tmp_path: Path) -> None:
    link = tarfile.TarInfo("out")
    link.type, link.linkname = tarfile.SYMTYPE, str(tmp_path)
    through = tarfile.TarInfo("out/owned")
    target = tmp_path / "in" / "target"
    target.parent.mkdir()
    with pytest.raises(tarfile.TarError):
        asyncio.run(transfer.receive_tree(_chunks(_tar(link, through)), target))
    assert not (tmp_path / "owned").exists()
    assert not target.exists()


def test_frames_end_at_end_and_refuse_anything_else() -> None:
    async def read(data: bytes) -> list[bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return [chunk async for chunk in transfer.frames(reader)]

    framed = protocol.frame(protocol.DATA, b"ab") + protocol.frame(protocol.END)
    assert asyncio.run(read(framed)) == [b"ab"]
    with pytest.raises(ValueError, match="unexpected frame"):
        asyncio.run(read(protocol.frame(protocol.ERROR, b"{}")))
