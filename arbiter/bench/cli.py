"""`arbiter bench`: run scenarios against Arbiter, Janus and the raw Python relay; report."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

from . import payloads, report, runner, simulcast_figures
from .participant import Target

SERVER_CPU, GENERATOR_CPU = 1, 0


def _scenario(text: str) -> runner.Scenario:
    """meeting:N | broadcast:M | rooms:KxN, then issue 13's options, each after a "+":
    simulcast, flat (simulcast, every layer at the plain packet rate), watchN (each subscriber
    watches N publishers, the others paused), hH (maxHeight H for the watched ones), stepN (plain
    publishers send every Nth frame), twcc (publishers offer and send transport-cc)."""
    head, *options = text.split("+")
    kind, _, arg = head.partition(":")
    scenario: runner.Scenario | None = None
    try:
        if kind == "meeting":
            scenario = runner.meeting(int(arg))
        elif kind == "broadcast":
            scenario = runner.broadcast(int(arg))
        elif kind == "rooms":
            rooms, size = arg.split("x")
            scenario = runner.small_rooms(int(rooms), int(size))
        for option in options:
            if scenario is None:
                break
            if option == "simulcast":
                scenario = scenario.with_options(simulcast=True)
            elif option == "twcc":
                scenario = scenario.with_options(transport_cc=True)
            elif option == "flat":
                scenario = scenario.with_options(flat=True)
            elif option.startswith("watch"):
                scenario = scenario.with_options(watch=int(option[5:]))
            elif option.startswith("h"):
                scenario = scenario.with_options(max_height=int(option[1:]))
            elif option.startswith("step"):
                scenario = scenario.with_options(frame_step=int(option[4:]))
            else:
                scenario = None
    except ValueError:
        scenario = None
    if scenario is None:
        raise argparse.ArgumentTypeError(
            f"bad scenario {text!r}: meeting:N, broadcast:M or rooms:KxN, then any of "
            "+simulcast, +flat, +watchN, +hH, +stepN, +twcc"
        )
    return scenario


def variants(
    scenarios: list[runner.Scenario], simulcast: bool, watch: int, max_height: int
) -> list[runner.Scenario]:
    """`--simulcast`, `--watch N`, `--max-height H`: every scenario also as its simulcast
    variant, then each of those also with N watched tiles (the simulcast ones with maxHeight H
    when given): the figures issue 13 compares, run interleaved."""
    out = list(scenarios)
    if simulcast:
        out += [s.with_options(simulcast=True) for s in scenarios]
    if watch:
        out += [
            s.with_options(watch=watch, max_height=max_height if s.simulcast else 0)
            for s in list(out)
        ]
    seen: set[str] = set()
    return [s for s in out if not (s.name in seen or seen.add(s.name))]


def add_parser(sub: Any) -> None:
    bench = sub.add_parser("bench", help="load generator and benchmark report (BENCHMARKS.md)")
    bench.add_argument("--target", action="append", choices=["arbiter", "janus", "relay"],
                       help="server(s) to measure (default: all three)")  # fmt: skip
    bench.add_argument("--scenario", action="append", type=_scenario, default=[],
                       help="meeting:N, broadcast:M or rooms:KxN (repeatable)")  # fmt: skip
    bench.add_argument("--seconds", type=float, default=6.0, help="measured window per run")
    bench.add_argument(
        "--ramp", action="store_true", help="meetings of growing size until 1%% loss"
    )
    bench.add_argument("--ramp-start", type=int, default=4)
    bench.add_argument("--ramp-step", type=int, default=4)
    bench.add_argument("--ramp-limit", type=int, default=40)
    bench.add_argument("--standard", action="store_true",
                       help="the standard comparison written to BENCHMARKS.md")  # fmt: skip
    bench.add_argument("--out", default="benchmarks", help="directory for bench.json and bench.png")
    bench.add_argument("--markdown", default=None, help="also write this Markdown report")
    bench.add_argument("--no-pin", action="store_true", help="do not pin server and generator")
    bench.add_argument(
        "--from-json",
        default=None,
        help="rewrite the report (--markdown, plot) from an earlier bench.json",
    )
    bench.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="interleaved runs per figure (the report gives median, min, max)",
    )
    bench.add_argument("--two-core", action="append", type=_scenario, default=[],
                       help="scenario run again with both cores for the server: Arbiter "
                       "workers.local = 2 (when built), Janus event_loops = 2")  # fmt: skip
    bench.add_argument("--simulcast", action="store_true",
                       help="every scenario also with simulcast publishers (layers q, h, f), "
                       "interleaved with the plain one")  # fmt: skip
    bench.add_argument("--watch", type=int, default=0,
                       help="every scenario also with each subscriber watching N publishers "
                       "(the others paused by the preferences action)")  # fmt: skip
    bench.add_argument(
        "--max-height",
        type=int,
        default=0,
        help="with --watch: the simulcast variants' maxHeight for watched tiles",
    )
    bench.add_argument("--transport-cc", action="store_true",
                       help="every scenario's publishers offer and send transport-cc, as "
                       "Chrome does (then the SFU offers it to subscribers, which answer with "
                       "feedback)")  # fmt: skip
    bench.add_argument("--warmup", type=float, default=None,
                       help="seconds from the last join to the window (default 1, simulcast 4): "
                       "longer lets the SFU's downlink estimates grow")  # fmt: skip
    bench.add_argument(
        "--section",
        default=None,
        help="also write the issue 13 figures as a Markdown section to this file",
    )
    bench.set_defaults(func=run)


def make_target(name: str, pin: bool) -> Target:
    """The single-core targets: each server pinned to the server core, Janus with one event
    loop for its one core."""
    cpu = SERVER_CPU if pin else None
    if name == "arbiter":
        from .arbiter_target import ArbiterTarget

        return ArbiterTarget(cpu=cpu)
    if name == "janus":
        from .janus_target import JanusTarget

        return JanusTarget(cpu=cpu, event_loops=1)
    from .relay_target import RelayTarget

    return RelayTarget(cpu=cpu)


def two_core_targets(names: list[str]) -> tuple[list[Target], dict[str, dict[str, str]]]:
    """Both cores for the server: Arbiter with `workers.local = 2` when this build has it,
    Janus with two event loops; the generator shares the same two cores (labelled)."""
    from .arbiter_target import ArbiterTarget, workers_available
    from .janus_target import JanusTarget

    targets: list[Target] = []
    labels: dict[str, dict[str, str]] = {}
    shared = "the same 2 cores (unpinned, shared with the server)"
    if "arbiter" in names:
        if workers_available():
            targets.append(ArbiterTarget(workers=2, name="arbiter-2core"))
            note = "workers.local = 2 (CPU summed over all its processes)"
        else:
            targets.append(ArbiterTarget(name="arbiter-2core"))
            note = "workers not available in this build: one process, one forwarding thread"
        labels["arbiter-2core"] = {"server": f"2 cores, {note}", "generator": shared}
    if "janus" in names:
        targets.append(JanusTarget(event_loops=2, name="janus-2core"))
        labels["janus-2core"] = {"server": "2 cores, event_loops = 2", "generator": shared}
    return targets, labels


def _print(result: dict[str, Any], repeat: int) -> None:
    name, scenario = result["target"], result["scenario"]
    if "error" in result:
        print(f"  [{repeat}] {name} {scenario}: FAILED {result['error']}", flush=True)
        return
    print(f"  [{repeat}] {name} {scenario}: {result['forwarded_pps']} pkt/s, "
          f"{result['packets_per_cpu_s']} pkt/CPU-s, loss {result['loss']}, "
          f"p99 {result['latency_ms_p99']} ms, rtcp {result['subscriber_rtcp']}",
          flush=True)  # fmt: skip


async def _interleaved(
    targets: list[Target],
    scenarios: list[runner.Scenario],
    args: argparse.Namespace,
    recording: payloads.Recording,
    into: list[dict[str, Any]],
) -> None:
    """Every scenario `repeats` times, the targets taking turns (the order rotates each round)
    so slow drift of the machine (other work, thermal) falls on every target alike."""
    # Variants of one scenario (simulcast, watched tiles) take turns like targets do.
    groups = [scenarios] if any(s.variant for s in scenarios) else [[s] for s in scenarios]
    for group in groups:
        for repeat in range(args.repeats):
            shift = repeat % len(targets)
            turn = repeat % len(group)
            for scenario in group[turn:] + group[:turn]:
                for target in targets[shift:] + targets[:shift]:
                    result = await runner.run_or_report(target, scenario, args.seconds,
                                                        recording, args.warmup)  # fmt: skip
                    result["repeat"] = repeat
                    into.append(result)
                    _print(result, repeat)


async def _ramp(
    targets: list[Target], args: argparse.Namespace, recording: payloads.Recording,
    out: dict[str, Any],
) -> None:  # fmt: skip
    """Meetings of growing size, each size interleaved `repeats` times; a target stops once its
    median loss passes 1 % or its generator saturates."""
    active = list(targets)
    n = args.ramp_start
    while n <= args.ramp_limit and active:
        runs: list[dict[str, Any]] = []
        await _interleaved(active, [runner.meeting(n)], args, recording, runs)
        for target in list(active):
            mine = [r for r in runs if r["target"] == target.name]
            out["ramps"].setdefault(target.name, []).extend(mine)
            row = report.aggregate(mine)[0]
            if row.get("loss") is None or row["loss"] > 0.01 or row.get("generator_saturated"):
                active.remove(target)
        n += args.ramp_step


async def _run_all(
    args: argparse.Namespace, recording: payloads.Recording, out: dict[str, Any]
) -> None:
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    targets = [make_target(name, pin=not args.no_pin) for name in args.target]
    for t in targets:
        out["labels"][t.name] = {
            "server": "1 core (pinned)" + (", event_loops = 1" if t.name == "janus" else ""),
            "generator": "the other core (pinned)" if pin else "unpinned",
        }
    async with trio.open_nursery() as nursery:
        for target in targets:
            await nursery.start(target.run)
        await _interleaved(targets, args.scenario, args, recording, out["runs"])
        if args.ramp:
            await _ramp(targets, args, recording, out)
        nursery.cancel_scope.cancel()
    if args.two_core:
        two, labels = two_core_targets(args.target)
        out["labels"].update(labels)
        if pin:
            os.sched_setaffinity(0, set(range(os.cpu_count() or 2)))
        async with trio.open_nursery() as nursery:
            for target in two:
                await nursery.start(target.run)
            await _interleaved(two, args.two_core, args, recording, out["two_core"])
            nursery.cancel_scope.cancel()


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    import OpenSSL

    out = {"arbiter": version("arbiter"), "python": sys.version.split()[0],
           "pylibsrtp": version("pylibsrtp"),
           "OpenSSL": OpenSSL.SSL.OpenSSL_version(OpenSSL.SSL.OPENSSL_VERSION).decode()}  # fmt: skip
    try:
        text = subprocess.run(["dpkg-query", "-W", "janus"], capture_output=True, text=True,
                              timeout=10).stdout  # fmt: skip
        if text.strip():
            out["janus"] = text.split()[-1]
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def _rewrite(source: Path, markdown: str) -> int:
    """The Markdown report and plot again from a run's JSON (no measurement)."""
    out = json.loads(source.read_text())
    out["sections"] = [p.read_text() for p in sorted(source.parent.glob("*.md"))]
    plotted = bool(out["ramps"]) and report.plot(source.parent / "bench.png", out)
    Path(markdown).write_text(report.markdown(out, str(source.parent / "bench.png")
                                              if plotted else None))  # fmt: skip
    print(f"wrote {markdown} from {source}")
    return 0


