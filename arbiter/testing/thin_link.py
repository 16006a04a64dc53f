"""Thin-link browser tests: Chromium pages inside a shaped network namespace, and what they see.

DESIGN section 8 and issue 13 ("Show"): a subscriber page behind a `tc tbf` downlink, a
publisher page, an unconstrained subscriber; what counts is what each page's `getStats()` says.

- `thin_browsers(origin, namespaces)`: one Playwright (sync API, as arbiter/testing/webpage.py
  uses it) with a Chromium in the root namespace and one Chromium inside each namespace. Pages
  are the ordinary `webpage.Page`, so every page helper works on either.
- `track_peer_connections` (a `Page` setup hook) and `sample_page` / `Sampler`: once a second,
  every inbound-rtp video stream of a page keyed by the publisher whose tile shows it, and
  every outbound-rtp video stream keyed by rid; `summarize` / `delta` / `time_until_height` /
  `outbound_summary` compute over a window of samples.
- `run_thin_link_scenario(tmp_path, ...)`: the issue's scenario, returning its figures.

How the namespaced Chromium runs: Playwright launches it through a two-line wrapper that is
`exec ip netns exec <ns> /usr/bin/chromium "$@"`. `ip netns exec` does a setns and an exec (no
fork), so the browser keeps Playwright's `--remote-debugging-pipe` descriptors and its pid, and
Playwright's own launch/close (and its kill when the driver dies) apply unchanged. This beats a
`--remote-debugging-address` + `connect_over_cdp` pair: no DevTools port open on a network
address, no port to pick, no process of our own to reap.

A page loaded from `http://198.19.<k>.1:<port>` is not a secure context (no getUserMedia):
every browser here gets `--unsafely-treat-insecure-origin-as-secure=<origin>` (DESIGN 8).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from .browser import CHROMIUM, CHROMIUM_ARGS, poll
from .netns import Namespace, namespace, tbf_counters
from .server import make_config, running_server
from .webpage import JOIN_TIMEOUT, Page

# Every RTCPeerConnection the page makes, for getStats() on all of them (the web client's own
# window.arbiter.stats() sums streams and drops the fields measured here).
PC_TRACKER = """(() => {
  const Native = window.RTCPeerConnection;
  if (!Native || window.__arbiterPcs) return;
  const pcs = [];
  class Tracked extends Native {
    constructor(...args) { super(...args); pcs.push(this); }
  }
  window.RTCPeerConnection = Tracked;
  Object.defineProperty(window, "__arbiterPcs", { value: pcs });
})();"""

CAMERA_OFF = "localStorage.setItem('arbiter.camOn', 'false');"

# One getStats() pass over every open connection. Inbound video is keyed by the remote peer
# whose tile plays its track (the receiver track's id is the stats' trackIdentifier); outbound
# video carries its rid (simulcast) and the receiver's view of it (remote-inbound-rtp).
SAMPLE_JS = """async () => {
  const peerOfTrack = {};
  for (const tile of document.querySelectorAll('[data-testid="tile"][data-peer-id]')) {
    const track = tile.querySelector("video")?.srcObject?.getVideoTracks?.()[0];
    if (track) peerOfTrack[track.id] = tile.getAttribute("data-peer-id");
  }
  const inbound = [], outbound = [];
  for (const pc of window.__arbiterPcs || []) {
    if (pc.connectionState === "closed") continue;
    let report;
    try { report = await pc.getStats(); } catch { continue; }
    const remote = {};
    report.forEach((s) => { if (s.type === "remote-inbound-rtp") remote[s.localId] = s; });
    report.forEach((s) => {
      if (s.kind !== "video") return;
      if (s.type === "inbound-rtp") {
        inbound.push({
          peer: peerOfTrack[s.trackIdentifier] ?? `track:${s.trackIdentifier}`,
          framesDecoded: s.framesDecoded || 0, frameHeight: s.frameHeight || 0,
          frameWidth: s.frameWidth || 0, freezeCount: s.freezeCount || 0,
          totalFreezesDuration: s.totalFreezesDuration || 0, packetsLost: s.packetsLost || 0,
          packetsReceived: s.packetsReceived || 0, bytesReceived: s.bytesReceived || 0,
          nackCount: s.nackCount || 0, pliCount: s.pliCount || 0,
        });
      } else if (s.type === "outbound-rtp") {
        const r = remote[s.id];
        outbound.push({
          rid: s.rid ?? `ssrc:${s.ssrc}`, frameHeight: s.frameHeight || 0,
          frameWidth: s.frameWidth || 0, framesEncoded: s.framesEncoded || 0,
          bytesSent: s.bytesSent || 0, packetsSent: s.packetsSent || 0,
          qualityLimitationReason: s.qualityLimitationReason ?? null,
          active: s.active ?? null, targetBitrate: s.targetBitrate ?? null,
          remotePacketsLost: r ? r.packetsLost || 0 : null,
          remoteFractionLost: r ? r.fractionLost ?? null : null,
        });
      }
    });
  }
  return { inbound, outbound };
}"""

INBOUND_COUNTERS = ("framesDecoded", "freezeCount", "totalFreezesDuration", "packetsLost",
                    "packetsReceived", "bytesReceived", "nackCount", "pliCount")  # fmt: skip


def track_peer_connections(context: Any, camera: bool = True) -> None:
    """A `Page` setup hook: record the page's RTCPeerConnections (and join camera off)."""
    context.add_init_script(PC_TRACKER)
    if not camera:
        context.add_init_script(CAMERA_OFF)


