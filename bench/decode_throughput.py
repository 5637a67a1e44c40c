"""Decoder throughput: our stream decoder against pymavlink's parser, in the same run.

    python bench/decode_throughput.py [--frames N] [--repeat R]

Ours: N frames of the default profile, each a 16-byte payload of 7 integer fields
(bench/catalog.toml), fed in 4 KiB chunks. Peer: N MAVLink v2 ATTITUDE messages fed
to ``MAVLink.parse_buffer`` in 4 KiB chunks. Both decode every field. Also shown:
construct alone parsing whole frames (the reference the fast path is derived from).
Prints the best of R runs for each, and the ratio.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

from protocol.config import load_catalog, load_profile
from protocol.decoder import StreamDecoder
from protocol.encoder import FrameEncoder
from protocol.schema import Schema, compile_schema

CHUNK = 4096
CATALOG = Path(__file__).with_name("catalog.toml")


def chunked(data: bytes) -> list[bytes]:
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


def our_stream(schema: Schema, count: int) -> bytes:
    encoder = FrameEncoder(schema)
    rng = random.Random(1)
    return b"".join(
        encoder.encode(
            "sample",
            {
                "timestamp": index,
                "temperature": rng.randint(-4000, 8500),
                "humidity": rng.randint(0, 10000),
                "accel_x": rng.randint(-2000, 2000),
                "accel_y": rng.randint(-2000, 2000),
                "accel_z": rng.randint(-2000, 2000),
                "battery": rng.randint(3000, 4200),
            },
        )
        for index in range(count)
    )


def run_ours(schema: Schema, chunks: list[bytes]) -> int:
    decoder = StreamDecoder(schema)
    frames = 0
    for chunk in chunks:
        frames += len(decoder.feed(chunk))
    return frames


def mavlink_setup(count: int) -> tuple[Callable[[], object], list[bytes]]:
    os.environ["MAVLINK20"] = "1"
    from pymavlink.dialects.v20 import common as mavlink  # noqa: PLC0415

    class Sink:
        def write(self, data: bytes) -> None:
            pass

    def new_parser() -> object:
        return mavlink.MAVLink(Sink(), srcSystem=1, srcComponent=1)

    packer = new_parser()
    rng = random.Random(1)
    data = b"".join(
        mavlink.MAVLink_attitude_message(index, *(rng.uniform(-3.0, 3.0) for _ in range(6))).pack(
            packer
        )
        for index in range(count)
    )
    return new_parser, chunked(data)


def run_mavlink(new_parser: Callable[[], object], chunks: list[bytes]) -> int:
    parser = new_parser()
    messages = 0
    for chunk in chunks:
        parsed = parser.parse_buffer(chunk)  # type: ignore[attr-defined]
        if parsed:
            messages += len(parsed)
    return messages


def run_construct(schema: Schema, frames: list[bytes]) -> int:
    for frame in frames:
        schema.parse_frame_with_construct(frame)
    return len(frames)


def best_rate(function: Callable[[], int], expected: int, repeat: int) -> float:
    best = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        count = function()
        elapsed = time.perf_counter() - start
        if count != expected:
            raise SystemExit(f"decoded {count} frames, expected {expected}")
        best = max(best, count / elapsed)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    arguments = parser.parse_args()
    count = arguments.frames

    schema = compile_schema(load_profile(), load_catalog(CATALOG))
    ours = our_stream(schema, count)
    our_chunks = chunked(ours)
    new_parser, mavlink_chunks = mavlink_setup(count)
    frame_size = len(ours) // count
    construct_frames = [ours[i : i + frame_size] for i in range(0, frame_size * 10_000, frame_size)]

    ours_rate = best_rate(lambda: run_ours(schema, our_chunks), count, arguments.repeat)
    mavlink_rate = best_rate(
        lambda: run_mavlink(new_parser, mavlink_chunks), count, arguments.repeat
    )
    construct_rate = best_rate(
        lambda: run_construct(schema, construct_frames), len(construct_frames), 1
    )

    repeat = arguments.repeat
    print(f"frames per run        {count:>12,}   ({CHUNK}-byte chunks, best of {repeat} runs)")
    print(f"tgw StreamDecoder     {ours_rate:>12,.0f} frames/s  ({frame_size}-byte frames)")
    print(f"pymavlink parse_buffer{mavlink_rate:>12,.0f} frames/s  (MAVLink v2 ATTITUDE)")
    print(f"construct alone       {construct_rate:>12,.0f} frames/s  (whole frames, the reference)")
    print(f"ratio tgw / pymavlink {ours_rate / mavlink_rate:>12.2f}x  (target: >= 3x)")


if __name__ == "__main__":
    main()
