"""Recorded media for synthetic publishers: real VP8 and Opus RTP payloads, no encoding at run time.

The benchmark publishes what a browser would: Opus at 50 packets/s and VP8 around 1.5 Mbit/s
with periodic keyframes. The payloads were produced once by real encoders (aiortc's libvpx and
libopus wrappers, packetized as RTP payloads with their VP8 payload descriptors) and are kept in
`tests/data/media.bin`; `record()` regenerates the file when it is missing.

File format (all big-endian): magic b"ARBM", then records of
`kind (1 byte: 0 audio, 1 video) | marker (1) | timestamp delta (4) | frame index (4) |
length (2) | payload`. The frame index groups a video frame's packets; audio packets are one per
20 ms frame.
"""

from __future__ import annotations

import fractions
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"ARBM"
_RECORD = struct.Struct("!BBIIH")
AUDIO, VIDEO = 0, 1
DATA_FILE = Path(__file__).resolve().parents[2] / "tests" / "data" / "media.bin"

VIDEO_FPS = 30
VIDEO_SECONDS = 4
VIDEO_SIZE = (640, 360)
VIDEO_BITRATE = 1_500_000  # aiortc's encoder maximum; a typical 360p call bitrate
KEYFRAME_EVERY = 2 * VIDEO_FPS  # frames: browsers send one on PLI; 2 s keeps caches honest
AUDIO_FRAME_MS = 20


@dataclass(frozen=True, slots=True)
class Packet:
    kind: int
    marker: bool
    timestamp_delta: int  # RTP clock ticks since the previous packet of the same kind
    frame: int
    payload: bytes


@dataclass(frozen=True)
class Recording:
    audio: list[Packet]
    video: list[list[Packet]]  # per frame, its packets in order

    @property
    def video_bitrate(self) -> float:
        total = sum(len(p.payload) + 12 for frame in self.video for p in frame)
        return total * 8 * VIDEO_FPS / len(self.video)


def load(path: Path = DATA_FILE) -> Recording:
    if not path.exists():
        record(path)
    data = path.read_bytes()
    if data[:4] != MAGIC:
        raise ValueError(f"{path}: not a media recording")
    offset = 4
    audio: list[Packet] = []
    video: dict[int, list[Packet]] = {}
    while offset < len(data):
        kind, marker, delta, frame, length = _RECORD.unpack_from(data, offset)
        offset += _RECORD.size
        packet = Packet(kind, bool(marker), delta, frame, data[offset : offset + length])
        offset += length
        if kind == AUDIO:
            audio.append(packet)
        else:
            video.setdefault(frame, []).append(packet)
    return Recording(audio, [video[i] for i in sorted(video)])


def record(path: Path = DATA_FILE) -> None:
    """Encode a moving test pattern with VP8 and a tone with Opus; write the payloads."""
    import av
    from aiortc.codecs.opus import OpusEncoder
    from aiortc.codecs.vpx import Vp8Encoder

    out = bytearray(MAGIC)
    width, height = VIDEO_SIZE
    encoder = Vp8Encoder()
    encoder.target_bitrate = VIDEO_BITRATE
    rng = os.urandom
    previous = None
    for index in range(VIDEO_FPS * VIDEO_SECONDS):
        frame = av.VideoFrame(width, height, "yuv420p")
        # A moving gradient with a noisy moving block: enough detail that the rate controller
        # spends about the whole budget, as a real camera does, without exceeding it.
        luma = bytearray(width * height)
        for y in range(height):
            shade = (y + index * 4) % 256
            luma[y * width : (y + 1) * width] = bytes([shade]) * width
        block = 96
        x0 = (index * 8) % (width - block)
        for y in range(block):
            row = (y + 40) * width + x0
            luma[row : row + block] = rng(block)
        frame.planes[0].update(bytes(luma))
        frame.planes[1].update(bytes([128]) * (width * height // 4))
        frame.planes[2].update(bytes([128]) * (width * height // 4))
        frame.pts = index * 3000
        frame.time_base = fractions.Fraction(1, 90000)
        payloads, timestamp = encoder.encode(frame, force_keyframe=index % KEYFRAME_EVERY == 0)
        delta = 0 if previous is None else timestamp - previous
        previous = timestamp
        for i, payload in enumerate(payloads):
            last = i == len(payloads) - 1
            out += _RECORD.pack(VIDEO, last, delta if i == 0 else 0, index, len(payload))
            out += payload
    opus = OpusEncoder()
    samples = 48000 * AUDIO_FRAME_MS // 1000
    for index in range(1000 * VIDEO_SECONDS // AUDIO_FRAME_MS):
        frame = av.AudioFrame(format="s16", layout="stereo", samples=samples)
        pcm = bytearray()
        for n in range(samples):
            value = int(8000 * math.sin(2 * math.pi * 440 * (index * samples + n) / 48000))
            pcm += struct.pack("<hh", value, value)
        frame.planes[0].update(bytes(pcm))
        frame.sample_rate = 48000
        frame.pts = index * samples
        frame.time_base = fractions.Fraction(1, 48000)
        payloads, _ = opus.encode(frame)
        for payload in payloads:
            out += _RECORD.pack(AUDIO, 0, 960 if index else 0, index, len(payload)) + payload
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(out))


if __name__ == "__main__":
    record()
    rec = load()
    print(
        f"{len(rec.video)} video frames, {sum(len(f) for f in rec.video)} packets, "
        f"{rec.video_bitrate / 1e6:.2f} Mbit/s; {len(rec.audio)} audio packets"
    )
