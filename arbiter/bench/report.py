"""Benchmark output: JSON, a PNG plot (matplotlib) and the BENCHMARKS.md tables."""

from __future__ import annotations

import json
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

COLUMNS = [
    ("scenario", "scenario"),
    ("target", "target"),
    ("forwarded_pps", "forwarded pkt/s"),
    ("forwarded_mbps", "Mbit/s"),
    ("server_cpu_utilisation", "server CPU"),
    ("server_processes", "server processes"),
    ("packets_per_cpu_s", "pkt per CPU-s"),
    ("loss", "loss"),
    ("latency_ms_p50", "latency p50 ms"),
    ("latency_ms_p99", "latency p99 ms"),
    ("join_s_median", "join s (median)"),
    ("rss_kib_per_participant", "RSS KiB/participant"),
    ("generator_cpu_utilisation", "generator CPU"),
    ("generator_saturated", "generator saturated"),
]


# Columns shown as "median (min–max)"; every other number is the median alone.
SPREAD = {"server_cpu_utilisation", "packets_per_cpu_s", "latency_ms_p99", "join_s_median"}


def aggregate(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (scenario, target) from repeated runs: the median of every numeric figure,
    with `<key>_min` / `<key>_max` and `runs` (how many completed); a flag is true when it was
    in any run. Rows keep first-seen order. A pair whose every run failed keeps its error."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["scenario"], r["target"]), []).append(r)
    rows = []
    for (scenario, target), group in groups.items():
        done = [r for r in group if "error" not in r]
        if not done:
            rows.append({**group[0], "runs": 0, "failed": len(group)})
            continue
        row: dict[str, Any] = {"scenario": scenario, "target": target, "runs": len(done),
                               "failed": len(group) - len(done)}  # fmt: skip
        for key, value in done[0].items():
            if key in row or key == "repeat":
                continue
            values = [r.get(key) for r in done]
            if isinstance(value, bool):
                row[key] = any(bool(v) for v in values)
            elif isinstance(value, int | float):
                numbers = [v for v in values if isinstance(v, int | float)]
                if not numbers:
                    row[key] = None
                    continue
                median = statistics.median(numbers)
                row[key] = round(median) if isinstance(value, int) else round(median, 3)
                row[f"{key}_min"], row[f"{key}_max"] = min(numbers), max(numbers)
            elif isinstance(value, dict):
                row[key] = {k: statistics.median(r.get(key, {}).get(k, 0) for r in done)
                            for k in value}  # fmt: skip
            else:
                row[key] = value
        for key in ("loss", "latency_ms_p50", "latency_ms_p99", "join_s_median",
                    "packets_per_cpu_s"):  # fmt: skip
            if any(r.get(key) is None for r in done):
                row.setdefault(key, None)
        rows.append(row)
    return rows


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "–"
    if key == "loss":
        return f"{100 * value:.2f} %"
    if key.endswith("utilisation"):
        return f"{100 * value:.0f} %"
    if isinstance(value, int) and value >= 10_000:
        return f"{value:,}"
    return str(value)


def write_json(path: Path, report: dict[str, Any]) -> None:
    path.write_text(json.dumps(report, indent=2) + "\n")


def table(results: Sequence[dict[str, Any]]) -> str:
    """Rows from `aggregate` (median, with min–max where measured) or single runs."""
    columns = [*COLUMNS, ("runs", "runs")]
    lines = [
        "| " + " | ".join(title for _, title in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for r in results:
        if "error" in r and not r.get("runs"):
            lines.append(f"| {r['scenario']} | {r['target']} | failed: {r['error'][:80]} |"
                         + " |" * (len(columns) - 3))  # fmt: skip
            continue
        cells = []
        for key, _ in columns:
            text = _cell(key, r.get(key))
            if key in SPREAD and r.get(f"{key}_min") is not None and r.get("runs", 1) > 1:
                text += f" ({_cell(key, r[f'{key}_min'])}–{_cell(key, r[f'{key}_max'])})"
            if key == "runs" and r.get("failed"):
                text = f"{r.get('runs', 0)} (+{r['failed']} failed)"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratios(rows: Sequence[dict[str, Any]], base: str = "arbiter",
           other: str = "janus") -> list[str]:  # fmt: skip
    """Arbiter / Janus figure by figure (medians), for the scenarios both ran."""
    out = []
    mine = {r["scenario"]: r for r in rows if r["target"] == base and r.get("runs")}
    theirs = {r["scenario"]: r for r in rows if r["target"] == other and r.get("runs")}
    for scenario in mine:
        if scenario not in theirs:
            continue
        a, b = mine[scenario], theirs[scenario]
        parts = []
        for key, label in (("packets_per_cpu_s", "pkt per CPU-s"),
                           ("latency_ms_p99", "latency p99"),
                           ("join_s_median", "join time")):  # fmt: skip
            if a.get(key) and b.get(key):
                parts.append(f"{label} {a[key] / b[key]:.2f}x")
        out.append(f"- {scenario}: {base}/{other} " + ", ".join(parts))
    return out


def largest_meeting(ramp: Sequence[dict[str, Any]], max_loss: float = 0.01) -> str:
    """The largest size held below `max_loss`, with '≥' when the ramp ended on the load
    generator rather than the server: its last step saturated the generator (its loss may be
    the generator's own) or did not complete."""
    held = [r for r in ramp if r.get("runs", 1) and r.get("loss") is not None
            and r["loss"] <= max_loss]  # fmt: skip
    if not held:
        return "none held"
    best = max(held, key=lambda r: r["participants"])
    last = ramp[-1]
    if "error" in last and not last.get("runs", 1):
        return (f"≥ {best['participants']} (the {last['participants']}-person step did not "
                "complete: its joins timed out)")  # fmt: skip
    if last.get("generator_saturated"):
        return f"≥ {best['participants']} (load generator saturated)"
    return str(best["participants"])


def plot(path: Path, report: dict[str, Any]) -> bool:
    """Throughput and latency against meeting size, one line per target. False without
    matplotlib (it is the `bench` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for target, runs in report["ramps"].items():
        runs = [r for r in aggregate(runs) if r.get("runs")]
        sizes = [r["participants"] for r in runs]
        ax1.plot(sizes, [r["forwarded_pps"] for r in runs], marker="o", label=target)
        ax2.plot(sizes, [r["latency_ms_p99"] or 0 for r in runs], marker="o", label=target)
    ax1.set(xlabel="participants (all see all)", ylabel="forwarded packets/s",
            title="Throughput against load")  # fmt: skip
    ax2.set(xlabel="participants (all see all)", ylabel="latency p99 (ms)",
            title="Forwarding latency against load")  # fmt: skip
    ax2.set_yscale("log")
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def markdown(report: dict[str, Any], plot_name: str | None) -> str:
    machine = report["machine"]
    repeats = report.get("repeats", 1)
    rows = aggregate(report["runs"])
    lines = [
        "# Benchmarks",
        "",
        "Written by `scripts/bench` (`arbiter bench --standard`); the raw figures, every run, "
        "are in `benchmarks/bench.json`. Every figure below was measured in the same "
        f"invocation on the same machine, as the median of {repeats} interleaved runs (the "
        "targets take turns, the order rotating each round) with the minimum and maximum in "
        "brackets. Method: synthetic participants do real ICE, DTLS and SRTP (the SFU's own "
        "sans-IO pieces in the client role), publish recorded Opus (50 packets/s) and VP8 "
        "(~1.5 Mbit/s, keyframe every 2 s) with a sender report per stream every second, and "
        "count what they receive; no decoding. Subscribers send what a browser sends: a "
        "receiver report every second (loss, jitter and LSR/DLSR from what they received), "
        "generic NACKs for missing video packets, a PLI per video stream at start, and "
        "transport-cc feedback every 100 ms where the server's SDP negotiates it (Janus offers "
        "it; Arbiter does not yet). The join timer starts before the signaling connection "
        "opens and every target gets the same ICE and DTLS retransmission timing. Server CPU "
        "is summed over the server's processes and threads (`/proc`). Janus is Debian's "
        "package (VideoRoom plugin, WebSocket API, ICE-lite, same loopback) with "
        "`event_loops` set to the cores it is given, as its documentation advises, not one "
        "thread per handle. The Python UDP relay is the same fan-out with no security and no "
        "RTCP at all: this machine's ceiling for any Python forwarder.",
        "",
        f"- machine: {machine['cpus']} cores, {machine['processor']}, {machine['system']}; "
        "other engineers' test suites ran on the same 2 cores during the run, hence the "
        "spread",
        f"- versions: {', '.join(f'{k} {v}' for k, v in report['versions'].items())}",
        f"- command: `{report['command']}` ({report.get('seconds', '?')} s)",
        "",
    ]
    labels = report.get("labels", {})
    if labels:
        lines += ["| target | server | load generator |", "|---|---|---|"]
        lines += [f"| {name} | {label['server']} | {label['generator']} |"
                  for name, label in labels.items()]  # fmt: skip
        lines.append("")
    lines += [
        "## Scenarios (server on one core)",
        "",
        table(rows),
        "",
        "## Arbiter against Janus (medians)",
        "",
        *ratios(rows),
        "",
    ]
    two = aggregate(report.get("two_core", []))
    if two:
        lines += [
            "## Two cores for the server",
            "",
            "The load generator is no longer on a core of its own: it shares both with the "
            "server, so these rows compare the servers with each other, not with the "
            "single-core rows.",
            "",
            table(two),
            "",
            *ratios(two, "arbiter-2core", "janus-2core"),
            "",
        ]
    lines += ["## Ramp: all-see-all meetings of growing size until loss exceeds 1 %", ""]
    ramp_rows = []
    for target, runs in report["ramps"].items():
        agg = aggregate(runs)
        ramp_rows += agg
        lines.append(f"- {target}: largest meeting below 1 % loss (median): "
                     f"{largest_meeting(agg)}")  # fmt: skip
    lines += ["", table(ramp_rows), ""]
    if plot_name:
        lines += [f"![throughput and latency against load]({plot_name})", ""]
    forward = report.get("forward")
    if forward:
        lines += [
            "## The forwarding loop alone (`scripts/bench_forward.py`)",
            "",
            f"One publisher, fan-out {forward['fanout']}, {forward['packet_bytes']}-byte RTP "
            f"packets ({forward['srtp_profile']}), {forward['offered_pps']:,} packets/s in for "
            f"{forward['wall_s']} s: **{forward['forwarded_pps_per_cpu_s']:,} forwarded packets "
            f"per CPU-second** of the SFU process, loss {100 * forward['loss']:.2f} %, "
            f"{forward['corrupt']} corrupt, SFU at {100 * forward['sfu_cpu_utilisation']:.0f} % "
            "of one core.",
            "",
        ]
    for extra in report.get("sections", []):  # measured separately, each says how (benchmarks/*.md)
        lines += [extra.rstrip(), ""]
    lines += profile(report.get("profile"))
    lines += [
        "Caveat: the load generator is Python too, on the other core (on both cores, shared "
        "with the server, in the two-core rows). Its CPU share is in the tables; once it nears "
        '100 % ("generator saturated") the loss and latency it reports are its own, not the '
        "server's. Latency p99 is the figure most exposed to other work on this machine: see "
        "its range.",
        "",
    ]
    return "\n".join(lines)


def profile(measured: dict[str, Any] | None) -> list[str]:
    """The profile paragraph, from the py-spy run of this same invocation (scripts/bench
    writes benchmarks/profile.json when py-spy is installed), never from fixed text."""
    head = ["## Where the forwarding loop spends its time", ""]
    if not measured or not measured.get("functions"):
        return head + ["Not measured in this run (py-spy was not available to `scripts/bench`; "
                       "no figure is quoted that this run did not measure).", ""]  # fmt: skip
    parts = ", ".join(f"`{f['name']}` {100 * f['share']:.0f} %" for f in measured["functions"])
    return head + [
        f"`{measured['command']}` (measured by this run), {measured['samples']:,} samples of "
        f"the SFU process's trio thread, by innermost Python function (a C call such as "
        f"`sendto` or libsrtp's protect is charged to the function making it): {parts}. "
        "On loopback the kernel delivers to the receiving socket inside the sender's "
        "`sendto`, so most of `send` is kernel time.",
        "",
    ]


def machine() -> dict[str, Any]:
    import os

    processor = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                processor = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "processor": processor, "system": platform.platform()}
