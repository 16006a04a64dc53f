"""Dominant speaker detection (arbiter/sfu/speaker.py) with synthetic RFC 6464 levels."""

from __future__ import annotations

import random

from arbiter.sfu.rtp import build_rtp
from arbiter.sfu.speaker import HOLD, DominantSpeaker, audio_level

SILENT = 127


def feed(detector: DominantSpeaker, levels: dict[str, object], start: float, seconds: float,
         changes: list[tuple[float, str]]) -> float:
    """Every publisher sends one level per 20 ms packet; `levels[p]` is a level or a callable."""
    now = start
    while now < start + seconds:
        for publisher, level in levels.items():
            value = level() if callable(level) else level
            change = detector.update(publisher, value, now)
            if change is not None:
                changes.append((now, change))
        now += 0.02
    return now


def test_first_speaker_after_sustained_speech_not_during_silence():
    d = DominantSpeaker()
    changes: list[tuple[float, str]] = []
    now = feed(d, {"a": SILENT, "b": SILENT}, 0.0, 5.0, changes)
    assert changes == []  # silence elects nobody
    now = feed(d, {"a": 40, "b": SILENT}, now, 3.0, changes)
    assert [c for _, c in changes] == ["a"]
    assert 5.0 + HOLD <= changes[0][0] < 5.0 + HOLD + 0.6


def test_silence_never_switches_away():
    d = DominantSpeaker()
    changes: list[tuple[float, str]] = []
    now = feed(d, {"a": 40, "b": SILENT}, 0.0, 3.0, changes)
    now = feed(d, {"a": SILENT, "b": SILENT}, now, 10.0, changes)
    assert [c for _, c in changes] == ["a"]
    assert d.speaker == "a"


def test_no_flapping_between_similar_speakers():
    rng = random.Random(7)
    d = DominantSpeaker()
    changes: list[tuple[float, str]] = []
    now = feed(d, {"a": 40, "b": SILENT}, 0.0, 2.0, changes)
    # Both talk at about the same level (+-5 dB jitter per packet) for a minute.
    feed(d, {"a": lambda: 40 + rng.randint(-5, 5), "b": lambda: 40 + rng.randint(-5, 5)},
         now, 60.0, changes)
    assert [c for _, c in changes] == ["a"]


def test_switch_after_sustained_louder_speech_not_a_short_burst():
    d = DominantSpeaker()
    changes: list[tuple[float, str]] = []
    now = feed(d, {"a": 50, "b": SILENT}, 0.0, 2.0, changes)
    now = feed(d, {"a": 50, "b": 30}, now, 0.5, changes)  # a short louder burst: no switch
    now = feed(d, {"a": 50, "b": SILENT}, now, 2.0, changes)
    assert [c for _, c in changes] == ["a"]
    start = now
    feed(d, {"a": 50, "b": 30}, now, 3.0, changes)  # sustained: b takes over once
    assert [c for _, c in changes] == ["a", "b"]
    assert start + HOLD <= changes[1][0] < start + HOLD + 1.0  # smoothing + hold


def test_switch_when_the_speaker_went_quiet_and_another_speaks():
    d = DominantSpeaker()
    changes: list[tuple[float, str]] = []
    now = feed(d, {"a": 40, "b": SILENT}, 0.0, 2.0, changes)
    feed(d, {"a": SILENT, "b": 45}, now, 3.0, changes)
    assert [c for _, c in changes] == ["a", "b"]


def test_a_publisher_that_stops_sending_is_silent_and_removal_forgets():
    d = DominantSpeaker()
    changes: list[tuple[float, str]] = []
    now = feed(d, {"a": 30, "b": SILENT}, 0.0, 2.0, changes)
    feed(d, {"b": 50}, now, 3.0, changes)  # a's packets stopped (muted): b speaks
    assert [c for _, c in changes] == ["a", "b"]
    d.remove("b")
    assert d.speaker is None and "b" not in d.levels


def test_audio_level_parses_one_and_two_byte_extensions():
    one = build_rtp(111, 1, 960, 0x1234, b"opus", extensions={1: b"\x05", 3: bytes([0x80 | 42])})
    assert audio_level(one, 3) == 42  # the V bit is masked off
    assert audio_level(one, 2) is None
    assert audio_level(build_rtp(111, 1, 960, 0x1234, b"opus"), 3) is None
    # Two-byte form (RFC 8285 4.3): profile 0x1000, id 20, length 1, value, padding.
    header = bytes([0x90, 111, 0, 1, 0, 0, 3, 192, 0, 0, 0x12, 0x34])
    two = header + b"\x10\x00\x00\x01" + bytes([20, 1, 0x80 | 77, 0]) + b"opus"
    assert audio_level(two, 20) == 77
    for cut in range(len(two)):  # truncated packets: None, never an exception
        assert audio_level(two[:cut], 20) in (None, 77)