@dataclass(frozen=True)
class Sample:
    t: float  # seconds on the sampler's clock
    inbound: dict[str, dict[str, float]]  # remote peer id -> counters and frameHeight
    outbound: dict[str, dict[str, Any]]  # rid (or "ssrc:<n>") -> counters and reason


def sample_page(page: Page, t: float) -> Sample:
    raw = page.page.evaluate(SAMPLE_JS)
    inbound: dict[str, dict[str, float]] = {}
    for s in raw["inbound"]:
        # Two streams for one peer (a connection rebuilt while the old one closes): counters
        # add up; frameHeight is the busier stream's.
        peer = str(s.pop("peer"))
        have = inbound.get(peer)
        if have is None:
            inbound[peer] = s
            continue
        if s["bytesReceived"] > have["bytesReceived"]:
            have["frameHeight"], have["frameWidth"] = s["frameHeight"], s["frameWidth"]
        for key in INBOUND_COUNTERS:
            have[key] += s[key]
    outbound = {str(s.pop("rid")): s for s in raw["outbound"]}
    return Sample(t, inbound, outbound)


@dataclass
class Sampler:
    """Samples `pages` every `interval` seconds into `samples[label]`."""

    pages: dict[str, Page]
    interval: float = 1.0
    t0: float = field(default_factory=time.monotonic)
    samples: dict[str, list[Sample]] = field(default_factory=dict)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def tick(self) -> None:
        for label, page in self.pages.items():
            self.samples.setdefault(label, []).append(sample_page(page, self.now()))

    def run_for(self, seconds: float, between: Callable[[], None] | None = None) -> None:
        """Sample from now for `seconds` (first sample now, last at the end)."""
        end = self.now() + seconds
        next_at = self.now()
        while True:
            self.tick()
            if between is not None:
                between()
            if self.now() >= end - 1e-3:
                return
            next_at = min(next_at + self.interval, end)
            time.sleep(max(0.0, next_at - self.now()))


def window(samples: Sequence[Sample], since: float | None = None,
           until: float | None = None) -> list[Sample]:  # fmt: skip
    return [s for s in samples
            if (since is None or s.t >= since - 1e-6) and (until is None or s.t <= until + 1e-6)]  # fmt: skip


def delta(samples: Sequence[Sample], peer: str, key: str) -> float:
    """How much a cumulative inbound counter grew over `samples` (a counter that goes down
    is a rebuilt connection: its new value all counts as growth)."""
    values = [s.inbound[peer][key] for s in samples if peer in s.inbound]
    total = 0.0
    for before, after in zip(values, values[1:], strict=False):
        total += after - before if after >= before else after
    return total


def time_until_height(
    samples: Sequence[Sample], peer: str, *, at_most: int | None = None,
    at_least: int | None = None,
) -> float | None:  # fmt: skip
    """Seconds from the first sample until frameHeight meets the bound and keeps meeting it in
    every later sample; None when the last sample does not (or there is none)."""
    if not samples:
        return None
    since: float | None = None
    for s in samples:
        h = s.inbound.get(peer, {}).get("frameHeight", 0)
        ok = h > 0 and (at_most is None or h <= at_most) and (at_least is None or h >= at_least)
        if ok and since is None:
            since = s.t
        elif not ok:
            since = None
    return None if since is None else round(since - samples[0].t, 1)


