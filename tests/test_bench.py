"""`arbiter bench` accounting is exact: known packets in, known packets out, latency measured.

Two synthetic participants publish for a fixed time through a real server, stop, and every
packet each one sent must be counted by the other, per SSRC, with no sequence gap, and a
latency sample for every `LATENCY_SAMPLE`-th packet. Against Arbiter (real ICE, DTLS, SRTP
through `arbiter serve` in its own process) and against the plain relay.
"""

from __future__ import annotations

import argparse
import functools

import httpx
import pytest
import trio

from arbiter.bench import cli, engine, feedback, payloads, report, runner, simulcast
from arbiter.bench.arbiter_target import ArbiterTarget, workers_available
from arbiter.bench.participant import Participant, Target
from arbiter.bench.relay_target import RelayTarget
from arbiter.sfu import rtcp, rtp, sdp, vp8
from arbiter.sfu.dtls import Certificate
from arbiter.testing import rtcp_reader

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
    parsed = rtcp_reader.parse_twcc_untrusted(pkt)
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
        == (200, 100, 300)  # fmt: skip
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


# -- issue 13: simulcast publishers and paused tiles --------------------------------------------


async def _call(
    target: ArbiterTarget, nursery: trio.Nursery, count: int, simulcast_on: bool
) -> list[Participant]:
    room = await target.new_room()
    certificate = Certificate.generate()
    people = [target.participant(room, n, certificate) for n in range(1, count + 1)]
    with trio.fail_after(20):
        for p in people:
            p.nursery = nursery
            p.simulcast = simulcast_on
            await p.join(nursery, publish=True)
        for p in people:
            await p.wait_subscribed({o.peer_id for o in people if o is not p})
    return people


async def _publish_all(people: list[Participant], seconds: float) -> None:
    recording = payloads.load()
    until = trio.current_time() + seconds
    async with trio.open_nursery() as senders:
        for p in people:
            assert p.publisher_leg is not None
            senders.start_soon(functools.partial(
                p.publisher_leg.publish, recording, p.number, p.audio_ssrc, p.video_ssrc, until,
                layers=p.video_layers(recording),
            ))  # fmt: skip
    await trio.sleep(0.5)  # the last packets drain


async def test_simulcast_subscribers_get_one_layer_on_the_sfus_ssrc() -> None:
    """Three simulcast publishers: every subscriber receives, per publisher, its audio and ONE
    video SSRC, the one the SFU's offer announced (never a layer's own), carrying packets of
    one layer only (the stamps say which) without a sequence gap; each publisher sends what
    the SFU's last `layers` frame asked for."""
    target = ArbiterTarget()
    async with trio.open_nursery() as nursery:
        await nursery.start(target.run)
        people = await _call(target, nursery, 3, simulcast_on=True)
        await trio.sleep(0.6)  # the SFU's first layer allocation (every 0.5 s)
        await _publish_all(people, 2.0)
        for sender in people:
            assert sender.publisher_leg is not None
            sent = sender.publisher_leg.sent_by_ssrc
            assert sender.layer_frames  # the SFU said which layers anyone receives
            assert sender.publisher_leg.active_rids == set(sender.layer_frames[-1][1])
            for receiver in people:
                if receiver is sender:
                    continue
                leg = receiver.subscriptions[sender.peer_id]
                [video_ssrc] = leg.offered["video"]
                assert set(leg.streams) == {sender.audio_ssrc, video_ssrc}
                assert video_ssrc not in sender.layer_ssrcs
                video, audio = leg.streams[video_ssrc], leg.streams[sender.audio_ssrc]
                assert audio.packets == audio.expected == sent[sender.audio_ssrc]
                assert video.packets == video.expected > 0  # no gap
                used = [tag for tag in (1, 2, 3) if video.layers[tag]]
                assert len(used) == 1 and video.layers[0] == 0  # one layer, rewritten
                assert video.layers[used[0]] == len(video.latencies_ns)
                assert video.packets <= sent[sender.layer_ssrcs[used[0] - 1]]
        assert all(p.errors == [] for p in people)
        for p in people:
            await p.leave()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("simulcast_on", [False, True])
