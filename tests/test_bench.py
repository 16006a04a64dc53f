"""`arbiter bench` accounting is exact: known packets in, known packets out, latency measured.

Two synthetic participants publish for a fixed time through a real server, stop, and every
packet each one sent must be counted by the other, per SSRC, with no sequence gap, and a
latency sample for every `LATENCY_SAMPLE`-th packet. Against Arbiter (real ICE, DTLS, SRTP
through `arbiter serve` in its own process) and against the plain relay.
"""

from __future__ import annotations

import pytest
import trio

from arbiter.bench import engine, payloads, runner
from arbiter.bench.arbiter_target import ArbiterTarget
from arbiter.bench.participant import Target
from arbiter.bench.relay_target import RelayTarget
from arbiter.sfu.dtls import Certificate

pytestmark = pytest.mark.bench


async def _exchange(target: Target, seconds: float) -> None:
    recording = payloads.load()
    certificate = Certificate.generate()
    async with trio.open_nursery() as nursery:
        await nursery.start(target.run)
        room = await target.new_room()
        a = target.participant(room, 1, certificate)
        b = target.participant(room, 2, certificate)
        with trio.fail_after(20):
            for p in (a, b):
                p.nursery = nursery
                await p.join(nursery, publish=True)
            await a.subscribe_to(b)
            await b.subscribe_to(a)
            await a.wait_subscribed({b.peer_id})
            await b.wait_subscribed({a.peer_id})
        until = trio.current_time() + seconds
        async with trio.open_nursery() as senders:
            for p in (a, b):
                assert p.publisher_leg is not None
                senders.start_soon(
                    p.publisher_leg.publish, recording, p.number, p.audio_ssrc, p.video_ssrc, until
                )
        await trio.sleep(0.5)  # the last packets drain
        for sender, receiver in ((a, b), (b, a)):
            assert sender.publisher_leg is not None
            sent = sender.publisher_leg.sent_by_ssrc
            streams = receiver.subscriptions[sender.peer_id].streams
            received = {ssrc: s.packets for ssrc, s in streams.items()}
            assert received == sent
            assert {ssrc: s.expected for ssrc, s in streams.items()} == sent  # no gaps
            assert sent[sender.audio_ssrc] == pytest.approx(seconds * 50, abs=2)
            video = streams[sender.video_ssrc]
            assert video.bytes > 0
            total = sum(sent.values())
            samples = sum(len(s.latencies_ns) for s in streams.values())
            assert samples == total // engine.LATENCY_SAMPLE
            assert all(0 < ns < 1_000_000_000 for s in streams.values() for ns in s.latencies_ns)
        assert a.errors == [] and b.errors == []
        for p in (a, b):
            await p.leave()
        nursery.cancel_scope.cancel()


async def test_accounting_through_arbiter() -> None:
    await _exchange(ArbiterTarget(), 1.0)


async def test_accounting_through_relay() -> None:
    await _exchange(RelayTarget(), 1.0)


async def test_meeting_scenario_figures() -> None:
    target = ArbiterTarget()
    async with trio.open_nursery() as nursery:
        await nursery.start(target.run)
        result = await runner.run_scenario(target, runner.meeting(3), 1.0, payloads.load())
        nursery.cancel_scope.cancel()
    assert result["streams"] == result["expected_streams"] == 12
    assert result["loss"] == 0.0
    assert result["errors"] == []
    assert 0 < result["latency_ms_p50"] <= result["latency_ms_p99"]
    assert result["join_s_median"] is not None and result["forwarded_pps"] > 1000