def summarize(samples: Sequence[Sample], peer: str) -> dict[str, Any]:
    """One remote's video over `samples`: what the issue's thin-link figures are made of."""
    seen = [s for s in samples if peer in s.inbound]
    if len(seen) < 2:
        return {"samples": len(seen)}
    seconds = seen[-1].t - seen[0].t
    lost, got = delta(seen, peer, "packetsLost"), delta(seen, peer, "packetsReceived")
    heights = [s.inbound[peer]["frameHeight"] for s in seen]
    return {
        "samples": len(seen),
        "seconds": round(seconds, 1),
        "framesDecoded": int(delta(seen, peer, "framesDecoded")),
        "fps": round(delta(seen, peer, "framesDecoded") / seconds, 1),
        "freezeCount": int(delta(seen, peer, "freezeCount")),
        "freezeSeconds": round(delta(seen, peer, "totalFreezesDuration"), 1),
        "lossPercent": round(100 * lost / (lost + got), 1) if lost + got > 0 else 0.0,
        "bytesReceived": int(delta(seen, peer, "bytesReceived")),
        "kbps": round(delta(seen, peer, "bytesReceived") * 8 / 1000 / seconds, 1),
        "nacks": int(delta(seen, peer, "nackCount")),
        "plis": int(delta(seen, peer, "pliCount")),
        "frameHeight": {
            "first": heights[0],
            "last": heights[-1],
            "min": min(heights),
            "max": max(heights),
        },
        "secondsToHeightAtMost180": time_until_height(seen, peer, at_most=180),
        "secondsToHeightAtLeast360": time_until_height(seen, peer, at_least=360),
    }


def outbound_summary(samples: Sequence[Sample]) -> dict[str, dict[str, Any]]:
    """Per rid over `samples`: kbit/s sent, frameHeight range, quality-limitation reasons seen,
    and the receiver-reported loss (remote-inbound-rtp) over the window."""
    out: dict[str, dict[str, Any]] = {}
    rids = sorted({rid for s in samples for rid in s.outbound})
    for rid in rids:
        seen = [(s.t, s.outbound[rid]) for s in samples if rid in s.outbound]
        if len(seen) < 2:
            continue
        (t0, first), (t1, last) = seen[0], seen[-1]
        # Loss over the samples that have the receiver's view (a layer turned on later has
        # none until the SFU's first receiver report for it).
        reported = [o for _, o in seen if o["remotePacketsLost"] is not None]
        lost = None
        if len(reported) >= 2:
            sent = reported[-1]["packetsSent"] - reported[0]["packetsSent"]
            n = reported[-1]["remotePacketsLost"] - reported[0]["remotePacketsLost"]
            lost = round(100 * n / sent, 1) if sent > 0 else 0.0
        out[rid] = {
            "kbps": round((last["bytesSent"] - first["bytesSent"]) * 8 / 1000 / (t1 - t0), 1),
            "frameHeight": {
                "last": last["frameHeight"],
                "min": min(o["frameHeight"] for _, o in seen),
                "max": max(o["frameHeight"] for _, o in seen),
            },
            "qualityLimitationReasons": sorted(
                {str(o["qualityLimitationReason"]) for _, o in seen}
            ),
            "lossPercent": lost,
            "targetBitrateLast": last["targetBitrate"],
        }
    return out


def _wrapper(ns: Namespace, directory: Path) -> Path:
    path = directory / f"chromium-in-{ns.name}"
    path.write_text(f'#!/bin/sh\nexec ip netns exec {ns.name} {CHROMIUM} "$@"\n')
    path.chmod(0o755)
    return path


