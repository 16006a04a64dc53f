"""Scenarios and figures of `arbiter bench` (issue 5).

A scenario is rooms x (publishers + listeners). Participants join one after another (each
publisher starts sending as soon as its producer connection is up, as a browser does), every
participant subscribes to every publisher of its room, then the run warms up and measures a
window of `seconds`:

- forwarded packets and bits per second, counted by the subscribers;
- packets per CPU-second of the server process(es), from /proc (`procstat`);
- loss from RTP sequence gaps per stream; forwarding latency p50/p99 from send-time stamps;
- join time: identify to the first packet from every publisher already in the room;
- server RSS growth per participant.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace
from typing import Any

import trio

from ..sfu.dtls import Certificate
from . import payloads, procstat, simulcast, simulcast_figures
from .engine import StreamStats
from .participant import Participant, Target

WARMUP = 1.0
# Simulcast: the SFU tells a publisher to stop the layers nobody receives after LAYER_HOLD (3 s,
# arbiter/sfu/simulcast.py); the window starts once that steady state holds.
SIMULCAST_WARMUP = 4.0
JOIN_TIMEOUT = 30.0  # one participant's join and subscriptions; a hang is an error


@dataclass(frozen=True)
class Scenario:
    name: str
    rooms: int
    publishers: int  # per room; each publishes audio + video and subscribes to the others
    listeners: int = 0  # per room; subscribe only
    # Issue 13 variants (simulcast.py): publishers send layers q, h, f; each subscriber watches
    # `watch` publishers (the others paused by `preferences`; 0: all) with `max_height` (0: no
    # preference); plain publishers send every `frame_step`-th frame (4: the rate of layer q);
    # `flat`: every simulcast layer sends every frame (the packet rate of a plain publisher).
    simulcast: bool = False
    flat: bool = False
    transport_cc: bool = False  # publishers offer and send transport-cc (Chrome's extension)
    watch: int = 0
    max_height: int = 0
    frame_step: int = 1
    base: str = ""  # the name without the variant's suffix ("" for a plain scenario)

    @property
    def variant(self) -> bool:
        return (
            self.simulcast or self.watch > 0 or self.max_height > 0 or self.frame_step > 1
            or self.transport_cc
        )  # fmt: skip

    def with_options(self, *, simulcast: bool = False, watch: int = 0, max_height: int = 0,
                     frame_step: int = 1, flat: bool = False,
                     transport_cc: bool = False) -> Scenario:  # fmt: skip
        """This scenario with more options; its name says which (meeting-8-simulcast-watch4)."""
        merged = replace(
            self, simulcast=simulcast or self.simulcast, watch=watch or self.watch,
            max_height=max_height or self.max_height, frame_step=max(frame_step, self.frame_step),
            flat=flat or self.flat,
            transport_cc=transport_cc or self.transport_cc,
        )  # fmt: skip
        if merged.flat:
            merged = replace(merged, simulcast=True)
        base = self.base or self.name
        name = base + ("-simulcast" if merged.simulcast else "")
        name += "-flat" if merged.flat else ""
        name += f"-step{merged.frame_step}" if merged.frame_step > 1 else ""
        name += f"-watch{merged.watch}" if merged.watch else ""
        name += f"-h{merged.max_height}" if merged.max_height else ""
        name += "-twcc" if merged.transport_cc else ""
        return replace(merged, name=name, base=base)

    @property
    def participants(self) -> int:
        return self.rooms * (self.publishers + self.listeners)

    @property
    def expected_streams(self) -> int:
        """Subscribed (publisher, subscriber) pairs in the whole run."""
        per_room = self.publishers * (self.publishers - 1) + self.publishers * self.listeners
        return self.rooms * per_room


def meeting(n: int) -> Scenario:
    return Scenario(f"meeting-{n}", 1, n)


def broadcast(m: int) -> Scenario:
    return Scenario(f"broadcast-1x{m}", 1, 1, m)


def small_rooms(rooms: int, size: int) -> Scenario:
    return Scenario(f"rooms-{rooms}x{size}", rooms, size)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    index = min(len(values) - 1, max(0, round(q * (len(values) - 1))))
    return values[index]


def _snapshot(participants: list[Participant]) -> dict[tuple[int, int], tuple[int, int, int, int]]:
    """(participant, ssrc) -> (packets, bytes, expected, latency samples so far)."""
    out = {}
    for p in participants:
        for leg in p.subscriptions.values():
            for ssrc, s in leg.streams.items():
                out[(p.number, ssrc)] = (s.packets, s.bytes, s.expected, len(s.latencies_ns))
    return out


def _sent(participants: list[Participant]) -> int:
    return sum(p.publisher_leg.sent_packets for p in participants if p.publisher_leg is not None)


def _nominal_pps(recording: payloads.Recording) -> float:
    """Packets per second one publisher sends in real time: Opus 50/s plus the video's rate."""
    video = sum(len(frame) for frame in recording.video) * payloads.VIDEO_FPS / len(recording.video)
    return 1000 / payloads.AUDIO_FRAME_MS + video