def run(args: argparse.Namespace) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per room is noise here
    if args.from_json:
        return _rewrite(Path(args.from_json), args.markdown or "BENCHMARKS.md")
    if args.standard:
        args.target = args.target or ["arbiter", "janus", "relay"]
        args.scenario = args.scenario or [
            runner.meeting(6),
            runner.broadcast(24),
            runner.small_rooms(6, 3),
        ]
        args.ramp = True
        args.ramp_start, args.ramp_step, args.ramp_limit = 12, 8, 20
        args.two_core = args.two_core or [runner.meeting(12)]
        args.seconds = max(args.seconds, 4.0)
        args.repeats = max(args.repeats, 3)
        args.markdown = args.markdown or "BENCHMARKS.md"
    args.target = args.target or ["arbiter", "janus", "relay"]
    if not args.scenario and not args.ramp and not args.two_core:
        args.scenario = [runner.meeting(4)]
    if args.transport_cc:
        args.scenario = [s.with_options(transport_cc=True) for s in args.scenario]
    if args.simulcast or args.watch:
        args.scenario = variants(args.scenario, args.simulcast, args.watch, args.max_height)
    if any(s.variant for s in args.scenario):
        args.target = [t for t in args.target if t == "arbiter"]
        if not args.target:
            raise SystemExit("simulcast and preferences are measured on --target arbiter")
    if not args.no_pin and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {GENERATOR_CPU})
    recording = payloads.load()
    started = time.time()
    out: dict[str, Any] = {
        "command": "arbiter bench " + shlex.join(sys.argv[2:]),
        "machine": report.machine(),
        "versions": _versions(),
        "repeats": args.repeats,
        "labels": {},
        "runs": [],
        "ramps": {},
        "two_core": [],
    }
    trio.run(_run_all, args, recording, out)
    out["seconds"] = round(time.time() - started, 1)
    directory = Path(args.out)
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("forward.json", "profile.json"):  # scripts/bench measures these first
        extra = directory / name
        if extra.exists() and extra.stat().st_mtime >= started - 900:
            out[name.split(".")[0]] = json.loads(extra.read_text())
    # Hand-run measurements with their own method (e.g. arrival_address.md) are kept in the
    # report as written; they are not re-measured by this run and say so themselves.
    sections = [p.read_text() for p in sorted(directory.glob("*.md"))]
    report.write_json(directory / "bench.json", out)
    out["sections"] = sections
    plotted = bool(out["ramps"]) and report.plot(directory / "bench.png", out)
    if args.markdown:
        plot_name = str(directory / "bench.png") if plotted else None
        Path(args.markdown).write_text(report.markdown(out, plot_name))
    if args.section:
        Path(args.section).write_text(simulcast_figures.markdown(out))
    print(f"wrote {directory / 'bench.json'}" + (f" and {args.markdown}" if args.markdown else ""))
    return 0
