"""A network namespace a test makes for itself, behind a veth pair it can shape with `tc tbf`.

DESIGN section 8, "Thin or lossy links": a browser in its own namespace behind a token-bucket
filter. `namespace("thin")` creates `arbns<k>` (the namespace), the veth pair `arbh<k>` (host
side, root namespace) / `arbp<k>` (peer side, inside), `198.19.<k>.1/24` on the host side and
`198.19.<k>.2/24` inside, `lo` up inside and a default route inside via the host side; on exit it
deletes the namespace and the pair, whatever happened.

Addresses: 198.18.0.0/15 is the benchmarking range (RFC 2544), used by no network.
arbiter/testing/hostaddr.py takes 198.18.<k>.0/24; this module takes 198.19.<k>.0/24 so the two
never clash. `k` is allocated by `ip netns add arbns<k>` itself, which fails when the name
exists: two processes (or two namespaces of one test) never get the same `k`.

Reachability: every address of the root namespace (198.19.<k>.1, 127.0.0.1 excepted) is local
delivery for a packet coming in on `arbh<k>`, so a server listening on `host_address` is
reachable from this namespace and from every other one made here, without IP forwarding.

Shaping: the root qdisc of `arbh<k>` sees every packet sent *into* the namespace (its
downlink); the root qdisc of `arbp<k>`, inside, every packet sent *out* (its uplink). There is
no `netem` on the CI kernel; `tbf` is what DESIGN section 8 names. See `TbfShape` for the
parameters. Needs root (the CI machine is); `require_root()` skips a test elsewhere.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from .hostaddr import IP_TIMEOUT

SUBNETS = range(1, 255)  # k in 198.19.<k>.0/24


class NamespaceError(RuntimeError):
    """The namespace could not be made (not root, no iproute2, every subnet taken)."""


def require_root() -> None:
    """Skip the calling test unless it can make namespaces (root and iproute2's `ip`/`tc`)."""
    if not can_make_namespaces():
        import pytest

        pytest.skip("a network namespace needs root and iproute2's `ip` and `tc`")


def can_make_namespaces() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None and shutil.which("tc") is not None


def _run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=IP_TIMEOUT)
    if check and result.returncode != 0:
        raise NamespaceError(f"{' '.join(argv)}: {result.stderr.strip() or result.returncode}")
    return result


@dataclass(frozen=True)
class TbfShape:
    """One direction's token bucket (tc-tbf(8)), chosen to behave like a thin access link.

    - `burst`: the bucket, in bytes. A real link sends at its rate with little slack: a few
      full-size packets (5000 B: three 1500 B frames plus change) lets a packet through
      whole (tbf needs burst >= the largest packet, or it drops every such packet) without
      letting a keyframe's worth of packets pass at line rate. A big bucket (tens of KB)
      would hide the limit from short bursts, which is exactly what video keyframes are.
    - `latency_ms`: how long a packet may wait for tokens; tbf turns it into the queue limit
      (`rate * latency + burst` bytes). 80 ms is a shallow access-link buffer: an overload
      shows as queueing delay first (what a delay-based estimator such as Google Congestion
      Control, draft-ietf-rmcat-gcc-02 section 5, reacts to) and then as loss, instead of as
      seconds of bufferbloat (an unbounded queue would never drop and only add delay).
    """

    rate_kbit: int
    burst: int = 5000
    latency_ms: int = 80

    def tc_args(self) -> list[str]:
        if self.rate_kbit <= 0 or self.burst < 1600 or self.latency_ms <= 0:
            raise ValueError(f"tbf: rate > 0, burst >= 1600 B and latency > 0, got {self}")
        return ["tbf", "rate", f"{self.rate_kbit}kbit", "burst", str(self.burst),
                "latency", f"{self.latency_ms}ms"]  # fmt: skip


