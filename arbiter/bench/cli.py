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

from . import payloads, report, runner
from .participant import Target

SERVER_CPU, GENERATOR_CPU = 1, 0


def _scenario(text: str) -> runner.Scenario:
    """meeting:N | broadcast:M | rooms:KxN"""
    kind, _, arg = text.partition(":")
    try:
        if kind == "meeting":
            return runner.meeting(int(arg))
        if kind == "broadcast":
            return runner.broadcast(int(arg))
        if kind == "rooms":
            rooms, size = arg.split("x")
            return runner.small_rooms(int(rooms), int(size))
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"bad scenario {text!r}: meeting:N, broadcast:M, rooms:KxN")


def add_parser(sub: Any) -> None:
    bench = sub.add_parser("bench", help="load generator and benchmark report (BENCHMARKS.md)")
    bench.add_argument("--target", action="append", choices=["arbiter", "janus", "relay"],
                       help="server(s) to measure (default: all three)")  # fmt: skip
    bench.add_argument("--scenario", action="append", type=_scenario, default=[],
                       help="meeting:N, broadcast:M or rooms:KxN (repeatable)")  # fmt: skip
    bench.add_argument("--seconds", type=float, default=6.0, help="measured window per run")
    bench.add_argument("--ramp", action="store_true", help="meetings of growing size until 1%% loss")
    bench.add_argument("--ramp-start", type=int, default=4)
    bench.add_argument("--ramp-step", type=int, default=4)
    bench.add_argument("--ramp-limit", type=int, default=40)
    bench.add_argument("--standard", action="store_true",
                       help="the standard comparison written to BENCHMARKS.md")  # fmt: skip
    bench.add_argument("--out", default="benchmarks", help="directory for bench.json and bench.png")
    bench.add_argument("--markdown", default=None, help="also write this Markdown report")
    bench.add_argument("--no-pin", action="store_true", help="do not pin server and generator")
    bench.set_defaults(func=run)


def make_target(name: str, pin: bool) -> Target:
    cpu = SERVER_CPU if pin else None
    if name == "arbiter":
        from .arbiter_target import ArbiterTarget

        return ArbiterTarget(cpu=cpu)
    if name == "janus":
        from .janus_target import JanusTarget

        return JanusTarget(cpu=cpu)
    from .relay_target import RelayTarget

    return RelayTarget(cpu=cpu)


async def _run_target(
    name: str, args: argparse.Namespace, recording: payloads.Recording, out: dict[str, Any]
) -> None:
    target = make_target(name, pin=not args.no_pin)
    async with trio.open_nursery() as nursery:
        await nursery.start(target.run)
        for scenario in args.scenario:
            result = await runner.run_or_report(target, scenario, args.seconds, recording)
            out["runs"].append(result)
            if "error" in result:
                print(f"  {name} {scenario.name}: FAILED {result['error']}", flush=True)
                continue
            print(f"  {name} {scenario.name}: {result['forwarded_pps']} pkt/s, "
                  f"{result['packets_per_cpu_s']} pkt/CPU-s, loss {result['loss']}, "
                  f"p99 {result['latency_ms_p99']} ms", flush=True)  # fmt: skip
        if args.ramp:
            ramp = await runner.ramp(
                target, recording, seconds=args.seconds, start=args.ramp_start,
                step=args.ramp_step, limit=args.ramp_limit,
            )  # fmt: skip
            out["ramps"][target.name] = ramp
            for r in ramp:
                print(f"  {name} ramp {r['participants']}: loss {r['loss']}, "
                      f"server CPU {r.get('server_cpu_utilisation')}, "
                      f"{r.get('error', '')}", flush=True)  # fmt: skip
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


def run(args: argparse.Namespace) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per room is noise here
    if args.standard:
        args.target = args.target or ["arbiter", "janus", "relay"]
        args.scenario = args.scenario or [
            runner.meeting(6), runner.broadcast(24), runner.small_rooms(6, 3)
        ]
        args.ramp = True
        args.seconds = max(args.seconds, 6.0)
        args.markdown = args.markdown or "BENCHMARKS.md"
    targets = args.target or ["arbiter", "janus", "relay"]
    if not args.scenario and not args.ramp:
        args.scenario = [runner.meeting(4)]
    if not args.no_pin and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {GENERATOR_CPU})
    recording = payloads.load()
    started = time.time()
    out: dict[str, Any] = {
        "command": "arbiter bench " + shlex.join(sys.argv[2:]),
        "machine": report.machine(),
        "versions": _versions(),
        "runs": [],
        "ramps": {},
    }
    for name in targets:
        print(f"{name}:", flush=True)
        trio.run(_run_target, name, args, recording, out)
    out["seconds"] = round(time.time() - started, 1)
    directory = Path(args.out)
    directory.mkdir(parents=True, exist_ok=True)
    forward = directory / "forward.json"
    if forward.exists():  # scripts/bench runs scripts/bench_forward.py first
        out["forward"] = json.loads(forward.read_text())
    report.write_json(directory / "bench.json", out)
    plotted = bool(out["ramps"]) and report.plot(directory / "bench.png", out)
    if args.markdown:
        plot_name = str(directory / "bench.png") if plotted else None
        Path(args.markdown).write_text(report.markdown(out, plot_name))
    print(f"wrote {directory / 'bench.json'}" + (f" and {args.markdown}" if args.markdown else ""))
    return 0