def _streams(participants: list[Participant]) -> dict[tuple[int, int], StreamStats]:
    return {
        (p.number, ssrc): s
        for p in participants
        for leg in p.subscriptions.values()
        for ssrc, s in leg.streams.items()
    }


async def run_scenario(
    target: Target,
    scenario: Scenario,
    seconds: float,
    recording: payloads.Recording,
    warmup: float | None = None,
) -> dict[str, Any]:
    """One run; `warmup` (seconds between the last join and the window) defaults to WARMUP,
    SIMULCAST_WARMUP for simulcast publishers."""
    certificate = Certificate.generate()
    pids = target.pids
    baseline_rss = procstat.total(pids).rss_kib
    participants: list[Participant] = []
    join_times: list[float] = []
    publishing: list[trio.CancelScope] = []
    if scenario.variant and not target.name.startswith("arbiter"):
        raise ValueError(f"{scenario.name}: simulcast and preferences are Arbiter's (issue 13)")
    async with trio.open_nursery() as nursery:

        async def publish(p: Participant) -> None:
            assert p.publisher_leg is not None
            with trio.CancelScope() as scope:
                publishing.append(scope)
                await p.publisher_leg.publish(
                    recording, p.number, p.audio_ssrc, p.video_ssrc, float("inf"),
                    layers=p.video_layers(recording),
                    transport_cc=p.transport_cc,
                )  # fmt: skip

        number = 0
        for _ in range(scenario.rooms):
            with trio.fail_after(JOIN_TIMEOUT):
                room = await target.new_room()
            members: list[Participant] = []
            for index in range(scenario.publishers + scenario.listeners):
                number += 1
                publishes = index < scenario.publishers
                p = target.participant(room, number, certificate)
                p.nursery = nursery
                p.simulcast, p.frame_step = scenario.simulcast, scenario.frame_step
                p.flat_layers, p.transport_cc = scenario.flat, scenario.transport_cc
                present = {m.peer_id for m in members if m.publisher_leg is not None}
                with trio.fail_after(JOIN_TIMEOUT):
                    await p.join(nursery, publishes)
                    if publishes:
                        nursery.start_soon(publish, p)
                    # Subscriptions in parallel, as a browser's consumer connections come up.
                    async with trio.open_nursery() as subscribing:
                        for other in members:
                            if other.publisher_leg is not None:
                                subscribing.start_soon(p.subscribe_to, other)
                            if publishes:
                                subscribing.start_soon(other.subscribe_to, p)
                    # Join time: identify to the first packet from everyone already publishing.
                    await p.wait_first_media(present)
                if present:
                    join_times.append(p.first_media_after_join(present) or 0.0)
                members.append(p)
                participants.append(p)
            with trio.fail_after(JOIN_TIMEOUT):
                for p in members:
                    publishers = {m.peer_id for m in members if m.publisher_leg and m is not p}
                    await p.wait_subscribed(publishers)
                await _send_preferences(scenario, members)
        if warmup is None:
            warmup = SIMULCAST_WARMUP if scenario.simulcast else WARMUP
        await trio.sleep(warmup)
        start_stats = _snapshot(participants)
        start_video = simulcast_figures.snapshot(participants)
        sent0 = _sent(participants)
        cpu0 = procstat.total(pids).cpu_s
        gen0 = procstat.self_cpu()
        t0 = trio.current_time()
        await trio.sleep(seconds)
        window = trio.current_time() - t0
        cpu = procstat.total(pids).cpu_s - cpu0
        gen_cpu = procstat.self_cpu() - gen0
        end_stats = _snapshot(participants)
        end_video = simulcast_figures.snapshot(participants)
        sent_in_window = _sent(participants) - sent0
        rss = procstat.total(pids).rss_kib
        processes = sum(len(procstat.descendants(pid)) for pid in pids)
        for scope in publishing:
            scope.cancel()
        errors = [e for p in participants for e in p.errors]
        with trio.move_on_after(JOIN_TIMEOUT):
            for p in participants:
                await p.leave()
        nursery.cancel_scope.cancel()

    packets = bytes_ = expected = 0
    latencies: list[float] = []
    streams = _streams(participants)
    for key, end in end_stats.items():
        begin = start_stats.get(key, (0, 0, 0, 0))
        packets += end[0] - begin[0]
        bytes_ += end[1] - begin[1]
        expected += end[2] - begin[2]
        latencies += [ns / 1e6 for ns in streams[key].latencies_ns[begin[3] : end[3]]]
    publishers = scenario.rooms * scenario.publishers
    publish_rate = sent_in_window / window / publishers if publishers else 0.0
    nominal = _nominal_pps(recording)
    generator_cpu = gen_cpu / window
    result = {
        "target": target.name,
        "scenario": scenario.name,
        "participants": scenario.participants,
        "streams": len(end_stats),
        "expected_streams": 2 * scenario.expected_streams,  # audio + video per pair
        "seconds": round(window, 3),
        "warmup_s": warmup,
        "forwarded_pps": round(packets / window),
        "forwarded_mbps": round(bytes_ * 8 / window / 1e6, 2),
        "server_cpu_s": round(cpu, 3),
        "server_processes": processes,  # the process and its children, all counted in CPU
        "server_cpu_utilisation": round(cpu / window, 3),
        "packets_per_cpu_s": round(packets / cpu) if cpu > 0 else None,
        "loss": round(1 - packets / expected, 5) if expected else None,
        "latency_ms_p50": _round(_percentile(latencies, 0.50)),
        "latency_ms_p99": _round(_percentile(latencies, 0.99)),
        "join_s_median": _round(statistics.median(join_times) if join_times else None),
        "join_s_max": _round(max(join_times) if join_times else None),
        "rss_kib_per_participant": round((rss - baseline_rss) / scenario.participants),
        "generator_cpu_utilisation": round(generator_cpu, 3),
        "publisher_pps": round(publish_rate, 1),
        "nominal_publisher_pps": round(nominal, 1),
        # The generator, not the server, is the limit: publishers fell behind real time, or
        # its core is full (its receive sockets then overflow: loss that is not the server's).
        "generator_saturated": publish_rate < 0.97 * nominal or generator_cpu > 0.95,
        "sent_packets": _sent(participants),
        "subscriber_rtcp": _rtcp_counts(participants),
        "transport_cc": any(
            leg.twcc_id is not None for p in participants for leg in p.subscriptions.values()
        ),  # fmt: skip
        "errors": errors[:5],
        **simulcast_figures.figures(scenario, participants, start_video, end_video, window, cpu),
    }
    if scenario.variant:
        # Its publishers send less video than the recording by design (lower layers, layers
        # nobody receives, frame_step): real time is judged by their audio alone.
        result["nominal_publisher_pps"] = None
        result["generator_saturated"] = (
            not simulcast_figures.nominal_audio_ok(result) or generator_cpu > 0.95
        )
    return result


