"""Real Chromium pages on thin links (issue 13 "Show"; DESIGN section 8): a subscriber in its own
network namespace behind a `tc tbf` downlink, and a publisher behind a 1 Mbit/s uplink, through
a running Arbiter with simulcast, transport-cc and per-subscriber layer choice.

The scenario is `arbiter.testing.thin_link.run_thin_link_scenario`: one publisher page (fake
camera 1280x720, three simulcast encodings), one "thin" subscriber page inside a namespace, one
unconstrained subscriber page (a bigger window, so its tile wants the top layer); both
subscribers join camera off, so the thin page receives exactly one video. Figures are printed
(pytest -s) for the issue's closing note. Needs root (CI is root).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from arbiter.testing.browser import require_chromium
from arbiter.testing.netns import require_root
from arbiter.testing.thin_link import figures_line, run_thin_link_scenario

BIG_WINDOW = (1600, 1100)  # its speaker tile is ~750 px tall: the 720p layer fits it


def settled_after(heights: list[int], at_most: int) -> int | None:
    """Seconds (samples) until the height is <= at_most and stays there; None if it never."""
    for i in range(len(heights)):
        if heights[i:] and all(0 < h <= at_most for h in heights[i:]):
            return i
    return None


def first_at_least(heights: list[int], at_least: int) -> int | None:
    return next((i for i, h in enumerate(heights) if h >= at_least), None)


def notes(result: dict[str, Any]) -> str:
    return " | ".join(figures_line(p) + f" heights {p['thinHeights']}" for p in result["phases"])


async def test_a_thin_subscriber_gets_the_low_layer_and_recovers(tmp_path: Path) -> None:
    require_root()
    require_chromium()
    result = await run_thin_link_scenario(
        tmp_path, phases=((30.0, 500), (20.0, None)), unconstrained_viewport=BIG_WINDOW
    )
    thin_phase, open_phase = result["phases"]
    print(notes(result))
    thin, wide = thin_phase["thin"], thin_phase["unconstrained"]
    # Behind 500 kbit/s: on the 180p layer within 10 s, and a moving picture all along.
    settled = settled_after(thin_phase["thinHeights"], 180)
    assert settled is not None and settled <= 10, notes(result)
    assert thin["framesDecoded"] >= 300, notes(result)  # 20 fps fake camera: 600 in 30 s
    # Under 2 freezes in 30 s. A CPU stall of this 2-core machine (other work, three browsers)
    # freezes every page alike, the unconstrained one too: freezes beyond its are the link's.
    assert thin["freezeCount"] < 2 + wide["freezeCount"], notes(result)
    assert thin["lossPercent"] < 5, notes(result)
    # The unconstrained subscriber is on the publisher's top layer by the end.
    assert wide["frameHeight"]["last"] == 720, notes(result)
    assert wide["freezeSeconds"] < 3, notes(result)  # no link limit: only CPU stalls
    # The limit lifted: back to 360p or more within 20 s.
    back = first_at_least(open_phase["thinHeights"], 360)
    assert back is not None and back <= 20, notes(result)
    assert open_phase["thin"]["framesDecoded"] >= 200, notes(result)


async def test_a_publisher_behind_a_thin_uplink_adapts(tmp_path: Path) -> None:
    require_root()
    require_chromium()
    result = await run_thin_link_scenario(
        tmp_path,
        phases=((30.0, None),),
        publisher_uplink_kbit=1000,
        unconstrained_viewport=BIG_WINDOW,
        room="thin-uplink",
    )
    (phase,) = result["phases"]
    outbound = phase["publisherOutbound"]
    print(notes(result), outbound)
    # The browser's own estimator (on the SFU's transport-cc feedback) holds its encodings
    # within the uplink: it reports bandwidth as the limit, and little is lost on the way.
    reasons = {r for rid in outbound.values() for r in rid["qualityLimitationReasons"]}
    assert "bandwidth" in reasons, outbound
    losses = [rid["lossPercent"] for rid in outbound.values() if rid["lossPercent"] is not None]
    assert losses and max(losses) < 5, outbound
    sent = sum(rid["kbps"] for rid in outbound.values())
    assert 0 < sent < 1000, outbound
    # Both subscribers keep decoding.
    assert phase["thin"]["framesDecoded"] >= 300, notes(result)
    assert phase["unconstrained"]["framesDecoded"] >= 300, notes(result)
