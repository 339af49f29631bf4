"""The replay server over real recordings: each line goes out verbatim as one ``data:``, and
where a raw SSE capture of a recording sits beside it (``sse/NAME.sse`` for ``NAME.ndjson``) the
served frames carry the same data lines as the capture.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from infra.replay.server import ReplayServer
from tests.recordings import lines


async def served_frames(path: Path) -> list[list[bytes]]:
    """The ``data:`` lines of each frame the replay server sends for the recording at ``path``."""
    server = ReplayServer.from_ndjson(path)
    url = await server.start()
    try:
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
            assert response.status == 200
            return data_lines(await response.read())
    finally:
        await server.stop()


def data_lines(wire: bytes) -> list[list[bytes]]:
    """SSE text -> the ``data:`` lines (one leading space removed) of each frame that has any."""
    frames, current = [], []
    for line in wire.replace(b"\r\n", b"\n").split(b"\n"):
        if not line:
            if current:
                frames.append(current)
            current = []
        elif line.startswith(b"data:"):
            current.append(line.removeprefix(b"data:").removeprefix(b" "))
    if current:
        frames.append(current)
    return frames


def capture_of(path: Path) -> Path | None:
    capture = path.parent / "sse" / f"{path.stem}.sse"
    return capture if capture.is_file() else None


async def test_every_recorded_line_is_served_verbatim_as_one_data_line(
    recordings: list[Path],
) -> None:
    for path in recordings:
        recorded = lines(path)
        served = await served_frames(path)
        assert len(served) == len(recorded), path.name
        for number, (frame, line) in enumerate(zip(served, recorded, strict=True), start=1):
            assert frame == [line], f"{path.name}, line {number}"


async def test_served_data_lines_equal_those_of_a_raw_capture(recordings: list[Path]) -> None:
    captured = {path: capture for path in recordings if (capture := capture_of(path))}
    if not captured:
        pytest.skip("no raw capture (sse/NAME.sse for a NAME.ndjson) beside the recordings")
    for path, capture in captured.items():
        # The wire differs from the capture only in the ids (positions, not timestamps).
        assert await served_frames(path) == data_lines(capture.read_bytes()), path.name
