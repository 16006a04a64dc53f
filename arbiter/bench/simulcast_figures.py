"""What `arbiter bench` reports about video for issue 13's variants (simulcast.py): per window,
video and audio packets forwarded (counted by the subscribers, by the kind the server's offer
gave each SSRC), what the publishers sent (the server's input), packets handled (in + out) per
CPU-second, the paused tiles' packets, and which simulcast layer each subscriber received (from
the sampled stamps: every LATENCY_SAMPLE-th packet names its layer)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .simulcast import RIDS, TAGS, watched

if TYPE_CHECKING:
    from .participant import Participant
    from .runner import Scenario

TAG_NAMES = ("plain", *RIDS)
AUDIO_PPS = 50.0  # Opus at 20 ms: what every publisher sends, whatever its video does

# (subscriber number, publisher id, ssrc) -> (packets, expected, sampled packets per tag)
Streams = dict[tuple[int, str, int], tuple[int, int, tuple[int, ...]]]


def snapshot(participants: list[Participant]) -> tuple[Streams, dict[int, dict[int, int]]]:
    """Received counts per stream, and what each publisher sent per SSRC, at one instant."""
    streams: Streams = {}
    for p in participants:
        for publisher, leg in p.subscriptions.items():
            for ssrc, s in leg.streams.items():
                streams[(p.number, publisher, ssrc)] = (s.packets, s.expected, tuple(s.layers))
    sent = {
        p.number: dict(p.publisher_leg.sent_by_ssrc)
        for p in participants
        if p.publisher_leg is not None
    }
    return streams, sent


def figures(
    scenario: Scenario,
    participants: list[Participant],
    start: tuple[Streams, dict[int, dict[int, int]]],
    end: tuple[Streams, dict[int, dict[int, int]]],
    window: float,
    cpu: float,
) -> dict[str, Any]:
    """The window's video figures (see the module docstring); {} when the server's offers did
    not say which SSRC is video (only Arbiter's are read)."""
    kinds: dict[tuple[int, str], dict[int, str]] = {}
    for p in participants:
        for publisher, leg in p.subscriptions.items():
            kinds[(p.number, publisher)] = {
                ssrc: kind for kind, ssrcs in leg.offered.items() for ssrc in ssrcs
            }
    if not any(kinds.values()):
        return {}
    by_number = {p.number: p for p in participants}
    publishers = [p.peer_id for p in participants if p.publisher_leg is not None]
    counts = {"video": 0, "audio": 0, "paused_video": 0, "paused_audio": 0, "video_lost": 0}
    tags = [0] * TAGS
    per_leg: dict[tuple[int, str], int] = {}  # video SSRCs that brought packets, per leg
    single = dict.fromkeys(TAG_NAMES, 0)
    switched = 0
    for key, (packets, expected, layers) in end[0].items():
        number, publisher, ssrc = key
        before = start[0].get(key, (0, 0, (0,) * TAGS))
        got = packets - before[0]
        kind = kinds.get((number, publisher), {}).get(ssrc, "video")
        me = by_number[number].peer_id
        paused = publisher not in watched(publishers, me, scenario.watch)
        counts[kind] += got
        if paused:
            counts["paused_" + kind] += got
        if kind != "video" or got == 0:
            continue
        counts["video_lost"] += (expected - before[1]) - got
        per_leg[(number, publisher)] = per_leg.get((number, publisher), 0) + 1
        sampled = [layers[i] - before[2][i] for i in range(TAGS)]
        for i, n in enumerate(sampled):
            tags[i] += n
        used = [i for i, n in enumerate(sampled) if n]
        if len(used) == 1:
            single[TAG_NAMES[used[0]]] += 1
        elif len(used) > 1:
            switched += 1
    sent_audio = sent_video = 0
    for p in participants:
        if p.publisher_leg is None:
            continue
        before_sent = start[1].get(p.number, {})
        for ssrc, n in end[1].get(p.number, {}).items():
            delta = n - before_sent.get(ssrc, 0)
            if ssrc == p.audio_ssrc:
                sent_audio += delta
            else:
                sent_video += delta
    sampled_total = sum(tags)
    forwarded = counts["video"] + counts["audio"]
    handled = forwarded + sent_audio + sent_video
    return {
        "video_pps": round(counts["video"] / window),
        "audio_pps": round(counts["audio"] / window),
        "video_packets": counts["video"],
        "paused_video_packets": counts["paused_video"],
        "paused_audio_packets": counts["paused_audio"],
        "video_lost": counts["video_lost"],
        "publisher_video_pps": round(sent_video / window),
        "publisher_audio_pps": round(sent_audio / window / max(1, len(publishers)), 1),
        "in_pps": round((sent_audio + sent_video) / window),
        "handled_per_cpu_s": round(handled / cpu) if cpu > 0 else None,
        "video_ssrcs_per_leg_max": max(per_leg.values(), default=0),
        "video_streams": len(per_leg),
        "layer_share": {
            name: round(tags[i] / sampled_total, 3) if sampled_total else 0.0
            for i, name in enumerate(TAG_NAMES)
        },
        "streams_by_layer": single,
        "switched_streams": switched,
        "layers_frames": sum(len(getattr(p, "layer_frames", ())) for p in participants),
    }


def nominal_audio_ok(result: dict[str, Any]) -> bool:
    """The publishers kept real time: their audio (always sent) came at its nominal rate."""
    rate = result.get("publisher_audio_pps")
    return rate is None or rate >= 0.97 * AUDIO_PPS


COLUMNS = [
    ("scenario", "scenario"),
    ("forwarded_pps", "forwarded pkt/s"),
    ("video_pps", "of which video"),
    ("in_pps", "publishers' pkt/s (server input)"),
    ("server_cpu_utilisation", "server CPU"),
    ("packets_per_cpu_s", "forwarded pkt per CPU-s"),
    ("handled_per_cpu_s", "in + out pkt per CPU-s"),
    ("loss", "loss"),
    ("layer_share", "layers received (sampled)"),
    ("paused_video_packets", "paused tiles: video pkts"),
    ("paused_audio_packets", "paused tiles: audio pkts"),
    ("video_ssrcs_per_leg_max", "video SSRCs per tile"),
    ("generator_cpu_utilisation", "generator CPU"),
    ("runs", "runs"),
]
SPREAD = {"packets_per_cpu_s", "handled_per_cpu_s", "server_cpu_utilisation", "video_pps"}


def _cell(key: str, row: dict[str, Any]) -> str:
    value = row.get(key)
    if value is None:
        return "–"
    if key == "layer_share":
        return ", ".join(f"{k} {100 * v:.0f} %" for k, v in value.items() if v) or "–"
    if key == "loss":
        text = f"{100 * value:.2f} %"
    elif key.endswith("utilisation"):
        text = f"{100 * value:.0f} %"
    elif isinstance(value, int) and value >= 10_000:
        text = f"{value:,}"
    else:
        text = str(value)
    low, high = row.get(f"{key}_min"), row.get(f"{key}_max")
    if key in SPREAD and low is not None and row.get("runs", 1) > 1:
        if key.endswith("utilisation"):
            text += f" ({100 * low:.0f} %–{100 * high:.0f} %)"
        else:
            text += f" ({low:,}–{high:,})"
    return text


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(t for _, t in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        if not row.get("runs"):
            lines.append(f"| {row['scenario']} | failed: {str(row.get('error'))[:80]} |"
                         + " |" * (len(COLUMNS) - 2))  # fmt: skip
            continue
        lines.append("| " + " | ".join(_cell(k, row) for k, _ in COLUMNS) + " |")
    return "\n".join(lines)


def comparisons(rows: list[dict[str, Any]]) -> list[str]:
    """Each variant against the plain all-see-all run of its scenario (medians)."""
    done = [r for r in rows if r.get("runs")]
    out = []
    for row in done:
        base = next((r for r in done if r is not row and row["scenario"].startswith(r["scenario"])
                     and r["scenario"].count("-") == 1), None)  # fmt: skip
        if base is None:
            continue
        parts = []
        if row.get("packets_per_cpu_s") and base.get("packets_per_cpu_s"):
            ratio = row["packets_per_cpu_s"] / base["packets_per_cpu_s"]
            parts.append(f"forwarded pkt per CPU-s {ratio:.2f}x")
        if row.get("handled_per_cpu_s") and base.get("handled_per_cpu_s"):
            ratio = row["handled_per_cpu_s"] / base["handled_per_cpu_s"]
            parts.append(f"in + out pkt per CPU-s {ratio:.2f}x")
        if row.get("video_pps") is not None and base.get("video_pps"):
            parts.append(f"video packets forwarded {row['video_pps'] / base['video_pps']:.2f}x")
        if parts:
            out.append(f"- {row['scenario']} against {base['scenario']}: " + ", ".join(parts))
    return out


def markdown(report_out: dict[str, Any]) -> str:
    """The section BENCHMARKS.md takes from `--section` (see the CLI help)."""
    from .report import aggregate

    rows = aggregate(report_out["runs"])
    machine = report_out.get("machine", {})
    lines = [
        "## Simulcast and paused tiles (issue 13)",
        "",
        f"`{report_out['command']}` ({report_out.get('seconds', '?')} s), on "
        f"{machine.get('cpus')} cores ({machine.get('processor')}); median of {report_out['repeats']} interleaved runs (the variants take turns, the "
        "order rotating each round), minimum and maximum in brackets.",
        "",
        table(rows),
        "",
        *comparisons(rows),
        "",
    ]
    return "\n".join(lines)