async def test_a_paused_tile_gets_audio_and_no_video(simulcast_on: bool) -> None:
    """Subscriber 3 watches one tile (the publisher after it: 1) with maxHeight 90 and pauses
    publisher 2: not one video packet of 2 reaches it while all of 2's audio does; 1's video
    arrives whole (its q layer for simulcast, whose keyframes say 90 px)."""
    target = ArbiterTarget()
    async with trio.open_nursery() as nursery:
        await nursery.start(target.run)
        one, two, three = await _call(target, nursery, 3, simulcast_on)
        sent_preferences = simulcast.preferences(["p1", "p2", "p3"], "p3", 1, 90)
        assert sent_preferences == [
            {"remotePeerId": "p1", "maxHeight": 90, "paused": False},
            {"remotePeerId": "p2", "maxHeight": 0, "paused": True},
        ]
        for data in sent_preferences:
            await three.send_preferences(data)
        await trio.sleep(0.6)
        await _publish_all([one, two, three], 1.5)
        assert one.publisher_leg is not None and two.publisher_leg is not None
        paused = three.subscriptions[two.peer_id]
        assert set(paused.streams) == {two.audio_ssrc}  # no video SSRC at all
        assert paused.streams[two.audio_ssrc].packets == \
            two.publisher_leg.sent_by_ssrc[two.audio_ssrc] > 60  # fmt: skip
        watched = three.subscriptions[one.peer_id]
        [video_ssrc] = watched.offered["video"]
        sent = one.publisher_leg.sent_by_ssrc
        wanted = sent[one.layer_ssrcs[0]] if simulcast_on else sent[one.video_ssrc]
        video = watched.streams[video_ssrc]
        assert video.packets == video.expected == wanted > 0
        assert video.layers[1 if simulcast_on else 0] == len(video.latencies_ns) > 0
        # Subscriber 1 did not pause 2: it gets 2's video.
        [other_video] = one.subscriptions[two.peer_id].offered["video"]
        assert one.subscriptions[two.peer_id].streams[other_video].packets > 0
        assert three.errors == []
        for p in (one, two, three):
            await p.leave()
        nursery.cancel_scope.cancel()


async def test_watched_tiles_scenario_figures() -> None:
    """`arbiter bench --simulcast --watch 2 --max-height 90` in small: a 4-person simulcast
    call, each subscriber watching 2 of its 3 publishers at the q layer."""
    target = ArbiterTarget()
    scenario = runner.meeting(4).with_options(simulcast=True, watch=2, max_height=90)
    assert scenario.name == "meeting-4-simulcast-watch2-h90"
    async with trio.open_nursery() as nursery:
        await nursery.start(target.run)
        result = await runner.run_scenario(target, scenario, 1.0, payloads.load())
        nursery.cancel_scope.cancel()
    assert result["errors"] == [] and result["loss"] == 0.0
    # Video in the window: the 8 watched tiles only (a paused one may have received some before
    # its subscriber's preferences, while the call was still joining).
    assert result["video_streams"] == 8 and result["video_ssrcs_per_leg_max"] == 1
    assert result["paused_video_packets"] == 0
    assert result["paused_audio_packets"] == pytest.approx(4 * 50 * result["seconds"], abs=12)
    assert result["layer_share"] == {"plain": 0.0, "q": 1.0, "h": 0.0, "f": 0.0}
    assert result["streams_by_layer"] == {"plain": 0, "q": 8, "h": 0, "f": 0}
    assert result["switched_streams"] == 0 and result["video_lost"] == 0
    # Publishers send q alone (the SFU's layers frame), each watched by 2: video out = 2 x in.
    assert result["video_pps"] == pytest.approx(2 * result["publisher_video_pps"], rel=0.1)
    assert result["publisher_audio_pps"] == pytest.approx(50, abs=2)


