"""Extra local addresses a test makes for itself: a veth pair it owns, with two IPv4 addresses.

A host with a second address is what breaks a wildcard-bound UDP server that answers from the
kernel's preferred source (docs/PROTOCOL.md section 4, "The socket"), and Firefox ignores
loopback ICE candidates (DESIGN section 8), so the tests that need a non-loopback address of
this machine get one here instead of depending on how the machine's own interfaces are set up.

`veth_addresses()` creates `arb<n>a`/`arb<n>b` (both up, IPv6 off), puts `198.18.<k>.1/24`
(primary) and `198.18.<k>.2/24` (secondary: never the kernel's preferred source) on the first,
and deletes the pair on exit, whatever happened. 198.18.0.0/15 is the benchmarking range
(RFC 2544): no network uses it. Traffic to these addresses is local delivery: it never leaves
the machine. Needs root (the CI machine is); elsewhere the test is skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

IP_TIMEOUT = 10.0


@dataclass(frozen=True)
class HostAddresses:
    interface: str
    primary: str  # the kernel's preferred source on the subnet
    secondary: str  # a second address of the same interface: announce this one


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT, check=check
    )


def require_root_ip() -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("adding a local address needs root and iproute2's `ip`")


@contextmanager
def veth_addresses() -> Iterator[HostAddresses]:
    require_root_ip()
    n = os.getpid() % 100_000
    k = os.getpid() % 250 + 1
    name, peer = f"arb{n}a", f"arb{n}b"
    _ip("link", "del", name, check=False)  # a leftover of a killed run with the same pid
    _ip("link", "add", name, "type", "veth", "peer", "name", peer)
    try:
        for dev in (name, peer):
            # No IPv6 link-local addresses: browsers would gather candidates on them too.
            try:
                with open(f"/proc/sys/net/ipv6/conf/{dev}/disable_ipv6", "w") as f:
                    f.write("1")
            except OSError:
                pass
            _ip("link", "set", dev, "up")
        primary, secondary = f"198.18.{k}.1", f"198.18.{k}.2"
        _ip("addr", "add", f"{primary}/24", "dev", name)
        _ip("addr", "add", f"{secondary}/24", "dev", name)
        yield HostAddresses(name, primary, secondary)
    finally:
        _ip("link", "del", name, check=False)