@contextmanager
def thin_browsers(
    origin: str, namespaces: Sequence[Namespace] = ()
) -> Iterator[tuple[Any, dict[str, Any]]]:
    """A root-namespace Chromium and one Chromium per namespace (by namespace name), all from
    one sync Playwright in the calling (worker) thread, all closed on exit."""
    from playwright.sync_api import sync_playwright

    args = [*CHROMIUM_ARGS, f"--unsafely-treat-insecure-origin-as-secure={origin}"]
    with tempfile.TemporaryDirectory(prefix="arbiter-thin-") as tmp, ExitStack() as stack:
        playwright = stack.enter_context(sync_playwright())
        root = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
        stack.callback(root.close)
        inside: dict[str, Any] = {}
        for ns in namespaces:
            browser = playwright.chromium.launch(
                executable_path=str(_wrapper(ns, Path(tmp))), args=args
            )
            stack.callback(browser.close)
            inside[ns.name] = browser
        yield root, inside


def _page(
    browser: Any, url: str, label: str, camera: bool, viewport: tuple[int, int] | None = None
) -> Page:
    extra: dict[str, Any] = {}
    if viewport is not None:  # a bigger window: a bigger tile, so a taller layer is wanted
        extra["viewport"] = {"width": viewport[0], "height": viewport[1]}
    return Page(browser, url, label, setup=lambda c: track_peer_connections(c, camera), **extra)


Phase = tuple[float, int | None]  # (seconds, thin downlink kbit/s; None: no limit)