def test_simulcast_offer_and_layers_as_the_sfu_reads_them() -> None:
    offer = simulcast.build_simulcast_offer("ufrag", "p" * 22, "AB:" * 31 + "AB", 7,
                                            candidate=("127.0.0.1", 9))  # fmt: skip
    parsed = sdp.parse_offer_untrusted(offer)
    video = next(s for s in parsed.sections if s.kind == "video")
    extensions = [(4, simulcast.URI_MID), (10, simulcast.URI_RID)]
    assert sdp.simulcast_rids(video, extensions) == ("q", "h", "f")
    layers = simulcast.simulcast_layers(payloads.load(), (11, 12, 13))
    assert [(la.rid, la.ssrc, la.step, la.tag) for la in layers] == \
        [("q", 11, 4, 1), ("h", 12, 2, 2), ("f", 13, 1, 3)]  # fmt: skip
    for layer, height in zip(layers, (90, 180, 360), strict=True):
        assert layer.keyframes == {0, 60}
        assert all(i % layer.step == 0 for i in layer.keyframes)  # every layer has them
        packet = rtp.build_rtp(96, 1, 0, layer.ssrc, layer.frames[0][0].payload)
        assert vp8.vp8_keyframe_size_untrusted(packet, 12) == (16 * height // 9, height)
        assert layer.elements == b"\x40" + b"1" + b"\xa0" + layer.rid.encode()
        block = simulcast.extension_block(layer.elements)
        assert block == b"\xbe\xde\x00\x01" + layer.elements
        built = b"\x90" + bytes(11) + block + b"x"
        assert rtp.rid_untrusted(built, 10) == layer.rid
        assert rtp.get_extension_untrusted(built, 4) == b"1"


def test_watched_publishers_and_preferences() -> None:
    people = [f"p{i}" for i in range(1, 9)]
    assert simulcast.watched(people, "p7", 4) == {"p8", "p1", "p2", "p3"}
    assert simulcast.watched(people, "p1", 0) == set(people) - {"p1"}
    # Every publisher is watched by exactly 4 of the 7 others.
    counts = {p: sum(p in simulcast.watched(people, me, 4) for me in people) for p in people}
    assert set(counts.values()) == {4}
    assert simulcast.preferences(people[:4], "p2", 2, 180) == [
        {"remotePeerId": "p1", "maxHeight": 0, "paused": True},
        {"remotePeerId": "p3", "maxHeight": 180, "paused": False},
        {"remotePeerId": "p4", "maxHeight": 180, "paused": False},
    ]
    assert simulcast.preferences(people[:4], "p2", 2, 0) == [
        {"remotePeerId": "p1", "maxHeight": 0, "paused": True}
    ]


def test_cli_variants_of_a_scenario() -> None:
    s = cli._scenario("meeting:8+simulcast+watch4+h180")
    assert (s.name, s.publishers, s.simulcast, s.watch, s.max_height) == \
        ("meeting-8-simulcast-watch4-h180", 8, True, 4, 180)  # fmt: skip
    assert cli._scenario("meeting:6+step4").name == "meeting-6-step4"
    flat = cli._scenario("meeting:6+flat")
    assert (flat.name, flat.simulcast, flat.flat) == ("meeting-6-simulcast-flat", True, True)
    with pytest.raises(argparse.ArgumentTypeError):
        cli._scenario("meeting:6+loud")
    names = [v.name for v in cli.variants([runner.meeting(8)], True, 4, 180)]
    assert names == ["meeting-8", "meeting-8-simulcast", "meeting-8-watch4",
                     "meeting-8-simulcast-watch4-h180"]  # fmt: skip


async def test_transport_cc_publishers_get_subscribers_feedback_through_the_sfu() -> None:
    """`+twcc`: publishers offer transport-cc and stamp every packet, so the SFU offers it to
    the subscribers, whose legs answer with feedback; every subscriber still gets one video
    SSRC per publisher, without loss."""
    target = ArbiterTarget()
    scenario = runner.meeting(3).with_options(simulcast=True, transport_cc=True)
    assert scenario.name == "meeting-3-simulcast-twcc"
    async with trio.open_nursery() as nursery:
        await nursery.start(target.run)
        result = await runner.run_scenario(target, scenario, 1.0, payloads.load())
        nursery.cancel_scope.cancel()
    assert result["errors"] == [] and result["loss"] == 0.0
    assert result["transport_cc"] is True and result["subscriber_rtcp"]["twcc"] > 0
    assert result["video_streams"] == 6 and result["video_ssrcs_per_leg_max"] == 1
    assert result["switched_streams"] + sum(result["streams_by_layer"].values()) == 6