@dataclass(frozen=True)
class Namespace:
    name: str  # arbns<k>
    host_interface: str  # arbh<k>, root namespace
    peer_interface: str  # arbp<k>, inside
    host_address: str  # 198.19.<k>.1: what the namespace reaches the root namespace on
    address: str  # 198.19.<k>.2: the namespace's own address

    def exec_args(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside the namespace (ip-netns(8) `exec`: a setns, then an exec)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def shape_downlink(self, rate_kbit: int, burst: int = 5000, latency_ms: int = 80) -> TbfShape:
        """Limit what enters the namespace: tbf on the host side's egress."""
        shape = TbfShape(rate_kbit, burst, latency_ms)
        _run(["tc", "qdisc", "replace", "dev", self.host_interface, "root", *shape.tc_args()])
        return shape

    def shape_uplink(self, rate_kbit: int, burst: int = 5000, latency_ms: int = 80) -> TbfShape:
        """Limit what leaves the namespace: tbf on the peer side's egress, inside."""
        shape = TbfShape(rate_kbit, burst, latency_ms)
        _run(self.exec_args(["tc", "qdisc", "replace", "dev", self.peer_interface, "root",
                             *shape.tc_args()]))  # fmt: skip
        return shape

    def unshape_downlink(self) -> None:
        # `del` of the default qdisc fails ("Cannot delete qdisc with handle of zero"): ignored.
        _run(["tc", "qdisc", "del", "dev", self.host_interface, "root"], check=False)

    def unshape_uplink(self) -> None:
        _run(self.exec_args(["tc", "qdisc", "del", "dev", self.peer_interface, "root"]),
             check=False)  # fmt: skip

    def qdisc(self, uplink: bool = False, stats: bool = False) -> str:
        """`tc [-s] qdisc show` of one direction (for reports; `tbf_counters` parses -s)."""
        argv = ["tc", *(["-s"] if stats else []), "qdisc", "show", "dev"]
        if uplink:
            return _run(self.exec_args([*argv, self.peer_interface])).stdout.strip()
        return _run([*argv, self.host_interface]).stdout.strip()


def tbf_counters(text: str) -> dict[str, int]:
    """The counters of a `tc -s qdisc show` line ("Sent 1234 bytes 5 pkt (dropped 1,
    overlimits 2 requeues 0)"): what the shaper passed and dropped."""
    m = re.search(r"Sent (\d+) bytes (\d+) pkt \(dropped (\d+), overlimits (\d+)", text)
    if m is None:
        return {}
    sent, packets, dropped, overlimits = (int(x) for x in m.groups())
    return {"sentBytes": sent, "sentPackets": packets, "dropped": dropped,
            "overlimits": overlimits}  # fmt: skip


def _disable_ipv6(ns: Namespace) -> None:
    # No IPv6 link-local addresses: browsers would gather (useless) candidates on them too.
    try:
        with open(f"/proc/sys/net/ipv6/conf/{ns.host_interface}/disable_ipv6", "w") as f:
            f.write("1")
    except OSError:
        pass
    _run(ns.exec_args(["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                       "net.ipv6.conf.default.disable_ipv6=1"]), check=False)  # fmt: skip


def _claim(start: int) -> int:
    """The first free k from `start` on (wrapping), claimed by creating arbns<k>."""
    n = len(SUBNETS)
    for i in range(n):
        k = SUBNETS[(start + i) % n]
        if _run(["ip", "netns", "add", f"arbns{k}"], check=False).returncode == 0:
            # A leftover pair of a killed run with this k (its namespace gone) would hold the
            # subnet: remove it.
            _run(["ip", "link", "del", f"arbh{k}"], check=False)
            return k
    raise NamespaceError("every 198.19.<k>.0/24 namespace is taken (leftovers: ip netns list)")


@contextmanager
def namespace(name_hint: str = "") -> Iterator[Namespace]:
    """A fresh namespace with a veth pair and addresses; everything deleted on exit.

    `name_hint` only spreads the starting subnet (two hints rarely probe the same k first);
    the names are always arbns<k>/arbh<k>/arbp<k> so a leftover is easy to recognise."""
    if not can_make_namespaces():
        raise NamespaceError("a network namespace needs root and iproute2's `ip` and `tc`")
    start = (os.getpid() * 7 + sum(name_hint.encode())) % len(SUBNETS)
    k = _claim(start)
    ns = Namespace(f"arbns{k}", f"arbh{k}", f"arbp{k}", f"198.19.{k}.1", f"198.19.{k}.2")
    try:
        _run(["ip", "link", "add", ns.host_interface, "type", "veth",
              "peer", "name", ns.peer_interface, "netns", ns.name])  # fmt: skip
        _disable_ipv6(ns)
        _run(["ip", "addr", "add", f"{ns.host_address}/24", "dev", ns.host_interface])
        _run(["ip", "link", "set", ns.host_interface, "up"])
        inside = [
            ["ip", "link", "set", "lo", "up"],
            ["ip", "addr", "add", f"{ns.address}/24", "dev", ns.peer_interface],
            ["ip", "link", "set", ns.peer_interface, "up"],
            ["ip", "route", "add", "default", "via", ns.host_address],
        ]
        for argv in inside:
            _run(ns.exec_args(argv))
        yield ns
    finally:
        # Deleting the namespace destroys its end of the pair, which takes the host end too;
        # the explicit `link del` covers a namespace that some process still pins.
        _run(["ip", "netns", "del", ns.name], check=False)
        _run(["ip", "link", "del", ns.host_interface], check=False)