async def run_thin_link_scenario(
    tmp_path: Path,
    *,
    phases: Sequence[Phase] = ((30.0, 500),),
    shape_before_join: bool = True,
    publisher_uplink_kbit: int | None = None,
    thin_camera: bool = False,
    unconstrained_camera: bool = False,
    room: str = "thin-link",
    decode_timeout: float = 45.0,
    interval: float = 1.0,
    unconstrained_viewport: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Issue 13's thin-link scenario; returns its figures (JSON-serialisable).

    One publisher page (camera and microphone; behind a `publisher_uplink_kbit` tbf uplink in
    its own namespace when set, else in the root namespace); one "thin" subscriber in its own
    namespace whose downlink each phase sets (`phases`: (seconds, kbit/s or None), sampled
    every `interval` s; with `shape_before_join` the first phase's limit is on from the page's
    first request); one unconstrained subscriber in the root namespace. Both subscribers join
    camera off (`thin_camera`, `unconstrained_camera` turn them on), so the thin page receives
    one real video (two with `unconstrained_camera`: the issue's "today" figures).
    Measuring starts once both subscribers decode the publisher (`joinedToDecoding` s).

    Result: `phases[i]` = {"seconds", "downlinkKbit", "thin", "unconstrained" (each `summarize`
    of the publisher's video), "publisherOutbound" (`outbound_summary`), "thinHeights" (per
    sample)}, plus the namespace, ids and the `tc qdisc` line in force at the start."""
    total = decode_timeout + JOIN_TIMEOUT * 3 + sum(p[0] for p in phases) * 1.5 + 30
    result: dict[str, Any] = {"phases": []}
    with trio.fail_after(total), ExitStack() as stack:
        thin_ns = stack.enter_context(namespace("thin"))
        pub_ns = stack.enter_context(namespace("pub")) if publisher_uplink_kbit else None
        if pub_ns is not None and publisher_uplink_kbit:
            pub_ns.shape_uplink(publisher_uplink_kbit)
        if shape_before_join and phases[0][1] is not None:
            thin_ns.shape_downlink(phases[0][1])
        result["namespace"] = {
            "thin": thin_ns.name,
            "thinQdisc": thin_ns.qdisc(),
            "publisher": pub_ns.name if pub_ns else None,
            "publisherQdisc": pub_ns.qdisc(uplink=True) if pub_ns else None,
        }
        config = make_config(
            tmp_path,
            http={"host": thin_ns.host_address, "port": 0},
            media={
                "listen": thin_ns.host_address,
                "port": 0,
                "announced_ip": [thin_ns.host_address],
            },
        )
        async with running_server(config) as srv:
            origin = srv.url.rstrip("/")
            url = f"{origin}/{room}"
            namespaces = [thin_ns] + ([pub_ns] if pub_ns else [])

            def body() -> None:
                with thin_browsers(origin, namespaces) as (root, inside):
                    pub_browser = inside[pub_ns.name] if pub_ns else root
                    pages = {
                        "publisher": _page(pub_browser, url, "publisher", True),
                        "unconstrained": _page(root, url, "unconstrained", unconstrained_camera,
                                               unconstrained_viewport),
                        "thin": _page(inside[thin_ns.name], url, "thin", thin_camera),
                    }
                    try:
                        _measure(pages, thin_ns, phases, shape_before_join, decode_timeout,
                                 interval, result)  # fmt: skip
                    except BaseException as exc:
                        for page in pages.values():
                            exc.add_note(page.describe())
                        raise

            await trio.to_thread.run_sync(body)
    return result


def _measure(
    pages: dict[str, Page],
    thin_ns: Namespace,
    phases: Sequence[Phase],
    shape_before_join: bool,
    decode_timeout: float,
    interval: float,
    result: dict[str, Any],
) -> None:
    started = time.monotonic()
    pages["publisher"].join("Publisher")
    pages["publisher"].wait_joined()
    for label in ("unconstrained", "thin"):
        pages[label].join(label.capitalize())
    ids = {label: str(page.wait_joined()["id"]) for label, page in pages.items()}
    result["ids"] = ids
    publisher = ids["publisher"]
    for label in ("unconstrained", "thin"):
        poll(lambda label=label: pages[label].decoding({publisher}), timeout=decode_timeout,
             interval=0.25, what=f"{label} decoding the publisher")  # fmt: skip
    result["joinedToDecoding"] = round(time.monotonic() - started, 1)
    sampler = Sampler(pages, interval)
    for i, (seconds, kbit) in enumerate(phases):
        if i > 0 or not shape_before_join:
            if kbit is None:
                thin_ns.unshape_downlink()
            else:
                thin_ns.shape_downlink(kbit)
        since = sampler.now()
        shaper = tbf_counters(thin_ns.qdisc(stats=True))
        sampler.run_for(seconds)
        after = tbf_counters(thin_ns.qdisc(stats=True))
        thin = window(sampler.samples["thin"], since)
        result["phases"].append({
            "seconds": seconds,
            "downlinkKbit": kbit,
            "thin": summarize(thin, publisher),
            "unconstrained": summarize(window(sampler.samples["unconstrained"], since), publisher),
            "publisherOutbound": outbound_summary(window(sampler.samples["publisher"], since)),
            "thinByPeer": {label: summarize(thin, ids[label])
                           for label in ("unconstrained",) if thin and ids[label] in thin[-1].inbound},
            "thinShaper": {k: v - shaper.get(k, 0) for k, v in after.items()},
            "thinHeights": [int(s.inbound.get(publisher, {}).get("frameHeight", 0)) for s in thin],
        })  # fmt: skip


def figures_line(phase: dict[str, Any]) -> str:
    """One phase as a line of text (for notes and failure messages)."""
    parts = [f"downlink {phase['downlinkKbit']} kbit/s, {phase['seconds']} s"]
    for label in ("thin", "unconstrained"):
        s = phase[label]
        if "framesDecoded" not in s:
            parts.append(f"{label}: no samples")
            continue
        parts.append(
            f"{label}: {s['framesDecoded']} frames ({s['fps']} fps), {s['freezeCount']} freezes "
            f"({s['freezeSeconds']} s), loss {s['lossPercent']} %, {s['kbps']} kbit/s, "
            f"height {s['frameHeight']['min']}-{s['frameHeight']['max']} "
            f"(last {s['frameHeight']['last']})"
        )
    return "; ".join(parts)


def _tmp_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="arbiter-thin-"))


def main(argv: Sequence[str] | None = None) -> None:
    """python -m arbiter.testing.thin_link [--seconds 30] [--kbit 500] [...]: one run, figures
    on stderr, the whole result as JSON on stdout."""
    import argparse
    import json
    import sys

    parser = argparse.ArgumentParser(prog="python -m arbiter.testing.thin_link")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--kbit", type=int, default=500, help="thin downlink; 0: no limit")
    parser.add_argument(
        "--unconstrained-camera",
        action="store_true",
        help="the unconstrained subscriber publishes video too (two remote videos)",
    )
    parser.add_argument("--publisher-uplink", type=int, default=0, help="kbit/s; 0: no limit")
    args = parser.parse_args(argv)
    out = trio.run(
        lambda: run_thin_link_scenario(
            _tmp_dir(),
            phases=((args.seconds, args.kbit or None),),
            unconstrained_camera=args.unconstrained_camera,
            publisher_uplink_kbit=args.publisher_uplink or None,
        )
    )
    for phase in out["phases"]:
        print(figures_line(phase), file=sys.stderr)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