async def _send_preferences(scenario: Scenario, members: list[Participant]) -> None:
    """Each member's `preferences` for the room's publishers (simulcast.py): paused but for
    `watch` of them, `max_height` for the watched ones."""
    if not scenario.watch and not scenario.max_height:
        return
    publishers = [m.peer_id for m in members if m.publisher_leg is not None]
    for p in members:
        for data in simulcast.preferences(publishers, p.peer_id, scenario.watch,
                                          scenario.max_height):  # fmt: skip
            await p.send_preferences(data)


def _rtcp_counts(participants: list[Participant]) -> dict[str, int]:
    """What the subscribers sent back (and SRs they heard), summed over the run."""
    out: dict[str, int] = {}
    for p in participants:
        for leg in p.subscriptions.values():
            for key, value in leg.rtcp_counts.items():
                out[key] = out.get(key, 0) + value
    return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


async def run_or_report(
    target: Target,
    scenario: Scenario,
    seconds: float,
    recording: payloads.Recording,
    warmup: float | None = None,
) -> dict[str, Any]:
    """run_scenario, with a failure (a hang past JOIN_TIMEOUT, a refused join) reported as a
    result row instead of ending the whole benchmark."""
    try:
        return await run_scenario(target, scenario, seconds, recording, warmup)
    except Exception as exc:  # noqa: BLE001 - reported, never hidden
        return {"target": target.name, "scenario": scenario.name,
                "participants": scenario.participants, "loss": None, "error": repr(exc)[:300]}  # fmt: skip


async def ramp(
    target: Target,
    recording: payloads.Recording,
    *,
    seconds: float,
    start: int = 2,
    step: int = 2,
    limit: int = 40,
    max_loss: float = 0.01,
) -> list[dict[str, Any]]:
    """Meetings of growing size until loss exceeds `max_loss` (or `limit` is reached)."""
    results = []
    n = start
    while n <= limit:
        result = await run_or_report(target, meeting(n), seconds, recording)
        results.append(result)
        if result["loss"] is None or result["loss"] > max_loss:
            break
        if result.get("generator_saturated"):
            break  # beyond this size the figures would measure the load generator
        n += step
    return results
