"""The thin-link kit (arbiter/testing/netns.py, thin_link.py) does what the thin-link browser
tests rely on (DESIGN section 8, issue 13 "Show"):

- a namespace is made with its veth pair, addresses, `lo` and default route, and nothing of it
  is left after the context, also when the body raised;
- a tbf limit limits: a 2 Mbit/s UDP blast into the namespace through a 500 kbit/s downlink
  tbf arrives at 350-600 kbit/s, the same through an uplink tbf out of it too, and unshaped it
  arrives at over 1500 kbit/s (so the shaper, not the blast, is what limits);
- the getStats window helpers compute exact figures on made-up samples;
- a Chromium page inside a namespace joins a call through a running Arbiter with a publisher
  page in the root namespace and decodes its video, and every byte it received crossed the
  namespace's shaper (run through `run_thin_link_scenario`, as the real tests will be).
Needs root (CI is root): skipped elsewhere, as arbiter/testing/hostaddr.py does.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from arbiter.testing.browser import require_chromium
from arbiter.testing.netns import Namespace, namespace, require_root, tbf_counters
from arbiter.testing.thin_link import (
    Sample,
    delta,
    run_thin_link_scenario,
    summarize,
    time_until_height,
    window,
)


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)


def _leftovers(ns: Namespace) -> list[str]:
    names = _ip("netns", "list").stdout.split()
    links = _ip("-o", "link", "show").stdout
    return [x for x in (ns.name, ns.host_interface, ns.peer_interface)
            if x in names or f" {x}@" in links or f" {x}:" in links]  # fmt: skip


def test_a_namespace_is_made_and_removed() -> None:
    require_root()
    with namespace("kit") as ns:
        assert _leftovers(ns) == [ns.name, ns.host_interface]  # the peer end is inside
        k = ns.name.removeprefix("arbns")
        assert (ns.host_interface, ns.peer_interface) == (f"arbh{k}", f"arbp{k}")
        assert (ns.host_address, ns.address) == (f"198.19.{k}.1", f"198.19.{k}.2")
        inside = subprocess.run(ns.exec_args(["ip", "-4", "-o", "addr", "show"]),
                                capture_output=True, text=True, timeout=10).stdout  # fmt: skip
        assert [line.split()[1:4] for line in inside.splitlines()] == [
            ["lo", "inet", "127.0.0.1/8"],
            [ns.peer_interface, "inet", f"{ns.address}/24"],
        ]
        route = subprocess.run(ns.exec_args(["ip", "route", "show", "default"]),
                               capture_output=True, text=True, timeout=10).stdout  # fmt: skip
        assert route.split()[:5] == ["default", "via", ns.host_address, "dev", ns.peer_interface]
        with namespace("kit") as other:  # a second one in the same process: its own subnet
            assert other.name != ns.name and other.host_address != ns.host_address
        assert _leftovers(other) == []
    assert _leftovers(ns) == []
    with pytest.raises(RuntimeError, match="the body failed"), namespace("kit") as ns:
        ns.shape_downlink(500)
        raise RuntimeError("the body failed")
    assert _leftovers(ns) == []


RECEIVER = """
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0))
print(s.getsockname()[1], flush=True)
s.settimeout(8.0)
first = last = None
total = packets = 0
while True:
    try:
        n = len(s.recv(2048))
    except socket.timeout:
        break
    now = time.monotonic()
    if first is None:
        first = now
    else:
        total += n  # bytes after the first arrival, over the time since it
    last, packets = now, packets + 1
    s.settimeout(1.0)
print(json.dumps({"bytes": total, "seconds": (last or 0) - (first or 0), "packets": packets}))
"""


SENDER = """
import socket, sys, time
address, port = sys.argv[1], int(sys.argv[2])
payload, interval, seconds = b"\\x00" * 1000, 1000 * 8 / 2_000_000, 2.5  # 2 Mbit/s for 2.5 s
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
start, n = time.monotonic(), 0
while (now := time.monotonic()) - start < seconds:
    while n * interval <= now - start:
        s.sendto(payload, (address, port))
        n += 1
    time.sleep(0.002)
