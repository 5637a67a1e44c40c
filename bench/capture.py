"""What capture costs the reader, and how fast each dump form decodes.

Part 1: the cost, on the event loop, of handing a read to a capture
(``CaptureWriter.data``), while its thread writes to a real file in a temporary
folder: 200,000 reads of 64 bytes, as a serial port at high rate delivers them.
Part 2: ``tgw decode``'s path (``open_dump`` + ``decode_dump``) on the same 100,000
frames as a raw dump, a capture (one record per 64-byte read) and ``xxd`` hex text: the
time (best of 3), then the peak of memory allocated (``tracemalloc``, one more run).

Run: ``python bench/capture.py``. It prints measured figures; nothing is asserted.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import tracemalloc
from pathlib import Path

from gateway.config import CaptureConfig
from gateway.dumps import decode_dump, open_dump
from gateway.runtime.capture import CaptureWriter
from gateway.runtime.metrics import GatewayMetrics
from protocol.capture import CaptureHeader, RecordKind, file_header, record
from protocol.decoder import StreamDecoder
from protocol.encoder import FrameEncoder
from protocol.schema import load_schema

READS = 200_000
READ_SIZE = 64
FRAMES = 100_000


def stream() -> bytes:
    encoder = FrameEncoder(load_schema())
    frame = encoder.encode(
        "environment", {"temperature": 21.5, "humidity": 40.0, "pressure": 1013.2}
    )
    return frame * FRAMES


def xxd(data: bytes) -> str:
    lines = []
    for start in range(0, len(data), 16):
        row = data[start : start + 16]
        groups = " ".join(row[i : i + 2].hex() for i in range(0, len(row), 2))
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in row)
        lines.append(f"{start:08x}: {groups:<39}  {text}")
    return "\n".join(lines) + "\n"


async def capture_cost(folder: Path) -> None:
    config = CaptureConfig(directory=str(folder), max_file_size=1 << 30)
    header = CaptureHeader(source="bench", profile="default", catalog="default")
    metrics = GatewayMetrics()
    writer = CaptureWriter(config, header, metrics)
    writer.start()
    chunk = os.urandom(READ_SIZE)
    started = time.perf_counter()
    for index in range(READS):
        writer.data(chunk)
        if index % 64 == 0:
            await asyncio.sleep(0)  # the loop turns, as between reads
    handed = time.perf_counter() - started
    await writer.close()
    total = time.perf_counter() - started
    lost = metrics.registry.get_sample_value(
        "tgw_capture_lost_bytes_total", {"device": "bench", "reason": "buffer full"}
    )
    written = sum(path.stat().st_size for path in folder.iterdir())
    print("Part 1: handing reads to a capture (event loop side), a thread writing the file")
    print(
        f"  {READS:,} reads of {READ_SIZE} bytes handed over in {handed:.3f} s: "
        f"{handed / READS * 1e6:.2f} us per read on the loop"
    )
    print(
        f"  all on disk after {total:.3f} s: {written / total / 1e6:.1f} MB/s written, "
        f"{int(lost or 0):,} bytes lost to a full buffer"
    )


def decode_forms(folder: Path) -> None:
    data = stream()
    chunks = [data[i : i + READ_SIZE] for i in range(0, len(data), READ_SIZE)]
    header = CaptureHeader(source="bench", profile="default", catalog="default")
    forms = {
        "raw": data,
        "capture": file_header(header)
        + b"".join(record(RecordKind.DATA, i, chunk) for i, chunk in enumerate(chunks)),
        "hex (xxd)": xxd(data).encode(),
    }
    print(f"\nPart 2: decoding {FRAMES:,} frames ({len(data):,} bytes) in each form")
    baseline = None
    for name, content in forms.items():
        path = folder / name.split()[0]
        path.write_bytes(content)
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            decode(path)
            best = min(best, time.perf_counter() - started)
        tracemalloc.start()
        try:
            decode(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        baseline = baseline or best
        print(
            f"  {name:<10} {len(content):>12,} bytes  {best:6.3f} s  "
            f"{FRAMES / best:>10,.0f} frames/s  ({best / baseline:.2f}x raw's time)  "
            f"peak {peak / 1e6:6.1f} MB"
        )


def decode(path: Path) -> None:
    """Decode the dump at ``path`` as ``tgw decode`` does, dropping the records."""
    with open_dump(str(path)) as dump:
        decoder = StreamDecoder(load_schema())
        for _records in decode_dump(dump, decoder):
            pass
    assert decoder.statistics().frames == FRAMES


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(capture_cost(Path(folder) / "captures"))
        decode_forms(Path(folder))


if __name__ == "__main__":
    main()
