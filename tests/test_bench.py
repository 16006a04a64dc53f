"""`arbiter bench` accounting is exact: known packets in, known packets out, latency measured.

Two synthetic participants publish for a fixed time through a real server, stop, and every
packet each one sent must be counted by the other, per SSRC, with no sequence gap, and a
latency sample for every `LATENCY_SAMPLE`-th packet. Against Arbiter (real ICE, DTLS, SRTP
through `arbiter serve` in its own process) and against the plain relay.
"""

from __future__ import annotations

import httpx
import pytest
import trio

from arbiter.bench import cli, engine, feedback, payloads, report, runner
from arbiter.bench.arbiter_target import ArbiterTarget, workers_available
from arbiter.bench.participant import Target
from arbiter.bench.relay_target import RelayTarget
from arbiter.sfu import rtcp
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


def _metric(text: str, reason: str) -> float:
    for line in text.splitlines():
        if line.startswith("arbiter_media_datagrams_total{") and f'reason="{reason}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_subscriber_rtcp_is_sent_and_acted_on_by_the_sfu() -> None:
    """Receiver reports reach Arbiter (its rtcp_in counter rises) and the NACKs of a subscriber
    on a lossy link (every 7th packet dropped) are answered with retransmissions."""
    target = ArbiterTarget()
    recording = payloads.load()
    certificate = Certificate.generate()
    async with trio.open_nursery() as nursery:
        await nursery.start(target.run)
        room = await target.new_room()
        a = target.participant(room, 1, certificate)
        b = target.participant(room, 2, certificate)
        b.drop_one_in = 7
        with trio.fail_after(20):
            for p in (a, b):
                p.nursery = nursery
                await p.join(nursery, publish=p is a)
            await b.wait_subscribed({a.peer_id})
        async with httpx.AsyncClient(base_url=target.url) as http:
            before = (await http.get("/metrics")).text
            assert a.publisher_leg is not None
            await a.publisher_leg.publish(
                recording, 1, a.audio_ssrc, a.video_ssrc, trio.current_time() + 2.5
            )
            await trio.sleep(0.5)
            after = (await http.get("/metrics")).text
        leg = b.subscriptions[a.peer_id]
        counts = leg.rtcp_counts
        assert counts["rr"] >= 2 and counts["pli"] >= 1 and counts["nack"] > 0
        assert counts["twcc"] == 0 and leg.twcc_id is None  # Arbiter does not offer it
        assert _metric(after, "rtcp_in") - _metric(before, "rtcp_in") >= counts["rr"]
        # The SFU parsed the NACKs: it resent packets, so the subscriber saw fewer holes than
        # it dropped (every 7th arrival is gone, retransmissions included).
        video = leg.streams[a.video_ssrc]
        dropped = video.expected - video.packets
        assert video.packets > video.expected * (1 - 1 / 7) + 5, (video.packets, dropped)
        for p in (a, b):
            await p.leave()
        nursery.cancel_scope.cancel()


def test_transport_cc_feedback_round_trips_through_the_sfu_parser() -> None:
    arrivals = [(100, 10.000), (101, 10.001), (103, 10.0105), (104, 10.2)]
    packet = feedback.build_twcc(7, 9, 3, arrivals)
    assert packet is not None
    [pkt] = rtcp.iter_packets_untrusted(packet)
    parsed = rtcp.parse_twcc_untrusted(pkt)
    assert (parsed.base_seq, parsed.packet_status_count, parsed.fb_pkt_count) == (100, 5, 3)
    statuses = [(seq, status) for seq, status, _ in parsed.packets]
    # 189.5 ms does not fit a one-byte delta: a large (two-byte, symbol 2) one.
    assert statuses == [(100, 1), (101, 1), (102, 0), (103, 1), (104, 2)]
    deltas = [d for _, _, d in parsed.packets if d is not None]
    assert deltas[1:] == [1000, 9500, 189500]  # µs between arrivals, in 250 µs units


def test_report_takes_median_min_max_of_interleaved_runs() -> None:
    runs = [
        {"scenario": "meeting-6", "target": t, "repeat": i, "packets_per_cpu_s": v,
         "loss": 0.0, "generator_saturated": i == 2, "latency_ms_p99": 1.0 + i}
        for i, (t, v) in enumerate([("arbiter", 100), ("janus", 50), ("arbiter", 300),
                                    ("janus", 70), ("arbiter", 200), ("janus", 60)])
    ]  # fmt: skip
    runs.append({"scenario": "meeting-6", "target": "janus", "repeat": 3, "error": "x"})
    rows = {r["target"]: r for r in report.aggregate(runs)}
    a, j = rows["arbiter"], rows["janus"]
    assert (a["packets_per_cpu_s"], a["packets_per_cpu_s_min"], a["packets_per_cpu_s_max"]) \
        == (200, 100, 300)
    assert (j["packets_per_cpu_s"], j["runs"], j["failed"]) == (60, 3, 1)
    assert a["generator_saturated"] is True  # a flag raised in any run is kept
    text = report.table(list(rows.values()))
    assert "200 (100–300)" in text and "60 (50–70)" in text
    assert report.ratios(list(rows.values())) == [
        "- meeting-6: arbiter/janus pkt per CPU-s 3.33x, latency p99 0.75x"
    ]


def test_two_core_run_is_labelled_by_what_the_build_offers() -> None:
    targets, labels = cli.two_core_targets(["arbiter", "janus"])
    arbiter, janus = targets
    assert janus.event_loops == 2 and janus.cpu is None
    if workers_available():
        assert arbiter.workers == 2 and "workers.local = 2" in labels["arbiter-2core"]["server"]
    else:
        assert arbiter.workers == 0
        assert "workers not available in this build" in labels["arbiter-2core"]["server"]


def test_ramp_says_when_the_generator_ended_it() -> None:
    row = {"scenario": "m", "target": "t", "runs": 3}
    held = {**row, "participants": 12, "loss": 0.0}
    saturated = {**row, "participants": 20, "loss": 0.03, "generator_saturated": True}
    lost = {**row, "participants": 20, "loss": 0.2}
    assert report.largest_meeting([held, saturated]) == "≥ 12 (load generator saturated)"
    assert report.largest_meeting([held, lost]) == "12"
    assert report.largest_meeting([lost]) == "none held"