"""


def _blast_kbit(receiver_prefix: list[str], sender_prefix: list[str], address: str) -> float:
    """A 2 Mbit/s blast of 1000-byte datagrams for 2.5 s, sent by a process run with
    `sender_prefix` to a receiver run with `receiver_prefix` (`ip netns exec <ns>` or
    nothing) on `address`: the payload rate the receiver measured, in kbit/s."""
    argv = [*receiver_prefix, sys.executable, "-c", RECEIVER, address]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as receiver:
        try:
            assert receiver.stdout is not None
            port = receiver.stdout.readline().strip()
            subprocess.run([*sender_prefix, sys.executable, "-c", SENDER, address, port],
                           timeout=15, check=True)  # fmt: skip
            out, _ = receiver.communicate(timeout=15)
        finally:
            receiver.kill()
    result = json.loads(out)
    assert result["packets"] > 100, result
    return float(result["bytes"] * 8 / 1000 / result["seconds"])


def test_a_tbf_limits_what_crosses_it() -> None:
    require_root()
    with namespace("kit") as ns:
        unshaped = _blast_kbit(ns.exec_args([]), [], ns.address)
        assert unshaped > 1500, unshaped
        ns.shape_downlink(500)
        down = _blast_kbit(ns.exec_args([]), [], ns.address)
        counters = tbf_counters(ns.qdisc(stats=True))
        assert 350 <= down <= 600, down
        assert counters["dropped"] > 0 and counters["sentPackets"] > 0, counters
        ns.unshape_downlink()
        ns.shape_uplink(500)
        up = _blast_kbit([], ns.exec_args([]), ns.host_address)
        assert 350 <= up <= 600, up
        ns.unshape_uplink()
        again = _blast_kbit([], ns.exec_args([]), ns.host_address)
        assert again > 1500, again


def _samples(rows: list[tuple[float, int, int, int, int, int]]) -> list[Sample]:
    """(t, framesDecoded, frameHeight, freezeCount, packetsLost, bytesReceived) for peer "p";
    packetsReceived grows by 100 a second."""
    return [
        Sample(
            t,
            {
                "p": {
                    "framesDecoded": f,
                    "frameHeight": h,
                    "freezeCount": z,
                    "totalFreezesDuration": z * 0.5,
                    "packetsLost": lost,
                    "packetsReceived": 100 * t,
                    "bytesReceived": b,
                    "nackCount": 0,
                    "pliCount": 0,
                }
            },
            {},
        )  # fmt: skip
        for t, f, h, z, lost, b in rows
    ]


def test_the_window_helpers_compute_exact_figures() -> None:
    samples = _samples([
        (0, 0, 360, 0, 0, 0),
        (1, 20, 360, 0, 10, 50_000),
        (2, 30, 180, 1, 30, 90_000),
        (3, 5, 180, 0, 0, 10_000),  # a rebuilt connection: counters start again
        (4, 25, 180, 1, 20, 60_000),
    ])  # fmt: skip
    assert delta(samples, "p", "framesDecoded") == 20 + 10 + 5 + 20
    assert delta(samples, "p", "freezeCount") == 1 + 0 + 1
    assert time_until_height(samples, "p", at_most=180) == 2.0
    assert time_until_height(samples, "p", at_least=360) is None
    assert time_until_height(window(samples, until=1), "p", at_least=360) == 0.0
    s = summarize(window(samples, since=1), "p")
    assert s["framesDecoded"] == 10 + 5 + 20 and s["seconds"] == 3.0
    assert s["freezeCount"] == 2 and s["freezeSeconds"] == 1.0
    # lost 20 + 0 + 20 = 40 (the reset counts its new value), received 300 -> 40/340
    assert s["lossPercent"] == round(100 * 40 / 340, 1)
    assert s["kbps"] == round((40_000 + 10_000 + 50_000) * 8 / 1000 / 3, 1)
    assert s["frameHeight"] == {"first": 360, "last": 180, "min": 180, "max": 360}
    assert s["secondsToHeightAtMost180"] == 1.0
    assert summarize(samples, "other") == {"samples": 0}


@pytest.mark.browser
@pytest.mark.media
async def test_a_page_in_a_namespace_decodes_a_call(tmp_path: Path) -> None:
    """The scenario's machinery at a generous 5 Mbit/s: the thin page (inside) and the
    unconstrained page (root) both decode the publisher, and the thin page's bytes crossed
    the namespace's shaper."""
    require_root()
    require_chromium()
    with trio.fail_after(120):
        result = await run_thin_link_scenario(tmp_path, phases=((4.0, 5000),), decode_timeout=30)
    phase = result["phases"][0]
    thin, unconstrained = phase["thin"], phase["unconstrained"]
    assert thin["framesDecoded"] > 0 and unconstrained["framesDecoded"] > 0, phase
    assert thin["frameHeight"]["last"] > 0, phase
    assert phase["thinShaper"]["sentBytes"] >= thin["bytesReceived"] > 0, phase
    assert "tbf" in result["namespace"]["thinQdisc"] and "5Mbit" in result["namespace"]["thinQdisc"]
    assert _ip("netns", "list").stdout.count(result["namespace"]["thin"]) == 0
